//! The TCP store over mutual TLS (feature `tls`): ranks' certificates on both sides, a token
//! on top or not, refusals (another CA, another job), plaintext against TLS either way, the
//! routable-address rule, and `env://` with `GLOO_TLS_*`.
#![cfg(feature = "tls")]

use std::collections::HashMap;
use std::net::SocketAddr;

use gloo_rendezvous::tcp::ServerConfig;
use gloo_rendezvous::{EnvStore, Error, Store, TcpStore, TcpStoreServer, parse_env};
use gloo_testing::deadline;
use gloo_testing::tls::{Pki, valid};
use gloo_tls::{Identity, TlsConfig};
use gloo_transport::Rank;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn tls_server(tls: TlsConfig, token: Option<&[u8]>) -> TcpStoreServer {
    let mut cfg = ServerConfig::with_token(token);
    cfg.tls = Some(tls);
    TcpStoreServer::bind_with(loopback(), cfg).expect("bind")
}

#[test]
fn ranks_use_the_store_over_tls_with_and_without_a_token() {
    let pki = Pki::new("store-tls", 3);
    for token in [None, Some(&b"and-a-token-of-16-bytes-or-more"[..])] {
        // Rank 0 hosts the store with its own certificate; ranks 1 and 2 are clients.
        let server = tls_server(pki.rank(0), token);
        let addr = server.local_addr().to_string();
        let stores: Vec<TcpStore> = (0..3)
            .map(|r| {
                TcpStore::connect_with(addr.clone(), token, Some(&pki.rank(r)), deadline(30))
                    .expect("a rank's certificate opens the store")
            })
            .collect();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| stores[2].get(b"k", deadline(30)).expect("get waits for k"));
            stores[1].set(b"k", &[9u8; 100_000], deadline(30)).unwrap();
            assert_eq!(waiter.join().unwrap(), vec![9u8; 100_000]);
        });
        assert_eq!(stores[0].add(b"n", 5, deadline(30)).unwrap(), 5);
        assert_eq!(stores[2].add(b"n", 1, deadline(30)).unwrap(), 6);
        // A value larger than a TLS record and than the session's write chunk, both ways.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        stores[0].set(b"big", &big, deadline(60)).unwrap();
        assert!(stores[1].get(b"big", deadline(60)).unwrap() == big);
    }
}

#[test]
fn a_standalone_store_certificate_serves_the_job() {
    let pki = Pki::new("standalone", 2);
    let server = tls_server(pki.store(), None);
    let s = TcpStore::connect_with(
        server.local_addr().to_string(),
        None,
        Some(&pki.rank(1)),
        deadline(30),
    )
    .unwrap();
    s.set(b"a", b"b", deadline(30)).unwrap();
    assert_eq!(s.get(b"a", deadline(30)).unwrap(), b"b");
}

#[test]
fn a_client_of_another_ca_or_job_is_refused_at_once_with_an_auth_error() {
    let pki = Pki::new("refuse", 2);
    let server = tls_server(pki.rank(0), None);
    let addr = server.local_addr().to_string();
    // The outsiders pin both CAs, so that it is the server's verdict they meet.
    let foreign = pki.foreign(&Pki::new("elsewhere", 1), &Identity::rank("refuse", Rank(1)));
    let other_job = pki.issued(&Identity::rank("another-job", Rank(1)), valid());
    for (who, tls) in [("another CA", foreign), ("another job", other_job)] {
        // A long deadline: a retry loop would end in `Unreachable`, not `Auth`.
        let e = TcpStore::connect_with(addr.clone(), None, Some(&tls), deadline(60)).unwrap_err();
        assert!(matches!(e, Error::Auth { .. }), "{who}: {e}");
    }
    // The server drops each refused session a moment after the client has its answer.
    gloo_testing::wait_for("the server's connections", 10, || server.connections(), |n| *n == 0);
}

#[test]
fn a_server_of_another_job_is_refused_by_the_client() {
    let pki = Pki::new("client-checks", 2);
    let impostor = tls_server(pki.issued(&Identity::store("not-this-job"), valid()), None);
    let e = TcpStore::connect_with(
        impostor.local_addr().to_string(),
        None,
        Some(&pki.rank(1)),
        deadline(60),
    )
    .unwrap_err();
    match e {
        Error::Auth { detail } => assert!(detail.contains("of another job"), "{detail}"),
        other => panic!("{other}"),
    }
}

/// Issue 10: a TLS client of a plaintext store used to retry until its deadline and report
/// the store unreachable ("the connection closed during the TLS handshake"); the plaintext
/// server now answers a ClientHello with something that is not TLS, so the client knows at
/// once (a deadline a minute away: a retry loop would end in `Unreachable`, not `Config`).
#[test]
fn a_tls_client_of_a_plaintext_store_is_told_at_once_that_the_server_does_not_speak_tls() {
    let pki = Pki::new("mix", 2);
    let plain = TcpStoreServer::bind(loopback(), None).unwrap();
    let addr = plain.local_addr().to_string();
    let e =
        TcpStore::connect_with(addr.clone(), None, Some(&pki.rank(1)), deadline(60)).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&addr) && msg.contains("does not speak TLS"), "{msg}");
    assert!(msg.contains("plaintext server"), "{msg}");
    // The server dropped the connection (naming the ClientHello in its log).
    gloo_testing::wait_for("the server's connections", 10, || plain.connections(), |n| *n == 0);
}

/// Issue 10: a plaintext client of a TLS store used to retry until its deadline ("the store
/// closed the connection"); it now reads the TLS server's alert where the hello's answer
/// belongs and says at once that the server speaks TLS.
#[test]
fn a_plaintext_client_of_a_tls_store_is_told_at_once_that_the_server_speaks_tls() {
    let pki = Pki::new("mix", 2);
    let server = tls_server(pki.rank(0), None);
    let addr = server.local_addr().to_string();
    let e = TcpStore::connect(addr.clone(), None, deadline(60)).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&addr) && msg.contains("speaks TLS"), "{msg}");
    assert!(msg.contains("GLOO_TLS_CA"), "{msg}");
}

/// A server that closes on a ClientHello without a word (a plaintext store of an older
/// version, or anything else): the TLS client retries until its deadline, as for a server
/// restarting, and then names the address and the likely cause.
#[test]
fn a_tls_client_of_a_server_that_closes_silently_names_the_address_and_tls() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let pki = Pki::new("mix", 2);
    let listener = std::net::TcpListener::bind(loopback()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = AtomicBool::new(false);
    let e = std::thread::scope(|s| {
        s.spawn(|| {
            // Accept and close every connection, until the client is done (bounded).
            let end = deadline(60);
            while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < end {
                match listener.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        });
        let short = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let e = TcpStore::connect_with(addr.clone(), None, Some(&pki.rank(1)), short);
        stop.store(true, Ordering::SeqCst);
        e.unwrap_err()
    });
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&addr), "{msg}");
    assert!(msg.contains("closed the connection during the TLS handshake"), "{msg}");
    assert!(msg.contains("plaintext server"), "{msg}");
}

#[test]
fn tls_alone_lets_the_store_serve_a_routable_address() {
    // 198.51.100.7 (TEST-NET-2) is no address of this host: binding it fails. What matters
    // is why: without TLS or a token the policy refuses first (a configuration error); with
    // TLS the policy lets it through to the bind itself (an I/O error).
    let addr: SocketAddr = "198.51.100.7:0".parse().unwrap();
    let e = TcpStoreServer::bind_with(addr, ServerConfig::default()).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("GLOO_TLS_CA"), "{e}");
    let pki = Pki::new("routable", 1);
    let mut cfg = ServerConfig::default();
    cfg.tls = Some(pki.rank(0));
    let e = TcpStoreServer::bind_with(addr, cfg).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn env_start_up_serves_and_reaches_the_store_over_tls() {
    let pki = Pki::new("env-tls", 2);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let vars = |r: u32, sub: &str| -> HashMap<String, String> {
        let d = dir.path().join(format!("{sub}{r}"));
        std::fs::create_dir(&d).unwrap();
        let f = pki.write_rank(&d, r, 0o600);
        [
            ("RANK", r.to_string()),
            ("WORLD_SIZE", "2".into()),
            ("MASTER_ADDR", "127.0.0.1".into()),
            ("MASTER_PORT", port.to_string()),
            ("GLOO_TLS_CA", f.ca.display().to_string()),
            ("GLOO_TLS_CERT", f.cert.display().to_string()),
            ("GLOO_TLS_KEY", f.key.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let (v0, v1) = (vars(0, "r"), vars(1, "r"));
    let s0 = EnvStore::start(parse_env(&v0).unwrap(), deadline(30)).unwrap();
    let s1 = EnvStore::start(parse_env(&v1).unwrap(), deadline(30)).unwrap();
    assert!(s0.hosts_server());
    assert_eq!(s1.tls().unwrap().identity(), &Identity::rank("env-tls", Rank(1)));
    s1.store.set(b"hello", b"over tls", deadline(30)).unwrap();
    assert_eq!(s0.store.get(b"hello", deadline(30)).unwrap(), b"over tls");
    // A key file others may read stops the start-up with an error that says so.
    let v2 = vars(1, "loose");
    let key = std::path::PathBuf::from(&v2["GLOO_TLS_KEY"]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = EnvStore::start(parse_env(&v2).unwrap(), deadline(5)).unwrap_err();
    assert!(e.to_string().contains("readable by group or others"), "{e}");
}
