//! Two ranks on two "hosts": processes in two network namespaces joined by a veth pair
//! (`gloo_testing::netfault::NetnsLink`), talking TCP over the link's private addresses with
//! a job token (issue 14 §6). A silent partition (`ip link set ... down`: no reset, no error,
//! packets just stop) must end in `PeerLost` naming the other rank on both sides, long before
//! the deadline; a partition shorter than the peer timeout heals and the transfer completes;
//! a link throttled with `tc ... tbf` is slow but every byte arrives.
//!
//! Needs root and iproute2 (the row `transport/netns` says so; CI runs as root).
#![cfg(feature = "tcp")]

use std::net::SocketAddr;
use std::time::Duration;

use gloo_testing::deadline;
use gloo_testing::netfault::NetnsLink;
use gloo_testing::procs::{self, Board};
use gloo_testing::rogue::{assert_ran_one_test, board_connect, exchange_with};
use gloo_transport::tcp::{Security, TcpComm, TcpConfig, TcpListener};
use gloo_transport::{Error, Rank};

/// The variable that gives each child its address on the link.
const ADDR_ENV: &str = "GLOO_TEST_NETNS_ADDR";
/// The variable that gives each child its peer timeout in milliseconds.
const PEER_TIMEOUT_ENV: &str = "GLOO_TEST_PEER_TIMEOUT_MS";
const TOKEN: &[u8] = b"netns-test-token-0123456789abcdef";

/// In a child: bind this rank's link address and connect to the other rank.
fn child_connect(job: &str, board: &Board, rank: u32) -> TcpComm {
    let ip = std::env::var(ADDR_ENV).expect("the parent passes the address");
    let addr: SocketAddr = format!("{ip}:0").parse().expect("an IPv4 address");
    let ms: u64 = std::env::var(PEER_TIMEOUT_ENV).expect("a peer timeout").parse().unwrap();
    let cfg = TcpConfig::new(job, Rank(rank), 2)
        .bind_addr(addr)
        .security(Security::Token(TOKEN.to_vec()))
        .peer_timeout(Duration::from_millis(ms));
    let listener = TcpListener::bind(cfg).expect("bind the link address");
    board_connect(listener, board, rank, 2, deadline(60)).expect("connect over the link")
}

/// In the parent: a link, and both ranks started in its namespaces running `test_name`.
fn spawn(test_name: &str, link: &NetnsLink, board: &Board, peer_timeout: Duration) -> procs::Group {
    let addrs = [link.addr(0).to_string(), link.addr(1).to_string()];
    procs::spawn_self_in(
        test_name,
        2,
        |r| link.exec_prefix(r as usize),
        |r| {
            vec![
                board.env(),
                (ADDR_ENV.to_string(), addrs[r as usize].clone()),
                (PEER_TIMEOUT_ENV.to_string(), peer_timeout.as_millis().to_string()),
            ]
        },
    )
}

fn link() -> NetnsLink {
    NetnsLink::new().unwrap_or_else(|e| panic!("cannot make the network namespaces: {e}"))
}

/// Both children: connect, one checked exchange, tell the parent, then keep exchanging
/// 1 MiB until an error, which must be `PeerLost` naming the other rank.
#[test]
fn a_silent_partition_is_peer_lost_on_both_sides() {
    const NAME: &str = "a_silent_partition_is_peer_lost_on_both_sides";
    if let Some((rank, _)) = procs::child_rank() {
        let board = Board::from_env().expect("a board");
        let comm = child_connect(NAME, &board, rank);
        let peer = Rank(1 - rank);
        exchange_with(&comm, &[peer], 1, 4096, deadline(60)).expect("the first exchange");
        board.put_named(&format!("connected-{rank}"), b"").unwrap();
        // The deadline is far beyond the peer timeout: a Timeout would mean the silence went
        // unnoticed.
        let err = (0..100_000)
            .find_map(|i| exchange_with(&comm, &[peer], 2 + i, 1 << 20, deadline(100)).err())
            .expect("the link was never cut");
        assert!(matches!(&err, Error::PeerLost { peer: p, .. } if *p == peer), "{err:?}");
        return;
    }
    let link = link();
    let board = Board::fresh(NAME).unwrap();
    let group = spawn(NAME, &link, &board, Duration::from_secs(2));
    let up = (0..2).all(|r| board.get_named(&format!("connected-{r}"), deadline(90)).is_ok());
    if up {
        link.cut().expect("take the link down");
    }
    let outcomes = group.wait(deadline(120));
    assert!(
        up,
        "the ranks never connected:\n{}\n{}",
        outcomes[0].report(""),
        outcomes[1].report("")
    );
    for o in &outcomes {
        assert_ran_one_test(o);
    }
}

/// A partition of 1 s with a peer timeout of 30 s: TCP retransmits once the link is back,
/// and the exchange under way completes with the right bytes.
#[test]
fn a_partition_shorter_than_the_peer_timeout_heals() {
    const NAME: &str = "a_partition_shorter_than_the_peer_timeout_heals";
    if let Some((rank, _)) = procs::child_rank() {
        let board = Board::from_env().expect("a board");
        let comm = child_connect(NAME, &board, rank);
        let peer = Rank(1 - rank);
        exchange_with(&comm, &[peer], 1, 4096, deadline(60)).expect("the first exchange");
        board.put_named(&format!("connected-{rank}"), b"").unwrap();
        // Wait for the parent to cut the link, then exchange across the cut.
        board.get_named("cut", deadline(60)).expect("the parent cuts the link");
        exchange_with(&comm, &[peer], 2, 4 << 20, deadline(60)).expect("across the healed cut");
        return;
    }
    let link = link();
    let board = Board::fresh(NAME).unwrap();
    let group = spawn(NAME, &link, &board, Duration::from_secs(30));
    let up = (0..2).all(|r| board.get_named(&format!("connected-{r}"), deadline(90)).is_ok());
    if up {
        link.cut().expect("take the link down");
        board.put_named("cut", b"").unwrap();
        std::thread::sleep(Duration::from_secs(1));
        link.heal().expect("bring the link up");
    }
    let outcomes = group.wait(deadline(120));
    assert!(
        up,
        "the ranks never connected:\n{}\n{}",
        outcomes[0].report(""),
        outcomes[1].report("")
    );
    for o in &outcomes {
        assert_ran_one_test(o);
    }
}

/// A link throttled to 50 Mbit/s: 8 MiB each way take seconds, and arrive exact.
#[test]
fn a_throttled_link_is_slow_but_every_byte_arrives() {
    const NAME: &str = "a_throttled_link_is_slow_but_every_byte_arrives";
    if let Some((rank, _)) = procs::child_rank() {
        let board = Board::from_env().expect("a board");
        let comm = child_connect(NAME, &board, rank);
        exchange_with(&comm, &[Rank(1 - rank)], 1, 8 << 20, deadline(90)).expect("throttled");
        return;
    }
    let link = link();
    link.throttle("50mbit").expect("throttle the link");
    let board = Board::fresh(NAME).unwrap();
    let outcomes = spawn(NAME, &link, &board, Duration::from_secs(10)).wait(deadline(120));
    for o in &outcomes {
        assert_ran_one_test(o);
    }
}
