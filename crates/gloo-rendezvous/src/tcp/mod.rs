//! [`TcpStore`]: a store served over TCP by [`TcpStoreServer`] (one mio event loop, embeddable
//! in a rank or run standalone as the `gloo-store` binary).
//!
//! Waits are pushed: the server parks a waiting request and answers it the moment its keys
//! are set (or its deadline passes), so no client polls. With a job token, every client proves
//! it holds the token (HMAC-SHA256 over a server nonce and a client nonce) and the server
//! proves it back. With TLS (feature `tls`, [`ServerConfig::tls`] and
//! [`TcpStore::connect_with`]), every connection is a mutual TLS 1.3 session with the job's
//! certificates from its first byte: only holders of a certificate of the job reach the
//! store, and nothing of it crosses the network in the clear. Every length a peer sends is
//! checked against a fixed limit before anything is allocated.

mod client;
pub(crate) mod proto;
mod server;
mod stream;

#[cfg(feature = "fuzzing")]
pub(crate) use client::fuzz_answers;
#[cfg(feature = "fuzzing")]
pub(crate) use server::fuzz::Harness;

pub use client::TcpStore;
pub use server::{ServerConfig, TcpStoreServer};

use crate::error::{Error, Result};

/// The shortest job token the store accepts (the transport's rule: one token serves both).
pub use gloo_transport::proto::MIN_TOKEN_LEN;

/// Refuse a token too short to be a secret, saying how to make one.
pub(crate) fn check_token(token: &[u8]) -> Result<()> {
    match gloo_transport::proto::weak_token(token) {
        Some(detail) => Err(Error::Config { detail }),
        None => Ok(()),
    }
}
