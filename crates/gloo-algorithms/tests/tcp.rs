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
