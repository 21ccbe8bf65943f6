//! The connected communicator: caller-driven progress, the heartbeat thread, shutdown.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Waker};

use super::driver::{Driver, Mine};
use crate::proto::{Header, Opcode};
use crate::{Communicator, Error, Op, OpState, Rank, Result, Wait};

/// The longest a sleeping poller sleeps before looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How long a waiter that is not the poller sleeps before re-checking on its own.
const WAITER_NAP: Duration = Duration::from_millis(20);
/// How long `Drop` tries to flush goodbyes before closing.
const FAREWELL: Duration = Duration::from_millis(500);
/// How often the heartbeat thread of a lazy communicator serves its listener and handshakes
/// while no caller is inside `progress` (a peer's first use must not wait for a heartbeat
/// tick per handshake step).
const LAZY_NAP: Duration = Duration::from_millis(10);

pub(crate) struct Shared {
    me: Rank,
    size: u32,
    d: Mutex<Driver>,
    cv: Condvar,
    waker: Waker,
    busy_poll: Duration,
    peer_timeout: Duration,
    hb_interval: Duration,
    /// How often the liveness tick runs (heartbeats are due every `hb_interval`).
    tick: Duration,
}

impl Shared {
    /// Run the liveness tick if it is due; true if a peer was found lost.
    fn tick_if_due(&self, d: &mut Driver, now: Instant) -> bool {
        d.tick_if_due(now, self.tick, (self.hb_interval, self.peer_timeout))
    }

    fn lock(&self) -> MutexGuard<'_, Driver> {
        // A panic while holding the lock leaves the driver in an unknown state, but every
        // later call fails fast through the poison flag that panics do not set; continuing
        // with the inner value is the least bad option for a transport.
        self.d.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tell other waiters (and a sleeping poller) that something moved.
    fn nudge(&self, d: &Driver) {
        if d.poll.is_none() {
            let _ = self.waker.wake();
        }
        self.cv.notify_all();
    }
}

/// A connected group of ranks over TCP, made by
/// [`TcpListener::connect_all`](super::TcpListener::connect_all) or
/// [`TcpListener::connect_lazy`](super::TcpListener::connect_lazy).
///
/// Dropping it says goodbye to every peer, stops its heartbeat thread and closes its sockets.
pub struct TcpComm {
    shared: Arc<Shared>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    heartbeat: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TcpComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpComm")
            .field("rank", &self.shared.me)
            .field("size", &self.shared.size)
            .finish()
    }
}

impl TcpComm {
    pub(crate) fn start(
        d: Driver,
        waker: Waker,
        size: u32,
        busy_poll: Duration,
        peer_timeout: Duration,
    ) -> Result<TcpComm> {
        let me = d.me;
        let hb_interval = Duration::from_secs(1).min(peer_timeout / 4);
        let shared = Arc::new(Shared {
            me,
            size,
            d: Mutex::new(d),
            cv: Condvar::new(),
            waker,
            busy_poll,
            peer_timeout,
            hb_interval,
            tick: (hb_interval / 4).clamp(Duration::from_millis(5), Duration::from_millis(250)),
        });
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (s2, stop2) = (shared.clone(), stop.clone());
        let heartbeat = std::thread::Builder::new()
            .name(format!("gloo-tcp-hb-{me}"))
            .spawn(move || heartbeat_loop(&s2, &stop2))
            .map_err(|e| Error::io(None, "starting the heartbeat thread", &e))?;
        Ok(TcpComm { shared, stop, heartbeat: Some(heartbeat) })
    }

    /// The ranks this rank has a live connection to, in rank order: every other rank after
    /// [`connect_all`](super::TcpListener::connect_all) (until one is lost); after
    /// [`connect_lazy`](super::TcpListener::connect_lazy), only those connected so far.
    pub fn connected_peers(&self) -> Vec<Rank> {
        self.shared.lock().connected_peers()
    }
}

fn heartbeat_loop(s: &Shared, stop: &(Mutex<bool>, Condvar)) {
    let lazy = s.lock().lazy.is_some();
    let nap = if lazy { s.tick.min(LAZY_NAP) } else { s.tick };
    let mut stopped = stop.0.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        stopped = stop.1.wait_timeout(stopped, nap).unwrap_or_else(|p| p.into_inner()).0;
        if *stopped {
            return;
        }
        let mut d = s.lock();
        let now = Instant::now();
        if lazy && !d.tick_due(now) {
            // Between ticks only connections in their handshake move, and only when no
            // caller is polling (a caller's poller sees their events itself).
            if d.in_progress == 0 && d.drive_lazy(true) {
                s.nudge(&d);
            }
            continue;
        }
        let mut moved = s.tick_if_due(&mut d, now);
        // With nobody inside `progress`, drain control and eager frames (never a user
        // buffer: the empty `Mine` makes data for posted receives park) and flush.
        let mut none: [Op<'_>; 0] = [];
        let force = d.in_progress == 0;
        moved |= d.pump(&mut Mine { ops: &mut none }, force);
        if moved {
            s.nudge(&d);
        }
    }
}

impl Drop for TcpComm {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        let mut d = self.shared.lock();
        match d.poison.clone() {
            // A rank that gives up because it lost a peer tells the others why as it leaves,
            // so they do not take its departure for its death (the cancels on a poisoned
            // communicator close nothing, so nothing reached them before this).
            Some(e @ Error::PeerLost { .. }) => d.abort_peers(&e.to_string()),
            _ => d.broadcast(Header::new(Opcode::Goodbye, 0, 0, 0), &[]),
        }
        let until = Instant::now() + FAREWELL;
        let mut none: [Op<'_>; 0] = [];
        // Best effort: flush what is queued (goodbyes, credit, eager data) for a moment.
        while Instant::now() < until {
            d.pump(&mut Mine { ops: &mut none }, true);
            if !d.has_unsent() {
                break;
            }
            if let Some((poll, events)) = d.poll.as_mut() {
                let _ = poll.poll(events, Some(Duration::from_millis(5)));
            }
        }
        // Sockets close when the driver drops with the last reference.
    }
}

impl Communicator for TcpComm {
    fn rank(&self) -> Rank {
        self.shared.me
    }

    fn size(&self) -> u32 {
        self.shared.size
    }

    fn progress(&self, ops: &mut [Op<'_>], wait: Wait, deadline: Instant) -> Result<()> {
        let s = &*self.shared;
        let start = Instant::now();
        let mut d = s.lock();
        if let Some(e) = &d.poison {
            return Err(e.clone());
        }
        d.validate(ops)?;
        let watch: Vec<usize> = (0..ops.len()).filter(|i| !ops[*i].is_done()).collect();
        for op in ops.iter_mut() {
            if op.state() == OpState::New {
                d.post(op);
            }
        }
        d.in_progress += 1;
        let active = d.mark_active(ops);
        let mut spin_until: Option<Instant> = None;
        let result = loop {
            let moved = d.pump(&mut Mine { ops }, false);
            let failed = d.reap(ops);
            if moved && d.in_progress > 1 {
                s.nudge(&d);
            }
            if let Some(e) = failed {
                break Err(e);
            }
            let satisfied = match wait {
                Wait::All => ops.iter().all(|o| o.is_done() || o.state() == OpState::Cancelled),
                Wait::Any => watch.is_empty() || watch.iter().any(|i| ops[*i].is_done()),
            };
            if satisfied {
                break Ok(());
            }
            // A lost peer or an abort fails every call still waiting, including those in
            // flight (what completed before it stays completed).
            if let Some(e) = &d.poison {
                break Err(e.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(d.timeout_error(ops, now - start));
            }
            // This caller may hold the lock for as long as every pump moves data, so it keeps
            // the heartbeats going itself (see `Driver::tick_if_due`); a loss it finds is
            // reaped at the top of the loop.
            if s.tick_if_due(&mut d, now) {
                continue;
            }
            if moved {
                // Progress was made: look again before waiting.
                continue;
            }
            let spin_end = *spin_until.get_or_insert(now + s.busy_poll);
            match d.poll.take() {
                Some(p) if now < spin_end => {
                    // Busy-poll: the next pump tries the sockets of this call's own operations
                    // directly (a non-blocking read costs less than asking epoll first), and
                    // in between the lock is released and the core yielded: when ranks
                    // outnumber cores, the peer we wait for may need this very core.
                    d.poll = Some(p);
                    d.mark_ready(ops);
                    drop(d);
                    std::thread::yield_now();
                    d = s.lock();
                }
                Some((mut poll, mut events)) => {
                    let sleep = (deadline - now).min(MAX_SLEEP);
                    drop(d);
                    let r = poll.poll(&mut events, Some(sleep));
                    d = s.lock();
                    d.note_events(&events);
                    d.poll = Some((poll, events));
                    // Other waiters may need what arrived, or the poller role.
                    if d.in_progress > 1 {
                        s.cv.notify_all();
                    }
                    if let Err(e) = r
                        && e.kind() != std::io::ErrorKind::Interrupted
                    {
                        break Err(Error::io(Some(s.me), "polling sockets", &e));
                    }
                }
                None => {
                    // Another thread sleeps in poll and wakes us when something moves.
                    let nap = (deadline - now).min(WAITER_NAP);
                    d = s.cv.wait_timeout(d, nap).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        };
        d.unmark_active(&active);
        d.release(ops);
        d.in_progress -= 1;
        if d.in_progress > 0 {
            s.nudge(&d);
        }
        result
    }

    fn cancel(&self, ops: &mut [Op<'_>]) {
        let mut d = self.shared.lock();
        d.cancel(ops);
        self.shared.nudge(&d);
    }

    fn abort(&self, reason: &str) {
        let s = &*self.shared;
        let mut d = s.lock();
        if d.aborted.is_none() {
            d.abort_peers(reason);
            let e = Error::Aborted { by: s.me, reason: reason.to_string() };
            d.aborted = Some(e.clone());
            d.poison = Some(e);
        }
        s.nudge(&d);
    }

    fn poisoned(&self) -> Option<Error> {
        self.shared.lock().poison.clone()
    }
}

pub(crate) fn new_poll() -> Result<(Poll, Events)> {
    let poll = Poll::new().map_err(|e| Error::io(None, "creating a poller", &e))?;
    Ok((poll, Events::with_capacity(256)))
}
