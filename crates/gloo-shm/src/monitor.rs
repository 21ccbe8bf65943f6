//! Liveness: one thread per process that answers for this process and watches the peers.
//!
//! Each tick it bumps this process's heartbeat word in every live segment, so a peer can tell
//! a busy rank (computing between collectives, heartbeat moving) from a frozen one (`SIGSTOP`
//! stops this thread too). It also watches each peer: a set-up socket that hung up means
//! the peer process is gone (the kernel closes a dead process's descriptors, `SIGKILL`
//! included); a heartbeat that stood still for the peer timeout means it froze. Either marks
//! the channel lost and rings this process's doorbell, so a rank asleep on the channel wakes
//! and reports `PeerLost` at once. A rank that is spinning sees the mark on its next check.
//!
//! The thread starts with the first channel and ends when the last one is dropped.
#![forbid(unsafe_code)]

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::segment::SideWords;
use crate::sys::event::{self, Watch};

/// What the monitor knows about one channel's peer, shared with the channel.
#[derive(Debug)]
pub(crate) struct Watched {
    pub(crate) peer_pid: u32,
    mine: SideWords,
    theirs: SideWords,
    /// A clone of the channel's set-up socket: its hang-up is the peer's death.
    sock: UnixStream,
    timeout: Duration,
    /// This process's doorbell, rung when the peer is found lost.
    bell: Arc<std::fs::File>,
    lost_flag: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    lost: Option<String>,
    /// The peer's last heartbeat value and when it was first seen.
    beat: u64,
    since: Instant,
}

impl Watched {
    pub(crate) fn new(
        peer_pid: u32,
        mine: SideWords,
        theirs: SideWords,
        sock: UnixStream,
        timeout: Duration,
        bell: Arc<std::fs::File>,
    ) -> Arc<Watched> {
        let beat = theirs.heartbeat().load(Ordering::Relaxed);
        Arc::new(Watched {
            peer_pid,
            mine,
            theirs,
            sock,
            timeout,
            bell,
            lost_flag: AtomicBool::new(false),
            state: Mutex::new(State { lost: None, beat, since: Instant::now() }),
        })
    }

    /// Why the peer is lost, if it is. One relaxed load when it is not.
    pub(crate) fn lost(&self) -> Option<String> {
        if !self.lost_flag.load(Ordering::Acquire) {
            return None;
        }
        self.state.lock().unwrap_or_else(|p| p.into_inner()).lost.clone()
    }

    /// Mark the peer lost (the first reason stays) and wake this process's sleeper.
    pub(crate) fn mark_lost(&self, reason: String) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.lost.is_none() {
            st.lost = Some(reason);
            self.lost_flag.store(true, Ordering::Release);
            // A failed ring only delays the wake to the sleeper's next bounded slice.
            let _ = event::ring(&self.bell);
        }
    }

    /// The reason for a hung-up socket. A killed process closes its descriptors before it
    /// becomes a zombie, so it is given a moment (10 ms: the liveness thread calls this too,
    /// and must not hold up the heartbeats) to show as gone.
    pub(crate) fn hangup_reason(&self) -> String {
        let end = Instant::now() + Duration::from_millis(10);
        while !process_gone(self.peer_pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        if process_gone(self.peer_pid) {
            format!(
                "process {} exited (its end of the shared-memory socket hung up)",
                self.peer_pid
            )
        } else {
            format!(
                "its end of the shared-memory socket hung up without a goodbye (process {} is still \
                 there, exiting or having closed it)",
                self.peer_pid
            )
        }
    }

    /// One tick: check the heartbeat.
    fn check_heartbeat(&self, now: Instant) {
        let beat = self.theirs.heartbeat().load(Ordering::Relaxed);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if beat != st.beat {
            st.beat = beat;
            st.since = now;
        } else if st.lost.is_none() && now.duration_since(st.since) > self.timeout {
            let waited = now.duration_since(st.since);
            drop(st);
            self.mark_lost(format!(
                "no heartbeat from process {} for {waited:.1?} (peer timeout {:.1?}): frozen or stopped",
                self.peer_pid, self.timeout
            ));
        }
    }

    /// Whether the peer said goodbye (closed its end cleanly).
    pub(crate) fn peer_closed(&self) -> bool {
        self.theirs.closed().load(Ordering::Acquire) != 0
    }
}

struct Registry {
    watched: Vec<Weak<Watched>>,
    running: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { watched: Vec::new(), running: false });

/// Watch `w` until it is dropped; starts the thread if it is not running.
pub(crate) fn register(w: &Arc<Watched>) {
    // Answer at once, so the peer sees us alive from the start.
    w.mine.heartbeat().fetch_add(1, Ordering::Relaxed);
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    reg.watched.push(Arc::downgrade(w));
    if !reg.running {
        reg.running = true;
        let spawned = std::thread::Builder::new().name("gloo-shm-liveness".into()).spawn(run);
        if let Err(e) = spawned {
            reg.running = false;
            // Without the thread peers see no heartbeat and report us frozen after their
            // timeout: loud, not silent.
            tracing::error!("cannot start the gloo-shm liveness thread: {e}");
        }
    }
}

/// The tick for a set of timeouts: an eighth of the shortest, from 5 ms to 100 ms.
fn tick(watched: &[Arc<Watched>]) -> Duration {
    let shortest = watched.iter().map(|w| w.timeout).min().unwrap_or(Duration::from_secs(1));
    (shortest / 8).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

fn run() {
    let mut revents = Vec::new();
    loop {
        let live: Vec<Arc<Watched>> = {
            let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
            reg.watched.retain(|w| w.strong_count() > 0);
            if reg.watched.is_empty() {
                reg.running = false;
                return;
            }
            reg.watched.iter().filter_map(Weak::upgrade).collect()
        };
        for w in &live {
            w.mine.heartbeat().fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        let fds: Vec<_> = live.iter().map(|w| (w.sock.as_fd(), Watch::HangUp)).collect();
        if event::poll(&fds, Some(Duration::ZERO), &mut revents).is_ok() {
            for (w, r) in live.iter().zip(&revents) {
                if r.hangup && !w.peer_closed() {
                    w.mark_lost(w.hangup_reason());
                }
            }
        }
        for w in &live {
            w.check_heartbeat(now);
        }
        let tick = tick(&live);
        drop(fds);
        drop(live);
        std::thread::sleep(tick);
    }
}

/// Whether process `pid` has ended: no `/proc` entry, or a zombie (ended, not yet reaped).
pub(crate) fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
