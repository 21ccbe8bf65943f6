//! Full-mesh set-up under abuse: a connection its dialler abandoned is never reported
//! connected, and a flood of idle connections to a rank's listener is held to a bounded
//! number of handshakes while the real ranks still connect.
#![cfg(feature = "tcp")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gloo_testing::deadline;
use gloo_testing::rogue::{Siege, all_exchange, fd_count, hello_frame};
use gloo_transport::proto::{HEADER_LEN, HELLO_LEN, fresh_nonce};
use gloo_transport::tcp::{TcpConfig, TcpListener};
use gloo_transport::{Error, Rank};

/// The cap on handshakes under way that the transport documents (`MAX_INCOMING`), plus room
/// for the listener, the poll, the real ranks' sockets and the test's own threads.
const CAP_WITH_SLACK: usize = 64 + 24;

fn listeners(job: &str, n: u32) -> Vec<TcpListener> {
    (0..n)
        .map(|r| {
            let cfg = TcpConfig::loopback(job, Rank(r), n).peer_timeout(Duration::from_secs(2));
            TcpListener::bind(cfg).expect("bind on loopback")
        })
        .collect()
}

/// Rank 1's first connection sends its `Hello`, reads rank 0's answer, and hangs up before
/// its last frame (as a dialler whose handshake timed out does). Rank 0 must not count that
/// connection as rank 1's: with the real rank 1 absent it fails at its deadline naming
/// rank 1, and with the real rank 1 dialling afterwards both connect and exchange.
#[test]
fn an_abandoned_connection_is_never_reported_connected() {
    for real_rank_comes in [false, true] {
        let job = format!("abandoned-{real_rank_comes}");
        let mut ls = listeners(&job, 2);
        let victim_addr = ls[0].local_addr();
        let addrs: Vec<Vec<u8>> = ls.iter().map(TcpListener::address_bytes).collect();
        let rank1 = ls.pop().expect("two listeners");
        let until = if real_rank_comes { deadline(30) } else { deadline(3) };
        let rank1_addrs = addrs.clone();
        let mut siege = Siege::with_addrs(ls, addrs, until);
        siege.start(&[0]);

        let mut s = TcpStream::connect(victim_addr).expect("connect to rank 0");
        let nonce = fresh_nonce().expect("random nonce");
        s.write_all(&hello_frame(&job, Rank(1), Rank(0), 2, false, nonce)).expect("send Hello");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        let mut answer = vec![0u8; HEADER_LEN + HELLO_LEN as usize];
        s.read_exact(&mut answer).expect("rank 0 answers the Hello");
        drop(s);

        if real_rank_comes {
            let h = std::thread::spawn(move || rank1.connect_all(&rank1_addrs, deadline(30)));
            let c0 = siege.connected().pop().expect("rank 0's communicator");
            let c1 = h.join().expect("rank 1's thread").expect("rank 1 connects");
            all_exchange(&[c0, c1], deadline(30));
        } else {
            match siege.join().pop().expect("rank 0's result") {
                Err(e @ Error::Io { peer: Some(Rank(1)), .. }) => {
                    assert!(e.to_string().contains("rank 1"), "{e}")
                }
                Ok(_) => panic!("rank 0 reported a connection rank 1 had abandoned"),
                Err(e) => panic!("expected a timeout naming rank 1, got {e}"),
            }
        }
    }
}

/// 600 idle connections to rank 0's listener while the group connects: rank 0 holds at most
/// its cap of handshakes (not one descriptor per flooding connection), and both real ranks
/// connect and exchange.
#[test]
fn a_connection_flood_is_capped_and_the_real_ranks_still_connect() {
    const FLOOD: usize = 600;
    let ls = listeners("flood", 2);
    let victim_addr = ls[0].local_addr();
    let before = fd_count();
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|i| TcpStream::connect(victim_addr).unwrap_or_else(|e| panic!("flood {i}: {e}")))
        .collect();
    let with_flood = fd_count();

    // Watch this process's descriptors while rank 0 works through the flood.
    let done = AtomicBool::new(false);
    let peak = AtomicUsize::new(0);
    let comms = std::thread::scope(|s| {
        s.spawn(|| {
            let until = deadline(60);
            while !done.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                peak.fetch_max(fd_count(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let mut siege = Siege::new(ls, deadline(60));
        siege.start(&[0]);
        // Let rank 0 meet the flood before rank 1 dials.
        std::thread::sleep(Duration::from_millis(200));
        let comms = siege.connected();
        done.store(true, Ordering::Relaxed);
        comms
    });
    all_exchange(&comms, deadline(30));
    let held = peak.load(Ordering::Relaxed).saturating_sub(with_flood);
    assert!(
        held <= CAP_WITH_SLACK,
        "rank 0 held {held} more descriptors than the flood's own {} (baseline {before}); the \
         cap is 64 handshakes",
        with_flood - before
    );
    drop(flood);
}

/// A published address whose owner fails every handshake (here: closes at once) is redialled
/// with growing back-off, not every few milliseconds: over 3 s, a handful of dials (the old
/// code made over 500).
#[test]
fn a_peer_that_fails_its_handshakes_is_redialled_with_back_off() {
    let forged = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the forged peer");
    let forged_addr = forged.local_addr().expect("its address");
    forged.set_nonblocking(true).expect("non-blocking");
    let mut ls = listeners("back-off", 2);
    let rank1 = ls.pop().expect("two listeners");
    // Rank 0's published address is the forged listener's.
    let addrs = vec![addr_bytes(forged_addr), rank1.address_bytes()];
    let dials = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            let until = deadline(30);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                match forged.accept() {
                    Ok((c, _)) => {
                        dials.fetch_add(1, Ordering::Relaxed);
                        drop(c);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        let r = rank1.connect_all(&addrs, deadline(3));
        stop.store(true, Ordering::Relaxed);
        r
    });
    let n = dials.load(Ordering::Relaxed);
    assert!(result.is_err(), "rank 1 connected to a peer that fails every handshake");
    assert!((1..=40).contains(&n), "rank 1 dialled the failing peer {n} times in 3 s");
}

/// The address bytes a listener bound at `addr` would publish, in the encoding
/// `TcpListener::address_bytes` documents: "GTCP", version 1, family 4, port (LE), octets.
fn addr_bytes(addr: std::net::SocketAddr) -> Vec<u8> {
    let std::net::SocketAddr::V4(v4) = addr else { panic!("loopback IPv4 expected") };
    let mut b = b"GTCP".to_vec();
    b.extend_from_slice(&[1, 4]);
    b.extend_from_slice(&v4.port().to_le_bytes());
    b.extend_from_slice(&v4.ip().octets());
    b
}
