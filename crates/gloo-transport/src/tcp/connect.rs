//! Binding, publishing the address, and connecting the full mesh with handshakes.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Interest, Token, Waker};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::comm::{TcpComm, engine_config, new_poll};
use super::config::{Layer, TcpConfig, decode_addr, encode_addr};
use super::driver::{Lazy, TcpLink, WAKE};
use super::stream::{ByteStream, stream_error};
use crate::engine::{Engine, EngineConfig};
use crate::proto::{Handshake, HandshakeConfig, fresh_nonce, job_hash};
use crate::{Error, ErrorChain, LazyListener, Listener, Rank, Result};

/// The poll token of the listening socket (set-up, and a lazy communicator's whole life).
pub(super) const LISTEN: Token = Token(usize::MAX - 1);
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// The most incoming connections whose handshake may be under way at once (full mesh and
/// lazy mode alike), so that nobody can make a rank hold state, or descriptors, for
/// connections without bound. When full, the one in its handshake longest is dropped to
/// make room: a real rank completes its handshake in a round trip or two, so under a flood
/// of connections that say nothing it is the flood that is dropped, while a rank that dials
/// meanwhile gets in.
pub(crate) const MAX_INCOMING: usize = 64;
/// The most connections accepted before the handshakes under way are moved on.
const ACCEPT_BATCH: usize = 8;

/// A bound listening socket, the first half of connecting a group.
///
/// Bind, publish [`address_bytes`](TcpListener::address_bytes) (through a store, or any other
/// way), collect every rank's, then [`connect_all`](TcpListener::connect_all) (the full mesh,
/// now; the listener lives only until the group is connected) or
/// [`connect_lazy`](TcpListener::connect_lazy) (each pair on its first use; the listener
/// lives as long as the communicator).
#[derive(Debug)]
pub struct TcpListener {
    cfg: TcpConfig,
    token: Option<Vec<u8>>,
    addr: SocketAddr,
    listener: mio::net::TcpListener,
}

/// Socket options for every connection.
///
/// Buffer sizes are left to the kernel on purpose: setting `SO_SNDBUF`/`SO_RCVBUF` turns off
/// Linux's autotuning, which grows them further (here `tcp_rmem` allows 32 MiB) and measured
/// at least as fast as fixed 4 MiB buffers on a 64 MiB stream over loopback.
fn tune(s: &Socket) -> io::Result<()> {
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)
}

impl TcpListener {
    /// Bind the address `cfg` chooses (never the wildcard) and start listening.
    pub fn bind(cfg: TcpConfig) -> Result<TcpListener> {
        let (want, token) = cfg.resolve()?;
        let io_err = |doing: &str, e: io::Error| Error::io(None, format!("{doing} {want}"), e);
        let sock = Socket::new(Domain::for_address(want), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| io_err("creating a socket for", e))?;
        if want.is_ipv6() {
            sock.set_only_v6(true).map_err(|e| io_err("setting IPV6_V6ONLY on", e))?;
        }
        sock.bind(&SockAddr::from(want)).map_err(|e| io_err("binding", e))?;
        sock.listen(1024).map_err(|e| io_err("listening on", e))?;
        sock.set_nonblocking(true).map_err(|e| io_err("configuring", e))?;
        let std_listener: std::net::TcpListener = sock.into();
        let addr = std_listener.local_addr().map_err(|e| io_err("reading the address of", e))?;
        tracing::debug!(rank = %cfg.rank, %addr, secure = token.is_some(), "listening");
        Ok(TcpListener {
            cfg,
            token,
            addr,
            listener: mio::net::TcpListener::from_std(std_listener),
        })
    }

    /// The address actually bound (with the port the system chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// This rank's address in a versioned, self-describing encoding, to publish for the
    /// others: `"GTCP"`, version 1, family (4 or 6), port (u16 LE), IP octets, and for IPv6
    /// flow info and scope id (u32 LE each).
    pub fn address_bytes(&self) -> Vec<u8> {
        encode_addr(&self.addr)
    }

    /// Connect to every other rank: dial the lower ranks (retrying with exponential back-off
    /// until `deadline`), accept the higher ones, and authenticate each connection. Handshakes
    /// run concurrently and each is bounded, so a connection that never says hello delays
    /// nobody. `addrs` holds every rank's address bytes, indexed by rank (this rank's own
    /// entry is ignored).
    pub fn connect_all(self, addrs: &[Vec<u8>], deadline: Instant) -> Result<TcpComm> {
        let (poll, done, cfg) = Setup::new(self, addrs, None)?.run(deadline)?;
        finish(poll, done, &cfg)
    }

    /// Connect to `peers` only (a subset of the other ranks), exactly as
    /// [`connect_all`](TcpListener::connect_all) connects every rank, and hand back each
    /// authenticated connection instead of a communicator: for a transport that carries
    /// some of its peers over tcp and the others over something else, in one engine
    /// (gloo-shm's per-host choice: shared memory to the ranks on this host, tcp to the
    /// rest). Each side of a pair must name the other; a rank outside `peers` that dials is
    /// refused like a stray. `addrs` holds every rank's address bytes, indexed by rank; only
    /// those of `peers` are parsed.
    ///
    /// The streams are non-blocking, registered with no poller, and carry the stream layer
    /// the configuration names (TLS); run the protocol over them with the engine, feeding
    /// each one's [`early`](TcpPeer::early) bytes first.
    pub fn connect_peers(
        self,
        addrs: &[Vec<u8>],
        peers: &[Rank],
        deadline: Instant,
    ) -> Result<Vec<TcpPeer>> {
        let (me, size) = (self.cfg.rank, self.cfg.size);
        let mut want = vec![false; size as usize];
        for p in peers {
            if p.0 >= size || *p == me {
                return Err(Error::invalid(format!(
                    "connect_peers: rank {p} is not another rank of a group of {size}"
                )));
            }
            want[p.index()] = true;
        }
        let (poll, done, cfg) = Setup::new(self, addrs, Some(want))?.run(deadline)?;
        let mut out = Vec::new();
        for (r, slot) in done.into_iter().enumerate() {
            let Some((mut stream, leftover)) = slot else { continue };
            let rank = Rank(r as u32);
            let _ = poll.registry().deregister(stream.io().source());
            let (stream, early) =
                data_stream(cfg.layer.as_ref(), rank, rank < me, stream, leftover)?;
            out.push(TcpPeer { rank, stream, early });
        }
        Ok(out)
    }

    /// The engine settings this listener's configuration asks for (busy-poll window, peer
    /// timeout), for a transport that runs its connections in an engine of its own.
    pub fn engine_config(&self) -> EngineConfig {
        engine_config(&self.cfg)
    }

    /// Return a communicator at once, with no connection yet: each pair connects on its
    /// first use, when an operation with that peer is posted (a send to it, or a receive that
    /// may come from it), by whichever side gets there first. Meant for large jobs in which a
    /// rank talks to few peers; see the [module docs](super#lazy-connection) for how it works
    /// and what it means for errors and aborts.
    ///
    /// Every address is parsed and checked now (a bad one fails here, naming its rank, and
    /// is never dialled); `addrs` holds every rank's address bytes, indexed by rank. The
    /// listening socket stays open, and is served, for the communicator's whole life.
    /// `deadline` bounds nothing here (nothing waits); each operation's own deadline bounds
    /// the connecting it causes.
    pub fn connect_lazy(self, addrs: &[Vec<u8>], deadline: Instant) -> Result<TcpComm> {
        let _ = deadline;
        let (me, size) = (self.cfg.rank, self.cfg.size);
        let parsed = parse_addrs(me, size, addrs, "connect_lazy", None)?;
        let (poll, _) = new_poll()?;
        let TcpListener { cfg, token, addr, mut listener } = self;
        poll.registry()
            .register(&mut listener, LISTEN, Interest::READABLE)
            .map_err(|e| Error::io(None, "registering the listener", e))?;
        let waker = Waker::new(poll.registry(), WAKE)
            .map_err(|e| Error::io(None, "creating a waker", e))?;
        let hs = HandshakeConfig { job: job_hash(&cfg.job), me, size, token };
        let engine = Engine::new(me, size, engine_config(&cfg));
        let lazy = Lazy::new(
            listener,
            parsed,
            hs,
            cfg.layer.clone(),
            handshake_timeout(&cfg),
            cfg.integrity_on(),
        );
        tracing::debug!(rank = %me, %addr, "lazy communicator ready; no connection yet");
        TcpComm::start(engine, poll, waker, Some(Box::new(lazy)))
    }
}

/// One authenticated connection handed out by
/// [`TcpListener::connect_peers`].
pub struct TcpPeer {
    /// The rank at the other end.
    pub rank: Rank,
    /// The connection's byte stream (with the configured stream layer, if any).
    pub stream: Box<dyn super::stream::ByteStream>,
    /// Bytes already read past the handshake that the protocol must see first.
    pub early: Vec<u8>,
}

impl std::fmt::Debug for TcpPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpPeer")
            .field("rank", &self.rank)
            .field("early", &self.early.len())
            .finish()
    }
}

/// Parse the address bytes of every rank `want` names (every other rank when it is `None`;
/// this rank's own entry is never looked at), so a bad one fails before anything is
/// dialled, naming its rank.
fn parse_addrs(
    me: Rank,
    size: u32,
    addrs: &[Vec<u8>],
    what: &str,
    want: Option<&[bool]>,
) -> Result<Vec<Option<SocketAddr>>> {
    if addrs.len() != size as usize {
        return Err(Error::invalid(format!(
            "{what} needs {size} addresses, one per rank; got {}",
            addrs.len()
        )));
    }
    let mut parsed = Vec::with_capacity(addrs.len());
    for (r, a) in addrs.iter().enumerate() {
        let r = Rank(r as u32);
        let wanted = r != me && want.is_none_or(|w| w[r.index()]);
        parsed.push(if wanted { Some(decode_addr(r, a)?) } else { None });
    }
    Ok(parsed)
}

/// How long one connection's handshake may take: a peer that says nothing for a peer
/// timeout is as good as lost.
pub(super) fn handshake_timeout(cfg: &TcpConfig) -> Duration {
    cfg.peer_timeout.max(Duration::from_secs(1))
}

/// Start a non-blocking connect to `addr`; the handshake runs once it is established.
pub(super) fn dial(addr: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    tune(&s)?;
    match s.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(s.into()))
}

/// The stream the protocol runs over for a connection whose handshake is complete, and the
/// bytes already read past the handshake that the protocol must see first (empty when a
/// stream layer took them).
pub(super) fn data_stream(
    layer: Option<&Layer>,
    rank: Rank,
    dialled: bool,
    conn: ConnStream,
    leftover: Vec<u8>,
) -> Result<(Box<dyn ByteStream>, Vec<u8>)> {
    let stream = match conn {
        // The layer has been there since the start; the leftover is its plaintext.
        ConnStream::Layered { stream, .. } => return Ok((stream, leftover)),
        ConnStream::Socket(s) => s,
    };
    match layer {
        Some(layer) => {
            let wrapped = layer
                .0
                .wrap(rank, dialled, stream, leftover)
                .map_err(|e| Error::io(Some(rank), "setting up the stream layer", e))?;
            Ok((wrapped, Vec::new()))
        }
        None => Ok((Box::new(stream), leftover)),
    }
}

impl Listener for TcpListener {
    type Comm = TcpComm;

    fn address_bytes(&self) -> Vec<u8> {
        TcpListener::address_bytes(self)
    }

    fn connect_all(self, addrs: &[Vec<u8>], deadline: Instant) -> Result<TcpComm> {
        TcpListener::connect_all(self, addrs, deadline)
    }
}

impl LazyListener for TcpListener {
    fn connect_lazy(self, addrs: &[Vec<u8>], deadline: Instant) -> Result<TcpComm> {
        TcpListener::connect_lazy(self, addrs, deadline)
    }
}

/// A connection's stream while its handshake runs: the socket itself, or, for a layer that
/// [wraps the handshake](super::StreamLayer::wraps_handshake), the layer's stream over it.
pub(super) enum ConnStream {
    Socket(mio::net::TcpStream),
    /// `vouches`: the layer authenticates peers, so the rank it proved must be the rank the
    /// peer's `Hello` claims.
    Layered {
        stream: Box<dyn ByteStream>,
        vouches: bool,
    },
}

impl ConnStream {
    /// A new connection (to `dialled`, or accepted), wrapped now if the layer wants the
    /// transport's handshake inside it.
    pub(super) fn new(
        layer: Option<&Layer>,
        dialled: Option<Rank>,
        socket: mio::net::TcpStream,
    ) -> Result<ConnStream> {
        match layer {
            Some(l) if l.0.wraps_handshake() => {
                let stream =
                    l.0.wrap_connection(dialled, socket)
                        .map_err(|e| Error::io(dialled, "setting up the stream layer", e))?;
                Ok(ConnStream::Layered { stream, vouches: l.0.authenticates_peers() })
            }
            _ => Ok(ConnStream::Socket(socket)),
        }
    }

    pub(super) fn io(&mut self) -> &mut dyn ByteStream {
        match self {
            ConnStream::Socket(s) => s,
            ConnStream::Layered { stream, .. } => stream.as_mut(),
        }
    }

    /// Write `bytes` if there is room now, before the connection is closed: best effort,
    /// nothing is retried and errors are ignored (the connection is closing anyway).
    pub(super) fn write_last(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let s = self.io();
        if s.write_vectored(&[IoSlice::new(bytes)]).is_ok() && s.has_pending_output() {
            let _ = s.flush_pending();
        }
    }

    /// Close the connection now (a layered stream closes when dropped, after saying so in
    /// its own protocol).
    pub(super) fn shutdown(&self) {
        if let ConnStream::Socket(s) = self {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A connection whose handshake is under way.
pub(super) struct Conn {
    pub(super) stream: ConnStream,
    pub(super) hs: Handshake,
    /// Bytes read past the end of the handshake, for the data phase.
    pub(super) leftover: Vec<u8>,
    pub(super) until: Instant,
    /// For a connection we dial: the rank, and whether TCP is established yet.
    pub(super) dialled: Option<(Rank, bool)>,
}

enum Dial {
    Wait {
        at: Instant,
        backoff: Duration,
    },
    /// A dial under way; `backoff` is the wait before the next one if this one fails.
    InFlight {
        backoff: Duration,
    },
    Connected,
}

struct Setup {
    l: TcpListener,
    addrs: Vec<Option<SocketAddr>>,
    hs: HandshakeConfig,
    dials: HashMap<Rank, Dial>,
    conns: HashMap<usize, Conn>,
    next_token: usize,
    done: Vec<Option<(ConnStream, Vec<u8>)>>,
    last_err: HashMap<Rank, Error>,
    /// Per rank, the last authentication or configuration error of a connection that
    /// claimed to be it (wrong token, another job...): what the timeout reports, typed.
    refused: HashMap<Rank, Error>,
    hs_timeout: Duration,
    /// Accepted connections in `conns` (at most [`MAX_INCOMING`]).
    incoming: usize,
    /// The ranks to connect (every other rank for the full mesh).
    want: Vec<bool>,
}

impl Setup {
    fn new(l: TcpListener, addrs: &[Vec<u8>], want: Option<Vec<bool>>) -> Result<Setup> {
        let (me, size) = (l.cfg.rank, l.cfg.size);
        let want = want.unwrap_or_else(|| (0..size).map(|r| r != me.0).collect());
        let what = if want.iter().filter(|w| **w).count() + 1 == size as usize {
            "connect_all"
        } else {
            "connect_peers"
        };
        let parsed = parse_addrs(me, size, addrs, what, Some(&want))?;
        let now = Instant::now();
        let dials = (0..me.0)
            .filter(|r| want[*r as usize])
            .map(|r| (Rank(r), Dial::Wait { at: now, backoff: FIRST_BACKOFF }))
            .collect();
        let hs = HandshakeConfig { job: job_hash(&l.cfg.job), me, size, token: l.token.clone() };
        let hs_timeout = handshake_timeout(&l.cfg);
        Ok(Setup {
            hs,
            addrs: parsed,
            dials,
            conns: HashMap::new(),
            next_token: 0,
            done: (0..size).map(|_| None).collect(),
            last_err: HashMap::new(),
            refused: HashMap::new(),
            hs_timeout,
            incoming: 0,
            want,
            l,
        })
    }

    fn me(&self) -> Rank {
        self.l.cfg.rank
    }

    fn missing(&self) -> Vec<Rank> {
        (0..self.done.len())
            .filter(|r| self.want[*r] && self.done[*r].is_none())
            .map(|r| Rank(r as u32))
            .collect()
    }

    /// Connect every wanted rank; returns the poller the connections are registered with,
    /// each rank's connection and early bytes, and the configuration.
    fn run(mut self, deadline: Instant) -> Result<(mio::Poll, Connected, TcpConfig)> {
        let start = Instant::now();
        let (mut poll, mut events) = new_poll()?;
        poll.registry()
            .register(&mut self.l.listener, LISTEN, Interest::READABLE)
            .map_err(|e| Error::io(None, "registering the listener", e))?;
        loop {
            let now = Instant::now();
            if self.missing().is_empty() {
                break;
            }
            if now >= deadline {
                return Err(self.timeout(now - start));
            }
            self.start_dials(&poll, now, deadline)?;
            let more_to_accept = self.accept(&poll, now);
            let tokens: Vec<usize> = self.conns.keys().copied().collect();
            for t in tokens {
                self.drive(t, now)?;
            }
            if self.missing().is_empty() {
                break;
            }
            let mut wake = deadline;
            for d in self.dials.values() {
                if let Dial::Wait { at, .. } = d {
                    wake = wake.min(*at);
                }
            }
            for c in self.conns.values() {
                wake = wake.min(c.until);
            }
            let sleep = if more_to_accept {
                Duration::ZERO
            } else {
                wake.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
            };
            if let Err(e) = poll.poll(&mut events, Some(sleep.min(Duration::from_millis(200))))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(Error::io(None, "polling during connection set-up", e));
            }
        }
        self.finish(poll, start)
    }

    fn timeout(&self, waited: Duration) -> Error {
        let missing = self.missing();
        // A rank that did dial but was refused for its token or its job is the cause to
        // report, typed as what it was, rather than a bare timeout.
        let me = self.me();
        for r in &missing {
            let within =
                format!("rank {me} got no valid connection from rank {r} within {waited:.1?}");
            match self.refused.get(r) {
                Some(Error::Auth { detail, .. }) => {
                    return Error::Auth { peer: Some(*r), detail: format!("{within}: {detail}") };
                }
                Some(Error::Protocol { detail, .. }) => {
                    return Error::Protocol {
                        peer: Some(*r),
                        detail: format!("{within}: {detail}"),
                    };
                }
                _ => {}
            }
        }
        // The first missing rank's last failure is the error's source (so the OS error stays
        // reachable and is printed once); the other ranks' are said in the message.
        let first = missing.first().copied();
        let mut doing = format!("rank {me} could not connect to ");
        for (i, r) in missing.iter().enumerate() {
            if i > 0 {
                doing.push_str(", ");
            }
            match self.last_err.get(r) {
                Some(e) if i > 0 => doing.push_str(&format!("rank {r} ({})", ErrorChain(e))),
                _ => doing.push_str(&format!("rank {r}")),
            }
        }
        doing.push_str(&format!(" within {waited:.1?}"));
        let source = match first.and_then(|r| self.last_err.get(&r)) {
            Some(last) => io::Error::new(io::ErrorKind::TimedOut, last.clone()),
            None => io::ErrorKind::TimedOut.into(),
        };
        Error::Io { peer: first, doing, source: std::sync::Arc::new(source) }
    }

    fn start_dials(&mut self, poll: &mio::Poll, now: Instant, deadline: Instant) -> Result<()> {
        let due: Vec<Rank> = self
            .dials
            .iter()
            .filter(|(_, d)| matches!(d, Dial::Wait { at, .. } if *at <= now))
            .map(|(r, _)| *r)
            .collect();
        for r in due {
            let addr = self.addrs[r.index()].expect("every other rank has an address");
            let backoff = match self.dials.get(&r) {
                Some(Dial::Wait { backoff, .. }) => *backoff,
                _ => FIRST_BACKOFF,
            };
            match dial(addr) {
                Ok(stream) => {
                    let t = self.next_token;
                    self.next_token += 1;
                    let mut stream = ConnStream::new(self.l.cfg.layer.as_ref(), Some(r), stream)?;
                    poll.registry()
                        .register(
                            stream.io().source(),
                            Token(t),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .map_err(|e| Error::io(Some(r), "registering a connection", e))?;
                    let hs = Handshake::connector(self.hs.clone(), r, fresh_nonce()?);
                    let hs = self.l.cfg.handshake_mode(hs);
                    let until = (now + self.hs_timeout).min(deadline);
                    self.conns.insert(
                        t,
                        Conn { stream, hs, leftover: Vec::new(), until, dialled: Some((r, false)) },
                    );
                    self.dials.insert(r, Dial::InFlight { backoff });
                }
                Err(e) => {
                    self.retry(r, backoff, Error::io(Some(r), format!("connecting to {addr}"), e))
                }
            }
        }
        Ok(())
    }

    fn retry(&mut self, r: Rank, backoff: Duration, why: Error) {
        tracing::debug!(rank = %self.me(), peer = %r, why = %ErrorChain(&why), "retrying");
        self.last_err.insert(r, why);
        let at = Instant::now() + backoff;
        self.dials.insert(r, Dial::Wait { at, backoff: (backoff * 2).min(MAX_BACKOFF) });
    }

    /// Accept what is waiting, at most [`ACCEPT_BATCH`] connections; returns whether more
    /// may be waiting. The batch lets the handshakes already accepted (a real rank's among
    /// them) move on between batches, instead of being evicted by a flood accepted all at
    /// once before any of them was read.
    fn accept(&mut self, poll: &mio::Poll, now: Instant) -> bool {
        for _ in 0..ACCEPT_BATCH {
            match self.l.listener.accept() {
                Ok((stream, from)) => {
                    if self.incoming >= MAX_INCOMING {
                        self.evict_oldest(poll);
                    }
                    let _ = stream.set_nodelay(true);
                    let t = self.next_token;
                    self.next_token += 1;
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    let Ok(mut stream) = ConnStream::new(self.l.cfg.layer.as_ref(), None, stream)
                    else {
                        continue;
                    };
                    if poll.registry().register(stream.io().source(), Token(t), interest).is_err() {
                        continue;
                    }
                    let nonce = match fresh_nonce() {
                        Ok(n) => n,
                        Err(_) => continue,
                    };
                    tracing::trace!(rank = %self.me(), %from, "accepted");
                    let hs = self.l.cfg.handshake_mode(Handshake::acceptor(self.hs.clone(), nonce));
                    let until = now + self.hs_timeout;
                    self.conns
                        .insert(t, Conn { stream, hs, leftover: Vec::new(), until, dialled: None });
                    self.incoming += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Resource exhaustion (EMFILE...) is transient: try again next round.
                    tracing::warn!(rank = %self.me(), error = %crate::ErrorChain(&e), "accept failed");
                    return false;
                }
            }
        }
        true
    }

    /// Drop the accepted connection that has been in its handshake longest (see
    /// [`MAX_INCOMING`]), preferring one that has not even sent a valid `Hello`: a real
    /// rank's connection, accepted a moment ago, is then kept through a flood of silent
    /// ones for the round trip its handshake needs. Tokens grow in accept order, so the
    /// lowest is the oldest (`until` is not: one batch of accepts shares an instant).
    fn evict_oldest(&mut self, poll: &mio::Poll) {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, c)| c.dialled.is_none())
            .min_by_key(|(t, c)| (c.hs.claimed().is_some(), **t))
            .map(|(t, _)| *t);
        if let Some(mut c) = oldest.and_then(|t| self.conns.remove(&t)) {
            let _ = poll.registry().deregister(c.stream.io().source());
            c.stream.shutdown();
            self.incoming -= 1;
            tracing::warn!(rank = %self.me(), max = MAX_INCOMING, "dropped an incoming connection: too many handshakes at once");
        }
    }

    /// Take connection `t` out of the set, keeping the count of accepted ones.
    fn take(&mut self, t: usize) -> Conn {
        let c = self.conns.remove(&t).expect("the caller saw it present");
        if c.dialled.is_none() {
            self.incoming -= 1;
        }
        c
    }

    /// Advance one connection's handshake. Errors that no retry can fix (a dialled peer that
    /// fails authentication) end `connect_all`; others drop the connection.
    fn drive(&mut self, t: usize, now: Instant) -> Result<()> {
        let Some(c) = self.conns.get_mut(&t) else { return Ok(()) };
        let outcome = step(c, now);
        let dialled = c.dialled.map(|(r, _)| r);
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(rank)) => {
                let c = self.take(t);
                let duplicate = self.done[rank.index()].is_some();
                let wrong = match dialled {
                    Some(r) => r != rank,
                    None => rank <= self.me() || !self.want[rank.index()],
                };
                if duplicate || wrong {
                    tracing::warn!(rank = %self.me(), peer = %rank, "refusing a duplicate connection");
                    return Ok(());
                }
                if let Some(r) = dialled {
                    self.dials.insert(r, Dial::Connected);
                }
                tracing::debug!(rank = %self.me(), peer = %rank, "connected");
                self.done[rank.index()] = Some((c.stream, c.leftover));
                Ok(())
            }
            Err(e) => {
                let mut c = self.take(t);
                // What the handshake queued before failing (our `Hello` for a dialler of
                // another job, so that it can name the mismatch) goes out first; the socket
                // is fresh, so its buffer takes it whole. Best effort: it closes anyway.
                c.stream.write_last(c.hs.output());
                c.stream.shutdown();
                let claimed = c.hs.claimed().or(e.peer());
                match dialled {
                    Some(r) => {
                        // The rank at the published address refused our token or belongs
                        // to another job or group size: no retry can change that.
                        if matches!(e, Error::Auth { .. } | Error::Config { .. }) {
                            return Err(e);
                        }
                        // Back off as for a refused dial: an address whose handshake fails
                        // (a forged or stale entry) must not be redialled every few ms.
                        let backoff = match self.dials.get(&r) {
                            Some(Dial::InFlight { backoff }) => *backoff,
                            _ => FIRST_BACKOFF,
                        };
                        self.retry(r, backoff, e);
                    }
                    None => {
                        tracing::warn!(rank = %self.me(), error = %ErrorChain(&e), "rejected a connection");
                        if let Some(r) = claimed.filter(|r| r.index() < self.done.len()) {
                            self.last_err.insert(r, e.clone());
                            if matches!(e, Error::Auth { .. } | Error::Protocol { .. }) {
                                self.refused.insert(r, e);
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn finish(
        mut self,
        poll: mio::Poll,
        start: Instant,
    ) -> Result<(mio::Poll, Connected, TcpConfig)> {
        let _ = poll.registry().deregister(&mut self.l.listener);
        for (_, mut c) in self.conns.drain() {
            let _ = poll.registry().deregister(c.stream.io().source());
        }
        tracing::debug!(rank = %self.me(), took = ?start.elapsed(), "connected");
        Ok((poll, self.done, self.l.cfg))
    }
}

/// Each rank's connection whose handshake succeeded, and the bytes read past it.
type Connected = Vec<Option<(ConnStream, Vec<u8>)>>;

/// The communicator over the full mesh `run` connected.
fn finish(poll: mio::Poll, done: Connected, cfg: &TcpConfig) -> Result<TcpComm> {
    let me = cfg.rank;
    let mut engine = Engine::new(me, cfg.size, engine_config(cfg));
    for (r, slot) in done.into_iter().enumerate() {
        let Some((mut stream, leftover)) = slot else { continue };
        let rank = Rank(r as u32);
        poll.registry()
            .reregister(stream.io().source(), Token(r), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| Error::io(Some(rank), "registering", e))?;
        let (stream, early) = data_stream(cfg.layer.as_ref(), rank, rank < me, stream, leftover)?;
        engine.attach(rank, TcpLink(stream), &early);
    }
    let waker =
        Waker::new(poll.registry(), WAKE).map_err(|e| Error::io(None, "creating a waker", e))?;
    TcpComm::start(engine, poll, waker, None)
}

/// Write what the handshake has to send until the stream would block, and push out what a
/// stream layer holds of its own (its handshake records, or our frames it encrypted).
fn write_handshake(c: &mut Conn, peer: Option<Rank>) -> Result<()> {
    let s = c.stream.io();
    while !c.hs.output().is_empty() {
        match s.write_vectored(&[IoSlice::new(c.hs.output())]) {
            Ok(0) => return Err(Error::io(peer, "handshake", io::ErrorKind::WriteZero.into())),
            Ok(n) => c.hs.consumed_output(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(peer, "handshake", e)),
        }
    }
    if s.has_pending_output() {
        match s.flush_pending() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(stream_error(peer, "handshake", e)),
        }
    }
    Ok(())
}

/// A layer that authenticates peers proved which rank is at the other end: the rank the
/// peer's `Hello` claims must be that one (a valid certificate of rank 2 cannot serve as
/// rank 3). Checked as soon as a claim is known, before any decision on the connection.
fn check_claim(c: &Conn) -> Result<()> {
    let ConnStream::Layered { stream, vouches: true } = &c.stream else { return Ok(()) };
    let Some(claimed) = c.hs.claimed() else { return Ok(()) };
    match stream.peer_rank() {
        Some(r) if r == claimed => Ok(()),
        // We dialled `claimed`, and the layer checks that itself; its handshake may still
        // be running.
        None if c.dialled.is_some() => Ok(()),
        Some(r) => Err(Error::Auth {
            peer: Some(claimed),
            detail: format!("claims to be rank {claimed}, but its certificate is rank {r}'s"),
        }),
        None => Err(Error::Auth {
            peer: Some(claimed),
            detail: "claims a rank its stream layer did not authenticate".into(),
        }),
    }
}

/// Move a connection's handshake forward; `Some(rank)` when it is complete on our side. A
/// lazy acceptor stops at its decision (`Ok(None)` with
/// [`pending_verdict`](Handshake::pending_verdict) set) and is stepped again after it.
pub(super) fn step(c: &mut Conn, now: Instant) -> Result<Option<Rank>> {
    let peer = c.hs.claimed();
    if now >= c.until {
        return Err(Error::Protocol {
            peer,
            detail: "the handshake did not finish in time".into(),
        });
    }
    if let Some((_, established)) = &mut c.dialled
        && !*established
    {
        match c.stream.io().connect_finished() {
            Ok(true) => *established = true,
            Ok(false) => return Ok(None),
            Err(e) => return Err(Error::io(peer, "connecting", e)),
        }
    }
    write_handshake(c, peer)?;
    let mut buf = [0u8; 512];
    // Nothing is read while a decision is pending, so a peer cannot make us buffer more than
    // one read past its handshake.
    while c.hs.done().is_none() && c.hs.pending_verdict().is_none() {
        match c.stream.io().read(&mut buf) {
            Ok(0) => {
                let detail = "the connection closed during the handshake".to_string();
                return Err(Error::Protocol { peer: c.hs.claimed(), detail });
            }
            Ok(n) => {
                let used = c.hs.feed(&buf[..n])?;
                c.leftover.extend_from_slice(&buf[used..n]);
                if let Err(e) = check_claim(c) {
                    // A refused claim gets no answer: what the handshake queued in reply
                    // (our `Hello` and MAC) is for the rank it claims, which it is not.
                    c.hs.consumed_output(c.hs.output().len());
                    return Err(e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(c.hs.claimed(), "handshake", e)),
        }
    }
    // Our last frame may have been produced by the read above.
    write_handshake(c, peer)?;
    Ok(c.hs.done().filter(|_| c.hs.output().is_empty()))
}
