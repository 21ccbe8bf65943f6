//! The communicator every engine-based transport shares: caller-driven progress, the
//! busy-poll window, one sleeping thread at a time, the background thread, shutdown.

use std::time::{Duration, Instant};

use super::machine::Mine;
use super::{Engine, Sleeper, Waker, Wire};
use crate::proto::{Header, Opcode};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard, lock, wait_until};
use crate::{Communicator, Error, Op, OpState, Rank, Result, Wait};

/// The longest a sleeping poller sleeps before looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How long a waiter that is not the poller sleeps before re-checking on its own.
const WAITER_NAP: Duration = Duration::from_millis(20);
/// How many pumps in a row the background thread runs per tick while they move something.
#[cfg(not(loom))]
const BACKGROUND_PUMPS: usize = 16;
/// How long `Drop` tries to flush goodbyes before closing.
const FAREWELL: Duration = Duration::from_millis(500);

/// What the lock protects: the engine, the wire beside it, and the sleeper while nobody
/// sleeps in it.
struct State<W: Wire> {
    eng: Engine<W::Link>,
    wire: W,
    /// `None` while a thread sleeps in it.
    sleeper: Option<W::Sleeper>,
    /// Callers inside `progress`.
    in_progress: usize,
}

impl<W: Wire> State<W> {
    /// Hand the wire what the engine left for it: peers to connect, links to close.
    fn settle(&mut self) {
        if !self.eng.wanted.is_empty() {
            for r in std::mem::take(&mut self.eng.wanted) {
                self.wire.want(r);
            }
        }
        if !self.eng.closed.is_empty() {
            for (r, link) in std::mem::take(&mut self.eng.closed) {
                self.wire.closed(r, link);
            }
        }
    }

    /// One pump: the wire's own work, then every link.
    fn pump(&mut self, ops: &mut [Op<'_>], force: bool, now: Instant) -> bool {
        let mut moved = self.wire.drive(&mut self.eng, force, now);
        moved |= self.eng.pump(&mut Mine { ops }, force, now);
        self.settle();
        moved
    }
}

struct Shared<W: Wire> {
    me: Rank,
    size: u32,
    st: Mutex<State<W>>,
    cv: Condvar,
    waker: W::Waker,
    busy_poll: Duration,
    spin: Duration,
}

impl<W: Wire> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, State<W>> {
        // A panic while holding the lock leaves the engine in an unknown state, but every
        // later call fails fast through the poison flag that panics do not set; continuing
        // with the inner value is the least bad option for a transport.
        lock(&self.st)
    }

    /// Tell other waiters (and a sleeping poller) that something moved.
    fn nudge(&self, st: &State<W>) {
        if st.sleeper.is_none() {
            self.waker.wake();
        }
        self.cv.notify_all();
    }
}

/// A [`Communicator`] made of an [`Engine`] and a transport's [`Wire`]: what a transport
/// returns (wrapped in its own type, as `TcpComm` and `LoopbackComm` do, or as it is).
///
/// Build one with [`EngineComm::start`]. Progress runs on the callers' threads: a call posts
/// its operations, pumps the links, and when nothing moves, spins for the
/// [busy-poll window](super::EngineConfig::busy_poll) (yielding the CPU between tries), then
/// sleeps in the wire's [`Sleeper`]; one thread at a time sleeps there, the others wait to be
/// told that something moved. A background thread per communicator runs the liveness tick
/// (heartbeats out, silent peers lost) and, while no caller is inside `progress`, drains
/// control and eager frames and flushes what callers left queued; it never touches a caller's
/// buffer. A caller inside `progress` runs the tick itself when it is due, since it may hold
/// the lock for as long as every pump moves data.
///
/// Dropping it says goodbye to every peer (or, when a lost peer poisoned it, sends `Abort`
/// naming that loss, so the survivors learn why), stops the background thread, flushes for
/// at most half a second, and drops the links.
pub struct EngineComm<W: Wire> {
    shared: Arc<Shared<W>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    background: Option<std::thread::JoinHandle<()>>,
}

impl<W: Wire> std::fmt::Debug for EngineComm<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineComm")
            .field("wire", &W::NAME)
            .field("rank", &self.shared.me)
            .field("size", &self.shared.size)
            .finish()
    }
}

impl<W: Wire> EngineComm<W> {
    /// Start a communicator over `engine` (with the links it has, or will get from the wire)
    /// and `wire`, whose waiting thread sleeps in `sleeper` and is woken by `waker`. Starts
    /// the background thread.
    pub fn start(
        engine: Engine<W::Link>,
        wire: W,
        sleeper: W::Sleeper,
        waker: W::Waker,
    ) -> Result<EngineComm<W>> {
        let me = engine.rank();
        let size = engine.size();
        let busy_poll = engine.cfg.busy_poll_value();
        let spin = engine.cfg.spin_value();
        let nap = wire.background_nap();
        let shared = Arc::new(Shared {
            me,
            size,
            st: Mutex::new(State { eng: engine, wire, sleeper: Some(sleeper), in_progress: 0 }),
            cv: Condvar::new(),
            waker,
            busy_poll,
            spin,
        });
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let background = Self::spawn_background(&shared, &stop, nap)?;
        Ok(EngineComm { shared, stop, background })
    }

    #[cfg(not(loom))]
    fn spawn_background(
        shared: &Arc<Shared<W>>,
        stop: &Arc<(Mutex<bool>, Condvar)>,
        nap: Option<Duration>,
    ) -> Result<Option<std::thread::JoinHandle<()>>> {
        let (s2, stop2) = (shared.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("gloo-{}-hb-{}", W::NAME, shared.me))
            .spawn(move || background_loop(&s2, &stop2, nap))
            .map(Some)
            .map_err(|e| Error::io(None, "starting the heartbeat thread", e))
    }

    /// Under loom there is no background thread: a model runs the callers' threads only,
    /// and loom has no clock for the thread's naps.
    #[cfg(loom)]
    fn spawn_background(
        _shared: &Arc<Shared<W>>,
        _stop: &Arc<(Mutex<bool>, Condvar)>,
        _nap: Option<Duration>,
    ) -> Result<Option<std::thread::JoinHandle<()>>> {
        Ok(None)
    }

    /// The ranks this rank has a live link to, in rank order.
    pub fn connected_peers(&self) -> Vec<Rank> {
        self.shared.lock().eng.connected_peers()
    }

    /// Drain what has arrived (control and eager frames; never into a caller's buffer) and
    /// flush what is queued, without waiting; does nothing while a caller is inside
    /// `progress`, which does the same. Returns whether anything moved.
    pub fn poll_now(&self) -> bool {
        let s = &*self.shared;
        let mut st = s.lock();
        if st.in_progress > 0 {
            return false;
        }
        let mut none: [Op<'_>; 0] = [];
        let moved = st.pump(&mut none, true, Instant::now());
        if moved {
            s.nudge(&st);
        }
        moved
    }

    /// Bytes received so far of the rendezvous message the posted receive `op` takes in.
    #[cfg(test)]
    pub(crate) fn received_so_far(&self, op: &Op<'_>) -> Option<u64> {
        self.shared.lock().eng.received_so_far(op)
    }
}

#[cfg(not(loom))]
fn background_loop<W: Wire>(s: &Shared<W>, stop: &(Mutex<bool>, Condvar), nap: Option<Duration>) {
    let period = s.lock().eng.period;
    let between = nap.filter(|n| *n < period);
    let nap = between.unwrap_or(period);
    let mut stopped = lock(&stop.0);
    loop {
        stopped = wait_until(&stop.1, stopped, Instant::now() + nap);
        if *stopped {
            return;
        }
        let mut st = s.lock();
        let now = Instant::now();
        if between.is_some() && !st.eng.tick_due(now) {
            // Between ticks only the wire's own work moves (a lazy transport's handshakes),
            // and only when no caller is polling (a caller's poller sees its events itself).
            if st.in_progress == 0 {
                let State { eng, wire, .. } = &mut *st;
                let moved = wire.drive(eng, true, now);
                st.settle();
                if moved {
                    s.nudge(&st);
                }
            }
            continue;
        }
        let mut moved = st.eng.tick_if_due(now);
        // With nobody inside `progress`, drain control and eager frames (never a user
        // buffer: the empty operation list makes data for posted receives park) and flush.
        // A pump takes a bounded share of each peer's frames, so a few in a row drain what
        // arrived since the last tick.
        let mut none: [Op<'_>; 0] = [];
        let force = st.in_progress == 0;
        for _ in 0..BACKGROUND_PUMPS {
            let m = st.pump(&mut none, force, now);
            moved |= m;
            if !m {
                break;
            }
        }
        if moved {
            s.nudge(&st);
        }
    }
}

impl<W: Wire> Drop for EngineComm<W> {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(h) = self.background.take() {
            let _ = h.join();
        }
        let mut st = self.shared.lock();
        let now = Instant::now();
        match st.eng.poison.clone() {
            // A rank that gives up because it lost a peer tells the others why as it leaves,
            // so they do not take its departure for its death (the cancels on a poisoned
            // communicator close nothing, so nothing reached them before this).
            Some(e @ Error::PeerLost { .. }) => st.eng.abort_peers(&e.to_string(), now),
            _ => st.eng.broadcast(Header::new(Opcode::Goodbye, 0, 0, 0), &[]),
        }
        let until = now + FAREWELL;
        let mut none: [Op<'_>; 0] = [];
        // Best effort: flush what is queued (goodbyes, credit, eager data) for a moment.
        while Instant::now() < until {
            st.pump(&mut none, true, Instant::now());
            if !st.eng.has_unsent() {
                break;
            }
            if cfg!(loom) {
                // Loom has no clock to end a sleep that nothing wakes.
                break;
            }
            let State { eng, wire, sleeper, .. } = &mut *st;
            if let Some(sl) = sleeper.as_mut() {
                let _ = sl.sleep(Duration::from_millis(5));
                wire.note_ready(sl, eng);
            }
        }
        // The links close when the engine drops with the last reference.
    }
}

impl<W: Wire> EngineComm<W> {
    /// [`Communicator::progress`], from `start`: the clock read at entry when `own`, else
    /// the caller's reading (see [`Communicator::progress_at`]).
    fn drive(
        &self,
        ops: &mut [Op<'_>],
        wait: Wait,
        deadline: Instant,
        start: Instant,
        mut own: bool,
    ) -> Result<()> {
        let s = &*self.shared;
        let mut st = s.lock();
        if let Some(e) = &st.eng.poison {
            return Err(e.clone());
        }
        st.eng.validate(ops)?;
        // For `Any` and `First(n)`: how many of the operations the rule watches (all, or
        // those after the first `n`) were done on entry. An operation done stays done for
        // the rest of the call, so one done since shows as a larger count.
        let done = |ops: &[Op<'_>]| ops.iter().filter(|o| o.is_done()).count();
        let (lead, done_on_entry) = match wait {
            Wait::Any => (0, done(ops)),
            Wait::First(n) => {
                let n = n.min(ops.len());
                (n, done(&ops[n..]))
            }
            _ => (0, 0),
        };
        // A batch's only new send may go into its link as it is posted; several wait for the
        // pump, which writes the frames queued for a peer in one call (a write to a socket is
        // a system call: two of them cost more than the early start saves).
        let new_sends = ops
            .iter()
            .filter(|op| {
                op.state() == OpState::New && matches!(op.kind(), crate::OpKind::Send { .. })
            })
            .count();
        for op in ops.iter_mut() {
            if op.state() == OpState::New {
                let rendezvous = match op.kind() {
                    crate::OpKind::Send { to, buf, .. } => st.wire.rendezvous(*to, buf.len()),
                    _ => false,
                };
                st.eng.post(op, rendezvous, new_sends == 1, start);
            }
        }
        st.settle();
        if wait == Wait::Poll {
            // One pump that tries this batch's links whatever their readiness says, as a
            // busy-poll round does.
            st.eng.mark_ops_ready(ops);
        }
        st.in_progress += 1;
        // This call's posted operations, marked active for the liveness tick (see
        // `Engine::mark_active`) only once another thread can run a tick: before this
        // call first lets go of the lock, or runs the tick itself. A call whose messages
        // are there at its first pump never marks them.
        let mut active = None;
        let mut spin_until: Option<(Instant, Instant)> = None;
        let mut last_look = false;
        // The time the pump stamps on what it hears and sends: the last reading of the clock,
        // taken again after every sleep (a busy-poll round makes it older only by a yield),
        // so that a spinning caller reads the clock at most once per round.
        // It starts as the caller's reading with `progress_at`, which `own` tells apart
        // until the call reads the clock itself.
        let mut clock = start;
        // Whether the loop takes `clock` for the time after this pump instead of reading the
        // clock again: when it was read just before (at entry, after a sleep or a wait), and
        // on three spinning rounds of four (the window and the deadline are then seen a few
        // rounds late, a microsecond or so). A reading costs about as much as a round.
        let mut reuse_clock = true;
        let mut spins = 0u32;
        let result = loop {
            let moved = st.pump(ops, false, clock);
            let failed = st.eng.reap(ops);
            if moved && st.in_progress > 1 {
                s.nudge(&st);
            }
            if let Some(e) = failed {
                break Err(e);
            }
            let satisfied = match wait {
                Wait::All => ops.iter().all(|o| o.is_done() || o.state() == OpState::Cancelled),
                Wait::Any => done_on_entry == ops.len() || done(ops) > done_on_entry,
                Wait::First(_) => {
                    ops[..lead].iter().all(|o| o.is_done()) || done(&ops[lead..]) > done_on_entry
                }
                Wait::Poll => true,
            };
            if satisfied {
                break Ok(());
            }
            // A lost peer or an abort fails every call still waiting, including those in
            // flight (what completed before it stays completed).
            if let Some(e) = &st.eng.poison {
                break Err(e.clone());
            }
            let now = if std::mem::take(&mut reuse_clock) {
                clock
            } else {
                own = true;
                Instant::now()
            };
            clock = now;
            if now >= deadline {
                if !last_look {
                    // One more pump that tries this call's links whatever their readiness
                    // says, so that a call whose deadline has passed (a poll) still moves
                    // what has arrived since the sleeper last looked.
                    last_look = true;
                    st.eng.mark_ops_ready(ops);
                    continue;
                }
                break Err(st.eng.timeout_error(ops, now - start));
            }
            // This caller may hold the lock for as long as every pump moves data, so it keeps
            // the heartbeats going itself (see `Engine::tick_if_due`); a loss it finds is
            // reaped at the top of the loop.
            if st.eng.tick_due(now) {
                active.get_or_insert_with(|| st.eng.mark_active(ops));
                if st.eng.tick_if_due(now) {
                    st.settle();
                    continue;
                }
            }
            if moved {
                // Progress was made: look again before waiting.
                continue;
            }
            // The busy-poll window runs from the call's first wait, read on its own clock: a
            // caller's reading may be older than that (the work it did before this call), and
            // a window measured from it could be over before the call first waits. Until that
            // reading (at most four rounds on), a call with a window spins.
            if own && spin_until.is_none() {
                spin_until = Some((now + s.spin, now + s.busy_poll));
            }
            let (hot, polling) = match spin_until {
                Some((hot_end, spin_end)) => (now < hot_end, now < spin_end),
                None => (!s.spin.is_zero(), !s.busy_poll.is_zero()),
            };
            if !polling && !own {
                // A sleep is measured against the deadline on the call's own clock.
                reuse_clock = false;
                continue;
            }
            // Every way on from here lets go of the lock.
            active.get_or_insert_with(|| st.eng.mark_active(ops));
            match st.sleeper.take() {
                Some(sl) if polling => {
                    // Busy-poll: the next pump tries the links of this call's own operations
                    // directly (a non-blocking read costs less than asking the wire first),
                    // and in between the lock is released (other threads of this process
                    // may need it) and, after the spinning part of the window, the core
                    // yielded: when ranks outnumber cores, the peer we wait for may need
                    // this very core.
                    st.sleeper = Some(sl);
                    st.eng.mark_ops_ready(ops);
                    drop(st);
                    if hot {
                        std::hint::spin_loop();
                        spins = spins.wrapping_add(1);
                        reuse_clock = !spins.is_multiple_of(4);
                    } else {
                        crate::sync::yield_now();
                    }
                    st = s.lock();
                }
                Some(mut sl) => {
                    let sleep = (deadline - now).min(MAX_SLEEP);
                    drop(st);
                    let r = sl.sleep(sleep);
                    st = s.lock();
                    clock = Instant::now();
                    own = true;
                    reuse_clock = true;
                    {
                        let State { eng, wire, .. } = &mut *st;
                        wire.note_ready(&mut sl, eng);
                    }
                    st.sleeper = Some(sl);
                    // Other waiters may need what arrived, or the sleeper.
                    if st.in_progress > 1 {
                        s.cv.notify_all();
                    }
                    if let Err(e) = r
                        && e.kind() != std::io::ErrorKind::Interrupted
                    {
                        break Err(Error::io(Some(s.me), "waiting for the links", e));
                    }
                }
                None => {
                    // Another thread sleeps in the sleeper and wakes us when something moves.
                    let nap = (deadline - now).min(WAITER_NAP);
                    st = wait_until(&s.cv, st, now + nap);
                    clock = Instant::now();
                    own = true;
                    reuse_clock = true;
                }
            }
        };
        if let Some(m) = active {
            st.eng.unmark_active(m);
        }
        st.eng.release(ops);
        st.settle();
        st.in_progress -= 1;
        if st.in_progress > 0 {
            s.nudge(&st);
        }
        result
    }
}

impl<W: Wire> Communicator for EngineComm<W> {
    fn rank(&self) -> Rank {
        self.shared.me
    }

    fn size(&self) -> u32 {
        self.shared.size
    }

    fn progress(&self, ops: &mut [Op<'_>], wait: Wait, deadline: Instant) -> Result<()> {
        self.drive(ops, wait, deadline, Instant::now(), true)
    }

    fn progress_at(
        &self,
        ops: &mut [Op<'_>],
        wait: Wait,
        deadline: Instant,
        now: Instant,
    ) -> Result<()> {
        self.drive(ops, wait, deadline, now, false)
    }

    fn cancel(&self, ops: &mut [Op<'_>]) {
        let mut st = self.shared.lock();
        st.eng.cancel(ops);
        st.settle();
        self.shared.nudge(&st);
    }

    fn abort(&self, reason: &str) {
        let s = &*self.shared;
        let mut st = s.lock();
        if st.eng.aborted.is_none() {
            st.eng.abort_peers(reason, Instant::now());
            let e = Error::Aborted { by: s.me, reason: reason.to_string() };
            st.eng.aborted = Some(e.clone());
            st.eng.poison = Some(e);
            st.settle();
        }
        s.nudge(&st);
    }

    fn poisoned(&self) -> Option<Error> {
        self.shared.lock().eng.poison.clone()
    }
}
