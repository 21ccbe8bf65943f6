//! Network faults for tests: a userspace fault proxy between two ranks, and Linux network
//! namespaces joined by a veth pair whose link can be cut and throttled.
//!
//! # The fault proxy
//!
//! [`Proxy`] listens on a loopback port and relays every connection made to it to a target
//! address, byte for byte, on threads of its own; a test publishes the proxy's address in
//! place of the target's, so the traffic of one pair of ranks goes through it. Each direction
//! can be given a [`Fault`] at any time: delay, a stall, a half-close, a black hole, a byte
//! trickle or a flipped bit (the kernel here has no netem, so these are made in userspace).
//! It can also record what it relays (for fuzzing seeds captured from real traffic).
//!
//! # Namespaces
//!
//! [`NetnsLink`] makes two network namespaces joined by a veth pair, on a private address
//! range (`10.232.<n>.1` and `.2`), with names unique to this process and link, so tests of
//! concurrent runs never collide. It can take the link down (a silent partition: no reset,
//! no error, packets just stop) and up again, and limit its rate with `tc ... tbf`. Dropping
//! it deletes both namespaces, which deletes the veth pair and the qdisc with them, also when
//! the test panics. It needs root and `ip`/`tc` from iproute2 (CI installs them).
//!
//! (The TLS tests have a similar helper, `netns::NetnsPair`; this one is separate so that
//! the link can be cut and throttled, and so that the two can live side by side.)

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which way bytes travel through a [`Proxy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the side that connected to the proxy to the target.
    ToTarget,
    /// From the target back to the side that connected.
    ToClient,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::ToTarget => 0,
            Dir::ToClient => 1,
        }
    }
}

/// What the proxy does to one direction of every connection. Offsets count the bytes of one
/// connection's stream in that direction, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Relay faithfully.
    None,
    /// Deliver every byte this long after it arrived (latency; order and rate are kept).
    Delay(Duration),
    /// Once `after` bytes went through, hold everything for `pause`, then go on (nothing is
    /// lost).
    Stall {
        /// Bytes relayed before the stall.
        after: u64,
        /// How long nothing is delivered.
        pause: Duration,
    },
    /// Once `after` bytes went through, close this direction towards the receiver (it reads
    /// an end of stream) and drop whatever comes after; the other direction stays open.
    HalfClose {
        /// Bytes relayed before the close.
        after: u64,
    },
    /// Once `after` bytes went through, swallow everything without a trace: the connection
    /// stays open and nothing more arrives (a silent partition, seen from the receiver).
    BlackHole {
        /// Bytes relayed before the black hole.
        after: u64,
    },
    /// Deliver at most `bytes` every `every` (a very slow link; nothing is lost).
    Trickle {
        /// Bytes per period.
        bytes: usize,
        /// The period.
        every: Duration,
    },
    /// Flip bit `bit` (0-7) of the byte at offset `at`, once per connection; everything else
    /// goes through unchanged (a corrupting NIC or middlebox).
    FlipBit {
        /// The byte's offset in the stream.
        at: u64,
        /// Which bit.
        bit: u8,
    },
}

struct Shared {
    stop: AtomicBool,
    faults: Mutex<[Fault; 2]>,
    relayed: [AtomicU64; 2],
    seen: [AtomicU64; 2],
    connections: AtomicU64,
    record: bool,
    recorded: Mutex<[Vec<u8>; 2]>,
}

/// A relay with faults between a client and a target (see the module docs).
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// How often blocked proxy threads look at the stop flag.
const TICK: Duration = Duration::from_millis(20);

impl Proxy {
    /// A proxy on a free loopback port relaying to `target`.
    pub fn start(target: SocketAddr) -> io::Result<Proxy> {
        Self::start_with(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), target, false)
    }

    /// A proxy that also keeps a copy of every byte it relays (see [`Proxy::recorded`]).
    pub fn recording(target: SocketAddr) -> io::Result<Proxy> {
        Self::start_with(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), target, true)
    }

    /// A proxy listening on `listen` (port 0: a free one) relaying to `target`.
    pub fn start_with(listen: SocketAddr, target: SocketAddr, record: bool) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            faults: Mutex::new([Fault::None; 2]),
            relayed: [AtomicU64::new(0), AtomicU64::new(0)],
            seen: [AtomicU64::new(0), AtomicU64::new(0)],
            connections: AtomicU64::new(0),
            record,
            recorded: Mutex::new([Vec::new(), Vec::new()]),
        });
        let threads = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (shared, threads) = (shared.clone(), threads.clone());
            std::thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || accept_loop(&listener, target, &shared, &threads))?
        };
        Ok(Proxy { addr, shared, threads, acceptor: Some(acceptor) })
    }

    /// The address to connect to (to publish in place of the target's).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Apply `fault` to direction `dir` of every connection, from now on.
    pub fn set(&self, dir: Dir, fault: Fault) {
        self.shared.faults.lock().unwrap_or_else(|p| p.into_inner())[dir.index()] = fault;
    }

    /// Bytes delivered in direction `dir` so far, over every connection.
    pub fn relayed(&self, dir: Dir) -> u64 {
        self.shared.relayed[dir.index()].load(Ordering::SeqCst)
    }

    /// Bytes read in direction `dir` so far, over every connection: unlike
    /// [`relayed`](Proxy::relayed), counted before the bytes are passed on, so once a receiver
    /// has some bytes, this counts them (the offset to give a fault meant for what comes next).
    pub fn seen(&self, dir: Dir) -> u64 {
        self.shared.seen[dir.index()].load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Every byte read in direction `dir` so far, in order (for a proxy made with
    /// [`recording`](Proxy::recording); empty otherwise).
    pub fn recorded(&self, dir: Dir) -> Vec<u8> {
        self.shared.recorded.lock().unwrap_or_else(|p| p.into_inner())[dir.index()].clone()
    }

    /// Wait until `dir` has delivered at least `bytes`, or `deadline`; returns whether it did.
    pub fn wait_relayed(&self, dir: Dir, bytes: u64, deadline: Instant) -> bool {
        while self.relayed(dir) < bytes {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    target: SocketAddr,
    shared: &Arc<Shared>,
    threads: &Mutex<Vec<JoinHandle<()>>>,
) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => {
                std::thread::sleep(TICK);
                continue;
            }
        };
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            // The target is not there: the client sees its connection closed, as it would.
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        for s in [&client, &server] {
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(TICK));
        }
        let mut spawned = Vec::new();
        for (from, to, dir) in
            [(&client, &server, Dir::ToTarget), (&server, &client, Dir::ToClient)]
        {
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else { continue };
            let (tx, rx) = mpsc::channel();
            let sh = shared.clone();
            spawned.push(std::thread::spawn(move || read_side(from, dir, &sh, &tx)));
            let sh = shared.clone();
            spawned.push(std::thread::spawn(move || write_side(to, dir, &sh, &rx)));
        }
        threads.lock().unwrap_or_else(|p| p.into_inner()).extend(spawned);
    }
}

/// What the reading thread hands the writing thread.
enum Piece {
    /// Bytes to deliver no earlier than `due`.
    Bytes { due: Instant, bytes: Vec<u8> },
    /// Close the receiver's side of this direction (after what came before).
    Close,
    /// The source failed: reset both ways.
    Reset,
}

fn read_side(mut from: TcpStream, dir: Dir, shared: &Shared, tx: &Sender<Piece>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut offset = 0u64;
    let mut stall_until: Option<Instant> = None;
    let mut closed = false;
    while !shared.stop.load(Ordering::SeqCst) {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = tx.send(Piece::Close);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                let _ = tx.send(Piece::Reset);
                return;
            }
        };
        shared.seen[dir.index()].fetch_add(n as u64, Ordering::SeqCst);
        let now = Instant::now();
        let mut bytes = buf[..n].to_vec();
        if shared.record {
            shared.recorded.lock().unwrap_or_else(|p| p.into_inner())[dir.index()]
                .extend_from_slice(&bytes);
        }
        let (start, end) = (offset, offset + n as u64);
        offset = end;
        let fault = shared.faults.lock().unwrap_or_else(|p| p.into_inner())[dir.index()];
        let mut due = now;
        match fault {
            Fault::None | Fault::Trickle { .. } => {}
            Fault::Delay(d) => due = now + d,
            Fault::Stall { after, pause } => {
                if end > after && stall_until.is_none() {
                    stall_until = Some(now + pause);
                }
                if let Some(until) = stall_until
                    && end > after
                {
                    // What came before the stall point goes now; the rest waits.
                    let keep = after.saturating_sub(start) as usize;
                    if keep > 0 {
                        let head: Vec<u8> = bytes.drain(..keep.min(bytes.len())).collect();
                        let _ = tx.send(Piece::Bytes { due: now, bytes: head });
                    }
                    due = until;
                }
            }
            Fault::HalfClose { after } | Fault::BlackHole { after } => {
                if closed {
                    continue;
                }
                if end > after {
                    bytes.truncate(after.saturating_sub(start) as usize);
                    if !bytes.is_empty() {
                        let _ =
                            tx.send(Piece::Bytes { due: now, bytes: std::mem::take(&mut bytes) });
                    }
                    closed = true;
                    if matches!(fault, Fault::HalfClose { .. }) {
                        let _ = tx.send(Piece::Close);
                    }
                    continue;
                }
            }
            Fault::FlipBit { at, bit } => {
                if (start..end).contains(&at) {
                    bytes[(at - start) as usize] ^= 1 << (bit % 8);
                }
            }
        }
        if !bytes.is_empty() && tx.send(Piece::Bytes { due, bytes }).is_err() {
            return;
        }
    }
}

fn write_side(mut to: TcpStream, dir: Dir, shared: &Shared, rx: &Receiver<Piece>) {
    let mut queue: VecDeque<Piece> = VecDeque::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let piece = match queue.pop_front() {
            Some(p) => p,
            None => match rx.recv_timeout(TICK) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        match piece {
            Piece::Close => {
                let _ = to.shutdown(Shutdown::Write);
            }
            Piece::Reset => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            Piece::Bytes { due, bytes } => {
                // Wait for the bytes' time, looking at the stop flag now and then.
                loop {
                    let now = Instant::now();
                    if now >= due || shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep((due - now).min(TICK));
                }
                let fault = shared.faults.lock().unwrap_or_else(|p| p.into_inner())[dir.index()];
                let ok = match fault {
                    Fault::Trickle { bytes: per, every } => {
                        let mut ok = true;
                        for chunk in bytes.chunks(per.max(1)) {
                            if shared.stop.load(Ordering::SeqCst) || to.write_all(chunk).is_err() {
                                ok = false;
                                break;
                            }
                            shared.relayed[dir.index()]
                                .fetch_add(chunk.len() as u64, Ordering::SeqCst);
                            std::thread::sleep(every);
                        }
                        ok
                    }
                    _ => {
                        let ok = to.write_all(&bytes).is_ok();
                        if ok {
                            shared.relayed[dir.index()]
                                .fetch_add(bytes.len() as u64, Ordering::SeqCst);
                        }
                        ok
                    }
                };
                if !ok {
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

/// Run a command, failing with its stderr (and saying what to install when it is missing).
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{program}` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1).is_some_and(|u| u == "0"))
    })
}

/// Links made by this process so far (part of every name, with the process id).
static LINKS: AtomicU32 = AtomicU32::new(0);

/// Two network namespaces joined by a veth pair (see the module docs).
#[derive(Debug)]
pub struct NetnsLink {
    names: [String; 2],
    devs: [String; 2],
    subnet: u8,
}

impl NetnsLink {
    /// Create the namespaces and the link, up, with `10.232.<subnet>.1/24` in namespace 0
    /// and `.2` in namespace 1 (the subnet is chosen from the process id and a counter, so
    /// concurrent test runs do not share one). Fails with a message that says what is
    /// missing (root, iproute2).
    pub fn new() -> Result<NetnsLink, String> {
        if !is_root() {
            return Err("network namespaces need root: run this test as root (CI does)".into());
        }
        let n = LINKS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{:x}{:x}", pid % 0x10_0000, n % 16);
        let names = [format!("gloo-nf-{tag}-a"), format!("gloo-nf-{tag}-b")];
        // Interface names have at most 15 bytes.
        let devs = [format!("gnf{tag}a"), format!("gnf{tag}b")];
        let subnet = ((pid.wrapping_mul(7) + n) % 250 + 1) as u8;
        run("ip", &["netns", "add", &names[0]])?;
        let link = NetnsLink { names: names.clone(), devs: devs.clone(), subnet };
        run("ip", &["netns", "add", &names[1]])?;
        run(
            "ip",
            &[
                "link", "add", &devs[0], "netns", &names[0], "type", "veth", "peer", "name",
                &devs[1], "netns", &names[1],
            ],
        )?;
        for i in 0..2 {
            let cidr = format!("{}/24", link.addr(i));
            run("ip", &["-n", &names[i], "addr", "add", &cidr, "dev", &devs[i]])?;
            run("ip", &["-n", &names[i], "link", "set", &devs[i], "up"])?;
            run("ip", &["-n", &names[i], "link", "set", "lo", "up"])?;
        }
        Ok(link)
    }

    /// The address of namespace `i` (0 or 1) on the link.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 232, self.subnet, i as u8 + 1)
    }

    /// The namespaces' names.
    pub fn names(&self) -> &[String; 2] {
        &self.names
    }

    /// The command prefix that runs a program in namespace `i` (`ip netns exec <name>`).
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.names[i].clone()]
    }

    /// Take the link down on both sides: packets stop, with no reset and no error to either
    /// side (a silent partition).
    pub fn cut(&self) -> Result<(), String> {
        for i in 0..2 {
            run("ip", &["-n", &self.names[i], "link", "set", &self.devs[i], "down"])?;
        }
        Ok(())
    }

    /// Bring the link up again.
    pub fn heal(&self) -> Result<(), String> {
        for i in 0..2 {
            run("ip", &["-n", &self.names[i], "link", "set", &self.devs[i], "up"])?;
        }
        Ok(())
    }

    /// Limit both directions to `rate` (tc's syntax, e.g. `20mbit`) with a token-bucket
    /// filter.
    pub fn throttle(&self, rate: &str) -> Result<(), String> {
        for i in 0..2 {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.names[i],
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    &self.devs[i],
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    "32kbit",
                    "latency",
                    "400ms",
                ],
            )?;
        }
        Ok(())
    }
}

impl Drop for NetnsLink {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair (and so the pair) and the
        // qdisc on it.
        for n in &self.names {
            let _ = run("ip", &["netns", "del", n]);
        }
    }
}
