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
    for a in [Algorithm::BinomialTree, Algorithm::ScatterAllgather] {
        let out = on_ranks_plain(5, |g| {
            let mut v = if g.rank() == Rank(3) { [1u8, 2, 3, 4, 5, 6, 7] } else { [0; 7] };
            g.broadcast(&mut v, Rank(3), &o(a)).unwrap();
            v
        });
        assert_eq!(out, vec![[1, 2, 3, 4, 5, 6, 7]; 5], "{a}");
    }
}

#[test]
fn every_collective_on_loopback_at_several_sizes() {
    for n in [1, 2, 3, 4, 8] {
        on_ranks(n, 9, |g| every_collective_on_this_rank(&g, 42));
    }
}

#[test]
fn a_group_over_a_borrowed_trait_object() {
    use gloo_algorithms::{DynComm, Group};
    use gloo_transport::Communicator;
    let comms =
        gloo_transport::loopback::group(3, gloo_transport::loopback::LoopbackConfig::havoc(2));
    let out = gloo_testing::run_ranks(comms, |c| {
        let d: &dyn Communicator = &c;
        let g = Group::new(DynComm(d)).unwrap();
        let mut v = [c.rank().0 as u64 + 1; 4];
        g.allreduce(&mut v, ReduceOp::Product, &Options::new()).unwrap();
        v
    });
    assert_eq!(out, vec![[6; 4]; 3]);
}
