//! Ranks as real processes over loopback TCP, IPv4 and IPv6: the test binary re-executes
//! itself once per rank (`gloo_testing::procs`), the ranks swap their address bytes through a
//! file board, connect, and every rank exchanges a small (eager) and a large (rendezvous,
//! several data chunks) message with every other rank, checking their contents.
#![cfg(feature = "tcp")]

use std::net::SocketAddr;

use gloo_testing::deadline;
use gloo_testing::procs::{self, Board};
use gloo_testing::rogue::{assert_ran_one_test, board_connect, exchange_with};
use gloo_transport::tcp::{Security, TcpConfig, TcpListener};
use gloo_transport::{Communicator, Rank};

const TOKEN: &[u8] = b"multiproc-token-00016";

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// The child's side: connect, then exchange with everybody.
fn rank_main(job: &str, family: Family, rank: u32, size: u32) {
    let until = deadline(120);
    let board = Board::from_env().expect("the parent passes a board");
    let cfg = match family {
        Family::V4 => TcpConfig::loopback(job, Rank(rank), size),
        Family::V6 => {
            let v6: SocketAddr = "[::1]:0".parse().expect("a valid address");
            TcpConfig::new(job, Rank(rank), size).bind_addr(v6)
        }
    }
    .security(Security::Token(TOKEN.to_vec()));
    let listener = TcpListener::bind(cfg).expect("bind");
    match family {
        Family::V4 => assert!(listener.local_addr().ip().is_ipv4()),
        Family::V6 => assert_eq!(listener.local_addr().ip().to_string(), "::1"),
    }
    let comm = board_connect(listener, &board, rank, size, until).expect("connect_all");
    assert_eq!((comm.rank(), comm.size()), (Rank(rank), size));
    let others: Vec<Rank> = (0..size).map(Rank).filter(|r| *r != Rank(rank)).collect();
    exchange_with(&comm, &others, 1, 1000, until).expect("small messages");
    exchange_with(&comm, &others, 2, (9 << 20) + 3, until).expect("large messages");
    // A last small exchange after the large one, so nobody drops its communicator while a
    // peer still reads.
    exchange_with(&comm, &others, 3, 8, until).expect("closing exchange");
}

/// The parent's side: start `size` ranks running `test` and require each to succeed.
fn run(test: &str, family: Family, size: u32) {
    if let Some((rank, size)) = procs::child_rank() {
        rank_main(test, family, rank, size);
        return;
    }
    if let Family::V6 = family {
        let probe = std::net::TcpListener::bind("[::1]:0");
        assert!(probe.is_ok(), "IPv6 loopback [::1] is not available on this host: {probe:?}");
    }
    let board = Board::fresh(test).expect("a board");
    let group = procs::spawn_self(test, size, &[board.env()]);
    for o in group.wait(deadline(240)) {
        assert_ran_one_test(&o);
    }
}

#[test]
fn multiproc_ipv4_2_ranks() {
    run("multiproc_ipv4_2_ranks", Family::V4, 2);
}

#[test]
fn multiproc_ipv4_3_ranks() {
    run("multiproc_ipv4_3_ranks", Family::V4, 3);
}

#[test]
fn multiproc_ipv4_4_ranks() {
    run("multiproc_ipv4_4_ranks", Family::V4, 4);
}

#[test]
fn multiproc_ipv6_2_ranks() {
    run("multiproc_ipv6_2_ranks", Family::V6, 2);
}

#[test]
fn multiproc_ipv6_3_ranks() {
    run("multiproc_ipv6_3_ranks", Family::V6, 3);
}

#[test]
fn multiproc_ipv6_4_ranks() {
    run("multiproc_ipv6_4_ranks", Family::V6, 4);
}
