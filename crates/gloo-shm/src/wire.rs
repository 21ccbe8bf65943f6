//! The engine's side of the shm transport: channels (and, for the per-host choice, tcp
//! streams) as the engine's links, and one sleeper for both.
//!
//! A [`HostLink`] is either a shared-memory [`Channel`] or a tcp byte stream; the engine of
//! `gloo-transport` speaks the protocol over both alike. Readiness comes from two places,
//! gathered in one `epoll` (mio) instance that a waiting thread sleeps in:
//!
//! - tcp streams are registered under their peer's rank, as the tcp transport does;
//! - channels have no descriptor that turns readable with data. Before it sleeps, the
//!   sleeper *announces* the sleep on every channel (the Dekker handshake of
//!   [`crate::ring::sleep`]) and then looks at each channel's shared words; a peer that
//!   changes anything after the announcement rings this process's doorbell (an eventfd,
//!   registered in the poll). Each channel's set-up socket is registered too, so a dead
//!   peer ends the sleep at once.
//!
//! A channel counts as ready only when one of its shared words moved since the sleeper's
//! last look, as edge-triggered epoll reports a socket: bytes left unread on purpose (they
//! belong to a receive nobody drives now) do not keep the sleeper from sleeping, and the
//! engine keeps a link's readiness until the link itself says `WouldBlock`. A channel's
//! writes are watched only after one of them was cut short (a full ring): a ring with room
//! is always writable, and watching it would keep the sleeper awake.
#![forbid(unsafe_code)]

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gloo_transport::Rank;
use gloo_transport::engine::{Engine, Link, Sleeper, Waker, Wire};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::channel::{Channel, Seen, SleepHandle};

/// The poll token of the waker.
const WAKE: Token = Token(usize::MAX);
/// The poll token of this process's doorbell.
const BELL: Token = Token(usize::MAX - 1);

/// What a channel's link and the sleeper share.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    /// The last write was cut short: watch the ring for room.
    want_write: AtomicBool,
    /// The engine closed the link: stop watching it.
    closed: AtomicBool,
}

/// A shared-memory channel as the engine's link.
#[derive(Debug)]
pub(crate) struct ShmLink {
    pub(crate) ch: Channel,
    flags: Arc<Flags>,
}

/// A channel error as the engine reads it: the `io::ErrorKind` for its category, carrying
/// the transport's typed error (a protocol breach stays `Protocol` naming the peer).
fn typed(e: crate::Error) -> io::Error {
    let kind = io::Error::from(e.clone()).kind();
    io::Error::new(kind, gloo_transport::Error::from(e))
}

impl Link for ShmLink {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.ch.read(buf) {
            Ok(0) if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(crate::Error::Closed { .. }) => Ok(0),
            Err(e) => Err(typed(e)),
        }
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut slices: [&[u8]; 4] = [&[]; 4];
        let n = bufs.len().min(slices.len());
        for (s, b) in slices.iter_mut().zip(bufs) {
            *s = b;
        }
        let want: usize = slices[..n].iter().map(|s| s.len()).sum();
        match self.ch.write(&slices[..n]) {
            Ok(k) => {
                // A short write means a full ring: the sleeper watches it for room until a
                // write goes through whole.
                let short = k < want;
                if short != self.flags.want_write.load(Ordering::Relaxed) {
                    self.flags.want_write.store(short, Ordering::Relaxed);
                }
                if k == 0 && want > 0 { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(k) }
            }
            Err(e) => Err(typed(e)),
        }
    }

    #[inline]
    fn drains_on_short_io(&self) -> bool {
        // A read that returns less than asked emptied the ring, and a write that wrote less
        // filled it: the sleeper reports the next change, so the engine need not make the
        // call that would only say `WouldBlock`.
        true
    }

    fn input_waiting(&self) -> bool {
        self.ch.input_waiting()
    }
}

/// A tcp connection's byte stream as the engine's link.
#[cfg(feature = "tcp")]
pub(crate) struct TcpLink(pub(crate) Box<dyn gloo_transport::tcp::ByteStream>);

/// One peer's link: shared memory or tcp.
// Not boxed: one per peer, held for the communicator's life, and the shm variant is the one
// every call on this host reads through (a box would add a pointer chase to each).
#[allow(clippy::large_enum_variant)]
pub(crate) enum HostLink {
    /// A peer on this host.
    Shm(ShmLink),
    /// A peer on another host.
    #[cfg(feature = "tcp")]
    Tcp(TcpLink),
}

impl Link for HostLink {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            HostLink::Shm(l) => l.read(buf),
            #[cfg(feature = "tcp")]
            HostLink::Tcp(l) => l.0.read(buf),
        }
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            HostLink::Shm(l) => l.write_vectored(bufs),
            #[cfg(feature = "tcp")]
            HostLink::Tcp(l) => l.0.write_vectored(bufs),
        }
    }

    #[inline]
    fn drains_on_short_io(&self) -> bool {
        match self {
            HostLink::Shm(l) => l.drains_on_short_io(),
            #[cfg(feature = "tcp")]
            HostLink::Tcp(l) => l.0.drains_on_short_io(),
        }
    }

    fn has_pending_output(&self) -> bool {
        match self {
            HostLink::Shm(_) => false,
            #[cfg(feature = "tcp")]
            HostLink::Tcp(l) => l.0.has_pending_output(),
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            HostLink::Shm(_) => Ok(()),
            #[cfg(feature = "tcp")]
            HostLink::Tcp(l) => l.0.flush_pending(),
        }
    }

    fn input_waiting(&self) -> bool {
        match self {
            HostLink::Shm(l) => l.input_waiting(),
            #[cfg(feature = "tcp")]
            HostLink::Tcp(l) => l.0.input_waiting(),
        }
    }
}

/// A channel the sleeper watches.
struct Watched {
    peer: Rank,
    handle: SleepHandle,
    flags: Arc<Flags>,
    /// What the last look saw.
    seen: Seen,
}

/// What one waiting thread sleeps in: the poll of every tcp stream, this process's
/// doorbell and every channel's set-up socket, with the announce-then-look handshake on
/// every channel around it.
pub(crate) struct HostSleeper {
    poll: Poll,
    events: Events,
    size: usize,
    shm: Vec<Watched>,
    /// Channels found changed by the last sleep: (index in `shm`, readable, writable).
    changed: Vec<(usize, bool, bool)>,
}

impl HostSleeper {
    /// Look at every open channel; record those that changed since the last look.
    fn look_all(&mut self) {
        for (i, w) in self.shm.iter_mut().enumerate() {
            if w.flags.closed.load(Ordering::Relaxed) {
                continue;
            }
            let now = w.handle.look();
            let readable = now.readable_since(&w.seen);
            let writable =
                now.writable_since(&w.seen) && w.flags.want_write.load(Ordering::Relaxed);
            w.seen = now;
            if readable || writable {
                self.changed.push((i, readable, writable));
            }
        }
    }
}

impl Sleeper for HostSleeper {
    fn sleep(&mut self, timeout: Duration) -> io::Result<()> {
        self.changed.clear();
        // Announce first, then look: a change after the announcement rings the doorbell.
        for w in &self.shm {
            if !w.flags.closed.load(Ordering::Relaxed) {
                w.handle.announce();
            }
        }
        self.look_all();
        let result = if self.changed.is_empty() {
            self.poll.poll(&mut self.events, Some(timeout))
        } else {
            self.events.clear();
            Ok(())
        };
        for w in &self.shm {
            w.handle.after_sleep();
        }
        let mut rung = false;
        for ev in self.events.iter() {
            let t = ev.token().0;
            if ev.token() == BELL {
                rung = true;
            } else if (self.size..2 * self.size).contains(&t) {
                // A set-up socket hung up: the peer died (or closed, which its flag says).
                if let Some(w) = self.shm.iter().find(|w| w.peer.index() == t - self.size) {
                    w.handle.check_hangup();
                }
            }
        }
        if rung && let Some(w) = self.shm.first() {
            w.handle.drain_doorbell();
        }
        // What moved while asleep (the doorbell says only that something did).
        self.look_all();
        result
    }
}

/// Ends a sleep from another thread.
pub(crate) struct HostWaker(mio::Waker);

impl Waker for HostWaker {
    fn wake(&self) {
        // A failed wake leaves the sleeper to its timeout (at most 100 ms).
        let _ = self.0.wake();
    }
}

/// The shm transport's side of one communicator.
pub(crate) struct HostWire {
    registry: Registry,
    size: usize,
    /// Each channel's set-up socket, by rank, to deregister when the link closes.
    sockets: Vec<Option<RawFd>>,
}

impl Wire for HostWire {
    type Link = HostLink;
    type Sleeper = HostSleeper;
    type Waker = HostWaker;

    const NAME: &'static str = "shm";

    fn note_ready(&mut self, sleeper: &mut HostSleeper, engine: &mut Engine<HostLink>) {
        for &(i, readable, writable) in &sleeper.changed {
            let w = &sleeper.shm[i];
            engine.set_ready(w.peer, readable, writable);
            if w.seen.end {
                // The peer's close (or loss) may have come with its last bytes.
                engine.set_closed(w.peer);
            }
        }
        sleeper.changed.clear();
        let (me, size) = (engine.rank(), self.size);
        for ev in sleeper.events.iter() {
            let t = ev.token().0;
            if t < size && t != me.index() {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                engine.set_ready(Rank(t as u32), readable, writable);
                if ev.is_read_closed() || ev.is_error() {
                    engine.set_closed(Rank(t as u32));
                }
            }
        }
    }

    fn closed(&mut self, peer: Rank, link: HostLink) {
        match link {
            HostLink::Shm(l) => {
                l.flags.closed.store(true, Ordering::Relaxed);
                if let Some(fd) = self.sockets.get_mut(peer.index()).and_then(Option::take) {
                    let _ = self.registry.deregister(&mut SourceFd(&fd));
                }
            }
            #[cfg(feature = "tcp")]
            HostLink::Tcp(mut l) => {
                let _ = self.registry.deregister(l.0.source());
            }
        }
    }
}

/// A peer's link before the communicator starts.
// Not boxed: one per peer, moved once into its `HostLink`.
#[allow(clippy::large_enum_variant)]
pub(crate) enum NewLink {
    /// A channel to a rank of this host.
    Shm(Channel),
    /// A tcp stream to a rank of another host, with the bytes read past its handshake.
    #[cfg(feature = "tcp")]
    Tcp(Box<dyn gloo_transport::tcp::ByteStream>, Vec<u8>),
}

/// Register every link with a fresh poll, attach it to `engine`, and build the wire, its
/// sleeper and its waker.
pub(crate) fn assemble(
    engine: &mut Engine<HostLink>,
    links: Vec<(Rank, NewLink)>,
) -> io::Result<(HostWire, HostSleeper, HostWaker)> {
    let size = engine.size() as usize;
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let waker = HostWaker(mio::Waker::new(poll.registry(), WAKE)?);
    let mut shm = Vec::new();
    let mut sockets = vec![None; size];
    let mut bell_registered = false;
    for (peer, link) in links {
        match link {
            NewLink::Shm(ch) => {
                let handle = ch.sleep_handle();
                if !bell_registered {
                    let fd = handle.doorbell().as_raw_fd();
                    poll.registry().register(&mut SourceFd(&fd), BELL, Interest::READABLE)?;
                    bell_registered = true;
                }
                let sock = ch.socket().as_fd().as_raw_fd();
                // Data never comes on the set-up socket after set-up: it turns readable only
                // when the peer's end closes.
                poll.registry().register(
                    &mut SourceFd(&sock),
                    Token(size + peer.index()),
                    Interest::READABLE,
                )?;
                sockets[peer.index()] = Some(sock);
                let flags = Arc::new(Flags::default());
                let seen = handle.look();
                shm.push(Watched { peer, handle, flags: flags.clone(), seen });
                engine.attach(peer, HostLink::Shm(ShmLink { ch, flags }), &[]);
            }
            #[cfg(feature = "tcp")]
            NewLink::Tcp(mut stream, early) => {
                poll.registry().register(
                    stream.source(),
                    Token(peer.index()),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                engine.attach(peer, HostLink::Tcp(TcpLink(stream)), &early);
            }
        }
    }
    let sleeper =
        HostSleeper { poll, events: Events::with_capacity(256), size, shm, changed: Vec::new() };
    Ok((HostWire { registry, size, sockets }, sleeper, waker))
}
