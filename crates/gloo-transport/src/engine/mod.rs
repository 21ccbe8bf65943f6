//! The transport engine: the protocol's rules in one I/O-free place, so a transport only
//! moves bytes.
//!
//! Every transport of this crate (tcp, loopback) and of its siblings (shm, tls) runs the same
//! [`Engine`]: it owns the posted operations, matching first-in first-out per
//! `(peer, slot)`, receive-from-any, the three fingerprint rules, the framing of the
//! [wire protocol](crate::proto), eager credit and rendezvous transfers, cancellation
//! part-way through a message, abort, the three error scopes of
//! [`Communicator`](crate::Communicator), and the liveness clock (heartbeats out, silent
//! peers lost). It performs no I/O of its own and reads no clock: it moves bytes through the
//! transport's [`Link`]s and is handed the time.
//!
//! A transport supplies two small things:
//!
//! - a [`Link`] per peer: non-blocking reads and writes of an ordered, reliable byte stream,
//!   with the contract written on the trait (ordering, what "readable" means, how a closed
//!   peer is reported). A socket, a TLS session, a pair of shared-memory rings or an
//!   in-process pipe all fit;
//! - a [`Wire`] for the communicator as a whole: which links are ready after a sleep, the
//!   [`Sleeper`] one waiting thread sleeps in and the [`Waker`] that ends that sleep, and
//!   optional hooks (connecting a peer on first use, closing a link, forcing rendezvous).
//!
//! [`EngineComm`] puts the two together into a [`Communicator`](crate::Communicator) with
//! caller-driven progress (no thread but the caller's touches a caller's buffer, and no
//! pointer to one is kept beyond the call that borrows it), a busy-poll window, one sleeping
//! thread at a time, and a small background thread for liveness.
//!
//! # Writing a transport
//!
//! Connect the ranks (a handshake is the transport's business: [`proto::Handshake`] is
//! there to use), then attach one link per peer and start the communicator:
//!
//! ```
//! use std::io::{self, IoSlice, Read, Write};
//! use std::os::unix::net::UnixStream;
//! use std::time::Duration;
//! use gloo_transport::engine::{Engine, EngineComm, EngineConfig, Link, Sleeper, Waker, Wire};
//! use gloo_transport::{Communicator, Rank, Slot};
//!
//! /// One end of a socket pair, non-blocking.
//! struct Uds(UnixStream);
//! impl Link for Uds {
//!     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> { self.0.read(buf) }
//!     fn write_vectored(&mut self, b: &[IoSlice<'_>]) -> io::Result<usize> {
//!         self.0.write_vectored(b)
//!     }
//! }
//!
//! /// No readiness events: a sleep is a short nap, after which every link is tried again.
//! /// (A real transport sleeps in epoll or on a futex; see the `uds_transport` example.)
//! struct Nap;
//! impl Sleeper for Nap {
//!     fn sleep(&mut self, t: Duration) -> io::Result<()> {
//!         std::thread::sleep(t.min(Duration::from_micros(200)));
//!         Ok(())
//!     }
//! }
//! impl Waker for Nap {
//!     fn wake(&self) {}
//! }
//! struct Naive;
//! impl Wire for Naive {
//!     type Link = Uds;
//!     type Sleeper = Nap;
//!     type Waker = Nap;
//!     const NAME: &'static str = "naive";
//!     fn note_ready(&mut self, _: &mut Nap, engine: &mut Engine<Uds>) {
//!         engine.set_all_ready();
//!     }
//! }
//!
//! let (a, b) = UnixStream::pair()?;
//! let mut comms = Vec::new();
//! for (rank, end) in [(0, a), (1, b)] {
//!     end.set_nonblocking(true)?;
//!     let mut engine = Engine::new(Rank(rank), 2, EngineConfig::default());
//!     engine.attach(Rank(1 - rank), Uds(end), &[]);
//!     comms.push(EngineComm::start(engine, Naive, Nap, Nap)?);
//! }
//! let deadline = std::time::Instant::now() + Duration::from_secs(10);
//! comms[0].send(Rank(1), Slot::new(1, 0), b"hi", deadline)?;
//! let mut buf = [0u8; 2];
//! assert_eq!(comms[1].recv(Rank(0), Slot::new(1, 0), &mut buf, deadline)?, 2);
//! assert_eq!(&buf, b"hi");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Then check it with the same conformance suite this crate's transports pass (the
//! `conformance` feature; see the `conformance` module).
//!
//! [`proto::Handshake`]: crate::proto::Handshake

mod comm;
mod machine;
#[cfg(test)]
mod tests;
mod wire;

pub use comm::EngineComm;
pub use machine::{Engine, EngineConfig};
pub(crate) use wire::refusal;
pub use wire::{Link, Sleeper, Waker, Wire};
