//! Rendezvous for the Rust Gloo: how ranks find each other.
//!
//! What it does:
//! - defines the [`Store`] trait (a small key-value store with waits, counters and
//!   compare-and-set; every call takes a deadline) and ships its stores:
//!   [`HashStore`] (in-process), [`PrefixStore`] (many jobs in one store), [`FileStore`]
//!   (a shared file system), [`TcpStore`] (a client of [`TcpStoreServer`], one mio loop).
//!
//! What it does not do: move collective data (that is `gloo-transport`), or run collectives
//! (`gloo-algorithms`). The stores depend on no transport.
#![forbid(unsafe_code)]

mod error;
mod file;
mod hash;
mod prefix;
#[cfg(feature = "redis")]
mod redis_store;
mod store;
pub mod tcp;

pub use error::{Error, Result};
pub use file::FileStore;
pub use hash::HashStore;
pub use prefix::PrefixStore;
#[cfg(feature = "redis")]
pub use redis_store::{RedisOptions, RedisStore};
pub use store::{CompareSet, MAX_KEY_LEN, MAX_VALUE_LEN, Store};
pub use tcp::{TcpStore, TcpStoreServer};
