//! Rendezvous for the Rust Gloo: how ranks find each other.
//!
//! What it does:
//! - defines the [`Store`] trait (a small key-value store with waits, counters and
//!   compare-and-set; every call takes a deadline) and ships its stores:
//!   [`HashStore`] (in-process), [`PrefixStore`] (many jobs in one store), [`FileStore`]
//!   (a shared file system), [`TcpStore`] (a client of [`TcpStoreServer`], one mio loop),
//!   [`TorchStore`] (a client of PyTorch c10d's `TCPStore`, the store torchrun's agent serves)
//!   and `RedisStore` (feature `redis`: keys in a Redis server);
//! - connects a group: [`connect`] turns (store, transport listener, rank, size) into a
//!   communicator, naming the ranks that never showed up ([`connect_lazy`] connects each pair
//!   on its first use instead of the full mesh; [`exchange_addresses`] is the rendezvous
//!   alone); [`env`](mod@env) reads torchrun, Slurm, Open MPI and PMI variables (`env://`
//!   start-up): it joins torchrun's agent store, or rank 0 hosts the TCP store, or (mpirun on
//!   one host) a private per-job directory serves.
//!
//! What it does not do: move collective data (that is `gloo-transport`), or run collectives
//! (`gloo-algorithms`). The stores depend on no transport; only the bootstrap uses
//! `gloo-transport`'s [`Listener`](gloo_transport::Listener) trait.
//!
//! Two ranks (threads here; processes in practice) meeting through a TCP store and
//! connecting over TCP:
//!
//! ```
//! use gloo_rendezvous::{TcpStore, TcpStoreServer, connect};
//! use gloo_transport::tcp::{TcpConfig, TcpListener};
//! use gloo_transport::{Communicator, Rank, Slot};
//! use std::time::{Duration, Instant};
//!
//! let deadline = Instant::now() + Duration::from_secs(30);
//! // Rank 0 (or a standalone `gloo-store`) serves the store; a job token authenticates ranks.
//! let server = TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), Some(b"a-secret-job-token")).unwrap();
//! let addr = server.local_addr().to_string();
//! let ranks: Vec<_> = (0..2u32)
//!     .map(|r| {
//!         let addr = addr.clone();
//!         std::thread::spawn(move || {
//!             let store = TcpStore::connect(addr, Some(b"a-secret-job-token"), deadline).unwrap();
//!             let listener = TcpListener::bind(TcpConfig::loopback("doc", Rank(r), 2)).unwrap();
//!             let comm = connect(&store, listener, Rank(r), 2, deadline).unwrap();
//!             let mut buf = [0u8; 2];
//!             if r == 0 {
//!                 comm.send(Rank(1), Slot::new(0, 0), b"hi", deadline).unwrap();
//!             } else {
//!                 comm.recv(Rank(0), Slot::new(0, 0), &mut buf, deadline).unwrap();
//!                 assert_eq!(&buf, b"hi");
//!             }
//!         })
//!     })
//!     .collect();
//! for r in ranks {
//!     r.join().unwrap();
//! }
//! ```
#![forbid(unsafe_code)]

mod bootstrap;
pub mod env;
mod error;
mod file;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hash;
mod pool;
mod prefix;
#[cfg(feature = "redis")]
mod redis_store;
mod store;
mod table;
pub mod tcp;
pub mod torch;

pub use bootstrap::{connect, connect_lazy, exchange_addresses};
pub use env::{EnvConfig, EnvGroup, EnvStore, connect_from_env, parse_env};
pub use error::{Error, Result};
pub use file::FileStore;
pub use hash::HashStore;
pub use prefix::PrefixStore;
#[cfg(feature = "redis")]
pub use redis_store::{RedisOptions, RedisStore};
pub use store::{CompareSet, MAX_KEY_LEN, MAX_VALUE_LEN, Store};
pub use tcp::{TcpStore, TcpStoreServer};
pub use torch::{TorchOptions, TorchStore};
