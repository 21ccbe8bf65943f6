//! The loopback transport's tests: the engine's rules over in-process pipes, with and without
//! havoc, and a rank's goodbye and crash.

use super::*;
use crate::{Fingerprint, OpState, Pending, Slot};
use std::time::Duration;

fn soon(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// One scoped thread per rank (gloo-testing's `run_ranks` cannot be used here: it links
/// another copy of this crate).
fn each<R: Send>(comms: Vec<LoopbackComm>, f: impl Fn(LoopbackComm) -> R + Sync) -> Vec<R> {
    let f = &f;
    std::thread::scope(|s| {
        let hs: Vec<_> = comms.into_iter().map(|c| s.spawn(move || f(c))).collect();
        hs.into_iter().map(|h| h.join().expect("a rank panicked")).collect()
    })
}

fn fp(epoch: u64, desc: u8) -> Fingerprint {
    Fingerprint::with_epoch(epoch, desc)
}

const S: Slot = Slot::new(1, 0);

#[test]
fn loopback_comm_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<LoopbackComm>();
}

#[test]
fn ping_pong_plain_and_havoc() {
    for cfg in [LoopbackConfig::default(), LoopbackConfig::havoc(7)] {
        each(group(2, cfg), |c| {
            let peer = Rank(1 - c.rank().0);
            let mut buf = [0u8; 8];
            for i in 0..200u64 {
                if c.rank() == Rank(0) {
                    c.send(peer, S, &i.to_le_bytes(), soon(10)).unwrap();
                    assert_eq!(c.recv(peer, S, &mut buf, soon(10)).unwrap(), 8);
                    assert_eq!(u64::from_le_bytes(buf), i + 1);
                } else {
                    c.recv(peer, S, &mut buf, soon(10)).unwrap();
                    let v = u64::from_le_bytes(buf) + 1;
                    c.send(peer, S, &v.to_le_bytes(), soon(10)).unwrap();
                }
            }
        });
    }
}

#[test]
fn havoc_keeps_fifo_within_a_stream_and_chunks_large_messages() {
    for seed in 0..4 {
        each(group(2, LoopbackConfig::havoc(seed)), |c| {
            let n = 60u32;
            if c.rank() == Rank(0) {
                let msgs: Vec<Vec<u8>> = (0..n)
                    .map(|i| vec![i as u8; if i % 7 == 0 { 5000 } else { i as usize }])
                    .collect();
                let mut ops: Vec<Op<'_>> = msgs
                    .iter()
                    .enumerate()
                    .map(|(i, m)| Op::send(Rank(1), Slot::new(1, (i % 3) as u32), m))
                    .collect();
                c.run(&mut ops, soon(20)).unwrap();
            } else {
                let mut bufs = vec![vec![0u8; 5000]; n as usize];
                let mut ops: Vec<Op<'_>> = bufs
                    .iter_mut()
                    .enumerate()
                    .map(|(i, b)| Op::recv(Rank(0), Slot::new(1, (i % 3) as u32), b))
                    .collect();
                c.run(&mut ops, soon(20)).unwrap();
                for (i, op) in ops.iter().enumerate() {
                    let want = if i % 7 == 0 { 5000 } else { i };
                    assert_eq!(op.completed(), Some((Rank(0), want)));
                }
                drop(ops);
                for (i, b) in bufs.iter().enumerate() {
                    let want = if i % 7 == 0 { 5000 } else { i };
                    assert!(b[..want].iter().all(|&x| x == i as u8), "message {i}");
                }
            }
        });
    }
}

#[test]
fn recv_any_reports_the_sender() {
    each(group(3, LoopbackConfig::havoc(3)), |c| {
        if c.rank() == Rank(0) {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let mut b = [0u8; 4];
                let (r, n) = c.recv_any(&[Rank(1), Rank(2)], S, &mut b, soon(10)).unwrap();
                assert_eq!(n, 1);
                assert_eq!(u32::from(b[0]), r.0);
                seen.push(r);
            }
            seen.sort();
            assert_eq!(seen, vec![Rank(1), Rank(2)]);
        } else {
            c.send(Rank(0), S, &[c.rank().0 as u8], soon(10)).unwrap();
        }
    });
}

#[test]
fn invalid_peers_fail_before_anything_is_posted() {
    let g = group(2, LoopbackConfig::default());
    let c = &g[0];
    let mut b = [0u8; 1];
    for bad in [Rank(0), Rank(2)] {
        let mut ops = [Op::send(Rank(1), S, b"x"), Op::recv(bad, S, &mut b)];
        let e = c.progress(&mut ops, Wait::All, soon(1)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert_eq!(ops[0].state(), OpState::New);
    }
    let e = c.recv_any(&[], S, &mut b, soon(1)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    // Nothing reached rank 1.
    let e = g[1].recv(Rank(0), S, &mut b, Instant::now()).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
}

#[test]
fn timeout_names_the_pending_receive() {
    let g = group(2, LoopbackConfig::default());
    let mut b = [0u8; 1];
    let e = g[1].recv(Rank(0), S, &mut b, soon(0)).unwrap_err();
    match e {
        Error::Timeout { rank, pending, .. } => {
            assert_eq!(rank, Rank(1));
            assert_eq!(pending, vec![Pending::Recv { from: vec![Rank(0)], slot: S }]);
        }
        e => panic!("{e}"),
    }
}

#[test]
fn too_long_and_zero_byte_messages() {
    let g = group(2, LoopbackConfig::default());
    g[0].send(Rank(1), S, &[1, 2, 3], soon(1)).unwrap();
    g[0].send(Rank(1), S, &[], soon(1)).unwrap();
    let mut b = [0u8; 2];
    let e = g[1].recv(Rank(0), S, &mut b, soon(1)).unwrap_err();
    assert_eq!(e, Error::MessageTooLong { peer: Rank(0), slot: S, len: 3, capacity: 2 });
    assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(1)).unwrap(), 0);
    g[0].send(Rank(1), S, &[], soon(1)).unwrap();
    assert_eq!(g[1].recv(Rank(0), S, &mut [], soon(1)).unwrap(), 0);
}

#[test]
fn abort_wakes_a_waiter_and_reaches_every_rank() {
    let g = group(3, LoopbackConfig::default());
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let mut b = [0u8; 1];
            g[1].recv(Rank(0), S, &mut b, soon(30)).unwrap_err()
        });
        std::thread::sleep(Duration::from_millis(20));
        g[2].abort("test");
        let e = waiter.join().unwrap();
        assert_eq!(e, Error::Aborted { by: Rank(2), reason: "test".into() });
    });
    for c in &g {
        assert_eq!(c.poisoned(), Some(Error::Aborted { by: Rank(2), reason: "test".into() }));
        assert!(matches!(
            c.send(Rank((c.rank().0 + 1) % 3), S, b"", soon(1)),
            Err(Error::Aborted { .. })
        ));
    }
}

#[test]
fn cancel_of_an_unmatched_receive_leaves_the_stream_working() {
    let g = group(2, LoopbackConfig::default());
    let mut b = [0u8; 4];
    let mut ops = [Op::recv(Rank(0), S, &mut b)];
    assert!(g[1].progress(&mut ops, Wait::All, Instant::now()).is_err());
    g[1].cancel(&mut ops);
    assert_eq!(ops[0].state(), OpState::Cancelled);
    g[0].send(Rank(1), S, b"abcd", soon(1)).unwrap();
    assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(1)).unwrap(), 4);
    assert_eq!(&b, b"abcd");
}

/// A call reports its first failure; a second one in the same batch stays posted for the
/// next call that drives it (it used to be withdrawn silently as the call released its
/// buffers, which lost an alarm's mismatch behind a broken pair).
#[test]
fn a_second_failure_in_a_batch_waits_for_the_next_call() {
    let g = group(3, LoopbackConfig::default());
    let (mut b1, mut b2) = ([0u8; 4], [0u8; 4]);
    g[1].run(&mut [Op::send(Rank(0), S, b"a").with_fingerprint(fp(1, 1))], soon(1)).unwrap();
    g[2].run(&mut [Op::send(Rank(0), S, b"b").with_fingerprint(fp(1, 2))], soon(1)).unwrap();
    let mut ops = [
        Op::recv(Rank(1), S, &mut b1).with_fingerprint(fp(1, 3)),
        Op::recv(Rank(2), S, &mut b2).with_fingerprint(fp(1, 3)),
    ];
    // Both messages are there before the call: wait until the pump has seen them.
    let deadline = soon(10);
    let e = loop {
        let e = g[0].progress(&mut ops, Wait::All, Instant::now());
        if !matches!(e, Err(Error::Timeout { .. })) || Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(matches!(e, Err(Error::Mismatch { peer: Rank(1), .. })), "{e:?}");
    assert_eq!(ops[0].state(), OpState::Cancelled);
    assert!(matches!(ops[1].state(), OpState::Posted(_)), "{:?}", ops[1].state());
    let e = g[0].progress(&mut ops[1..], Wait::All, soon(1));
    assert!(matches!(e, Err(Error::Mismatch { peer: Rank(2), .. })), "{e:?}");
}

#[test]
fn fingerprint_rules() {
    let g = group(2, LoopbackConfig::default());
    let mut b = [0u8; 4];
    // Rule 1: the matched message carries another fingerprint (or none).
    g[0].run(&mut [Op::send(Rank(1), S, b"a").with_fingerprint(fp(1, 1))], soon(1)).unwrap();
    let e = g[1].run(&mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(1, 2))], soon(1));
    assert!(matches!(e, Err(Error::Mismatch { peer: Rank(0), .. })), "{e:?}");
    g[0].send(Rank(1), S, b"a", soon(1)).unwrap();
    let e = g[1].run(&mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(1, 2))], soon(1));
    assert!(matches!(e, Err(Error::Mismatch { theirs: None, .. })), "{e:?}");
    // Rule 2: same tag, another slot, same epoch, other description: fails at once.
    let other = Slot::new(1, 5);
    g[0].run(&mut [Op::send(Rank(1), other, b"a").with_fingerprint(fp(2, 1))], soon(1)).unwrap();
    let e = g[1].run(&mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(2, 2))], soon(30));
    assert!(matches!(e, Err(Error::Mismatch { slot, .. }) if slot == S), "{e:?}");
    // Rule 3: another tag, same epoch, other description: Mismatch at the deadline.
    g[0].run(&mut [Op::send(Rank(1), Slot::new(9, 0), b"a").with_fingerprint(fp(3, 1))], soon(1))
        .unwrap();
    let e = g[1].run(
        &mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(3, 2))],
        Instant::now() + Duration::from_millis(50),
    );
    assert!(matches!(e, Err(Error::Mismatch { .. })), "{e:?}");
    // Same epoch, same description elsewhere: plain timeout.
    let e = g[1].run(
        &mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(3, 1))],
        Instant::now() + Duration::from_millis(50),
    );
    assert!(matches!(e, Err(Error::Timeout { .. })), "{e:?}");
}

#[test]
fn a_dropped_peer_is_lost_after_its_messages_are_consumed() {
    let mut g = group(2, LoopbackConfig::default());
    let c1 = g.pop().unwrap();
    let c0 = g.pop().unwrap();
    c0.send(Rank(1), S, b"last", soon(1)).unwrap();
    drop(c0);
    let mut b = [0u8; 4];
    assert_eq!(c1.recv(Rank(0), S, &mut b, soon(5)).unwrap(), 4);
    let e = c1.recv(Rank(0), S, &mut b, soon(30)).unwrap_err();
    assert!(matches!(e, Error::PeerLost { peer: Rank(0), .. }), "{e}");
    let e = c1.send(Rank(0), S, b"x", soon(1)).unwrap_err();
    assert!(matches!(e, Error::PeerLost { peer: Rank(0), .. }), "{e}");
}

#[test]
fn a_crashed_peer_poisons_every_other_rank_even_those_waiting_on_someone_else() {
    let mut g = group(3, LoopbackConfig::default());
    let c2 = g.pop().unwrap();
    let out = std::thread::scope(|s| {
        let waiters: Vec<_> = g
            .iter()
            .map(|c| {
                s.spawn(move || {
                    // Each waits on the other survivor, never on the rank that crashes.
                    let other = Rank(1 - c.rank().0);
                    c.recv(other, S, &mut [0u8; 4], soon(30))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        c2.crash();
        waiters.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    for r in out {
        assert!(matches!(r, Err(Error::PeerLost { peer: Rank(2), .. })), "{r:?}");
    }
    // Poisoned for good: a later operation fails the same way.
    let e = g[0].send(Rank(1), S, b"x", soon(1)).unwrap_err();
    assert!(matches!(e, Error::PeerLost { peer: Rank(2), .. }), "{e}");
}

#[test]
fn wait_any_returns_after_one_completion() {
    let g = group(2, LoopbackConfig::default());
    g[0].send(Rank(1), Slot::new(1, 1), b"x", soon(1)).unwrap();
    let (mut a, mut b) = ([0u8; 1], [0u8; 1]);
    let mut ops = [Op::recv(Rank(0), S, &mut a), Op::recv(Rank(0), Slot::new(1, 1), &mut b)];
    g[1].progress(&mut ops, Wait::Any, soon(5)).unwrap();
    assert!(!ops[0].is_done());
    assert_eq!(ops[1].completed(), Some((Rank(0), 1)));
    g[1].cancel(&mut ops);
}

#[test]
fn rendezvous_sends_complete_only_when_consumed() {
    // Havoc makes about half of the sends rendezvous: over 32 sends some must be.
    let g = group(2, LoopbackConfig::havoc(11));
    let data = [7u8; 3];
    let mut ops: Vec<Op<'_>> = (0..32).map(|i| Op::send(Rank(1), Slot::new(2, i), &data)).collect();
    g[0].progress(&mut ops, Wait::Any, soon(5)).unwrap();
    let pending = ops.iter().filter(|o| !o.is_done()).count();
    assert!(pending > 0 && pending < 32, "{pending} of 32 pending");
    each_thread_pair(&g, &mut ops);
}

#[test]
fn a_break_delivers_what_was_sent_whole_before_it_and_fails_the_unfinished() {
    let mut both_kinds = 0;
    for seed in 0..20 {
        let comms = group(2, LoopbackConfig::havoc(seed));
        let (c0, c1) = (&comms[0], &comms[1]);
        let bufs: Vec<[u8; 1]> = (0..8u8).map(|i| [i]).collect();
        let slot = |i: usize| Slot::new(10 + i as u32, 0);
        // Havoc makes each send eager (done at once, perhaps held back by the pipe for a
        // few of the receiver's reads) or rendezvous (posted until the receiver clears it).
        let mut ops: Vec<Op<'_>> =
            bufs.iter().enumerate().map(|(i, b)| Op::send(Rank(1), slot(i), b)).collect();
        let _ = c0.progress(&mut ops, Wait::All, Instant::now());
        let eager: Vec<bool> = ops.iter().map(Op::is_done).collect();
        // Rank 0 breaks the pair: a large send withdrawn before its clear-to-send cannot
        // be taken off the stream, so cancelling it closes the pair (and the small
        // rendezvous sends withdrawn with it can no longer go).
        let big = vec![0u8; 1 << 20];
        let mut large = [Op::send(Rank(1), Slot::new(99, 0), &big)];
        let _ = c0.progress(&mut large, Wait::All, Instant::now());
        c0.cancel(&mut ops);
        c0.cancel(&mut large);
        // Rank 1 then gets every eager message, whole and at once (a look with no time
        // for havoc's rounds), and the closed pair for every rendezvous one.
        for (i, &eager) in eager.iter().enumerate() {
            let mut b = [0u8; 1];
            let r = c1.recv(Rank(0), slot(i), &mut b, Instant::now());
            if eager {
                assert_eq!(r, Ok(1), "seed {seed}: eager message {i}");
                assert_eq!(b, bufs[i], "seed {seed}: eager message {i}");
            } else {
                assert!(
                    matches!(r, Err(Error::PeerLost { peer: Rank(0), .. })),
                    "seed {seed}, {i}: {r:?}"
                );
            }
        }
        assert_eq!(c1.poisoned(), None, "seed {seed}: a closed pair is not a lost group");
        both_kinds += usize::from(eager.contains(&true) && eager.contains(&false));
    }
    assert!(both_kinds >= 10, "only {both_kinds} of 20 seeds mixed eager and rendezvous");
}

#[test]
fn cancel_mid_message_breaks_the_pair_on_both_sides() {
    let g = group(3, LoopbackConfig::havoc(5));
    let big = vec![1u8; 1 << 20];
    let mut send = [Op::send(Rank(1), S, &big)];
    let mut b = vec![0u8; 1 << 20];
    let mut ops = [Op::recv(Rank(0), S, &mut b)];
    // Drive both sides with past deadlines until part of the message (but not all) has
    // reached the receive: havoc holds the rest back in the pipe.
    let mut partial = false;
    for _ in 0..10_000 {
        let _ = g[0].progress(&mut send, Wait::All, Instant::now());
        let _ = g[1].progress(&mut ops, Wait::All, Instant::now());
        if ops[0].is_done() {
            break;
        }
        if g[1].received_so_far(&ops[0]).is_some_and(|n| n > 0) {
            partial = true;
            break;
        }
    }
    assert!(partial, "havoc never left the transfer part-way");
    g[1].cancel(&mut ops);
    let e = g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap_err();
    assert_eq!(e, Error::Cancelled { peer: Rank(0), slot: S });
    // Rank 0 learns that rank 1 closed the pair (with a goodbye): operations with it fail
    // naming it, and its group is not poisoned.
    let e = g[0].recv(Rank(1), S, &mut b, soon(5)).unwrap_err();
    assert!(matches!(e, Error::PeerLost { peer: Rank(1), .. }), "{e}");
    if !send[0].is_done() {
        let e = g[0].progress(&mut send, Wait::All, soon(5)).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(1), .. }), "{e}");
    }
    assert_eq!(g[0].poisoned(), None);
    assert_eq!(g[1].poisoned(), None);
    // Other pairs are unaffected.
    std::thread::scope(|s| {
        s.spawn(|| g[2].send(Rank(1), S, b"ok", soon(5)).unwrap());
        assert_eq!(g[1].recv(Rank(2), S, &mut b, soon(5)).unwrap(), 2);
    });
}

#[test]
fn a_withdrawn_small_rendezvous_send_is_still_delivered_and_the_pair_goes_on() {
    // Find a send that havoc makes rendezvous and cancel it before its clear-to-send: its
    // announcement is on the stream already, so it is delivered from a copy when the
    // receiver asks for it, and the pair goes on.
    let g = group(2, LoopbackConfig::havoc(2));
    let mut sent = Vec::new();
    for i in 0..16u8 {
        let msg = [i];
        let mut ops = [Op::send(Rank(1), S, &msg)];
        sent.push(i);
        if g[0].progress(&mut ops, Wait::All, Instant::now()).is_err() {
            g[0].cancel(&mut ops);
            assert_eq!(ops[0].state(), OpState::Cancelled);
            break;
        }
    }
    assert!(sent.len() < 16, "no send was rendezvous");
    std::thread::scope(|s| {
        s.spawn(|| g[0].send(Rank(1), S, &[99], soon(5)).unwrap());
        let mut b = [0u8; 1];
        for &i in sent.iter().chain(&[99]) {
            assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(5)), Ok(1), "message {i}");
            assert_eq!(b, [i], "message {i}");
        }
    });
    assert_eq!(g[0].poisoned(), None);
    assert_eq!(g[1].poisoned(), None);
}

#[test]
fn a_withdrawn_large_rendezvous_send_breaks_only_its_pair() {
    // A large send withdrawn before its clear-to-send would need a copy of its size to
    // go later: the pair is closed instead (with a goodbye).
    let g = group(3, LoopbackConfig::default());
    let big = vec![3u8; (64 << 10) + 1];
    let mut ops = [Op::send(Rank(1), S, &big)];
    let e = g[0].progress(&mut ops, Wait::All, Instant::now()).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    g[0].cancel(&mut ops);
    assert_eq!(ops[0].state(), OpState::Cancelled);
    // Rank 1 finds the pair closed; its group is not poisoned.
    let mut b = vec![0u8; big.len()];
    let e = g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap_err();
    assert!(matches!(e, Error::PeerLost { peer: Rank(0), .. }), "{e}");
    assert_eq!(g[1].poisoned(), None);
    // Rank 0's later operations with rank 1 fail as cancelled.
    let e = g[0].send(Rank(1), S, b"x", soon(5)).unwrap_err();
    assert_eq!(e, Error::Cancelled { peer: Rank(1), slot: S });
    // Another pair works.
    std::thread::scope(|s| {
        s.spawn(|| g[2].send(Rank(1), S, b"y", soon(5)).unwrap());
        assert_eq!(g[1].recv(Rank(2), S, &mut b, soon(5)), Ok(1));
        assert_eq!(b[0], b'y');
    });
}

#[test]
fn an_eager_limit_makes_large_sends_wait_for_their_receiver() {
    let g = group(2, LoopbackConfig::default().with_eager_limit(4));
    let mut small = [Op::send(Rank(1), S, b"1234")];
    g[0].progress(&mut small, Wait::All, Instant::now()).unwrap();
    let mut large = [Op::send(Rank(1), S, b"12345")];
    let e = g[0].progress(&mut large, Wait::All, Instant::now()).unwrap_err();
    assert!(
        matches!(e, Error::Timeout { ref pending, .. }
        if pending == &[Pending::Send { to: Rank(1), slot: S }]),
        "{e}"
    );
    // The large send completes once rank 1 receives it (both sides driving).
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut b = [0u8; 5];
            assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap(), 4);
            assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap(), 5);
            assert_eq!(&b, b"12345");
        });
        g[0].progress(&mut large, Wait::All, soon(5)).unwrap();
    });
    assert_eq!(large[0].completed(), Some((Rank(1), 5)));
}

#[test]
fn a_crash_resets_the_pipes_and_drops_what_was_unread() {
    let mut g = group(3, LoopbackConfig::default());
    let c2 = g.pop().unwrap();
    c2.send(Rank(0), S, b"lost", soon(5)).unwrap();
    c2.crash();
    // Rank 0 never reads the message: the crash reset the pipe it was in.
    let mut b = [0u8; 4];
    let e = g[0].recv(Rank(2), S, &mut b, soon(5)).unwrap_err();
    assert!(matches!(e, Error::PeerLost { peer: Rank(2), .. }), "{e}");
    assert!(matches!(g[1].poisoned(), Some(Error::PeerLost { peer: Rank(2), .. })));
}

fn each_thread_pair(g: &[LoopbackComm], ops: &mut [Op<'_>]) {
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..32 {
                let mut b = [0u8; 3];
                assert_eq!(g[1].recv(Rank(0), Slot::new(2, i), &mut b, soon(10)).unwrap(), 3);
            }
        });
        g[0].progress(ops, Wait::All, soon(10)).unwrap();
    });
    assert!(ops.iter().all(Op::is_done));
}
