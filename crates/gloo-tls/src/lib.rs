//! TLS 1.3 with mutual authentication for the Rust Gloo, with certificates bound to job and
//! rank (rustls with the ring provider).
//!
//! What it does:
//! - [`TlsConfig`] loads the job's CA (the only roots trusted, never the system's), this
//!   process's certificate and its key (from PEM files, refusing a key file others may
//!   read, or from `GLOO_TLS_CA`, `GLOO_TLS_CERT` and `GLOO_TLS_KEY`);
//! - every certificate names one [`Identity`], a URI subject alternative name
//!   `gloo://<job>/rank/<r>` (or `gloo://<job>/store`), and every peer's is checked: a chain
//!   to the pinned CA, valid now, for this job, and for exactly the rank the peer is (the
//!   rank dialled, or the rank its `Hello` claims);
//! - [`TlsLayer`] plugs that into the TCP transport ([`TcpConfig::stream_layer`]) so that
//!   the session wraps each connection *before* the transport's own handshake: nothing of the
//!   job (not even the `Hello` with job and ranks) crosses the network in cleartext;
//! - [`TlsStream`] is the session itself (rustls's unbuffered API over a blocking or
//!   non-blocking socket), also used by the TCP store ([`TlsConfig::store_acceptor`],
//!   [`TlsConfig::store_connector`]);
//! - with the `mint` feature, [`mint`] makes a job CA and per-rank certificates (the
//!   `gloo-tls mint` command, feature `cli`, writes them to files).
//!
//! What it does not do: find peers, move collective data, or consult the system's trust
//! store. TLS 1.2, session resumption, 0-RTT data and SNI are all off.
//!
//! [`TcpConfig::stream_layer`]: gloo_transport::tcp::TcpConfig::stream_layer
#![forbid(unsafe_code)]

mod config;
mod error;
mod identity;
mod layer;
#[cfg(feature = "mint")]
pub mod mint;
mod session;
mod store;
mod verify;

pub use config::{CA_ENV, CERT_ENV, KEY_ENV, TlsConfig, TlsFiles};
pub use error::{Error, Result};
pub use identity::{Identity, Role};
pub use layer::TlsLayer;
pub use session::{Socket, TlsStream};
pub use store::{TlsAcceptor, TlsConnector};
