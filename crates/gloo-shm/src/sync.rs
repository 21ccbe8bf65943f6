//! The atomics the ring is written with: std's, or loom's under `cfg(loom)` so that
//! `tests/loom_ring.rs` can check every interleaving of the ring's orderings.
#![forbid(unsafe_code)]

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};
