//! The TCP store server: one thread, one mio event loop, every client on it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::check_token;
use super::proto::{
    CLIENT_LABEL, Cmd, ERR_AUTH, ERR_INVALID, ERR_PROTOCOL, Frame, MAGIC, MAX_FRAME,
    MAX_PREAUTH_FRAME, NONCE_LEN, Reader, SERVER_LABEL, ST_ERROR, ST_OK, ST_TIMEOUT, VERSION,
    looks_like_tls, nonce, proof, verify_proof,
};
use super::stream::ServerStream;
use crate::error::{Error, Result};
use crate::store::check_key;
use crate::table::{Swap, Table};

#[cfg(feature = "fuzzing")]
#[path = "server_fuzz.rs"]
pub(crate) mod fuzz;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// Bytes read from one connection per turn before the loop serves the others (fairness).
const READ_BUDGET: usize = 4 << 20;

/// A connection whose unsent responses exceed this is not read from until they drain, so a
/// client that pipelines requests without reading answers cannot grow the server's memory.
const WBUF_HIGH: usize = 2 * MAX_FRAME;

/// Parked waits one connection may hold (a well-behaved client holds one).
const MAX_WAITERS_PER_CONN: usize = 1024;

/// How often connection deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Settings of a [`TcpStoreServer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The job token clients must prove they hold (HMAC-SHA256 challenge-response). `None`:
    /// no authentication, allowed only on loopback unless `allow_insecure_remote` is set.
    pub token: Option<Vec<u8>>,
    /// A connection that has not completed the handshake within this time is dropped.
    pub handshake_timeout: Duration,
    /// A connection that stops sending in the middle of a request for this long is dropped.
    pub read_timeout: Duration,
    /// Connections beyond this many are refused.
    pub max_connections: usize,
    /// Serve a non-loopback address without a token (Gloo's behaviour; off by default).
    pub allow_insecure_remote: bool,
    /// Mutual TLS with the job's certificates (feature `tls`): every connection is a TLS 1.3
    /// session in which the server presents this certificate and requires one of the same
    /// job (any rank, or a store) from the client. A routable address then needs no token.
    #[cfg(feature = "tls")]
    pub tls: Option<gloo_tls::TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            handshake_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            max_connections: 65_536,
            allow_insecure_remote: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ServerConfig {
    /// The default settings with `token` (none: unauthenticated, loopback only).
    pub fn with_token(token: Option<&[u8]>) -> Self {
        ServerConfig { token: token.map(<[u8]>::to_vec), ..Self::default() }
    }
}

/// A running TCP store server: a thread with one mio event loop serving every client.
///
/// Dropping the handle stops the server and closes every connection.
#[derive(Debug)]
pub struct TcpStoreServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    live: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TcpStoreServer {
    /// Bind `addr` (port 0: a free port) and serve in a background thread. With a `token`,
    /// clients must prove they hold it.
    pub fn bind(addr: SocketAddr, token: Option<&[u8]>) -> Result<Self> {
        Self::bind_with(addr, ServerConfig::with_token(token))
    }

    /// [`bind`](Self::bind) with every setting.
    pub fn bind_with(addr: SocketAddr, cfg: ServerConfig) -> Result<Self> {
        if let Some(t) = &cfg.token {
            check_token(t)?;
        }
        #[cfg(feature = "tls")]
        let acceptor = cfg.tls.as_ref().map(gloo_tls::TlsConfig::store_acceptor);
        #[cfg(not(feature = "tls"))]
        let acceptor: Option<Acceptor> = None;
        if cfg.token.is_none()
            && acceptor.is_none()
            && !addr.ip().is_loopback()
            && !cfg.allow_insecure_remote
        {
            return Err(Error::Config {
                detail: format!(
                    "refusing to serve the store on {addr} without a token: anyone who can \
                     reach it could read and change the job's keys; set a job token \
                     (GLOO_AUTH_TOKEN, or ServerConfig::token) or TLS certificates \
                     (GLOO_TLS_CA, GLOO_TLS_CERT, GLOO_TLS_KEY), bind a loopback address, or \
                     opt into allow_insecure_remote"
                ),
            });
        }
        let listener = TcpListener::bind(addr)
            .map_err(|e| Error::io(None, format!("binding the store server to {addr}"), e))?;
        let local_addr =
            listener.local_addr().map_err(|e| Error::io(None, "reading the bound address", e))?;
        let poll = Poll::new().map_err(|e| Error::io(None, "creating the event loop", e))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER)
                .map_err(|e| Error::io(None, "creating the event loop waker", e))?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let mut server =
            Server::new(poll, listener, acceptor, cfg, stop.clone(), live.clone(), 64 << 10);
        server
            .poll
            .registry()
            .register(&mut server.listener, LISTENER, Interest::READABLE)
            .map_err(|e| Error::io(None, "registering the listener", e))?;
        let thread = std::thread::Builder::new()
            .name(format!("gloo-store {local_addr}"))
            .spawn(move || server.run())
            .map_err(|e| Error::io(None, "spawning the store server thread", e))?;
        tracing::debug!(%local_addr, "store server listening");
        Ok(TcpStoreServer { local_addr, stop, waker, live, thread: Some(thread) })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The number of client connections open now (for monitoring, and for tests that check
    /// that dropped and misbehaving clients leave no connection behind).
    pub fn connections(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Serve until the server thread ends (it ends only when the handle is dropped from
    /// another thread or the event loop fails); for the standalone binary.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stop the server now (also done on drop).
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // If waking fails the loop still sees the flag within one sweep interval.
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TcpStoreServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[derive(Debug)]
enum Phase {
    Hello,
    Auth { server_nonce: [u8; NONCE_LEN], client_nonce: [u8; NONCE_LEN] },
    Ready,
}

#[derive(Debug)]
struct Conn {
    stream: ServerStream,
    peer: SocketAddr,
    generation: u64,
    phase: Phase,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    accepted: Instant,
    last_read: Instant,
    waiters: usize,
    /// Whether the connection is in the list of answers to write at the end of this pass.
    queued: bool,
}

impl Conn {
    fn pending_out(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Write what is buffered until the socket would block.
    fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        // A TLS session keeps what the socket did not take; the next writable event
        // brings it back here.
        match self.stream.flush_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// A response frame appended to this connection's unsent output; hand the finished
    /// buffer back with [`push`](Self::push) before anything else is pushed.
    fn frame(&mut self, status: u8, req_id: u32) -> Frame {
        Frame::response_after(std::mem::take(&mut self.wbuf), status, req_id)
    }

    fn push(&mut self, frame: Vec<u8>) {
        if self.wbuf.is_empty() {
            self.wbuf = frame;
        } else {
            self.wbuf.extend_from_slice(&frame);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitKind {
    Get,
    Wait,
}

#[derive(Debug)]
struct Waiter {
    conn: usize,
    conn_gen: u64,
    req_id: u32,
    kind: WaitKind,
    keys: Vec<Vec<u8>>,
    /// How many of `keys` (counting repeats) are absent now, kept up to date as keys appear
    /// and disappear, so a set costs O(its waiters), not O(every key they wait for).
    missing: usize,
}

/// Why a connection is dropped (logged as a warning: every one of these is a misbehaving or
/// unauthorised client).
#[derive(Debug)]
struct Drop_(String);

/// What makes a TLS session of an accepted connection.
#[cfg(feature = "tls")]
type Acceptor = gloo_tls::TlsAcceptor;
/// Without the `tls` feature there is never one.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
enum Acceptor {}

struct Server {
    poll: Poll,
    listener: TcpListener,
    acceptor: Option<Acceptor>,
    cfg: ServerConfig,
    stop: Arc<AtomicBool>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    live_shared: Arc<AtomicUsize>,
    table: Table,
    waiters: HashMap<u64, Waiter>,
    by_key: HashMap<Vec<u8>, Vec<u64>>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    next_waiter: u64,
    next_gen: u64,
    again: Vec<usize>,
    dirty: Vec<usize>,
    scratch: Vec<u8>,
}

impl Server {
    /// A server with no connection and an empty map; `scratch_len` is the size of the buffer
    /// sockets are read into (the fuzzing harness, which reads no socket, passes 0).
    pub(super) fn new(
        poll: Poll,
        listener: TcpListener,
        acceptor: Option<Acceptor>,
        cfg: ServerConfig,
        stop: Arc<AtomicBool>,
        live_shared: Arc<AtomicUsize>,
        scratch_len: usize,
    ) -> Server {
        Server {
            poll,
            listener,
            acceptor,
            cfg,
            stop,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            live_shared,
            table: Table::default(),
            waiters: HashMap::new(),
            by_key: HashMap::new(),
            timers: BinaryHeap::new(),
            next_waiter: 0,
            next_gen: 0,
            again: Vec::new(),
            dirty: Vec::new(),
            scratch: vec![0; scratch_len],
        }
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut until = next_sweep;
            if let Some(Reverse((t, _))) = self.timers.peek() {
                until = until.min(*t);
            }
            let timeout = if self.again.is_empty() {
                until.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %gloo_transport::ErrorChain(&e), "store server event loop failed; stopping");
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(idx) => {
                        if ev.is_writable() {
                            self.on_writable(idx);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            // With a hang-up in the same event, read on to the end of the
                            // stream: no later event would announce it.
                            let eager = !(ev.is_read_closed() || ev.is_error());
                            self.on_readable(idx, eager);
                        }
                    }
                }
            }
            for idx in std::mem::take(&mut self.again) {
                self.on_readable(idx, false);
            }
            let now = Instant::now();
            self.expire_waiters(now);
            self.flush_dirty();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
        }
        tracing::debug!("store server stopped");
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.live >= self.cfg.max_connections {
                        tracing::warn!(%peer, limit = self.cfg.max_connections,
                            "store server refused a connection: too many connections");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let mut stream = match self.wrap(stream) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(%peer, error = %gloo_transport::ErrorChain(&e), "store server could not start TLS");
                            continue;
                        }
                    };
                    let idx = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if let Err(e) = self.poll.registry().register(
                        stream.socket(),
                        Token(idx),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!(%peer, error = %gloo_transport::ErrorChain(&e), "store server could not register a connection");
                        self.free.push(idx);
                        continue;
                    }
                    let now = Instant::now();
                    self.next_gen += 1;
                    self.conns[idx] = Some(Conn {
                        stream,
                        peer,
                        generation: self.next_gen,
                        phase: Phase::Hello,
                        rbuf: Vec::new(),
                        wbuf: Vec::new(),
                        wpos: 0,
                        accepted: now,
                        last_read: now,
                        waiters: 0,
                        queued: false,
                    });
                    self.live += 1;
                    self.live_shared.store(self.live, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, most likely: the pending connections stay queued in
                    // the kernel and are taken when the next one arrives or a slot frees.
                    tracing::warn!(error = %gloo_transport::ErrorChain(&e), "store server could not accept a connection");
                    return;
                }
            }
        }
    }

    /// An accepted connection's stream: a TLS session when the server has certificates.
    fn wrap(&self, stream: mio::net::TcpStream) -> io::Result<ServerStream> {
        match &self.acceptor {
            #[cfg(feature = "tls")]
            Some(a) => Ok(ServerStream::Tls(Box::new(a.accept(stream)?))),
            #[cfg(not(feature = "tls"))]
            Some(a) => match *a {},
            None => Ok(ServerStream::Plain(stream)),
        }
    }

    fn close(&mut self, idx: usize, conn: Conn, why: Option<&str>) {
        match why {
            Some(why) => tracing::warn!(peer = %conn.peer, "store server dropped a client: {why}"),
            None => tracing::debug!(peer = %conn.peer, "store client disconnected"),
        }
        if conn.waiters > 0 {
            let ids: Vec<u64> = self
                .waiters
                .iter()
                .filter(|(_, w)| w.conn == idx && w.conn_gen == conn.generation)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.remove_waiter(id);
            }
        }
        let mut stream = conn.stream;
        let _ = self.poll.registry().deregister(stream.socket());
        self.live -= 1;
        self.live_shared.store(self.live, Ordering::Relaxed);
        self.free.push(idx);
    }

    fn on_writable(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else { return };
        let was_high = conn.pending_out() > WBUF_HIGH;
        if let Err(e) = conn.flush() {
            let conn =
                self.conns[idx].take().expect("the slot was seen holding a connection just above");
            self.close(idx, conn, Some(&format!("write failed: {e}")));
            return;
        }
        if was_high && conn.pending_out() <= WBUF_HIGH {
            // Reading was paused for this connection; resume (its readable edge may be gone).
            self.again.push(idx);
        }
    }

    /// `short_read_ends`: a read shorter than the buffer may end the turn (see `serve`).
    fn on_readable(&mut self, idx: usize, short_read_ends: bool) {
        let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) else { return };
        match self.serve(idx, &mut conn, short_read_ends) {
            Ok(true) => self.conns[idx] = Some(conn),
            Ok(false) => {
                // A client that half-closed after its last request still gets the answer.
                let _ = conn.flush();
                self.close(idx, conn, None);
            }
            Err(Drop_(why)) => {
                // Best effort: let the client read why before the socket closes.
                let _ = conn.flush();
                self.close(idx, conn, Some(&why));
            }
        }
    }

    /// Answers are written after every ready connection has been read (like Redis does),
    /// so one pass of the loop answers a whole batch of clients: fewer context switches
    /// than writing each answer the moment it is ready.
    fn mark_dirty(&mut self, idx: usize, conn: &mut Conn) {
        if conn.pending_out() > 0 && !conn.queued {
            conn.queued = true;
            self.dirty.push(idx);
        }
    }

    /// Write the answers queued during this pass of the loop.
    fn flush_dirty(&mut self) {
        for idx in std::mem::take(&mut self.dirty) {
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else { continue };
            conn.queued = false;
            if let Err(e) = conn.flush() {
                let conn = self.conns[idx]
                    .take()
                    .expect("the slot was seen holding a connection just above");
                self.close(idx, conn, Some(&format!("write failed: {e}")));
            }
        }
    }

    /// Read and answer what a connection sent; `Ok(false)` when the client closed.
    fn serve(
        &mut self,
        idx: usize,
        conn: &mut Conn,
        short_read_ends: bool,
    ) -> std::result::Result<bool, Drop_> {
        let mut budget = READ_BUDGET;
        loop {
            self.process_frames(idx, conn)?;
            if conn.pending_out() > WBUF_HIGH {
                conn.flush().map_err(|e| Drop_(format!("write failed: {e}")))?;
            }
            if conn.pending_out() > WBUF_HIGH {
                // Resumed from on_writable once the client reads its answers.
                return Ok(true);
            }
            if budget == 0 {
                self.mark_dirty(idx, conn);
                self.again.push(idx);
                return Ok(true);
            }
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => {
                    return if conn.rbuf.is_empty() {
                        Ok(false)
                    } else {
                        Err(Drop_(format!(
                            "closed in the middle of a request ({} bytes buffered)",
                            conn.rbuf.len()
                        )))
                    };
                }
                Ok(n) => {
                    conn.rbuf.extend_from_slice(&self.scratch[..n]);
                    conn.last_read = Instant::now();
                    budget = budget.saturating_sub(n);
                    if short_read_ends
                        && n < self.scratch.len()
                        && conn.stream.drains_on_short_read()
                    {
                        // A short read drained the socket; with edge-triggered readiness the
                        // next arrival (data or hang-up) raises a new event, so the read that
                        // would only say "would block" is skipped (one system call less per
                        // request).
                        self.process_frames(idx, conn)?;
                        self.mark_dirty(idx, conn);
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.mark_dirty(idx, conn);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(false),
                // A TLS client that went away without close_notify between requests has
                // just gone, like a plain one closing.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && conn.rbuf.is_empty() => {
                    return Ok(false);
                }
                Err(e) => return Err(Drop_(format!("read failed: {e}"))),
            }
        }
    }

    /// Answer every complete frame in the connection's read buffer.
    fn process_frames(&mut self, idx: usize, conn: &mut Conn) -> std::result::Result<(), Drop_> {
        let mut pos = 0;
        let rbuf = std::mem::take(&mut conn.rbuf);
        let result = loop {
            if conn.pending_out() > WBUF_HIGH {
                break Ok(());
            }
            let avail = &rbuf[pos..];
            if avail.len() < 4 {
                break Ok(());
            }
            if pos == 0
                && matches!(conn.phase, Phase::Hello)
                && conn.stream.is_plain()
                && looks_like_tls(avail)
            {
                // A TLS client's ClientHello. It cannot read a store frame, but an answer
                // that is not TLS tells it at once that this server does not speak TLS
                // (rather than a silent close it would retry until its deadline).
                conn.push(error_frame(0, ERR_PROTOCOL, b"", NOT_TLS));
                break Err(Drop_(
                    "sent a TLS ClientHello, but this store server does not speak TLS (serve \
                     the store with the job's TLS certificates, GLOO_TLS_CA, GLOO_TLS_CERT and \
                     GLOO_TLS_KEY, or connect without TLS)"
                        .into(),
                ));
            }
            let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
            let limit =
                if matches!(conn.phase, Phase::Ready) { MAX_FRAME } else { MAX_PREAUTH_FRAME };
            if len > limit {
                break Err(Drop_(format!(
                    "request length {len} exceeds the limit of {limit} bytes{}",
                    if limit == MAX_PREAUTH_FRAME { " before authentication" } else { "" }
                )));
            }
            if avail.len() < 4 + len {
                break Ok(());
            }
            let body = &avail[4..4 + len];
            pos += 4 + len;
            if let Err(e) = self.handle(idx, conn, body) {
                break Err(e);
            }
        };
        let mut rbuf = rbuf;
        rbuf.drain(..pos);
        conn.rbuf = rbuf;
        result
    }

    fn handle(
        &mut self,
        idx: usize,
        conn: &mut Conn,
        body: &[u8],
    ) -> std::result::Result<(), Drop_> {
        let mut r = Reader::new(body, "request");
        let (cmd_byte, req_id) = match (r.u8(), r.u32()) {
            (Ok(c), Ok(id)) => (c, id),
            _ => return Err(Drop_(format!("request of {} bytes has no header", body.len()))),
        };
        let Some(cmd) = Cmd::from_u8(cmd_byte) else {
            return Err(Drop_(format!("unknown command 0x{cmd_byte:02x}")));
        };
        match (&conn.phase, cmd) {
            (Phase::Hello, Cmd::Hello) => self.hello(conn, req_id, r),
            (Phase::Hello, _) => Err(Drop_(format!("sent {cmd:?} before the hello"))),
            (Phase::Auth { .. }, Cmd::Auth) => self.auth(conn, req_id, r),
            (Phase::Auth { .. }, _) => {
                conn.push(error_frame(req_id, ERR_AUTH, b"", "the store requires the job token"));
                Err(Drop_(format!("sent {cmd:?} without authenticating")))
            }
            (Phase::Ready, Cmd::Hello | Cmd::Auth) => {
                Err(Drop_(format!("sent {cmd:?} after the handshake")))
            }
            (Phase::Ready, _) => match self.command(idx, conn, cmd, req_id, r) {
                Ok(()) => Ok(()),
                Err(Error::Protocol { detail }) => {
                    Err(Drop_(format!("malformed {cmd:?}: {detail}")))
                }
                Err(Error::InvalidArgument { key, what }) => {
                    conn.push(error_frame(
                        req_id,
                        ERR_INVALID,
                        key.as_deref().unwrap_or(b""),
                        &what,
                    ));
                    Ok(())
                }
                Err(other) => {
                    conn.push(error_frame(req_id, ERR_PROTOCOL, b"", &other.to_string()));
                    Ok(())
                }
            },
        }
    }

    fn hello(
        &mut self,
        conn: &mut Conn,
        req_id: u32,
        mut r: Reader<'_>,
    ) -> std::result::Result<(), Drop_> {
        let parsed = (|| {
            let magic: [u8; 9] = r.array()?;
            let version = r.u16()?;
            let client_nonce: [u8; NONCE_LEN] = r.array()?;
            r.end()?;
            Ok::<_, Error>((magic, version, client_nonce))
        })();
        let (magic, version, client_nonce) =
            parsed.map_err(|e| Drop_(format!("malformed hello: {e}")))?;
        if &magic != MAGIC {
            return Err(Drop_("hello without the store's magic (not a gloo store client)".into()));
        }
        if version != VERSION {
            conn.push(error_frame(
                req_id,
                ERR_PROTOCOL,
                b"",
                &format!(
                    "store protocol version {version} not supported (server speaks {VERSION})"
                ),
            ));
            return Err(Drop_(format!("protocol version {version} not supported")));
        }
        let server_nonce = nonce().map_err(|e| Drop_(e.to_string()))?;
        let mut f = Frame::response(ST_OK, req_id);
        f.u16(VERSION).u8(u8::from(self.cfg.token.is_some())).raw(&server_nonce);
        conn.push(finish(f));
        conn.phase = if self.cfg.token.is_some() {
            Phase::Auth { server_nonce, client_nonce }
        } else {
            Phase::Ready
        };
        Ok(())
    }

    fn auth(
        &mut self,
        conn: &mut Conn,
        req_id: u32,
        mut r: Reader<'_>,
    ) -> std::result::Result<(), Drop_> {
        let Phase::Auth { server_nonce, client_nonce } = conn.phase else {
            return Err(Drop_("auth out of order".into()));
        };
        // The token is set whenever the phase is Auth.
        let token = self.cfg.token.clone().unwrap_or_default();
        let mac: [u8; 32] = r.array().map_err(|e| Drop_(format!("malformed auth: {e}")))?;
        if !verify_proof(&token, CLIENT_LABEL, &server_nonce, &client_nonce, &mac) {
            conn.push(error_frame(req_id, ERR_AUTH, b"", "wrong job token"));
            return Err(Drop_("client failed token authentication".into()));
        }
        let mut f = Frame::response(ST_OK, req_id);
        f.raw(proof(&token, SERVER_LABEL, &server_nonce, &client_nonce).as_ref());
        conn.push(finish(f));
        conn.phase = Phase::Ready;
        Ok(())
    }

    fn command(
        &mut self,
        idx: usize,
        conn: &mut Conn,
        cmd: Cmd,
        req_id: u32,
        mut r: Reader<'_>,
    ) -> Result<()> {
        match cmd {
            Cmd::Set => {
                let (key, value) = (r.bytes()?, r.bytes()?);
                r.end()?;
                let created = self.table.set(key, value)?;
                self.ok(idx, conn, req_id, |_| {}, created.then_some(key));
            }
            Cmd::Get | Cmd::Wait => {
                let timeout_ms = r.u64()?;
                let n = r.count(4)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = r.bytes()?;
                    check_key(k)?;
                    keys.push(k.to_vec());
                }
                r.end()?;
                let kind = if cmd == Cmd::Get { WaitKind::Get } else { WaitKind::Wait };
                self.wait(idx, conn, req_id, kind, keys, timeout_ms)?;
            }
            Cmd::TryGet => {
                let key = r.bytes()?;
                r.end()?;
                let mut f = conn.frame(ST_OK, req_id);
                match self.table.get(key) {
                    Some(v) => f.u8(1).bytes(v),
                    None => f.u8(0),
                };
                conn.push(finish(f));
            }
            Cmd::Add => {
                let (key, delta) = (r.bytes()?, r.i64()?);
                r.end()?;
                let (new, created) = self.table.add(key, delta)?;
                self.ok(
                    idx,
                    conn,
                    req_id,
                    |f| {
                        f.i64(new);
                    },
                    created.then_some(key),
                );
            }
            Cmd::CompareSet => {
                let key = r.bytes()?;
                let expected = if r.u8()? == 1 { Some(r.bytes()?) } else { None };
                let new = r.bytes()?;
                r.end()?;
                let mut f = conn.frame(ST_OK, req_id);
                let created = match self.table.compare_set(key, expected, new)? {
                    Swap::Swapped { created } => {
                        f.u8(1);
                        created
                    }
                    Swap::Mismatch(current) => {
                        match current {
                            Some(v) => f.u8(0).u8(1).bytes(v),
                            None => f.u8(0).u8(0),
                        };
                        false
                    }
                };
                conn.push(finish(f));
                if created {
                    self.wake(key, idx, conn);
                }
            }
            Cmd::MultiSet => {
                let n = r.count(8)?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    pairs.push((r.bytes()?, r.bytes()?));
                }
                r.end()?;
                let created = self.table.multi_set(&pairs)?;
                self.ok(idx, conn, req_id, |_| {}, None);
                for k in created {
                    self.wake(k, idx, conn);
                }
            }
            Cmd::Append => {
                let (key, value) = (r.bytes()?, r.bytes()?);
                r.end()?;
                let created = self.table.append(key, value)?;
                self.ok(idx, conn, req_id, |_| {}, created.then_some(key));
            }
            Cmd::Delete => {
                let key = r.bytes()?;
                r.end()?;
                let existed = self.table.delete(key)?;
                if existed {
                    // Waits on this key count it as missing again.
                    for id in self.by_key.get(key).into_iter().flatten() {
                        if let Some(w) = self.waiters.get_mut(id) {
                            w.missing += 1;
                        }
                    }
                }
                self.ok(
                    idx,
                    conn,
                    req_id,
                    |f| {
                        f.u8(u8::from(existed));
                    },
                    None,
                );
            }
            Cmd::Ping => {
                r.end()?;
                self.ok(idx, conn, req_id, |_| {}, None);
            }
            Cmd::Hello | Cmd::Auth => {
                return Err(Error::Protocol {
                    detail: "handshake command after the handshake".into(),
                });
            }
        }
        Ok(())
    }

    /// Answer a write with `ST_OK` and what `body` adds, then answer the waits that `created`
    /// (the key the write created, if it did) completes: the writer's answer goes first, so
    /// a client that waits on its own write sees the two in order.
    fn ok(
        &mut self,
        idx: usize,
        conn: &mut Conn,
        req_id: u32,
        body: impl FnOnce(&mut Frame),
        created: Option<&[u8]>,
    ) {
        let mut f = conn.frame(ST_OK, req_id);
        body(&mut f);
        conn.push(finish(f));
        if let Some(key) = created {
            self.wake(key, idx, conn);
        }
    }

    /// Answer a get or wait now if every key exists, else park it until they do or
    /// `timeout_ms` passes.
    fn wait(
        &mut self,
        idx: usize,
        conn: &mut Conn,
        req_id: u32,
        kind: WaitKind,
        keys: Vec<Vec<u8>>,
        timeout_ms: u64,
    ) -> Result<()> {
        let missing = keys.iter().filter(|k| !self.table.contains(k)).count();
        if missing == 0 {
            let base = std::mem::take(&mut conn.wbuf);
            conn.push(self.answer(base, kind, req_id, &keys));
            return Ok(());
        }
        if conn.waiters >= MAX_WAITERS_PER_CONN {
            return Err(Error::InvalidArgument {
                key: None,
                what: format!("more than {MAX_WAITERS_PER_CONN} waits parked on one connection"),
            });
        }
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(7 * 24 * 3600 * 1000));
        let id = self.next_waiter;
        self.next_waiter += 1;
        for k in &keys {
            self.by_key.entry(k.clone()).or_default().push(id);
        }
        let waiter = Waiter { conn: idx, conn_gen: conn.generation, req_id, kind, keys, missing };
        self.waiters.insert(id, waiter);
        self.timers.push(Reverse((deadline, id)));
        conn.waiters += 1;
        Ok(())
    }

    /// The answer to a satisfied wait (every key present).
    fn answer(&self, base: Vec<u8>, kind: WaitKind, req_id: u32, keys: &[Vec<u8>]) -> Vec<u8> {
        match kind {
            WaitKind::Wait => finish(Frame::response_after(base, ST_OK, req_id)),
            WaitKind::Get => {
                // The size is summed before anything is copied, so an answer over the limit
                // (many keys holding large values) costs no memory.
                let values = keys.iter().map(|k| self.table.get(k).unwrap_or_default());
                let total = values.clone().fold(4usize, |n, v| n.saturating_add(4 + v.len()));
                if total > MAX_FRAME {
                    let mut buf = base;
                    buf.extend_from_slice(&error_frame(
                        req_id,
                        ERR_INVALID,
                        b"",
                        &format!(
                            "the {} values asked for ({total} bytes) exceed the frame limit of \
                             {MAX_FRAME} bytes; ask for fewer at once",
                            keys.len()
                        ),
                    ));
                    return buf;
                }
                let mut f = Frame::response_after(base, ST_OK, req_id);
                f.u32(keys.len() as u32);
                // Callers answer only when every key is present.
                for v in values {
                    f.bytes(v);
                }
                finish(f)
            }
        }
    }

    /// `key` was just created: count it in for every parked wait on it, and answer the waits
    /// it completes. `current` is the connection being served (taken out of the table while
    /// it is).
    fn wake(&mut self, key: &[u8], current: usize, conn: &mut Conn) {
        let Some(ids) = self.by_key.get(key) else { return };
        let mut ready = Vec::new();
        // An id appears once per time its wait names the key, as `missing` counts it.
        for id in ids {
            if let Some(w) = self.waiters.get_mut(id) {
                w.missing = w.missing.saturating_sub(1);
                if w.missing == 0 {
                    ready.push(*id);
                }
            }
        }
        ready.dedup();
        let table = &self.table;
        ready.retain(|id| {
            self.waiters.get(id).is_some_and(|w| w.keys.iter().all(|k| table.contains(k)))
        });
        for id in ready {
            let Some(w) = self.waiters.get(&id) else { continue };
            let frame = self.answer(Vec::new(), w.kind, w.req_id, &w.keys);
            let (target, generation) = (w.conn, w.conn_gen);
            self.remove_waiter(id);
            if target == current {
                if conn.generation == generation {
                    conn.push(frame);
                    conn.waiters -= 1;
                }
            } else {
                self.deliver(target, generation, frame);
            }
        }
    }

    /// Send a frame to a connection other than the one being served.
    fn deliver(&mut self, idx: usize, generation: u64, frame: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else { return };
        if conn.generation != generation {
            return;
        }
        conn.waiters = conn.waiters.saturating_sub(1);
        conn.push(frame);
        if !conn.queued {
            conn.queued = true;
            self.dirty.push(idx);
        }
    }

    fn remove_waiter(&mut self, id: u64) {
        let Some(w) = self.waiters.remove(&id) else { return };
        for k in &w.keys {
            if let Some(ids) = self.by_key.get_mut(k) {
                ids.retain(|x| *x != id);
                if ids.is_empty() {
                    self.by_key.remove(k);
                }
            }
        }
    }

    /// Answer waits whose time is up with the keys still missing.
    fn expire_waiters(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(w) = self.waiters.get(&id) else { continue };
            let missing: Vec<&Vec<u8>> =
                w.keys.iter().filter(|k| !self.table.contains(k)).collect();
            let mut f = Frame::response(ST_TIMEOUT, w.req_id);
            f.u32(missing.len() as u32);
            for k in missing {
                f.bytes(k);
            }
            let frame = finish(f);
            let (idx, generation) = (w.conn, w.conn_gen);
            self.remove_waiter(id);
            self.deliver(idx, generation, frame);
        }
    }

    /// Drop connections that stalled in the handshake or in the middle of a request.
    fn sweep(&mut self, now: Instant) {
        for idx in 0..self.conns.len() {
            let Some(conn) = &self.conns[idx] else { continue };
            let why = match conn.phase {
                Phase::Ready => (!conn.rbuf.is_empty()
                    && now.duration_since(conn.last_read) > self.cfg.read_timeout)
                    .then(|| {
                        format!(
                            "stalled for {:.1} s in the middle of a request ({} bytes buffered)",
                            now.duration_since(conn.last_read).as_secs_f64(),
                            conn.rbuf.len()
                        )
                    }),
                _ => (now.duration_since(conn.accepted) > self.cfg.handshake_timeout).then(|| {
                    format!(
                        "no completed handshake within {:.1} s",
                        self.cfg.handshake_timeout.as_secs_f64()
                    )
                }),
            };
            if let Some(why) = why {
                let conn = self.conns[idx]
                    .take()
                    .expect("the slot was seen holding a connection just above");
                self.close(idx, conn, Some(&why));
            }
        }
    }
}

/// A finished response frame. Responses are bounded by construction (values were checked
/// against the limits when stored, and multi-value answers are checked in `answer`).
fn finish(f: Frame) -> Vec<u8> {
    let req_id = f.req_id();
    let len = f.body_len();
    if len > MAX_FRAME {
        let mut buf = f.abandon();
        let what = format!("an answer of {len} bytes would exceed the frame limit of {MAX_FRAME}");
        buf.extend_from_slice(&error_frame(req_id, ERR_INVALID, b"", &what));
        return buf;
    }
    // The length was just checked, so finishing cannot fail; an empty answer is never sent.
    f.finish().unwrap_or_default()
}

/// What a plaintext server answers a TLS ClientHello with (its frame must not start like a
/// TLS record: a test checks).
const NOT_TLS: &str = "this gloo store server does not speak TLS";

fn error_frame(req_id: u32, kind: u8, key: &[u8], msg: &str) -> Vec<u8> {
    let mut f = Frame::response(ST_ERROR, req_id);
    f.u8(kind).bytes(key).bytes(msg.as_bytes());
    finish(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS client takes the answer for a TLS record unless its first byte says otherwise
    /// (a record starts with 0x15 or 0x16), and only then reports a server without TLS.
    #[test]
    fn the_answer_to_a_client_hello_does_not_start_like_a_tls_record() {
        let f = error_frame(0, ERR_PROTOCOL, b"", NOT_TLS);
        assert!(!matches!(f[0], 0x15 | 0x16), "first byte 0x{:02x}", f[0]);
        assert!(!looks_like_tls(&f));
    }
}
