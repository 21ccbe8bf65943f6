//! TLS 1.3 with mutual authentication for the Rust Gloo (not yet built).
//!
//! What it will do: put a rustls connection between the TCP transport's socket and its
//! protocol, with every rank presenting a certificate bound to its rank and job (a URI SAN)
//! that the peer checks against the rank claimed in the handshake: the `MutualTls` security
//! mode of `SECURITY.md`. What it will not do: find peers or run collectives.
//!
//! Nothing here works yet: the crate waits for its own issue and exports nothing.
#![forbid(unsafe_code)]
