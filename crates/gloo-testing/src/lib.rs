//! Test helpers shared by the Rust Gloo's crates (never a dependency of a library).
//!
//! What it holds: the transport conformance suite that every transport passes
//! ([`conformance`]), helpers that run one closure per rank on threads ([`run_ranks`]) or one
//! process per rank ([`procs`]), error chains as a reporter prints them ([`errors`]), network faults (a fault proxy and network namespaces whose
//! link can be cut or throttled: [`netfault`]), and bounded deadlines for tests.
//!
//! What it does not hold: assertions about timing (tests never assert timings), or anything a
//! library needs at run time.
#![forbid(unsafe_code)]

pub mod bootstrap_keys;
pub mod errors;
/// The transport conformance suite. It lives in `gloo-transport` behind its `conformance`
/// feature, so that a transport written outside this workspace can run it too; the
/// workspace's tests reach it here.
pub mod conformance {
    pub use gloo_transport::conformance::*;
}
pub mod netfault;
pub mod netns;
pub mod procs;
pub mod redis;
pub mod rng;
pub mod rogue;
pub mod tls;
pub mod torch;

use std::time::{Duration, Instant};

/// A deadline `secs` seconds from now: every wait in a test is bounded by one.
pub fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Wait until `done()` holds, polling every 10 ms, and fail the test naming `what` (with the
/// last value `show()` gives) if it does not within `secs` seconds. For state another thread
/// settles a moment after the call under test returns (a server closing a refused
/// connection): asserting it at once fails on a busy machine.
pub fn wait_for<T: std::fmt::Debug>(
    what: &str,
    secs: u64,
    mut show: impl FnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) {
    let end = deadline(secs);
    loop {
        let now = show();
        if done(&now) {
            return;
        }
        assert!(Instant::now() < end, "{what}: still {now:?} after {secs} s");
        std::thread::sleep(Duration::from_millis(10));
    }
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

pub use gloo_transport::conformance::{panic_message, run_ranks};

/// Expand to one `#[test]` per conformance case over `$factory`, each installing the test
/// log subscriber first ([`init_tracing`]): `gloo_transport::conformance_tests!` with the
/// workspace's logging. See [`conformance`].
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        ::gloo_transport::conformance_tests!($factory, setup = $crate::init_tracing);
    };
}

/// Expand to two modules that run the conformance suite over tcp two more ways: `token`,
/// with job-token authentication, and `sleeping`, with busy polling off (every wait sleeps in
/// epoll). `$group` names a function in the calling module, `fn(u32, impl Fn(u32) ->
/// TcpConfig) -> Vec<C>`, that builds a connected group from one config per rank; `$job`
/// prefixes the two groups' job names.
#[macro_export]
macro_rules! tcp_conformance_variants {
    ($group:ident, $job:literal) => {
        /// The conformance suite with token authentication.
        mod token {
            fn factory(size: u32) -> Vec<Box<dyn ::gloo_transport::Communicator>> {
                $crate::conformance::boxed(super::$group(size, |r| {
                    let job = concat!($job, "token");
                    ::gloo_transport::tcp::TcpConfig::loopback(job, ::gloo_transport::Rank(r), size)
                        .security(::gloo_transport::tcp::Security::Token(
                            b"conformance-s3cret-token".to_vec(),
                        ))
                }))
            }
            $crate::conformance_tests!(factory);
        }

        /// The conformance suite with busy polling off: every wait sleeps in epoll, so
        /// readiness events alone must drive the transport (and, in lazy mode, connecting).
        mod sleeping {
            fn factory(size: u32) -> Vec<Box<dyn ::gloo_transport::Communicator>> {
                $crate::conformance::boxed(super::$group(size, |r| {
                    let job = concat!($job, "sleeping");
                    ::gloo_transport::tcp::TcpConfig::loopback(job, ::gloo_transport::Rank(r), size)
                        .busy_poll(::std::time::Duration::ZERO)
                }))
            }
            $crate::conformance_tests!(factory);
        }
    };
}
