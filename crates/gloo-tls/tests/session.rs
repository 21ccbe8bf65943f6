//! The TLS session on its own: two ends over a loopback connection, blocking (the store
//! client's way) and non-blocking (the transport's and the store server's way), with the
//! store's rule (any identity of the job on either side).

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use gloo_testing::conformance::pattern;
use gloo_testing::deadline;
use gloo_testing::tls::{Pki, expired, not_yet_valid, reckless_client, valid};
use gloo_tls::mint::Minted;
use gloo_tls::{Identity, TlsConfig, TlsStream};
use gloo_transport::Rank;

/// A connected pair of blocking loopback sockets with a read timeout, so no test waits for
/// ever.
fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    for x in [&c, &s] {
        x.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        x.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        x.set_nodelay(true).unwrap();
    }
    (c, s)
}

/// Client `client` and server `server` over a fresh pair, blocking.
fn sessions(
    client: &TlsConfig,
    server: &TlsConfig,
) -> (TlsStream<TcpStream>, TlsStream<TcpStream>) {
    let (c, s) = pair();
    (client.store_connector().connect(c).unwrap(), server.store_acceptor().accept(s).unwrap())
}

/// [`sessions`], with the handshake done (a round trip on two threads), so that each end can
/// then be used alone.
fn open_sessions(
    client: &TlsConfig,
    server: &TlsConfig,
) -> (TlsStream<TcpStream>, TlsStream<TcpStream>) {
    let (mut c, mut s) = sessions(client, server);
    std::thread::scope(|sc| {
        let t = sc.spawn(|| {
            assert_eq!(read_exact(&mut s, 1).unwrap(), b"?");
            s.write_all(b"!").unwrap();
        });
        c.write_all(b"?").unwrap();
        assert_eq!(read_exact(&mut c, 1).unwrap(), b"!");
        t.join().unwrap();
    });
    (c, s)
}

fn read_exact(s: &mut TlsStream<TcpStream>, n: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    Read::read_exact(s, &mut out)?;
    Ok(out)
}

#[test]
fn blocking_sessions_carry_data_both_ways_and_learn_who_is_at_the_other_end() {
    let pki = Pki::new("session", 2);
    let (mut c, mut s) = sessions(&pki.rank(1), &pki.store());
    let up = pattern(1 << 20, 1);
    let down = pattern(3 << 20, 2);
    std::thread::scope(|sc| {
        let (up2, down2) = (&up, &down);
        let server = sc.spawn(move || {
            let got = read_exact(&mut s, up2.len()).unwrap();
            assert!(got == *up2, "the server received other bytes than were sent");
            s.write_all(down2).unwrap();
            s.flush().unwrap();
            assert_eq!(s.peer_identity(), Some(&Identity::rank("session", Rank(1))));
            s
        });
        c.write_all(up2).unwrap();
        c.flush().unwrap();
        let got = read_exact(&mut c, down2.len()).unwrap();
        assert!(got == *down2, "the client received other bytes than were sent");
        assert_eq!(c.peer_identity(), Some(&Identity::store("session")));
        assert!(c.is_open());
        server.join().unwrap();
    });
}

/// Drive two non-blocking sessions over mio sockets by hand until `a` has sent `a_out` and
/// received `b_out`, and `b` the reverse; writes go in pieces of many sizes (from 1 byte to
/// several records) through `write_vectored` with two slices each.
fn pump_both(
    a: &mut TlsStream<mio::net::TcpStream>,
    b: &mut TlsStream<mio::net::TcpStream>,
    a_out: &[u8],
    b_out: &[u8],
    until: Instant,
) {
    let sizes = [1usize, 31, 32 + 1, 4096, 16384, 16385, 70_000, 300_000, 7];
    let (mut a_sent, mut b_sent) = (0, 0);
    let (mut a_in, mut b_in) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 1 << 20];
    let mut turn = 0usize;
    while a_in.len() < b_out.len() || b_in.len() < a_out.len() || a_sent < a_out.len() {
        assert!(Instant::now() < until, "the sessions made no progress in time");
        turn += 1;
        for (s, out, sent) in [(&mut *a, a_out, &mut a_sent), (&mut *b, b_out, &mut b_sent)] {
            if *sent < out.len() {
                let n = sizes[turn % sizes.len()].min(out.len() - *sent);
                let split = n / 3;
                let bufs = [
                    IoSlice::new(&out[*sent..*sent + split]),
                    IoSlice::new(&out[*sent + split..*sent + n]),
                ];
                match s.write_vectored(&bufs) {
                    Ok(k) => *sent += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write failed: {e}"),
                }
            } else if s.has_pending_output() {
                match s.flush_pending() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("flush failed: {e}"),
                }
            }
        }
        for (s, inb) in [(&mut *a, &mut a_in), (&mut *b, &mut b_in)] {
            // Reads of odd sizes too, so that records are split across reads.
            let want = [1usize, 100, 65536, 1 << 20][turn % 4];
            match s.read(&mut buf[..want]) {
                Ok(0) => panic!("unexpected end of stream"),
                Ok(n) => inb.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        if turn.is_multiple_of(64) {
            std::thread::yield_now();
        }
    }
    assert!(a_in == b_out, "a received other bytes than b sent");
    assert!(b_in == a_out, "b received other bytes than a sent");
}

fn mio_pair() -> (mio::net::TcpStream, mio::net::TcpStream) {
    let (c, s) = pair();
    c.set_nonblocking(true).unwrap();
    s.set_nonblocking(true).unwrap();
    (mio::net::TcpStream::from_std(c), mio::net::TcpStream::from_std(s))
}

#[test]
fn non_blocking_sessions_move_megabytes_both_ways_intact() {
    let pki = Pki::new("bulk", 2);
    let (c, s) = mio_pair();
    let mut c = pki.rank(0).store_connector().connect(c).unwrap();
    let mut s = pki.rank(1).store_acceptor().accept(s).unwrap();
    let a_out = pattern(24 << 20, 3);
    let b_out = pattern(9 << 20, 4);
    pump_both(&mut c, &mut s, &a_out, &b_out, deadline(120));
    assert_eq!(s.peer_identity(), Some(&Identity::rank("bulk", Rank(0))));
}

/// A reckless client (it checks nothing about the server) presenting `m` to a server with
/// `server`: the server must refuse it, with an error containing `server_says`, and the
/// client must learn it was refused.
#[track_caller]
fn assert_refusal(m: &Minted, server: &TlsConfig, server_says: &str) {
    let (c, s) = pair();
    let mut s = server.store_acceptor().accept(s).unwrap();
    let mut c = reckless_client(m, c);
    std::thread::scope(|sc| {
        let server = sc.spawn(move || {
            s.read(&mut [0u8; 16]).expect_err("the server accepted a certificate it must refuse")
        });
        // The client finishes its side before the server judges it; the refusal comes as
        // the server's alert at its next read.
        let _ = c.write_all(b"hello");
        let ce = match c.read(&mut [0u8; 16]) {
            Ok(n) => panic!("the client read {n} bytes from a server that must refuse it"),
            Err(e) => e,
        };
        assert!(ce.to_string().contains("received fatal alert"), "client: {ce}");
        let se = server.join().unwrap();
        assert_eq!(se.kind(), io::ErrorKind::PermissionDenied, "server: {se}");
        assert!(se.to_string().contains(server_says), "server: {se}");
    });
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let pki = Pki::new("ca", 2);
    let id = Identity::rank("ca", Rank(1));
    // Another CA of the same name (the signature does not verify) and of another name (no
    // issuer known).
    let namesake = Pki::new("ca", 1).ca().issue(&id, valid()).unwrap();
    assert_refusal(&namesake, &pki.rank(0), "BadSignature");
    let stranger = Pki::new("elsewhere", 1).ca().issue(&id, valid()).unwrap();
    assert_refusal(&stranger, &pki.rank(0), "UnknownIssuer");
}

#[test]
fn a_certificate_for_another_job_is_refused() {
    let pki = Pki::new("job-a", 2);
    let m = pki.ca().issue(&Identity::rank("job-b", Rank(1)), valid()).unwrap();
    assert_refusal(&m, &pki.rank(0), "of another job");
}

#[test]
fn a_certificate_naming_no_identity_or_two_is_refused() {
    let pki = Pki::new("names", 2);
    // A certificate from the right CA whose name is not canonical.
    let odd = Identity::rank("names", Rank(1)).uri().replace("rank/1", "rank/01");
    let m = pki.ca().issue_uris(&[&odd], valid()).unwrap();
    assert_refusal(&m, &pki.rank(0), "not a canonical gloo:// identity");
    let two = [Identity::rank("names", Rank(1)).uri(), Identity::rank("names", Rank(0)).uri()];
    let m = pki.ca().issue_uris(&[&two[0], &two[1]], valid()).unwrap();
    assert_refusal(&m, &pki.rank(0), "names two identities");
    let m = pki.ca().issue_uris(&["https://example.invalid/"], valid()).unwrap();
    assert_refusal(&m, &pki.rank(0), "no gloo:// URI name");
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let pki = Pki::new("time", 2);
    let id = Identity::rank("time", Rank(1));
    assert_refusal(&pki.ca().issue(&id, expired()).unwrap(), &pki.rank(0), "expired");
    assert_refusal(&pki.ca().issue(&id, not_yet_valid()).unwrap(), &pki.rank(0), "not valid yet");
}

#[test]
fn a_server_from_another_ca_is_refused_by_the_client() {
    let pki = Pki::new("srv", 2);
    let other = Pki::new("other-srv", 1);
    let rogue_server = pki.foreign(&other, &Identity::store("srv"));
    let (mut c, mut s) = sessions(&pki.rank(1), &rogue_server);
    std::thread::scope(|sc| {
        let server = sc.spawn(move || s.read(&mut [0u8; 4]).expect_err("must fail"));
        let e = c.read(&mut [0u8; 4]).expect_err("the client accepted a foreign server");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("invalid peer certificate"), "{e}");
        let se = server.join().unwrap();
        assert!(se.to_string().contains("refused our certificate"), "{se}");
    });
}

#[test]
fn close_notify_is_a_clean_end_and_a_cut_is_not() {
    let pki = Pki::new("close", 2);
    // Clean: the writer drops its session (sending close_notify); the reader sees Ok(0).
    let (mut c, mut s) = open_sessions(&pki.rank(1), &pki.rank(0));
    c.write_all(b"last words").unwrap();
    assert_eq!(read_exact(&mut s, 10).unwrap(), b"last words");
    drop(c);
    assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0);
    // Cut: the socket under the writer's session is shut without close_notify.
    let (mut c, mut s) = open_sessions(&pki.rank(1), &pki.rank(0));
    c.write_all(b"cut").unwrap();
    assert_eq!(read_exact(&mut s, 3).unwrap(), b"cut");
    c.socket().shutdown(std::net::Shutdown::Both).unwrap();
    let e = s.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    // The error sticks.
    assert_eq!(s.read(&mut [0u8; 8]).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn a_plaintext_client_is_told_apart_from_a_bad_certificate() {
    let pki = Pki::new("plain", 2);
    let (mut c, s) = pair();
    let mut s = pki.rank(0).store_acceptor().accept(s).unwrap();
    c.write_all(b"GLOO\x01\x00 a plaintext hello of some length").unwrap();
    let e = s.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("does not speak TLS"), "{e}");
}
