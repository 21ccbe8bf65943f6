//! A transport written from the outside: ranks as threads, connected by Unix-domain socket
//! pairs, built only on the engine's public traits, and checked end to end with the
//! conformance suite.
//!
//! ```text
//! cargo run -p gloo-transport --features conformance --example uds_transport
//! ```
//!
//! What a transport author writes is all here, about a hundred lines:
//!
//! - a [`Link`] per peer: one end of a non-blocking socket pair (reads and writes, and the
//!   promise that a short read or write means the socket is drained, as it is under
//!   edge-triggered epoll);
//! - a [`Wire`]: after a sleep, which peers' sockets are ready (mio's events; a socket is
//!   registered under its peer's rank as the token); the [`Sleeper`] (the mio poll one
//!   waiting thread sleeps in) and the [`Waker`] that ends that sleep;
//! - a function that connects the ranks and starts one [`EngineComm`] per rank.
//!
//! Matching, fingerprints, framing, credit, rendezvous, cancellation, abort, the error scopes
//! and heartbeats come from the engine. A transport over a network would also run a
//! handshake on each connection before attaching it (`gloo_transport::proto::Handshake`);
//! a socket pair is connected to the right peer by construction.
//!
//! In a crate of your own, the same factory goes into a test file instead of `main`:
//! `gloo_transport::conformance_tests!(factory);` expands to one `#[test]` per case.

use std::io::{self, IoSlice, Read, Write};
use std::time::Duration;

use gloo_transport::conformance;
use gloo_transport::engine::{Engine, EngineComm, EngineConfig, Link, Sleeper, Waker, Wire};
use gloo_transport::{Communicator, Rank};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};

/// The token of the waker: above every rank.
const WAKE: Token = Token(usize::MAX);

/// One end of a socket pair: the bytes to and from one peer.
struct UdsLink(UnixStream);

impl Link for UdsLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn drains_on_short_io(&self) -> bool {
        // Edge-triggered epoll: after a short read or write the next change raises an event.
        true
    }
}

/// What one waiting thread of a rank sleeps in.
struct UdsSleeper {
    poll: Poll,
    events: Events,
}

impl Sleeper for UdsSleeper {
    fn sleep(&mut self, timeout: Duration) -> io::Result<()> {
        self.poll.poll(&mut self.events, Some(timeout))
    }
}

/// Ends that sleep from another thread.
struct UdsWaker(mio::Waker);

impl Waker for UdsWaker {
    fn wake(&self) {
        // A lost wake-up costs at most one sleep's timeout (100 ms).
        let _ = self.0.wake();
    }
}

/// The transport's side of one communicator: readiness from mio's events.
struct UdsWire;

impl Wire for UdsWire {
    type Link = UdsLink;
    type Sleeper = UdsSleeper;
    type Waker = UdsWaker;

    const NAME: &'static str = "uds";

    fn note_ready(&mut self, sleeper: &mut UdsSleeper, engine: &mut Engine<UdsLink>) {
        for ev in sleeper.events.iter() {
            if ev.token() == WAKE {
                continue;
            }
            // A closed or failed socket counts as ready: the next read or write reports it.
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
            let peer = Rank(ev.token().0 as u32);
            engine.set_ready(peer, readable, writable);
            if ev.is_read_closed() || ev.is_error() {
                // The peer's close may have come with its last bytes, in this one event.
                engine.set_closed(peer);
            }
        }
    }
}

/// A connected group of `size` ranks in this process: one socket pair per pair of ranks.
fn group(size: u32) -> io::Result<Vec<EngineComm<UdsWire>>> {
    let cfg = EngineConfig::default().busy_poll(Duration::from_micros(20));
    let polls: Vec<Poll> = (0..size).map(|_| Poll::new()).collect::<io::Result<_>>()?;
    let mut engines: Vec<Engine<UdsLink>> =
        (0..size).map(|r| Engine::new(Rank(r), size, cfg.clone())).collect();
    for a in 0..size {
        for b in a + 1..size {
            let (mut ea, mut eb) = UnixStream::pair()?;
            let both = Interest::READABLE | Interest::WRITABLE;
            // Each end is registered with its own rank's poll, under the peer's rank.
            polls[a as usize].registry().register(&mut ea, Token(b as usize), both)?;
            polls[b as usize].registry().register(&mut eb, Token(a as usize), both)?;
            engines[a as usize].attach(Rank(b), UdsLink(ea), &[]);
            engines[b as usize].attach(Rank(a), UdsLink(eb), &[]);
        }
    }
    engines
        .into_iter()
        .zip(polls)
        .map(|(engine, poll)| {
            let waker = UdsWaker(mio::Waker::new(poll.registry(), WAKE)?);
            let sleeper = UdsSleeper { poll, events: Events::with_capacity(256) };
            EngineComm::start(engine, UdsWire, sleeper, waker).map_err(io::Error::other)
        })
        .collect()
}

/// The conformance suite's factory.
fn factory(size: u32) -> Vec<Box<dyn Communicator>> {
    conformance::boxed(group(size).expect("socket pairs for the group"))
}

fn main() {
    let failed = conformance::run_all(factory, |case| println!("conformance: {case}"));
    let total = conformance::CASES.len();
    if failed.is_empty() {
        println!("uds transport: all {total} conformance cases passed");
        return;
    }
    for (case, why) in &failed {
        eprintln!("FAILED {case}: {why}");
    }
    eprintln!("uds transport: {} of {total} conformance cases failed", failed.len());
    std::process::exit(1);
}
