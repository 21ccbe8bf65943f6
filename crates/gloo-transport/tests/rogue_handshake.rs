//! Rogue peers during connection set-up (issue 2 §3): a raw `TcpStream` connects to a victim
//! rank that is inside `connect_all`, alongside the legitimate ranks of its group.
//!
//! What "a typed error for that peer" means while connecting: the victim refuses the rogue's
//! connection (closes it) and logs the typed error (`Protocol` or `Auth`, naming the rank the
//! rogue claimed when it claimed one), while `connect_all` goes on and succeeds for every
//! legitimate rank, which then exchange messages with each other. When a rogue takes the
//! place of a rank that never shows up, `connect_all` fails at its deadline with an error
//! naming that rank and carrying the rogue's rejection.
//!
//! The cases run one at a time: they assert on the process's captured warnings.
#![cfg(feature = "tcp")]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gloo_testing::deadline;
use gloo_testing::rogue::{
    Closed, Rogue, auth_frame, capture_logs, clear_logs, connect_threads, exchange_with,
    hello_frame, logged, logs, recorded_handshake,
};
use gloo_transport::proto::{self, LABEL_CONNECTOR, fresh_nonce, transcript_mac};
use gloo_transport::tcp::{Security, TcpComm, TcpConfig, TcpListener};
use gloo_transport::{Communicator, Error, Rank};

const TOKEN: &[u8] = b"rogue-handshake-token";
static SERIAL: Mutex<()> = Mutex::new(());

fn cfg(job: &str, rank: u32, size: u32) -> TcpConfig {
    // Long enough that the rogue, which sends no heartbeats, is never dropped as silent.
    TcpConfig::loopback(job, Rank(rank), size)
        .security(Security::Token(TOKEN.to_vec()))
        .peer_timeout(Duration::from_secs(60))
}

/// Serialise the cases and start each with an empty log.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    capture_logs();
    let g = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    clear_logs();
    g
}

/// Every legitimate rank exchanges a message with every other one.
fn all_exchange(comms: &[TcpComm], until: Instant) {
    std::thread::scope(|s| {
        for c in comms {
            s.spawn(move || {
                let others: Vec<Rank> =
                    (0..c.size()).map(Rank).filter(|r| *r != c.rank()).collect();
                exchange_with(c, &others, 1, 3000, until)
                    .unwrap_or_else(|e| panic!("rank {} after the rogue: {e}", c.rank()));
            });
        }
    });
}

/// A group of 3 with a token; rank 0 (the victim) starts connecting alone, `attack` runs
/// against its listener, the victim must close the rogue's connection, then ranks 1 and 2
/// join and everybody must connect and exchange.
fn handshake_case(job: &str, attack: impl FnOnce(SocketAddr, Instant) -> Rogue) {
    let until = deadline(60);
    let listeners: Vec<TcpListener> =
        (0..3).map(|r| TcpListener::bind(cfg(job, r, 3)).expect("bind")).collect();
    let addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
    let victim_addr = listeners[0].local_addr();
    let mut rest = listeners;
    let others = rest.split_off(1);
    let mut handles = connect_threads(rest, &addrs, until);

    let mut rogue = attack(victim_addr, until);
    assert_eq!(
        rogue.wait_closed(deadline(30)),
        Closed::Yes,
        "the victim kept the rogue's connection open; logs:\n{}",
        logs()
    );

    handles.extend(connect_threads(others, &addrs, until));
    let comms: Vec<TcpComm> = handles
        .into_iter()
        .enumerate()
        .map(|(r, h)| {
            h.join()
                .expect("connect thread")
                .unwrap_or_else(|e| panic!("rank {r}'s connect_all failed after the rogue: {e}"))
        })
        .collect();
    all_exchange(&comms, until);
}

fn assert_rejected(needles: &[&str]) {
    let mut all = vec!["rejected a connection"];
    all.extend_from_slice(needles);
    assert!(logged(&all), "no logged rejection with {all:?}; logs:\n{}", logs());
}

fn nonce() -> [u8; proto::NONCE_LEN] {
    fresh_nonce().expect("random nonce")
}

/// A correct `Hello` from rank 2 to rank 0 of a group of 3 in job `job`.
fn good_hello(job: &str) -> Vec<u8> {
    hello_frame(job, Rank(2), Rank(0), 3, true, nonce())
}

#[test]
fn rogue_garbage_before_the_handshake() {
    let _g = serial();
    handshake_case("garbage", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        let garbage: Vec<u8> =
            b"GET / HTTP/1.1\r\nHost: gloo\r\n\r\n".iter().copied().cycle().take(200).collect();
        r.send(&garbage).expect("send");
        r
    });
    assert_rejected(&["protocol error from an unidentified peer", "bad frame magic"]);
}

#[test]
fn rogue_wrong_magic() {
    let _g = serial();
    handshake_case("magic", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        let mut hello = good_hello("magic");
        hello[0..4].copy_from_slice(b"GLOX");
        r.send(&hello).expect("send");
        r
    });
    assert_rejected(&["protocol error from an unidentified peer", "bad frame magic"]);
}

#[test]
fn rogue_wrong_version() {
    let _g = serial();
    handshake_case("version", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        let mut hello = good_hello("version");
        hello[4..6].copy_from_slice(&2u16.to_le_bytes());
        r.send(&hello).expect("send");
        r
    });
    assert_rejected(&["protocol error from an unidentified peer", "protocol version 2"]);
}

#[test]
fn rogue_wrong_job() {
    let _g = serial();
    handshake_case("job", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        r.send(&good_hello("another-job")).expect("send");
        r
    });
    assert_rejected(&["protocol error from rank 2", "another job"]);
}

#[test]
fn rogue_rank_out_of_range() {
    let _g = serial();
    handshake_case("range", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        r.send(&hello_frame("range", Rank(7), Rank(0), 3, true, nonce())).expect("send");
        r
    });
    assert_rejected(&["protocol error from rank 7", "out of range"]);
}

#[test]
fn rogue_bad_hmac() {
    let _g = serial();
    handshake_case("hmac", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        let hello = good_hello("hmac");
        r.send(&hello).expect("send hello");
        let theirs = r.read_acceptor_hello(true, until).expect("the victim's hello and auth");
        // A MAC over the right transcript with the wrong key: an outsider guessing.
        let mac = transcript_mac(b"not-the-token", LABEL_CONNECTOR, &hello, &theirs);
        r.send(&auth_frame(&mac)).expect("send auth");
        r
    });
    assert_rejected(&["authentication failed for rank 2", "does not verify"]);
}

#[test]
fn rogue_replayed_handshake() {
    let _g = serial();
    handshake_case("replay", |addr, until| {
        // The connector frames of a real, successful handshake from rank 2 to rank 0 with the
        // right token, recorded earlier; replayed against the victim's fresh nonce.
        let rec = recorded_handshake("replay", Some(TOKEN), Rank(2), Rank(0), 3);
        let mut r = Rogue::connect(addr, until).expect("connect");
        r.send(&rec.connector_hello).expect("send hello");
        r.read_acceptor_hello(true, until).expect("the victim's hello and auth");
        r.send(&rec.connector_auth).expect("send auth");
        r
    });
    assert_rejected(&["authentication failed for rank 2", "does not verify"]);
}

#[test]
fn rogue_replayed_handshake_sent_blind() {
    let _g = serial();
    handshake_case("replay-blind", |addr, until| {
        let rec = recorded_handshake("replay-blind", Some(TOKEN), Rank(2), Rank(0), 3);
        let mut bytes = rec.connector_hello;
        bytes.extend_from_slice(&rec.connector_auth);
        let mut r = Rogue::connect(addr, until).expect("connect");
        r.send(&bytes).expect("send");
        r
    });
    assert_rejected(&["authentication failed for rank 2", "does not verify"]);
}

/// Connections that never finish a handshake (some silent, some stopping mid-hello, some
/// never authenticating) while the legitimate ranks connect: nobody waits for them, and they
/// are closed in the end.
#[test]
fn rogue_slowloris_does_not_delay_legitimate_peers() {
    let _g = serial();
    let job = "slowloris";
    let until = deadline(60);
    let listeners: Vec<TcpListener> =
        (0..3).map(|r| TcpListener::bind(cfg(job, r, 3)).expect("bind")).collect();
    let addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
    let victim_addr = listeners[0].local_addr();
    let mut rest = listeners;
    let others = rest.split_off(1);
    let mut handles = connect_threads(rest, &addrs, until);
    let mut rogues = Vec::new();
    for i in 0..20 {
        let mut r = Rogue::connect(victim_addr, until).expect("connect");
        match i % 3 {
            // Silent.
            0 => {}
            // Part of a hello.
            1 => r.send(&good_hello(job)[..40]).expect("send part of a hello"),
            // A whole, valid hello, and then no authenticator.
            _ => r.send(&good_hello(job)).expect("send a hello"),
        }
        rogues.push(r);
    }
    handles.extend(connect_threads(others, &addrs, until));
    let comms: Vec<TcpComm> = handles
        .into_iter()
        .enumerate()
        .map(|(r, h)| {
            h.join().expect("connect thread").unwrap_or_else(|e| {
                panic!("rank {r}'s connect_all failed beside the slowloris: {e}")
            })
        })
        .collect();
    all_exchange(&comms, until);
    for (i, r) in rogues.iter_mut().enumerate() {
        assert_eq!(r.wait_closed(deadline(30)), Closed::Yes, "slowloris connection {i} kept");
    }
}

/// An insider (it has the token) connects as rank 2, then opens a second connection claiming
/// rank 2 again: the second is refused, the first keeps working.
#[test]
fn rogue_second_connection_for_a_connected_rank() {
    let _g = serial();
    let job = "duplicate";
    let until = deadline(60);
    let hs = |me| proto::HandshakeConfig {
        job: proto::job_hash(job),
        me: Rank(me),
        size: 3,
        token: Some(TOKEN.to_vec()),
    };
    let listeners: Vec<TcpListener> =
        (0..2).map(|r| TcpListener::bind(cfg(job, r, 3)).expect("bind")).collect();
    let rank2 = TcpListener::bind(cfg(job, 2, 3)).expect("bind");
    let mut addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
    addrs.push(rank2.address_bytes());
    drop(rank2);
    let (a0, a1) = (listeners[0].local_addr(), listeners[1].local_addr());
    let mut rest = listeners;
    let rank1 = rest.split_off(1);
    let mut handles = connect_threads(rest, &addrs, until);

    let mut first = Rogue::connect(a0, until).expect("connect");
    first.handshake(hs(2), Rank(0), until).expect("the first connection's handshake");
    let mut second = Rogue::connect(a0, until).expect("connect");
    // The victim may refuse before or after finishing its side of the handshake.
    let _ = second.handshake(hs(2), Rank(0), until);
    assert_eq!(second.wait_closed(deadline(30)), Closed::Yes, "duplicate connection kept");

    handles.extend(connect_threads(rank1, &addrs, until));
    let mut to1 = Rogue::connect(a1, until).expect("connect");
    to1.handshake(hs(2), Rank(1), until).expect("handshake with rank 1");
    let comms: Vec<TcpComm> = handles
        .into_iter()
        .map(|h| h.join().expect("connect thread").expect("connect_all"))
        .collect();
    assert!(
        logged(&["refusing a duplicate connection", "peer=2"]),
        "no logged refusal of the duplicate; logs:\n{}",
        logs()
    );

    // The first connection is rank 2's: a message on it reaches the victim.
    let payload = b"from the first connection";
    first.send(&gloo_testing::rogue::eager_frame(5, payload)).expect("send");
    let mut buf = [0u8; 64];
    let n = comms[0]
        .recv(Rank(2), gloo_transport::Slot(5), &mut buf, until)
        .expect("message over the first connection");
    assert_eq!(&buf[..n], payload);
    std::thread::scope(|s| {
        for c in &comms {
            s.spawn(move || {
                let other = Rank(1 - c.rank().0);
                exchange_with(c, &[other], 1, 3000, until).expect("ranks 0 and 1 exchange");
            });
        }
    });
}

/// A rogue in the place of a rank that never shows up: the victim's `connect_all` fails at its
/// deadline naming that rank, with the rogue's rejection as the reason.
#[test]
fn rogue_in_place_of_a_rank_is_named_when_connect_all_fails() {
    let _g = serial();
    let job = "in-place";
    let until = Instant::now() + Duration::from_secs(6);
    let victim = TcpListener::bind(cfg(job, 0, 2)).expect("bind");
    let absent = TcpListener::bind(cfg(job, 1, 2)).expect("bind");
    let addrs = vec![victim.address_bytes(), absent.address_bytes()];
    drop(absent);
    let addr = victim.local_addr();
    let h = connect_threads(vec![victim], &addrs, until);
    let mut r = Rogue::connect(addr, until).expect("connect");
    let hello = hello_frame(job, Rank(1), Rank(0), 2, true, nonce());
    r.send(&hello).expect("send hello");
    let theirs = r.read_acceptor_hello(true, until).expect("the victim's hello and auth");
    let mac = transcript_mac(b"guess", LABEL_CONNECTOR, &hello, &theirs);
    r.send(&auth_frame(&mac)).expect("send auth");
    assert_eq!(r.wait_closed(deadline(30)), Closed::Yes, "the victim kept the rogue");
    let e = h.into_iter().next().expect("one thread").join().expect("thread").unwrap_err();
    assert_eq!(e.peer(), Some(Rank(1)), "{e}");
    assert!(matches!(e, Error::Io { kind: std::io::ErrorKind::TimedOut, .. }), "{e:?}");
    assert!(e.to_string().contains("authentication failed"), "{e}");
}

#[test]
fn rogue_claims_the_victims_own_rank() {
    let _g = serial();
    handshake_case("own-rank", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        r.send(&hello_frame("own-rank", Rank(0), Rank(0), 3, true, nonce())).expect("send");
        r
    });
    assert_rejected(&["protocol error from rank 0", "our own rank"]);
}

#[test]
fn rogue_hello_meant_for_another_rank() {
    let _g = serial();
    handshake_case("other-rank", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        r.send(&hello_frame("other-rank", Rank(2), Rank(1), 3, true, nonce())).expect("send");
        r
    });
    assert_rejected(&["protocol error from rank 2", "meant to reach rank 1"]);
}

#[test]
fn rogue_wrong_group_size() {
    let _g = serial();
    handshake_case("size", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        r.send(&hello_frame("size", Rank(2), Rank(0), 4, true, nonce())).expect("send");
        r
    });
    assert_rejected(&["protocol error from rank 2", "group size is 4"]);
}

/// A peer without a token knocking on a job that requires one: refused before any MAC.
#[test]
fn rogue_without_a_token() {
    let _g = serial();
    handshake_case("no-token", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        r.send(&hello_frame("no-token", Rank(2), Rank(0), 3, false, nonce())).expect("send");
        r
    });
    assert_rejected(&["authentication failed for rank 2", "security modes differ"]);
}

/// A well-formed frame of the wrong kind before the handshake (an `Auth` instead of `Hello`,
/// and a data frame).
#[test]
fn rogue_frames_before_the_hello() {
    let _g = serial();
    handshake_case("auth-first", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        r.send(&auth_frame(&[7; 32])).expect("send");
        r
    });
    assert_rejected(&["protocol error from an unidentified peer", "expected Hello", "got Auth"]);
    clear_logs();
    handshake_case("eager-first", |addr, until| {
        let mut r = Rogue::connect(addr, until).expect("connect");
        r.send(&gloo_testing::rogue::eager_frame(1, b"data before hello")).expect("send");
        r
    });
    assert_rejected(&["protocol error from an unidentified peer", "expected Hello", "got Eager"]);
}

/// The listener lives only until the group is connected: a late knock is refused by the
/// kernel, not queued for a handshake nobody will run.
#[test]
fn rogue_connect_after_set_up_is_refused() {
    let _g = serial();
    let job = "late-knock";
    let until = deadline(60);
    let listeners: Vec<TcpListener> =
        (0..2).map(|r| TcpListener::bind(cfg(job, r, 2)).expect("bind")).collect();
    let addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
    let victim_addr = listeners[0].local_addr();
    let comms: Vec<TcpComm> = connect_threads(listeners, &addrs, until)
        .into_iter()
        .map(|h| h.join().expect("connect thread").expect("connect_all"))
        .collect();
    let e = std::net::TcpStream::connect_timeout(&victim_addr, Duration::from_secs(10))
        .expect_err("the victim still listens after connect_all");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    all_exchange(&comms, until);
}

/// Higher ranks dial lower ones: a connection to rank 1 that claims to be rank 0 (which rank 1
/// dials itself) is refused, and rank 1's real connection to rank 0 is unaffected.
#[test]
fn rogue_connects_in_the_wrong_direction() {
    let _g = serial();
    let job = "direction";
    let until = deadline(60);
    let listeners: Vec<TcpListener> =
        (0..2).map(|r| TcpListener::bind(cfg(job, r, 2)).expect("bind")).collect();
    let addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
    let victim_addr = listeners[1].local_addr();
    let mut rest = listeners;
    let victim = rest.split_off(1);
    let mut handles = connect_threads(victim, &addrs, until);
    let mut r = Rogue::connect(victim_addr, until).expect("connect");
    r.send(&hello_frame(job, Rank(0), Rank(1), 2, true, nonce())).expect("send");
    assert_eq!(r.wait_closed(deadline(30)), Closed::Yes, "the victim kept the rogue");
    handles.extend(connect_threads(rest, &addrs, until));
    let comms: Vec<TcpComm> = handles
        .into_iter()
        .map(|h| h.join().expect("connect thread").expect("connect_all"))
        .collect();
    assert_rejected(&["protocol error from rank 0", "wrong direction"]);
    all_exchange(&comms, until);
}
