//! Test helpers shared by the Rust Gloo's crates (never a dependency of a library).
//!
//! What it holds: the transport conformance suite that every transport passes
//! ([`conformance`]), helpers that run one closure per rank on threads ([`run_ranks`]) or one
//! process per rank ([`procs`]), and bounded deadlines for tests.
//!
//! What it does not hold: assertions about timing (tests never assert timings), or anything a
//! library needs at run time.
#![forbid(unsafe_code)]

pub mod conformance;
pub mod netns;
pub mod procs;
pub mod redis;
pub mod rng;
pub mod rogue;
pub mod tls;

use std::any::Any;
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

/// Run `f` once per rank, each on its own scoped thread named `rank-<i>`, and return the
/// results in rank order.
///
/// A panic in any rank is re-raised here once every thread has finished, naming each rank
/// that panicked and its message. (Threads are joined, not abandoned: a rank that waits for a
/// panicked peer ends at its own deadline, or sooner when the transport notices the peer's
/// communicator being dropped.)
///
/// ```
/// use gloo_transport::loopback::{LoopbackConfig, group};
/// use gloo_transport::Communicator;
/// let ranks = gloo_testing::run_ranks(group(3, LoopbackConfig::default()), |c| c.rank().0);
/// assert_eq!(ranks, vec![0, 1, 2]);
/// ```
pub fn run_ranks<C: Send, R: Send>(comms: Vec<C>, f: impl Fn(C) -> R + Send + Sync) -> Vec<R> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| {
                std::thread::Builder::new()
                    .name(format!("rank-{rank}"))
                    .spawn_scoped(s, move || f(comm))
                    .unwrap_or_else(|e| panic!("cannot spawn a thread for rank {rank}: {e}"))
            })
            .collect();
        let mut results = Vec::with_capacity(handles.len());
        let mut failures = Vec::new();
        for (rank, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(r) => results.push(r),
                Err(payload) => failures.push(format!("rank {rank}: {}", panic_message(&*payload))),
            }
        }
        if !failures.is_empty() {
            panic!("{} rank(s) panicked: {}", failures.len(), failures.join("; "));
        }
        results
    })
}

/// The text of a panic payload (a `&str` or `String` message), or a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_string()
    }
}
