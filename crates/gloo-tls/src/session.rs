//! [`TlsStream`]: a TLS 1.3 session over a socket, on rustls's unbuffered API.
//!
//! Why the unbuffered API: the buffered `rustls::Connection` reads the socket 4 KiB at a
//! time and keeps its own copies; here the stream owns its buffers, reads up to 256 KiB per
//! system call, decrypts records where they landed, copies each record's plaintext straight
//! into the caller's buffer (only what does not fit is kept), and encrypts a write into one
//! buffer sent with one system call. Small pieces of one write (the transport's 32-byte
//! header and a small payload) are gathered into one record.
//!
//! The stream works over a non-blocking socket (mio, for the transport and the store server)
//! and over a blocking one with timeouts (the store client): every operation does what it
//! can and returns the socket's `WouldBlock` or `TimedOut` when it must wait; nothing is lost
//! by returning, since all state lives in the stream.
//!
//! Errors are `io::Error`s whose kind tells the transport what happened:
//! `PermissionDenied` for a failed TLS handshake (the peer did not authenticate: a foreign CA,
//! another job or rank, an expired certificate, a refused alert, a server that does not speak
//! TLS), `InvalidData` for a client that does not speak TLS or a peer that sends a bad record
//! after the handshake, `UnexpectedEof` for a
//! connection that ends without a TLS `close_notify`. Once failed, the stream keeps returning
//! the same error.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use rustls::client::{ClientConfig, UnbufferedClientConnection};
use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};

use crate::identity::Identity;
use crate::verify::identity_of_der;

/// The largest plaintext of one record (TLS's limit, and rustls's default).
const RECORD: usize = 16 * 1024;
/// Bytes a record adds to its plaintext in TLS 1.3: a 5-byte header, the inner content
/// type, a 16-byte AEAD tag.
const RECORD_OVERHEAD: usize = 5 + 1 + 16;
/// The receive buffer starts big enough for one whole record, and grows to this under bulk
/// traffic (a read that fills it doubles it).
const RX_MIN: usize = RECORD + 1024;
const RX_MAX: usize = 256 * 1024;
/// Plaintext encrypted by one write call, at most.
const TX_CHUNK: usize = 256 * 1024;
/// Encrypted bytes waiting for the socket beyond which a write takes no more plaintext.
const TX_HIGH: usize = 256 * 1024;
/// Plaintext that may be written before the handshake finishes (the transport's `Hello`
/// and `Auth` are a few hundred bytes).
const EARLY_MAX: usize = 64 * 1024;

/// A socket a [`TlsStream`] can run over: a TCP stream, blocking (with timeouts) or not.
pub trait Socket: Read + Write + Send {
    /// Look at waiting bytes without consuming them (for [`TlsStream::input_waiting`]).
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Socket for mio::net::TcpStream {
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        mio::net::TcpStream::peek(self, buf)
    }
}

impl Socket for std::net::TcpStream {
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        std::net::TcpStream::peek(self, buf)
    }
}

enum Conn {
    Client(Box<UnbufferedClientConnection>),
    Server(Box<UnbufferedServerConnection>),
}

/// A byte buffer with a window of live bytes, `v[start..end]`; `v.len()` is its capacity,
/// grown (and zeroed) only when needed, never shrunk.
#[derive(Default)]
struct Buf {
    v: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    fn with_capacity(n: usize) -> Buf {
        Buf { v: vec![0; n], start: 0, end: 0 }
    }

    fn pending(&self) -> usize {
        self.end - self.start
    }

    fn live(&self) -> &[u8] {
        &self.v[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Make room for `n` more bytes after `end`.
    fn reserve(&mut self, n: usize) {
        if self.v.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.v.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.v.len() - self.end < n {
            self.v.resize(self.end + n, 0);
        }
    }

    fn spare(&mut self) -> &mut [u8] {
        &mut self.v[self.end..]
    }
}

/// Everything but the connection and the receive buffer, which rustls borrows while a
/// state is handled.
#[derive(Default)]
struct State {
    /// Encrypted bytes to send, in order.
    tx: Buf,
    /// Decrypted bytes not yet read.
    plain: Buf,
    /// Plaintext written before the handshake finished, sent once it has.
    early: Vec<u8>,
    /// The handshake finished (rustls offered to encrypt).
    open: bool,
    /// The peer sent `close_notify`: no more data will come.
    peer_closed: bool,
    /// Queue our `close_notify` at the next chance.
    want_close: bool,
    close_sent: bool,
}

/// What a handled state asks for next.
enum Next {
    /// Run rustls again: it has more to say.
    Again,
    /// Nothing more without bytes from the peer (or a write from the caller).
    Wait,
}

/// One TLS 1.3 session over a socket, blocking (with timeouts) or not.
///
/// Made by [`TlsLayer`](crate::TlsLayer) for the transport, and by
/// [`TlsAcceptor`](crate::TlsAcceptor) / [`TlsConnector`](crate::TlsConnector) for the store.
/// The handshake runs inside the first reads and writes. It owns its buffers (rustls's
/// unbuffered API): reads up to 256 KiB per system call, decrypts records where they landed
/// and copies each record's plaintext straight into the caller's buffer; gathers a write's
/// small pieces into one record and encrypts up to 256 KiB per call into one buffer written
/// with one system call. Every operation does what it can and returns the socket's
/// `WouldBlock` (or `TimedOut`) when it must wait; nothing is lost by returning.
///
/// Errors say what happened by their kind: `PermissionDenied` for a failed handshake, a
/// refused certificate or a server that does not speak TLS, `InvalidData` for a client that
/// does not speak TLS or a peer that sends a bad record, `UnexpectedEof` for a connection that ends without `close_notify`. Once failed,
/// the stream keeps returning the same error. Dropping it sends `close_notify` (as far as the
/// socket takes it at once).
pub struct TlsStream<S: Socket> {
    sock: S,
    conn: Conn,
    rx: Buf,
    st: State,
    /// Bytes gathered for one record from the small pieces of a write.
    staged: Vec<u8>,
    failed: Option<(io::ErrorKind, String)>,
    /// The end of the socket's stream was read.
    eof: bool,
    /// The first byte the peer sent (a TLS record starts with 0x16 or 0x15).
    first_byte: Option<u8>,
    peer: Option<Identity>,
    /// The rank the peer's certificate must name, when the caller knows it.
    expect: Option<gloo_transport::Rank>,
    /// The last `read` saw the socket drained (a socket read in it came back short).
    drained: bool,
}

impl<S: Socket> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("open", &self.st.open)
            .field("peer", &self.peer.as_ref().map(Identity::uri))
            .field("failed", &self.failed)
            .finish()
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Encrypt `data` into `tx`, growing it if rustls asks for more room.
fn seal<D>(w: &mut WriteTraffic<'_, D>, data: &[u8], tx: &mut Buf) -> Result<(), rustls::Error> {
    tx.reserve(data.len() + data.len().div_ceil(RECORD).max(1) * RECORD_OVERHEAD);
    loop {
        match w.encrypt(data, tx.spare()) {
            Ok(n) => {
                tx.end += n;
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) => tx.reserve(s.required_size),
            Err(EncryptError::EncryptExhausted) => return Err(rustls::Error::EncryptError),
        }
    }
}

/// Handle one state rustls reached: decrypted data goes to `dst` (from `*got` on) and what
/// does not fit to `st.plain`; handshake records and `seal` (encrypted once rustls allows)
/// go to `st.tx`. Returns the bytes of the receive buffer rustls is done with.
fn handle<D>(
    status: UnbufferedStatus<'_, '_, D>,
    st: &mut State,
    dst: &mut [u8],
    got: &mut usize,
    to_seal: &mut Option<&[u8]>,
) -> Result<(usize, Next), rustls::Error> {
    let UnbufferedStatus { mut discard, state } = status;
    let next = match state? {
        ConnectionState::ReadTraffic(mut r) => {
            while let Some(rec) = r.next_record() {
                let rec = rec?;
                discard += rec.discard;
                let k = rec.payload.len().min(dst.len() - *got);
                dst[*got..*got + k].copy_from_slice(&rec.payload[..k]);
                *got += k;
                let rest = &rec.payload[k..];
                if !rest.is_empty() {
                    st.plain.reserve(rest.len());
                    st.plain.spare()[..rest.len()].copy_from_slice(rest);
                    st.plain.end += rest.len();
                }
            }
            Next::Again
        }
        ConnectionState::EncodeTlsData(mut e) => {
            loop {
                match e.encode(st.tx.spare()) {
                    Ok(n) => {
                        st.tx.end += n;
                        break;
                    }
                    Err(EncodeError::InsufficientSize(s)) => st.tx.reserve(s.required_size),
                    Err(EncodeError::AlreadyEncoded) => break,
                }
            }
            Next::Again
        }
        // What was encoded is in `tx`, which goes out in order before anything later.
        ConnectionState::TransmitTlsData(t) => {
            t.done();
            Next::Again
        }
        ConnectionState::BlockedHandshake => Next::Wait,
        ConnectionState::WriteTraffic(mut w) => {
            st.open = true;
            if !st.early.is_empty() {
                let early = std::mem::take(&mut st.early);
                seal(&mut w, &early, &mut st.tx)?;
            }
            if let Some(data) = to_seal.take() {
                seal(&mut w, data, &mut st.tx)?;
            }
            if st.want_close && !st.close_sent {
                st.tx.reserve(64);
                if let Ok(n) = w.queue_close_notify(st.tx.spare()) {
                    st.tx.end += n;
                }
                st.close_sent = true;
            }
            Next::Wait
        }
        ConnectionState::PeerClosed => {
            st.peer_closed = true;
            Next::Again
        }
        ConnectionState::Closed => {
            st.peer_closed = true;
            Next::Wait
        }
        // Early data is never accepted (the server allows none); a peer that sends it
        // anyway breaks the protocol.
        ConnectionState::ReadEarlyData(_) => {
            return Err(rustls::Error::General("unexpected early data".into()));
        }
        _ => Next::Wait,
    };
    Ok((discard, next))
}

/// Whether a fatal alert from the peer means it refused our certificate.
fn refuses_us(a: rustls::AlertDescription) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        a,
        A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::CertificateRequired
            | A::UnknownCA
            | A::AccessDenied
            | A::DecryptError
    )
}

/// The alert of [`TlsStream::collect_alert`], if rustls hands one out, into `tx`.
fn alert_step<D>(status: UnbufferedStatus<'_, '_, D>, tx: &mut Buf) {
    if let Ok(ConnectionState::EncodeTlsData(mut e)) = status.state {
        tx.reserve(64);
        if let Ok(n) = e.encode(tx.spare()) {
            tx.end += n;
        }
    }
}

impl<S: Socket> TlsStream<S> {
    pub(crate) fn client(sock: S, cfg: Arc<ClientConfig>) -> io::Result<TlsStream<S>> {
        let conn = UnbufferedClientConnection::new(cfg, crate::config::server_name())
            .map_err(io::Error::other)?;
        Ok(Self::new(sock, Conn::Client(Box::new(conn))))
    }

    pub(crate) fn server(sock: S, cfg: Arc<ServerConfig>) -> io::Result<TlsStream<S>> {
        let conn = UnbufferedServerConnection::new(cfg).map_err(io::Error::other)?;
        Ok(Self::new(sock, Conn::Server(Box::new(conn))))
    }

    fn new(sock: S, conn: Conn) -> TlsStream<S> {
        TlsStream {
            sock,
            conn,
            rx: Buf::with_capacity(RX_MIN),
            st: State::default(),
            staged: Vec::new(),
            failed: None,
            eof: false,
            first_byte: None,
            peer: None,
            expect: None,
            drained: false,
        }
    }

    /// Require the peer's certificate to name rank `rank` (checked when the handshake
    /// finishes; a mismatch fails the stream like a refused certificate).
    pub(crate) fn expect_rank(&mut self, rank: gloo_transport::Rank) {
        self.expect = Some(rank);
    }

    /// Ciphertext already read from the socket by someone else, to be processed first.
    pub(crate) fn push_received(&mut self, bytes: &[u8]) {
        if let Some(&b) = bytes.first() {
            self.first_byte.get_or_insert(b);
        }
        self.rx.reserve(bytes.len());
        self.rx.spare()[..bytes.len()].copy_from_slice(bytes);
        self.rx.end += bytes.len();
    }

    /// The socket underneath.
    pub fn socket(&self) -> &S {
        &self.sock
    }

    /// The socket underneath, mutably (to register it with a poller). Reading or writing it
    /// directly breaks the session.
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    /// Whether the peer showed that it does not speak TLS: the first byte it sent cannot
    /// start a TLS record (which starts with 0x16, a handshake, or 0x15, an alert). A client
    /// that reached a plaintext server, or a server reached by a plaintext client, can then
    /// say so instead of reporting a failed handshake.
    pub fn peer_is_not_tls(&self) -> bool {
        !matches!(self.first_byte, None | Some(0x15 | 0x16))
    }

    /// Whether the TLS handshake has finished (the peer's certificate was checked).
    pub fn is_open(&self) -> bool {
        self.st.open
    }

    /// The identity the peer's certificate names, once the handshake has finished.
    pub fn peer_identity(&self) -> Option<&Identity> {
        self.peer.as_ref()
    }

    /// Whether encrypted output waits for room in the socket.
    pub fn has_pending_output(&self) -> bool {
        self.st.tx.pending() > 0
    }

    /// Whether bytes from the peer wait: decrypted, a whole record received and not yet
    /// decrypted, or anything in the socket. (Part of a record with nothing behind it proves
    /// nothing: a peer that stops mid-record is as silent as one that stops between records.)
    pub fn input_waiting(&self) -> bool {
        self.st.plain.pending() > 0
            || self.whole_record_received()
            || matches!(self.sock.peek(&mut [0u8; 1]), Ok(n) if n > 0)
    }

    /// Whether a whole record waits, received and not yet decrypted.
    fn whole_record_received(&self) -> bool {
        let rx = self.rx.live();
        rx.len() >= 5 && rx.len() >= 5 + usize::from(u16::from_be_bytes([rx[3], rx[4]]))
    }

    /// Whether the last call was a `read` that drained the socket and left nothing to
    /// decrypt or hand out: then a read that returned less than asked used the readiness up,
    /// as a short read of a plain socket does (see `ByteStream::drains_on_short_io`).
    pub(crate) fn read_drained(&self) -> bool {
        self.drained && self.st.plain.pending() == 0 && !self.whole_record_received()
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, detail)) => Err(io::Error::new(*kind, detail.clone())),
            None => Ok(()),
        }
    }

    fn fail(&mut self, kind: io::ErrorKind, detail: String) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some((kind, detail.clone()));
        }
        io::Error::new(kind, detail)
    }

    /// A TLS error: record it as the stream's failure, and send the alert rustls queued for
    /// the peer (best effort), so that it learns why.
    fn fail_tls(&mut self, e: rustls::Error) -> io::Error {
        self.collect_alert();
        let _ = self.flush_tx();
        let not_tls = !matches!(self.first_byte, None | Some(0x15 | 0x16));
        let (kind, detail) = if let rustls::Error::AlertReceived(a) = &e
            && refuses_us(*a)
        {
            // In TLS 1.3 the client finishes before the server has judged its certificate,
            // so a refusal arrives as an alert after the handshake.
            (io::ErrorKind::PermissionDenied, format!("the peer refused our certificate: {e}"))
        } else if not_tls && !self.st.open {
            // A server that answers in something else did not authenticate: for the client
            // that is final (`PermissionDenied`, so the transport stops dialling it at once;
            // a gloo rank without TLS answers a ClientHello with its plaintext `Hello`). A
            // client that sends something else broke the protocol of the port it reached.
            let kind = match self.conn {
                Conn::Client(_) => io::ErrorKind::PermissionDenied,
                Conn::Server(_) => io::ErrorKind::InvalidData,
            };
            (
                kind,
                format!(
                    "the peer does not speak TLS (its first byte is 0x{:02x}; is it configured \
                     without TLS?): {e}",
                    self.first_byte.unwrap_or_default()
                ),
            )
        } else if !self.st.open {
            (io::ErrorKind::PermissionDenied, format!("TLS handshake failed: {e}"))
        } else {
            (io::ErrorKind::InvalidData, format!("TLS session broken by the peer: {e}"))
        };
        self.fail(kind, detail)
    }

    /// After an error, rustls hands out the alert it queued as ordinary output, at the next
    /// call (and only then: a second call after a record-layer error would fail again and
    /// queue a second alert).
    fn collect_alert(&mut self) {
        // The same received bytes as before: rustls's handshake reassembly keeps positions in
        // them (queued output is popped before they are looked at again).
        let incoming = &mut self.rx.v[self.rx.start..self.rx.end];
        match &mut self.conn {
            Conn::Client(c) => alert_step(c.process_tls_records(incoming), &mut self.st.tx),
            Conn::Server(c) => alert_step(c.process_tls_records(incoming), &mut self.st.tx),
        }
    }

    /// Run rustls over the received bytes until it waits: decrypt into `dst` (and the
    /// plaintext buffer), queue handshake output, encrypt `to_seal` once allowed. Returns
    /// the bytes put into `dst`.
    fn process(&mut self, dst: &mut [u8], mut to_seal: Option<&[u8]>) -> io::Result<usize> {
        let mut got = 0;
        let was_open = self.st.open;
        loop {
            let incoming = &mut self.rx.v[self.rx.start..self.rx.end];
            let r = match &mut self.conn {
                Conn::Client(c) => handle(
                    c.process_tls_records(incoming),
                    &mut self.st,
                    dst,
                    &mut got,
                    &mut to_seal,
                ),
                Conn::Server(c) => handle(
                    c.process_tls_records(incoming),
                    &mut self.st,
                    dst,
                    &mut got,
                    &mut to_seal,
                ),
            };
            match r {
                Ok((discard, next)) => {
                    self.rx.consume(discard);
                    if matches!(next, Next::Wait) {
                        break;
                    }
                }
                Err(e) => return Err(self.fail_tls(e)),
            }
        }
        if self.st.open && !was_open {
            self.opened()?;
        }
        if to_seal.is_some() {
            // Asked to encrypt on a session that cannot send (closed by both sides).
            return Err(self.fail(io::ErrorKind::BrokenPipe, "the TLS session is closed".into()));
        }
        Ok(got)
    }

    /// The handshake just finished: learn whom it was with.
    fn opened(&mut self) -> io::Result<()> {
        let certs = match &self.conn {
            Conn::Client(c) => c.peer_certificates(),
            Conn::Server(c) => c.peer_certificates(),
        };
        // The verifier accepted this certificate moments ago, so it names an identity.
        match certs.and_then(|c| c.first()).map(identity_of_der) {
            Some(Ok(id)) => {
                if let Some(want) = self.expect
                    && id.as_rank() != Some(want)
                {
                    return Err(self.fail(
                        io::ErrorKind::PermissionDenied,
                        format!("the peer's certificate is for {id}, not rank {want}"),
                    ));
                }
                tracing::trace!(peer = %id, "TLS session open");
                self.peer = Some(id);
                Ok(())
            }
            _ => Err(self.fail(
                io::ErrorKind::PermissionDenied,
                "the TLS handshake finished without a peer certificate naming an identity".into(),
            )),
        }
    }

    /// Read more ciphertext from the socket (one system call); `Ok(false)` at its end.
    fn recv(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.rx.pending() == 0 {
            self.rx.start = 0;
            self.rx.end = 0;
        }
        // Room for a whole record at least; a buffer that a read filled grows (bulk data).
        self.rx.reserve(RX_MIN.min(self.rx.v.len()));
        loop {
            let spare = self.rx.v.len() - self.rx.end;
            match self.sock.read(self.rx.spare()) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    if self.first_byte.is_none() {
                        self.first_byte = Some(self.rx.v[self.rx.end]);
                    }
                    self.rx.end += n;
                    // A short read under edge-triggered readiness: the socket is empty now,
                    // and what arrives later raises a new event.
                    self.drained = n < spare;
                    if n == spare && self.rx.v.len() < RX_MAX {
                        let grown = (self.rx.v.len() * 2).min(RX_MAX);
                        self.rx.v.resize(grown, 0);
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if would_block(&e) => return Err(e),
                Err(e) => return Err(self.fail(e.kind(), e.to_string())),
            }
        }
    }

    /// Write queued ciphertext until done (`Ok`) or the socket would block (its error).
    fn flush_tx(&mut self) -> io::Result<()> {
        while self.st.tx.pending() > 0 {
            match self.sock.write(self.st.tx.live()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.st.tx.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`flush_tx`](Self::flush_tx), where waiting is not an error (the caller goes on).
    fn flush_some(&mut self) -> io::Result<()> {
        match self.flush_tx() {
            Ok(()) => Ok(()),
            Err(e) if would_block(&e) => Ok(()),
            Err(e) => Err(self.fail(e.kind(), e.to_string())),
        }
    }

    /// Copy decrypted bytes already held into `dst`.
    fn take_plain(&mut self, dst: &mut [u8]) -> usize {
        let k = self.st.plain.pending().min(dst.len());
        if k > 0 {
            dst[..k].copy_from_slice(&self.st.plain.live()[..k]);
            self.st.plain.consume(k);
        }
        k
    }

    /// Read decrypted bytes: `Ok(0)` once the peer closed the session with `close_notify`,
    /// `WouldBlock` when nothing is there now, `UnexpectedEof` when the connection ended
    /// without `close_notify` (during the handshake too). Drives the handshake as needed.
    pub fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        self.drained = false;
        if dst.is_empty() {
            return Ok(0);
        }
        let n = self.take_plain(dst);
        if n > 0 {
            return Ok(n);
        }
        self.check()?;
        loop {
            let n = self.process(dst, None)?;
            self.flush_some()?;
            if n > 0 {
                return Ok(n);
            }
            if self.st.peer_closed {
                return Ok(0);
            }
            if !self.recv()? {
                if !self.st.open {
                    // Typically a peer without TLS, which gave up on our ClientHello.
                    return Err(self.fail(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed during the TLS handshake (does the peer use \
                         TLS, with this job's CA?)"
                            .into(),
                    ));
                }
                let detail = if self.rx.pending() > 0 {
                    "the connection ended in the middle of a TLS record"
                } else {
                    "the connection ended without a TLS close_notify"
                };
                return Err(self.fail(io::ErrorKind::UnexpectedEof, detail.into()));
            }
        }
    }

    /// Encrypt a prefix of the concatenation of `bufs` (at most 256 KiB) and start sending
    /// it; `WouldBlock` when earlier output still fills the socket. Before the handshake has
    /// finished, up to 64 KiB are kept and sent once it has.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // A write that takes less than offered says nothing of the socket's room.
        self.drained = false;
        self.check()?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        if self.st.tx.pending() > 0 {
            match self.flush_tx() {
                Ok(()) => {}
                Err(e) if would_block(&e) => {
                    if self.st.tx.pending() >= TX_HIGH {
                        return Err(e);
                    }
                }
                Err(e) => return Err(self.fail(e.kind(), e.to_string())),
            }
        }
        if !self.st.open {
            // The handshake may have finished in rustls without a call having seen it.
            self.process(&mut [], None)?;
        }
        let n = if self.st.open {
            self.seal_bufs(bufs)?
        } else {
            let mut room = EARLY_MAX - self.st.early.len();
            if room == 0 {
                // Too much to keep: finish the handshake first (a blocking socket waits for
                // it here; a non-blocking one says `WouldBlock` until the peer's answer
                // has arrived and been read).
                self.complete_handshake()?;
                return self.write_vectored(bufs);
            }
            room = room.min(total);
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(room - n);
                self.st.early.extend_from_slice(&b[..k]);
                n += k;
            }
            n
        };
        self.flush_some()?;
        Ok(n)
    }

    /// Read and answer the peer until the handshake has finished (or the socket would
    /// block, or the connection ends).
    fn complete_handshake(&mut self) -> io::Result<()> {
        while !self.st.open {
            self.flush_tx()?;
            self.process(&mut [], None)?;
            if self.st.open {
                break;
            }
            if !self.recv()? {
                return Err(self.fail(
                    io::ErrorKind::UnexpectedEof,
                    "the connection ended during the TLS handshake".into(),
                ));
            }
        }
        Ok(())
    }

    /// Encrypt up to [`TX_CHUNK`] bytes of `bufs`: pieces smaller than a record are gathered
    /// into whole records, long runs are encrypted where they are.
    fn seal_bufs(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut staged = std::mem::take(&mut self.staged);
        staged.clear();
        let mut taken = 0;
        let mut result = Ok(());
        'outer: for b in bufs {
            let mut s: &[u8] = b;
            while !s.is_empty() && taken < TX_CHUNK {
                let budget = TX_CHUNK - taken;
                if staged.is_empty() && s.len() >= RECORD && budget >= RECORD {
                    let k = s.len().min(budget) / RECORD * RECORD;
                    if let Err(e) = self.process(&mut [], Some(&s[..k])) {
                        result = Err(e);
                        break 'outer;
                    }
                    s = &s[k..];
                    taken += k;
                    continue;
                }
                let k = (RECORD - staged.len()).min(s.len()).min(budget);
                staged.extend_from_slice(&s[..k]);
                s = &s[k..];
                taken += k;
                if staged.len() == RECORD {
                    if let Err(e) = self.process(&mut [], Some(&staged)) {
                        result = Err(e);
                        break 'outer;
                    }
                    staged.clear();
                }
            }
            if taken >= TX_CHUNK {
                break;
            }
        }
        if result.is_ok() && !staged.is_empty() {
            result = self.process(&mut [], Some(&staged)).map(|_| ());
        }
        self.staged = staged;
        result.map(|()| taken)
    }

    /// Move the handshake on and write queued output: `Ok` once everything is on the
    /// socket, `WouldBlock` when it has no room for the rest.
    pub fn flush_pending(&mut self) -> io::Result<()> {
        self.check()?;
        if !self.st.open {
            self.process(&mut [], None)?;
        }
        match self.flush_tx() {
            Ok(()) => Ok(()),
            Err(e) if would_block(&e) => Err(e),
            Err(e) => Err(self.fail(e.kind(), e.to_string())),
        }
    }

    /// Send `close_notify` (after what is queued) as far as the socket takes it now.
    pub fn close(&mut self) {
        if self.failed.is_some() || !self.st.open || self.st.close_sent {
            return;
        }
        self.st.want_close = true;
        if self.process(&mut [], None).is_ok() {
            let _ = self.flush_tx();
        }
    }
}

impl<S: Socket> Drop for TlsStream<S> {
    fn drop(&mut self) {
        // Dropping says goodbye at the TLS level too, so the peer can tell a clean close
        // from a truncation.
        self.close();
    }
}

impl<S: Socket> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TlsStream::read(self, buf)
    }
}

impl<S: Socket> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TlsStream::write_vectored(self, &[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TlsStream::write_vectored(self, bufs)
    }

    /// Write everything queued, waiting as the socket does (a blocking socket blocks, up to
    /// its write timeout).
    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()
    }
}
