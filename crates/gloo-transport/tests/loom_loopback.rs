//! loom models of the loopback transport's mailbox hand-off: a message handed from a sending
//! thread to a receiver that may already be asleep on its condition variable, an abort that
//! must wake a sleeping receiver, and two receivers sharing one communicator.
//!
//! Built only with `RUSTFLAGS="--cfg loom"`, where the transport's `sync` shim swaps in loom's
//! `Mutex`, `Condvar`, `Arc` and atomics, and waits are untimed: a lost wake-up shows up as a
//! deadlock that loom reports, instead of as a timeout.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p gloo-transport --test loom_loopback --release
//! ```
#![cfg(loom)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gloo_transport::loopback::{LoopbackComm, LoopbackConfig, group};
use gloo_transport::{Communicator, Error, Op, Rank, Slot, Wait};
use loom::thread;

const SLOT: Slot = Slot::new(1, 0);

/// Far enough away never to pass: loom models no clock, so every wait must end by a
/// notification.
fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

fn pair(cfg: LoopbackConfig) -> (LoopbackComm, LoopbackComm) {
    let mut g = group(2, cfg);
    let c1 = g.pop().unwrap();
    let c0 = g.pop().unwrap();
    (c0, c1)
}

#[test]
fn a_sent_message_reaches_a_waiting_receiver() {
    model(|| {
        let (c0, c1) = pair(LoopbackConfig::default());
        let sender = thread::spawn(move || {
            c0.send(Rank(1), SLOT, b"hi", far()).unwrap();
            c0
        });
        let mut b = [0u8; 4];
        assert_eq!(c1.recv(Rank(0), SLOT, &mut b, far()).unwrap(), 2);
        assert_eq!(&b[..2], b"hi");
        drop(sender.join().unwrap());
    });
}

#[test]
fn abort_wakes_a_waiting_receiver() {
    model(|| {
        let (c0, c1) = pair(LoopbackConfig::default());
        let waiter = thread::spawn(move || {
            let mut b = [0u8; 1];
            let e = c1.recv(Rank(0), SLOT, &mut b, far()).unwrap_err();
            assert_eq!(e, Error::Aborted { by: Rank(0), reason: "stop".to_string() });
            c1
        });
        c0.abort("stop");
        drop(waiter.join().unwrap());
    });
}

#[test]
fn a_dropped_peer_wakes_a_waiting_receiver() {
    model(|| {
        let (c0, c1) = pair(LoopbackConfig::default());
        let waiter = thread::spawn(move || {
            let mut b = [0u8; 1];
            let e = c1.recv(Rank(0), SLOT, &mut b, far()).unwrap_err();
            assert!(matches!(e, Error::PeerLost { peer: Rank(0), .. }), "{e}");
        });
        drop(c0);
        waiter.join().unwrap();
    });
}

#[test]
fn two_receiving_threads_on_one_communicator() {
    model(|| {
        let (c0, c1) = pair(LoopbackConfig::default());
        let c1 = loom::sync::Arc::new(c1);
        let other = {
            let c1 = c1.clone();
            thread::spawn(move || {
                let mut b = [0u8; 1];
                c1.recv(Rank(0), Slot::new(2, 0), &mut b, far()).unwrap();
                assert_eq!(b, [2]);
            })
        };
        let (s1, s2) = ([1u8], [2u8]);
        let mut ops = [Op::send(Rank(1), SLOT, &s1), Op::send(Rank(1), Slot::new(2, 0), &s2)];
        c0.progress(&mut ops, Wait::All, far()).unwrap();
        let mut b = [0u8; 1];
        c1.recv(Rank(0), SLOT, &mut b, far()).unwrap();
        assert_eq!(b, [1]);
        other.join().unwrap();
    });
}

#[test]
fn a_rendezvous_send_is_acknowledged_to_a_waiting_sender() {
    // With havoc, a send may wait for the receiver to consume its message; the receiver's
    // acknowledgement must wake the sender. Which sends wait depends on the seed, so several
    // seeds are modelled and at least one of them must have taken that path.
    static RENDEZVOUS: AtomicBool = AtomicBool::new(false);
    for seed in 0..4 {
        model(move || {
            let (c0, c1) = pair(LoopbackConfig::havoc(seed));
            let sender = thread::spawn(move || {
                let mut ops = [Op::send(Rank(1), SLOT, b"x")];
                // A deadline in the past: an eager send completes, a rendezvous one times out
                // still posted.
                if c0.progress(&mut ops, Wait::All, Instant::now()).is_err() {
                    RENDEZVOUS.store(true, Ordering::Relaxed);
                    c0.progress(&mut ops, Wait::All, far()).unwrap();
                }
                assert_eq!(ops[0].completed(), Some((Rank(1), 1)));
                c0
            });
            let mut b = [0u8; 1];
            assert_eq!(c1.recv(Rank(0), SLOT, &mut b, far()).unwrap(), 1);
            assert_eq!(b, *b"x");
            drop(sender.join().unwrap());
        });
    }
    assert!(RENDEZVOUS.load(Ordering::Relaxed), "no seed gave a rendezvous send");
}

#[test]
fn a_cancelled_receive_racing_a_send_does_not_swallow_it() {
    // The message may arrive before the first receive is posted, while it is posted (and be
    // matched to it, then put back by the cancel), or after the cancel: in every case the
    // second receive gets it.
    model(|| {
        let (c0, c1) = pair(LoopbackConfig::default());
        let sender = thread::spawn(move || {
            c0.send(Rank(1), SLOT, b"m", far()).unwrap();
            c0
        });
        let mut b = [0u8; 1];
        let mut ops = [Op::recv(Rank(0), SLOT, &mut b)];
        // A deadline in the past: the receive is posted, driven once, and left pending.
        if c1.progress(&mut ops, Wait::All, Instant::now()).is_err() {
            c1.cancel(&mut ops);
            assert_eq!(c1.recv(Rank(0), SLOT, &mut b, far()).unwrap(), 1);
        }
        assert_eq!(b, *b"m");
        drop(sender.join().unwrap());
    });
}
