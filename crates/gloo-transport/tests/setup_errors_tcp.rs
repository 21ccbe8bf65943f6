//! Misconfigured ranks during full-mesh set-up: every rank's error names the cause (another
//! job, another world size, another token), typed, instead of a bare timeout.
#![cfg(feature = "tcp")]

use std::time::{Duration, Instant};

use gloo_testing::deadline;
use gloo_transport::tcp::{Security, TcpConfig, TcpListener};
use gloo_transport::{Error, Rank};

/// Rank 0 and rank 1 of a pair, configured by `cfg(rank)`; each runs `connect_all` with a
/// 4 s deadline. Returns each rank's error and when it came.
fn pair(cfg: impl Fn(u32) -> TcpConfig) -> Vec<(Error, Duration)> {
    let ls: Vec<TcpListener> = (0..2).map(|r| TcpListener::bind(cfg(r)).expect("bind")).collect();
    let addrs: Vec<Vec<u8>> = ls.iter().map(TcpListener::address_bytes).collect();
    let start = Instant::now();
    let until = start + Duration::from_secs(4);
    let threads: Vec<_> = ls
        .into_iter()
        .map(|l| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                let r = l.connect_all(&addrs, until);
                (r.err(), start.elapsed())
            })
        })
        .collect();
    threads
        .into_iter()
        .enumerate()
        .map(|(rank, t)| match t.join().expect("connect thread") {
            (Some(e), took) => (e, took),
            (None, _) => panic!("rank {rank} connected to a misconfigured peer"),
        })
        .collect()
}

#[test]
fn ranks_of_different_jobs_both_name_the_job() {
    let out = pair(|r| TcpConfig::loopback(if r == 0 { "job-a" } else { "job-b" }, Rank(r), 2));
    // Rank 1 dials rank 0 and hears rank 0's Hello: a configuration error at once.
    match &out[1] {
        (Error::Config { detail }, took) => {
            assert!(detail.contains("another job") && detail.contains("rank 0"), "{detail}");
            assert!(*took < Duration::from_secs(3), "rank 1 waited {took:?} for a final answer");
        }
        (e, _) => panic!("rank 1: expected a configuration error naming the job, got {e}"),
    }
    // Rank 0 cannot tell a misconfigured rank from an outsider, so it waits for a valid
    // rank 1 until its deadline, and then names what it saw.
    match &out[0] {
        (Error::Protocol { peer: Some(Rank(1)), detail }, _) => {
            assert!(detail.contains("another job") && detail.contains("within"), "{detail}")
        }
        (e, _) => panic!("rank 0: expected a protocol error naming the job, got {e}"),
    }
}

#[test]
fn ranks_of_different_world_sizes_both_name_the_size() {
    let ls = [
        TcpListener::bind(TcpConfig::loopback("sizes", Rank(0), 2)).expect("bind"),
        TcpListener::bind(TcpConfig::loopback("sizes", Rank(1), 3)).expect("bind"),
    ];
    let addrs: Vec<Vec<u8>> = ls.iter().map(TcpListener::address_bytes).collect();
    let [l0, l1] = ls;
    let mut three = addrs.clone();
    three.push(addrs[0].clone());
    let until = deadline(4);
    let t0 = std::thread::spawn(move || l0.connect_all(&addrs, until).err());
    let Err(e1) = l1.connect_all(&three, until) else { panic!("rank 1 connected") };
    let e0 = t0.join().expect("rank 0's thread").expect("rank 0 fails");
    assert!(matches!(&e1, Error::Config { detail } if detail.contains("group of 2")), "{e1}");
    assert!(matches!(&e0, Error::Protocol { peer: Some(Rank(1)), .. }), "{e0}");
    assert!(e0.to_string().contains("group of 3"), "{e0}");
}

#[test]
fn a_wrong_token_is_an_auth_error_on_both_sides() {
    let out = pair(|r| {
        let token = if r == 0 {
            b"the-right-token-0123".to_vec()
        } else {
            b"a-wrong-token-456789".to_vec()
        };
        TcpConfig::loopback("tokens", Rank(r), 2).security(Security::Token(token))
    });
    for (rank, (e, _)) in out.iter().enumerate() {
        let other = Rank(1 - rank as u32);
        match e {
            Error::Auth { peer: Some(p), detail } if *p == other => {
                assert!(detail.contains("MAC") || detail.contains("token"), "rank {rank}: {detail}")
            }
            e => panic!("rank {rank}: expected Auth naming rank {other}, got {e}"),
        }
    }
    assert!(out[1].1 < Duration::from_secs(3), "the dialler knows at once: {:?}", out[1].1);
}

/// A rank whose peer's address has nobody listening (a closed 127.0.0.1 port) times out
/// naming the peer, and the operating system's refusal is reachable down `source()`, as the
/// `io::Error` it was, printed once along the chain.
#[test]
fn a_refused_dial_keeps_the_os_error_as_the_source() {
    use std::error::Error as _;

    // Rank 1 dials rank 0 (higher ranks dial lower ones); rank 0's port is closed.
    let l0 = TcpListener::bind(TcpConfig::loopback("refused", Rank(0), 2)).expect("bind");
    let l1 = TcpListener::bind(TcpConfig::loopback("refused", Rank(1), 2)).expect("bind");
    let addrs = vec![l0.address_bytes(), l1.address_bytes()];
    drop(l0);
    let Err(e) = l1.connect_all(&addrs, deadline(1)) else { panic!("connected to nobody") };
    assert_eq!(e.peer(), Some(Rank(0)), "{e:?}");
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::TimedOut), "{e:?}");
    let chain = gloo_testing::errors::chain_printed_once(&e);
    assert!(chain[0].contains("could not connect to rank 0"), "{chain:#?}");
    let os = gloo_testing::errors::deepest_io(&e).expect("the deepest error is an io::Error");
    assert_eq!(os.kind(), std::io::ErrorKind::ConnectionRefused, "{chain:#?}");
    assert_eq!(os.raw_os_error(), Some(111), "ECONNREFUSED: {chain:#?}");
    // The timeout's own `io::Error` is the first source, with its kind.
    let first = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("io source");
    assert_eq!(first.kind(), std::io::ErrorKind::TimedOut);
}

/// `Error::io` keeps the `io::Error` it is given: `source()` is that error, with its kind and
/// OS code, `Display` does not repeat it, and clones compare equal.
#[test]
fn an_io_error_is_the_source_of_the_transport_error() {
    use std::error::Error as _;

    let os = std::io::Error::from_raw_os_error(104);
    let text = os.to_string();
    let e = Error::io(Some(Rank(3)), "reading a frame", os);
    assert_eq!(e.to_string(), "I/O error with rank 3: reading a frame");
    let s = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("io source");
    assert_eq!((s.kind(), s.raw_os_error()), (std::io::ErrorKind::ConnectionReset, Some(104)));
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::ConnectionReset));
    assert_eq!(gloo_testing::errors::chain_printed_once(&e), vec![e.to_string(), text]);
    assert_eq!(e.clone(), e);
    let other = Error::io(Some(Rank(3)), "reading a frame", std::io::Error::from_raw_os_error(32));
    assert_ne!(e, other);
}
