//! Per-thread waiting: whether a thread's waits may busy-poll.
//!
//! A transport that waits for a peer first polls for a while (a few tens of microseconds,
//! spinning and then yielding the CPU), because a reply that comes within that window is
//! seen at once instead of after a wake-up. That is right for a thread that has nothing else
//! to do. It is wrong for a thread that runs communication *beside* work: the non-blocking
//! collectives' background threads (see `gloo-algorithms`' `Group::start_allreduce`) would
//! spin on the very CPU the caller computes on, and on a rank bound to one core every
//! microsecond they spin is taken from the computation. Such a thread turns on *quiet waits*:
//! its waits sleep at once (on the transport's readiness, woken by the peer), and it uses
//! the CPU only to move and reduce bytes.
//!
//! Every transport of this workspace honours the setting (the engine's busy-poll window,
//! gloo-shm's spin-and-yield); a transport of your own should too.

use std::cell::Cell;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread's waits sleep at once, skipping their busy-poll window.
pub fn quiet() -> bool {
    QUIET.with(Cell::get)
}

/// Make this thread's waits sleep at once (`true`) or busy-poll first as configured
/// (`false`, the default); returns the previous setting.
pub fn set_quiet(on: bool) -> bool {
    QUIET.with(|q| q.replace(on))
}
