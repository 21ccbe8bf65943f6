//! Test helpers shared by the Rust Gloo's crates (never a dependency of a library).
//!
//! What it holds: the transport conformance suite that every transport passes, helpers that
//! run one closure per rank on threads, and bounded deadlines for tests.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// A deadline `secs` seconds from now: every wait in a test is bounded by one.
pub fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Install a `tracing` subscriber that writes to the test's captured output, once per process.
/// `RUST_LOG` selects what is shown (default: warnings).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
