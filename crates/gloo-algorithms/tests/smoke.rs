//! Small fixed cases, one per collective, without havoc: the first thing to look at when
//! the oracle properties fail.

mod common;

use std::time::Duration;

use common::*;
use gloo_algorithms::{Algorithm, Options, ReduceOp};
use gloo_transport::Rank;

fn o(a: Algorithm) -> Options {
    Options::new().with_algorithm(a).with_timeout(Duration::from_secs(5)).with_segment_bytes(8)
}

#[test]
fn allgather_ring_of_three() {
    let out = on_ranks_plain(3, |g| {
        let mut all = [0u32; 6];
        let me = g.rank().0;
        g.allgather(&[me, me + 10], &mut all, &o(Algorithm::Ring)).unwrap();
        all
    });
    assert_eq!(out, vec![[0, 10, 1, 11, 2, 12]; 3]);
}

#[test]
fn allreduce_each_algorithm_on_five() {
    for a in [
        Algorithm::Ring,
        Algorithm::HalvingDoubling,
        Algorithm::Bcube,
        Algorithm::RecursiveDoubling,
    ] {
        let out = on_ranks_plain(5, |g| {
            let mut v = [g.rank().0 as i32; 7];
            g.allreduce(&mut v, ReduceOp::Sum, &o(a)).unwrap();
            v
        });
        assert_eq!(out, vec![[10; 7]; 5], "{a}");
    }
}

#[test]
fn broadcast_each_algorithm_on_five() {
    // One segment, and a segment per two bytes (the chain then passes four down the line,
    // from a root in its middle).
    for seg in [1 << 19, 2] {
        for a in [Algorithm::BinomialTree, Algorithm::ScatterAllgather, Algorithm::Chain] {
            let out = on_ranks_plain(5, |g| {
                let mut v = if g.rank() == Rank(3) { [1u8, 2, 3, 4, 5, 6, 7] } else { [0; 7] };
                g.broadcast(&mut v, Rank(3), &o(a).with_segment_bytes(seg)).unwrap();
                v
            });
            assert_eq!(out, vec![[1, 2, 3, 4, 5, 6, 7]; 5], "{a}, segments of {seg} bytes");
        }
    }
}

#[test]
fn every_collective_on_loopback_at_several_sizes() {
    for n in [1, 2, 3, 4, 8] {
        on_ranks(n, 9, |g| every_collective_on_this_rank(&g, 42));
    }
}

/// `Communicator` is implemented for `&C`, `Box<C>` and `Arc<C>` (trait objects included),
/// so a group runs over any of them with no wrapper.
#[test]
fn a_group_over_borrowed_boxed_and_shared_trait_objects() {
    use gloo_algorithms::Group;
    use gloo_transport::Communicator;
    use std::sync::Arc;
    let comms =
        gloo_transport::loopback::group(3, gloo_transport::loopback::LoopbackConfig::havoc(2));
    let out = gloo_testing::run_ranks(comms, |c| {
        fn product<C: Communicator>(g: &Group<C>) -> [u64; 4] {
            let mut v = [g.rank().0 as u64 + 1; 4];
            g.allreduce(&mut v, ReduceOp::Product, &Options::new()).unwrap();
            v
        }
        let borrowed: &dyn Communicator = &c;
        let a = product(&Group::new(borrowed).unwrap());
        let boxed: Box<dyn Communicator + '_> = Box::new(&c);
        let b = product(&Group::new(boxed).unwrap());
        let shared: Arc<dyn Communicator> = Arc::new(c);
        let g = Group::new(Arc::clone(&shared)).unwrap();
        let d = product(&g);
        (a, b, d, Arc::strong_count(&shared))
    });
    assert_eq!(out, vec![([6; 4], [6; 4], [6; 4], 2); 3]);
}

/// An integer average does not wrap before it divides: three `u8` 255s average to 255 (the
/// old sum-then-divide gave 84), through every reducing collective and every allreduce
/// algorithm, and a negative mean truncates toward zero.
#[test]
fn integer_averages_are_exact() {
    for a in [
        Algorithm::Ring,
        Algorithm::HalvingDoubling,
        Algorithm::Bcube,
        Algorithm::RecursiveDoubling,
    ] {
        let out = on_ranks_plain(3, |g| {
            let mut v = [255u8, g.rank().0 as u8];
            g.allreduce(&mut v, ReduceOp::Average, &o(a)).unwrap();
            let mut w = [i64::MIN, -1 - g.rank().0 as i64];
            g.allreduce(&mut w, ReduceOp::Average, &o(a)).unwrap();
            (v, w)
        });
        // (0 + 1 + 2) / 3 = 1; (-1 - 2 - 3) / 3 = -2.
        assert_eq!(out, vec![([255, 1], [i64::MIN, -2]); 3], "{a}");
    }
    let out = on_ranks_plain(3, |g| {
        let mut v = [255u8; 3];
        g.reduce(&mut v, Rank(1), ReduceOp::Average, &o(Algorithm::BinomialTree)).unwrap();
        let mut mine = [0i16; 2];
        g.reduce_scatter(&sc_input(g.rank().0), &mut mine, ReduceOp::Average, &Options::new())
            .unwrap();
        let (mut a, mut b) = ([250u8], [250u8]);
        g.allreduce_many(&mut [&mut a, &mut b], ReduceOp::Average, &Options::new()).unwrap();
        (v, mine, a[0])
    });
    assert_eq!(out[1].0, [255; 3]);
    // Reduce-scatter: the exact means, truncated toward zero.
    for (rank, r) in out.iter().enumerate() {
        let want: Vec<i16> = (2 * rank..2 * rank + 2)
            .map(|i| ((0..3).map(|q| i32::from(sc_input(q)[i])).sum::<i32>() / 3) as i16)
            .collect();
        assert_eq!(r.1.to_vec(), want, "rank {rank}");
    }
    // Each rank's two buffers sum to 500; the exact mean over ranks, 500, wraps to 244 in u8.
    assert!(out.iter().all(|r| r.2 == (500u32 % 256) as u8), "{out:?}");
}

/// Rank `r`'s reduce-scatter input: extremes whose sums overflow, and negative means.
fn sc_input(r: u32) -> Vec<i16> {
    let base = [i16::MAX, i16::MIN, -7, 7, 1, 1];
    base.iter().map(|x| x.wrapping_sub((r % 2) as i16)).collect()
}
