//! RedisStore against a real `redis-server` (feature `redis`; needs `redis-server` on PATH).
#![cfg(feature = "redis")]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gloo_rendezvous::{Error, RedisOptions, RedisStore, Store};
use gloo_testing::deadline;
use gloo_testing::redis::RedisServer;

/// Send one inline command (after AUTH if a password is given) and return the first line of
/// the answer: enough to inspect TTLs and keys without a second Redis client.
fn raw(server: &RedisServer, password: Option<&str>, command: &str) -> String {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if let Some(pw) = password {
        s.write_all(format!("AUTH {pw}\r\n").as_bytes()).unwrap();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "+OK\r\n");
        line.clear();
    }
    s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    r.read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

#[test]
fn password_is_required_and_checked() {
    let server = RedisServer::start(Some("s3cret"));
    let url = format!("redis://127.0.0.1:{}/0", server.port());
    let err = RedisStore::connect(&url, RedisOptions::default(), deadline(5))
        .and_then(|s| s.set(b"k", b"v", deadline(5)))
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    let wrong = format!("redis://:wrong@127.0.0.1:{}/0", server.port());
    let err = RedisStore::connect(&wrong, RedisOptions::default(), deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("wrong"), "the password is not shown: {err}");
    let store = RedisStore::connect(&server.url(), RedisOptions::default(), deadline(5)).unwrap();
    store.set(b"k", b"v", deadline(5)).unwrap();
    assert_eq!(store.get(b"k", deadline(5)).unwrap(), b"v");
}

#[test]
fn every_key_written_expires() {
    let server = RedisServer::start(None);
    let mut opts = RedisOptions::with_prefix("job-7");
    opts.ttl = Some(Duration::from_secs(600));
    let store = RedisStore::connect(&server.url(), opts, deadline(5)).unwrap();
    let d = deadline(5);
    store.set(b"set", b"v", d).unwrap();
    store.add(b"add", 3, d).unwrap();
    store.compare_set(b"cas", None, b"v", d).unwrap();
    store.multi_set(&[(b"m1", b"1"), (b"m2", b"2")], d).unwrap();
    store.append(b"app", b"x", d).unwrap();
    for key in ["set", "add", "cas", "m1", "m2", "app"] {
        let pttl: i64 = raw(&server, None, &format!("PTTL job-7/{key}"))
            .trim_start_matches(':')
            .parse()
            .unwrap();
        assert!(pttl > 0 && pttl <= 600_000, "job-7/{key} has PTTL {pttl}");
    }
}

#[test]
fn expired_keys_are_gone() {
    let server = RedisServer::start(None);
    let mut opts = RedisOptions::default();
    opts.ttl = Some(Duration::from_millis(50));
    let store = RedisStore::connect(&server.url(), opts, deadline(5)).unwrap();
    store.set(b"short-lived", b"v", deadline(5)).unwrap();
    let end = deadline(10);
    while store.try_get(b"short-lived", deadline(5)).unwrap().is_some() {
        assert!(Instant::now() < end, "the key never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn prefixes_keep_jobs_apart() {
    let server = RedisServer::start(None);
    let a =
        RedisStore::connect(&server.url(), RedisOptions::with_prefix("a"), deadline(5)).unwrap();
    let b =
        RedisStore::connect(&server.url(), RedisOptions::with_prefix("b"), deadline(5)).unwrap();
    a.set(b"rank/0", b"from a", deadline(5)).unwrap();
    assert_eq!(b.try_get(b"rank/0", deadline(5)).unwrap(), None);
    assert_eq!(raw(&server, None, "EXISTS a/rank/0"), ":1");
}

#[test]
fn a_killed_server_gives_a_clear_error_by_the_deadline() {
    let mut server = RedisServer::start(None);
    let store = RedisStore::connect(&server.url(), RedisOptions::default(), deadline(5)).unwrap();
    store.set(b"k", b"v", deadline(5)).unwrap();
    server.kill();
    let err = store.get(b"never", Instant::now() + Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
}

#[test]
fn an_unreachable_url_is_an_error_not_a_hang() {
    let err = RedisStore::connect(
        "redis://127.0.0.1:1/0",
        RedisOptions::default(),
        Instant::now() + Duration::from_millis(500),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    let err = RedisStore::connect("not a url", RedisOptions::default(), deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

// TLS tests live in redis_tls.rs (feature `redis-tls`); this one checks the build without it.
#[cfg(not(feature = "redis-tls"))]
#[test]
fn tls_urls_need_the_tls_feature() {
    let err =
        RedisStore::connect("rediss://127.0.0.1:6380/0", RedisOptions::default(), deadline(5))
            .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("redis-tls"), "{err}");
}

#[test]
fn tls_options_with_a_plain_url_are_refused_not_ignored() {
    // A CA or client certificate given with redis:// would otherwise mean plaintext while the
    // caller believes the connection is encrypted.
    let mut opts = RedisOptions::default();
    opts.tls_root_cert = Some(b"-----BEGIN CERTIFICATE-----".to_vec());
    let err = RedisStore::connect("redis://127.0.0.1:1/0", opts, deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("rediss://"), "{err}");
}

/// A frozen server (SIGSTOP): every call returns by its deadline (plus a small grace for the
/// last reply) and names its keys. It used to return after twice the deadline, naming none.
#[test]
fn a_frozen_server_fails_each_call_by_its_deadline_naming_its_keys() {
    let server = RedisServer::start(None);
    let store = RedisStore::connect(&server.url(), RedisOptions::default(), deadline(5)).unwrap();
    store.set(b"warm", b"v", deadline(5)).unwrap();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &server.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let budget = Duration::from_secs(2);
    type Call<'a> = Box<dyn Fn(Instant) -> gloo_rendezvous::Result<()> + 'a>;
    let calls: [(&str, Call<'_>); 4] = [
        ("frozen/get", Box::new(|d| store.get(b"frozen/get", d).map(drop))),
        ("frozen/set", Box::new(|d| store.set(b"frozen/set", b"v", d))),
        ("frozen/add", Box::new(|d| store.add(b"frozen/add", 1, d).map(drop))),
        ("frozen/wait", Box::new(|d| store.wait(&[b"frozen/wait"], d))),
    ];
    let mut late = Vec::new();
    for (key, call) in &calls {
        let start = Instant::now();
        let err = call(start + budget).unwrap_err();
        let took = start.elapsed();
        assert!(err.to_string().contains(key), "{key}: the error names no key: {err}");
        // The contract under test is the deadline itself; the grace covers a busy machine.
        if took > budget + Duration::from_millis(1500) {
            late.push(format!("{key}: {took:?}"));
        }
    }
    signal("-CONT");
    assert!(late.is_empty(), "calls past their 2 s deadline: {late:?}");
}

/// A key of another Redis type, or a value over the size limit, is reported at once as a
/// corrupt entry naming the key; it used to read as missing, so a rank waited out its
/// deadline. The bootstrap reports it too.
#[test]
fn a_key_of_the_wrong_type_or_size_is_corrupt_at_once_naming_it() {
    let server = RedisServer::start(None);
    let store =
        RedisStore::connect(&server.url(), RedisOptions::with_prefix("p"), deadline(5)).unwrap();
    assert_eq!(raw(&server, None, "RPUSH p/wrong/type x"), ":1");
    // A string of 64 MiB + 1 bytes, made in the server (never sent to us).
    let over = gloo_rendezvous::MAX_VALUE_LEN;
    assert!(raw(&server, None, &format!("SETRANGE p/too/big {over} x")).starts_with(':'));
    for (key, what) in [(&b"wrong/type"[..], "list"), (b"too/big", "over the limit")] {
        let far = deadline(60);
        for e in [
            store.get(key, far).unwrap_err(),
            store.try_get(key, far).unwrap_err(),
            store.wait(&[b"present-later", key], far).unwrap_err(),
        ] {
            let shown = String::from_utf8_lossy(key).into_owned();
            assert!(e.to_string().contains(&shown) && e.to_string().contains(what), "{e}");
            assert!(!e.is_timeout(), "{e}");
        }
    }
    // Rank 1's bootstrap entry is a list: rank 0 fails at once naming it.
    assert_eq!(raw(&server, None, "RPUSH p/gloo/bootstrap/addr/1 x"), ":1");
    let l = gloo_transport::tcp::TcpListener::bind(gloo_transport::tcp::TcpConfig::loopback(
        "corrupt",
        gloo_transport::Rank(0),
        2,
    ))
    .unwrap();
    let e =
        gloo_rendezvous::connect(&store, l, gloo_transport::Rank(0), 2, deadline(60)).unwrap_err();
    assert!(e.to_string().contains("gloo/bootstrap/addr/1"), "{e}");
}
