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
//! - with the `mint` feature, the `mint` module makes a job CA and per-rank certificates
//!   (the `gloo-tls mint` command, feature `cli`, writes them to files).
//!
//! What it does not do: find peers, move collective data, or consult the system's trust
//! store. TLS 1.2, session resumption, 0-RTT data and SNI are all off.
//!
//! # A job over TLS
//!
//! ```text
//! gloo-tls mint --job job-42 --world-size 8 --out ./pki        # or your own PKI, below
//! # rank r:
//! GLOO_TLS_CA=pki/ca.pem GLOO_TLS_CERT=pki/rank-$r.pem GLOO_TLS_KEY=pki/rank-$r.key ...
//! ```
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gloo_transport::Rank;
//! use gloo_transport::tcp::{TcpConfig, TcpListener};
//!
//! let (job, rank, size) = ("job-42", Rank(3), 8);
//! let tls = gloo_tls::TlsConfig::from_env()?.expect("GLOO_TLS_CA, _CERT and _KEY are set");
//! // A routable address needs no job token: the layer authenticates every peer.
//! let cfg = TcpConfig::new(job, rank, size).interface("eth0").stream_layer(tls.layer(job, rank)?);
//! let listener = TcpListener::bind(cfg)?;
//! # let _ = listener; Ok(()) }
//! ```
//!
//! Under `env://` (gloo-rendezvous with its `tls` feature) the same three variables make rank
//! 0 serve the TCP store over TLS and every rank reach it over TLS.
//!
//! # Certificates from your own PKI
//!
//! Any CA can issue a job's certificates; what the peers check is:
//! - the leaf carries exactly one URI subject alternative name starting with `gloo://`:
//!   `gloo://<job>/rank/<r>` for rank `r` (decimal, no leading zeros) or `gloo://<job>/store`
//!   for a standalone store, where `<job>` is the job id the ranks give the transport with
//!   every byte other than ASCII letters, digits and `-._~` written `%XX` (upper-case hex);
//! - it chains to a certificate of the `GLOO_TLS_CA` file (intermediates follow the leaf in
//!   the `GLOO_TLS_CERT` file), is valid now, and, if it has an extended key usage, allows
//!   both `serverAuth` and `clientAuth` (every rank both accepts and dials);
//! - the key is ECDSA P-256 or P-384, Ed25519 or RSA (2048 bits or more), in a file of mode
//!   `0600` (or stricter).
//!
//! A CA with name constraints on URIs is refused (the certificate checker fails closed on
//! them). With OpenSSL, rank 3 of job `job-42`:
//!
//! ```text
//! openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
//!     -keyout rank-3.key -subj "/CN=gloo://job-42/rank/3" -out rank-3.csr
//! openssl x509 -req -in rank-3.csr -CA ca.pem -CAkey ca.key -days 30 -out rank-3.pem \
//!     -extfile <(printf 'subjectAltName=URI:gloo://job-42/rank/3\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n')
//! chmod 600 rank-3.key
//! ```
//!
//! # What an on-path observer sees
//!
//! Each connection (between ranks, and to the store) is a TLS 1.3 session from its first
//! byte. In the clear: the `ClientHello` and `ServerHello` (random values, key shares, the
//! offered suites, groups and signature schemes; no server name, no ALPN, no session
//! ticket), then only encrypted records. Encrypted: both certificates (so the job id and the
//! ranks), the transport's `Hello` (job hash, ranks, group size), a token's MACs, and all
//! data. What remains visible is the traffic's shape: which addresses connect to which (in
//! a full mesh the higher rank dials the lower, which hints at rank order), when, and how
//! much (records are not padded: a message's size shows to within the 22 bytes a record
//! adds). An active prober that connects to a listener gets that listener's certificate
//! (TLS 1.3 servers present theirs first), and so its job id and rank, but no further
//! without a certificate of the job; choose an opaque job id if the id itself is secret.
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
