//! [`TorchStore`]: a client of PyTorch c10d's `TCPStore` (the store `torchrun`'s agent serves,
//! and the one `torch.distributed.TCPStore(..., is_master=True)` starts).
//!
//! # The protocol (PyTorch 2.2 and later)
//!
//! One TCP connection carries requests and replies in order; there is no frame length and no
//! request id. A request is one query-type byte and its fields; strings are a `u64` length
//! and the bytes, integers are little-endian (the server writes them in host order, which is
//! little-endian on every platform PyTorch ships for). A connection opens with `VALIDATE`
//! (type 0 and the `u32` magic `0x3C85F7CE`), which has no reply; the libuv server (the
//! default from 2.4) ignores every other request on a connection that has not sent it.
//!
//! | request | fields | reply |
//! |---|---|---|
//! | `SET` 1 | key, value | none |
//! | `COMPARE_SET` 2 | key, expected, desired | the value after the operation |
//! | `GET` 3 | key | value (a missing key: empty, or the connection closes) |
//! | `ADD` 4 | key, `i64` | the new `i64` (stored as decimal text) |
//! | `CHECK` 5 | `u64` n, n keys | `u8`: 0 all exist, 1 not |
//! | `WAIT` 6 | `u64` n, n keys | `u8` 0, only once every key exists |
//! | `GETNUMKEYS` 7 | | `i64` |
//! | `DELETE_KEY` 8 | key | `i64` number deleted |
//! | `APPEND` 9 | key, value | none |
//! | `MULTI_GET` 10 | `u64` n, n keys | n values |
//! | `MULTI_SET` 11 | `u64` n, n × (key, value) | none |
//! | `CANCEL_WAIT` 12 | | `u8` 1 (after a `u8` 0 if the wait completed first) |
//! | `PING` 13 (2.5+) | `u32` nonce | the nonce |
//!
//! Older servers number the requests differently (1.13 and 2.0: `SET` is 0 and there is no
//! `VALIDATE`, `CANCEL_WAIT` or multi-key request; 2.1: `SET` is 0, `MULTI_GET` 9,
//! `CANCEL_WAIT` 11) and would read our `VALIDATE` as a `SET` of a garbage key. Supporting them
//! would need the numbering chosen by the caller (there is no version field to ask for, and no
//! probe that every version reads the same way) and, for 1.13/2.0, timeouts that drop the
//! connection instead of cancelling. This client speaks only the 2.2+ numbering and never
//! probes: the handshake is `VALIDATE` followed by `GETNUMKEYS` (type 7 in every 2.2+ server),
//! or `PING` when [`TorchOptions::ping`] says the server is 2.5 or later; a server that does not
//! answer is reported as not speaking the protocol.
//!
//! # Keys
//!
//! PyTorch's Python and C++ clients send every user key as `"/" + key`; this client does the
//! same, so `store.set("k")` in Python and `set(b"k")` here name one key. Errors name keys as
//! the caller named them.
//!
//! # What the server sends is untrusted
//!
//! Every length the server sends is checked before anything is read into memory (values at
//! most [`TORCH_MAX_VALUE_LEN`], a multi-key answer at most [`MAX_REPLY_BYTES`] in all), and
//! buffers grow only with bytes that arrived. A reply that breaks the protocol is a
//! [`Error::Protocol`] naming the key, and its connection is dropped.
//!
//! # Semantics that differ from the other stores (the server's, not this client's)
//!
//! - `add` on a key that is not a decimal number makes the server close the connection; the
//!   client then looks at the key and reports [`Error::InvalidArgument`] naming it. An `add`
//!   past `i64::MAX` wraps around on the server (it cannot be refused atomically from here).
//! - `compare_set` treats an empty value and a missing key alike: `expected = None` is sent as
//!   an empty expected value, which the server also matches against a key holding an empty
//!   value, and `expected = Some(b"")` also swaps a missing key.
//! - A key deleted between a `get`'s wait and its read reads as empty (libuv server) or is
//!   waited for again (legacy server, which drops the connection).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::{Error, Failure, KeyDisplay, Result};
use crate::pool::{Fail, Liveness, Pool, Retry, Server};
use crate::store::{Backoff, CompareSet, Store, check_key, check_value};

/// The largest value the libuv server accepts (its `MAX_PAYLOAD_LEN`, 8 MiB): larger values are
/// refused here with a clear error instead of the server dropping the connection.
pub const TORCH_MAX_VALUE_LEN: usize = 8 << 20;

/// The most bytes one multi-key answer may hold in all (a lying server cannot make a client
/// read more than this for one call).
pub const MAX_REPLY_BYTES: usize = 256 << 20;

/// How long after its deadline a wait listens for the answer to its `CANCEL_WAIT`.
const CANCEL_GRACE: Duration = Duration::from_millis(250);

/// The shortest time budget for a call whose deadline already passed: one quick attempt.
const MIN_BUDGET: Duration = Duration::from_millis(100);

const VALIDATE: u8 = 0;
const SET: u8 = 1;
const COMPARE_SET: u8 = 2;
const GET: u8 = 3;
const ADD: u8 = 4;
const CHECK: u8 = 5;
const WAIT: u8 = 6;
const GETNUMKEYS: u8 = 7;
const DELETE_KEY: u8 = 8;
const APPEND: u8 = 9;
const MULTI_GET: u8 = 10;
const MULTI_SET: u8 = 11;
const CANCEL_WAIT: u8 = 12;
const PING: u8 = 13;

/// `VALIDATE`'s magic number.
const VALIDATION_MAGIC: u32 = 0x3C85_F7CE;

/// `CHECK` answers.
const READY: u8 = 0;
const NOT_READY: u8 = 1;
/// `WAIT` / `CANCEL_WAIT` answers.
const STOP_WAITING: u8 = 0;
const WAIT_CANCELED: u8 = 1;

/// Settings of a [`TorchStore`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TorchOptions {
    /// Confirm each new connection with `PING` (PyTorch 2.5 and later) instead of
    /// `GETNUMKEYS`. A 2.2–2.4 server does not know `PING` and closes the connection, so this
    /// is off unless the caller knows the server's version.
    pub ping: bool,
}

/// A client of PyTorch's c10d `TCPStore` (2.2 and later; see the [module docs](self) for the
/// protocol and its limits).
///
/// Thread-safe: concurrent calls each use their own connection from a small pool. A call whose
/// connection fails reconnects, with back-off, until its deadline; calls whose effect is not
/// idempotent (`add`, `compare_set`, `append`) are re-sent only if they were never handed to
/// the old connection. Waits end at the caller's deadline with `CANCEL_WAIT`, so the connection
/// stays usable, and a timeout lists exactly the keys still missing.
///
/// The torch store has no authentication: see `SECURITY.md` for what that means for a job.
#[derive(Debug)]
pub struct TorchStore {
    endpoint: String,
    opts: TorchOptions,
    pool: Pool<Conn>,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// The receive timeout set on the socket now, so it is changed only when it must be.
    read_timeout: Option<Duration>,
}

type Attempt<T> = std::result::Result<T, Fail>;

/// A request being encoded.
struct Req(Vec<u8>);

impl Req {
    fn new(op: u8) -> Req {
        Req(vec![op])
    }
    fn op(mut self, op: u8) -> Req {
        self.0.push(op);
        self
    }
    fn u64(mut self, v: u64) -> Req {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Req {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Req {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Req {
        self = self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    /// A user key, prefixed with "/" as PyTorch's clients do.
    fn key(mut self, k: &[u8]) -> Req {
        self = self.u64(k.len() as u64 + 1);
        self.0.push(b'/');
        self.0.extend_from_slice(k);
        self
    }
    fn keys(mut self, keys: &[&[u8]]) -> Req {
        self = self.u64(keys.len() as u64);
        for k in keys {
            self = self.key(k);
        }
        self
    }
}

impl TorchStore {
    /// Connect to the torch store at `endpoint` (`host:port`; resolved again on every
    /// reconnect), retrying until `deadline` while the server is not up yet.
    pub fn connect(endpoint: impl Into<String>, deadline: Instant) -> Result<Self> {
        Self::connect_with(endpoint, TorchOptions::default(), deadline)
    }

    /// [`connect`](Self::connect) with settings.
    pub fn connect_with(
        endpoint: impl Into<String>,
        opts: TorchOptions,
        deadline: Instant,
    ) -> Result<Self> {
        let store = TorchStore { endpoint: endpoint.into(), opts, pool: Pool::default() };
        let conn = store.open(deadline)?;
        store.pool.put_back(conn);
        Ok(store)
    }

    /// The endpoint this client connects to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether every key in `keys` exists now (`CHECK`).
    pub fn check(&self, keys: &[&[u8]], deadline: Instant) -> Result<bool> {
        for k in keys {
            check_key(k)?;
        }
        let req = Req::new(CHECK).keys(keys).0;
        self.call(Retry::Always, keys.first().copied(), deadline, |c, d| {
            c.send(&req, d)?;
            c.check_answer(keys.first().copied(), d)
        })
    }

    /// The number of keys the server holds (`GETNUMKEYS`; PyTorch's agent and workers keep keys
    /// of their own there too).
    pub fn num_keys(&self, deadline: Instant) -> Result<i64> {
        let req = [GETNUMKEYS];
        self.call(Retry::Always, None, deadline, |c, d| {
            c.send(&req, d)?;
            c.i64(d)
        })
    }

    /// Open and validate a new connection, retrying until the deadline.
    fn open(&self, deadline: Instant) -> Result<Conn> {
        let start = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200));
        loop {
            let why = match self.open_once(deadline) {
                Ok(c) => return Ok(c),
                Err(Ok(why)) => why,
                Err(Err(fatal)) => return Err(fatal),
            };
            if !backoff.sleep(deadline) {
                return Err(Error::unreachable(&self.endpoint, why, start.elapsed()));
            }
        }
    }

    /// One attempt: `Err(Ok(why))` may be retried, `Err(Err(e))` may not.
    fn open_once(&self, deadline: Instant) -> std::result::Result<Conn, Result<Failure>> {
        let addrs: Vec<SocketAddr> = self
            .endpoint
            .to_socket_addrs()
            .map_err(|e| Ok(Failure::io(format!("resolving {}", self.endpoint), e)))?
            .collect();
        let mut last = Failure::seen(format!("{} resolved to no address", self.endpoint));
        for addr in addrs {
            let stream = match TcpStream::connect_timeout(&addr, budget(deadline).min(secs(5))) {
                Ok(s) => s,
                Err(e) => {
                    last = Failure::io(format!("connecting to {addr}"), e);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let mut conn = Conn { stream, read_timeout: None };
            let reply = deadline.max(Instant::now() + MIN_BUDGET);
            return match self.handshake(&mut conn, reply) {
                Ok(()) => Ok(conn),
                Err(Fail::Conn { err, .. }) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    Err(Err(self.not_torch("closed the connection during the handshake")))
                }
                Err(Fail::Conn { err, .. }) => {
                    Err(Ok(Failure::io(format!("handshake with {addr}"), err)))
                }
                Err(Fail::NoAnswer) => {
                    Err(Err(self.not_torch("did not answer the handshake before the deadline")))
                }
                Err(Fail::Protocol(e)) => Err(Err(e)),
                // Not produced by this client's reads (TorchStore speaks no TLS); a server
                // that answered so is not a TCPStore either.
                Err(Fail::SpeaksTls) => Err(Err(self.not_torch("answered in TLS"))),
            };
        }
        Err(Ok(last))
    }

    fn not_torch(&self, what: &str) -> Error {
        let confirm = if self.opts.ping { "PING" } else { "GETNUMKEYS" };
        Error::Protocol {
            detail: format!(
                "the server at {} {what} (VALIDATE, then {confirm}): it is not a PyTorch \
                 TCPStore of version 2.2 or later{}",
                self.endpoint,
                if self.opts.ping { " (PING needs 2.5 or later)" } else { "" }
            ),
        }
    }

    fn handshake(&self, conn: &mut impl Replies, deadline: Instant) -> Attempt<()> {
        let validate = Req::new(VALIDATE).u32(VALIDATION_MAGIC);
        if self.opts.ping {
            let nonce = std::process::id();
            conn.send(&validate.op(PING).u32(nonce).0, deadline)?;
            let mut echo = [0u8; 4];
            conn.read_exact(&mut echo, deadline)?;
            if u32::from_le_bytes(echo) != nonce {
                return Err(Fail::Protocol(Error::Protocol {
                    detail: format!("the server at {} echoed a wrong PING nonce", self.endpoint),
                }));
            }
        } else {
            conn.send(&validate.op(GETNUMKEYS).0, deadline)?;
            conn.i64(deadline)?;
        }
        Ok(())
    }

    /// Run `attempt` on a pooled (or new) connection, reconnecting on connection failures
    /// until the deadline as `retry` allows. `key` names the call's key in errors.
    fn call<T>(
        &self,
        retry: Retry,
        key: Option<&[u8]>,
        deadline: Instant,
        mut attempt: impl FnMut(&mut Conn, Instant) -> Attempt<T>,
    ) -> Result<T> {
        let start = Instant::now();
        let reply_deadline = deadline.max(start + MIN_BUDGET);
        let server = Server { what: "the torch store", endpoint: &self.endpoint, key };
        self.pool.call(
            server,
            retry,
            start,
            deadline,
            reply_deadline,
            |d| self.open(d),
            |conn, d| attempt(conn, d).map(Ok),
            |waited| {
                let last = Failure::seen(format!(
                    "no answer before the deadline{}",
                    key.map(|k| format!(" (key {})", KeyDisplay(k))).unwrap_or_default()
                ));
                Error::unreachable(&self.endpoint, last, waited)
            },
        )
    }

    /// Wait on `conn` until every key exists (`Ok(true)`) or the deadline passes and the wait
    /// is cancelled (`Ok(false)`).
    fn wait_on(conn: &mut impl Replies, keys: &[&[u8]], deadline: Instant) -> Attempt<bool> {
        conn.send(&Req::new(WAIT).keys(keys).0, deadline.max(Instant::now() + MIN_BUDGET))?;
        match conn.u8(deadline) {
            Ok(STOP_WAITING) => return Ok(true),
            Ok(other) => return Err(bad_byte("WAIT", other, keys.first().copied())),
            Err(Fail::NoAnswer) => {}
            Err(f) => return Err(f),
        }
        // Our deadline passed: cancel, then read what the server says. A STOP_WAITING that
        // raced the cancel comes first, and the cancel is answered either way.
        let grace = Instant::now() + CANCEL_GRACE;
        conn.send(&[CANCEL_WAIT], grace)?;
        match conn.u8(grace)? {
            WAIT_CANCELED => Ok(false),
            STOP_WAITING => match conn.u8(grace)? {
                WAIT_CANCELED => Ok(true),
                other => Err(bad_byte("CANCEL_WAIT", other, keys.first().copied())),
            },
            other => Err(bad_byte("CANCEL_WAIT", other, keys.first().copied())),
        }
    }

    /// The keys of `keys` missing now: one `CHECK` per key, pipelined in one write.
    fn missing(
        conn: &mut impl Replies,
        keys: &[&[u8]],
        deadline: Instant,
    ) -> Attempt<Vec<Vec<u8>>> {
        let mut req = Vec::new();
        for k in keys {
            req.extend_from_slice(&Req::new(CHECK).keys(&[k]).0);
        }
        conn.send(&req, deadline)?;
        let mut missing = Vec::new();
        for k in keys {
            if !conn.check_answer(Some(k), deadline)? {
                missing.push(k.to_vec());
            }
        }
        Ok(missing)
    }

    /// Wait for `keys`; on timeout, an [`Error::Timeout`] listing the keys still missing.
    fn wait_keys(&self, keys: &[&[u8]], deadline: Instant) -> Result<()> {
        for k in keys {
            check_key(k)?;
        }
        if keys.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let mut timed_out = None;
        self.call(Retry::Always, keys.first().copied(), deadline, |c, _| {
            if Self::wait_on(c, keys, deadline)? {
                return Ok(());
            }
            // Which keys are missing is asked on the same connection, within the grace.
            let grace = Instant::now() + CANCEL_GRACE;
            timed_out = Some(
                Self::missing(c, keys, grace)
                    .unwrap_or_else(|_| keys.iter().map(|k| k.to_vec()).collect()),
            );
            Ok(())
        })?;
        match timed_out {
            None => Ok(()),
            Some(missing) if missing.is_empty() => Ok(()),
            Some(missing) => Err(Error::Timeout { keys: missing, waited: start.elapsed() }),
        }
    }

    /// After the server closed the connection on an `add`: a key that holds something other
    /// than a decimal number is the caller's error, named; anything else is the lost
    /// connection.
    fn add_failed(&self, key: &[u8], lost: Error, deadline: Instant) -> Error {
        match self.try_get(key, deadline) {
            Ok(Some(v))
                if std::str::from_utf8(&v).ok().and_then(|s| s.parse::<i64>().ok()).is_none() =>
            {
                Error::InvalidArgument {
                    key: Some(key.to_vec()),
                    what: format!(
                        "add on a key holding {:?}, which is not a decimal i64 counter (the \
                         torch store closed the connection)",
                        v.escape_ascii().to_string()
                    ),
                }
            }
            _ => lost,
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn budget(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(MIN_BUDGET)
}

fn bad_byte(what: &str, byte: u8, key: Option<&[u8]>) -> Fail {
    Fail::Protocol(Error::Protocol {
        detail: format!(
            "the torch store answered {what}{} with the byte {byte}",
            key.map(|k| format!(" on key {}", KeyDisplay(k))).unwrap_or_default()
        ),
    })
}

fn check_torch_value(key: &[u8], len: usize) -> Result<()> {
    check_value(key, len)?;
    if len > TORCH_MAX_VALUE_LEN {
        return Err(Error::InvalidArgument {
            key: Some(key.to_vec()),
            what: format!(
                "value of {len} bytes exceeds the torch store's limit of {TORCH_MAX_VALUE_LEN}"
            ),
        });
    }
    Ok(())
}

impl Liveness for Conn {
    /// Whether a pooled connection still looks open (no end of stream, error or stray byte
    /// pending), checked without blocking before a non-idempotent request is sent on it.
    fn alive(&self) -> bool {
        let mut b = [0u8; 1];
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let ok =
            matches!(self.stream.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        ok && self.stream.set_nonblocking(false).is_ok()
    }
}

/// Where a client's requests go and its replies come from: a connection, or (the fuzz
/// target `torch_client`) bytes. Every reply is decoded by the provided methods, from the
/// bytes `read_some` hands them, so a server's bytes reach nothing else.
trait Replies {
    /// Send a request.
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Attempt<()>;

    /// One read of at least one byte by the deadline.
    fn read_some(&mut self, buf: &mut [u8], deadline: Instant) -> Attempt<usize>;

    /// Read exactly `buf.len()` bytes by the deadline.
    fn read_exact(&mut self, buf: &mut [u8], deadline: Instant) -> Attempt<()> {
        let mut got = 0;
        while got < buf.len() {
            let n = self.read_some(&mut buf[got..], deadline)?;
            got += n;
        }
        Ok(())
    }

    fn u8(&mut self, deadline: Instant) -> Attempt<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b, deadline)?;
        Ok(b[0])
    }

    fn i64(&mut self, deadline: Instant) -> Attempt<i64> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b, deadline)?;
        Ok(i64::from_le_bytes(b))
    }

    /// A `CHECK` answer: whether the keys exist.
    fn check_answer(&mut self, key: Option<&[u8]>, deadline: Instant) -> Attempt<bool> {
        match self.u8(deadline)? {
            READY => Ok(true),
            NOT_READY => Ok(false),
            other => Err(bad_byte("CHECK", other, key)),
        }
    }

    /// A value of `key`: a `u64` length (at most `max`), then the bytes. The buffer grows only
    /// with bytes that arrived, never by the announced length alone.
    fn value(&mut self, key: &[u8], max: usize, deadline: Instant) -> Attempt<Vec<u8>> {
        let mut len = [0u8; 8];
        self.read_exact(&mut len, deadline)?;
        let len = u64::from_le_bytes(len);
        if len > max as u64 {
            return Err(Fail::Protocol(Error::Protocol {
                detail: format!(
                    "the torch store announced a value of {len} bytes for key {}, over the \
                     limit of {max}",
                    KeyDisplay(key)
                ),
            }));
        }
        let len = len as usize;
        let mut value = Vec::with_capacity(len.min(64 << 10));
        let mut chunk = [0u8; 64 << 10];
        while value.len() < len {
            let want = (len - value.len()).min(chunk.len());
            let n = self.read_some(&mut chunk[..want], deadline)?;
            value.extend_from_slice(&chunk[..n]);
        }
        Ok(value)
    }

    /// The answer to `CHECK keys` then `MULTI_GET keys` sent in one write: the values, or
    /// `None` when a key was missing at the check. At most [`MAX_REPLY_BYTES`] in all.
    fn multi_get_answer(
        &mut self,
        keys: &[&[u8]],
        deadline: Instant,
    ) -> Attempt<Option<Vec<Vec<u8>>>> {
        let ready = self.check_answer(keys.first().copied(), deadline)?;
        let mut total = 0usize;
        let mut values = Vec::with_capacity(keys.len());
        for k in keys {
            let left = MAX_REPLY_BYTES - total;
            let v = self.value(k, TORCH_MAX_VALUE_LEN.min(left), deadline)?;
            total += v.len();
            values.push(v);
        }
        Ok(ready.then_some(values))
    }
}

impl Replies for Conn {
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> Attempt<()> {
        self.stream
            .set_write_timeout(Some(budget(deadline)))
            .map_err(|err| Fail::Conn { sent: false, err })?;
        self.stream.write_all(bytes).map_err(|err| {
            if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                Fail::NoAnswer
            } else {
                Fail::Conn { sent: true, err }
            }
        })
    }

    fn read_some(&mut self, buf: &mut [u8], deadline: Instant) -> Attempt<usize> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Fail::NoAnswer);
            }
            // Rounded down to 10 ms, so a far deadline does not cost a system call per read.
            let t = Duration::from_millis(((left.as_millis() / 10) * 10) as u64)
                .max(Duration::from_millis(1))
                .min(left);
            if self.read_timeout != Some(t) {
                self.stream
                    .set_read_timeout(Some(t))
                    .map_err(|err| Fail::Conn { sent: true, err })?;
                self.read_timeout = Some(t);
            }
            match self.stream.read(buf) {
                Ok(0) => {
                    return Err(Fail::Conn {
                        sent: true,
                        err: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the torch store closed the connection",
                        ),
                    });
                }
                Ok(n) => return Ok(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => return Err(Fail::Conn { sent: true, err }),
            }
        }
    }
}

/// The `torch_client` fuzz target: `data` is what a server sends, read as the answers to a
/// series of requests (the byte before each answer picks the request). Nothing may panic,
/// and no value may exceed the limit it was read under.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_replies(data: &[u8]) {
    /// The server's bytes; at their end the server goes silent once (`NoAnswer`, which sends
    /// a wait into its cancel), then closes.
    struct Bytes<'a> {
        data: &'a [u8],
        silent_once: bool,
    }
    impl Replies for Bytes<'_> {
        fn send(&mut self, _bytes: &[u8], _deadline: Instant) -> Attempt<()> {
            Ok(())
        }
        fn read_some(&mut self, buf: &mut [u8], _deadline: Instant) -> Attempt<usize> {
            if self.data.is_empty() {
                if std::mem::take(&mut self.silent_once) {
                    return Err(Fail::NoAnswer);
                }
                let err = io::Error::new(io::ErrorKind::UnexpectedEof, "end of the fuzz input");
                return Err(Fail::Conn { sent: true, err });
            }
            let n = buf.len().min(self.data.len()).min(usize::from(self.data[0] % 7) + 1);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }
    let keys: [&[u8]; 3] = [b"a", b"bb", b"ccc"];
    let mut r = Bytes { data, silent_once: true };
    let d = Instant::now() + Duration::from_secs(1);
    let store = |ping| TorchStore {
        endpoint: "fuzz:1".into(),
        opts: TorchOptions { ping },
        pool: Pool::default(),
    };
    loop {
        let Ok(op) = r.u8(d) else { return };
        let n = usize::from(op >> 4) % (keys.len() + 1);
        let ok = match op % 8 {
            0 => r.check_answer(keys.first().copied(), d).is_ok(),
            1 => r.i64(d).is_ok(),
            2 => match r.value(b"k", 1 << 12, d) {
                Ok(v) => {
                    assert!(v.len() <= 1 << 12, "a value over its limit");
                    true
                }
                Err(_) => false,
            },
            3 => match r.multi_get_answer(&keys[..n], d) {
                Ok(Some(values)) => {
                    assert_eq!(values.len(), n);
                    assert!(values.iter().map(Vec::len).sum::<usize>() <= MAX_REPLY_BYTES);
                    true
                }
                Ok(None) => true,
                Err(_) => false,
            },
            4 => TorchStore::wait_on(&mut r, &keys[..n.max(1)], d).is_ok(),
            5 => TorchStore::missing(&mut r, &keys[..n], d).is_ok_and(|m| m.len() <= n),
            6 => store(false).handshake(&mut r, d).is_ok(),
            _ => store(true).handshake(&mut r, d).is_ok(),
        };
        if !ok {
            return;
        }
    }
}

impl Store for TorchStore {
    fn set(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        check_torch_value(key, value.len())?;
        // SET has no answer: a CHECK behind it on the same connection answers once the SET
        // was applied, so a later call on another connection of the pool sees the value.
        let req = Req::new(SET).key(key).bytes(value).op(CHECK).keys(&[key]).0;
        self.call(Retry::Always, Some(key), deadline, |c, d| {
            c.send(&req, d)?;
            c.check_answer(Some(key), d).map(drop)
        })
    }

    fn get(&self, key: &[u8], deadline: Instant) -> Result<Vec<u8>> {
        let mut values = self.multi_get(&[key], deadline)?;
        values.pop().ok_or_else(|| Error::Protocol {
            detail: format!("the torch store sent no value for key {}", KeyDisplay(key)),
        })
    }

    fn try_get(&self, key: &[u8], deadline: Instant) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        if !self.check(&[key], deadline)? {
            return Ok(None);
        }
        let req = Req::new(GET).key(key).0;
        self.call(Retry::Always, Some(key), deadline, |c, d| {
            c.send(&req, d)?;
            c.value(key, TORCH_MAX_VALUE_LEN, d).map(Some)
        })
    }

    fn wait(&self, keys: &[&[u8]], deadline: Instant) -> Result<()> {
        self.wait_keys(keys, deadline)
    }

    fn add(&self, key: &[u8], delta: i64, deadline: Instant) -> Result<i64> {
        check_key(key)?;
        let req = Req::new(ADD).key(key).i64(delta).0;
        match self.call(Retry::OnlyIfUnsent, Some(key), deadline, |c, d| {
            c.send(&req, d)?;
            c.i64(d)
        }) {
            Ok(v) => Ok(v),
            Err(lost @ Error::Io { .. }) => Err(self.add_failed(key, lost, deadline)),
            Err(e) => Err(e),
        }
    }

    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        deadline: Instant,
    ) -> Result<CompareSet> {
        check_torch_value(key, new.len())?;
        check_torch_value(key, expected.map_or(0, <[u8]>::len))?;
        let sent_expected = expected.unwrap_or_default();
        let req = Req::new(COMPARE_SET).key(key).bytes(sent_expected).bytes(new).0;
        let current = self.call(Retry::OnlyIfUnsent, Some(key), deadline, |c, d| {
            c.send(&req, d)?;
            c.value(key, TORCH_MAX_VALUE_LEN, d)
        })?;
        // The server answers with the value after the operation, and for a missing key with
        // a non-empty `expected` it answers `expected` without setting anything.
        if current == new {
            if expected.is_some_and(|e| e == new) && !self.check(&[key], deadline)? {
                // `expected == new`: the answer alone cannot tell a swap from a missing key.
                return Ok(CompareSet::Mismatch { current: None });
            }
            return Ok(CompareSet::Swapped);
        }
        if expected.is_some_and(|e| !e.is_empty() && e == current) {
            return Ok(CompareSet::Mismatch { current: None });
        }
        Ok(CompareSet::Mismatch { current: Some(current) })
    }

    fn multi_get(&self, keys: &[&[u8]], deadline: Instant) -> Result<Vec<Vec<u8>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // The server's WAIT does not notice a key deleted while it waits (and a read of a
        // missing key answers empty), so the read goes behind a CHECK in the same write: the
        // server runs both back to back, and a key gone again sends us back to waiting.
        let req = Req::new(CHECK).keys(keys).op(MULTI_GET).keys(keys).0;
        loop {
            self.wait_keys(keys, deadline)?;
            let got = self.call(Retry::Always, keys.first().copied(), deadline, |c, d| {
                c.send(&req, d)?;
                c.multi_get_answer(keys, d)
            })?;
            if let Some(values) = got {
                return Ok(values);
            }
        }
    }

    fn multi_set(&self, pairs: &[(&[u8], &[u8])], deadline: Instant) -> Result<()> {
        let Some((first, _)) = pairs.first() else { return Ok(()) };
        let mut req = Req::new(MULTI_SET).u64(pairs.len() as u64);
        for (k, v) in pairs {
            check_torch_value(k, v.len())?;
            req = req.key(k).bytes(v);
        }
        let req = req.op(CHECK).keys(&[first]).0;
        self.call(Retry::Always, Some(first), deadline, |c, d| {
            c.send(&req, d)?;
            c.check_answer(Some(first), d).map(drop)
        })
    }

    fn append(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        check_torch_value(key, value.len())?;
        let req = Req::new(APPEND).key(key).bytes(value).op(CHECK).keys(&[key]).0;
        self.call(Retry::OnlyIfUnsent, Some(key), deadline, |c, d| {
            c.send(&req, d)?;
            c.check_answer(Some(key), d).map(drop)
        })
    }

    fn delete(&self, key: &[u8], deadline: Instant) -> Result<bool> {
        check_key(key)?;
        let req = Req::new(DELETE_KEY).key(key).0;
        self.call(Retry::Always, Some(key), deadline, |c, d| {
            c.send(&req, d)?;
            c.i64(d).map(|n| n > 0)
        })
    }
}
