//! Rogue peers and leak counters for the transport's adversarial and fault tests.
//!
//! A [`Rogue`] is a raw [`TcpStream`] that speaks the wire protocol of
//! [`gloo_transport::proto`] by hand: it can run a correct handshake (with the job's token, as
//! an insider would), or send whatever malformed bytes a test wants, and it reads what the
//! victim answers frame by frame. Every read is bounded by a deadline.
//!
//! [`thread_count`] and [`fd_count`] read `/proc/self`, so a test can check that a
//! communicator's threads and sockets are gone after it is dropped. [`capture_logs`] keeps
//! the warnings a transport logs, for tests whose only observable outcome is a logged
//! rejection. [`connect_threads`], [`board_connect`] and [`exchange_with`] build and check a
//! group over any [`Listener`], in one process or across processes.
//!
//! [`Siege`] is the shape of the handshake attacks: some ranks (the victims) start connecting,
//! a rogue knocks on a victim ([`knock`]), the victim must close the rogue's connection
//! ([`Rogue::assert_closed`]) and log why ([`assert_rejected`]), and then the whole group
//! still connects and exchanges ([`all_exchange`]). [`repel`] runs that sequence in one call.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gloo_transport::proto::{
    self, AUTH_LEN, FrameReader, HEADER_LEN, HELLO_LEN, Handshake, HandshakeConfig, Header, Hello,
    Opcode, Step,
};
use gloo_transport::{Communicator, Fingerprint, Listener, Op, Rank, Slot};

use crate::conformance::pattern;
use crate::procs::{Board, Outcome};

/// The largest payload [`Rogue::next_frame`] buffers; anything longer is an error, so a
/// misbehaving victim cannot make a test allocate without bound.
pub const MAX_FRAME_PAYLOAD: u64 = 64 << 20;

/// How long one write of a rogue may block (a victim that stopped reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One frame read from the victim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The decoded header.
    pub header: Header,
    /// The fingerprint that followed the header, if flagged.
    pub fp: Option<Fingerprint>,
    /// The payload (empty for `Rts` and control frames).
    pub payload: Vec<u8>,
}

/// What the peer did to a connection a test watched for closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The peer closed or reset the connection.
    Yes,
    /// The connection was still open at the deadline.
    StillOpen,
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "the rogue's deadline passed"))
    } else {
        Ok(left)
    }
}

fn proto_err(e: gloo_transport::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The whole `Hello` frame (header and payload) with the given fields.
pub fn hello_frame(
    job: &str,
    from: Rank,
    to: Rank,
    size: u32,
    token: bool,
    nonce: [u8; proto::NONCE_LEN],
) -> Vec<u8> {
    Hello {
        job: proto::job_hash(job),
        from,
        to,
        size,
        flags: if token { proto::HELLO_TOKEN } else { 0 },
        nonce,
    }
    .encode()
    .to_vec()
}

/// The bytes of a header with no flags.
pub fn header(opcode: Opcode, slot: u64, len: u64, arg: u64) -> [u8; HEADER_LEN] {
    Header::new(opcode, slot, len, arg).encode()
}

/// An `Auth` frame carrying `mac`.
pub fn auth_frame(mac: &[u8; 32]) -> Vec<u8> {
    let mut v = header(Opcode::Auth, 0, AUTH_LEN, 0).to_vec();
    v.extend_from_slice(mac);
    v
}

/// An `Eager` frame carrying `payload` on `slot`.
pub fn eager_frame(slot: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = header(Opcode::Eager, slot, payload.len() as u64, 0).to_vec();
    v.extend_from_slice(payload);
    v
}

/// The frames of a complete, correct handshake, as an eavesdropper would have recorded them.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The connector's `Hello`.
    pub connector_hello: Vec<u8>,
    /// The acceptor's `Hello`, then its `Auth` in token mode.
    pub acceptor_reply: Vec<u8>,
    /// The connector's `Auth` (empty in insecure mode).
    pub connector_auth: Vec<u8>,
}

/// A complete, correct handshake between `from` (connector) and `to` (acceptor), run in
/// memory with the real protocol code and fresh nonces.
pub fn recorded_handshake(
    job: &str,
    token: Option<&[u8]>,
    from: Rank,
    to: Rank,
    size: u32,
) -> Recorded {
    let cfg = |me| HandshakeConfig {
        job: proto::job_hash(job),
        me,
        size,
        token: token.map(<[u8]>::to_vec),
    };
    let nonce = || proto::fresh_nonce().expect("the system random generator works in tests");
    let mut c = Handshake::connector(cfg(from), to, nonce());
    let mut a = Handshake::acceptor(cfg(to), nonce());
    let connector_hello = c.output().to_vec();
    c.consumed_output(connector_hello.len());
    a.feed(&connector_hello).expect("the recorded handshake is correct");
    let acceptor_reply = a.output().to_vec();
    a.consumed_output(acceptor_reply.len());
    c.feed(&acceptor_reply).expect("the recorded handshake is correct");
    let connector_auth = c.output().to_vec();
    c.consumed_output(connector_auth.len());
    a.feed(&connector_auth).expect("the recorded handshake is correct");
    assert_eq!(a.done(), Some(from), "the in-memory handshake did not complete");
    assert_eq!(c.done(), Some(to), "the in-memory handshake did not complete");
    Recorded { connector_hello, acceptor_reply, connector_auth }
}

/// A hand-driven connection to a victim's listener.
#[derive(Debug)]
pub struct Rogue {
    stream: TcpStream,
    reader: FrameReader,
    /// Bytes read from the socket and not yet fed to `reader`.
    pending: Vec<u8>,
}

impl Rogue {
    /// Connect to `addr`, retrying refused connections until `deadline`.
    pub fn connect(addr: SocketAddr, deadline: Instant) -> io::Result<Rogue> {
        loop {
            match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
                Ok(stream) => return Rogue::from_stream(stream),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Wrap a connection accepted by a rogue listener (made blocking, with no delay).
    pub fn from_stream(stream: TcpStream) -> io::Result<Rogue> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        // A victim that stops reading without closing must not block a test for ever.
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Rogue { stream, reader: FrameReader::new(None), pending: Vec::new() })
    }

    /// Read exactly `n` bytes (an unparsed frame, say).
    pub fn read_bytes(&mut self, n: usize, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; n];
        self.stream.set_read_timeout(Some(remaining(deadline)?))?;
        self.stream.read_exact(&mut out)?;
        Ok(out)
    }

    /// The underlying stream (for shutting down one direction, or reading its address).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Send raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Send `bytes` and close the write side so that the bytes and the end of stream travel
    /// in one TCP segment (the socket is corked until the close), so the victim learns of
    /// both in one readiness event.
    pub fn send_then_close(&mut self, bytes: &[u8]) -> io::Result<()> {
        socket2::SockRef::from(&self.stream).set_tcp_cork(true)?;
        self.stream.write_all(bytes)?;
        self.stream.shutdown(std::net::Shutdown::Write)
    }

    /// Send a header with no payload and no flags.
    pub fn send_header(&mut self, opcode: Opcode, slot: u64, len: u64, arg: u64) -> io::Result<()> {
        self.send(&header(opcode, slot, len, arg))
    }

    /// Run the connector's side of a correct handshake as `cfg.me` towards `to`, using the real
    /// protocol code. Bytes the victim sends after its handshake frames are kept for
    /// [`next_frame`](Rogue::next_frame).
    pub fn handshake(
        &mut self,
        cfg: HandshakeConfig,
        to: Rank,
        deadline: Instant,
    ) -> io::Result<()> {
        let nonce = proto::fresh_nonce().map_err(proto_err)?;
        let mut hs = Handshake::connector(cfg, to, nonce);
        let mut buf = [0u8; 4096];
        loop {
            let out = hs.output().to_vec();
            if !out.is_empty() {
                self.stream.write_all(&out)?;
                hs.consumed_output(out.len());
            }
            if hs.done().is_some() {
                return Ok(());
            }
            self.stream.set_read_timeout(Some(remaining(deadline)?))?;
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the victim closed the connection during the handshake",
                ));
            }
            let used = hs.feed(&buf[..n]).map_err(proto_err)?;
            self.pending.extend_from_slice(&buf[used..n]);
        }
    }

    /// Read the victim's `Hello` (and, in token mode, its `Auth`) as raw frames, returning
    /// the `Hello` frame's bytes (header included) for building a transcript.
    pub fn read_acceptor_hello(&mut self, token: bool, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut want = HEADER_LEN + HELLO_LEN as usize;
        if token {
            want += HEADER_LEN + AUTH_LEN as usize;
        }
        let mut got = vec![0u8; want];
        self.stream.set_read_timeout(Some(remaining(deadline)?))?;
        self.stream.read_exact(&mut got)?;
        got.truncate(HEADER_LEN + HELLO_LEN as usize);
        Ok(got)
    }

    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let mut buf = [0u8; 64 * 1024];
        self.stream.set_read_timeout(Some(remaining(deadline)?))?;
        let n = self.stream.read(&mut buf)?;
        self.pending.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// The next frame from the victim, skipping `Heartbeat` and `Credit` frames, or an error
    /// at the deadline, on a protocol violation by the victim, or at the end of the stream.
    pub fn next_frame(&mut self, deadline: Instant) -> io::Result<Frame> {
        loop {
            let f = self.next_any_frame(deadline)?;
            if !matches!(f.header.opcode, Opcode::Heartbeat | Opcode::Credit) {
                return Ok(f);
            }
        }
    }

    /// The next frame from the victim, whatever its kind.
    pub fn next_any_frame(&mut self, deadline: Instant) -> io::Result<Frame> {
        let mut current: Option<Frame> = None;
        loop {
            let mut used_total = 0;
            while used_total < self.pending.len() {
                let (used, step) =
                    self.reader.feed(&self.pending[used_total..]).map_err(proto_err)?;
                used_total += used;
                match step {
                    Step::NeedMore => {}
                    Step::Header(header, fp) => {
                        if header.payload_len() > MAX_FRAME_PAYLOAD {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("the victim sent a {}-byte payload", header.payload_len()),
                            ));
                        }
                        let frame = Frame { header, fp, payload: Vec::new() };
                        if header.payload_len() == 0 {
                            self.pending.drain(..used_total);
                            return Ok(frame);
                        }
                        current = Some(frame);
                    }
                    Step::Payload(p) => {
                        let Some(f) = current.as_mut() else {
                            return Err(io::Error::other("payload outside a frame"));
                        };
                        f.payload.extend_from_slice(p);
                        if self.reader.payload_left() == 0 {
                            self.pending.drain(..used_total);
                            return Ok(current.take().expect("set when its header arrived"));
                        }
                    }
                    other => {
                        return Err(io::Error::other(format!(
                            "a reader step not known: {other:?}"
                        )));
                    }
                }
            }
            self.pending.clear();
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the victim closed the connection",
                ));
            }
        }
    }

    /// Read and discard until the victim closes (or resets) the connection, or `deadline`.
    pub fn wait_closed(&mut self, deadline: Instant) -> Closed {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let Ok(left) = remaining(deadline) else { return Closed::StillOpen };
            if self.stream.set_read_timeout(Some(left)).is_err() {
                return Closed::Yes;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Closed::Yes,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Closed::Yes,
            }
        }
    }

    /// Panic unless the victim closes (or resets) this connection by `deadline`; `what` names
    /// the connection in the message, which also shows the captured logs.
    #[track_caller]
    pub fn assert_closed(&mut self, deadline: Instant, what: &str) {
        assert_eq!(
            self.wait_closed(deadline),
            Closed::Yes,
            "the victim kept {what} open; logs:\n{}",
            logs()
        );
    }

    /// Stop sending (half-close), keeping the read side open.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }
}

fn count_entries(dir: &str) -> usize {
    // The directory handle read_dir opens is itself one entry of /proc/self/fd: it is counted
    // every time, so counts stay comparable.
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
}

/// The number of threads of this process (`/proc/self/task`).
pub fn thread_count() -> usize {
    count_entries("/proc/self/task")
}

/// The number of open file descriptors of this process (`/proc/self/fd`, plus the one used
/// to list it).
pub fn fd_count() -> usize {
    count_entries("/proc/self/fd")
}

/// Poll until this process has at most `threads` threads and `fds` descriptors, or until
/// `deadline`; returns the last counts seen, for the caller to assert on.
pub fn wait_for_counts(threads: usize, fds: usize, deadline: Instant) -> (usize, usize) {
    loop {
        let now = (thread_count(), fd_count());
        if (now.0 <= threads && now.1 <= fds) || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        LOGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Install (once per process) a subscriber that keeps every warning and error logged, from
/// any thread, for [`logs`] to return. Use it instead of
/// [`init_tracing`](crate::init_tracing) in a test binary that asserts on logs.
pub fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| CaptureWriter)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
}

/// Everything captured since the last [`clear_logs`], one event per line.
pub fn logs() -> String {
    let l = LOGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    String::from_utf8_lossy(&l).into_owned()
}

/// Forget what was captured so far.
pub fn clear_logs() {
    LOGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
}

/// Whether one captured line contains every one of `needles`.
pub fn logged(needles: &[&str]) -> bool {
    logs().lines().any(|line| needles.iter().all(|n| line.contains(n)))
}

/// Panic unless one captured log line says a connection was rejected and contains every one
/// of `needles` (see [`capture_logs`]).
#[track_caller]
pub fn assert_rejected(needles: &[&str]) {
    let mut all = vec!["rejected a connection"];
    all.extend_from_slice(needles);
    assert!(logged(&all), "no logged rejection with {all:?}; logs:\n{}", logs());
}

/// For silent connections made one after another to one listener, the first of which the
/// victim has just closed to stay within its cap of handshakes under way: panics unless every
/// later one is still open (the victim dropped the oldest, not another).
#[track_caller]
pub fn assert_only_the_oldest_closed(conns: &mut [Rogue]) {
    let dropped: Vec<usize> = conns
        .iter_mut()
        .enumerate()
        .skip(1)
        .filter_map(|(i, c)| {
            (c.wait_closed(Instant::now() + Duration::from_millis(5)) == Closed::Yes).then_some(i)
        })
        .collect();
    assert!(dropped.is_empty(), "connections {dropped:?} were dropped, not only the oldest");
}

/// Connect a rogue to `addr` and send `bytes`; panics if either fails (the set-up of an
/// attack, not its outcome).
#[track_caller]
pub fn knock(addr: SocketAddr, bytes: &[u8], deadline: Instant) -> Rogue {
    let mut r = Rogue::connect(addr, deadline)
        .unwrap_or_else(|e| panic!("the rogue cannot connect to {addr}: {e}"));
    r.send(bytes).unwrap_or_else(|e| panic!("the rogue cannot send to {addr}: {e}"));
    r
}

/// A group being connected in two waves, so that a test can act between them: the ranks
/// [`start`](Siege::start)ed first run `connect_all` on their own threads while the others
/// have not begun, then [`connected`](Siege::connected) starts the rest and returns the
/// group.
///
/// Listeners are given in rank order; the address list may name more ranks than there are
/// listeners (the ranks a test plays by hand, or that never show up).
#[derive(Debug)]
pub struct Siege<L: Listener> {
    addrs: Vec<Vec<u8>>,
    deadline: Instant,
    waiting: Vec<Option<L>>,
    running: Vec<(usize, JoinHandle<gloo_transport::Result<L::Comm>>)>,
}

impl<L: Listener + 'static> Siege<L> {
    /// A group of `listeners` (rank order), the addresses being theirs.
    pub fn new(listeners: Vec<L>, deadline: Instant) -> Self {
        let addrs = listeners.iter().map(Listener::address_bytes).collect();
        Self::with_addrs(listeners, addrs, deadline)
    }

    /// A group whose ranks `0..listeners.len()` are `listeners` and whose address list is
    /// `addrs` (which may be longer).
    pub fn with_addrs(listeners: Vec<L>, addrs: Vec<Vec<u8>>, deadline: Instant) -> Self {
        assert!(listeners.len() <= addrs.len(), "more listeners than addresses");
        Siege {
            addrs,
            deadline,
            waiting: listeners.into_iter().map(Some).collect(),
            running: Vec::new(),
        }
    }

    /// Every rank's address, as given to `connect_all`.
    pub fn addrs(&self) -> &[Vec<u8>] {
        &self.addrs
    }

    /// Start `connect_all` now for the listeners of `ranks` (each on a thread named
    /// `connect-<rank>`). A rank already started, or with no listener, is a test bug: panics.
    pub fn start(&mut self, ranks: &[u32]) {
        for &r in ranks {
            let i = r as usize;
            let l = self
                .waiting
                .get_mut(i)
                .and_then(Option::take)
                .unwrap_or_else(|| panic!("rank {r} has no listener left to start"));
            let (addrs, deadline) = (self.addrs.clone(), self.deadline);
            let h = std::thread::Builder::new()
                .name(format!("connect-{r}"))
                .spawn(move || l.connect_all(&addrs, deadline))
                .expect("a test can spawn a thread");
            self.running.push((i, h));
        }
    }

    /// Start every rank not started yet, and return each rank's `connect_all` result in
    /// rank order.
    pub fn join(mut self) -> Vec<gloo_transport::Result<L::Comm>> {
        let rest: Vec<u32> = (0..self.waiting.len())
            .filter(|&i| self.waiting[i].is_some())
            .map(|i| u32::try_from(i).expect("a test group has fewer than 2^32 ranks"))
            .collect();
        self.start(&rest);
        let mut results: Vec<(usize, gloo_transport::Result<L::Comm>)> = self
            .running
            .into_iter()
            .map(|(i, h)| {
                let r = h.join().unwrap_or_else(|_| panic!("rank {i}'s connect thread panicked"));
                (i, r)
            })
            .collect();
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// Like [`join`](Self::join), panicking (naming the rank and its error) unless every rank
    /// connected.
    #[track_caller]
    pub fn connected(self) -> Vec<L::Comm> {
        self.join()
            .into_iter()
            .enumerate()
            .map(|(r, c)| c.unwrap_or_else(|e| panic!("rank {r}'s connect_all failed: {e}")))
            .collect()
    }
}

/// Every communicator in `comms` (one group) exchanges a message with every other one at
/// once, each on its own thread; panics naming the rank that failed.
pub fn all_exchange<C: Communicator + Sync>(comms: &[C], deadline: Instant) {
    std::thread::scope(|s| {
        for c in comms {
            s.spawn(move || {
                let others: Vec<Rank> =
                    (0..c.size()).map(Rank).filter(|r| *r != c.rank()).collect();
                exchange_with(c, &others, 1, 3000, deadline)
                    .unwrap_or_else(|e| panic!("rank {} could not exchange: {e}", c.rank()));
            });
        }
    });
}

/// The common shape of a handshake attack: start `victims` connecting, run `attack` against
/// `victim_addr` (the listening address of one of them), require the victim to close the
/// rogue's connection while it still waits for its group, then start the other ranks and
/// require every rank to connect and exchange with every other. Returns the group.
#[track_caller]
pub fn repel<L: Listener + 'static>(
    mut siege: Siege<L>,
    victims: &[u32],
    victim_addr: SocketAddr,
    attack: impl FnOnce(SocketAddr, Instant) -> Rogue,
) -> Vec<L::Comm>
where
    L::Comm: Sync,
{
    siege.start(victims);
    let mut rogue = attack(victim_addr, siege.deadline);
    rogue.assert_closed(crate::deadline(30), "the rogue's connection");
    let deadline = siege.deadline;
    let comms = siege.connected();
    all_exchange(&comms, deadline);
    comms
}

/// Listeners for ranks `0..n`, each made by `bind(rank)`, and their address bytes in rank
/// order (what `connect_all` and `connect_lazy` take).
pub fn bind_group<L: Listener>(n: u32, bind: impl Fn(u32) -> L) -> (Vec<L>, Vec<Vec<u8>>) {
    let listeners: Vec<L> = (0..n).map(bind).collect();
    let addrs = listeners.iter().map(Listener::address_bytes).collect();
    (listeners, addrs)
}

/// Start `connect_all` for every listener on its own thread (named `connect-<i>`).
pub fn connect_threads<L>(
    listeners: Vec<L>,
    addrs: &[Vec<u8>],
    deadline: Instant,
) -> Vec<JoinHandle<gloo_transport::Result<L::Comm>>>
where
    L: Listener + 'static,
{
    listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let addrs = addrs.to_vec();
            std::thread::Builder::new()
                .name(format!("connect-{i}"))
                .spawn(move || l.connect_all(&addrs, deadline))
                .expect("a test can spawn a thread")
        })
        .collect()
}

/// In a child process of [`spawn_self`](crate::procs::spawn_self): publish this rank's
/// address on `board`, wait for every rank's, and connect the group.
pub fn board_connect<L: Listener>(
    listener: L,
    board: &Board,
    rank: u32,
    size: u32,
    deadline: Instant,
) -> gloo_transport::Result<L::Comm> {
    board
        .put(rank, &listener.address_bytes())
        .unwrap_or_else(|e| panic!("rank {rank} cannot publish its address: {e}"));
    let addrs = board
        .get_all(size, deadline)
        .unwrap_or_else(|e| panic!("rank {rank} did not see every address: {e}"));
    listener.connect_all(&addrs, deadline)
}

/// Panic unless the child succeeded having run exactly one test: a child whose test name
/// matched nothing also exits with status 0, and must not pass for one that did the work.
#[track_caller]
pub fn assert_ran_one_test(o: &Outcome) {
    o.assert_success();
    assert!(
        o.stdout.contains("test result: ok. 1 passed"),
        "{}",
        o.report("exited 0 without running exactly one test (a wrong test name?)")
    );
}

/// The contents [`exchange_with`] sends from `from` to `to`.
pub fn message(from: Rank, to: Rank, len: usize) -> Vec<u8> {
    pattern(len, u64::from(from.0) << 32 | u64::from(to.0))
}

/// Send a distinct `len`-byte message to every rank in `peers` and receive one from each, all
/// at once on slot `Slot::new(tag, 0)`; panics if a received message is not the one its
/// sender built with [`message`]. Every rank of the exchange calls this with the others.
pub fn exchange_with(
    comm: &dyn Communicator,
    peers: &[Rank],
    tag: u32,
    len: usize,
    deadline: Instant,
) -> gloo_transport::Result<()> {
    let me = comm.rank();
    let slot = Slot::new(tag, 0);
    let outs: Vec<Vec<u8>> = peers.iter().map(|p| message(me, *p, len)).collect();
    let mut ins: Vec<Vec<u8>> = peers.iter().map(|_| vec![0u8; len]).collect();
    {
        let mut ops: Vec<Op<'_>> = Vec::with_capacity(peers.len() * 2);
        for (p, out) in peers.iter().zip(&outs) {
            ops.push(Op::send(*p, slot, out));
        }
        for (p, inb) in peers.iter().zip(ins.iter_mut()) {
            ops.push(Op::recv(*p, slot, inb));
        }
        comm.run(&mut ops, deadline)?;
    }
    for (p, inb) in peers.iter().zip(&ins) {
        assert!(*inb == message(*p, me, len), "rank {me} got a wrong message from rank {p}");
    }
    Ok(())
}
