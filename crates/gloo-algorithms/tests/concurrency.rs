//! Several threads running collectives on one communicator at once, one tag each.

mod common;

use std::time::Duration;

use common::*;
use gloo_algorithms::{Algorithm, Options, ReduceOp};

#[test]
fn four_threads_times_a_hundred_allreduces_with_distinct_tags() {
    let n = 4u32;
    let results = on_ranks(n, 21, |g| {
        let g = &g;
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u32)
                .map(|t| {
                    s.spawn(move || {
                        let o =
                            Options::new().with_tag(100 + t).with_timeout(Duration::from_secs(60));
                        let mut last = Vec::new();
                        for i in 0..100u32 {
                            // Each thread's values differ, so crossed messages would show.
                            let mut v = vec![(g.rank().0 + 1) * (t + 1) + i; 3 + t as usize];
                            g.allreduce(&mut v, ReduceOp::Sum, &o).unwrap();
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
            handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
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
        let g = &g;
        std::thread::scope(|s| {
            s.spawn(move || {
                let o = Options::new()
                    .with_tag(1)
                    .with_algorithm(Algorithm::Ring)
                    .with_segment_bytes(16);
                for i in 0..30 {
                    let mut v = vec![1.5f64; 40 + i];
                    g.allreduce(&mut v, ReduceOp::Sum, &o).unwrap();
                    assert!(v.iter().all(|&x| x == 7.5));
                }
            });
            s.spawn(move || {
                let o = Options::new().with_tag(2);
                for i in 0..30u8 {
                    let mut all = vec![0u8; n as usize];
                    g.allgather(&[g.rank().0 as u8 + i], &mut all, &o).unwrap();
                    assert_eq!(all, (0..n as u8).map(|r| r + i).collect::<Vec<_>>());
                }
            });
            s.spawn(move || {
                let o = Options::new().with_tag(3);
                for _ in 0..30 {
                    g.barrier(&o).unwrap();
                    let mut b = [g.rank().0 as i32; 2];
                    g.broadcast(&mut b, gloo_transport::Rank(4), &o).unwrap();
                    assert_eq!(b, [4, 4]);
                }
            });
        });
    });
}
