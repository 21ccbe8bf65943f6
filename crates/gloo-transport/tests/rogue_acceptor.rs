//! A rogue in the place of a lower rank, which the victim dials (higher ranks dial lower ones):
//! a raw listener on the address the victim was given for rank 0.
//!
//! What "a typed error for that peer" means here: a peer that fails authentication ends
//! `connect_all` at once with `Error::Auth { peer: Some(Rank(0)) }` (no retry can fix a
//! wrong key); a peer that answers garbage or nothing is retried with back-off, and at the
//! deadline `connect_all` fails with a timeout naming rank 0 and the last reason it was
//! refused. Either way the victim returns within its deadline.
#![cfg(feature = "tcp")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gloo_testing::deadline;
use gloo_testing::rogue::{Rogue, auth_frame, connect_threads, hello_frame, recorded_handshake};
use gloo_transport::proto::{HEADER_LEN, HELLO_LEN, LABEL_ACCEPTOR, fresh_nonce, transcript_mac};
use gloo_transport::tcp::{Security, TcpConfig, TcpListener};
use gloo_transport::{Error, Rank};

const TOKEN: &[u8] = b"rogue-acceptor-token";

fn cfg(job: &str, rank: u32) -> TcpConfig {
    TcpConfig::loopback(job, Rank(rank), 2)
        .security(Security::Token(TOKEN.to_vec()))
        .peer_timeout(Duration::from_secs(1))
}

/// Rank 1 (the victim) connects with `until` as its deadline; rank 0's address is served by
/// `serve`, called for every connection the victim makes, until the victim returns.
fn acceptor_case(
    job: &str,
    until: Instant,
    mut serve: impl FnMut(Rogue, Instant) + Send,
) -> gloo_transport::Result<()> {
    // Take a free port the way rank 0 would, then listen on it ourselves.
    let real0 = TcpListener::bind(cfg(job, 0)).expect("bind");
    let addr: SocketAddr = real0.local_addr();
    let victim = TcpListener::bind(cfg(job, 1)).expect("bind");
    let addrs = vec![real0.address_bytes(), victim.address_bytes()];
    drop(real0);
    let rogue = std::net::TcpListener::bind(addr).expect("listen on rank 0's address");
    rogue.set_nonblocking(true).expect("non-blocking accept");
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = connect_threads(vec![victim], &addrs, until).pop().expect("one thread");
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) && Instant::now() < until + Duration::from_secs(5) {
                match rogue.accept() {
                    Ok((stream, _)) => serve(Rogue::from_stream(stream).expect("accepted"), until),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let r = h.join().expect("victim thread").map(drop);
        done.store(true, Ordering::Relaxed);
        r
    })
}

fn read_victim_hello(r: &mut Rogue, until: Instant) -> Option<Vec<u8>> {
    r.read_bytes(HEADER_LEN + HELLO_LEN as usize, until).ok()
}

#[test]
fn rogue_acceptor_with_a_bad_mac() {
    let job = "acceptor-mac";
    let until = deadline(30);
    let r = acceptor_case(job, until, |mut r, until| {
        let Some(theirs) = read_victim_hello(&mut r, until) else { return };
        let mine = hello_frame(job, Rank(0), Rank(1), 2, true, fresh_nonce().expect("nonce"));
        let mac = transcript_mac(b"wrong", LABEL_ACCEPTOR, &theirs, &mine);
        let mut reply = mine;
        reply.extend_from_slice(&auth_frame(&mac));
        let _ = r.send(&reply);
        let _ = r.wait_closed(until);
    });
    match r {
        Err(Error::Auth { peer: Some(Rank(0)), .. }) => {}
        other => panic!("expected an authentication error naming rank 0, got {other:?}"),
    }
}

/// The acceptor's half of an earlier, genuine handshake (right token, right job), replayed:
/// its MAC covers another connector nonce.
#[test]
fn rogue_acceptor_replays_a_recorded_answer() {
    let job = "acceptor-replay";
    let until = deadline(30);
    let rec = recorded_handshake(job, Some(TOKEN), Rank(1), Rank(0), 2);
    let r = acceptor_case(job, until, |mut r, until| {
        if read_victim_hello(&mut r, until).is_none() {
            return;
        }
        let _ = r.send(&rec.acceptor_reply);
        let _ = r.wait_closed(until);
    });
    match r {
        Err(Error::Auth { peer: Some(Rank(0)), .. }) => {}
        other => panic!("expected an authentication error naming rank 0, got {other:?}"),
    }
}

#[test]
fn rogue_acceptor_answers_garbage() {
    let job = "acceptor-garbage";
    let until = Instant::now() + Duration::from_secs(4);
    let r = acceptor_case(job, until, |mut r, until| {
        let _ = read_victim_hello(&mut r, until);
        let _ = r.send(&[0x5A; 300]);
        let _ = r.wait_closed(until);
    });
    match r {
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::TimedOut) => {
            assert_eq!(e.peer(), Some(Rank(0)), "{e}");
            let chain = gloo_testing::errors::chain_printed_once(&e).join(": ");
            assert!(chain.contains("bad frame magic"), "{chain}");
        }
        other => panic!("expected a timeout naming rank 0, got {other:?}"),
    }
}

/// Accepts and never says a word (a black hole): every attempt ends at the handshake
/// timeout, and `connect_all` at its deadline, naming rank 0.
#[test]
fn rogue_acceptor_never_answers() {
    let job = "acceptor-silent";
    let until = Instant::now() + Duration::from_secs(4);
    let mut held = Vec::new();
    let r = acceptor_case(job, until, |r, _| held.push(r));
    match r {
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::TimedOut) => {
            assert_eq!(e.peer(), Some(Rank(0)), "{e}");
        }
        other => panic!("expected a timeout naming rank 0, got {other:?}"),
    }
}
