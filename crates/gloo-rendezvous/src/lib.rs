//! Rendezvous for the Rust Gloo (being built).
#![forbid(unsafe_code)]
