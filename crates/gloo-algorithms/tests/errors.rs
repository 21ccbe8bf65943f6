//! What bad input gets: every mismatch between ranks and every misuse, each its own test; a
//! rank that never joins; a rank lost mid-collective.

mod common;

use std::sync::Barrier;
use std::time::Duration;

use common::*;
use gloo_algorithms::{Algorithm, Collective, Error, Group, Options, ReduceOp};
use gloo_transport::loopback::LoopbackComm;
use gloo_transport::{Error as TError, Pending, Rank};

/// Options with a deadline short enough for tests that expect to fail.
fn short() -> Options {
    Options::new().with_timeout(Duration::from_secs(5))
}

/// Run `f` on `n` ranks and assert every rank got `Mismatch`, and that at least one rank's
/// message names `field` as what differs.
fn assert_mismatch_everywhere(
    n: u32,
    field: &str,
    f: impl Fn(&Group<LoopbackComm>) -> Result<(), Error> + Send + Sync,
) {
    let done = Barrier::new(n as usize);
    let errors = on_ranks(n, 11, |g| {
        let r = f(&g);
        // Keep every communicator alive until all ranks are done, so that nobody sees a
        // dropped peer instead of the mismatch (a thread barrier: a group's barrier would
        // fail at once in a group that a rank's timeout revoked).
        done.wait();
        r
    });
    let mut named = false;
    for (rank, e) in errors.iter().enumerate() {
        match e {
            Err(e @ Error::Mismatch { .. }) => {
                let text = e.to_string();
                if text.contains(field) {
                    named = true;
                }
            }
            other => panic!("rank {rank}: expected Mismatch, got {other:?}"),
        }
    }
    assert!(named, "no rank's error names {field:?}: {errors:?}");
}

fn sum<T>() -> ReduceOp<'static, T> {
    ReduceOp::Sum
}

#[test]
fn allreduce_against_broadcast_is_a_mismatch() {
    for n in [2, 3, 5] {
        assert_mismatch_everywhere(n, "collective", |g| {
            let mut v = [1f32; 8];
            if g.rank() == Rank(0) {
                g.allreduce(&mut v, sum(), &short())
            } else {
                g.broadcast(&mut v, Rank(0), &short())
            }
        });
    }
}

#[test]
fn a_mismatch_after_matching_calls_on_the_tag_is_seen_everywhere() {
    // The matching calls leave the alarm watch parked between calls; the mismatch that
    // follows must still reach every rank through it.
    for n in [2, 3, 5] {
        assert_mismatch_everywhere(n, "collective", |g| {
            let mut v = [1f32; 8];
            for _ in 0..3 {
                g.allreduce(&mut v, sum(), &short())?;
            }
            if g.rank() == Rank(0) {
                g.allreduce(&mut v, sum(), &short())
            } else {
                g.broadcast(&mut v, Rank(0), &short())
            }
        });
    }
}

#[test]
fn different_counts_are_a_mismatch() {
    for n in [2, 4] {
        assert_mismatch_everywhere(n, "count", |g| {
            let mut v = vec![1i32; if g.rank() == Rank(1) { 20 } else { 10 }];
            g.allreduce(&mut v, sum(), &short().with_algorithm(Algorithm::Ring))
        });
    }
}

#[test]
fn different_counts_that_change_the_algorithm_are_a_mismatch() {
    // 4 B picks recursive doubling, 1 MiB picks ring: the fingerprint still catches it.
    assert_mismatch_everywhere(3, "count", |g| {
        let mut v = vec![1u8; if g.rank() == Rank(2) { 1 << 20 } else { 4 }];
        g.allreduce(&mut v, sum(), &short())
    });
}

#[test]
fn different_dtypes_are_a_mismatch() {
    assert_mismatch_everywhere(2, "dtype", |g| {
        if g.rank() == Rank(0) {
            g.allreduce(&mut [1f32; 6], sum(), &short())
        } else {
            g.allreduce(&mut [1i32; 6], sum(), &short())
        }
    });
}

#[test]
fn different_ops_are_a_mismatch() {
    assert_mismatch_everywhere(3, "op", |g| {
        let op = if g.rank() == Rank(1) { ReduceOp::Max } else { ReduceOp::Sum };
        g.allreduce(&mut [1f64; 5], op, &short())
    });
}

#[test]
fn different_broadcast_roots_are_a_mismatch() {
    for n in [2, 4] {
        assert_mismatch_everywhere(n, "root", |g| {
            let root = if g.rank() == Rank(0) { Rank(0) } else { Rank(1) };
            g.broadcast(&mut [7u16; 9], root, &short())
        });
    }
}

#[test]
fn different_reduce_roots_are_a_mismatch() {
    // Both would wait to receive: only the check ring gives this away before the deadline.
    assert_mismatch_everywhere(2, "root", |g| {
        let root = g.rank();
        g.reduce(&mut [1u32; 3], root, sum(), &short())
    });
}

#[test]
fn a_root_disagreement_is_a_mismatch_on_every_rank_of_every_rooted_collective() {
    // The agreement check runs alongside the data, so the data may move before it has
    // matched: whichever ranks disagree (only the last, or every rank against rank 0) and
    // whether the data goes eagerly (4 B) or by rendezvous (64 KiB), every rank must still
    // end with Mismatch, and none with Ok.
    for n in [2, 3, 5] {
        for odd_one_out in [true, false] {
            // Rank 0 always names root 0; the others name root 1 (all of them, or only the
            // last).
            let root_of = move |g: &Group<LoopbackComm>| {
                let r = g.rank().0;
                let differs = if odd_one_out { r == n - 1 } else { r != 0 };
                if differs { Rank(1) } else { Rank(0) }
            };
            for len in [4usize, 64 << 10] {
                assert_mismatch_everywhere(n, "root", |g| {
                    g.broadcast(&mut vec![7u8; len], root_of(g), &short())
                });
                assert_mismatch_everywhere(n, "root", |g| {
                    g.reduce(&mut vec![1u32; len / 4], root_of(g), sum(), &short())
                });
                assert_mismatch_everywhere(n, "root", |g| {
                    let root = root_of(g);
                    let mut out = (g.rank() == root).then(|| vec![0u8; len * n as usize]);
                    g.gather(&vec![1u8; len], out.as_deref_mut(), root, &short())
                });
                assert_mismatch_everywhere(n, "root", |g| {
                    let root = root_of(g);
                    let input = (g.rank() == root).then(|| vec![1u8; len * n as usize]);
                    g.scatter(input.as_deref(), &mut vec![0u8; len], root, &short())
                });
            }
        }
    }
}

#[test]
fn different_tags_are_a_mismatch_by_the_deadline() {
    assert_mismatch_everywhere(2, "tag", |g| {
        let o = Options::new().with_timeout(Duration::from_secs(1));
        g.fork(1 + g.rank().0).unwrap().allreduce(&mut [1u64; 4], sum(), &o)
    });
}

#[test]
fn different_algorithms_are_a_mismatch() {
    assert_mismatch_everywhere(4, "algorithm", |g| {
        let a = if g.rank() == Rank(3) { Algorithm::Ring } else { Algorithm::RecursiveDoubling };
        g.allreduce(&mut [1f32; 16], sum(), &short().with_algorithm(a))
    });
}

#[test]
fn gather_against_scatter_is_a_mismatch() {
    assert_mismatch_everywhere(3, "collective", |g| {
        let mut out = [0u8; 6];
        if g.rank() == Rank(1) {
            g.scatter(None, &mut out[..2], Rank(0), &short())
        } else {
            let o = (g.rank() == Rank(0)).then_some(&mut out[..]);
            g.gather(&[1, 2], o, Rank(0), &short())
        }
    });
}

#[test]
fn different_gatherv_counts_are_a_mismatch() {
    assert_mismatch_everywhere(3, "counts", |g| {
        let counts = if g.rank() == Rank(2) { [1, 2, 3] } else { [1, 2, 2] };
        let me = g.rank().index();
        let input = vec![5u8; counts[me]];
        let mut out = vec![0u8; counts.iter().sum()];
        g.gatherv(&input, Some(&mut out), &counts, Rank(0), &short())
    });
}

#[test]
fn alltoallv_counts_that_disagree_are_a_mismatch() {
    assert_mismatch_everywhere(2, "count", |g| {
        // Rank 0 sends 2 to rank 1, which expects 3; rank 1 sends 2 to rank 0, which
        // expects 1.
        if g.rank() == Rank(0) {
            g.alltoallv(&[1i8, 2, 3], &mut [0; 2], &[1, 2], &[1, 1], &short())
        } else {
            g.alltoallv(&[4i8, 5, 6], &mut [0; 4], &[2, 1], &[3, 1], &short())
        }
    });
}

// ---------------------------------------------------------------------------------------
// Misuse: InvalidArgument naming the argument, before anything is sent
// ---------------------------------------------------------------------------------------

/// Run `bad` on rank 0 only and expect `InvalidArgument` naming `arg`; then run a correct
/// allreduce on every rank on the same tag, which succeeds only if `bad` sent nothing and
/// took no call number.
fn assert_invalid(
    arg: &str,
    bad: impl Fn(&Group<LoopbackComm>) -> Result<(), Error> + Send + Sync,
) {
    let out = on_ranks(3, 5, |g| {
        if g.rank() == Rank(0) {
            match bad(&g) {
                Err(Error::InvalidArgument { what, .. }) => {
                    assert!(what.starts_with(arg), "the error names {what:?}, not {arg:?}")
                }
                other => panic!("expected InvalidArgument for {arg}, got {other:?}"),
            }
        }
        let mut v = [g.rank().0 as i32 + 1; 5];
        g.allreduce(&mut v, sum(), &short()).unwrap();
        v
    });
    assert_eq!(out, vec![[6; 5]; 3]);
}

#[test]
fn root_out_of_range_is_refused() {
    assert_invalid("root", |g| g.broadcast(&mut [0u8; 4], Rank(3), &short()));
    assert_invalid("root", |g| g.reduce(&mut [0u8; 4], Rank(7), sum(), &short()));
    assert_invalid("root", |g| g.gather(&[0u8; 4], Some(&mut [0; 12]), Rank(3), &short()));
    assert_invalid("root", |g| g.scatter(Some(&[0u8; 12]), &mut [0; 4], Rank(9), &short()));
}

/// A root-only buffer is typed as such (`Option`): the root must give it.
#[test]
fn a_root_without_its_buffer_is_refused() {
    assert_invalid("output", |g| g.gather(&[0u8; 4], None, Rank(0), &short()));
    assert_invalid("output", |g| g.gatherv(&[0u8; 1], None, &[1, 1, 1], Rank(0), &short()));
    assert_invalid("input", |g| g.scatter::<u8>(None, &mut [0; 4], Rank(0), &short()));
    assert_invalid("input", |g| g.scatterv::<u8>(None, &mut [0; 1], &[1, 1, 1], Rank(0), &short()));
    assert_invalid("output", |g| g.reduce_into(&[0u8; 3], None, Rank(0), sum(), &short()));
}

#[test]
fn counts_of_the_wrong_length_are_refused() {
    assert_invalid("counts", |g| {
        g.gatherv(&[0u8; 1], Some(&mut [0; 3]), &[1, 2], Rank(0), &short())
    });
    assert_invalid("counts", |g| g.allgatherv(&[0u8; 1], &mut [0; 3], &[1, 1, 1, 0], &short()));
    assert_invalid("counts", |g| g.scatterv(Some(&[0u8; 3]), &mut [0; 3], &[3], Rank(0), &short()));
    assert_invalid("counts", |g| {
        g.reduce_scatterv(&[0u8; 3], &mut [0; 1], &[1, 2], sum(), &short())
    });
    assert_invalid("send_counts", |g| {
        g.alltoallv(&[0u8; 3], &mut [0; 3], &[1, 2], &[1, 1, 1], &short())
    });
    assert_invalid("recv_counts", |g| {
        g.alltoallv(&[0u8; 3], &mut [0; 3], &[1, 1, 1], &[1, 1, 1, 0], &short())
    });
}

#[test]
fn buffers_that_disagree_with_the_counts_are_refused() {
    assert_invalid("input", |g| g.allgatherv(&[0u8; 2], &mut [0; 3], &[1, 1, 1], &short()));
    assert_invalid("input", |g| {
        g.gatherv(&[0u8; 2], Some(&mut [0; 3]), &[1, 1, 1], Rank(0), &short())
    });
    assert_invalid("input", |g| {
        g.alltoallv(&[0u8; 2], &mut [0; 3], &[1, 1, 1], &[1, 1, 1], &short())
    });
    assert_invalid("output", |g| {
        g.scatterv(Some(&[0u8; 3]), &mut [0; 2], &[1, 1, 1], Rank(0), &short())
    });
    assert_invalid("input", |g| {
        g.reduce_scatterv(&[0u8; 4], &mut [0; 1], &[1, 1, 1], sum(), &short())
    });
    assert_invalid("input", |g| g.scatter(Some(&[0u8; 5]), &mut [0; 2], Rank(0), &short()));
    assert_invalid("bufs[1]", |g| {
        let (mut a, mut b) = ([0u8; 3], [0u8; 4]);
        g.allreduce_many(&mut [&mut a, &mut b], sum(), &short())
    });
    assert_invalid("input", |g| g.alltoall(&[0u8; 4], &mut [0; 4], &short()));
}

#[test]
fn outputs_that_are_too_small_are_refused() {
    assert_invalid("output", |g| g.allgather(&[0u8; 2], &mut [0; 5], &short()));
    assert_invalid("output", |g| g.gather(&[0u8; 2], Some(&mut [0; 5]), Rank(0), &short()));
    assert_invalid("output", |g| g.allgatherv(&[0u8; 1], &mut [0; 2], &[1, 1, 1], &short()));
    assert_invalid("output", |g| g.allreduce_into(&[0u8; 3], &mut [0; 2], sum(), &short()));
    assert_invalid("output", |g| {
        g.reduce_into(&[0u8; 3], Some(&mut [0; 2]), Rank(0), sum(), &short())
    });
    assert_invalid("output", |g| g.reduce_scatter(&[0u8; 6], &mut [0; 1], sum(), &short()));
    assert_invalid("output", |g| g.alltoall(&[0u8; 3], &mut [0; 2], &short()));
}

#[test]
fn send_to_self_or_out_of_range_is_refused() {
    assert_invalid("to", |g| g.send(Rank(0), &[1u8], &short()));
    assert_invalid("to", |g| g.send(Rank(3), &[1u8], &short()));
    assert_invalid("from", |g| g.recv(Rank(5), &mut [0u8], &short()).map(|_| ()));
}

#[test]
fn a_bcube_base_below_two_is_refused() {
    assert_invalid("bcube_base", |g| {
        g.allreduce(
            &mut [0u8; 4],
            sum(),
            &short().with_bcube_base(1).with_algorithm(Algorithm::Bcube),
        )
    });
}

#[test]
fn an_algorithm_of_another_collective_is_refused() {
    let out = on_ranks(2, 1, |g| g.barrier(&short().with_algorithm(Algorithm::Ring)));
    for e in out {
        match e {
            Err(Error::UnknownAlgorithm { collective: Collective::Barrier, valid, .. }) => {
                assert_eq!(valid, vec!["dissemination"]);
            }
            other => panic!("expected UnknownAlgorithm, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Missing and lost ranks
// ---------------------------------------------------------------------------------------

#[test]
fn a_rank_that_never_joins_is_named_in_a_timeout() {
    let n = 4;
    let done = Barrier::new(n as usize);
    let out = on_ranks(n, 2, |g| {
        let r = if g.rank() == Rank(3) {
            None
        } else {
            let o = Options::new().with_timeout(Duration::from_millis(800));
            Some(g.barrier(&o))
        };
        // The absent rank keeps its communicator until the others gave up.
        done.wait();
        r
    });
    // A rank that times out revokes the group, so a rank may instead get `Aborted` by one
    // that timed out first; at least one rank reports its own timeout.
    let mut pending_peers = Vec::new();
    for (rank, r) in out.iter().enumerate().take(3) {
        match r {
            Some(Err(Error::Transport { source: TError::Timeout { pending, .. }, .. })) => {
                for p in pending {
                    if let Pending::Recv { from, .. } = p {
                        pending_peers.extend(from.iter().copied());
                    }
                }
            }
            Some(Err(Error::Transport { source: TError::Aborted { reason, .. }, .. }))
                if reason.contains("gave up") => {}
            other => panic!("rank {rank}: expected a Timeout or a revocation, got {other:?}"),
        }
    }
    assert!(pending_peers.contains(&Rank(3)), "nobody names rank 3: {pending_peers:?}");
}

#[test]
fn a_timeout_names_the_missing_peer_in_its_message() {
    let done = Barrier::new(2);
    let out = on_ranks(2, 3, |g| {
        let r = (g.rank() == Rank(0)).then(|| {
            g.allreduce(
                &mut [1f32; 4],
                sum(),
                &Options::new().with_timeout(Duration::from_millis(500)),
            )
        });
        done.wait();
        r
    });
    let e = out[0].clone().unwrap().unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    let text = gloo_transport::ErrorChain(&e).to_string();
    assert!(text.contains("from rank 1"), "{text}");
    // The figure is the whole call's wait, not that of its last round.
    match e.transport() {
        Some(TError::Timeout { waited, .. }) => {
            assert!(*waited >= Duration::from_millis(500), "waited {waited:?} for a 500 ms call")
        }
        other => panic!("expected a transport Timeout, got {other:?}"),
    }
}

/// A collective that times out revokes the group (as ULFM's revoke): a rank that comes to
/// the call late, or makes its next call, fails with `Aborted` naming the rank that gave
/// up, instead of going on (or finishing the call) with it; the one that timed out gets
/// `Aborted` on its next call too.
#[test]
fn a_timeout_revokes_the_group_on_every_rank() {
    let (gave_up, answered) = (Barrier::new(3), Barrier::new(3));
    let out = on_ranks(3, 13, |g| {
        let short = Options::new().with_timeout(Duration::from_millis(300));
        let long = Options::new().with_timeout(Duration::from_secs(20));
        let first = match g.rank() {
            // Rank 0 waits for ranks that are not there yet.
            Rank(0) => Some(g.allreduce(&mut [1u32; 8], sum(), &short)),
            _ => None,
        };
        gave_up.wait();
        // Everybody (rank 0 included) makes the call now: nobody may complete it.
        let late = g.allreduce(&mut [1u32; 8], sum(), &long);
        // Keep every communicator until all have their answer, so that nobody reads a peer
        // that finished and left instead of the revocation.
        answered.wait();
        (first, late)
    });
    let (first, _) = &out[0];
    assert!(first.as_ref().is_some_and(|r| r.as_ref().is_err_and(Error::is_timeout)), "{first:?}");
    for (rank, (_, late)) in out.iter().enumerate() {
        match late {
            Err(Error::Transport { source: TError::Aborted { by: Rank(0), reason }, .. }) => {
                assert!(reason.contains("gave up") && reason.contains("allreduce"), "{reason}")
            }
            other => panic!("rank {rank}: expected Aborted by rank 0, got {other:?}"),
        }
    }
}

#[test]
fn a_rank_lost_mid_allreduce_is_peer_lost_on_every_survivor() {
    // Three ranks on a ring: rank 1 only sends to rank 2 and waits on rank 0, so it learns
    // of the loss through the transport, which poisons the whole communicator when a peer is
    // lost (`crash`, not a drop: a dropped loopback comm says goodbye).
    let n = 3;
    let first_done = Barrier::new(n as usize);
    let survivors_done = Barrier::new(n as usize - 1);
    let out = on_ranks(n, 4, |g| {
        let o =
            Options::new().with_timeout(Duration::from_secs(10)).with_algorithm(Algorithm::Ring);
        let mut v = vec![1f32; 1000];
        // A rank that crashes is gone at once (nothing it sent is delivered after), so every
        // rank finishes the first allreduce before rank 2 dies.
        let first = g.allreduce(&mut v, sum(), &o);
        first_done.wait();
        if g.rank() == Rank(2) {
            // Gone while the others start the next allreduce.
            let Ok(comm) = g.into_inner() else { panic!("the only handle unwraps") };
            comm.crash();
            return (first, None);
        }
        let r = g.allreduce(&mut v, sum(), &o);
        survivors_done.wait();
        (first, Some(r))
    });
    for (rank, (first, r)) in out.iter().enumerate() {
        assert!(first.is_ok(), "rank {rank}: the first allreduce failed: {first:?}");
        if rank == 2 {
            continue;
        }
        match r {
            Some(Err(Error::Transport {
                source: TError::PeerLost { peer: Rank(2), .. }, ..
            })) => {}
            other => panic!("rank {rank}: expected PeerLost naming rank 2, got {other:?}"),
        }
    }
}

#[test]
fn an_environment_override_on_one_rank_only_is_a_mismatch_naming_the_algorithm() {
    let comms =
        gloo_transport::loopback::group(3, gloo_transport::loopback::LoopbackConfig::havoc(8));
    let done = Barrier::new(3);
    let out = gloo_testing::run_ranks(comms, |c| {
        let rank = gloo_transport::Communicator::rank(&c).0;
        let env = gloo_algorithms::select::EnvOverrides::from_lookup(|k| {
            (rank == 1 && k == "GLOO_ALGORITHM_ALLREDUCE").then(|| "bcube".to_string())
        })
        .unwrap();
        let g = Group::with_overrides(c, env);
        let r = g.allreduce(&mut [1u32; 3], sum(), &short());
        done.wait();
        r
    });
    for (rank, r) in out.iter().enumerate() {
        match r {
            Err(e @ Error::Mismatch { .. }) => {
                let (ours, _) = e.mismatch_calls().unwrap();
                let want = if rank == 1 { Algorithm::Bcube } else { Algorithm::RecursiveDoubling };
                assert_eq!(ours.algorithm, Some(want), "rank {rank}");
            }
            other => panic!("rank {rank}: expected Mismatch, got {other:?}"),
        }
    }
}

#[test]
fn an_absolute_deadline_bounds_the_call() {
    // With a one-hour timeout, only the absolute deadline can end the wait for the absent
    // rank: a Timeout proves it was used.
    let done = Barrier::new(2);
    let out = on_ranks(2, 6, |g| {
        let r = (g.rank() == Rank(1)).then(|| {
            let deadline = std::time::Instant::now() + Duration::from_millis(300);
            let o = Options::new().with_timeout(Duration::from_secs(3600)).with_deadline(deadline);
            g.barrier(&o)
        });
        done.wait();
        r
    });
    let r = out[1].clone().unwrap();
    assert!(r.as_ref().is_err_and(Error::is_timeout), "{r:?}");
}
