//! The context one collective call runs in: the communicator, its fingerprint and deadline,
//! helpers that build fingerprinted operations, and the pipelined ring engine.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gloo_transport::{Communicator, Fingerprint, Op, OpState, Rank, Slot, Wait};
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::fingerprint::CallInfo;
use crate::select::Collective;
use crate::subgroup::Members;

/// The step of the slot that carries mismatch alarms. Every call keeps a receive-any posted
/// on it (the watch, see [`Ctx::drive`]), and the transport's fingerprint rule 2 also turns an
/// alarm's arrival into a `Mismatch` for any receive pending from its sender.
pub(crate) const STEP_ALARM: u32 = u32::MAX;
/// The step of the slot typed point-to-point messages use.
pub(crate) const STEP_P2P: u32 = u32::MAX - 1;
/// The step of round 0 of the agreement check of rooted collectives (round `k` uses
/// `STEP_CHECK - k`; there are at most 32 rounds).
pub(crate) const STEP_CHECK: u32 = u32::MAX - 2;

/// The fingerprint of the alarm watch. It belongs to no call (its epoch is `u64::MAX`, which
/// no call counter reaches), so that one watch can stay posted from call to call on its tag
/// instead of being posted and withdrawn by every call; an alarm, which always carries a
/// call's fingerprint, never matches it and so fails it with `Mismatch`.
const WATCH_FP: Fingerprint = Fingerprint([0xff; Fingerprint::LEN]);

/// How long a rank that saw a mismatch spends telling its peers.
const ALARM_GRACE: Duration = Duration::from_millis(500);

/// A batch of operations; most rounds have a handful.
pub(crate) type Ops<'b> = SmallVec<[Op<'b>; 8]>;

/// A call's mark on its [`Group`](crate::Group) handle, so that a call re-entering the
/// handle (from a custom reduction) is refused instead of taking call numbers out of
/// order; cleared when dropped, after the call's context has withdrawn what it posted.
pub(crate) struct CallGuard<'a>(&'a Cell<bool>);

impl<'a> CallGuard<'a> {
    /// Mark `flag`, unless a call has it marked.
    pub(crate) fn take(flag: &'a Cell<bool>) -> Option<CallGuard<'a>> {
        (!flag.replace(true)).then_some(CallGuard(flag))
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// One collective call in progress.
pub(crate) struct Ctx<'a> {
    pub(crate) comm: &'a dyn Communicator,
    pub(crate) collective: Collective,
    pub(crate) rank: usize,
    pub(crate) size: usize,
    pub(crate) tag: u32,
    pub(crate) fp: Fingerprint,
    pub(crate) deadline: Instant,
    /// When the call started (what a timeout reports as waited).
    start: Instant,
    /// Whether the call's first `progress` is still to come: it takes `start` for its
    /// time of entry (see [`Communicator::progress_at`]) instead of reading the clock.
    first: Cell<bool>,
    /// Every rank of the call's group but this one, as communicator ranks (kept by the
    /// group: not rebuilt per call).
    peers: &'a [Rank],
    /// For a call on a subgroup: the communicator rank of each of its ranks (`rank` and
    /// `size` are then the subgroup's, and every operation is addressed through this map);
    /// `None` on the whole communicator.
    members: Option<&'a [Rank]>,
    /// Where scratch comes from.
    pool: Option<&'a ScratchPool>,
    /// Where the alarm watch is parked between calls (the group handle's slot).
    parked: Option<&'a Cell<Option<u64>>>,
    /// The state of the alarm watch (see [`Ctx::drive`]).
    watch: Cell<OpState>,
    /// The agreement check of a rooted call, while rounds of it remain (see
    /// [`Ctx::start_agreement`]).
    agreement: Cell<Option<Agreement>>,
    /// The call's tracing span, entered for as long as the call runs.
    _span: tracing::span::EnteredSpan,
    /// The call's hold on its tag (fields drop after [`Drop::drop`], so it is released
    /// only once the call has withdrawn what it posted).
    _busy: Option<CallGuard<'a>>,
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        // A call that fails between batches (a length error, say) may leave a round of the
        // agreement posted: withdraw it, so that it cannot swallow a later call's message.
        self.cancel_agreement();
        self.park_watch();
    }
}

/// Where the agreement check of a rooted call stands: the round in flight and the states of
/// its two zero-byte operations (a send to `rank + 2^round`, a receive from `rank - 2^round`).
#[derive(Clone, Copy)]
struct Agreement {
    round: u32,
    send: OpState,
    recv: OpState,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        comm: &'a dyn Communicator,
        collective: Collective,
        tag: u32,
        fp: Fingerprint,
        deadline: Instant,
        start: Instant,
        peers: &'a [Rank],
    ) -> Ctx<'a> {
        Ctx {
            comm,
            collective,
            rank: comm.rank().index(),
            size: comm.size() as usize,
            tag,
            fp,
            deadline,
            start,
            first: Cell::new(true),
            peers,
            members: None,
            pool: None,
            parked: None,
            watch: Cell::new(OpState::New),
            agreement: Cell::new(None),
            _span: tracing::debug_span!(
                "collective",
                rank = comm.rank().0,
                kind = collective.name(),
                tag,
                epoch = fp.epoch()
            )
            .entered(),
            _busy: None,
        }
    }

    /// Run the call on the subgroup `members` (its rank `i` is communicator rank
    /// `members.ranks[i]`, and this process its rank `members.me`): schedules see the
    /// subgroup's rank and size, and [`send`](Ctx::send), [`recv`](Ctx::recv), the
    /// agreement check, the alarm and its watch address the members' communicator ranks.
    pub(crate) fn set_members(&mut self, members: &'a Members) {
        self.rank = members.me;
        self.size = members.ranks.len();
        self.peers = &members.peers;
        self.members = Some(&members.ranks);
    }

    /// The communicator rank of rank `r` of the call's group.
    fn peer(&self, r: usize) -> Rank {
        self.members.map_or(Rank(r as u32), |m| m[r])
    }

    /// Hold `guard` until the call ends.
    pub(crate) fn set_busy(&mut self, guard: CallGuard<'a>) {
        self._busy = Some(guard);
    }

    /// Take scratch from `pool` from now on.
    pub(crate) fn set_pool(&mut self, pool: &'a ScratchPool) {
        self.pool = Some(pool);
    }

    /// Take the alarm watch parked in `parked` by the previous call on this tag, if any, and
    /// park ours there when done; first withdraw what `watches` set aside (the watches of
    /// tags no handle will use again).
    pub(crate) fn set_watch(&mut self, parked: &'a Cell<Option<u64>>, watches: &Watches) {
        if let Some(id) = parked.take() {
            self.watch.set(OpState::Posted(id));
        }
        watches.withdraw_retired(self.comm);
        self.parked = Some(parked);
    }

    /// A scratch buffer of `len` bytes (contents unspecified).
    pub(crate) fn scratch(&self, len: usize) -> Scratch<'a> {
        match self.pool {
            Some(p) => Scratch::from_pool(p, len),
            None => Scratch::new(len),
        }
    }

    pub(crate) fn slot(&self, step: u32) -> Slot {
        Slot::new(self.tag, step)
    }

    /// A fingerprinted send of `buf` to `to` on step `step`.
    pub(crate) fn send<'b>(&self, to: usize, step: u32, buf: &'b [u8]) -> Op<'b> {
        Op::send(self.peer(to), self.slot(step), buf).with_fingerprint(self.fp)
    }

    /// A fingerprinted receive of exactly `buf.len()` bytes from `from` on step `step`.
    pub(crate) fn recv<'b>(&self, from: usize, step: u32, buf: &'b mut [u8]) -> Op<'b> {
        Op::recv(self.peer(from), self.slot(step), buf).with_fingerprint(self.fp)
    }

    /// Start checking that every rank is running this very call: a dissemination of the
    /// fingerprint in ⌈log2 n⌉ rounds of zero-byte messages (round `k` sends to
    /// `rank + 2^k` and receives from `rank - 2^k` on step `STEP_CHECK - k`).
    ///
    /// Rooted collectives need it: a leaf of a tree hears only from its parent, so without
    /// it a rank could finish although another rank disagrees about the root.
    ///
    /// The rounds do not run here, ahead of the data (that cost a round trip per call):
    /// [`drive`](Ctx::drive) carries the round in flight in every batch the schedule runs and
    /// posts round `k + 1` once both operations of round `k` are done, and
    /// [`finish_agreement`](Ctx::finish_agreement) drives what is left after the schedule.
    /// The guarantees stay those of a check run first:
    ///
    /// - A rank sends round `k + 1` only after its round `k` matched, and returns `Ok` only
    ///   after its last round matched, so a rank that finishes has still (transitively)
    ///   matched every rank's fingerprint.
    /// - Data that overtakes the check cannot land in the wrong place: every data receive
    ///   carries this call's fingerprint, and the transport fails a receive whose message
    ///   carries another (fingerprint rule 1), so a disagreeing peer's bytes are never
    ///   written into a buffer laid out for this call.
    /// - It cannot hang where the check-first order did not: every wait of a call goes through
    ///   `drive`, so a rank blocked on data (say, a receive from a rank that does not think it
    ///   is its parent) keeps the rounds moving, and the first rank whose round meets a
    ///   differing fingerprint alarms every rank, as before. A rank done with its data waits
    ///   in `finish_agreement`, which also keeps them moving.
    pub(crate) fn start_agreement(&self) {
        if self.size > 1 {
            self.agreement.set(Some(Agreement {
                round: 0,
                send: OpState::New,
                recv: OpState::New,
            }));
        }
    }

    /// Drive the remaining rounds of the agreement check to completion (a no-op when there is
    /// none or it is complete). A rooted collective calls it after its schedule and before
    /// returning `Ok`.
    pub(crate) fn finish_agreement(&self) -> Result<()> {
        let mut ops = Ops::new();
        self.drive_inner(&mut ops, true, true, false)
    }

    /// The two operations of the agreement's current round, in their saved states.
    fn agreement_ops(&self, a: Agreement) -> [Op<'static>; 2] {
        let n = self.size;
        let dist = 1usize << a.round;
        let to = (self.rank + dist) % n;
        let from = (self.rank + n - dist % n) % n;
        let step = STEP_CHECK - a.round;
        let mut send = self.send(to, step, &[]);
        let mut recv = self.recv(from, step, &mut []);
        send.set_state(a.send);
        recv.set_state(a.recv);
        [send, recv]
    }

    /// The agreement after `send`/`recv` reached the given states: the next round once both
    /// are done, `None` after the last.
    fn agreement_after(&self, a: Agreement, send: OpState, recv: OpState) -> Option<Agreement> {
        let done = |s: OpState| matches!(s, OpState::Done { .. });
        if !(done(send) && done(recv)) {
            return Some(Agreement { send, recv, ..a });
        }
        let round = a.round + 1;
        (1usize.checked_shl(round).is_some_and(|d| d < self.size)).then_some(Agreement {
            round,
            send: OpState::New,
            recv: OpState::New,
        })
    }

    /// Withdraw the agreement's operations if a round is posted, and forget it.
    fn cancel_agreement(&self) {
        if let Some(a) = self.agreement.take() {
            let mut ops = self.agreement_ops(a);
            if ops.iter().any(|op| matches!(op.state(), OpState::Posted(_))) {
                self.comm.cancel(&mut ops);
            }
        }
    }

    /// Run a batch to completion.
    pub(crate) fn run<'b>(&'b self, mut ops: Ops<'b>) -> Result<()> {
        self.drive(&mut ops, true)
    }

    /// Drive `ops` until all of them (`all`) or at least one more is done, with the alarm
    /// watch and the agreement round in flight (if any, see [`Ctx::start_agreement`]) posted
    /// beside them.
    ///
    /// The watch is a zero-byte receive from any peer on the alarm slot, carrying a
    /// fingerprint no call has; an alarm (which carries a call's) fails it at once, so a rank
    /// blocked on anything (even a send to a rank that gave up) learns of a mismatch
    /// elsewhere immediately. It stays posted for the whole call; when the context is dropped
    /// it is parked for the next call on the tag (an alarm arriving in between fails that
    /// call, as it would a freshly posted watch), or withdrawn if there is nowhere to park it.
    ///
    /// On failure, peers are alarmed first (for a mismatch) and only then are our operations
    /// cancelled, so that they see the mismatch rather than a broken pair.
    pub(crate) fn drive<'b>(&'b self, ops: &mut Ops<'b>, all: bool) -> Result<()> {
        self.drive_inner(ops, all, false, false)
    }

    /// Copy `src` into `dst` (of the same length) `piece` bytes at a time, posting `ops` first
    /// and moving them on between pieces without waiting, so that their transfers go on while
    /// this rank copies (a transport moves bytes only inside a call: a copy made before the
    /// operations are posted adds its whole time to the call's). `ops` are left posted, to be
    /// driven to the end by the caller.
    pub(crate) fn copy_while<'b>(
        &'b self,
        ops: &mut Ops<'b>,
        dst: &mut [u8],
        src: &[u8],
        piece: usize,
    ) -> Result<()> {
        let piece = piece.max(1);
        // A poll before each piece, none after the last: the caller drives the operations
        // next anyway.
        for (d, s) in dst.chunks_mut(piece).zip(src.chunks(piece)) {
            self.poll(ops)?;
            d.copy_from_slice(s);
        }
        Ok(())
    }

    /// Post `ops` and move them on as far as they can go now, without waiting
    /// ([`Wait::Poll`]), for a caller with work of its own to do before it waits.
    pub(crate) fn poll<'b>(&'b self, ops: &mut Ops<'b>) -> Result<()> {
        self.drive_inner(ops, true, false, true)
    }

    /// [`drive`](Ctx::drive), and with `agree` also until the agreement check is complete;
    /// with `poll`, one [`Wait::Poll`] look only: `Ok` whatever is left to do.
    ///
    /// The batch is laid out as the caller's `n_ops` operations, then the agreement round's
    /// two (while one is in flight), then the watch (last, while watching).
    fn drive_inner<'b>(
        &'b self,
        ops: &mut Ops<'b>,
        all: bool,
        agree: bool,
        poll: bool,
    ) -> Result<()> {
        let n_ops = ops.len();
        let n_done = |ops: &Ops<'b>| ops[..n_ops].iter().filter(|op| op.is_done()).count();
        let done_on_entry = n_done(ops);
        let mut agreement = self.agreement.get();
        let finished = |done: usize, agreement: &Option<Agreement>| {
            done == n_ops && !(agree && agreement.is_some())
        };
        if finished(done_on_entry, &agreement) {
            return self.verify(ops);
        }
        if let Some(a) = agreement {
            ops.extend(self.agreement_ops(a));
        }
        let mut watching = self.watch_on();
        if watching {
            let mut w = watch_op(self.peers, self.tag);
            if let st @ OpState::Posted(_) = self.watch.get() {
                w.set_state(st);
            }
            ops.push(w);
        }
        let mut done = done_on_entry;
        let res = loop {
            // Waiting for all of ours, one call covers them, and still returns at once for an
            // alarm or a step of the agreement (operations after ours); once ours are done,
            // only those are left to wait for.
            let wait = if poll {
                Wait::Poll
            } else if all && done < n_ops {
                Wait::First(n_ops)
            } else {
                Wait::Any
            };
            let r = if self.first.replace(false) {
                self.comm.progress_at(ops, wait, self.deadline, self.start)
            } else {
                self.comm.progress(ops, wait, self.deadline)
            };
            if let Err(e) = r {
                if !watching || matches!(e, gloo_transport::Error::Mismatch { .. }) {
                    break Err(e);
                }
                let last = ops.len() - 1;
                if matches!(ops[last].state(), OpState::New | OpState::Posted(_)) {
                    // A peer that sees a mismatch alarms us before it cancels what it had
                    // under way with us, which breaks the pair; the transport may report the
                    // broken pair first (it drives the batch in order, and may fail before
                    // it even posts the watch). An alarm waiting for the watch explains the
                    // failure, so look for one before reporting the broken pair. A look is
                    // enough: what a peer sent before breaking the pair has arrived by the
                    // time the break is seen (tcp's byte stream; loopback delivers it at the
                    // break).
                    match self.comm.progress(&mut ops[last..], Wait::Any, Instant::now()) {
                        Err(m @ gloo_transport::Error::Mismatch { .. }) => break Err(m),
                        _ if ops[last].is_done() => break Err(self.alarmed(&ops[last])),
                        _ => {}
                    }
                }
                if ops[last].is_done() {
                    // The alarm arrived in the same progress that reported the broken pair
                    // (the peer alarmed us, then cancelled): it explains the failure. Taken
                    // for a failed watch, it was dropped, and the broken pair reported.
                    break Err(self.alarmed(&ops[last]));
                }
                let watch_failed = !matches!(ops[last].state(), OpState::New | OpState::Posted(_));
                let others_failed = ops[..last].iter().any(|op| op.state() == OpState::Cancelled);
                if !watch_failed || others_failed {
                    break Err(e);
                }
                // The watch alone failed, typically because every peer has finished and
                // left: go on without it; the data operations fail by themselves if they
                // still need a lost peer. The agreement's operations may have completed in
                // this same call, so look at them below before waiting again.
                ops.pop();
                watching = false;
                self.watch.set(OpState::Cancelled);
            } else if watching && ops[ops.len() - 1].is_done() {
                break Err(self.alarmed(&ops[ops.len() - 1]));
            }
            if let Some(a) = agreement {
                let (send, recv) = (ops[n_ops].state(), ops[n_ops + 1].state());
                agreement = self.agreement_after(a, send, recv);
                match agreement {
                    // Round `a.round` matched both ways: post the next one with this batch.
                    Some(next) if next.round != a.round => {
                        let [s, r] = self.agreement_ops(next);
                        ops[n_ops] = s;
                        ops[n_ops + 1] = r;
                    }
                    Some(_) => {}
                    None => {
                        ops.drain(n_ops..n_ops + 2);
                    }
                }
            }
            done = n_done(ops);
            if poll || finished(done, &agreement) || (!all && !agree && done > done_on_entry) {
                break Ok(());
            }
        };
        if watching {
            // The watch was pushed last.
            let w = ops.pop().expect("the watch was pushed");
            self.watch.set(w.state());
        }
        match res {
            Ok(()) => {
                if let Some(a) = agreement {
                    // Keep the round in flight for the next batch (its operations stay
                    // posted: the transport knows them by id).
                    let (send, recv) = (ops[n_ops].state(), ops[n_ops + 1].state());
                    self.agreement.set(Some(Agreement { send, recv, ..a }));
                    ops.truncate(n_ops);
                } else {
                    self.agreement.set(None);
                }
                self.verify(ops)
            }
            Err(e) => {
                // The agreement's operations are withdrawn with ours below.
                self.agreement.set(None);
                let err = self.fail(e);
                if matches!(err, Error::Mismatch { .. }) {
                    self.finish_sends(ops);
                }
                self.comm.cancel(ops);
                self.cancel_watch();
                Err(err)
            }
        }
    }

    /// The mismatch that the watch `w`, found complete, reports: only an alarm can reach the
    /// watch, and alarms never carry our fingerprint.
    fn alarmed(&self, w: &Op<'_>) -> gloo_transport::Error {
        gloo_transport::Error::Mismatch {
            peer: w.completed().map_or(Rank(0), |(p, _)| p),
            slot: self.slot(STEP_ALARM),
            ours: Some(self.fp),
            theirs: None,
        }
    }

    /// After a mismatch, give the sends already under way a short grace to finish before the
    /// rest is cancelled: cancelling a send part-way closes the connection, which the peer
    /// would report as a lost rank instead of the mismatch (the peer's transport consumes a
    /// mismatched message, so these sends do complete).
    fn finish_sends(&self, ops: &mut Ops<'_>) {
        let under_way = |op: &Op<'_>| op.is_send() && matches!(op.state(), OpState::Posted(_));
        ops.sort_by_key(|op| !under_way(op));
        let k = ops.iter().take_while(|op| under_way(op)).count();
        if k > 0 {
            let deadline = self.deadline.min(Instant::now() + ALARM_GRACE);
            if let Err(e) = self.comm.progress(&mut ops[..k], Wait::All, deadline) {
                tracing::debug!(error = %e, "sends under way at a mismatch did not finish");
            }
        }
    }

    /// Run without the alarm watch: for calls whose messages carry per-pair fingerprints
    /// (alltoallv), which the watch's fingerprint would not match.
    pub(crate) fn without_watch(&self) {
        self.park_watch();
        self.watch.set(OpState::Cancelled);
    }

    /// Whether this call keeps an alarm watch posted.
    fn watch_on(&self) -> bool {
        !self.peers.is_empty()
            && self.collective != Collective::SendRecv
            && matches!(self.watch.get(), OpState::New | OpState::Posted(_))
    }

    /// Withdraw the alarm watch, if posted.
    fn cancel_watch(&self) {
        if let OpState::Posted(id) = self.watch.get() {
            cancel_posted_watch(self.comm, self.peers, self.tag, id);
        }
        self.watch.set(OpState::Cancelled);
    }

    /// Leave a posted alarm watch for the next call on this tag (withdrawing it when there
    /// is nowhere to park it).
    fn park_watch(&self) {
        match (self.watch.get(), self.parked) {
            (OpState::Posted(id), Some(slot)) => {
                self.watch.set(OpState::Cancelled);
                // Two calls on one tag at once is a caller's error, but must not leak a
                // posted receive: the watch it displaces is withdrawn.
                if let Some(old) = slot.replace(Some(id)) {
                    cancel_posted_watch(self.comm, self.peers, self.tag, old);
                }
            }
            _ => self.cancel_watch(),
        }
    }

    /// Send `out` to `to` and receive `inb` from `from`, both on `step`.
    pub(crate) fn sendrecv(
        &self,
        to: usize,
        out: &[u8],
        from: usize,
        inb: &mut [u8],
        step: u32,
    ) -> Result<()> {
        let mut ops = Ops::new();
        ops.push(self.send(to, step, out));
        ops.push(self.recv(from, step, inb));
        self.run(ops)
    }

    /// Every completed receive must have filled its buffer exactly: all our receives are
    /// sized from counts every rank agrees on, so a short message means the peer does not.
    pub(crate) fn verify(&self, ops: &[Op<'_>]) -> Result<()> {
        for op in ops {
            if !op.is_send()
                && let Some((peer, len)) = op.completed()
                && len != op.buf_len()
            {
                return Err(Error::LengthMismatch {
                    collective: self.collective,
                    peer,
                    slot: op.slot(),
                    expected: op.buf_len(),
                    received: len,
                });
            }
        }
        Ok(())
    }

    /// Turn a transport error into ours; on a mismatch, first tell every peer (so that ranks
    /// waiting on this one see the mismatch at once rather than at their deadline).
    pub(crate) fn fail(&self, e: gloo_transport::Error) -> Error {
        match e {
            gloo_transport::Error::Mismatch { peer, slot, theirs: Some(theirs), .. }
                if self.stale(&theirs) =>
            {
                // The transport's rule 3 read a leftover of an old call on another tag: this
                // call simply timed out.
                self.timed_out(gloo_transport::Error::Timeout {
                    rank: self.comm.rank(),
                    waited: Duration::ZERO,
                    pending: vec![gloo_transport::Pending::Recv { from: vec![peer], slot }],
                })
            }
            source @ gloo_transport::Error::Timeout { .. } => self.timed_out(source),
            gloo_transport::Error::Mismatch { peer, slot, ours, theirs } => {
                tracing::debug!(collective = %self.collective, %peer, %slot, "fingerprint mismatch");
                self.alarm();
                Error::Mismatch {
                    collective: self.collective,
                    peer,
                    slot,
                    // A failed watch reports its own call-less fingerprint: ours is the call's.
                    ours: ours.filter(|o| *o != WATCH_FP).unwrap_or(self.fp),
                    theirs,
                }
            }
            source => Error::Transport { collective: self.collective, source },
        }
    }

    /// Whether `theirs`, a fingerprint the transport turned this call's timeout into a
    /// mismatch with (its rule 3: a message of the same call number on another tag), is a
    /// leftover of some other call rather than this call run on another tag: it differs in
    /// more than the tag. Call numbers count per tag, so an old call on another tag that
    /// failed (and left messages unread) can share this call's number by chance; the error
    /// belongs to this call, which timed out.
    fn stale(&self, theirs: &Fingerprint) -> bool {
        let (mut ours, mut other) = (CallInfo::decode(&self.fp), CallInfo::decode(theirs));
        if ours.tag == other.tag {
            return false;
        }
        other.tag = ours.tag;
        (ours.relayed, other.relayed) = (false, false);
        ours != other
    }

    /// This call's timeout, with the time the whole call waited (the transport counts from
    /// the start of its last `progress`, which is one round of the call). A collective that
    /// times out also revokes the group: it aborts the communicator, so that every rank's
    /// current or next call fails with `Aborted` naming this rank, rather than some ranks
    /// finishing the call and going on with a rank that gave up (their call counters would
    /// no longer agree). Point-to-point calls only report it: a receive that timed out is
    /// withdrawn and the stream stays usable.
    fn timed_out(&self, mut source: gloo_transport::Error) -> Error {
        if let gloo_transport::Error::Timeout { waited, .. } = &mut source {
            *waited = self.start.elapsed();
        }
        if self.collective != Collective::SendRecv && self.size > 1 {
            let call = CallInfo::decode(&self.fp);
            self.comm.abort(&format!(
                "rank {} gave up on {} (tag {}, call {}): {source}; the group is revoked",
                self.comm.rank().0,
                self.collective,
                self.tag,
                call.epoch
            ));
        }
        Error::Transport { collective: self.collective, source }
    }

    /// Send every peer a zero-byte message on the alarm slot carrying our own fingerprint
    /// marked as relayed (so it differs from every rank's fingerprint, ours included, and a
    /// rank of the other persuasion reads from it exactly what differs). Best effort, bounded
    /// by a short grace period.
    fn alarm(&self) {
        if self.collective == Collective::SendRecv || self.size < 2 {
            return;
        }
        let mut info = CallInfo::decode(&self.fp);
        info.relayed = true;
        let fp = info.encode();
        let mut ops: Vec<Op<'_>> = self
            .peers
            .iter()
            .map(|&p| Op::send(p, self.slot(STEP_ALARM), &[]).with_fingerprint(fp))
            .collect();
        let deadline = self.deadline.min(Instant::now() + ALARM_GRACE);
        if let Err(e) = self.comm.run(&mut ops, deadline) {
            tracing::debug!(error = %e, "could not relay a mismatch to every peer");
        }
    }
}

mod buffers;
#[cfg(test)]
mod tests;
mod watches;

pub(crate) use buffers::*;
pub(crate) use watches::*;
