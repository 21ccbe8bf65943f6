//! Several threads running collectives on one communicator at once, one tag (one `Group`
//! handle, see `Group::fork`) each.

mod common;

use std::time::Duration;

use common::*;
use gloo_algorithms::{Algorithm, Error, Options, ReduceOp};

#[test]
fn four_threads_times_a_hundred_allreduces_with_distinct_tags() {
    let n = 4u32;
    let results = on_ranks(n, 21, |g| {
        let handles: Vec<_> = (0..4u32).map(|t| g.fork(100 + t).unwrap()).collect();
        std::thread::scope(|s| {
            let threads: Vec<_> = handles
                .into_iter()
                .enumerate()
                .map(|(t, h)| {
                    let t = t as u32;
                    s.spawn(move || {
                        let o = Options::new().with_timeout(Duration::from_secs(60));
                        let mut last = Vec::new();
                        for i in 0..100u32 {
                            // Each thread's values differ, so crossed messages would show.
                            let mut v = vec![(h.rank().0 + 1) * (t + 1) + i; 3 + t as usize];
                            h.allreduce(&mut v, ReduceOp::Sum, &o).unwrap();
                            let want = (1..=n).map(|r| r * (t + 1) + i).sum::<u32>();
                            assert!(
                                v.iter().all(|&x| x == want),
                                "thread {t} call {i}: {v:?} != {want}"
                            );
                            last = v;
                        }
                        last
                    })
                })
                .collect();
            threads.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        })
    });
    for per_rank in &results {
        assert_eq!(per_rank, &results[0]);
    }
}

#[test]
fn concurrent_threads_may_use_different_collectives_and_algorithms() {
    let n = 5u32;
    on_ranks(n, 22, |g| {
        let (h1, h2, h3) = (g.fork(1).unwrap(), g.fork(2).unwrap(), g.fork(3).unwrap());
        std::thread::scope(|s| {
            s.spawn(move || {
                let o = Options::new().with_algorithm(Algorithm::Ring).with_segment_bytes(16);
                for i in 0..30 {
                    let mut v = vec![1.5f64; 40 + i];
                    h1.allreduce(&mut v, ReduceOp::Sum, &o).unwrap();
                    assert!(v.iter().all(|&x| x == 7.5));
                }
            });
            s.spawn(move || {
                let o = Options::new();
                for i in 0..30u8 {
                    let mut all = vec![0u8; n as usize];
                    h2.allgather(&[h2.rank().0 as u8 + i], &mut all, &o).unwrap();
                    assert_eq!(all, (0..n as u8).map(|r| r + i).collect::<Vec<_>>());
                }
            });
            s.spawn(move || {
                let o = Options::new();
                for _ in 0..30 {
                    h3.barrier(&o).unwrap();
                    let mut b = [h3.rank().0 as i32; 2];
                    h3.broadcast(&mut b, gloo_transport::Rank(4), &o).unwrap();
                    assert_eq!(b, [4, 4]);
                }
            });
        });
    });
}

/// Two handles can never hold one tag, so two threads can never run calls on one tag at
/// once (they would pair up differently on different ranks and swap data); a dropped
/// handle's tag can be taken again and continues its call counter.
#[test]
fn a_tag_has_one_handle_at_a_time() {
    on_ranks(2, 23, |g| {
        assert_eq!(g.fork(0).unwrap_err(), Error::TagInUse { tag: 0 });
        let h = g.fork(7).unwrap();
        assert_eq!(h.tag(), 7);
        let e = g.fork(7).unwrap_err();
        assert_eq!(e, Error::TagInUse { tag: 7 });
        assert!(e.to_string().contains("tag 7"), "{e}");
        let mut v = [1u32];
        h.allreduce(&mut v, ReduceOp::Sum, &Options::new()).unwrap();
        drop(h);
        // The next handle on tag 7 continues at call 1 on every rank, so this matches.
        let h = g.fork(7).unwrap();
        h.allreduce(&mut v, ReduceOp::Sum, &Options::new()).unwrap();
        assert_eq!(v, [4]);
        // The tag-0 handle is still usable, and gives its communicator back only when it
        // is the last handle.
        let g = g.into_inner().unwrap_err();
        drop(h);
        g.barrier(&Options::new()).unwrap();
        assert!(g.into_inner().is_ok());
    });
}

/// A custom reduction that calls back into its own group is refused with `Busy` (it would
/// take call numbers in the middle of a call), and the call that ran it still completes.
#[test]
fn a_reduction_that_re_enters_its_group_is_refused() {
    let results = on_ranks_plain(2, |g| {
        let seen = std::sync::Mutex::new(None);
        let reenter = |d: &mut [u32], s: &[u32]| {
            let mut x = [0u32];
            let r = g.allreduce(&mut x, ReduceOp::Sum, &Options::new());
            seen.lock().unwrap().get_or_insert(r);
            d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
        };
        let mut v = [1u32, 2];
        g.allreduce(&mut v, ReduceOp::Custom(&reenter), &Options::new()).unwrap();
        (v, seen.into_inner().unwrap())
    });
    for (v, seen) in results {
        assert_eq!(v, [2, 4]);
        let e = seen.expect("the reduction ran").unwrap_err();
        assert!(matches!(e, Error::Busy { tag: 0, .. }), "{e}");
    }
}

/// A handle moves to another thread (its `!Sync` half is checked by a `compile_fail` doc
/// test on `Group`).
#[test]
fn a_handle_is_send() {
    fn send<T: Send>() {}
    send::<gloo_algorithms::Group<gloo_transport::loopback::LoopbackComm>>();
}
