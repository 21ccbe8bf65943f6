//! The transport conformance suite: every transport runs the same cases (feature
//! `conformance`).
//!
//! It checks the [`Communicator`] contract from the outside: FIFO matching per
//! `(peer, slot)`, receive-from-any, zero-byte and large messages, the fingerprint rules,
//! timeouts, cancellation, abort, a dropped peer, several threads on one communicator, and
//! traffic that mixes all of these. Every transport of this workspace passes it, and a
//! transport written elsewhere (on the [engine](crate::engine), or from scratch) checks
//! itself with the same cases.
//!
//! # Running it on your transport
//!
//! Depend on this crate with the feature in your dev-dependencies
//! (`gloo-transport = { version = "0.1", features = ["conformance"] }`), write a [`Factory`]
//! that builds a connected group in this process, and expand
//! [`conformance_tests!`](crate::conformance_tests) with it in a test file; it produces one
//! `#[test]` per case (the rustls per-provider pattern):
//!
//! ```
//! use gloo_transport::Communicator;
//! use gloo_transport::loopback::{LoopbackConfig, group};
//!
//! fn factory(size: u32) -> Vec<Box<dyn Communicator>> {
//!     gloo_transport::conformance::boxed(group(size, LoopbackConfig::default()))
//! }
//! gloo_transport::conformance_tests!(factory);
//! # fn main() {}
//! ```
//!
//! To run the suite several times in one file (for several configurations), expand the macro
//! once per module: `mod havoc_1 { gloo_transport::conformance_tests!(super::havoc_1); }`.
//! `conformance_tests!(factory, setup = path)` calls `path()` at the start of every test (to
//! install a log subscriber, say).
//!
//! Outside a test harness (an example, a binary), [`run_all`] runs every case in turn and
//! reports the failures; [`CASES`] lists them by name. Each case is also a public function
//! taking the factory, so a transport can run one case on its own. Every wait in every case
//! is bounded by a deadline; no case asserts a timing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use crate::threads::{panic_message, run_ranks};
use crate::{Batch, Communicator, Error, Fingerprint, Op, OpState, Pending, Rank, Slot, Wait};

/// A deadline `secs` seconds from now: every wait in a case is bounded by one.
fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Builds a connected group of `size` communicators in this process; element `i` is rank `i`.
pub type Factory = fn(size: u32) -> Vec<Box<dyn Communicator>>;

/// Box every communicator of a group, to write a [`Factory`] in one line.
pub fn boxed<C: Communicator + 'static>(comms: Vec<C>) -> Vec<Box<dyn Communicator>> {
    comms.into_iter().map(|c| Box::new(c) as Box<dyn Communicator>).collect()
}

/// Bytes of a message of `len` bytes that depend on both the position and `seed`, so that a
/// shifted, truncated or swapped message fails a content check.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = (i ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (x >> 56) as u8
        })
        .collect()
}

/// A fingerprint with the given epoch whose description bytes are all `desc`.
pub fn fingerprint(epoch: u64, desc: u8) -> Fingerprint {
    Fingerprint::with_epoch(epoch, desc)
}

/// How long a case waits for something that is expected to happen.
const LONG: u64 = 60;

/// A deadline for waits that are expected to time out.
fn short() -> Instant {
    Instant::now() + Duration::from_millis(300)
}

fn wait_for(what: &str, cond: impl Fn() -> bool, deadline: Instant) {
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn ping_pong(factory: Factory, rounds: u32) {
    let slot = Slot::new(1, 0);
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        let peer = Rank(1 - c.rank().0);
        let mut buf = [0u8; 8];
        for i in 0..u64::from(rounds) {
            if c.rank() == Rank(0) {
                c.send(peer, slot, &i.to_le_bytes(), dl).unwrap();
                assert_eq!(c.recv(peer, slot, &mut buf, dl).unwrap(), 8);
                assert_eq!(u64::from_le_bytes(buf), i * 3 + 1, "round {i}");
            } else {
                assert_eq!(c.recv(peer, slot, &mut buf, dl).unwrap(), 8);
                assert_eq!(u64::from_le_bytes(buf), i, "round {i}");
                c.send(peer, slot, &(i * 3 + 1).to_le_bytes(), dl).unwrap();
            }
        }
    });
}

/// One round trip between two ranks.
pub fn ping_pong_once(factory: Factory) {
    ping_pong(factory, 1);
}

/// A thousand round trips between two ranks on one slot.
pub fn ping_pong_1000(factory: Factory) {
    ping_pong(factory, 1000);
}

/// For every group size from 2 to 8: every rank exchanges a distinct message with every
/// other rank in one batch.
pub fn all_pairs_2_to_8(factory: Factory) {
    for size in 2..=8u32 {
        run_ranks(factory(size), move |c| {
            let me = c.rank().0;
            let peers: Vec<u32> = (0..size).filter(|&p| p != me).collect();
            let outs: Vec<Vec<u8>> =
                peers.iter().map(|&p| pattern(100 + p as usize, u64::from(me * 100 + p))).collect();
            let mut ins: Vec<Vec<u8>> = peers.iter().map(|_| vec![0u8; 200]).collect();
            let mut ops: Vec<Op<'_>> = Vec::new();
            for (&p, out) in peers.iter().zip(&outs) {
                ops.push(Op::send(Rank(p), Slot::new(2, 0), out));
            }
            for (&p, inb) in peers.iter().zip(ins.iter_mut()) {
                ops.push(Op::recv(Rank(p), Slot::new(2, 0), inb));
            }
            c.run(&mut ops, deadline(LONG)).unwrap();
            for (i, &p) in peers.iter().enumerate() {
                let op = &ops[peers.len() + i];
                assert_eq!(op.completed(), Some((Rank(p), 100 + me as usize)), "size {size}");
            }
            drop(ops);
            for (&p, inb) in peers.iter().zip(&ins) {
                let want = pattern(100 + me as usize, u64::from(p * 100 + me));
                assert_eq!(&inb[..want.len()], &want[..], "size {size}: from {p} to {me}");
            }
        });
    }
}

/// A receive from a set of ranks reports the rank that sent, takes each sender's message
/// exactly once, and never takes a message from a rank outside the set.
pub fn recv_any_from_a_set(factory: Factory) {
    let slot = Slot::new(3, 0);
    run_ranks(factory(5), |c| {
        let dl = deadline(LONG);
        match c.rank().0 {
            0 => {
                let set = [Rank(1), Rank(2), Rank(3)];
                let mut seen = Vec::new();
                for _ in 0..set.len() {
                    let mut b = [0u8; 16];
                    let (from, n) = c.recv_any(&set, slot, &mut b, dl).unwrap();
                    assert!(set.contains(&from), "{from:?} is not in the set");
                    assert_eq!(n, from.index(), "length sent by {from:?}");
                    assert!(b[..n].iter().all(|&x| x == from.0 as u8), "content from {from:?}");
                    seen.push(from);
                }
                seen.sort();
                assert_eq!(seen, set, "each sender exactly once");
                // Rank 4's message, sent on the same slot, is still there for a receive that
                // names it.
                let mut b = [0u8; 16];
                assert_eq!(c.recv(Rank(4), slot, &mut b, dl).unwrap(), 4);
                assert_eq!(&b[..4], &[4u8; 4]);
            }
            r => {
                let msg = vec![r as u8; r as usize];
                c.send(Rank(0), slot, &msg, dl).unwrap();
            }
        }
    });
}

/// A thousand receives on distinct slots posted in one batch, matched by sends posted (in one
/// batch) in a different order.
pub fn thousand_slots_in_flight(factory: Factory) {
    const N: u32 = 1000;
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            let mut bufs = vec![[0u8; 8]; N as usize];
            let mut ops: Vec<Op<'_>> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, b)| Op::recv(Rank(1), Slot::new(4, i as u32), b))
                .collect();
            c.run(&mut ops, dl).unwrap();
            drop(ops);
            for (i, b) in bufs.iter().enumerate() {
                assert_eq!(u64::from_le_bytes(*b), i as u64 * 7, "slot {i}");
            }
        } else {
            // A permutation of 0..N: 7 and 1000 are coprime.
            let order: Vec<u32> = (0..N).map(|i| (i * 7 + 3) % N).collect();
            let msgs: Vec<[u8; 8]> =
                order.iter().map(|&s| (u64::from(s) * 7).to_le_bytes()).collect();
            let mut ops: Vec<Op<'_>> = order
                .iter()
                .zip(&msgs)
                .map(|(&s, m)| Op::send(Rank(0), Slot::new(4, s), m))
                .collect();
            c.run(&mut ops, dl).unwrap();
        }
    });
}

/// Zero-byte messages: into an empty buffer, into a longer one, and through a receive from
/// a set; the length reported is 0 and the buffer is untouched.
pub fn zero_byte_messages(factory: Factory) {
    let slot = Slot::new(5, 0);
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            for _ in 0..3 {
                c.send(Rank(1), slot, &[], dl).unwrap();
            }
            c.send(Rank(1), slot, b"after", dl).unwrap();
        } else {
            assert_eq!(c.recv(Rank(0), slot, &mut [], dl).unwrap(), 0);
            let mut b = [9u8; 4];
            assert_eq!(c.recv(Rank(0), slot, &mut b, dl).unwrap(), 0);
            assert_eq!(b, [9u8; 4]);
            assert_eq!(c.recv_any(&[Rank(0)], slot, &mut b, dl).unwrap(), (Rank(0), 0));
            let mut b = [0u8; 5];
            assert_eq!(c.recv(Rank(0), slot, &mut b, dl).unwrap(), 5);
            assert_eq!(&b, b"after");
        }
    });
}

/// Four threads drive one communicator at once, each on its own tag, 100 exchanges each.
pub fn four_threads_one_communicator(factory: Factory) {
    run_ranks(factory(2), |c| {
        let c = &*c;
        let peer = Rank(1 - c.rank().0);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                s.spawn(move || {
                    let dl = deadline(LONG);
                    let slot = Slot::new(10 + t, 0);
                    let mut b = [0u8; 12];
                    for i in 0..100u32 {
                        let msg: Vec<u8> =
                            [c.rank().0, t, i].iter().flat_map(|x| x.to_le_bytes()).collect();
                        let want: Vec<u8> =
                            [peer.0, t, i].iter().flat_map(|x| x.to_le_bytes()).collect();
                        if c.rank() == Rank(0) {
                            c.send(peer, slot, &msg, dl).unwrap();
                            c.recv(peer, slot, &mut b, dl).unwrap();
                        } else {
                            c.recv(peer, slot, &mut b, dl).unwrap();
                            c.send(peer, slot, &msg, dl).unwrap();
                        }
                        assert_eq!(&b[..], &want[..], "thread {t}, exchange {i}");
                    }
                });
            }
        });
    });
}

/// Messages of sizes around the usual eager thresholds, and 8 MiB, with content checks.
pub fn large_messages(factory: Factory) {
    const SIZES: [usize; 7] = [0, 1, 63 << 10, 64 << 10, (64 << 10) + 1, (1 << 20) + 7, 8 << 20];
    let slot = Slot::new(6, 0);
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        for (i, &len) in SIZES.iter().enumerate() {
            let data = pattern(len, i as u64);
            if c.rank() == Rank(0) {
                c.send(Rank(1), slot, &data, dl).unwrap();
            } else {
                let mut b = vec![0u8; len];
                assert_eq!(c.recv(Rank(0), slot, &mut b, dl).unwrap(), len);
                assert!(b == data, "content of the {len}-byte message");
            }
        }
    });
}

/// On one slot, small and large messages sent in one batch arrive in order.
pub fn fifo_mixed_sizes(factory: Factory) {
    const SIZES: [usize; 10] =
        [10, 200 << 10, 0, 70 << 10, 1, 3 << 20, 5, 64 << 10, 100, (1 << 20) + 3];
    let slot = Slot::new(7, 0);
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            let msgs: Vec<Vec<u8>> =
                SIZES.iter().enumerate().map(|(i, &n)| pattern(n, 1000 + i as u64)).collect();
            let mut ops: Vec<Op<'_>> = msgs.iter().map(|m| Op::send(Rank(1), slot, m)).collect();
            c.run(&mut ops, dl).unwrap();
        } else {
            let mut b = vec![0u8; 3 << 20];
            for (i, &n) in SIZES.iter().enumerate() {
                assert_eq!(c.recv(Rank(0), slot, &mut b, dl).unwrap(), n, "message {i}");
                assert!(b[..n] == pattern(n, 1000 + i as u64)[..], "content of message {i}");
            }
        }
    });
}

/// A receive buffer longer than the message: the message's length is reported and the rest
/// of the buffer is untouched.
pub fn recv_buffer_longer_than_message(factory: Factory) {
    let slot = Slot::new(8, 0);
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            c.send(Rank(1), slot, b"short", dl).unwrap();
        } else {
            let mut b = [0xAAu8; 64];
            let mut ops = [Op::recv(Rank(0), slot, &mut b)];
            c.run(&mut ops, dl).unwrap();
            assert_eq!(ops[0].completed(), Some((Rank(0), 5)));
            assert_eq!(&b[..5], b"short");
            assert!(b[5..].iter().all(|&x| x == 0xAA));
        }
    });
}

/// A message longer than the posted buffer fails the receive with `MessageTooLong` naming
/// the peer, slot, length and capacity.
pub fn message_too_long(factory: Factory) {
    let slot = Slot::new(9, 0);
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            // The send may or may not complete, depending on how the transport refuses the
            // message; either outcome is allowed, a hang is not.
            let _ = c.send(Rank(1), slot, &[1u8; 100], dl);
        } else {
            let mut b = [0u8; 10];
            let e = c.recv(Rank(0), slot, &mut b, dl).unwrap_err();
            assert_eq!(
                e,
                Error::MessageTooLong { peer: Rank(0), slot, len: 100, capacity: 10 },
                "{e}"
            );
        }
    });
}

/// Fingerprint rule 1: a receive whose matched message carries another fingerprint, or none,
/// fails with `Mismatch`; the message is consumed and the stream goes on.
pub fn fingerprint_rule_1(factory: Factory) {
    let slot = Slot::new(11, 0);
    let (a, b) = (fingerprint(1, 0xA), fingerprint(1, 0xB));
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            c.run(&mut [Op::send(Rank(1), slot, b"x").with_fingerprint(a)], dl).unwrap();
            c.run(&mut [Op::send(Rank(1), slot, b"y")], dl).unwrap();
            c.run(&mut [Op::send(Rank(1), slot, b"z").with_fingerprint(b)], dl).unwrap();
        } else {
            let mut buf = [0u8; 1];
            let e = c.run(&mut [Op::recv(Rank(0), slot, &mut buf).with_fingerprint(b)], dl);
            assert_eq!(
                e,
                Err(Error::Mismatch { peer: Rank(0), slot, ours: Some(b), theirs: Some(a) })
            );
            let e = c.run(&mut [Op::recv(Rank(0), slot, &mut buf).with_fingerprint(b)], dl);
            assert_eq!(
                e,
                Err(Error::Mismatch { peer: Rank(0), slot, ours: Some(b), theirs: None })
            );
            let mut ops = [Op::recv(Rank(0), slot, &mut buf).with_fingerprint(b)];
            c.run(&mut ops, dl).unwrap();
            assert_eq!(ops[0].completed(), Some((Rank(0), 1)));
            assert_eq!(&buf, b"z");
        }
    });
}

/// The slot of the "ready" message of the fingerprint cases.
const READY: Slot = Slot::new(99, 0);

/// Rank 0's side of fingerprint rules 2 and 3: post a message with fingerprint `fp` on `slot`
/// that rank 1 never receives, then a "ready" message, and stay alive (so that rank 1 cannot
/// see a lost peer instead) until rank 1 has checked; then withdraw the first send if it is
/// still pending (a transport may hold a send until the receiver takes it).
fn send_conflict_then_ready(
    c: &dyn Communicator,
    slot: Slot,
    fp: Fingerprint,
    keep: &KeepAlive,
    dl: Instant,
) {
    let mut ops =
        [Op::send(Rank(1), slot, b"x").with_fingerprint(fp), Op::send(Rank(1), READY, b"ready")];
    while !ops[1].is_done() {
        c.progress(&mut ops, Wait::Any, dl).unwrap();
    }
    wait_for("rank 1 to check", || keep.checked.load(Ordering::SeqCst), dl);
    c.cancel(&mut ops);
    keep.released.store(true, Ordering::SeqCst);
}

/// Two flags by which ranks 0 and 1 of the fingerprint cases keep each other alive, so that
/// neither sees the other lost instead of what the case checks.
#[derive(Default)]
struct KeepAlive {
    /// Rank 1 has its result.
    checked: AtomicBool,
    /// Rank 0 is done with the communicator.
    released: AtomicBool,
}

impl KeepAlive {
    /// Rank 1's side: report the check done and wait for rank 0.
    fn checked_then_wait(&self, dl: Instant) {
        self.checked.store(true, Ordering::SeqCst);
        wait_for("rank 0 to finish", || self.released.load(Ordering::SeqCst), dl);
    }
}

/// Fingerprint rule 2: a message on another slot of the same tag with the receive's epoch
/// but another description fails the pending receive with `Mismatch` (without waiting for
/// the deadline).
pub fn fingerprint_rule_2(factory: Factory) {
    let (ours, theirs) = (fingerprint(7, 0xA), fingerprint(7, 0xB));
    let keep = KeepAlive::default();
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            send_conflict_then_ready(&*c, Slot::new(12, 1), theirs, &keep, dl);
        } else {
            let mut b = [0u8; 5];
            c.recv(Rank(0), READY, &mut b, dl).unwrap();
            let slot = Slot::new(12, 0);
            let e = c.run(&mut [Op::recv(Rank(0), slot, &mut b).with_fingerprint(ours)], dl);
            keep.checked_then_wait(dl);
            assert!(
                matches!(e, Err(Error::Mismatch { peer: Rank(0), ours: Some(o), theirs: Some(t), .. })
                    if o == ours && t == theirs),
                "{e:?}"
            );
        }
    });
}

/// Fingerprint rule 3: at the deadline, a pending receive fails with `Mismatch` instead of
/// `Timeout` when the peer sent a message with the receive's epoch but another description,
/// on another tag.
pub fn fingerprint_rule_3(factory: Factory) {
    let (ours, theirs) = (fingerprint(9, 0xA), fingerprint(9, 0xB));
    let keep = KeepAlive::default();
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            send_conflict_then_ready(&*c, Slot::new(14, 0), theirs, &keep, dl);
        } else {
            let mut b = [0u8; 5];
            c.recv(Rank(0), READY, &mut b, dl).unwrap();
            let slot = Slot::new(13, 0);
            let e = c.run(&mut [Op::recv(Rank(0), slot, &mut b).with_fingerprint(ours)], short());
            keep.checked_then_wait(dl);
            assert!(
                matches!(e, Err(Error::Mismatch { peer: Rank(0), ours: Some(o), theirs: Some(t), .. })
                    if o == ours && t == theirs),
                "{e:?}"
            );
        }
    });
}

/// A receive that nothing matches fails at its deadline with `Timeout` naming this rank and
/// the pending receive; the communicator is not poisoned by it.
pub fn timeout_names_the_pending_receive(factory: Factory) {
    let comms = factory(2);
    let slot = Slot::new(15, 3);
    let mut b = [0u8; 4];
    let e = comms[1].recv(Rank(0), slot, &mut b, short()).unwrap_err();
    match e {
        Error::Timeout { rank, pending, .. } => {
            assert_eq!(rank, Rank(1));
            assert!(pending.contains(&Pending::Recv { from: vec![Rank(0)], slot }), "{pending:?}");
        }
        e => panic!("expected a timeout, got {e}"),
    }
    assert_eq!(comms[1].poisoned(), None);
    let e = comms[1].recv_any(&[Rank(0)], slot, &mut b, short()).unwrap_err();
    assert!(
        matches!(&e, Error::Timeout { pending, .. }
            if pending.contains(&Pending::Recv { from: vec![Rank(0)], slot })),
        "{e}"
    );
}

/// A receive that timed out and was cancelled does not swallow the next message of its
/// stream.
pub fn cancel_then_stream_works(factory: Factory) {
    let slot = Slot::new(16, 0);
    let comms = factory(2);
    let mut b = [0u8; 3];
    let mut ops = [Op::recv(Rank(0), slot, &mut b)];
    let e = comms[1].progress(&mut ops, Wait::All, short()).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    comms[1].cancel(&mut ops);
    assert_eq!(ops[0].state(), OpState::Cancelled);
    run_ranks(comms, |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            c.send(Rank(1), slot, b"abc", dl).unwrap();
        } else {
            let mut b = [0u8; 3];
            assert_eq!(c.recv(Rank(0), slot, &mut b, dl).unwrap(), 3);
            assert_eq!(&b, b"abc");
        }
    });
}

/// An operation naming this rank itself, or a rank outside the group, is rejected with
/// `InvalidArgument`.
pub fn invalid_peer_is_rejected(factory: Factory) {
    let comms = factory(2);
    let slot = Slot::new(17, 0);
    let mut b = [0u8; 1];
    for bad in [Rank(0), Rank(2), Rank(u32::MAX)] {
        let e = comms[0].send(bad, slot, b"x", short()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "send to {bad:?}: {e}");
        let e = comms[0].recv(bad, slot, &mut b, short()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "recv from {bad:?}: {e}");
    }
    assert_eq!(comms[0].poisoned(), None);
}

/// `abort` on one rank fails that rank's and every peer's current and future calls with
/// `Aborted` naming it.
pub fn abort_reaches_every_peer(factory: Factory) {
    let checked = AtomicUsize::new(0);
    let slot = Slot::new(18, 0);
    run_ranks(factory(3), |c| {
        let dl = deadline(LONG);
        let mut b = [0u8; 1];
        if c.rank() == Rank(2) {
            c.abort("conformance abort");
            assert!(matches!(c.poisoned(), Some(Error::Aborted { by: Rank(2), .. })));
            let e = c.send(Rank(0), slot, b"x", dl).unwrap_err();
            assert!(matches!(e, Error::Aborted { by: Rank(2), .. }), "{e}");
            // Stay alive until the peers have seen the abort, so they cannot see a closed
            // connection instead.
            wait_for("the peers to see the abort", || checked.load(Ordering::SeqCst) == 2, dl);
        } else {
            let e = c.recv(Rank(2), slot, &mut b, dl).unwrap_err();
            assert_eq!(
                e,
                Error::Aborted { by: Rank(2), reason: "conformance abort".to_string() },
                "{e}"
            );
            let e = c.recv(Rank(1 - c.rank().0), slot, &mut b, dl).unwrap_err();
            assert!(matches!(e, Error::Aborted { by: Rank(2), .. }), "a later call: {e}");
            assert!(matches!(c.poisoned(), Some(Error::Aborted { by: Rank(2), .. })));
            checked.fetch_add(1, Ordering::SeqCst);
        }
    });
}

/// `abort` called from another thread wakes a thread of the same rank that is blocked in a
/// receive, and reaches the peer.
pub fn abort_from_another_thread(factory: Factory) {
    let slot = Slot::new(22, 0);
    let (checked, done) = (AtomicBool::new(false), AtomicBool::new(false));
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        let mut b = [0u8; 1];
        if c.rank() == Rank(1) {
            let c = &*c;
            std::thread::scope(|s| {
                let waiter = s.spawn(move || c.recv(Rank(0), slot, &mut [0u8; 1], dl));
                // Most likely the waiter is blocked by now; if not, its call fails at entry,
                // which is just as correct.
                std::thread::sleep(Duration::from_millis(50));
                c.abort("from another thread");
                let e = waiter.join().unwrap().unwrap_err();
                done.store(true, Ordering::SeqCst);
                assert_eq!(e, Error::Aborted { by: Rank(1), reason: "from another thread".into() });
            });
            wait_for("rank 0 to see the abort", || checked.load(Ordering::SeqCst), dl);
        } else {
            let e = c.recv(Rank(1), slot, &mut b, dl).unwrap_err();
            checked.store(true, Ordering::SeqCst);
            assert!(matches!(e, Error::Aborted { by: Rank(1), .. }), "{e}");
            // Stay alive until rank 1's waiter has returned, so that it cannot see this rank
            // lost instead of its own abort.
            wait_for("rank 1's waiter", || done.load(Ordering::SeqCst), dl);
        }
    });
}

/// A rank that drops its communicator is reported lost: what it sent before is still
/// delivered, then a receive that only it could satisfy fails with `PeerLost` naming it
/// (before the deadline; it must not hang).
pub fn dropped_peer_is_lost(factory: Factory) {
    let slot = Slot::new(20, 0);
    let received = AtomicBool::new(false);
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            c.send(Rank(1), slot, b"bye", dl).unwrap();
            // Wait until rank 1 has the message, so that a transport that holds sends until
            // the receiver takes them is not asked to deliver after the drop.
            wait_for("rank 1 to receive", || received.load(Ordering::SeqCst), dl);
            drop(c);
        } else {
            let mut b = [0u8; 3];
            assert_eq!(c.recv(Rank(0), slot, &mut b, dl).unwrap(), 3);
            assert_eq!(&b, b"bye");
            received.store(true, Ordering::SeqCst);
            let e = c.recv(Rank(0), slot, &mut b, dl).unwrap_err();
            assert!(matches!(e, Error::PeerLost { peer: Rank(0), .. }), "{e}");
        }
    });
}

/// An operation that fails (its peer left) is marked `Cancelled`, as a withdrawn one is, and
/// the batch's completed operations stay completed: a caller can tell which failed.
/// (Collectives rely on it when their last peer leaves as the call ends: the mismatch watch
/// failing then is no reason to fail the call.)
pub fn a_failed_operation_is_cancelled_and_the_rest_keep_their_state(factory: Factory) {
    let (a, b) = (Slot::new(21, 0), Slot::new(21, 1));
    let received = AtomicBool::new(false);
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(1) {
            c.send(Rank(0), a, b"last", dl).unwrap();
            wait_for("rank 0 to receive", || received.load(Ordering::SeqCst), dl);
            drop(c);
        } else {
            let (mut got, mut never) = ([0u8; 4], [0u8; 4]);
            {
                let mut ops = [Op::recv(Rank(1), a, &mut got), Op::recv(Rank(1), b, &mut never)];
                c.progress(&mut ops, Wait::Any, dl).unwrap();
                assert_eq!(ops[0].completed(), Some((Rank(1), 4)));
                received.store(true, Ordering::SeqCst);
                let e = c.progress(&mut ops, Wait::All, dl).unwrap_err();
                assert!(matches!(e, Error::PeerLost { peer: Rank(1), .. }), "{e}");
                assert_eq!(ops[0].completed(), Some((Rank(1), 4)), "a completed one stays so");
                assert_eq!(ops[1].state(), OpState::Cancelled, "the failed operation: {e}");
            }
            assert_eq!(&got, b"last");
        }
    });
}

/// The plan of [`random_traffic`]: what `from` sends to `to`, in order, as (slot, length).
fn traffic_plan(from: u32, to: u32) -> Vec<(Slot, usize)> {
    const LENS: [usize; 6] = [0, 1, 100, 5000, 64 << 10, 70_000];
    let mut x = u64::from(from) << 32 | u64::from(to) | 0x5555_0000_0000_0000;
    (0..30)
        .map(|_| {
            // xorshift64: a fixed, seeded sequence both sides compute.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (Slot::new(21, (x % 3) as u32), LENS[((x >> 8) % LENS.len() as u64) as usize])
        })
        .collect()
}

/// Four ranks send each other 30 messages per pair on three slots with lengths from 0 to
/// 70,000 bytes, all posted in one batch; receives, also posted in one batch, are driven
/// with `wait_any`; every message lands in order in its `(peer, slot)` stream.
pub fn random_traffic(factory: Factory) {
    const SIZE: u32 = 4;
    run_ranks(factory(SIZE), |c| {
        let dl = deadline(LONG);
        let me = c.rank().0;
        let peers: Vec<u32> = (0..SIZE).filter(|&p| p != me).collect();
        let seed = |from: u32, to: u32, i: usize| u64::from(from * 1000 + to) << 20 | i as u64;
        let outs: Vec<(u32, Slot, Vec<u8>)> = peers
            .iter()
            .flat_map(|&to| {
                traffic_plan(me, to)
                    .into_iter()
                    .enumerate()
                    .map(move |(i, (slot, len))| (to, slot, pattern(len, seed(me, to, i))))
            })
            .collect();
        let expect: Vec<(u32, Slot, usize, u64)> = peers
            .iter()
            .flat_map(|&from| {
                traffic_plan(from, me)
                    .into_iter()
                    .enumerate()
                    .map(move |(i, (slot, len))| (from, slot, len, seed(from, me, i)))
            })
            .collect();
        let mut bufs: Vec<Vec<u8>> = expect.iter().map(|_| vec![0u8; 70_000]).collect();
        let mut ops: Vec<Op<'_>> = Vec::new();
        // Interleave sends and receives so that neither waits for the other to be posted.
        ops.extend(outs.iter().map(|(to, slot, m)| Op::send(Rank(*to), *slot, m)));
        ops.extend(expect.iter().zip(bufs.iter_mut()).map(|(e, b)| Op::recv(Rank(e.0), e.1, b)));
        let mut batch = Batch::new(&*c, &mut ops);
        while !batch.is_done() {
            batch.wait_any(dl).unwrap();
        }
        let lens: Vec<Option<(Rank, usize)>> =
            batch.ops()[outs.len()..].iter().map(Op::completed).collect();
        drop(batch);
        drop(ops);
        for (i, ((from, slot, len, seed), b)) in expect.iter().zip(&bufs).enumerate() {
            assert_eq!(lens[i], Some((Rank(*from), *len)), "receive {i} from {from} on {slot}");
            assert!(b[..*len] == pattern(*len, *seed)[..], "content of receive {i} from {from}");
        }
    });
}

/// Three ranks each send 4 MiB to both others and receive 4 MiB from both, all in one batch
/// per rank: a transport whose sends block while its peer's do too (both sides writing,
/// neither reading) deadlocks here.
pub fn simultaneous_large_exchange(factory: Factory) {
    const LEN: usize = 4 << 20;
    run_ranks(factory(3), |c| {
        let me = c.rank().0;
        let peers: Vec<u32> = (0..3).filter(|&p| p != me).collect();
        let outs: Vec<Vec<u8>> =
            peers.iter().map(|&p| pattern(LEN, u64::from(me * 10 + p))).collect();
        let mut ins: Vec<Vec<u8>> = peers.iter().map(|_| vec![0u8; LEN]).collect();
        let mut ops: Vec<Op<'_>> = Vec::new();
        ops.extend(peers.iter().zip(&outs).map(|(&p, o)| Op::send(Rank(p), Slot::new(23, 0), o)));
        ops.extend(
            peers.iter().zip(ins.iter_mut()).map(|(&p, b)| Op::recv(Rank(p), Slot::new(23, 0), b)),
        );
        c.run(&mut ops, deadline(LONG)).unwrap();
        drop(ops);
        for (&p, b) in peers.iter().zip(&ins) {
            assert!(*b == pattern(LEN, u64::from(p * 10 + me)), "content from {p} to {me}");
        }
    });
}

/// Two thousand small messages on distinct slots sent before the receiver posts anything:
/// the transport must buffer or hold them (within its bounds) and deliver them all once the
/// receives arrive, without deadlock.
pub fn messages_before_receives(factory: Factory) {
    const N: u32 = 2000;
    let posted = AtomicBool::new(false);
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            let msgs: Vec<Vec<u8>> =
                (0..N).map(|i| pattern((i % 300) as usize, u64::from(i))).collect();
            let mut ops: Vec<Op<'_>> = msgs
                .iter()
                .enumerate()
                .map(|(i, m)| Op::send(Rank(1), Slot::new(24, i as u32), m))
                .collect();
            // Everything is posted before rank 1 posts a receive.
            let _ = c.progress(&mut ops, Wait::All, Instant::now());
            posted.store(true, Ordering::SeqCst);
            c.run(&mut ops, dl).unwrap();
        } else {
            wait_for("rank 0 to post its sends", || posted.load(Ordering::SeqCst), dl);
            let mut bufs = vec![[0u8; 300]; N as usize];
            let mut ops: Vec<Op<'_>> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, b)| Op::recv(Rank(0), Slot::new(24, i as u32), b))
                .collect();
            c.run(&mut ops, dl).unwrap();
            let lens: Vec<usize> =
                ops.iter().map(|o| o.completed().map_or(999, |(_, n)| n)).collect();
            drop(ops);
            for (i, b) in bufs.iter().enumerate() {
                let n = i % 300;
                assert_eq!(lens[i], n, "length of message {i}");
                assert!(b[..n] == pattern(n, i as u64)[..], "content of message {i}");
            }
        }
    });
}

/// A pipelined consumer: a `Batch` of receives driven by `wait_any` completes at least one
/// more operation per call and ends with every message in place.
pub fn batch_wait_any_pipelining(factory: Factory) {
    const N: u32 = 16;
    const LEN: usize = 40 << 10;
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        if c.rank() == Rank(0) {
            for i in 0..N {
                c.send(Rank(1), Slot::new(19, i), &pattern(LEN, u64::from(i)), dl).unwrap();
            }
        } else {
            let mut bufs = vec![vec![0u8; LEN]; N as usize];
            let mut ops: Vec<Op<'_>> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, b)| Op::recv(Rank(0), Slot::new(19, i as u32), b))
                .collect();
            let mut batch = Batch::new(&*c, &mut ops);
            let mut calls = 0;
            let mut done = 0;
            while !batch.is_done() {
                batch.wait_any(dl).unwrap();
                calls += 1;
                let now = batch.ops().iter().filter(|o| o.is_done()).count();
                assert!(now > done, "wait_any returned with no new completion");
                done = now;
            }
            assert!(calls <= N as usize);
            drop(batch);
            drop(ops);
            for (i, b) in bufs.iter().enumerate() {
                assert!(*b == pattern(LEN, i as u64), "content of message {i}");
            }
        }
    });
}

/// [`Wait::Poll`] returns at once, complete or not, whatever its deadline, and polling alone
/// (with the caller doing other work in between) completes a large receive and a large send.
pub fn poll_returns_at_once_and_polling_completes(factory: Factory) {
    const LEN: usize = 3 << 20;
    let (data, go) = (Slot::new(23, 0), Slot::new(23, 1));
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        let me = c.rank();
        let peer = Rank(1 - me.0);
        let mut buf = vec![0u8; LEN];
        let out = pattern(LEN, u64::from(me.0));
        let mut recv = [Op::recv(peer, data, &mut buf)];
        // Nothing can have come: the peer posts its send only after the "go" below. A
        // deadline already past does not make a poll a timeout.
        c.progress(&mut recv, Wait::Poll, Instant::now() - Duration::from_millis(1)).unwrap();
        assert!(matches!(recv[0].state(), OpState::Posted(_)), "the poll posted the receive");
        let [recv] = recv;
        c.run(&mut [Op::send(peer, go, b""), Op::recv(peer, go, &mut [])], dl).unwrap();
        let mut ops = [Op::send(peer, data, &out), recv];
        let mut polls = 0u64;
        while !(ops[0].is_done() && ops[1].is_done()) {
            assert!(Instant::now() < dl, "polling did not complete the exchange");
            c.progress(&mut ops, Wait::Poll, dl).unwrap();
            polls += 1;
            // The caller's own work between polls.
            std::thread::sleep(Duration::from_micros(50));
        }
        assert!(polls > 0);
        assert_eq!(ops[1].completed(), Some((peer, LEN)));
        assert!(buf == pattern(LEN, u64::from(peer.0)), "content of the message");
    });
}

/// [`Communicator::progress_at`] with the caller's reading of the clock: a fresh one drives
/// an exchange as `progress` does, and an old one (a second, as after long local work; well
/// below any peer timeout) neither fails the call early nor keeps it past its deadline: a
/// receive from a peer that sends a little later completes, and one that nothing answers
/// times out, naming itself.
pub fn a_callers_reading_of_the_clock_stands_for_entry(factory: Factory) {
    let (fresh, late, never) = (Slot::new(24, 0), Slot::new(24, 1), Slot::new(24, 2));
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        let me = c.rank();
        let peer = Rank(1 - me.0);
        let out = pattern(64, u64::from(me.0));
        let mut buf = [0u8; 64];
        let mut ops = [Op::send(peer, fresh, &out), Op::recv(peer, fresh, &mut buf)];
        c.progress_at(&mut ops, Wait::All, dl, Instant::now()).unwrap();
        assert_eq!(ops[1].completed(), Some((peer, 64)));
        assert!(buf == *pattern(64, u64::from(peer.0)), "content of the message");
        let old = Instant::now().checked_sub(Duration::from_secs(1)).unwrap_or_else(Instant::now);
        if me == Rank(0) {
            // Long enough that the receiver waits (spins, then sleeps) before it comes.
            std::thread::sleep(Duration::from_millis(50));
            c.send(peer, late, &out, dl).unwrap();
        } else {
            let mut ops = [Op::recv(peer, late, &mut buf)];
            c.progress_at(&mut ops, Wait::All, dl, old).unwrap();
            assert_eq!(ops[0].completed(), Some((peer, 64)));
            let mut ops = [Op::recv(peer, never, &mut buf)];
            match c.progress_at(&mut ops, Wait::All, short(), old) {
                Err(Error::Timeout { pending, .. }) => assert!(
                    pending.contains(&Pending::Recv { from: vec![peer], slot: never }),
                    "{pending:?}"
                ),
                r => panic!("expected a timeout, got {r:?}"),
            }
            c.cancel(&mut ops);
        }
        c.run(&mut [Op::send(peer, fresh, b""), Op::recv(peer, fresh, &mut [])], dl).unwrap();
    });
}

/// [`Wait::First`] returns once the leading operations are all complete, not after the first
/// of them (an eager send completes at once; the receive beside it only when the peer sends,
/// later), or as soon as an operation after them completes (a watch), the leading ones still
/// posted; `First(0)` returns at once.
pub fn wait_first_covers_the_leading_operations(factory: Factory) {
    let (data, watch, hold, go) =
        (Slot::new(24, 0), Slot::new(24, 1), Slot::new(24, 2), Slot::new(24, 3));
    run_ranks(factory(2), |c| {
        let dl = deadline(LONG);
        let me = c.rank();
        let peer = Rank(1 - me.0);
        if me == Rank(1) {
            let mut buf = [0u8; 4];
            assert_eq!(c.recv(peer, data, &mut buf, dl).unwrap(), 4);
            assert_eq!(&buf, b"ping");
            // Late, so that our peer's send is long complete when this arrives.
            std::thread::sleep(Duration::from_millis(50));
            c.send(peer, data, b"late", dl).unwrap();
            c.recv(peer, go, &mut [], dl).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            c.send(peer, watch, b"alarm", dl).unwrap();
            // Stay until our peer is done: a receive from a rank that closed fails.
            c.recv(peer, go, &mut [], dl).unwrap();
            return;
        }
        let (mut got, mut alarm, mut never) = ([0u8; 4], [0u8; 5], [0u8; 1]);
        let mut ops = [
            Op::send(peer, data, b"ping"),
            Op::recv(peer, data, &mut got),
            Op::recv(peer, watch, &mut alarm),
        ];
        c.progress(&mut ops, Wait::First(2), dl).unwrap();
        assert!(ops[0].is_done(), "the send is complete");
        assert_eq!(ops[1].completed(), Some((peer, 4)), "returned before the late receive");
        assert!(matches!(ops[2].state(), OpState::Posted(_)), "the watch is left posted");
        let [_, _, watch_op] = ops;
        // Now the other way: the watch completes while a leading receive never can.
        let mut ops = [Op::recv(peer, hold, &mut never), watch_op];
        c.progress(&mut ops[..1], Wait::First(0), dl).unwrap();
        assert!(matches!(ops[0].state(), OpState::Posted(_)), "First(0) posted and returned");
        c.send(peer, go, b"", dl).unwrap();
        c.progress(&mut ops, Wait::First(1), dl).unwrap();
        assert_eq!(ops[1].completed(), Some((peer, 5)), "the watch completed");
        assert!(matches!(ops[0].state(), OpState::Posted(_)), "the leading receive is not");
        c.cancel(&mut ops[..1]);
        c.send(peer, go, b"", dl).unwrap();
        assert_eq!(&got, b"late");
        assert_eq!(&alarm, b"alarm");
    });
}

/// One conformance case: its name and the function that runs it.
pub type Case = (&'static str, fn(Factory));

/// Every case by name, in the order [`conformance_tests!`](crate::conformance_tests) expands
/// them.
pub const CASES: &[Case] = crate::__conformance_list!(table);

/// Does nothing: the default `setup` of [`conformance_tests!`](crate::conformance_tests).
pub fn no_setup() {}

/// Run every case against `factory`, one after the other on this thread, and return the
/// failed ones with their panic messages (empty when the transport passed). For running the
/// suite outside a test harness; `progress` is called with each case's name before it runs.
pub fn run_all(factory: Factory, mut progress: impl FnMut(&str)) -> Vec<(&'static str, String)> {
    let mut failed = Vec::new();
    for (name, case) in CASES {
        progress(name);
        if let Err(payload) = std::panic::catch_unwind(|| case(factory)) {
            failed.push((*name, panic_message(&*payload)));
        }
    }
    failed
}

/// Expand to one `#[test]` per conformance case, each calling the case with `$factory` (a
/// path to a `fn(u32) -> Vec<Box<dyn Communicator>>`, see
/// [`conformance::Factory`](crate::conformance::Factory)); with `setup = path`, each test
/// calls `path()` first. See the [`conformance`](crate::conformance) module.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!($factory, setup = $crate::conformance::no_setup);
    };
    ($factory:path, setup = $setup:path) => {
        $crate::__conformance_list!(tests $factory, $setup);
    };
}

/// The one list of conformance cases, handed to [`__conformance_expand!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_list {
    ($($mode:tt)*) => {
        $crate::__conformance_expand! {$($mode)*;
            ping_pong_once,
            ping_pong_1000,
            all_pairs_2_to_8,
            recv_any_from_a_set,
            thousand_slots_in_flight,
            zero_byte_messages,
            four_threads_one_communicator,
            large_messages,
            fifo_mixed_sizes,
            recv_buffer_longer_than_message,
            message_too_long,
            fingerprint_rule_1,
            fingerprint_rule_2,
            fingerprint_rule_3,
            timeout_names_the_pending_receive,
            cancel_then_stream_works,
            invalid_peer_is_rejected,
            abort_reaches_every_peer,
            abort_from_another_thread,
            dropped_peer_is_lost,
            a_failed_operation_is_cancelled_and_the_rest_keep_their_state,
            random_traffic,
            simultaneous_large_exchange,
            messages_before_receives,
            batch_wait_any_pipelining,
            poll_returns_at_once_and_polling_completes,
            wait_first_covers_the_leading_operations,
            a_callers_reading_of_the_clock_stands_for_entry
        }
    };
}

/// Expands the list of cases as `#[test]` functions or as the [`CASES`] table.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_expand {
    (tests $factory:path, $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $setup();
                $crate::conformance::$case($factory)
            }
        )*
    };
    (table; $($case:ident),* $(,)?) => {
        &[$((stringify!($case), $crate::conformance::$case as fn($crate::conformance::Factory))),*]
    };
}
