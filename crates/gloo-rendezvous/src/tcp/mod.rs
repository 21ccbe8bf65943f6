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

pub use client::TcpStore;
pub use server::{ServerConfig, TcpStoreServer};

use crate::error::{Error, Result};

/// The shortest job token the store accepts: 16 bytes (128 bits) is the least that resists
/// guessing; a 1-byte token would be found by 256 tries.
pub const MIN_TOKEN_LEN: usize = 16;

/// Refuse a token too short to be a secret, saying how to make one.
pub(crate) fn check_token(token: &[u8]) -> Result<()> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(Error::Config {
            detail: format!(
                "the job token is {} bytes; it must be at least {MIN_TOKEN_LEN} bytes of secret \
                 (make one with `export GLOO_AUTH_TOKEN=$(head -c 32 /dev/urandom | base64)` and \
                 give every rank the same)",
                token.len()
            ),
        });
    }
    Ok(())
}
