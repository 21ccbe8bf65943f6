//! TcpStore: bad input from clients, authentication, reconnection, and many clients.
//!
//! Every misbehaving client below must be dropped while a well-behaved client, using the
//! server at the same time, keeps being served.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use gloo_rendezvous::tcp::ServerConfig;
use gloo_rendezvous::{Error, Store, TcpStore, TcpStoreServer};
use gloo_testing::deadline;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server with short timeouts, so stalled clients are dropped quickly.
fn server(token: Option<&[u8]>) -> TcpStoreServer {
    gloo_testing::init_tracing();
    let mut cfg = ServerConfig::with_token(token);
    cfg.handshake_timeout = Duration::from_millis(500);
    cfg.read_timeout = Duration::from_millis(500);
    TcpStoreServer::bind_with(loopback(), cfg).unwrap()
}

/// A new server on the address an old one had. The port is free again once the old
/// server is gone, but on a busy machine another test's connection may take it as its
/// ephemeral port for a moment, so an address in use is tried again for a bounded time.
fn rebind(addr: SocketAddr) -> TcpStoreServer {
    let until = deadline(10);
    loop {
        match TcpStoreServer::bind(addr, None) {
            Err(e)
                if e.io_kind() == Some(std::io::ErrorKind::AddrInUse) && Instant::now() < until =>
            {
                std::thread::sleep(Duration::from_millis(50))
            }
            r => return r.unwrap(),
        }
    }
}

fn client(server: &TcpStoreServer, token: Option<&[u8]>) -> TcpStore {
    TcpStore::connect(server.local_addr().to_string(), token, deadline(10)).unwrap()
}

/// A well-behaved client's round of operations: the server still serves.
fn still_served(good: &TcpStore, round: u32) {
    let key = format!("good/{round}");
    good.set(key.as_bytes(), b"ok", deadline(10)).unwrap();
    assert_eq!(good.get(key.as_bytes(), deadline(10)).unwrap(), b"ok");
    assert_eq!(good.add(b"good/counter", 1, deadline(10)).unwrap(), i64::from(round) + 1);
}

/// Wait (bounded) until the server closes `s`: a read returns EOF or a reset.
fn assert_dropped(mut s: TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let end = deadline(10);
    loop {
        assert!(Instant::now() < end, "{what}: the server did not drop the client");
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {} // An error answer before the close is fine.
        }
    }
}

fn frame(cmd: u8, req_id: u32, args: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&((5 + args.len()) as u32).to_le_bytes());
    f.push(cmd);
    f.extend_from_slice(&req_id.to_le_bytes());
    f.extend_from_slice(args);
    f
}

/// A raw connection that completed the (unauthenticated) hello.
fn raw_after_hello(server: &TcpStoreServer) -> TcpStream {
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    let mut args = b"GLOOSTORE".to_vec();
    args.extend_from_slice(&1u16.to_le_bytes());
    args.extend_from_slice(&[7u8; 32]);
    s.write_all(&frame(0x01, 0, &args)).unwrap();
    let mut answer = [0u8; 4 + 5 + 2 + 1 + 32];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_exact(&mut answer).unwrap();
    assert_eq!(answer[4], 0, "hello accepted");
    s
}

#[test]
fn oversized_length_drops_the_client() {
    let srv = server(None);
    let good = client(&srv, None);
    // Before the handshake: anything over a few hundred bytes.
    let mut s = TcpStream::connect(srv.local_addr()).unwrap();
    s.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
    assert_dropped(s, "oversized pre-handshake length");
    // After the handshake: over the 64 MiB frame limit (nothing is allocated for it).
    let mut s = raw_after_hello(&srv);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    s.write_all(&[0x10; 64]).unwrap();
    still_served(&good, 0);
    assert_dropped(s, "oversized length");
    still_served(&good, 1);
}

#[test]
fn unknown_command_drops_the_client() {
    let srv = server(None);
    let good = client(&srv, None);
    let mut s = raw_after_hello(&srv);
    s.write_all(&frame(0xee, 1, b"whatever")).unwrap();
    assert_dropped(s, "unknown command");
    // A known command with a malformed body is dropped too.
    let mut s = raw_after_hello(&srv);
    s.write_all(&frame(0x10, 1, &[0xff, 0xff, 0xff, 0xff, 1])).unwrap();
    assert_dropped(s, "malformed set");
    still_served(&good, 0);
}

#[test]
fn garbage_bytes_drop_the_client() {
    let srv = server(None);
    let good = client(&srv, None);
    for seed in 0..5u64 {
        let mut s = TcpStream::connect(srv.local_addr()).unwrap();
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let garbage: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        // The server may close before everything is written.
        let _ = s.write_all(&garbage);
        assert_dropped(s, "garbage");
        still_served(&good, seed as u32);
    }
}

#[test]
fn half_a_request_then_a_stall_drops_the_client() {
    let srv = server(None);
    let good = client(&srv, None);
    let mut s = raw_after_hello(&srv);
    let full = frame(0x10, 1, &[3, 0, 0, 0, b'k', b'e', b'y', 1, 0, 0, 0, b'v']);
    s.write_all(&full[..full.len() / 2]).unwrap();
    still_served(&good, 0);
    assert_dropped(s, "half a request");
    assert_eq!(good.try_get(b"key", deadline(5)).unwrap(), None);
    still_served(&good, 1);
}

#[test]
fn two_hundred_idle_connections_are_dropped_and_others_served() {
    let srv = server(None);
    let good = client(&srv, None);
    let idle: Vec<TcpStream> =
        (0..200).map(|_| TcpStream::connect(srv.local_addr()).unwrap()).collect();
    for round in 0..5 {
        still_served(&good, round);
    }
    for s in idle {
        assert_dropped(s, "idle connection");
    }
    still_served(&good, 5);
}

#[test]
fn clients_without_the_token_are_refused() {
    let srv = server(Some(b"the-job-token-0123456789"));
    let good = client(&srv, Some(b"the-job-token-0123456789"));
    let addr = srv.local_addr().to_string();

    let err = TcpStore::connect(addr.clone(), None, deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    let err =
        TcpStore::connect(addr.clone(), Some(b"wrong-token-0123456789"), deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");

    // A raw client that skips authentication and sends a command is dropped unserved.
    let mut s = raw_after_hello(&srv);
    let set = frame(0x10, 1, &[1, 0, 0, 0, b'x', 1, 0, 0, 0, b'y']);
    s.write_all(&set).unwrap();
    assert_dropped(s, "unauthenticated command");
    assert_eq!(good.try_get(b"x", deadline(5)).unwrap(), None);
    still_served(&good, 0);
}

#[test]
fn a_client_with_a_token_refuses_a_server_without_one() {
    let srv = server(None);
    let err =
        TcpStore::connect(srv.local_addr().to_string(), Some(b"tcp-store-test-token"), deadline(5))
            .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
}

#[test]
fn routable_address_without_token_is_refused() {
    let err = TcpStoreServer::bind("0.0.0.0:0".parse().unwrap(), None).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("GLOO_AUTH_TOKEN"), "{err}");
}

#[test]
fn a_client_reconnects_after_the_server_restarts() {
    let srv = server(None);
    let addr = srv.local_addr();
    let c = client(&srv, None);
    c.set(b"before", b"1", deadline(5)).unwrap();
    drop(srv);
    // While the server is down, a get keeps trying; a new server comes up on the same
    // address and a second client sets the key.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| c.get(b"after", deadline(20)));
        std::thread::sleep(Duration::from_millis(300));
        let srv2 = rebind(addr);
        let other = client(&srv2, None);
        other.set(b"after", b"2", deadline(5)).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), b"2");
        c.set(b"again", b"3", deadline(5)).unwrap();
        assert_eq!(other.get(b"again", deadline(5)).unwrap(), b"3");
    });
}

#[test]
fn a_store_that_dies_gives_a_clear_error_by_the_deadline() {
    let srv = server(None);
    let c = client(&srv, None);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| c.get(b"never", Instant::now() + Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(200));
        drop(srv);
        let err = waiter.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    });
    // An add on a dead store is never retried into a double increment: it fails.
    let err = c.add(b"n", 1, Instant::now() + Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. } | Error::Io { .. }), "{err}");
}

#[test]
fn a_thousand_clients_on_one_server() {
    let srv = server(Some(b"tcp-store-test-token"));
    let addr = srv.local_addr().to_string();
    let clients: Vec<TcpStore> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let addr = addr.clone();
                s.spawn(move || {
                    (0..125)
                        .map(|i| {
                            let c = TcpStore::connect(
                                addr.clone(),
                                Some(b"tcp-store-test-token"),
                                deadline(60),
                            )
                            .unwrap();
                            c.set(
                                format!("client/{}", t * 125 + i).as_bytes(),
                                b"here",
                                deadline(60),
                            )
                            .unwrap();
                            c
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(clients.len(), 1000);
    let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("client/{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    // Every connection is still open and served: each client counts once.
    for c in &clients {
        c.add(b"count", 1, deadline(30)).unwrap();
    }
    let values = clients[999].multi_get(&refs, deadline(30)).unwrap();
    assert!(values.iter().all(|v| v == b"here"));
    assert_eq!(clients[0].add(b"count", 0, deadline(5)).unwrap(), 1000);
}

#[test]
fn an_answer_over_the_frame_limit_is_an_error() {
    let srv = server(None);
    let c = client(&srv, None);
    let big = vec![1u8; 40 << 20];
    c.set(b"big/a", &big, deadline(30)).unwrap();
    c.set(b"big/b", &big, deadline(30)).unwrap();
    // Two values of 40 MiB do not fit one 64 MiB answer: refused, and the server is unhurt.
    let err = c.multi_get(&[b"big/a", b"big/b"], deadline(30)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert_eq!(c.get(b"big/a", deadline(30)).unwrap().len(), 40 << 20);
    still_served(&c, 0);
}

/// A fake server that answers every connection with `answer` (after reading the hello), so
/// the client's handling of a hostile or broken server can be checked.
fn rogue_server(answer: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    l.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        let end = deadline(10);
        while Instant::now() < end {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let mut hello = [0u8; 4 + 5 + 9 + 2 + 32];
                    if s.read_exact(&mut hello).is_ok() {
                        let _ = s.write_all(&answer);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (addr, t)
}

#[test]
fn a_hostile_server_gives_errors_not_panics_or_allocations() {
    // An answer announcing 4 GiB.
    let (addr, t) = rogue_server(u32::MAX.to_le_bytes().to_vec());
    let err = TcpStore::connect(addr, None, deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    t.join().unwrap();

    // A well-framed hello answer with its fields missing.
    let mut short = 6u32.to_le_bytes().to_vec();
    short.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
    let (addr, t) = rogue_server(short);
    let err = TcpStore::connect(addr, None, deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    t.join().unwrap();

    // A server that demands a token from a client that has none.
    let mut demands = (5u32 + 2 + 1 + 32).to_le_bytes().to_vec();
    demands.extend_from_slice(&[0, 0, 0, 0, 0]);
    demands.extend_from_slice(&1u16.to_le_bytes());
    demands.push(1);
    demands.extend_from_slice(&[9u8; 32]);
    let (addr, t) = rogue_server(demands);
    let err = TcpStore::connect(addr, None, deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    t.join().unwrap();
}

/// Wait (bounded) until the server holds exactly `n` connections.
fn assert_connections(srv: &TcpStoreServer, n: usize) {
    gloo_testing::wait_for("the server's connections", 10, || srv.connections(), |c| *c == n);
}

#[test]
fn dropped_and_misbehaving_clients_leave_no_connection_behind() {
    let srv = server(Some(b"tcp-store-test-token"));
    let good = client(&srv, Some(b"tcp-store-test-token"));
    let clients: Vec<TcpStore> =
        (0..50).map(|_| client(&srv, Some(b"tcp-store-test-token"))).collect();
    for c in &clients {
        c.add(b"n", 1, deadline(10)).unwrap();
    }
    assert_connections(&srv, 51);
    drop(clients);
    assert_connections(&srv, 1);
    // Refused and stalled clients are gone too.
    let refused =
        TcpStore::connect(srv.local_addr().to_string(), Some(b"bad-token-0123456789"), deadline(5));
    assert!(matches!(refused, Err(Error::Auth { .. })), "a wrong token was let in: {refused:?}");
    let idle: Vec<TcpStream> =
        (0..20).map(|_| TcpStream::connect(srv.local_addr()).unwrap()).collect();
    assert_connections(&srv, 1);
    drop(idle);
    still_served(&good, 0);
}

#[test]
fn a_client_that_half_closes_still_gets_its_answer() {
    let srv = server(None);
    let mut s = raw_after_hello(&srv);
    s.write_all(&frame(0x19, 5, b"")).unwrap(); // ping
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, [5, 0, 0, 0, 0, 5, 0, 0, 0], "length 5, status OK, request id 5");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Random frames (a valid length prefix around a random command byte and body) and
        /// random raw bytes, after a valid hello or before it: the server answers or drops
        /// the client, and never stops serving the others.
        #[test]
        fn random_requests_never_break_the_server(
            after_hello in any::<bool>(),
            framed in any::<bool>(),
            cmd in prop_oneof![Just(0x10u8), Just(0x11), Just(0x13), Just(0x15), Just(0x16), any::<u8>()],
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let srv = shared_server();
            let mut s = if after_hello {
                raw_after_hello(srv)
            } else {
                TcpStream::connect(srv.local_addr()).unwrap()
            };
            let bytes = if framed { frame(cmd, 9, &body) } else { body };
            // The server may close before everything is written.
            let _ = s.write_all(&bytes);
            drop(s);
            let good = client(srv, None);
            good.set(b"fuzz/alive", b"yes", deadline(10)).unwrap();
            prop_assert_eq!(good.get(b"fuzz/alive", deadline(10)).unwrap(), b"yes".to_vec());
        }
    }

    fn shared_server() -> &'static TcpStoreServer {
        static SERVER: std::sync::OnceLock<TcpStoreServer> = std::sync::OnceLock::new();
        SERVER.get_or_init(|| server(None))
    }
}

/// A token too short to be a secret is refused by the server and the client, saying how to
/// make one (it used to be accepted: `GLOO_AUTH_TOKEN=y`).
#[test]
fn a_token_shorter_than_16_bytes_is_refused_saying_how_to_make_one() {
    for short in [&b"y"[..], b"fifteen-bytes!!"] {
        let e = TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), Some(short)).unwrap_err();
        assert!(matches!(e, gloo_rendezvous::Error::Config { .. }), "{e}");
        assert!(e.to_string().contains("head -c 32 /dev/urandom"), "{e}");
        let srv = server(None);
        let e =
            TcpStore::connect(srv.local_addr().to_string(), Some(short), deadline(5)).unwrap_err();
        assert!(e.to_string().contains("at least 16 bytes"), "{e}");
    }
    TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), Some(b"sixteen-bytes-ok")).unwrap();
}

/// Issue 10: a plaintext server used to drop a TLS client's ClientHello in silence (its
/// record header read as a 64 KiB length); it now answers with a store error frame (which a
/// TLS client, finding no TLS record, reports as a server without TLS) and drops it.
#[test]
fn a_plaintext_server_answers_a_tls_client_hello_in_plaintext_and_drops_it() {
    let srv = server(None);
    let good = client(&srv, None);
    let mut s = TcpStream::connect(srv.local_addr()).unwrap();
    // A ClientHello's record header (TLS 1.3 sends record version 3.1) and a body.
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03];
    hello.resize(5 + 0x40, 0);
    let _ = s.write_all(&hello);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.len() > 9, "{got:02x?}");
    assert!(!matches!(got[0], 0x15 | 0x16), "it looks like a TLS record: {got:02x?}");
    let len = u32::from_le_bytes(got[..4].try_into().unwrap()) as usize;
    assert_eq!(len, got.len() - 4, "one whole frame, then the close");
    assert_eq!(got[4], 2, "an error status");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("does not speak TLS"), "{text}");
    assert_connections(&srv, 1);
    still_served(&good, 0);
}

/// Issue 10: a plaintext client whose store answers its hello with a TLS alert (a TLS store
/// server does, as its session fails) says at once that the server speaks TLS, naming it.
#[test]
fn a_plaintext_client_of_a_server_that_answers_in_tls_says_so_at_once() {
    // A fatal decode_error alert, as rustls sends it.
    let (addr, t) = rogue_server(vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]);
    let e = TcpStore::connect(addr.clone(), None, deadline(60)).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&addr) && msg.contains("speaks TLS"), "{msg}");
    t.join().unwrap();
}

/// A client of a store nobody serves (a closed 127.0.0.1 port) fails by its deadline naming
/// the endpoint; the operating system's refusal is the error's source, the `io::Error` it
/// was, and each message of the chain is printed once.
#[test]
fn an_unreachable_store_keeps_the_os_error_as_the_source() {
    use std::error::Error as _;

    let addr = std::net::TcpListener::bind(loopback()).unwrap().local_addr().unwrap();
    let err =
        TcpStore::connect(addr.to_string(), None, Instant::now() + Duration::from_millis(600))
            .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::ConnectionRefused), "{err:?}");
    let chain = gloo_testing::errors::chain_printed_once(&err);
    assert_eq!(chain.len(), 2, "{chain:#?}");
    let os = err.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("io source");
    assert_eq!(os.raw_os_error(), Some(111), "ECONNREFUSED: {chain:#?}");
    assert!(std::ptr::eq(gloo_testing::errors::deepest_io(&err).unwrap(), os));
}
