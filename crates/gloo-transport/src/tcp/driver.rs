//! The tcp transport's side of the engine: readiness and syscalls.
//!
//! The protocol (operations, matching, framing, credit, liveness) runs in the
//! [engine](crate::engine); what is left here is what only tcp knows: a connection's
//! [`ByteStream`] as the engine's [`Link`], mio's `Poll` as the [`Sleeper`] one waiting
//! thread sleeps in (its events tell which peers are ready: a peer's poll token is its
//! rank), mio's `Waker` to end that sleep, deregistering a closed connection, and, for a
//! lazy communicator (see [`lazy`]), the listening socket and the handshakes of connections
//! being made.

mod lazy;

pub(crate) use lazy::Lazy;

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token};

use super::stream::ByteStream;
use crate::Rank;
use crate::engine::{Engine, Link, Sleeper, Waker, Wire};

/// The token of the waker that interrupts a sleeping poller.
pub(crate) const WAKE: Token = Token(usize::MAX);
/// How often the background thread of a lazy communicator serves its listener and
/// handshakes while no caller is inside `progress` (a peer's first use must not wait for a
/// liveness tick per handshake step).
const LAZY_NAP: Duration = Duration::from_millis(10);

/// A connection's byte stream (a socket, or a stream layer over one) as the engine's link.
pub(crate) struct TcpLink(pub(crate) Box<dyn ByteStream>);

impl Link for TcpLink {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    #[inline]
    fn drains_on_short_io(&self) -> bool {
        self.0.drains_on_short_io()
    }

    #[inline]
    fn has_pending_output(&self) -> bool {
        self.0.has_pending_output()
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.0.flush_pending()
    }

    fn input_waiting(&self) -> bool {
        self.0.input_waiting()
    }
}

/// The poller and its event buffer: one thread at a time sleeps in it.
pub(crate) struct TcpSleeper {
    poll: Poll,
    events: Events,
}

impl TcpSleeper {
    pub(crate) fn new(poll: Poll) -> TcpSleeper {
        TcpSleeper { poll, events: Events::with_capacity(256) }
    }
}

impl Sleeper for TcpSleeper {
    fn sleep(&mut self, timeout: Duration) -> io::Result<()> {
        self.poll.poll(&mut self.events, Some(timeout))
    }
}

/// Interrupts the poller's sleep.
pub(crate) struct TcpWaker(pub(crate) mio::Waker);

impl Waker for TcpWaker {
    fn wake(&self) {
        // A failed wake leaves the sleeper to its timeout (at most 100 ms).
        let _ = self.0.wake();
    }
}

/// The tcp side of a communicator, under its lock beside the engine.
pub(crate) struct TcpWire {
    registry: Registry,
    /// The connection state of a lazy communicator; `None` for the full mesh.
    lazy: Option<Box<Lazy>>,
}

impl TcpWire {
    pub(crate) fn new(registry: Registry, lazy: Option<Box<Lazy>>) -> TcpWire {
        TcpWire { registry, lazy }
    }
}

impl Wire for TcpWire {
    type Link = TcpLink;
    type Sleeper = TcpSleeper;
    type Waker = TcpWaker;

    const NAME: &'static str = "tcp";

    fn note_ready(&mut self, sleeper: &mut TcpSleeper, engine: &mut Engine<TcpLink>) {
        let (me, size) = (engine.rank(), engine.size() as usize);
        for ev in sleeper.events.iter() {
            let t = ev.token();
            if t == WAKE {
                continue;
            }
            if t.0 < size && t.0 != me.index() {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                engine.set_ready(Rank(t.0 as u32), readable, writable);
                if ev.is_read_closed() || ev.is_error() {
                    // The close may have come with the last data, in this one event.
                    engine.set_closed(Rank(t.0 as u32));
                }
            } else if let Some(lazy) = self.lazy.as_mut() {
                lazy.note(t);
            }
        }
    }

    fn drive(&mut self, engine: &mut Engine<TcpLink>, force: bool, now: Instant) -> bool {
        match self.lazy.as_mut() {
            Some(lazy) => lazy.drive(engine, &self.registry, force, now),
            None => false,
        }
    }

    fn want(&mut self, peer: Rank) {
        if let Some(lazy) = self.lazy.as_mut() {
            lazy.want(peer);
        }
    }

    fn closed(&mut self, _peer: Rank, mut link: TcpLink) {
        let _ = self.registry.deregister(link.0.source());
    }

    fn background_nap(&self) -> Option<Duration> {
        self.lazy.is_some().then_some(LAZY_NAP)
    }
}
