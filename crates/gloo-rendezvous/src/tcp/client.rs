//! The TCP store client.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::check_token;
use super::proto::{
    CLIENT_LABEL, Cmd, ERR_AUTH, ERR_INVALID, Frame, MAGIC, MAX_FRAME, NONCE_LEN, Reader,
    SERVER_LABEL, ST_ERROR, ST_OK, ST_TIMEOUT, VERSION, looks_like_tls, nonce, proof, verify_proof,
};
use super::stream::ClientStream;
use crate::error::{Error, Failure, Result};
use crate::pool::{Fail, Liveness, Pool, Retry, Server};
use crate::store::{Backoff, CompareSet, Store, check_key, check_value};

/// How long after its deadline a waiting call keeps listening for the server's own timeout
/// answer (which lists the keys still missing) before it gives up on the connection.
const WAIT_GRACE: Duration = Duration::from_millis(500);

/// The shortest time budget for a call whose deadline already passed: one quick attempt.
const MIN_BUDGET: Duration = Duration::from_millis(100);

/// A client of a [`TcpStoreServer`](super::TcpStoreServer).
///
/// Thread-safe: concurrent calls each use their own connection from a small pool (so one
/// thread's long wait never blocks another thread's write). A call that finds its connection
/// lost reconnects, with back-off, until its deadline; calls whose effect is not idempotent
/// (`add`, `compare_set`, `append`) are re-sent only if they were never handed to the old
/// connection, so a counter is never incremented twice.
#[derive(Debug)]
pub struct TcpStore {
    endpoint: String,
    token: Option<Vec<u8>>,
    #[cfg(feature = "tls")]
    tls: Option<gloo_tls::TlsConnector>,
    pool: Pool<Conn>,
    next_id: AtomicU32,
}

#[derive(Debug)]
struct Conn {
    stream: ClientStream,
    /// Receive buffer, zeroed once and reused: `buf[start..end]` holds received bytes not yet
    /// consumed (one read usually brings a whole answer).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket's current receive timeout, so it is set only when it changes.
    read_timeout: Option<Duration>,
    /// Whether a whole answer arrived on this connection yet.
    answered: bool,
}

impl TcpStore {
    /// Connect to the store at `endpoint` (`host:port`; resolved again on every reconnect),
    /// authenticating with `token` if given. Retries until `deadline` while the server is not
    /// up yet (ranks usually start before or with the rank that hosts the store).
    pub fn connect(
        endpoint: impl Into<String>,
        token: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Self> {
        if let Some(t) = token {
            check_token(t)?;
        }
        let store = TcpStore {
            endpoint: endpoint.into(),
            token: token.map(<[u8]>::to_vec),
            #[cfg(feature = "tls")]
            tls: None,
            pool: Pool::default(),
            next_id: AtomicU32::new(1),
        };
        store.first(deadline)
    }

    /// [`connect`](Self::connect) over mutual TLS with the job's certificates (feature
    /// `tls`): the client presents `tls`'s certificate and requires the server's to be of
    /// the same job. `tls: None` is plain [`connect`](Self::connect). A server whose
    /// certificate does not verify (or that refuses ours) is [`Error::Auth`] at once.
    #[cfg(feature = "tls")]
    pub fn connect_with(
        endpoint: impl Into<String>,
        token: Option<&[u8]>,
        tls: Option<&gloo_tls::TlsConfig>,
        deadline: Instant,
    ) -> Result<Self> {
        let store = TcpStore {
            endpoint: endpoint.into(),
            token: token.map(<[u8]>::to_vec),
            tls: tls.map(gloo_tls::TlsConfig::store_connector),
            pool: Pool::default(),
            next_id: AtomicU32::new(1),
        };
        store.first(deadline)
    }

    /// Open the first connection (proving the store is there), and keep it.
    fn first(self, deadline: Instant) -> Result<Self> {
        let conn = self.open(deadline)?;
        self.pool.put_back(conn);
        Ok(self)
    }

    /// A new connection's stream: a TLS session when the store is reached over TLS.
    fn wrap(&self, stream: TcpStream) -> io::Result<ClientStream> {
        #[cfg(feature = "tls")]
        if let Some(c) = &self.tls {
            return Ok(ClientStream::Tls(Box::new(c.connect(stream)?)));
        }
        Ok(ClientStream::Plain(stream))
    }

    /// The endpoint this client connects to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Open and authenticate a new connection, retrying until the deadline.
    fn open(&self, deadline: Instant) -> Result<Conn> {
        let start = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200));
        loop {
            let why = match self.open_once(deadline) {
                Ok(c) => return Ok(c),
                Err(OpenError::Fatal(e)) => return Err(e),
                Err(OpenError::Retry(why)) => why,
            };
            if !backoff.sleep(deadline) {
                return Err(Error::unreachable(&self.endpoint, why, start.elapsed()));
            }
        }
    }

    fn open_once(&self, deadline: Instant) -> std::result::Result<Conn, OpenError> {
        let addrs: Vec<SocketAddr> = self
            .endpoint
            .to_socket_addrs()
            .map_err(|e| OpenError::Retry(Failure::io(format!("resolving {}", self.endpoint), e)))?
            .collect();
        let mut last = Failure::seen(format!("{} resolved to no address", self.endpoint));
        for addr in addrs {
            let budget = budget(deadline).min(Duration::from_secs(5));
            match TcpStream::connect_timeout(&addr, budget) {
                Ok(stream) if is_self_connected(&stream) => {
                    // Nothing listens at `addr` and the kernel picked `addr` itself as this
                    // socket's ephemeral port: TCP's simultaneous open connected the socket
                    // to itself. Keeping it would read our own hello back as the answer and
                    // would hold the port a restarting server needs, so drop it and retry.
                    last = Failure::seen(format!(
                        "connecting to {addr}: nothing listens there (the socket connected \
                         to itself)"
                    ));
                }
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    // A backstop for small writes (which cannot block on a fresh
                    // request-response connection); large ones set their own bound.
                    let _ = stream.set_write_timeout(Some(self::budget(deadline)));
                    let stream = self.wrap(stream).map_err(|e| {
                        OpenError::Fatal(Error::Config { detail: format!("starting TLS: {e}") })
                    })?;
                    let mut conn = Conn::new(stream);
                    return match self.handshake(&mut conn, deadline) {
                        Ok(()) => Ok(conn),
                        Err(HandshakeError::Io(f)) => Err(OpenError::Retry(Failure {
                            detail: format!("handshake with {addr}: {}", f.detail),
                            source: f.source,
                        })),
                        Err(HandshakeError::Fatal(e)) => Err(OpenError::Fatal(e)),
                    };
                }
                Err(e) => last = Failure::io(format!("connecting to {addr}"), e),
            }
        }
        Err(OpenError::Retry(last))
    }

    fn handshake(
        &self,
        conn: &mut Conn,
        deadline: Instant,
    ) -> std::result::Result<(), HandshakeError> {
        let client_nonce = nonce().map_err(HandshakeError::Fatal)?;
        let mut f = Frame::request(Cmd::Hello, 0);
        f.raw(MAGIC).u16(VERSION).raw(&client_nonce);
        let frame = f.finish().map_err(HandshakeError::Fatal)?;
        let reply = deadline.max(Instant::now() + MIN_BUDGET);
        // With TLS, the session's handshake runs inside this first round trip; a
        // certificate refused either way cannot be cured by retrying.
        let (status, body) = conn.roundtrip(&frame, 0, reply).map_err(|f| match f {
            Fail::SpeaksTls => HandshakeError::Fatal(Error::Config {
                detail: format!(
                    "the store server at {} speaks TLS and this client does not (it answered \
                     the hello with a TLS record): connect with the job's TLS certificates \
                     (GLOO_TLS_CA, GLOO_TLS_CERT, GLOO_TLS_KEY)",
                    self.endpoint
                ),
            }),
            Fail::Conn { .. } if conn.stream.peer_is_not_tls() => {
                HandshakeError::Fatal(Error::Config {
                    detail: format!(
                        "the store server at {} does not speak TLS (it answered the TLS \
                         ClientHello in plaintext): is it a plaintext server? Start it with \
                         the job's TLS certificates (GLOO_TLS_CA, GLOO_TLS_CERT, \
                         GLOO_TLS_KEY), or connect without TLS",
                        self.endpoint
                    ),
                })
            }
            Fail::Conn { err, .. }
                if conn.stream.tls_handshaking()
                    && err.kind() != io::ErrorKind::PermissionDenied =>
            {
                // A server that closes on a ClientHello without a word: most likely a
                // plaintext one (of an older version), or one restarting, so retried.
                HandshakeError::Io(Failure::io(
                    "the server closed the connection during the TLS handshake (is it a \
                     plaintext server?)",
                    err,
                ))
            }
            Fail::Conn { err, .. } if err.kind() == io::ErrorKind::PermissionDenied => {
                HandshakeError::Fatal(Error::Auth {
                    detail: format!("TLS with the store at {}: {err}", self.endpoint),
                })
            }
            f => HandshakeError::from(f),
        })?;
        if status != ST_OK {
            return Err(HandshakeError::Fatal(remote_error(status, &body, &self.endpoint)));
        }
        let (version, auth, server_nonce) = answers::hello(&body).map_err(HandshakeError::Fatal)?;
        if version != VERSION {
            return Err(HandshakeError::Fatal(Error::Protocol {
                detail: format!(
                    "store at {} speaks version {version}, not {VERSION}",
                    self.endpoint
                ),
            }));
        }
        match (auth, &self.token) {
            (0, None) => Ok(()),
            (0, Some(_)) => Err(HandshakeError::Fatal(Error::Auth {
                detail: format!(
                    "the store at {} does not ask for the job token, so it cannot be told from \
                     an impostor; start it with the token",
                    self.endpoint
                ),
            })),
            (_, None) => Err(HandshakeError::Fatal(Error::Auth {
                detail: format!(
                    "the store at {} requires the job token; set GLOO_AUTH_TOKEN",
                    self.endpoint
                ),
            })),
            (_, Some(token)) => {
                let mut f = Frame::request(Cmd::Auth, 0);
                f.raw(proof(token, CLIENT_LABEL, &server_nonce, &client_nonce).as_ref());
                let frame = f.finish().map_err(HandshakeError::Fatal)?;
                let (status, body) =
                    conn.roundtrip(&frame, 0, reply).map_err(HandshakeError::from)?;
                if status != ST_OK {
                    return Err(HandshakeError::Fatal(remote_error(status, &body, &self.endpoint)));
                }
                if !verify_proof(token, SERVER_LABEL, &server_nonce, &client_nonce, &body) {
                    return Err(HandshakeError::Fatal(Error::Auth {
                        detail: format!(
                            "the store at {} failed to prove it holds the job token",
                            self.endpoint
                        ),
                    }));
                }
                Ok(())
            }
        }
    }

    /// Send one request and return the successful answer's payload.
    fn call(
        &self,
        frame: &[u8],
        req_id: u32,
        retry: Retry,
        wait_keys: Option<&[&[u8]]>,
        deadline: Instant,
    ) -> Result<Vec<u8>> {
        let start = Instant::now();
        let reply_deadline = match wait_keys {
            Some(_) => deadline + WAIT_GRACE,
            None => deadline.max(start + MIN_BUDGET),
        };
        let server = Server { what: "the store", endpoint: &self.endpoint, key: None };
        self.pool.call(
            server,
            retry,
            start,
            deadline,
            reply_deadline,
            |d| self.open(d),
            |conn, d| {
                Ok(match conn.roundtrip(frame, req_id, d)? {
                    (ST_OK, body) => Ok(body),
                    (ST_TIMEOUT, body) => Err(timeout_from(&body, start)),
                    (status, body) => Err(remote_error(status, &body, &self.endpoint)),
                })
            },
            |waited| match wait_keys {
                Some(keys) => {
                    Error::Timeout { keys: keys.iter().map(|k| k.to_vec()).collect(), waited }
                }
                None => Error::unreachable(
                    &self.endpoint,
                    Failure::seen("no answer before the deadline"),
                    waited,
                ),
            },
        )
    }

    fn id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn waiting(&self, cmd: Cmd, keys: &[&[u8]], deadline: Instant) -> Result<Vec<u8>> {
        for k in keys {
            check_key(k)?;
        }
        let id = self.id();
        let mut f = Frame::request(cmd, id);
        // Milliseconds rounded up, so the server never answers "timeout" before the deadline.
        let ms = deadline.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
        f.u64(u64::try_from(ms).unwrap_or(u64::MAX)).u32(keys.len() as u32);
        for k in keys {
            f.bytes(k);
        }
        let frame = f.finish()?;
        self.call(&frame, id, Retry::Always, Some(keys), deadline)
    }
}

enum OpenError {
    Retry(Failure),
    Fatal(Error),
}

enum HandshakeError {
    Io(Failure),
    Fatal(Error),
}

impl From<Fail> for HandshakeError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Conn { err, .. } => HandshakeError::Io(Failure::io("exchanging the hello", err)),
            Fail::NoAnswer => HandshakeError::Io(Failure::seen("no answer to the hello")),
            // A server that answers the hello with garbage is not a store (or a broken one):
            // retrying cannot help.
            Fail::Protocol(e) => HandshakeError::Fatal(e),
            Fail::SpeaksTls => HandshakeError::Fatal(Error::Protocol {
                detail: "the store answered in TLS".into(),
            }),
        }
    }
}

/// Whether a connect to a port in the ephemeral range, with nothing listening there, came
/// back connected to itself (local and peer address equal).
fn is_self_connected(stream: &TcpStream) -> bool {
    matches!((stream.local_addr(), stream.peer_addr()), (Ok(l), Ok(p)) if l == p)
}

fn budget(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(MIN_BUDGET)
}

impl Liveness for Conn {
    /// Whether a pooled connection still looks open (no EOF or error pending), checked
    /// without blocking before a non-idempotent request is sent on it.
    fn alive(&self) -> bool {
        let mut b = [0u8; 1];
        let sock = self.stream.socket();
        if sock.set_nonblocking(true).is_err() {
            return false;
        }
        let ok = match sock.peek(&mut b) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            // Either EOF, an error, or unsolicited bytes (never valid): not usable.
            _ => false,
        };
        ok && self.start == self.end
            && !self.stream.holds_input()
            && sock.set_nonblocking(false).is_ok()
    }
}

impl Conn {
    fn new(stream: ClientStream) -> Conn {
        Conn {
            stream,
            buf: vec![0; 16 << 10],
            start: 0,
            end: 0,
            read_timeout: None,
            answered: false,
        }
    }

    /// Write a request and read the answer with the same id.
    fn roundtrip(
        &mut self,
        frame: &[u8],
        req_id: u32,
        deadline: Instant,
    ) -> std::result::Result<(u8, Vec<u8>), Fail> {
        // A request-response connection's send buffer is empty when a request starts, so
        // only a large request can block in write: bound it by the deadline then.
        if frame.len() > 64 << 10 {
            self.stream
                .socket()
                .set_write_timeout(Some(budget(deadline)))
                .map_err(|err| Fail::Conn { sent: false, err })?;
        }
        if let Err(err) = self.stream.write_all(frame) {
            let fail = if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
            {
                Fail::NoAnswer
            } else {
                Fail::Conn { sent: true, err }
            };
            return Err(fail);
        }
        loop {
            self.fill(4, deadline)?;
            let head = &self.buf[self.start..self.start + 4];
            if !self.answered && self.stream.is_plain() && looks_like_tls(head) {
                // A TLS server's alert (or hello) where the hello's answer belongs.
                return Err(Fail::SpeaksTls);
            }
            let len = answers::frame_len(head).map_err(Fail::Protocol)?;
            self.fill(4 + len, deadline)?;
            let (status, id, body) =
                answers::frame_parts(&self.buf[self.start + 4..self.start + 4 + len]);
            let body = body.to_vec();
            self.answered = true;
            self.start += 4 + len;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                if self.buf.len() > 1 << 20 {
                    // A pooled connection does not keep a large value's buffer alive.
                    self.buf = vec![0; 16 << 10];
                }
            }
            if id == req_id {
                return Ok((status, body));
            }
            // An answer to an earlier request abandoned on this connection: skip it.
        }
    }

    /// Read until at least `want` unconsumed bytes are buffered. The buffer grows only when
    /// it is full of bytes that actually arrived, never by an announced length alone.
    fn fill(&mut self, want: usize, deadline: Instant) -> std::result::Result<(), Fail> {
        while self.end - self.start < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Fail::NoAnswer);
            }
            // Rounded down to 10 ms, so a far deadline does not cost a system call per read.
            let t = Duration::from_millis(((left.as_millis() / 10) * 10) as u64)
                .max(Duration::from_millis(1));
            let t = if t > left { left } else { t };
            if self.read_timeout != Some(t) {
                self.stream
                    .socket()
                    .set_read_timeout(Some(t))
                    .map_err(|err| Fail::Conn { sent: true, err })?;
                self.read_timeout = Some(t);
            }
            if self.end == self.buf.len() {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                } else {
                    let grown = (self.buf.len() * 2).min(want.max(self.buf.len() + 1));
                    self.buf.resize(grown, 0);
                }
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    return Err(Fail::Conn {
                        sent: true,
                        err: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the store closed the connection",
                        ),
                    });
                }
                Ok(n) => self.end += n,
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(Fail::Conn { sent: true, err }),
            }
        }
        Ok(())
    }
}

/// The error an `ST_ERROR` (or unexpected status) answer stands for.
fn remote_error(status: u8, body: &[u8], endpoint: &str) -> Error {
    if status != ST_ERROR {
        return Error::Protocol {
            detail: format!("store at {endpoint} answered with status {status}"),
        };
    }
    let mut r = Reader::new(body, "error answer");
    let parsed = (|| Ok::<_, Error>((r.u8()?, r.bytes()?, r.bytes()?)))();
    match parsed {
        Ok((kind, key, msg)) => {
            let msg = String::from_utf8_lossy(msg).into_owned();
            match kind {
                ERR_INVALID => Error::InvalidArgument {
                    key: (!key.is_empty()).then(|| key.to_vec()),
                    what: msg,
                },
                ERR_AUTH => Error::Auth { detail: format!("store at {endpoint}: {msg}") },
                _ => Error::Protocol { detail: format!("store at {endpoint}: {msg}") },
            }
        }
        Err(e) => e,
    }
}

fn timeout_from(body: &[u8], start: Instant) -> Error {
    let mut r = Reader::new(body, "timeout answer");
    let parsed = (|| {
        let n = r.count(4)?;
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push(r.bytes()?.to_vec());
        }
        r.end()?;
        Ok::<_, Error>(keys)
    })();
    match parsed {
        Ok(keys) => Error::Timeout { keys, waited: start.elapsed() },
        Err(e) => e,
    }
}

impl Store for TcpStore {
    fn set(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        check_value(key, value.len())?;
        let id = self.id();
        let mut f = Frame::request(Cmd::Set, id);
        f.bytes(key).bytes(value);
        self.call(&f.finish()?, id, Retry::Always, None, deadline).map(drop)
    }

    fn try_get(&self, key: &[u8], deadline: Instant) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        let id = self.id();
        let mut f = Frame::request(Cmd::TryGet, id);
        f.bytes(key);
        let body = self.call(&f.finish()?, id, Retry::Always, None, deadline)?;
        answers::try_get(&body)
    }

    fn wait(&self, keys: &[&[u8]], deadline: Instant) -> Result<()> {
        let body = self.waiting(Cmd::Wait, keys, deadline)?;
        answers::wait(&body)
    }

    fn add(&self, key: &[u8], delta: i64, deadline: Instant) -> Result<i64> {
        check_key(key)?;
        let id = self.id();
        let mut f = Frame::request(Cmd::Add, id);
        f.bytes(key).i64(delta);
        let body = self.call(&f.finish()?, id, Retry::OnlyIfUnsent, None, deadline)?;
        answers::add(&body)
    }

    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        deadline: Instant,
    ) -> Result<CompareSet> {
        check_value(key, new.len())?;
        let id = self.id();
        let mut f = Frame::request(Cmd::CompareSet, id);
        f.bytes(key);
        match expected {
            Some(e) => f.u8(1).bytes(e),
            None => f.u8(0),
        };
        f.bytes(new);
        let body = self.call(&f.finish()?, id, Retry::OnlyIfUnsent, None, deadline)?;
        answers::compare_set(&body)
    }

    fn multi_get(&self, keys: &[&[u8]], deadline: Instant) -> Result<Vec<Vec<u8>>> {
        let body = self.waiting(Cmd::Get, keys, deadline)?;
        answers::get(&body, keys.len())
    }

    fn multi_set(&self, pairs: &[(&[u8], &[u8])], deadline: Instant) -> Result<()> {
        for (k, v) in pairs {
            check_value(k, v.len())?;
        }
        let id = self.id();
        let mut f = Frame::request(Cmd::MultiSet, id);
        f.u32(pairs.len() as u32);
        for (k, v) in pairs {
            f.bytes(k).bytes(v);
        }
        self.call(&f.finish()?, id, Retry::Always, None, deadline).map(drop)
    }

    fn append(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        check_value(key, value.len())?;
        let id = self.id();
        let mut f = Frame::request(Cmd::Append, id);
        f.bytes(key).bytes(value);
        self.call(&f.finish()?, id, Retry::OnlyIfUnsent, None, deadline).map(drop)
    }

    fn delete(&self, key: &[u8], deadline: Instant) -> Result<bool> {
        check_key(key)?;
        let id = self.id();
        let mut f = Frame::request(Cmd::Delete, id);
        f.bytes(key);
        let body = self.call(&f.finish()?, id, Retry::Always, None, deadline)?;
        answers::delete(&body)
    }
}

/// The decoders of the server's answers: pure functions of the bytes received (untrusted),
/// kept apart from the connection so that the fuzz target `store_client` runs exactly these.
pub(crate) mod answers {
    use super::*;

    /// The body length announced by an answer's 4-byte prefix, checked against the frame
    /// limit before anything is read for it.
    pub(crate) fn frame_len(prefix: &[u8]) -> Result<usize> {
        let len = match prefix {
            [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]) as usize,
            _ => {
                return Err(Error::Protocol {
                    detail: format!("an answer prefix of {} bytes", prefix.len()),
                });
            }
        };
        if !(5..=MAX_FRAME).contains(&len) {
            return Err(Error::Protocol {
                detail: format!("store answer of {len} bytes is outside the valid range"),
            });
        }
        Ok(len)
    }

    /// Status, request id and payload of an answer body of a length [`frame_len`] accepted
    /// (at least 5 bytes).
    pub(crate) fn frame_parts(frame: &[u8]) -> (u8, u32, &[u8]) {
        match frame {
            [status, a, b, c, d, body @ ..] => {
                (*status, u32::from_le_bytes([*a, *b, *c, *d]), body)
            }
            // frame_len refuses bodies under 5 bytes; an empty status would be refused as
            // an unknown status by every caller.
            _ => (u8::MAX, 0, &[]),
        }
    }

    /// The hello answer: version, whether the server asks for the token, its nonce.
    pub(crate) fn hello(body: &[u8]) -> Result<(u16, u8, [u8; NONCE_LEN])> {
        let mut r = Reader::new(body, "hello answer");
        let version = r.u16()?;
        let auth = r.u8()?;
        let server_nonce: [u8; NONCE_LEN] = r.array()?;
        r.end()?;
        Ok((version, auth, server_nonce))
    }

    pub(crate) fn try_get(body: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut r = Reader::new(body, "try_get answer");
        let v = if r.u8()? == 1 { Some(r.bytes()?.to_vec()) } else { None };
        r.end()?;
        Ok(v)
    }

    pub(crate) fn wait(body: &[u8]) -> Result<()> {
        Reader::new(body, "wait answer").end()
    }

    pub(crate) fn add(body: &[u8]) -> Result<i64> {
        let mut r = Reader::new(body, "add answer");
        let v = r.i64()?;
        r.end()?;
        Ok(v)
    }

    pub(crate) fn compare_set(body: &[u8]) -> Result<CompareSet> {
        let mut r = Reader::new(body, "compare_set answer");
        let outcome = if r.u8()? == 1 {
            CompareSet::Swapped
        } else {
            let current = if r.u8()? == 1 { Some(r.bytes()?.to_vec()) } else { None };
            CompareSet::Mismatch { current }
        };
        r.end()?;
        Ok(outcome)
    }

    /// The values of a `get` of `asked` keys.
    pub(crate) fn get(body: &[u8], asked: usize) -> Result<Vec<Vec<u8>>> {
        let mut r = Reader::new(body, "get answer");
        let n = r.count(4)?;
        if n != asked {
            return Err(Error::Protocol {
                detail: format!("asked for {asked} values, the store sent {n}"),
            });
        }
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(r.bytes()?.to_vec());
        }
        r.end()?;
        Ok(values)
    }

    pub(crate) fn delete(body: &[u8]) -> Result<bool> {
        let mut r = Reader::new(body, "delete answer");
        let existed = r.u8()? == 1;
        r.end()?;
        Ok(existed)
    }
}

/// The `store_client` fuzz target: `data` read as a stream of answers, each frame handed to
/// every decoder (as an answer to each kind of request). Nothing may panic; a frame the
/// prefix check accepts is within the frame limit.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_answers(mut data: &[u8]) {
    while data.len() >= 4 {
        let Ok(len) = answers::frame_len(&data[..4]) else { return };
        assert!(len <= MAX_FRAME);
        let Some(frame) = data.get(4..4 + len) else { return };
        data = &data[4 + len..];
        let (status, _id, body) = answers::frame_parts(frame);
        let _ = answers::hello(body);
        let _ = answers::try_get(body);
        let _ = answers::wait(body);
        let _ = answers::add(body);
        let _ = answers::compare_set(body);
        let asked = usize::from(status);
        if let Ok(values) = answers::get(body, asked) {
            assert_eq!(values.len(), asked);
            assert!(values.iter().map(|v| 4 + v.len()).sum::<usize>() + 4 == body.len());
        }
        let _ = answers::delete(body);
        let _ = remote_error(status, body, "fuzz");
        let _ = timeout_from(body, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};

    #[test]
    fn a_socket_connected_to_itself_is_told_from_a_real_connection() {
        // Bound first and then connected to its own address: the simultaneous open a
        // client meets when it dials a free ephemeral port and the kernel picks that port.
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.bind(&SockAddr::from("127.0.0.1:0".parse::<SocketAddr>().unwrap())).unwrap();
        let own = s.local_addr().unwrap();
        s.connect(&own).unwrap();
        assert!(is_self_connected(&s.into()));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let real = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!is_self_connected(&real));
    }
}
