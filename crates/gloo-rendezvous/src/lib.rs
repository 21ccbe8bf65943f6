//! Rendezvous for the Rust Gloo: how ranks find each other.
//!
//! What it does:
//! - defines the [`Store`] trait (a small key-value store with waits, counters and
//!   compare-and-set; every call takes a deadline) and ships its stores:
//!   [`HashStore`] (in-process), [`PrefixStore`] (many jobs in one store), [`FileStore`]
//!   (a shared file system), [`TcpStore`] (a client of [`TcpStoreServer`], one mio loop).
//! - connects a group: [`connect`] turns (store, transport listener, rank, size) into a
//!   communicator, naming the ranks that never showed up; [`env`](mod@env) reads torchrun, Slurm,
//!   Open MPI and PMI variables (`env://` start-up) with rank 0 hosting the TCP store.
//!
//! What it does not do: move collective data (that is `gloo-transport`), or run collectives
//! (`gloo-algorithms`). The stores depend on no transport;
//! only the bootstrap uses `gloo-transport`'s [`Listener`](gloo_transport::Listener) trait.
#![forbid(unsafe_code)]

mod bootstrap;
pub mod env;
mod error;
mod file;
mod hash;
mod prefix;
#[cfg(feature = "redis")]
mod redis_store;
mod store;
pub mod tcp;

pub use bootstrap::connect;
pub use env::{EnvConfig, EnvGroup, EnvStore, connect_from_env, parse_env};
pub use error::{Error, Result};
pub use file::FileStore;
pub use hash::HashStore;
pub use prefix::PrefixStore;
#[cfg(feature = "redis")]
pub use redis_store::{RedisOptions, RedisStore};
pub use store::{CompareSet, MAX_KEY_LEN, MAX_VALUE_LEN, Store};
pub use tcp::{TcpStore, TcpStoreServer};
