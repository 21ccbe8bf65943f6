//! Every collective over TCP with real processes (the test binary re-executes itself as
//! ranks) at world sizes 2, 3, 4 and 8.

mod common;

use gloo_algorithms::{Group, select::EnvOverrides};
use gloo_testing::procs::{self, Board};
use gloo_transport::Rank;
use gloo_transport::tcp::{TcpConfig, TcpListener};

const NAME: &str = "every_collective_over_tcp_at_2_3_4_and_8_ranks";

#[test]
fn every_collective_over_tcp_at_2_3_4_and_8_ranks() {
    if let Some((rank, size)) = procs::child_rank() {
        let board = Board::from_env().expect("the parent passes a board");
        let job = format!("algo-tcp-{size}");
        let listener = TcpListener::bind(TcpConfig::loopback(&job, Rank(rank), size)).unwrap();
        board.put(rank, &listener.address_bytes()).unwrap();
        let addrs = board.get_all(size, gloo_testing::deadline(60)).unwrap();
        let comm = listener.connect_all(&addrs, gloo_testing::deadline(60)).unwrap();
        let g = Group::with_overrides(comm, EnvOverrides::default());
        common::every_collective_on_this_rank(&g, 42);
        return;
    }
    for n in [2, 3, 4, 8] {
        let board = Board::fresh(&format!("algo-tcp-{n}")).unwrap();
        let group = procs::spawn_self(NAME, n, &[board.env()]);
        for outcome in group.wait(gloo_testing::deadline(240)) {
            outcome.assert_success();
        }
    }
}

const KILL_NAME: &str = "a_rank_killed_mid_allreduce_over_tcp_is_peer_lost_on_every_survivor";

#[test]
fn a_rank_killed_mid_allreduce_over_tcp_is_peer_lost_on_every_survivor() {
    if let Some((rank, size)) = procs::child_rank() {
        let board = Board::from_env().expect("the parent passes a board");
        let listener =
            TcpListener::bind(TcpConfig::loopback("algo-kill", Rank(rank), size)).unwrap();
        board.put(rank, &listener.address_bytes()).unwrap();
        let addrs = board.get_all(size, gloo_testing::deadline(60)).unwrap();
        let comm = listener.connect_all(&addrs, gloo_testing::deadline(60)).unwrap();
        let g = Group::with_overrides(comm, EnvOverrides::default());
        let o = gloo_algorithms::Options::new()
            .with_timeout(std::time::Duration::from_secs(30))
            .with_algorithm(gloo_algorithms::Algorithm::Ring);
        let mut v = vec![1f32; 1 << 16];
        for i in 0u64.. {
            match g.allreduce(&mut v, gloo_algorithms::ReduceOp::Average, &o) {
                Ok(()) => {
                    if i == 10 && rank == size - 1 {
                        // Tell the parent the ranks are busy allreducing: it kills us now.
                        board.put_named("running", b"1").unwrap();
                    }
                    assert!(i < 1_000_000, "rank {rank} never saw the loss");
                }
                Err(e) => {
                    // The transport reports the loss as PeerLost, or, on a rank that heard
                    // of it first from another survivor's abort, as Aborted carrying it.
                    let lost = match e.transport() {
                        Some(gloo_transport::Error::PeerLost { peer, .. }) => {
                            *peer == Rank(size - 1)
                        }
                        Some(gloo_transport::Error::Aborted { reason, .. }) => {
                            reason.contains(&format!("lost rank {}", size - 1))
                        }
                        _ => false,
                    };
                    assert!(lost, "rank {rank}: expected the loss of rank {}, got {e}", size - 1);
                    return;
                }
            }
        }
        return;
    }
    let n = 3;
    let board = Board::fresh("algo-kill").unwrap();
    let mut group = procs::spawn_self(KILL_NAME, n, &[board.env()]);
    board.get_named("running", gloo_testing::deadline(60)).unwrap();
    group.kill(n - 1);
    let outcomes = group.wait(gloo_testing::deadline(60));
    for o in &outcomes[..(n - 1) as usize] {
        o.assert_success();
    }
    assert!(!outcomes[(n - 1) as usize].success(), "the killed rank did not die");
}

const MISMATCH_NAME: &str = "different_counts_over_tcp_are_a_mismatch_on_every_rank";

#[test]
fn different_counts_over_tcp_are_a_mismatch_on_every_rank() {
    if let Some((rank, size)) = procs::child_rank() {
        let board = Board::from_env().expect("the parent passes a board");
        let listener = TcpListener::bind(TcpConfig::loopback("algo-mm", Rank(rank), size)).unwrap();
        board.put(rank, &listener.address_bytes()).unwrap();
        let addrs = board.get_all(size, gloo_testing::deadline(60)).unwrap();
        let comm = listener.connect_all(&addrs, gloo_testing::deadline(60)).unwrap();
        let g = Group::with_overrides(comm, EnvOverrides::default());
        let o = gloo_algorithms::Options::new().with_timeout(std::time::Duration::from_secs(20));
        // Rank 1's messages are longer than the others' receives: the fingerprint must still
        // be what is reported, not the length. Large enough for rendezvous transfers.
        for (tag, count) in [(0u32, 10usize), (1, 300_000)] {
            let o = o.clone().with_algorithm(gloo_algorithms::Algorithm::Ring);
            // A failed call leaves the tag's counters in disagreement: go on on a new tag.
            let forked = (tag != 0).then(|| g.fork(tag).unwrap());
            let g = forked.as_ref().unwrap_or(&g);
            let mut v = vec![1f32; if rank == 1 { count * 2 } else { count }];
            let e = g.allreduce(&mut v, gloo_algorithms::ReduceOp::Sum, &o).unwrap_err();
            assert!(
                matches!(e, gloo_algorithms::Error::Mismatch { .. }),
                "rank {rank}, tag {tag}: expected a Mismatch, got {e}"
            );
            // Rank 1 is alone in its count: whether it sees the difference itself or reads
            // it from another rank's alarm, its error names the count.
            if rank == 1 {
                assert!(e.to_string().contains("count: ours"), "rank 1, tag {tag}: {e}");
            }
        }
        // Stay until everybody has its answer, so nobody sees a lost peer instead.
        board.put_named(&format!("done-{rank}"), b"1").unwrap();
        for r in 0..size {
            board.get_named(&format!("done-{r}"), gloo_testing::deadline(60)).unwrap();
        }
        return;
    }
    for n in [2, 3] {
        let board = Board::fresh(&format!("algo-mm-{n}")).unwrap();
        let group = procs::spawn_self(MISMATCH_NAME, n, &[board.env()]);
        let outcomes = group.wait(gloo_testing::deadline(120));
        let failed: Vec<String> =
            outcomes.iter().filter(|o| !o.success()).map(|o| o.report("did not succeed")).collect();
        assert!(failed.is_empty(), "{n} ranks:\n{}", failed.join("\n"));
    }
}
