//! Setting up a pair: the listener, the handshake, and the checks each side makes.
//!
//! Each rank binds one listener on an abstract unix socket with a random 128-bit name; its
//! address bytes (the name) are what the store publishes. The higher rank of a pair dials
//! the lower one. Both sides check the other's credentials from the kernel (`SO_PEERCRED`):
//! another user is refused before a byte is read, so a segment is only ever shared between
//! processes that could already `ptrace` each other. Then the messages of [`crate::hello`]
//! check job, group size and ranks (a misrouted or stale peer is refused naming itself), the
//! acceptor creates the segment and passes it with its doorbell over the socket
//! (`SCM_RIGHTS`), the dialer checks the file (a sealed memfd of ours, mode 0600, the agreed
//! size) and the header before mapping it, and passes its doorbell back.
//!
//! Abstract sockets and memfds have no file-system names, so nothing is left behind by a
//! rank killed at any point, and there is no name another user could create first: a
//! squatter on our random name makes `bind` fail and we draw another.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gloo_transport::Rank;

use crate::channel::{Channel, Parts};
use crate::config::{ShmConfig, SingleCopy};
use crate::error::{Error, Result};
use crate::hello::{Kind, MAX_MSG, Msg};
use crate::segment::{self, AttachError, Segment};
use crate::sys::cma::{self, Remote};
use crate::sys::event::{self, Watch};
use crate::sys::sock;

/// The prefix of a listener's address bytes (then the abstract socket name).
const ADDR_PREFIX: &[u8] = b"gloo-shm/1:";
/// The longest abstract name a `sockaddr_un` holds.
const MAX_NAME: usize = 107;

/// A word whose address and random value a peer reads with `process_vm_readv` at set-up: if
/// it reads the value, single copy works between the two processes.
static PROBE: AtomicU64 = AtomicU64::new(0);

fn probe_word() -> (u64, u64) {
    if PROBE.load(Ordering::Relaxed) == 0 {
        let mut v = 0;
        while v == 0 {
            v = u64::from_le_bytes(random_bytes::<8>());
        }
        // A lost race leaves another thread's (equally random) value.
        let _ = PROBE.compare_exchange(0, v, Ordering::Relaxed, Ordering::Relaxed);
    }
    (&PROBE as *const AtomicU64 as u64, PROBE.load(Ordering::Relaxed))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        // No /dev/urandom (a bare container): mix the clock and the pid. Names only need to
        // be unlikely to collide; a collision makes bind fail and we draw again.
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut x = t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32);
        for chunk in b.chunks_mut(8) {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
    b
}

/// Whether we can read `pid`'s memory: the word at `addr` must hold `value`.
fn probe(mode: SingleCopy, pid: u32, addr: u64, value: u64) -> bool {
    if mode == SingleCopy::Off || value == 0 {
        return false;
    }
    let mut got = [0u8; 8];
    match cma::read(pid, addr, &mut got) {
        Remote::Copied(8) if got == value.to_ne_bytes() => true,
        Remote::Refused(e) => {
            tracing::debug!(
                "single copy from process {pid} refused by the kernel ({e}); using the ring"
            );
            false
        }
        other => {
            tracing::debug!(
                "single-copy probe of process {pid} failed ({other:?}); using the ring"
            );
            false
        }
    }
}

/// One rank's listener for shared-memory pairs.
#[derive(Debug)]
pub struct ShmListener {
    config: ShmConfig,
    listener: UnixListener,
    name: Vec<u8>,
    bell: Arc<File>,
}

impl ShmListener {
    /// Bind a listener for rank `config.rank()`, on a fresh random abstract socket name.
    pub fn bind(config: ShmConfig) -> Result<ShmListener> {
        config.check().map_err(|what| Error::InvalidArgument { what })?;
        let bell =
            Arc::new(event::eventfd().map_err(|e| Error::io(None, "creating the doorbell", e))?);
        let mut last = None;
        for _ in 0..8 {
            let hex: String = random_bytes::<16>().iter().map(|b| format!("{b:02x}")).collect();
            let name = format!("gloo-shm-{hex}").into_bytes();
            let addr = SocketAddr::from_abstract_name(&name)
                .map_err(|e| Error::io(None, "making the socket address", e))?;
            match UnixListener::bind_addr(&addr) {
                Ok(listener) => {
                    listener
                        .set_nonblocking(true)
                        .map_err(|e| Error::io(None, "setting the listener non-blocking", e))?;
                    return Ok(ShmListener { config, listener, name, bell });
                }
                // Someone holds this name: draw another.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(Error::io(None, "binding the shared-memory listener", e)),
            }
        }
        let e = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse));
        Err(Error::io(None, "binding the shared-memory listener (8 random names in use)", e))
    }

    /// The bytes a peer needs to connect: publish them through the store.
    pub fn address_bytes(&self) -> Vec<u8> {
        [ADDR_PREFIX, &self.name].concat()
    }

    /// This rank's configuration.
    pub fn config(&self) -> &ShmConfig {
        &self.config
    }

    /// Accept one pair from a higher rank (any of them) and run the handshake.
    pub fn accept(&self, deadline: Instant) -> Result<Channel> {
        self.accept_from(&|r| r.0 > self.config.rank.0, deadline)
    }

    fn accept_from(&self, wanted: &dyn Fn(Rank) -> bool, deadline: Instant) -> Result<Channel> {
        let start = Instant::now();
        let sock = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(None, "accepting a shared-memory pair", e)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    peer: None,
                    doing: "waiting for a peer to connect".into(),
                    waited: now - start,
                });
            }
            let mut rev = Vec::new();
            event::poll(
                &[(self.listener.as_fd(), Watch::Readable)],
                Some(deadline - now),
                &mut rev,
            )
            .map_err(|e| Error::io(None, "waiting for a peer to connect", e))?;
        };
        sock.set_nonblocking(false)
            .map_err(|e| Error::io(None, "configuring a pair's socket", e))?;
        self.handshake_accept(sock, wanted, deadline)
    }

    fn handshake_accept(
        &self,
        sock: UnixStream,
        wanted: &dyn Fn(Rank) -> bool,
        deadline: Instant,
    ) -> Result<Channel> {
        let cfg = &self.config;
        let cred = sock::peer_cred(&sock)
            .map_err(|e| Error::io(None, "reading the peer's credentials", e))?;
        let ours = crate::sys::euid();
        if cred.uid != ours {
            // Not a word to another user's process.
            return Err(Error::Refused {
                peer: None,
                detail: format!(
                    "process {} of uid {} connected; only uid {ours} may share memory with us",
                    cred.pid, cred.uid
                ),
            });
        }
        let (hello, fds) = recv_msg(&sock, None, deadline)?;
        let reject = |rank: Option<Rank>, why: String| -> Error {
            let mut m = Msg::new(Kind::Reject);
            m.text = why.clone();
            // The rejected peer may be gone already; the refusal is ours to report either way.
            let _ = send_msg(&sock, &m, &[]);
            Error::Refused { peer: rank, detail: why }
        };
        if !fds.is_empty() {
            return Err(reject(None, format!("sent {} descriptors with its hello", fds.len())));
        }
        if hello.kind != Kind::Hello {
            return Err(reject(None, format!("sent {:?} where a hello belongs", hello.kind)));
        }
        let peer = Rank(hello.rank);
        if hello.text != cfg.job || hello.size != cfg.size {
            return Err(reject(
                Some(peer),
                format!(
                    "job {:?} of {} ranks, ours is {:?} of {}",
                    hello.text, hello.size, cfg.job, cfg.size
                ),
            ));
        }
        if hello.rank >= cfg.size || hello.rank <= cfg.rank.0 || !wanted(peer) {
            return Err(reject(
                Some(peer),
                format!("rank {peer} cannot dial rank {} now (higher ranks dial, once)", cfg.rank),
            ));
        }
        let can_pull = probe(cfg.single_copy, cred.pid, hello.probe_addr, hello.probe_value);
        let (segment, file) = Segment::create(cfg.ring_capacity)
            .map_err(|e| Error::io(Some(peer), "creating the shared segment", e))?;
        let (probe_addr, probe_value) = probe_word();
        let mut welcome = Msg::new(Kind::Welcome);
        welcome.rank = cfg.rank.0;
        welcome.size = cfg.size;
        welcome.capacity = cfg.ring_capacity as u64;
        welcome.probe_addr = probe_addr;
        welcome.probe_value = if cfg.single_copy == SingleCopy::Off { 0 } else { probe_value };
        welcome.can_read_you = can_pull;
        welcome.text = cfg.job.clone();
        send_msg(&sock, &welcome, &[file.as_fd(), self.bell.as_fd()])
            .map_err(|e| Error::io(Some(peer), "sending the segment", e))?;
        // The file goes now: the mapping keeps the memory, and the peer's copy keeps the file
        // until it maps it. No name existed at any point.
        drop(file);
        let (ack, mut fds) = recv_msg(&sock, Some(peer), deadline)?;
        if ack.kind == Kind::Reject {
            return Err(Error::Refused {
                peer: Some(peer),
                detail: format!("it refused us: {}", ack.text),
            });
        }
        if ack.kind != Kind::Ack || ack.rank != hello.rank || fds.len() != 1 {
            return Err(Error::Protocol {
                peer: Some(peer),
                detail: format!(
                    "sent {:?} from rank {} with {} descriptors where an ack belongs",
                    ack.kind,
                    ack.rank,
                    fds.len()
                ),
            });
        }
        let peer_bell = doorbell_from(fds.pop().expect("one descriptor, checked above"), peer)?;
        Channel::new(
            cfg,
            Parts {
                peer,
                peer_pid: cred.pid,
                segment,
                side: 0,
                sock,
                peer_bell,
                bell: self.bell.clone(),
                can_lend: ack.can_read_you,
                can_pull,
            },
        )
        .map_err(|e| Error::io(Some(peer), "starting the channel", e))
    }

    /// Dial `peer` (a lower rank) at `address` (its listener's address bytes) and run the
    /// handshake. Retries a refused connection until `deadline` (the peer may not listen yet).
    pub fn connect(&self, peer: Rank, address: &[u8], deadline: Instant) -> Result<Channel> {
        let cfg = &self.config;
        if peer.0 >= cfg.rank.0 {
            return Err(Error::InvalidArgument {
                what: format!("rank {} dials only lower ranks, not {peer}", cfg.rank),
            });
        }
        let name = address
            .strip_prefix(ADDR_PREFIX)
            .filter(|n| !n.is_empty() && n.len() <= MAX_NAME)
            .ok_or_else(|| Error::InvalidArgument {
                what: format!(
                    "rank {peer}'s address {:?} is not a gloo-shm address",
                    String::from_utf8_lossy(address)
                ),
            })?;
        let addr = SocketAddr::from_abstract_name(name)
            .map_err(|e| Error::io(Some(peer), "making the socket address", e))?;
        let start = Instant::now();
        let mut backoff = Duration::from_millis(1);
        let sock = loop {
            match UnixStream::connect_addr(&addr) {
                Ok(s) => break s,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                    ) =>
                {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Timeout {
                            peer: Some(peer),
                            doing: format!("connecting to rank {peer} ({e})"),
                            waited: now - start,
                        });
                    }
                    std::thread::sleep(backoff.min(deadline - now));
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(Error::io(Some(peer), "connecting", e)),
            }
        };
        let cred = sock::peer_cred(&sock)
            .map_err(|e| Error::io(Some(peer), "reading the peer's credentials", e))?;
        let ours = crate::sys::euid();
        if cred.uid != ours {
            return Err(Error::Refused {
                peer: Some(peer),
                detail: format!(
                    "the socket of rank {peer} belongs to process {} of uid {}; only uid {ours} may share memory with us",
                    cred.pid, cred.uid
                ),
            });
        }
        let (probe_addr, probe_value) = probe_word();
        let mut hello = Msg::new(Kind::Hello);
        hello.rank = cfg.rank.0;
        hello.size = cfg.size;
        hello.probe_addr = probe_addr;
        hello.probe_value = if cfg.single_copy == SingleCopy::Off { 0 } else { probe_value };
        hello.text = cfg.job.clone();
        send_msg(&sock, &hello, &[]).map_err(|e| Error::io(Some(peer), "sending the hello", e))?;
        let (welcome, fds) = recv_msg(&sock, Some(peer), deadline)?;
        if welcome.kind == Kind::Reject {
            return Err(Error::Refused {
                peer: Some(peer),
                detail: format!("it refused us: {}", welcome.text),
            });
        }
        if welcome.kind != Kind::Welcome {
            return Err(Error::Protocol {
                peer: Some(peer),
                detail: format!("sent {:?} where a welcome belongs", welcome.kind),
            });
        }
        if welcome.rank != peer.0 || welcome.size != cfg.size || welcome.text != cfg.job {
            return Err(Error::Refused {
                peer: Some(peer),
                detail: format!(
                    "rank {} of job {:?} of {} ranks answered, we dialled rank {peer} of {:?} of {}",
                    welcome.rank, welcome.text, welcome.size, cfg.job, cfg.size
                ),
            });
        }
        if !segment::valid_capacity(welcome.capacity) {
            return Err(Error::Protocol {
                peer: Some(peer),
                detail: format!("ring capacity {}", welcome.capacity),
            });
        }
        let [memfd, bell]: [OwnedFd; 2] =
            fds.try_into().map_err(|fds: Vec<OwnedFd>| Error::Protocol {
                peer: Some(peer),
                detail: format!("sent {} descriptors with its welcome, want 2", fds.len()),
            })?;
        let peer_bell = doorbell_from(bell, peer)?;
        let segment = match Segment::attach(&File::from(memfd), welcome.capacity as usize) {
            Ok(s) => s,
            Err(AttachError::Refused(why)) => {
                let detail = format!("its segment is refused: {why}");
                let mut m = Msg::new(Kind::Reject);
                m.text = detail.clone();
                let _ = send_msg(&sock, &m, &[]);
                return Err(Error::Refused { peer: Some(peer), detail });
            }
            Err(AttachError::Header(h)) => {
                return Err(Error::Protocol {
                    peer: Some(peer),
                    detail: format!("segment header: {h}"),
                });
            }
            Err(AttachError::Io(e)) => {
                return Err(Error::io(Some(peer), "mapping the segment", e));
            }
        };
        let can_pull = probe(cfg.single_copy, cred.pid, welcome.probe_addr, welcome.probe_value);
        let mut ack = Msg::new(Kind::Ack);
        ack.rank = cfg.rank.0;
        ack.can_read_you = can_pull;
        send_msg(&sock, &ack, &[self.bell.as_fd()])
            .map_err(|e| Error::io(Some(peer), "sending the ack", e))?;
        Channel::new(
            cfg,
            Parts {
                peer,
                peer_pid: cred.pid,
                segment,
                side: 1,
                sock,
                peer_bell,
                bell: self.bell.clone(),
                can_lend: welcome.can_read_you,
                can_pull,
            },
        )
        .map_err(|e| Error::io(Some(peer), "starting the channel", e))
    }

    /// Connect this rank to every other rank of the group: dial the lower ranks in order,
    /// then accept the higher ones (refusing strays and duplicates and going on). Entry `r`
    /// of `addresses` is rank `r`'s address bytes (ours is ignored); entry `r` of the result
    /// is the channel to rank `r` (`None` for ourselves).
    pub fn connect_channels(
        &self,
        addresses: &[Vec<u8>],
        deadline: Instant,
    ) -> Result<Vec<Option<Channel>>> {
        let all: Vec<bool> = (0..self.config.size).map(|r| r != self.config.rank.0).collect();
        self.connect_some(addresses, &all, deadline)
    }

    /// [`connect_channels`](ShmListener::connect_channels) to the ranks `want` marks only
    /// (the ranks on this host, when the others are reached another way); the addresses of
    /// the others are not looked at.
    pub(crate) fn connect_some(
        &self,
        addresses: &[Vec<u8>],
        want: &[bool],
        deadline: Instant,
    ) -> Result<Vec<Option<Channel>>> {
        let cfg = &self.config;
        if addresses.len() != cfg.size as usize || want.len() != cfg.size as usize {
            return Err(Error::InvalidArgument {
                what: format!("{} addresses for a group of {}", addresses.len(), cfg.size),
            });
        }
        let mut chans: Vec<Option<Channel>> = (0..cfg.size).map(|_| None).collect();
        for p in (0..cfg.rank.0).filter(|p| want[*p as usize]) {
            chans[p as usize] = Some(self.connect(Rank(p), &addresses[p as usize], deadline)?);
        }
        let start = Instant::now();
        loop {
            let missing: Vec<u32> = (cfg.rank.0 + 1..cfg.size)
                .filter(|&r| want[r as usize] && chans[r as usize].is_none())
                .collect();
            if missing.is_empty() {
                return Ok(chans);
            }
            let want = |r: Rank| missing.contains(&r.0);
            match self.accept_from(&want, deadline) {
                Ok(ch) => {
                    let r = ch.peer().0 as usize;
                    chans[r] = Some(ch);
                }
                Err(Error::Timeout { .. }) => {
                    return Err(Error::Timeout {
                        peer: missing.first().map(|&r| Rank(r)),
                        doing: format!("waiting for ranks {missing:?} to connect"),
                        waited: start.elapsed(),
                    });
                }
                Err(e @ (Error::Refused { .. } | Error::Protocol { .. })) => {
                    tracing::warn!(
                        rank = cfg.rank.0,
                        error = %gloo_transport::ErrorChain(&e),
                        "refused a shared-memory connection"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Take a descriptor the peer sent as its doorbell, checking that it is an eventfd: writing
/// to anything else (a full pipe) could block us.
fn doorbell_from(fd: OwnedFd, peer: Rank) -> Result<File> {
    let file = File::from(fd);
    let link =
        std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)))
            .map_err(|e| Error::io(Some(peer), "checking the peer's doorbell", e))?;
    if link.as_os_str() != "anon_inode:[eventfd]" {
        return Err(Error::Protocol {
            peer: Some(peer),
            detail: format!("its doorbell is {link:?}, not an eventfd"),
        });
    }
    Ok(file)
}

fn send_msg(sock: &UnixStream, msg: &Msg, fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
    let bytes = msg.encode();
    let n = sock::send_with_fds(sock, &bytes, fds)?;
    (&*sock).write_all(&bytes[n..])
}

fn timeout_or_io(e: io::Error, peer: Option<Rank>, start: Instant) -> Error {
    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        Error::Timeout {
            peer,
            doing: "in the shared-memory handshake".into(),
            waited: start.elapsed(),
        }
    } else {
        Error::io(peer, "in the shared-memory handshake", e)
    }
}

/// Receive one message and the descriptors sent with it, by `deadline`.
fn recv_msg(
    sock: &UnixStream,
    peer: Option<Rank>,
    deadline: Instant,
) -> Result<(Msg, Vec<OwnedFd>)> {
    let start = Instant::now();
    let remaining = deadline.saturating_duration_since(start);
    if remaining.is_zero() {
        return Err(Error::Timeout {
            peer,
            doing: "in the shared-memory handshake".into(),
            waited: Duration::ZERO,
        });
    }
    sock.set_read_timeout(Some(remaining)).map_err(|e| Error::io(peer, "setting a timeout", e))?;
    let mut buf = vec![0u8; 4 + MAX_MSG];
    let (mut n, fds) =
        sock::recv_with_fds(sock, &mut buf).map_err(|e| timeout_or_io(e, peer, start))?;
    if n == 0 {
        return Err(Error::Protocol { peer, detail: "hung up during the handshake".into() });
    }
    if n < 4 {
        (&*sock).read_exact(&mut buf[n..4]).map_err(|e| timeout_or_io(e, peer, start))?;
        n = 4;
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_MSG {
        return Err(Error::Protocol {
            peer,
            detail: format!("handshake message of {len} bytes (at most {MAX_MSG})"),
        });
    }
    if n > 4 + len {
        return Err(Error::Protocol {
            peer,
            detail: "sent more than one handshake message at once".into(),
        });
    }
    (&*sock).read_exact(&mut buf[n..4 + len]).map_err(|e| timeout_or_io(e, peer, start))?;
    let msg = Msg::decode(&buf[4..4 + len]).map_err(|detail| Error::Protocol { peer, detail })?;
    Ok((msg, fds))
}

#[cfg(feature = "rogue")]
pub(crate) fn fake_acceptor(
    job: &str,
    size: u32,
    capacity: u64,
    file: File,
) -> io::Result<(Vec<u8>, std::thread::JoinHandle<io::Result<String>>)> {
    let hex: String = random_bytes::<16>().iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("gloo-shm-fake-{hex}").into_bytes();
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name)?)?;
    let job = job.to_string();
    let t = std::thread::spawn(move || {
        let (sock, _) = listener.accept()?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let hello = recv_msg(&sock, None, deadline).map_err(|e| io::Error::other(e.to_string()))?.0;
        let bell = event::eventfd()?;
        let mut w = Msg::new(Kind::Welcome);
        w.rank = 0;
        w.size = size;
        w.capacity = capacity;
        w.text = job;
        let _ = hello;
        send_msg(&sock, &w, &[file.as_fd(), bell.as_fd()])?;
        let answer =
            recv_msg(&sock, None, deadline).map_err(|e| io::Error::other(e.to_string()))?.0;
        Ok(format!("{:?}: {}", answer.kind, answer.text))
    });
    Ok(([ADDR_PREFIX, &name].concat(), t))
}

#[cfg(feature = "rogue")]
pub(crate) fn raw_dial(address: &[u8], bytes: &[u8]) -> io::Result<UnixStream> {
    let name = address
        .strip_prefix(ADDR_PREFIX)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut s = UnixStream::connect_addr(&SocketAddr::from_abstract_name(name)?)?;
    s.write_all(bytes)?;
    Ok(s)
}

#[cfg(feature = "rogue")]
pub(crate) fn fake_dialer(
    address: &[u8],
    job: &str,
    rank: u32,
    size: u32,
    doorbell: Option<OwnedFd>,
) -> io::Result<UnixStream> {
    let name = address
        .strip_prefix(ADDR_PREFIX)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let sock = UnixStream::connect_addr(&SocketAddr::from_abstract_name(name)?)?;
    let mut hello = Msg::new(Kind::Hello);
    hello.rank = rank;
    hello.size = size;
    hello.text = job.to_string();
    send_msg(&sock, &hello, &[])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (_welcome, _fds) =
        recv_msg(&sock, None, deadline).map_err(|e| io::Error::other(e.to_string()))?;
    let mut ack = Msg::new(Kind::Ack);
    ack.rank = rank;
    let fds: Vec<_> = doorbell.iter().map(|f| f.as_fd()).collect();
    if fds.is_empty() {
        (&sock).write_all(&ack.encode())?;
    } else {
        send_msg(&sock, &ack, &fds)?;
    }
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The single-copy probe says yes only when it reads the right value from a live
    /// process; every failure (a wrong value, a dead process, a bad address, the mode off)
    /// falls back to the ring.
    #[test]
    fn the_probe_falls_back_on_every_failure() {
        let (addr, value) = probe_word();
        let me = std::process::id();
        assert!(probe(SingleCopy::Auto, me, addr, value));
        assert!(!probe(SingleCopy::Off, me, addr, value));
        assert!(!probe(SingleCopy::Auto, me, addr, value ^ 1));
        assert!(!probe(SingleCopy::Auto, me, 16, value));
        assert!(!probe(SingleCopy::Auto, me, addr, 0));
        // A pid beyond pid_max names no process.
        assert!(!probe(SingleCopy::Auto, 1 << 30, addr, value));
    }
}
