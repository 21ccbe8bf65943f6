//! Waiting on channels: spin, then yield the CPU, then sleep on the doorbell.
//!
//! Spinning answers in well under a microsecond when the peer runs on another core. It
//! stops after the configured spin (20 µs by default), because a peer that shares our core
//! cannot run while we spin; the yield phase (`sched_yield` between checks, 200 µs by
//! default) hands the core to such a peer at once; then the rank sleeps in `poll` on its
//! doorbell and every peer's socket, having set its "sleeping" flag so that a peer that
//! writes, reads or closes rings the doorbell. A sleep is cut into slices of at most a
//! quarter of the peer timeout (and 250 ms), so a peer that forgets to ring costs latency,
//! never a hang; a dead peer's socket ends the sleep at once; a frozen one is found by the
//! liveness thread, which rings our doorbell.
#![forbid(unsafe_code)]

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel::{Channel, Interest};
use crate::error::Result;
use crate::sys::event::{self, Watch};

/// Wait until one of `channels` is ready for its interest (`interests[i]`, or the last one
/// for the rest), or `deadline` passes. Returns the index of a ready channel, or `None` at
/// the deadline. A channel whose peer is lost or closed counts as ready: its `read` or
/// `write` reports it.
pub fn wait(
    channels: &mut [&mut Channel],
    interests: &[Interest],
    deadline: Instant,
) -> Result<Option<usize>> {
    let interest =
        |i: usize| interests.get(i).or(interests.last()).copied().unwrap_or(Interest::BOTH);
    let ready = |chs: &mut [&mut Channel]| {
        chs.iter_mut().enumerate().position(|(i, c)| c.ready(interest(i)))
    };
    if channels.is_empty() {
        return Ok(None);
    }
    if let Some(i) = ready(channels) {
        return Ok(Some(i));
    }
    let spin = channels.iter().map(|c| c.spin).max().unwrap_or_default();
    let yield_for = channels.iter().map(|c| c.yield_for).max().unwrap_or_default();
    let slice = channels.iter().map(|c| c.slice).min().unwrap_or(Duration::from_millis(250));
    let start = Instant::now();
    // Spin, reading the clock only every 64 checks (it costs more than a check).
    if !spin.is_zero() {
        let mut n = 0u32;
        loop {
            std::hint::spin_loop();
            if let Some(i) = ready(channels) {
                return Ok(Some(i));
            }
            n = n.wrapping_add(1);
            if n.is_multiple_of(64) {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                if now.duration_since(start) >= spin {
                    break;
                }
            }
        }
    }
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        if now.duration_since(start) < spin + yield_for {
            std::thread::yield_now();
            if let Some(i) = ready(channels) {
                return Ok(Some(i));
            }
            continue;
        }
        // Sleep: flag every channel, re-check, then poll the doorbells and sockets.
        let mut woke = None;
        for (i, c) in channels.iter_mut().enumerate() {
            if c.prepare_sleep(interest(i)) {
                woke = Some(i);
                break;
            }
        }
        if woke.is_none() {
            let mut bells: Vec<&Arc<std::fs::File>> = Vec::new();
            for c in channels.iter() {
                if !bells.iter().any(|b| Arc::ptr_eq(b, c.bell())) {
                    bells.push(c.bell());
                }
            }
            let mut fds: Vec<_> = bells.iter().map(|b| (b.as_fd(), Watch::Readable)).collect();
            fds.extend(channels.iter().map(|c| (c.socket(), Watch::HangUp)));
            let timeout = deadline.saturating_duration_since(now).min(slice);
            let mut revents = Vec::new();
            let polled = event::poll(&fds, Some(timeout), &mut revents);
            for b in &bells {
                event::drain(b);
            }
            let hung: Vec<bool> = revents.iter().skip(bells.len()).map(|r| r.hangup).collect();
            drop(fds);
            if let Err(e) = polled {
                for c in channels.iter_mut() {
                    c.after_sleep();
                }
                return Err(crate::Error::io(None, "polling the shared-memory doorbells", e));
            }
            for (c, hung) in channels.iter_mut().zip(hung) {
                if hung {
                    // Records the loss (or sees the clean close) for ready() below.
                    let _ = c.check_peer();
                }
            }
        }
        for c in channels.iter_mut() {
            c.after_sleep();
        }
        if let Some(i) = woke.or_else(|| ready(channels)) {
            return Ok(Some(i));
        }
    }
}

impl Channel {
    /// Wait until this channel is ready for `interest` (see [`wait`]); a
    /// [`Timeout`](crate::Error::Timeout) at `deadline`.
    pub fn wait(&mut self, interest: Interest, deadline: Instant) -> Result<()> {
        let start = Instant::now();
        match wait(&mut [&mut *self], &[interest], deadline)? {
            Some(_) => Ok(()),
            None => Err(crate::Error::Timeout {
                peer: Some(self.peer()),
                doing: format!(
                    "waiting to {}",
                    match (interest.read, interest.write) {
                        (true, false) => "read",
                        (false, true) => "write",
                        _ => "read or write",
                    }
                ),
                waited: start.elapsed(),
            }),
        }
    }
}
