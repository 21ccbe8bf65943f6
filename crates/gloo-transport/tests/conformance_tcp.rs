//! The transport conformance suite over TCP on loopback, plus TCP-specific cases.

use std::net::SocketAddr;
use std::time::Instant;

use gloo_testing::conformance::pattern;
use gloo_testing::deadline;
use gloo_transport::tcp::{Security, TcpComm, TcpConfig, TcpListener};
use gloo_transport::{Communicator, Error, Listener, Rank, Slot};

/// Binds `size` listeners from `cfg(rank)`, then connects them on one thread per rank.
fn group_with(size: u32, cfg: impl Fn(u32) -> TcpConfig) -> Vec<TcpComm> {
    let listeners: Vec<TcpListener> =
        (0..size).map(|r| TcpListener::bind(cfg(r)).expect("bind")).collect();
    let addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
    let until = deadline(30);
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let addrs = addrs.clone();
            std::thread::spawn(move || l.connect_all(&addrs, until))
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("connect thread").expect("connect_all")).collect()
}

fn group(size: u32) -> Vec<TcpComm> {
    group_with(size, |r| TcpConfig::loopback("conformance", Rank(r), size))
}

fn factory(size: u32) -> Vec<Box<dyn Communicator>> {
    gloo_testing::conformance::boxed(group(size))
}

gloo_testing::conformance_tests!(factory);

/// The same suite with busy polling off (every wait sleeps in epoll).
mod sleeping {
    fn factory(size: u32) -> Vec<Box<dyn gloo_transport::Communicator>> {
        gloo_testing::conformance::boxed(super::group_with(size, |r| {
            gloo_transport::tcp::TcpConfig::loopback("sleeping", gloo_transport::Rank(r), size)
                .busy_poll(std::time::Duration::ZERO)
        }))
    }
    gloo_testing::conformance_tests!(factory);
}

/// The same suite with token authentication.
mod token {
    fn factory(size: u32) -> Vec<Box<dyn gloo_transport::Communicator>> {
        gloo_testing::conformance::boxed(super::group_with(size, |r| {
            gloo_transport::tcp::TcpConfig::loopback("token", gloo_transport::Rank(r), size)
                .security(gloo_transport::tcp::Security::Token(b"s3cret".to_vec()))
        }))
    }
    gloo_testing::conformance_tests!(factory);
}

fn exchange(comms: Vec<TcpComm>, len: usize) {
    gloo_testing::run_ranks(comms, |c| {
        let until = deadline(60);
        let peer = Rank(1 - c.rank().0);
        let out = pattern(len, c.rank().0 as u64);
        let mut inb = vec![0u8; len];
        {
            let mut ops = [
                gloo_transport::Op::send(peer, Slot::new(1, 0), &out),
                gloo_transport::Op::recv(peer, Slot::new(1, 0), &mut inb),
            ];
            c.run(&mut ops, until).expect("exchange");
        }
        assert!(inb == pattern(len, peer.0 as u64), "content from {peer:?}");
    });
}

#[test]
fn ipv6_loopback_group() {
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    let probe = std::net::TcpListener::bind(v6);
    if probe.is_err() {
        // A host without IPv6 on loopback cannot run this case; say so loudly.
        panic!("IPv6 loopback [::1] is not available on this host: {probe:?}");
    }
    drop(probe);
    let comms = group_with(2, |r| {
        TcpConfig::new("v6", Rank(r), 2).bind_addr(v6).security(Security::Token(b"k".to_vec()))
    });
    exchange(comms, 300_000);
}

#[test]
fn token_mismatch_fails_with_auth_error() {
    let l0 = TcpListener::bind(
        TcpConfig::loopback("tok", Rank(0), 2).security(Security::Token(b"a".to_vec())),
    )
    .unwrap();
    let l1 = TcpListener::bind(
        TcpConfig::loopback("tok", Rank(1), 2).security(Security::Token(b"b".to_vec())),
    )
    .unwrap();
    let addrs = vec![l0.address_bytes(), l1.address_bytes()];
    let a2 = addrs.clone();
    let until = Instant::now() + std::time::Duration::from_secs(3);
    let t0 = std::thread::spawn(move || l0.connect_all(&a2, until).map(|_| ()));
    let r1 = l1.connect_all(&addrs, until).map(|_| ());
    let r0 = t0.join().unwrap();
    assert!(matches!(r1, Err(Error::Auth { peer: Some(Rank(0)), .. })), "{r1:?}");
    // The acceptor never completes: it reports who it waited for when the deadline passes.
    let e = r0.unwrap_err();
    assert_eq!(e.peer(), Some(Rank(1)), "{e}");
}

#[test]
fn garbage_address_bytes_name_the_rank() {
    let l = TcpListener::bind(TcpConfig::loopback("garbage", Rank(0), 3)).unwrap();
    let good = l.address_bytes();
    let e = l.connect_all(&[good.clone(), good, b"nonsense".to_vec()], deadline(5)).unwrap_err();
    assert_eq!(e.peer(), Some(Rank(2)), "{e}");
}

#[test]
fn drop_closes_cleanly_and_peer_sees_it() {
    let mut comms = group(2);
    let c1 = comms.pop().unwrap();
    let c0 = comms.pop().unwrap();
    drop(c1);
    let mut buf = [0u8; 4];
    let e = c0.recv(Rank(1), Slot::new(2, 0), &mut buf, deadline(10)).unwrap_err();
    assert!(matches!(e, Error::PeerLost { peer: Rank(1), .. }), "{e}");
}

#[test]
fn listener_trait_is_implemented() {
    fn is_listener<L: Listener>() {}
    is_listener::<TcpListener>();
}

#[test]
fn messages_larger_than_the_eager_credit_and_several_chunks() {
    // 9 MiB: more than the 4 MiB credit window and more than two 4 MiB data chunks.
    exchange(group(2), 9 << 20);
}
