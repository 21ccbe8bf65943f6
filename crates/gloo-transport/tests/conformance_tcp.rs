//! The transport conformance suite over TCP on loopback, plus TCP-specific cases.
#![cfg(feature = "tcp")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use gloo_testing::conformance::pattern;
use gloo_testing::deadline;
use gloo_testing::rogue::bind_group;
use gloo_transport::tcp::{Security, TcpComm, TcpConfig, TcpListener};
use gloo_transport::{Communicator, Error, Rank, Slot};

/// Binds `size` listeners from `cfg(rank)`, then connects them on one thread per rank.
fn group_with(size: u32, cfg: impl Fn(u32) -> TcpConfig) -> Vec<TcpComm> {
    let (listeners, addrs) = bind_group(size, |r| TcpListener::bind(cfg(r)).expect("bind"));
    let until = deadline(30);
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let addrs = addrs.clone();
            std::thread::spawn(move || l.connect_all(&addrs, until))
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("connect thread").expect("connect_all")).collect()
}

fn group(size: u32) -> Vec<TcpComm> {
    group_with(size, |r| TcpConfig::loopback("conformance", Rank(r), size))
}

fn factory(size: u32) -> Vec<Box<dyn Communicator>> {
    gloo_testing::conformance::boxed(group(size))
}

gloo_testing::conformance_tests!(factory);

gloo_testing::tcp_conformance_variants!(group_with, "");

fn exchange(comms: Vec<TcpComm>, len: usize) {
    gloo_testing::run_ranks(comms, |c| {
        let until = deadline(60);
        let peer = Rank(1 - c.rank().0);
        let out = pattern(len, c.rank().0 as u64);
        let mut inb = vec![0u8; len];
        {
            let mut ops = [
                gloo_transport::Op::send(peer, Slot::new(1, 0), &out),
                gloo_transport::Op::recv(peer, Slot::new(1, 0), &mut inb),
            ];
            c.run(&mut ops, until).expect("exchange");
        }
        assert!(inb == pattern(len, peer.0 as u64), "content from {peer:?}");
    });
}

#[test]
fn ipv6_loopback_group() {
    let v6: SocketAddr = "[::1]:0".parse().unwrap();
    let probe = std::net::TcpListener::bind(v6);
    if probe.is_err() {
        // A host without IPv6 on loopback cannot run this case; say so loudly.
        panic!("IPv6 loopback [::1] is not available on this host: {probe:?}");
    }
    drop(probe);
    let comms = group_with(2, |r| {
        TcpConfig::new("v6", Rank(r), 2)
            .bind_addr(v6)
            .security(Security::Token(b"v6-conformance-token".to_vec()))
    });
    exchange(comms, 300_000);
}

#[test]
fn token_mismatch_fails_with_auth_error() {
    let l0 = TcpListener::bind(
        TcpConfig::loopback("tok", Rank(0), 2)
            .security(Security::Token(b"token-of-rank-0-aaaa".to_vec())),
    )
    .unwrap();
    let l1 = TcpListener::bind(
        TcpConfig::loopback("tok", Rank(1), 2)
            .security(Security::Token(b"token-of-rank-1-bbbb".to_vec())),
    )
    .unwrap();
    let addrs = vec![l0.address_bytes(), l1.address_bytes()];
    let a2 = addrs.clone();
    let until = Instant::now() + std::time::Duration::from_secs(3);
    let t0 = std::thread::spawn(move || l0.connect_all(&a2, until).map(|_| ()));
    let r1 = l1.connect_all(&addrs, until).map(|_| ());
    let r0 = t0.join().unwrap();
    assert!(matches!(r1, Err(Error::Auth { peer: Some(Rank(0)), .. })), "{r1:?}");
    // The acceptor never completes: it reports who it waited for when the deadline passes.
    let e = r0.unwrap_err();
    assert_eq!(e.peer(), Some(Rank(1)), "{e}");
}

#[test]
fn garbage_address_bytes_name_the_rank() {
    let l = TcpListener::bind(TcpConfig::loopback("garbage", Rank(0), 3)).unwrap();
    let good = l.address_bytes();
    let e = l.connect_all(&[good.clone(), good, b"nonsense".to_vec()], deadline(5)).unwrap_err();
    assert_eq!(e.peer(), Some(Rank(2)), "{e}");
}

#[test]
fn drop_closes_cleanly_and_peer_sees_it() {
    let mut comms = group(2);
    let c1 = comms.pop().unwrap();
    let c0 = comms.pop().unwrap();
    drop(c1);
    let mut buf = [0u8; 4];
    let e = c0.recv(Rank(1), Slot::new(2, 0), &mut buf, deadline(10)).unwrap_err();
    assert!(matches!(e, Error::PeerLost { peer: Rank(1), .. }), "{e}");
}

#[test]
fn messages_larger_than_the_eager_credit_and_several_chunks() {
    // 9 MiB: more than the 4 MiB credit window and more than two 4 MiB data chunks.
    exchange(group(2), 9 << 20);
}

#[test]
fn four_threads_large_messages_hand_over_sockets() {
    // Several threads on one communicator, each exchanging messages large enough to go by
    // rendezvous: whichever thread reads a Data header for another's receive must hand the
    // socket over, and partly written frames must stay whole.
    gloo_testing::run_ranks(group(2), |c| {
        let c = &c;
        let peer = Rank(1 - c.rank().0);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                s.spawn(move || {
                    let until = deadline(120);
                    let slot = Slot::new(100 + t, 0);
                    for i in 0..6u64 {
                        let len = (300 << 10) * (1 + (t as usize + i as usize) % 4) + 13;
                        let out = pattern(len, (c.rank().0 as u64) << 32 | (t as u64) << 8 | i);
                        let mut inb = vec![0u8; len];
                        {
                            let mut ops = [
                                gloo_transport::Op::send(peer, slot, &out),
                                gloo_transport::Op::recv(peer, slot, &mut inb),
                            ];
                            c.run(&mut ops, until).expect("exchange");
                        }
                        let want = pattern(len, (peer.0 as u64) << 32 | (t as u64) << 8 | i);
                        assert!(inb == want, "thread {t} exchange {i}: content");
                    }
                });
            }
        });
    });
}

/// Completes the handshake as `rank` against `addr` by hand, with the given token, and
/// returns the raw socket (then silent: no heartbeats).
fn raw_peer(
    addr: &[u8],
    job: &str,
    rank: u32,
    to: u32,
    size: u32,
    token: Option<&[u8]>,
) -> Result<std::net::TcpStream, Error> {
    use gloo_transport::proto::{Handshake, HandshakeConfig, job_hash};
    use std::io::{Read, Write};
    // The address bytes are "GTCP", version, family 4, port (LE), IPv4 octets.
    assert_eq!(&addr[..6], b"GTCP\x01\x04");
    let port = u16::from_le_bytes([addr[6], addr[7]]);
    let ip = std::net::Ipv4Addr::new(addr[8], addr[9], addr[10], addr[11]);
    let mut s = std::net::TcpStream::connect((ip, port)).expect("connect to the listener");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let cfg = HandshakeConfig {
        job: job_hash(job),
        me: Rank(rank),
        size,
        token: token.map(<[u8]>::to_vec),
    };
    let mut hs = Handshake::connector(cfg, Rank(to), [5; 32]);
    let mut buf = [0u8; 256];
    while hs.done().is_none() {
        let out = hs.output().to_vec();
        s.write_all(&out).expect("send handshake bytes");
        hs.consumed_output(out.len());
        let n = s.read(&mut buf).expect("read handshake bytes");
        assert!(n > 0, "acceptor closed the connection");
        hs.feed(&buf[..n])?;
    }
    let out = hs.output().to_vec();
    s.write_all(&out).expect("send the last handshake frame");
    Ok(s)
}

#[test]
fn silent_peer_is_lost_after_the_peer_timeout() {
    let cfg = TcpConfig::loopback("silent", Rank(0), 2)
        .peer_timeout(std::time::Duration::from_millis(400));
    let l = TcpListener::bind(cfg).unwrap();
    let a0 = l.address_bytes();
    let addrs = vec![a0.clone(), a0.clone()];
    let until = deadline(20);
    let t = std::thread::spawn(move || l.connect_all(&addrs, until));
    // Rank 1 shakes hands and then says nothing at all, like a frozen process.
    let _silent = raw_peer(&a0, "silent", 1, 0, 2, None).expect("handshake");
    let c = t.join().unwrap().expect("connect_all with the hand-made peer");
    let mut b = [0u8; 8];
    let e = c.recv(Rank(1), Slot::new(1, 0), &mut b, deadline(20)).unwrap_err();
    assert!(matches!(e, Error::PeerLost { peer: Rank(1), .. }), "{e}");
    assert!(c.poisoned().is_some());
}

#[test]
fn a_mute_connection_does_not_block_set_up() {
    let size = 2;
    let (listeners, addrs) = bind_group(size, |r| {
        TcpListener::bind(TcpConfig::loopback("mute", Rank(r), size)).unwrap()
    });
    // Somebody connects to rank 0 first and never says hello.
    let a = &addrs[0];
    let port = u16::from_le_bytes([a[6], a[7]]);
    let _mute = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let until = deadline(20);
    let comms: Vec<TcpComm> = listeners
        .into_iter()
        .map(|l| {
            let addrs = addrs.clone();
            std::thread::spawn(move || l.connect_all(&addrs, until))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap().expect("connect_all despite the mute connection"))
        .collect();
    exchange(comms, 10);
}

#[test]
fn impostor_with_wrong_token_is_refused_and_the_real_rank_joins() {
    let size = 2;
    let tok = |r: u32| {
        TcpConfig::loopback("impostor", Rank(r), size)
            .security(Security::Token(b"the-right-token-0123".to_vec()))
    };
    let (listeners, addrs) = bind_group(size, |r| TcpListener::bind(tok(r)).unwrap());
    let until = deadline(20);
    let mut it = listeners.into_iter();
    let (l0, l1) = (it.next().unwrap(), it.next().unwrap());
    let a = addrs.clone();
    let t0 = std::thread::spawn(move || l0.connect_all(&a, until));
    // The impostor claims rank 1 with the wrong token: the acceptor's MAC does not verify
    // on its side either, so it gets an authentication error from its own handshake.
    let addr0 = addrs[0].clone();
    let imp = std::thread::spawn(move || raw_peer(&addr0, "impostor", 1, 0, 2, Some(b"wrong")));
    match imp.join().unwrap() {
        Err(Error::Auth { peer: Some(Rank(0)), .. }) => {}
        Err(e) => panic!("the impostor failed for another reason than its token: {e}"),
        Ok(_) => panic!("the impostor completed a handshake"),
    }
    let a = addrs.clone();
    let c1 = l1.connect_all(&a, until).expect("the real rank 1 connects");
    let c0 = t0.join().unwrap().expect("rank 0 connects");
    exchange(vec![c0, c1], 70_000);
}

#[test]
fn cancel_mid_transfer_closes_only_that_connection() {
    let mut comms = group(3);
    let c2 = comms.pop().unwrap();
    let c1 = comms.pop().unwrap();
    let c0 = comms.pop().unwrap();
    let big = 8 << 20;
    // Rank 1 announces a large message, then sends a small one behind it on the same stream.
    let t1 = std::thread::spawn(move || {
        let out = vec![1u8; big];
        let mut ops = [
            gloo_transport::Op::send(Rank(0), Slot::new(1, 0), &out),
            gloo_transport::Op::send(Rank(0), Slot::new(9, 0), b"behind"),
        ];
        let r = c1.run(&mut ops, deadline(20));
        (c1, r)
    });
    // Once the small message is here, the announcement is too: the next receive matches it
    // at once and clears the transfer, then gives up (its deadline has passed) part-way.
    let mut small = [0u8; 6];
    c0.recv(Rank(1), Slot::new(9, 0), &mut small, deadline(20)).unwrap();
    let mut inb = vec![0u8; big];
    let r = {
        let mut ops = [gloo_transport::Op::recv(Rank(1), Slot::new(1, 0), &mut inb)];
        c0.run(&mut ops, Instant::now())
    };
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    // Later operations with rank 1 fail with Cancelled, and rank 1 loses its peer ...
    let mut b = [0u8; 1];
    let e = c0.recv(Rank(1), Slot::new(2, 0), &mut b, deadline(10)).unwrap_err();
    assert!(matches!(e, Error::Cancelled { peer: Rank(1), .. }), "{e}");
    let (_c1, r1) = t1.join().unwrap();
    assert!(matches!(r1, Err(Error::PeerLost { peer: Rank(0), .. })), "{r1:?}");
    // ... while rank 2 is unaffected.
    let t2 = std::thread::spawn(move || c2.send(Rank(0), Slot::new(3, 0), b"fine", deadline(10)));
    let mut b = [0u8; 4];
    assert_eq!(c0.recv(Rank(2), Slot::new(3, 0), &mut b, deadline(10)).unwrap(), 4);
    assert_eq!(&b, b"fine");
    t2.join().unwrap().unwrap();
}

#[test]
fn wait_any_returning_mid_frame_keeps_the_stream_whole() {
    // Rank 0 streams 24 MiB while waiting for a small message; the small one completes its
    // `Wait::Any` part-way through a data frame, whose rest must then go out from an owned
    // copy, and a later call finishes the send. Repeated so the timing varies.
    let len = 24 << 20;
    gloo_testing::run_ranks(group(2), |c| {
        let until = deadline(120);
        for round in 0..3u64 {
            let slot_big = Slot::new(1, round as u32);
            let slot_small = Slot::new(2, round as u32);
            if c.rank() == Rank(0) {
                let out = pattern(len, round);
                let mut small = [0u8; 3];
                {
                    let mut ops = [
                        gloo_transport::Op::send(Rank(1), slot_big, &out),
                        gloo_transport::Op::recv(Rank(1), slot_small, &mut small),
                    ];
                    c.progress(&mut ops, gloo_transport::Wait::Any, until).unwrap();
                    assert!(ops.iter().any(|o| o.is_done()));
                    // Touch nothing for a moment, then finish.
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    c.progress(&mut ops, gloo_transport::Wait::All, until).unwrap();
                }
                assert_eq!(&small, b"hey");
            } else {
                let mut inb = vec![0u8; len];
                {
                    let mut ops = [
                        gloo_transport::Op::recv(Rank(0), slot_big, &mut inb),
                        gloo_transport::Op::send(Rank(0), slot_small, b"hey"),
                    ];
                    c.run(&mut ops, until).unwrap();
                }
                assert!(inb == pattern(len, round), "round {round}: content");
            }
        }
    });
}

#[test]
fn eager_credit_exhaustion_falls_back_to_rendezvous_in_order() {
    // 200 messages of 64 KiB (12.5 MiB) before the receiver posts anything: far beyond the
    // 4 MiB eager credit, so later ones go by rendezvous, and FIFO order must hold across
    // the switch (and back, once credit returns).
    let (n, len) = (200usize, 64 << 10);
    gloo_testing::run_ranks(group(2), |c| {
        let until = deadline(120);
        let slot = Slot::new(7, 0);
        if c.rank() == Rank(0) {
            let msgs: Vec<Vec<u8>> = (0..n).map(|i| pattern(len, i as u64)).collect();
            let mut ops: Vec<_> =
                msgs.iter().map(|m| gloo_transport::Op::send(Rank(1), slot, m)).collect();
            c.run(&mut ops, until).unwrap();
        } else {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut bufs = vec![vec![0u8; len]; n];
            {
                let mut ops: Vec<_> =
                    bufs.iter_mut().map(|b| gloo_transport::Op::recv(Rank(0), slot, b)).collect();
                c.run(&mut ops, until).unwrap();
            }
            for (i, b) in bufs.iter().enumerate() {
                assert!(*b == pattern(len, i as u64), "message {i} out of order or corrupt");
            }
        }
    });
}

/// A toy stream layer (every byte XORed with a key) standing in for TLS, to check the seam.
/// It counts the bytes it coded each way and the streams it wrapped, so a test can show
/// that the data went through it.
#[derive(Default)]
struct XorLayer {
    key: u8,
    wrapped: AtomicU64,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

struct XorStream {
    socket: mio::net::TcpStream,
    key: u8,
    early: Vec<u8>,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    /// The rank this stream claims to have authenticated (a vouching layer).
    vouch: Option<Rank>,
}

impl gloo_transport::tcp::ByteStream for XorStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = if !self.early.is_empty() {
            let n = self.early.len().min(buf.len());
            buf[..n].copy_from_slice(&self.early[..n]);
            self.early.drain(..n);
            n
        } else {
            std::io::Read::read(&mut self.socket, buf)?
        };
        buf[..n].iter_mut().for_each(|b| *b ^= self.key);
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let plain: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).take(1 << 20).collect();
        let coded: Vec<u8> = plain.iter().map(|b| b ^ self.key).collect();
        let n = std::io::Write::write(&mut self.socket, &coded)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        &mut self.socket
    }

    fn connect_finished(&mut self) -> std::io::Result<bool> {
        gloo_transport::tcp::ByteStream::connect_finished(&mut self.socket)
    }

    fn peer_rank(&self) -> Option<Rank> {
        self.vouch
    }
}

impl gloo_transport::tcp::StreamLayer for XorLayer {
    fn wrap(
        &self,
        _peer: Rank,
        _dialled: bool,
        socket: mio::net::TcpStream,
        early: Vec<u8>,
    ) -> std::io::Result<Box<dyn gloo_transport::tcp::ByteStream>> {
        self.wrapped.fetch_add(1, Ordering::Relaxed);
        // Early bytes are still coded; `read` decodes them like the rest.
        Ok(Box::new(XorStream {
            socket,
            key: self.key,
            early,
            read: self.read.clone(),
            written: self.written.clone(),
            vouch: None,
        }))
    }
}

/// The XOR layer wrapping each connection before the transport's handshake, so the
/// handshake runs inside it; with `vouch`, it claims to authenticate peers and says that
/// whoever dialled in is that rank (a certificate check, faked).
struct EarlyXorLayer {
    key: u8,
    vouch: Option<Rank>,
}

impl gloo_transport::tcp::StreamLayer for EarlyXorLayer {
    fn wrap(
        &self,
        _peer: Rank,
        _dialled: bool,
        _socket: mio::net::TcpStream,
        _early: Vec<u8>,
    ) -> std::io::Result<Box<dyn gloo_transport::tcp::ByteStream>> {
        unreachable!("a layer that wraps the handshake is never asked to wrap after it")
    }

    fn authenticates_peers(&self) -> bool {
        self.vouch.is_some()
    }

    fn wraps_handshake(&self) -> bool {
        true
    }

    fn wrap_connection(
        &self,
        dialled: Option<Rank>,
        socket: mio::net::TcpStream,
    ) -> std::io::Result<Box<dyn gloo_transport::tcp::ByteStream>> {
        // A dialled peer is whom we dialled; an accepted one is whom the layer says.
        let vouch = self.vouch.map(|v| dialled.unwrap_or(v));
        Ok(Box::new(XorStream {
            socket,
            key: self.key,
            early: Vec::new(),
            read: Arc::default(),
            written: Arc::default(),
            vouch,
        }))
    }
}

#[test]
fn a_stream_layer_can_carry_the_handshake_itself() {
    // Both ranks XOR everything, handshake included: they connect and exchange.
    let layer = std::sync::Arc::new(EarlyXorLayer { key: 0x33, vouch: None });
    let comms =
        group_with(3, |r| TcpConfig::loopback("early", Rank(r), 3).stream_layer(layer.clone()));
    gloo_testing::rogue::all_exchange(&comms, deadline(30));
    // A rank whose layer does not wrap the handshake cannot talk to one whose does: the
    // Hello arrives scrambled.
    let l0 =
        TcpListener::bind(TcpConfig::loopback("mixed", Rank(0), 2).stream_layer(layer.clone()))
            .unwrap();
    let l1 = TcpListener::bind(TcpConfig::loopback("mixed", Rank(1), 2)).unwrap();
    let addrs = vec![l0.address_bytes(), l1.address_bytes()];
    let a2 = addrs.clone();
    let until = Instant::now() + std::time::Duration::from_secs(2);
    let t0 = std::thread::spawn(move || l0.connect_all(&a2, until).map(|_| ()));
    let e1 = l1.connect_all(&addrs, until).map(|_| ()).unwrap_err();
    let e0 = t0.join().unwrap().unwrap_err();
    assert_eq!(e0.peer(), Some(Rank(1)), "{e0}");
    assert_eq!(e1.peer(), Some(Rank(0)), "{e1}");
}

#[test]
fn a_hello_claiming_another_rank_than_the_layer_proved_is_refused() {
    // Rank 0's layer "proves" that whoever dials in is rank 2; rank 1 dials and (truthfully)
    // claims rank 1 in its Hello: the claim does not match what the layer proved, so rank 0
    // refuses the connection with an authentication error naming the claimed rank.
    let liar = std::sync::Arc::new(EarlyXorLayer { key: 0x44, vouch: Some(Rank(2)) });
    let honest = std::sync::Arc::new(EarlyXorLayer { key: 0x44, vouch: Some(Rank(0)) });
    let l0 =
        TcpListener::bind(TcpConfig::loopback("claim", Rank(0), 3).stream_layer(liar)).unwrap();
    let l1 =
        TcpListener::bind(TcpConfig::loopback("claim", Rank(1), 3).stream_layer(honest)).unwrap();
    let addrs = vec![l0.address_bytes(), l1.address_bytes(), l1.address_bytes()];
    let a2 = addrs.clone();
    let until = Instant::now() + std::time::Duration::from_secs(2);
    let t0 = std::thread::spawn(move || l0.connect_all(&a2, until).map(|_| ()));
    let _ = l1.connect_all(&addrs, until);
    let e0 = t0.join().unwrap().unwrap_err();
    let text = e0.to_string();
    // The deadline error lists why rank 1 is missing: its refused claim.
    assert!(text.contains("rank 1") && text.contains("certificate is rank 2's"), "{text}");
}

#[test]
fn a_stream_layer_sits_between_socket_and_protocol() {
    for len in [5 << 20, 100] {
        let layer = Arc::new(XorLayer { key: 0x5A, ..XorLayer::default() });
        let comms =
            group_with(2, |r| TcpConfig::loopback("layer", Rank(r), 2).stream_layer(layer.clone()));
        exchange(comms, len);
        // Each rank wrapped its one connection, and every message byte went through the layer
        // both ways (plus frame headers).
        assert_eq!(layer.wrapped.load(Ordering::Relaxed), 2);
        let (read, written) =
            (layer.read.load(Ordering::Relaxed), layer.written.load(Ordering::Relaxed));
        assert!(
            read >= 2 * len as u64 && written >= 2 * len as u64,
            "{read} read, {written} written"
        );
    }
    // The layer really codes the bytes: a rank without it cannot read a rank with it, and
    // the exchange fails instead of delivering coded bytes.
    let layer = Arc::new(XorLayer { key: 0x5A, ..XorLayer::default() });
    let comms = group_with(2, |r| {
        let cfg = TcpConfig::loopback("half-layer", Rank(r), 2);
        if r == 0 { cfg.stream_layer(layer.clone()) } else { cfg }
    });
    let results = gloo_testing::run_ranks(comms, |c| {
        let peer = Rank(1 - c.rank().0);
        let out = pattern(1000, 1);
        let mut inb = vec![0u8; 1000];
        let mut ops = [
            gloo_transport::Op::send(peer, Slot::new(1, 0), &out),
            gloo_transport::Op::recv(peer, Slot::new(1, 0), &mut inb),
        ];
        c.run(&mut ops, deadline(20))
    });
    for (rank, r) in results.iter().enumerate() {
        assert!(
            matches!(r, Err(Error::Protocol { .. } | Error::PeerLost { .. })),
            "rank {rank}: {r:?}"
        );
    }
}

#[test]
fn interface_by_name_on_this_host() {
    // `lo` by NCCL prefix syntax resolves through this host's interface list to 127.0.0.1
    // (IPv4 preferred), which needs no token.
    let comms = group_with(2, |r| TcpConfig::new("iface", Rank(r), 2).interface("=lo"));
    exchange(comms, 1000);
    let l = TcpListener::bind(TcpConfig::new("iface", Rank(0), 1).interface("=lo")).unwrap();
    assert!(l.local_addr().ip().is_loopback(), "{}", l.local_addr());
    let e = TcpListener::bind(TcpConfig::new("iface", Rank(0), 1).interface("=no-such-if0"))
        .unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
}
