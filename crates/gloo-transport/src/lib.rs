//! The point-to-point layer of the Rust Gloo.
//!
//! What it does:
//! - defines [`Rank`], [`Slot`], [`Op`] and the object-safe [`Communicator`] trait that every
//!   collective in `gloo-algorithms` is written against;
//! - holds the sans-io wire protocol ([`proto`]): the frame codec, the handshake with its
//!   HMAC token authentication, and the per-peer matching state machine;
//! - runs every transport on one I/O-free [`engine`] (operations, matching, framing, credit,
//!   cancel, abort, error scopes, liveness), so that a transport supplies only byte movement
//!   and readiness per peer through the small [`engine::Link`] and [`engine::Wire`] traits;
//! - ships an in-process transport ([`loopback`], threads as ranks, with seeded "havoc" that
//!   splits and delays deliveries to shake out bugs) and, behind the default `tcp` feature, a
//!   TCP transport on `mio` ([`tcp`]);
//! - behind the `conformance` feature, the conformance suite every transport passes (the
//!   `conformance` module and the `conformance_tests!` macro), for checking a transport of
//!   your own; the `uds_transport` example is one, over Unix-domain socket pairs.
//!
//! What it does not do: find peers (that is `gloo-rendezvous`), run collectives
//! (`gloo-algorithms`), encrypt (`gloo-tls`), or share memory between processes (`gloo-shm`).
//!
//! Two ranks in one process over TCP on loopback:
//!
//! ```
//! # #[cfg(feature = "tcp")] {
//! use gloo_transport::tcp::{TcpConfig, TcpListener};
//! use gloo_transport::{Communicator, Rank, Slot};
//! use std::time::{Duration, Instant};
//!
//! let deadline = Instant::now() + Duration::from_secs(10);
//! let listeners: Vec<TcpListener> =
//!     (0..2).map(|r| TcpListener::bind(TcpConfig::loopback("doc-example", Rank(r), 2)).unwrap())
//!         .collect();
//! let addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
//! let threads: Vec<_> = listeners.into_iter().map(|l| {
//!     let addrs = addrs.clone();
//!     std::thread::spawn(move || {
//!         let comm = l.connect_all(&addrs, deadline).unwrap();
//!         let mut buf = [0u8; 5];
//!         if comm.rank() == Rank(0) {
//!             comm.send(Rank(1), Slot::new(0, 0), b"hello", deadline).unwrap();
//!         } else {
//!             comm.recv(Rank(0), Slot::new(0, 0), &mut buf, deadline).unwrap();
//!             assert_eq!(&buf, b"hello");
//!         }
//!     })
//! }).collect();
//! for t in threads { t.join().unwrap(); }
//! # }
//! ```
#![forbid(unsafe_code)]

mod comm;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod engine;
mod error;
mod hash;
pub mod loopback;
mod op;
pub mod proto;
mod sync;
#[cfg(feature = "tcp")]
pub mod tcp;
pub mod threads;
mod types;

pub use comm::{Batch, Communicator, LazyListener, Listener, Wait};
pub use error::{Error, ErrorChain, Pending, Result, io_errors_match};
pub use op::{Op, OpKind, OpState};
pub use types::{Fingerprint, Rank, Slot};
