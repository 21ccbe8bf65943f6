//! The synchronisation primitives the engine's communicator and the loopback transport are
//! built on, swapped for loom's models under `cfg(loom)` so that their hand-offs (a waiting
//! thread woken by a peer's write, the sleeper role passed between threads) can be
//! model-checked.
//!
//! Only the primitives are swapped: the code that uses them is the same in both builds.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Lock `m`, ignoring poisoning: the engine and the loopback transport never panic while they
/// hold a lock, and their state stays consistent between statements, so a poisoned lock (from a panic in a
/// caller's thread elsewhere) carries no broken invariant.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Wait on `cv` until notified or until `deadline`, whichever comes first; spurious wake-ups
/// are allowed, so callers re-check their condition in a loop.
#[cfg(not(loom))]
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: std::time::Instant,
) -> MutexGuard<'a, T> {
    let timeout = deadline.saturating_duration_since(std::time::Instant::now());
    match cv.wait_timeout(guard, timeout) {
        Ok((guard, _)) => guard,
        Err(poisoned) => poisoned.into_inner().0,
    }
}

/// Under loom the wait is untimed: loom models no clock, so a model must make sure every wait
/// is ended by a notification (which is exactly the hand-off property it checks).
#[cfg(loom)]
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    _deadline: std::time::Instant,
) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Let other threads run (havoc's spinning rounds); loom's version lets the model switch.
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}
