//! RedisStore over TLS (`rediss://`) against a real `redis-server` started with certificates
//! made at test time (feature `redis-tls`; needs `redis-server` on PATH). The conformance
//! suite over TLS is in conformance.rs (`redis_store_over_tls`).
#![cfg(feature = "redis-tls")]

use gloo_rendezvous::{Error, RedisOptions, RedisStore, Store};
use gloo_testing::deadline;
use gloo_testing::redis::{ClientCerts, RedisServer, TlsFiles};

/// Options that trust the server's test CA.
fn trusting(server: &RedisServer) -> RedisOptions {
    let mut opts = RedisOptions::with_prefix("tls-job");
    opts.tls_root_cert = Some(server.tls().expect("a TLS server").ca_pem());
    opts
}

/// Options that trust the server's CA and present the test client certificate.
fn with_client_cert(server: &RedisServer) -> RedisOptions {
    let tls = server.tls().expect("a TLS server");
    let mut opts = trusting(server);
    opts.tls_client_cert = Some(tls.client_cert_pem());
    opts.tls_client_key = Some(tls.client_key_pem());
    opts
}

#[test]
fn a_private_ca_is_trusted_when_given() {
    gloo_testing::init_tracing();
    let server = RedisServer::start_tls(None, ClientCerts::NotAsked);
    assert!(server.url().starts_with("rediss://"), "{}", server.url());
    let store = RedisStore::connect(&server.url(), trusting(&server), deadline(10)).unwrap();
    store.set(b"over/tls", b"secret", deadline(5)).unwrap();
    assert_eq!(store.get(b"over/tls", deadline(5)).unwrap(), b"secret");
    assert_eq!(store.add(b"n", 2, deadline(5)).unwrap(), 2);
    // A second client sees the first one's writes (the same server, through TLS too).
    let other = RedisStore::connect(&server.url(), trusting(&server), deadline(10)).unwrap();
    assert_eq!(other.get(b"over/tls", deadline(5)).unwrap(), b"secret");
}

#[test]
fn a_client_that_does_not_trust_the_ca_gets_a_certificate_error_not_a_hang() {
    gloo_testing::init_tracing();
    let server = RedisServer::start_tls(None, ClientCerts::NotAsked);
    // The deadline is long on purpose: an error that were retried as a connection failure
    // would come back as `Unreachable` only when it passes, so `Auth` shows it was not.
    let cases = {
        // The system's roots: the test CA is not among them.
        let system = RedisOptions::default();
        // Another CA of the same shape, freshly made: trusted for nothing this server shows.
        let dir = tempfile::tempdir().unwrap();
        let mut stranger = RedisOptions::default();
        stranger.tls_root_cert = Some(TlsFiles::generate(dir.path()).ca_pem());
        [("system roots", system), ("another CA", stranger)]
    };
    for (what, opts) in cases {
        let err = RedisStore::connect(&server.url(), opts, deadline(30)).unwrap_err();
        assert!(matches!(err, Error::Auth { .. }), "{what}: {err}");
        let text = err.to_string();
        assert!(text.contains("certificate"), "{what}: {text}");
        assert!(text.contains(&server.port().to_string()), "{what}: names the server: {text}");
    }
}

#[test]
fn password_over_tls_is_required_and_checked() {
    gloo_testing::init_tracing();
    let server = RedisServer::start_tls(Some("tls-pw"), ClientCerts::NotAsked);
    assert!(server.url().contains(":tls-pw@"), "{}", server.url());
    let no_pw = format!("rediss://127.0.0.1:{}/0", server.port());
    let err = RedisStore::connect(&no_pw, trusting(&server), deadline(10))
        .and_then(|s| s.set(b"k", b"v", deadline(5)))
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    let wrong = format!("rediss://:wrong-pw@127.0.0.1:{}/0", server.port());
    let err = RedisStore::connect(&wrong, trusting(&server), deadline(10)).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("wrong-pw"), "the password is not shown: {err}");
    let store = RedisStore::connect(&server.url(), trusting(&server), deadline(10)).unwrap();
    store.set(b"k", b"v", deadline(5)).unwrap();
    assert_eq!(store.get(b"k", deadline(5)).unwrap(), b"v");
}

#[test]
fn a_server_that_asks_for_client_certificates() {
    gloo_testing::init_tracing();
    let server = RedisServer::start_tls(Some("pw"), ClientCerts::Required);
    let store = RedisStore::connect(&server.url(), with_client_cert(&server), deadline(10))
        .expect("the client certificate signed by the server's CA is accepted");
    store.set(b"mtls", b"v", deadline(5)).unwrap();
    assert_eq!(store.get(b"mtls", deadline(5)).unwrap(), b"v");

    // Without a certificate the server refuses the handshake: an error, not a retry loop.
    let err = RedisStore::connect(&server.url(), trusting(&server), deadline(30))
        .and_then(|s| s.set(b"k", b"v", deadline(30)))
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");

    // A certificate from a CA the server does not know is refused the same way.
    let dir = tempfile::tempdir().unwrap();
    let foreign = TlsFiles::generate(dir.path());
    let mut opts = trusting(&server);
    opts.tls_client_cert = Some(foreign.client_cert_pem());
    opts.tls_client_key = Some(foreign.client_key_pem());
    let err = RedisStore::connect(&server.url(), opts, deadline(30))
        .and_then(|s| s.set(b"k", b"v", deadline(30)))
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
}

#[test]
fn tls_to_a_plain_server_is_an_error_by_the_deadline() {
    gloo_testing::init_tracing();
    let server = RedisServer::start(None);
    let url = format!("rediss://127.0.0.1:{}/0", server.port());
    // A plain server reads the TLS client hello as a command line: it waits for a line end
    // (then only the deadline ends the attempt), or answers or closes on the garbage (then
    // rustls or the connection fails). Either way: an error by the deadline that says what
    // was likely wrong.
    let short = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let err = RedisStore::connect(&url, RedisOptions::default(), short).unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. } | Error::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("speak TLS"), "{err}");
}

#[test]
fn bad_tls_options_are_configuration_errors() {
    // No server is needed: every case is refused before connecting.
    let url = "rediss://127.0.0.1:1/0";
    let dir = tempfile::tempdir().unwrap();
    let good = TlsFiles::generate(dir.path());
    let mut cases: Vec<(&str, RedisOptions)> = Vec::new();
    let mut o = RedisOptions::default();
    o.tls_root_cert = Some(b"not a certificate".to_vec());
    cases.push(("tls_root_cert", o));
    let mut o = RedisOptions::default();
    o.tls_root_cert = Some(good.ca_pem());
    o.tls_client_cert = Some(good.client_cert_pem());
    cases.push(("together", o));
    let mut o = RedisOptions::default();
    o.tls_client_key = Some(good.client_key_pem());
    cases.push(("together", o));
    let mut o = RedisOptions::default();
    o.tls_client_cert = Some(good.client_cert_pem());
    o.tls_client_key =
        Some(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec());
    cases.push(("key", o));
    for (names, opts) in cases {
        let debug = format!("{opts:?}");
        assert!(!debug.contains("PRIVATE KEY"), "Debug shows no key: {debug}");
        let err = RedisStore::connect(url, opts, deadline(5)).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{names}: {err}");
        assert!(err.to_string().contains(names), "{names}: {err}");
        assert!(!err.to_string().contains("AAAA"), "the key's bytes are not shown: {err}");
    }
}
