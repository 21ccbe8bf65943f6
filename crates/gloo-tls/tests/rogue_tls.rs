//! Rogue peers against a TLS job (issue 10 §2).
//!
//! While connecting: a rogue (a real TLS client with some certificate, checking nothing about
//! the victim) knocks on a victim rank that is inside `connect_all`. The victim must refuse
//! it, log the typed error (`Auth` or `Protocol`, naming the rank it claimed when it got that
//! far, and the certificate's identity), close its connection, and connect and exchange with
//! every legitimate rank (the shape of `gloo_testing::rogue::repel`).
//!
//! After connecting: an insider holding rank 3's valid certificate joins a group of 4, then
//! writes TLS records to rank 0 (the victim) that no correct peer writes, forged with its own
//! session's keys. The victim's receive from rank 3 must fail with a typed error naming rank
//! 3 within its deadline, and ranks 1 and 2 keep exchanging.
//!
//! The cases that assert on logs run one at a time.

use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use gloo_testing::deadline;
use gloo_testing::rogue::{
    Closed, Rogue, Siege, all_exchange, assert_rejected, bind_group, capture_logs, clear_logs,
    connect_threads, eager_frame, exchange_with, hello_frame, knock, logs, repel,
};
use gloo_testing::tls::{
    APPLICATION_DATA, HANDSHAKE, Pki, TlsRogue, expired, not_yet_valid, valid,
};
use gloo_tls::Identity;
use gloo_tls::mint::Minted;
use gloo_transport::proto::{HandshakeConfig, fresh_nonce, job_hash};
use gloo_transport::tcp::{TcpComm, TcpConfig, TcpListener};
use gloo_transport::{Communicator, Error, Rank, Slot};

const JOB: &str = "rogue-tls";
static SERIAL: Mutex<()> = Mutex::new(());

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::new(JOB, 4))
}

/// Serialise the cases and start each with an empty log.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    capture_logs();
    let g = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    clear_logs();
    g
}

/// Rank `r` of `size` with TLS; `peer_timeout` also bounds each handshake.
fn cfg(r: u32, size: u32, peer_timeout: Duration) -> TcpConfig {
    let layer = pki().rank(r).layer(JOB, Rank(r)).expect("rank r's certificate");
    TcpConfig::loopback(JOB, Rank(r), size).stream_layer(layer).peer_timeout(peer_timeout)
}

/// The transport handshake's settings for a rogue playing `me` in a group of `size`.
fn hs(me: u32, size: u32) -> HandshakeConfig {
    HandshakeConfig { job: job_hash(JOB), me: Rank(me), size, token: None }
}

/// Ranks 0..3 with TLS; rank 0, the victim, starts connecting alone, `attack` runs against
/// it, it must close the rogue's connection, then ranks 1 and 2 join and everybody connects
/// and exchanges. Last, the victim must have logged a rejection containing `needles`.
/// Returns the serialising guard, so the caller can look at the logs further.
fn refused_after(
    attack: impl FnOnce(SocketAddr, Instant) -> Rogue,
    needles: &[&str],
) -> std::sync::MutexGuard<'static, ()> {
    let g = serial();
    let (listeners, addrs) =
        bind_group(3, |r| TcpListener::bind(cfg(r, 3, Duration::from_secs(60))).expect("bind"));
    let at = listeners[0].local_addr();
    repel(Siege::with_addrs(listeners, addrs, deadline(60)), &[0], at, attack);
    assert_rejected(needles);
    g
}

/// A rogue presenting `m` that claims to be `claim` in its `Hello` to rank 0 of a group of
/// 3: its TLS or transport handshake must fail.
fn tls_knock(addr: SocketAddr, m: &Minted, claim: u32, until: Instant) -> Rogue {
    let mut r = TlsRogue::connect(addr, m, until).expect("connect");
    let raw = r.raw();
    let outcome = r.handshake(hs(claim, 3), Rank(0));
    assert!(outcome.is_err(), "the victim completed a handshake with a rogue");
    Rogue::from_stream(raw).expect("a rogue over the same socket")
}

#[test]
fn a_certificate_from_a_foreign_ca_is_refused() {
    let foreign = Pki::new("somewhere-else", 1);
    let m = foreign.ca().issue(&Identity::rank(JOB, Rank(2)), valid()).unwrap();
    let _g = refused_after(
        |addr, until| tls_knock(addr, &m, 2, until),
        &["authentication failed", "invalid peer certificate: UnknownIssuer"],
    );
    // The refusal names the identity the certificate presents.
    assert!(
        gloo_testing::rogue::logged(&["refused a TLS certificate", "gloo://rogue-tls/rank/2"]),
        "{}",
        logs()
    );
}

#[test]
fn a_valid_certificate_of_another_rank_cannot_claim_this_one() {
    // Rank 1's own certificate, and a Hello that claims rank 2.
    let m = pki().ca().rank(Rank(1), valid()).unwrap();
    let _g = refused_after(
        |addr, until| tls_knock(addr, &m, 2, until),
        &["authentication failed for rank 2", "certificate is rank 1's"],
    );
}

#[test]
fn a_certificate_for_another_job_is_refused() {
    let m = pki().ca().issue(&Identity::rank("another-job", Rank(2)), valid()).unwrap();
    let _g = refused_after(
        |addr, until| tls_knock(addr, &m, 2, until),
        &["authentication failed", "of another job"],
    );
}

#[test]
fn an_expired_certificate_is_refused() {
    let m = pki().ca().issue(&Identity::rank(JOB, Rank(2)), expired()).unwrap();
    let _g = refused_after(
        |addr, until| tls_knock(addr, &m, 2, until),
        &["authentication failed", "certificate expired"],
    );
}

#[test]
fn a_certificate_not_valid_yet_is_refused() {
    let m = pki().ca().issue(&Identity::rank(JOB, Rank(2)), not_yet_valid()).unwrap();
    let _g = refused_after(
        |addr, until| tls_knock(addr, &m, 2, until),
        &["authentication failed", "certificate not valid yet"],
    );
}

#[test]
fn a_store_certificate_cannot_be_a_rank() {
    let m = pki().ca().store(valid()).unwrap();
    let _g = refused_after(
        |addr, until| tls_knock(addr, &m, 2, until),
        &["authentication failed", "gloo://rogue-tls/store, not a rank"],
    );
}

#[test]
fn a_plaintext_client_is_refused_by_a_tls_listener() {
    let hello = hello_frame(JOB, Rank(2), Rank(0), 3, false, fresh_nonce().unwrap());
    let _g = refused_after(
        |addr, until| knock(addr, &hello, until),
        &["protocol error from an unidentified peer", "does not speak TLS"],
    );
}

#[test]
fn a_replayed_captured_handshake_is_refused() {
    // Capture: a legitimate rank 2 (its own certificate) completes TLS and the transport's
    // Hello with a decoy rank 0 of the same job; what it wrote is what an eavesdropper saw.
    let until = deadline(60);
    let decoy = TcpListener::bind(cfg(0, 3, Duration::from_secs(60))).expect("bind");
    let decoy_addr = decoy.local_addr();
    // Rank 0 dials nobody in a full mesh: the other addresses are never used.
    let decoy_addrs = vec![decoy.address_bytes(); 3];
    let short = Instant::now() + Duration::from_secs(3);
    let decoy = std::thread::spawn(move || decoy.connect_all(&decoy_addrs, short).map(|_| ()));
    let m = pki().ca().rank(Rank(2), valid()).unwrap();
    let mut recorder = TlsRogue::connect(decoy_addr, &m, until).unwrap();
    recorder.handshake(hs(2, 3), Rank(0)).expect("the recorded handshake succeeds");
    let captured = recorder.written().to_vec();
    drop(recorder);
    let _ = decoy.join();
    // Replay it, blind, to the victim.
    let _g = refused_after(
        |addr, until| knock(addr, &captured, until),
        &["rejected a connection", "TLS handshake failed"],
    );
}

/// A rogue that sends a real ClientHello and then nothing, while the group connects: nobody
/// waits for it, and the victim closes it once the handshake timeout passes.
#[test]
fn a_client_that_stalls_after_its_client_hello_delays_nobody() {
    let _g = serial();
    let until = deadline(60);
    // A short peer timeout (2 s) bounds each handshake; the group connects lazily so that the
    // victim's listener (and the stalled handshake) outlive the set-up.
    let (listeners, addrs) =
        bind_group(2, |r| TcpListener::bind(cfg(r, 2, Duration::from_secs(2))).expect("bind"));
    let victim_addr = listeners[0].local_addr();
    let comms: Vec<TcpComm> = listeners
        .into_iter()
        .map(|l| l.connect_lazy(&addrs, until).expect("connect_lazy"))
        .collect();
    let m = pki().ca().rank(Rank(1), valid()).unwrap();
    let stalled: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut r = TlsRogue::connect(victim_addr, &m, until).unwrap();
            r.client_hello_only().expect("sending a ClientHello");
            r.raw()
        })
        .collect();
    // The real rank 1 dials the victim meanwhile and they exchange at once.
    all_exchange(&comms, until);
    for (i, s) in stalled.into_iter().enumerate() {
        let mut r = Rogue::from_stream(s).unwrap();
        assert_eq!(r.wait_closed(deadline(30)), Closed::Yes, "stalled client {i} kept; {}", logs());
    }
    // And the pair still works after the victim dropped them.
    all_exchange(&comms, until);
}

/// A group of 4 over TLS in which rank 3 is played by a rogue holding rank 3's valid
/// certificate; the victim (rank 0) has peer timeout `victim_timeout`.
struct Insider {
    comms: Vec<TcpComm>,
    /// The rogue's sessions with ranks 0, 1 and 2.
    rogue: Vec<TlsRogue>,
    until: Instant,
}

const ROGUE: Rank = Rank(3);

fn insider(victim_timeout: Duration) -> Insider {
    let until = deadline(60);
    let cfg4 = |r: u32| {
        let t = if r == 0 { victim_timeout } else { Duration::from_secs(120) };
        cfg(r, 4, t)
    };
    let (mut listeners, addrs) = bind_group(4, |r| TcpListener::bind(cfg4(r)).expect("bind"));
    drop(listeners.pop());
    let sock: Vec<SocketAddr> = listeners.iter().map(TcpListener::local_addr).collect();
    let handles = connect_threads(listeners, &addrs, until);
    let m = pki().ca().rank(ROGUE, valid()).unwrap();
    let rogue = sock
        .iter()
        .enumerate()
        .map(|(r, a)| {
            let mut c = TlsRogue::connect(*a, &m, until).expect("connect");
            c.handshake(hs(3, 4), Rank(r as u32)).expect("the insider's handshake");
            c
        })
        .collect();
    let comms = handles
        .into_iter()
        .map(|h| h.join().expect("connect thread").expect("connect_all with the insider"))
        .collect();
    Insider { comms, rogue, until }
}

impl Insider {
    /// The victim receives up to `cap` bytes from the rogue on slot 1 while `attack` runs
    /// with the rogue's session to the victim; returns the receive's outcome.
    fn victim_recv(
        &mut self,
        cap: usize,
        attack: impl FnOnce(TlsRogue) -> Option<TlsRogue>,
    ) -> (gloo_transport::Result<usize>, Vec<u8>) {
        let until = self.until;
        let victim = &self.comms[0];
        let session = self.rogue.remove(0);
        std::thread::scope(|s| {
            let t = s.spawn(move || {
                let mut buf = vec![0u8; cap];
                let r = victim.recv(ROGUE, Slot(1), &mut buf, until);
                (r, buf)
            });
            let kept = attack(session);
            let out = t.join().expect("victim thread");
            if let Some(k) = kept {
                self.rogue.insert(0, k);
            }
            out
        })
    }

    /// Ranks 1 and 2 still exchange with each other, and the victim with both.
    fn assert_others_work(&self) {
        let until = self.until;
        std::thread::scope(|s| {
            for c in &self.comms {
                s.spawn(move || {
                    let others: Vec<Rank> = (0..3).map(Rank).filter(|r| *r != c.rank()).collect();
                    exchange_with(c, &others, 7, 50_000, until)
                        .unwrap_or_else(|e| panic!("rank {} after the attack: {e}", c.rank()));
                });
            }
        });
    }
}

/// The first 100 bytes of an eager message announced as 1000 bytes long, on slot 1.
fn part_of_a_message() -> Vec<u8> {
    let full = eager_frame(1, &[7u8; 1000]);
    full[..full.len() - 900].to_vec()
}

#[track_caller]
fn assert_protocol_error_from_the_rogue(r: &gloo_transport::Result<usize>, says: &str) {
    match r {
        Err(Error::Protocol { peer: Some(ROGUE), detail }) => {
            assert!(detail.contains(says), "{detail}");
        }
        other => panic!("expected a protocol error from rank 3 ({says}), got {other:?}"),
    }
}

#[test]
fn garbage_records_after_the_handshake_are_a_protocol_error_of_that_peer() {
    let mut g = insider(Duration::from_secs(60));
    let (r, _) = g.victim_recv(1000, |s| {
        let mut f = s.into_forger();
        // A record header and a body of noise: it cannot decrypt.
        let mut junk = vec![APPLICATION_DATA, 3, 3, 0, 200];
        junk.extend((0..200u32).map(|i| (i * 37) as u8));
        f.send_raw(&junk).unwrap();
        None
    });
    assert_protocol_error_from_the_rogue(&r, "TLS session broken by the peer");
    g.assert_others_work();
}

#[test]
fn a_truncated_record_then_a_close_is_a_lost_peer() {
    let mut g = insider(Duration::from_secs(60));
    let (r, _) = g.victim_recv(1000, |s| {
        let mut f = s.into_forger();
        let rec = f.record(APPLICATION_DATA, &part_of_a_message());
        f.send_raw(&rec[..rec.len() / 2]).unwrap();
        f.socket().shutdown(std::net::Shutdown::Both).unwrap();
        None
    });
    match r {
        Err(Error::PeerLost { peer: ROGUE, reason }) => {
            assert!(reason.contains("in the middle of a TLS record"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_truncated_record_then_silence_is_a_lost_peer_at_the_timeout() {
    let mut g = insider(Duration::from_millis(1500));
    let (r, _) = g.victim_recv(1000, |s| {
        let mut f = s.into_forger();
        let rec = f.record(APPLICATION_DATA, &part_of_a_message());
        f.send_raw(&rec[..rec.len() / 2]).unwrap();
        // Keep the socket open (and silent) until the victim gives up on it.
        let mut r = Rogue::from_stream(f.socket().try_clone().unwrap()).unwrap();
        assert_eq!(r.wait_closed(deadline(30)), Closed::Yes);
        None
    });
    assert!(matches!(r, Err(Error::PeerLost { peer: ROGUE, .. })), "{r:?}");
}

#[test]
fn a_close_notify_in_the_middle_of_a_message_is_a_lost_peer() {
    let mut g = insider(Duration::from_secs(60));
    let (r, _) = g.victim_recv(1000, |mut s| {
        s.send(&part_of_a_message()).unwrap();
        s.close_notify().unwrap();
        Some(s)
    });
    assert!(matches!(r, Err(Error::PeerLost { peer: ROGUE, .. })), "{r:?}");
}

#[test]
fn a_renegotiation_attempt_is_a_protocol_error_of_that_peer() {
    let mut g = insider(Duration::from_secs(60));
    let (r, _) = g.victim_recv(1000, |mut s| {
        s.send(&part_of_a_message()).unwrap();
        let mut f = s.into_forger();
        // A new ClientHello (handshake message type 1) inside the session: TLS 1.3 has no
        // renegotiation, so no correct peer sends one.
        let body = [3u8, 3, 0, 0, 0, 0];
        let mut msg = vec![1u8, 0, 0, body.len() as u8];
        msg.extend_from_slice(&body);
        f.send_record(HANDSHAKE, &msg).unwrap();
        None
    });
    assert_protocol_error_from_the_rogue(&r, "TLS session broken by the peer");
    g.assert_others_work();
}

#[test]
fn a_key_update_in_the_middle_of_a_message_is_fine() {
    // Not an attack: TLS 1.3 peers may change keys whenever they like. The message arrives
    // whole.
    let mut g = insider(Duration::from_secs(60));
    let full = eager_frame(1, &[9u8; 1000]);
    let (r, buf) = g.victim_recv(1000, |mut s| {
        s.send(&full[..200]).unwrap();
        s.key_update().unwrap();
        s.send(&full[200..]).unwrap();
        Some(s)
    });
    assert_eq!(r.expect("the message after a key update"), 1000);
    assert!(buf.iter().all(|b| *b == 9));
    g.assert_others_work();
}

/// One rank with TLS and one without, in both directions (the TLS rank listening, and the
/// TLS rank dialling): neither connects. The dialler (rank 1) learns at once from the first
/// bytes it gets back (a TLS alert, or a plaintext `Hello`) and fails with a typed error
/// naming rank 0 and saying why, long before its deadline; the listener, which never learns
/// who knocked, fails at its own deadline naming the rank that did not connect.
#[test]
fn a_tls_rank_and_a_plaintext_rank_both_fail_naming_each_other() {
    for tls_listens in [true, false] {
        let plain = |r: u32| TcpConfig::loopback(JOB, Rank(r), 2);
        let with_tls = |r: u32| cfg(r, 2, Duration::from_secs(60));
        let (c0, c1) = if tls_listens { (with_tls(0), plain(1)) } else { (plain(0), with_tls(1)) };
        let l0 = TcpListener::bind(c0).unwrap();
        let l1 = TcpListener::bind(c1).unwrap();
        let addrs = vec![l0.address_bytes(), l1.address_bytes()];
        let a2 = addrs.clone();
        let t0 = std::thread::spawn(move || l0.connect_all(&a2, deadline(3)).map(|_| ()));
        // Far beyond the listener's: reaching it would mean the dialler kept retrying.
        let e1 = l1.connect_all(&addrs, deadline(120)).map(|_| ()).unwrap_err();
        let e0 = t0.join().unwrap().unwrap_err();
        assert_eq!(e0.peer(), Some(Rank(1)), "tls listens: {tls_listens}: {e0}");
        assert!(matches!(e1, Error::Auth { peer: Some(Rank(0)), .. }), "{tls_listens}: {e1}");
        let why = if tls_listens { "the peer speaks TLS" } else { "does not speak TLS" };
        assert!(e1.to_string().contains(why), "tls listens: {tls_listens}: {e1}");
    }
}
