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
//! The sequence every attack shares is `gloo_testing::rogue::repel`; each test here says only
//! what the rogue does and what the victim must log. The cases run one at a time: they assert
//! on the process's captured warnings.
#![cfg(feature = "tcp")]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gloo_testing::deadline;
use gloo_testing::rogue::{
    Rogue, Siege, all_exchange, assert_rejected, auth_frame, capture_logs, clear_logs, eager_frame,
    exchange_with, hello_frame, knock, logged, logs, recorded_handshake, repel,
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

/// Listeners for ranks `0..n` of a group of `size` in `job`, and their socket addresses.
fn bind(job: &str, n: u32, size: u32) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let listeners: Vec<TcpListener> =
        (0..n).map(|r| TcpListener::bind(cfg(job, r, size)).expect("bind")).collect();
    let addrs = listeners.iter().map(TcpListener::local_addr).collect();
    (listeners, addrs)
}

/// A group of 3 with a token; rank 0 (the victim) starts connecting alone, `attack` runs
/// against its listener, the victim must close the rogue's connection, then ranks 1 and 2
/// join and everybody must connect and exchange. Last, the victim must have logged a
/// rejection containing every one of `needles`.
fn refused_after(job: &str, attack: impl FnOnce(SocketAddr, Instant) -> Rogue, needles: &[&str]) {
    let _g = serial();
    let (listeners, at) = bind(job, 3, 3);
    repel(Siege::new(listeners, deadline(60)), &[0], at[0], attack);
    assert_rejected(needles);
}

/// [`refused_after`] a rogue that sends `bytes` and nothing else.
fn refused(job: &str, bytes: &[u8], needles: &[&str]) {
    refused_after(job, |addr, until| knock(addr, bytes, until), needles);
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
    let garbage: Vec<u8> =
        b"GET / HTTP/1.1\r\nHost: gloo\r\n\r\n".iter().copied().cycle().take(200).collect();
    refused("garbage", &garbage, &["protocol error from an unidentified peer", "bad frame magic"]);
}

#[test]
fn rogue_wrong_magic() {
    let mut hello = good_hello("magic");
    hello[0..4].copy_from_slice(b"GLOX");
    refused("magic", &hello, &["protocol error from an unidentified peer", "bad frame magic"]);
}

#[test]
fn rogue_wrong_version() {
    let mut hello = good_hello("version");
    hello[4..6].copy_from_slice(&2u16.to_le_bytes());
    refused("version", &hello, &["protocol error from an unidentified peer", "protocol version 2"]);
}

#[test]
fn rogue_wrong_job() {
    refused("job", &good_hello("another-job"), &["protocol error from rank 2", "another job"]);
}

#[test]
fn rogue_rank_out_of_range() {
    refused(
        "range",
        &hello_frame("range", Rank(7), Rank(0), 3, true, nonce()),
        &["protocol error from rank 7", "out of range"],
    );
}

#[test]
fn rogue_bad_hmac() {
    let attack = |addr, until| {
        let hello = good_hello("hmac");
        let mut r = knock(addr, &hello, until);
        let theirs = r.read_acceptor_hello(true, until).expect("the victim's hello and auth");
        // A MAC over the right transcript with the wrong key: an outsider guessing.
        let mac = transcript_mac(b"not-the-token", LABEL_CONNECTOR, &hello, &theirs);
        r.send(&auth_frame(&mac)).expect("send auth");
        r
    };
    refused_after("hmac", attack, &["authentication failed for rank 2", "does not verify"]);
}

#[test]
fn rogue_replayed_handshake() {
    let attack = |addr, until| {
        // The connector frames of a real, successful handshake from rank 2 to rank 0 with the
        // right token, recorded earlier; replayed against the victim's fresh nonce.
        let rec = recorded_handshake("replay", Some(TOKEN), Rank(2), Rank(0), 3);
        let mut r = knock(addr, &rec.connector_hello, until);
        r.read_acceptor_hello(true, until).expect("the victim's hello and auth");
        r.send(&rec.connector_auth).expect("send auth");
        r
    };
    refused_after("replay", attack, &["authentication failed for rank 2", "does not verify"]);
}

#[test]
fn rogue_replayed_handshake_sent_blind() {
    let rec = recorded_handshake("replay-blind", Some(TOKEN), Rank(2), Rank(0), 3);
    refused(
        "replay-blind",
        &[rec.connector_hello, rec.connector_auth].concat(),
        &["authentication failed for rank 2", "does not verify"],
    );
}

/// Connections that never finish a handshake (some silent, some stopping mid-hello, some
/// never authenticating) while the legitimate ranks connect: nobody waits for them, and they
/// are closed in the end.
#[test]
fn rogue_slowloris_does_not_delay_legitimate_peers() {
    let _g = serial();
    let job = "slowloris";
    let until = deadline(60);
    let (listeners, at) = bind(job, 3, 3);
    let mut group = Siege::new(listeners, until);
    group.start(&[0]);
    let mut rogues: Vec<Rogue> = (0..20)
        .map(|i| match i % 3 {
            // Silent.
            0 => knock(at[0], b"", until),
            // Part of a hello.
            1 => knock(at[0], &good_hello(job)[..40], until),
            // A whole, valid hello, and then no authenticator.
            _ => knock(at[0], &good_hello(job), until),
        })
        .collect();
    let comms = group.connected();
    all_exchange(&comms, until);
    for (i, r) in rogues.iter_mut().enumerate() {
        r.assert_closed(deadline(30), &format!("slowloris connection {i}"));
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
    // Ranks 0 and 1 listen; rank 2's address is published, but the rogue plays rank 2.
    let (listeners, at) = bind(job, 3, 3);
    let mut listeners = listeners;
    let addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
    drop(listeners.pop());
    let mut group = Siege::with_addrs(listeners, addrs, until);
    group.start(&[0]);

    let mut first = knock(at[0], b"", until);
    first.handshake(hs(2), Rank(0), until).expect("the first connection's handshake");
    let mut second = knock(at[0], b"", until);
    // The victim may refuse before or after finishing its side of the handshake.
    let _ = second.handshake(hs(2), Rank(0), until);
    second.assert_closed(deadline(30), "the duplicate connection");

    group.start(&[1]);
    let mut to1 = knock(at[1], b"", until);
    to1.handshake(hs(2), Rank(1), until).expect("handshake with rank 1");
    let comms: Vec<TcpComm> = group.connected();
    assert!(
        logged(&["refusing a duplicate connection", "peer=2"]),
        "no logged refusal of the duplicate; logs:\n{}",
        logs()
    );

    // The first connection is rank 2's: a message on it reaches the victim.
    let payload = b"from the first connection";
    first.send(&eager_frame(5, payload)).expect("send");
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
/// deadline naming that rank, with the rogue's rejection as the reason, typed as what it was
/// (here a failed authentication).
#[test]
fn rogue_in_place_of_a_rank_is_named_when_connect_all_fails() {
    let _g = serial();
    let job = "in-place";
    let until = Instant::now() + Duration::from_secs(6);
    // Rank 1's address is published, but rank 1 never comes: only the rogue does.
    let (mut listeners, at) = bind(job, 2, 2);
    let addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
    drop(listeners.pop());
    let mut group = Siege::with_addrs(listeners, addrs, until);
    group.start(&[0]);
    let hello = hello_frame(job, Rank(1), Rank(0), 2, true, nonce());
    let mut r = knock(at[0], &hello, until);
    let theirs = r.read_acceptor_hello(true, until).expect("the victim's hello and auth");
    let mac = transcript_mac(b"guess", LABEL_CONNECTOR, &hello, &theirs);
    r.send(&auth_frame(&mac)).expect("send auth");
    r.assert_closed(deadline(30), "the rogue");
    let e = group.join().pop().expect("rank 0's result").unwrap_err();
    assert_eq!(e.peer(), Some(Rank(1)), "{e}");
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    assert!(e.to_string().contains("within") && e.to_string().contains("MAC"), "{e}");
}

#[test]
fn rogue_claims_the_victims_own_rank() {
    refused(
        "own-rank",
        &hello_frame("own-rank", Rank(0), Rank(0), 3, true, nonce()),
        &["protocol error from rank 0", "our own rank"],
    );
}

#[test]
fn rogue_hello_meant_for_another_rank() {
    refused(
        "other-rank",
        &hello_frame("other-rank", Rank(2), Rank(1), 3, true, nonce()),
        &["protocol error from rank 2", "meant to reach rank 1"],
    );
}

#[test]
fn rogue_wrong_group_size() {
    refused(
        "size",
        &hello_frame("size", Rank(2), Rank(0), 4, true, nonce()),
        &["protocol error from rank 2", "runs a group of 4 ranks"],
    );
}

/// A peer without a token knocking on a job that requires one: refused before any MAC.
#[test]
fn rogue_without_a_token() {
    refused(
        "no-token",
        &hello_frame("no-token", Rank(2), Rank(0), 3, false, nonce()),
        &["authentication failed for rank 2", "security modes differ"],
    );
}

/// A well-formed frame of the wrong kind before the handshake (an `Auth` instead of `Hello`,
/// and a data frame).
#[test]
fn rogue_frames_before_the_hello() {
    refused(
        "auth-first",
        &auth_frame(&[7; 32]),
        &["protocol error from an unidentified peer", "expected Hello", "got Auth"],
    );
    let needles = ["protocol error from an unidentified peer", "expected Hello", "got Eager"];
    refused("eager-first", &eager_frame(1, b"data before hello"), &needles);
}

/// The listener lives only until the group is connected: a late knock is refused by the
/// kernel, not queued for a handshake nobody will run.
#[test]
fn rogue_connect_after_set_up_is_refused() {
    let _g = serial();
    let job = "late-knock";
    let until = deadline(60);
    let (listeners, at) = bind(job, 2, 2);
    let comms = Siege::new(listeners, until).connected();
    let e = std::net::TcpStream::connect_timeout(&at[0], Duration::from_secs(10))
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
    let (listeners, at) = bind(job, 2, 2);
    let hello = hello_frame(job, Rank(0), Rank(1), 2, true, nonce());
    repel(Siege::new(listeners, deadline(60)), &[1], at[1], |addr, until| {
        knock(addr, &hello, until)
    });
    assert_rejected(&["protocol error from rank 0", "wrong direction"]);
}
