//! The in-process transport: threads as ranks.
//!
//! [`group`] builds `size` connected [`LoopbackComm`]s that share one set of mailboxes, one
//! per rank. It is always built (no feature, no I/O) and is what the collectives' tests run
//! on, so it implements every rule of the [`Communicator`] contract the way a network
//! transport must: FIFO matching per `(peer, slot)`, receives from any of a set of ranks,
//! deadlines that name what was pending, cancellation, abort, and the three fingerprint rules
//! documented on [`Fingerprint`].
//!
//! # How a message moves
//!
//! A send copies the caller's bytes into an owned `Vec<u8>` and drops it into the receiver's
//! mailbox, under the receiver's lock. A receive is registered in its own rank's mailbox by
//! id, and the mailbox pairs messages with receives in arrival and posting order. The bytes
//! are copied into the caller's buffer only inside a `progress` call that was handed the
//! receive, so no pointer to caller memory is ever kept between calls.
//!
//! # Havoc
//!
//! With [`LoopbackConfig::havoc`] a seeded generator (one stream per rank, so runs repeat for a
//! given seed up to thread scheduling) shakes out matching bugs:
//! - a delivered message becomes visible to its receiver only after a random number of the
//!   receiver's progress rounds, which reorders messages *across* slots of a pair (never within
//!   one `(peer, slot)` stream);
//! - a matched receive copies its message in random-sized chunks over several rounds;
//! - about half of the sends are "rendezvous" sends that complete only once the receiver has
//!   consumed the message (as a network transport does for large messages), so an algorithm
//!   that needs sends to complete before the matching receive is posted times out here too.
//!
//! Havoc reorders only what a network could: when a rank breaks a pair (it cancels an
//! operation part-way through its message), what it sent whole before becomes visible to the
//! peer at once and in order, as the bytes written before a tcp connection closes still
//! arrive, so a peer never sees the break before an earlier message (an alarm, say).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Instant;

use crate::sync::{Arc, AtomicU64, Condvar, Mutex, Ordering, lock, wait_until, yield_now};
use crate::{
    Communicator, Error, Fingerprint, Op, OpKind, OpState, Pending, Rank, Result, Slot, Wait,
};

/// The keys of a mailbox's streams from `peer` (streams are ordered by sender, then slot).
fn from_peer(peer: Rank) -> std::ops::RangeInclusive<(Rank, Slot)> {
    (peer, Slot(0))..=(peer, Slot(u64::MAX))
}

/// The most progress rounds havoc holds a message back before the receiver sees it.
const MAX_DELAY_ROUNDS: u64 = 4;

/// How many pending operations a [`Error::Timeout`] lists.
const MAX_PENDING_LISTED: usize = 16;

/// How a loopback group behaves.
///
/// ```
/// use gloo_transport::loopback::{LoopbackConfig, group};
/// let plain = group(2, LoopbackConfig::default());
/// let shaken = group(2, LoopbackConfig::havoc(42));
/// assert_eq!(plain.len() + shaken.len(), 4);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopbackConfig {
    /// The seed of the havoc generator, or `None` for plain, immediate delivery.
    pub havoc: Option<u64>,
    /// Sends longer than this many bytes complete only once the receiver has consumed the
    /// message, as large sends do on a network transport (`None`, the default: every send
    /// completes at once unless havoc picks it). `Some(0)` makes every non-empty send wait,
    /// which turns an algorithm that relies on sends being buffered into a deterministic
    /// timeout.
    pub eager_limit: Option<usize>,
}

impl LoopbackConfig {
    /// A configuration with havoc seeded by `seed` (see the [module docs](self)).
    pub fn havoc(seed: u64) -> LoopbackConfig {
        LoopbackConfig { havoc: Some(seed), eager_limit: None }
    }

    /// This configuration with sends longer than `bytes` waiting for their receiver.
    pub fn with_eager_limit(self, bytes: usize) -> LoopbackConfig {
        LoopbackConfig { eager_limit: Some(bytes), ..self }
    }
}

/// Build a connected group of `size` in-process communicators; element `i` is rank `i`.
///
/// Hand each one to its own thread (for example with `gloo_testing::run_ranks`). Dropping a
/// communicator tells its peers: their operations that can only be satisfied by it fail with
/// [`Error::PeerLost`] once the messages it already sent are consumed.
pub fn group(size: u32, cfg: LoopbackConfig) -> Vec<LoopbackComm> {
    let hub = Arc::new(Hub {
        nodes: (0..size)
            .map(|r| Node {
                inbox: Mutex::new(Inbox::new(
                    Rank(r),
                    size,
                    cfg.havoc.map(|seed| SplitMix::new(seed, r)),
                )),
                cv: Condvar::new(),
            })
            .collect(),
        next_id: AtomicU64::new(1),
        havoc: cfg.havoc.is_some(),
        eager_limit: cfg.eager_limit,
    });
    (0..size).map(|r| LoopbackComm { rank: Rank(r), size, hub: Arc::clone(&hub) }).collect()
}

/// One rank of a loopback group: a [`Communicator`] whose peers are other threads of this
/// process. `Send + Sync`; several threads may drive it at once with distinct slots.
pub struct LoopbackComm {
    rank: Rank,
    size: u32,
    hub: Arc<Hub>,
}

impl fmt::Debug for LoopbackComm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackComm")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("havoc", &self.hub.havoc)
            .finish()
    }
}

/// What the ranks of one group share.
struct Hub {
    nodes: Vec<Node>,
    /// Ids for posted operations, unique in the group so that an op handed to the wrong
    /// communicator is recognised as foreign rather than confused with another op.
    next_id: AtomicU64,
    havoc: bool,
    eager_limit: Option<usize>,
}

/// One rank's mailbox and the condition variable its waiting threads sleep on.
struct Node {
    inbox: Mutex<Inbox>,
    cv: Condvar,
}

/// A small, seeded generator (SplitMix64): enough randomness for havoc, no dependency.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64, rank: u32) -> SplitMix {
        let mut g = SplitMix(seed ^ (u64::from(rank) + 1).wrapping_mul(0xA076_1D64_78BD_642F));
        g.next();
        g
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// A message in a receiver's mailbox. It owns its bytes: the sender's buffer was copied when
/// the send was posted.
struct Msg {
    from: Rank,
    slot: Slot,
    data: Vec<u8>,
    fp: Option<Fingerprint>,
    /// Arrival order in this mailbox, to pick the oldest message for a receive-from-any.
    seq: u64,
    /// The receiver's round from which the message is visible (havoc only).
    visible_at: u64,
    /// For a rendezvous send, the sender's id of it, acknowledged once the message is consumed.
    ack: Option<u64>,
}

enum RecvState {
    /// Posted, no message matched yet.
    Waiting,
    /// A message is matched; `pos` bytes of it are already in the caller's buffer.
    Matched { msg: Msg, pos: usize },
    /// The receive failed; the error is reported by the next call that drives it.
    Failed(Error),
}

struct RecvEntry {
    from: Vec<Rank>,
    slot: Slot,
    capacity: usize,
    fp: Option<Fingerprint>,
    state: RecvState,
}

enum SendState {
    InFlight,
    Acked(usize),
}

struct SendEntry {
    to: Rank,
    state: SendState,
}

/// The visible messages of one `(peer, slot)` stream, oldest first.
#[derive(Default)]
struct Stream {
    queue: VecDeque<Msg>,
    /// The latest `visible_at` given to a message of this stream, so that havoc never lets a
    /// later message overtake an earlier one.
    last_visible_at: u64,
}

/// One rank's mailbox.
struct Inbox {
    me: Rank,
    poison: Option<Error>,
    /// Progress rounds run on this rank so far (havoc's clock).
    rounds: u64,
    seq: u64,
    /// Delivered messages not yet visible (havoc only), in arrival order. Invariant: every
    /// one has `visible_at > rounds`.
    limbo: Vec<Msg>,
    /// Visible, unmatched messages. Invariant: no `Waiting` receive accepts the head of any
    /// of these streams (it would have been matched).
    streams: BTreeMap<(Rank, Slot), Stream>,
    recvs: HashMap<u64, RecvEntry>,
    /// Ids of `Waiting` receives per slot, in posting order.
    waiting: BTreeMap<Slot, Vec<u64>>,
    /// This rank's rendezvous sends not yet acknowledged by their receiver.
    sends: HashMap<u64, SendEntry>,
    /// Per peer: why operations with it can no longer complete (it dropped its communicator,
    /// or the pair was broken by a cancel mid-message).
    unusable: Vec<Option<Error>>,
    /// Acknowledgements of consumed rendezvous messages, to hand to their senders once this
    /// mailbox's lock is released: `(sender, send id, length)`.
    acks: Vec<(Rank, u64, usize)>,
    rng: Option<SplitMix>,
}

impl Inbox {
    fn new(me: Rank, size: u32, rng: Option<SplitMix>) -> Inbox {
        Inbox {
            me,
            poison: None,
            rounds: 0,
            seq: 0,
            limbo: Vec::new(),
            streams: BTreeMap::new(),
            recvs: HashMap::new(),
            waiting: BTreeMap::new(),
            sends: HashMap::new(),
            unusable: vec![None; size as usize],
            acks: Vec::new(),
            rng,
        }
    }

    /// Take in a message from a sender (who holds this mailbox's lock).
    fn deliver(&mut self, mut msg: Msg) {
        msg.seq = self.seq;
        self.seq += 1;
        let rounds = self.rounds;
        let Some(rng) = self.rng.as_mut() else {
            self.make_visible(msg);
            return;
        };
        let delay = rng.below(MAX_DELAY_ROUNDS + 1);
        let stream = self.streams.entry((msg.from, msg.slot)).or_default();
        let at = (rounds + delay).max(stream.last_visible_at);
        stream.last_visible_at = at;
        msg.visible_at = at;
        if at <= rounds {
            self.make_visible(msg);
        } else {
            self.limbo.push(msg);
        }
    }

    /// One progress round: advance havoc's clock and let through what is due. Returns whether
    /// any message became visible (so other waiting threads should look).
    fn round(&mut self) -> bool {
        self.rounds += 1;
        if self.limbo.is_empty() {
            return false;
        }
        let rounds = self.rounds;
        let (due, later): (Vec<Msg>, Vec<Msg>) =
            std::mem::take(&mut self.limbo).into_iter().partition(|m| m.visible_at <= rounds);
        self.limbo = later;
        let any = !due.is_empty();
        // `due` is in arrival order, and visibility is monotone within a stream, so each
        // stream's messages become visible in their order.
        for m in due {
            self.make_visible(m);
        }
        any
    }

    /// A message the receiver can now see: apply fingerprint rule 2 to the waiting receives,
    /// then match it with the oldest waiting receive that accepts it, or queue it.
    fn make_visible(&mut self, msg: Msg) {
        if let Some(theirs) = msg.fp {
            let mut failed = Vec::new();
            for (&id, r) in &mut self.recvs {
                if let (RecvState::Waiting, Some(ours)) = (&r.state, r.fp)
                    && ours != theirs
                    && ours.epoch() == theirs.epoch()
                    && r.slot != msg.slot
                    && r.slot.tag() == msg.slot.tag()
                    && r.from.contains(&msg.from)
                {
                    r.state = RecvState::Failed(Error::Mismatch {
                        peer: msg.from,
                        slot: r.slot,
                        ours: Some(ours),
                        theirs: Some(theirs),
                    });
                    failed.push((r.slot, id));
                }
            }
            for (slot, id) in failed {
                self.unwait(slot, id);
            }
        }
        let key = (msg.from, msg.slot);
        if let Some(id) = self.first_waiting(msg.from, msg.slot) {
            self.unwait(msg.slot, id);
            self.assign(id, msg);
            self.tidy(key);
        } else {
            self.streams.entry(key).or_default().queue.push_back(msg);
        }
    }

    /// The oldest waiting receive on `slot` that accepts a message from `from`.
    fn first_waiting(&self, from: Rank, slot: Slot) -> Option<u64> {
        let ids = self.waiting.get(&slot)?;
        ids.iter().copied().find(|id| self.recvs.get(id).is_some_and(|r| r.from.contains(&from)))
    }

    fn unwait(&mut self, slot: Slot, id: u64) {
        if let Some(ids) = self.waiting.get_mut(&slot) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.waiting.remove(&slot);
            }
        }
    }

    /// Forget an empty stream once havoc holds nothing more back for it.
    fn tidy(&mut self, key: (Rank, Slot)) {
        if let Some(s) = self.streams.get(&key)
            && s.queue.is_empty()
            && s.last_visible_at <= self.rounds
        {
            self.streams.remove(&key);
        }
    }

    /// Pair receive `id` with `msg`, applying fingerprint rule 1 and the length check.
    fn assign(&mut self, id: u64, msg: Msg) {
        let Some(r) = self.recvs.get_mut(&id) else {
            // The receive is gone (cannot happen: only waiting receives are assigned); keep
            // the message rather than lose it.
            self.streams.entry((msg.from, msg.slot)).or_default().queue.push_front(msg);
            return;
        };
        if let Some(ours) = r.fp
            && msg.fp != Some(ours)
        {
            r.state = RecvState::Failed(Error::Mismatch {
                peer: msg.from,
                slot: msg.slot,
                ours: Some(ours),
                theirs: msg.fp,
            });
            self.consumed(&msg);
        } else if msg.data.len() > r.capacity {
            r.state = RecvState::Failed(Error::MessageTooLong {
                peer: msg.from,
                slot: msg.slot,
                len: msg.data.len() as u64,
                capacity: r.capacity as u64,
            });
            self.consumed(&msg);
        } else {
            r.state = RecvState::Matched { msg, pos: 0 };
        }
    }

    /// A message was used up (delivered or failed a receive): acknowledge a rendezvous send.
    fn consumed(&mut self, msg: &Msg) {
        if let Some(id) = msg.ack {
            self.acks.push((msg.from, id, msg.data.len()));
        }
    }

    /// Register a receive: match it with the oldest visible message it accepts, else check
    /// fingerprint rule 2 against what is queued and wait.
    fn post_recv(&mut self, id: u64, entry: RecvEntry) {
        let slot = entry.slot;
        let mut best: Option<(u64, Rank)> = None;
        for &p in &entry.from {
            if let Some(m) = self.streams.get(&(p, slot)).and_then(|s| s.queue.front())
                && best.is_none_or(|(seq, _)| m.seq < seq)
            {
                best = Some((m.seq, p));
            }
        }
        let fp = entry.fp;
        let from = entry.from.clone();
        self.recvs.insert(id, entry);
        if let Some((_, p)) = best {
            let msg = self
                .streams
                .get_mut(&(p, slot))
                .and_then(|s| s.queue.pop_front())
                .expect("the stream head was seen just above under the same lock");
            self.tidy((p, slot));
            self.assign(id, msg);
            return;
        }
        if let Some(ours) = fp {
            for &p in &from {
                let range = (p, Slot::new(slot.tag(), 0))..=(p, Slot::new(slot.tag(), u32::MAX));
                for (&(_, s), stream) in self.streams.range(range) {
                    if s == slot {
                        continue;
                    }
                    if let Some(theirs) = stream
                        .queue
                        .iter()
                        .filter_map(|m| m.fp)
                        .find(|t| *t != ours && t.epoch() == ours.epoch())
                    {
                        if let Some(r) = self.recvs.get_mut(&id) {
                            r.state = RecvState::Failed(Error::Mismatch {
                                peer: p,
                                slot,
                                ours: Some(ours),
                                theirs: Some(theirs),
                            });
                        }
                        return;
                    }
                }
            }
        }
        self.waiting.entry(slot).or_default().push(id);
    }

    /// Put back a matched message no byte of which was copied (its receive was cancelled):
    /// to the next waiting receive that accepts it, else to the front of its stream.
    fn requeue(&mut self, msg: Msg) {
        if let Some(id) = self.first_waiting(msg.from, msg.slot) {
            self.unwait(msg.slot, id);
            self.assign(id, msg);
        } else {
            self.streams.entry((msg.from, msg.slot)).or_default().queue.push_front(msg);
        }
    }

    /// `peer` broke the pair (it cancelled an operation with us part-way): deliver what it
    /// sent whole before that, and drop what it can no longer finish, as over tcp, where the
    /// bytes written before the connection closed still arrive, in order, and a payload still
    /// waiting for clear-to-send never does. So the eager messages from `peer` that havoc holds
    /// back become visible now, in their order (a peer's alarm sent before its cancel must
    /// reach us before the broken pair does), and its rendezvous messages no receive has
    /// matched yet are dropped.
    fn sever(&mut self, peer: Rank) {
        let (held, others): (Vec<Msg>, Vec<Msg>) =
            std::mem::take(&mut self.limbo).into_iter().partition(|m| m.from == peer);
        self.limbo = others;
        let keys: Vec<_> = self.streams.range(from_peer(peer)).map(|(k, _)| *k).collect();
        for k in &keys {
            if let Some(s) = self.streams.get_mut(k) {
                s.queue.retain(|m| m.ack.is_none());
            }
        }
        for m in held.into_iter().filter(|m| m.ack.is_none()) {
            self.make_visible(m);
        }
        for k in keys {
            self.tidy(k);
        }
    }

    /// Drop every message from `peer` (the pair was broken).
    fn purge(&mut self, peer: Rank) {
        self.limbo.retain(|m| m.from != peer);
        self.streams.retain(|&(from, _), _| from != peer);
    }

    /// Whether a message from one of `from` on `slot` is still held back by havoc.
    fn in_limbo(&self, from: &[Rank], slot: Slot) -> bool {
        self.limbo.iter().any(|m| m.slot == slot && from.contains(&m.from))
    }

    /// Fingerprint rule 3, at the deadline: an unmatched message from a peer of a waiting
    /// receive that carries the receive's epoch with another description.
    fn epoch_conflict(&self, entry: &RecvEntry) -> Option<Error> {
        let ours = entry.fp?;
        for &p in &entry.from {
            let queued = self.streams.range(from_peer(p)).flat_map(|(_, s)| s.queue.iter());
            let held = self.limbo.iter().filter(|m| m.from == p);
            if let Some(theirs) = queued
                .chain(held)
                .filter_map(|m| m.fp)
                .find(|t| *t != ours && t.epoch() == ours.epoch())
            {
                return Some(Error::Mismatch {
                    peer: p,
                    slot: entry.slot,
                    ours: Some(ours),
                    theirs: Some(theirs),
                });
            }
        }
        None
    }
}

/// What driving one receive produced.
enum Drive {
    Idle,
    Partial,
}

impl LoopbackComm {
    /// Die the way a process does when it is killed: every other rank's communicator is
    /// poisoned with [`Error::PeerLost`] naming this rank, so their pending and future
    /// operations fail at once whichever peer they wait on, as over a network transport
    /// (whose driver poisons the group when a connection breaks without a goodbye).
    ///
    /// Dropping a communicator instead is a goodbye: peers fail only the operations that
    /// need this rank, once they have consumed what it sent.
    pub fn crash(self) {
        let err = Error::PeerLost {
            peer: self.rank,
            reason: "its loopback communicator crashed".to_string(),
        };
        // Every mailbox is locked before any is poisoned, so no survivor can react to the
        // loss (cancelling its half-done exchange with another survivor, say) before every
        // survivor has it. Elsewhere one inbox lock is held at a time, so taking them all in
        // rank order cannot deadlock.
        let mut guards: Vec<_> = self.hub.nodes.iter().map(|n| lock(&n.inbox)).collect();
        for g in guards.iter_mut().filter(|g| g.me != self.rank) {
            if g.poison.is_none() {
                g.poison = Some(err.clone());
            }
        }
        drop(guards);
        for node in &self.hub.nodes {
            node.cv.notify_all();
        }
    }

    fn node(&self, r: Rank) -> &Node {
        &self.hub.nodes[r.index()]
    }

    fn next_id(&self) -> u64 {
        self.hub.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn check_peer(&self, p: Rank, role: &str) -> Result<()> {
        if p.0 >= self.size {
            return Err(Error::invalid(format!(
                "{role} rank {p} is out of range for a group of {} (on rank {})",
                self.size, self.rank
            )));
        }
        if p == self.rank {
            return Err(Error::invalid(format!("{role} rank {p} is this communicator's own rank")));
        }
        Ok(())
    }

    fn validate_new(&self, op: &Op<'_>) -> Result<()> {
        match op.kind() {
            OpKind::Send { to, .. } => self.check_peer(*to, "destination"),
            OpKind::Recv { from, .. } => self.check_peer(*from, "source"),
            OpKind::RecvAny { from, .. } => {
                if from.is_empty() {
                    return Err(Error::invalid("recv_any with an empty set of sources"));
                }
                from.iter().try_for_each(|p| self.check_peer(*p, "source"))
            }
        }
    }

    /// Hand acknowledgements of consumed rendezvous messages to their senders. Called with
    /// no lock held: it takes each sender's lock in turn.
    fn flush_acks(&self) {
        let acks = std::mem::take(&mut lock(&self.node(self.rank).inbox).acks);
        for (sender, id, len) in acks {
            let node = self.node(sender);
            let mut g = lock(&node.inbox);
            if let Some(e) = g.sends.get_mut(&id) {
                e.state = SendState::Acked(len);
            }
            drop(g);
            node.cv.notify_all();
        }
    }

    /// Post a send: copy the bytes and deliver them. An eager send is done at once; a
    /// rendezvous send (havoc) waits for the receiver's acknowledgement.
    fn post_send(&self, op: &mut Op<'_>) -> Result<()> {
        let (to, slot, data) = match op.kind() {
            OpKind::Send { to, slot, buf } => (*to, *slot, buf.to_vec()),
            _ => return Ok(()),
        };
        let len = data.len();
        let ack = {
            let mut g = lock(&self.node(self.rank).inbox);
            if let Some(e) = g.unusable[to.index()].clone() {
                op.set_state(OpState::Cancelled);
                return Err(e);
            }
            let rendezvous = self.hub.eager_limit.is_some_and(|limit| len > limit)
                || g.rng.as_mut().is_some_and(|r| r.below(2) == 0);
            rendezvous.then(|| {
                let id = self.next_id();
                g.sends.insert(id, SendEntry { to, state: SendState::InFlight });
                id
            })
        };
        let msg =
            Msg { from: self.rank, slot, data, fp: op.fingerprint(), seq: 0, visible_at: 0, ack };
        let node = self.node(to);
        lock(&node.inbox).deliver(msg);
        node.cv.notify_all();
        op.set_state(match ack {
            Some(id) => OpState::Posted(id),
            None => OpState::Done { peer: to, len },
        });
        Ok(())
    }

    /// Drive one posted receive: report its failure, or copy (part of) its message.
    fn drive_recv(&self, g: &mut Inbox, op: &mut Op<'_>, id: u64) -> Result<Drive> {
        let Some(entry) = g.recvs.get_mut(&id) else {
            return Err(Error::invalid(format!(
                "receive {id} is not posted on rank {}",
                self.rank
            )));
        };
        match &mut entry.state {
            RecvState::Failed(e) => {
                let e = e.clone();
                g.recvs.remove(&id);
                op.set_state(OpState::Cancelled);
                Err(e)
            }
            RecvState::Waiting => {
                // A receive that only unusable peers could satisfy fails, once havoc holds
                // back nothing more from them.
                let Some(first) = entry.from.first().copied() else {
                    return Ok(Drive::Idle);
                };
                if !entry.from.iter().all(|p| g.unusable[p.index()].is_some()) {
                    return Ok(Drive::Idle);
                }
                let (from, slot) = (entry.from.clone(), entry.slot);
                if g.in_limbo(&from, slot) {
                    return Ok(Drive::Idle);
                }
                let Some(lost) = g.unusable[first.index()].clone() else {
                    return Ok(Drive::Idle);
                };
                // A fingerprint conflict explains the failure better than the lost peer.
                let err = g.recvs.get(&id).and_then(|e| g.epoch_conflict(e)).unwrap_or(lost);
                g.recvs.remove(&id);
                g.unwait(slot, id);
                op.set_state(OpState::Cancelled);
                Err(err)
            }
            RecvState::Matched { msg, pos } => {
                let buf = match op.kind_mut() {
                    OpKind::Recv { buf, .. } | OpKind::RecvAny { buf, .. } => buf,
                    OpKind::Send { .. } => {
                        return Err(Error::invalid(format!(
                            "op {id} is a send posted as a receive"
                        )));
                    }
                };
                let len = msg.data.len();
                if buf.len() < len {
                    // The op was tampered with (another buffer under a posted id).
                    let err = Error::MessageTooLong {
                        peer: msg.from,
                        slot: msg.slot,
                        len: len as u64,
                        capacity: buf.len() as u64,
                    };
                    if let Some(RecvEntry { state: RecvState::Matched { msg, .. }, .. }) =
                        g.recvs.remove(&id)
                    {
                        g.consumed(&msg);
                    }
                    op.set_state(OpState::Cancelled);
                    return Err(err);
                }
                let remaining = len - *pos;
                let n = match g.rng.as_mut() {
                    Some(rng) if remaining > 1 => 1 + rng.below(remaining as u64) as usize,
                    _ => remaining,
                };
                buf[*pos..*pos + n].copy_from_slice(&msg.data[*pos..*pos + n]);
                *pos += n;
                if *pos < len {
                    return Ok(Drive::Partial);
                }
                if let Some(RecvEntry { state: RecvState::Matched { msg, .. }, .. }) =
                    g.recvs.remove(&id)
                {
                    g.consumed(&msg);
                    op.set_state(OpState::Done { peer: msg.from, len });
                }
                Ok(Drive::Idle)
            }
        }
    }

    /// Drive one posted rendezvous send.
    fn drive_send(&self, g: &mut Inbox, op: &mut Op<'_>, id: u64) -> Result<()> {
        let Some(entry) = g.sends.get(&id) else {
            return Err(Error::invalid(format!("send {id} is not posted on rank {}", self.rank)));
        };
        match entry.state {
            SendState::Acked(len) => {
                op.set_state(OpState::Done { peer: entry.to, len });
                g.sends.remove(&id);
            }
            SendState::InFlight => {
                if let Some(e) = g.unusable[entry.to.index()].clone() {
                    g.sends.remove(&id);
                    op.set_state(OpState::Cancelled);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn deadline_error(&self, g: &Inbox, ops: &mut [Op<'_>], start: Instant) -> Error {
        for op in ops.iter_mut() {
            if let OpState::Posted(id) = op.state()
                && !op.is_send()
                && let Some(entry) = g.recvs.get(&id)
                && matches!(entry.state, RecvState::Waiting)
                && let Some(e) = g.epoch_conflict(entry)
            {
                // The caller's `run` cancels the op; a bare `progress` caller may retry.
                return e;
            }
        }
        let pending = ops
            .iter()
            .filter(|op| matches!(op.state(), OpState::New | OpState::Posted(_)))
            .take(MAX_PENDING_LISTED)
            .map(|op| match op.kind() {
                OpKind::Send { to, slot, .. } => Pending::Send { to: *to, slot: *slot },
                OpKind::Recv { from, slot, .. } => Pending::Recv { from: vec![*from], slot: *slot },
                OpKind::RecvAny { from, slot, .. } => {
                    Pending::Recv { from: from.to_vec(), slot: *slot }
                }
            })
            .collect();
        Error::Timeout { rank: self.rank, waited: start.elapsed(), pending }
    }

    fn progress_inner(
        &self,
        ops: &mut [Op<'_>],
        wait: Wait,
        deadline: Instant,
        start: Instant,
    ) -> Result<()> {
        let me = self.node(self.rank);
        {
            let g = lock(&me.inbox);
            if let Some(e) = &g.poison {
                return Err(e.clone());
            }
            for op in ops.iter() {
                match op.state() {
                    OpState::Cancelled => {
                        return Err(Error::invalid(format!("{op:?} was cancelled")));
                    }
                    OpState::Posted(id) => {
                        let known = if op.is_send() {
                            g.sends.contains_key(&id)
                        } else {
                            g.recvs.get(&id).is_some_and(|r| r.slot == op.slot())
                        };
                        if !known {
                            return Err(Error::invalid(format!(
                                "{op:?} is not posted on loopback rank {}",
                                self.rank
                            )));
                        }
                    }
                    OpState::New | OpState::Done { .. } => {}
                }
            }
        }
        for op in ops.iter() {
            if op.state() == OpState::New {
                self.validate_new(op)?;
            }
        }
        let incomplete: Vec<bool> = ops.iter().map(|op| !op.is_done()).collect();
        if wait == Wait::Any && !incomplete.contains(&true) {
            return Ok(());
        }
        for op in ops.iter_mut() {
            if op.state() == OpState::New && op.is_send() {
                self.post_send(op)?;
            }
        }
        let mut g = lock(&me.inbox);
        for op in ops.iter_mut() {
            if op.state() != OpState::New {
                continue;
            }
            let id = self.next_id();
            let entry = match op.kind() {
                OpKind::Recv { from, slot, buf } => RecvEntry {
                    from: vec![*from],
                    slot: *slot,
                    capacity: buf.len(),
                    fp: op.fingerprint(),
                    state: RecvState::Waiting,
                },
                OpKind::RecvAny { from, slot, buf } => RecvEntry {
                    from: from.to_vec(),
                    slot: *slot,
                    capacity: buf.len(),
                    fp: op.fingerprint(),
                    state: RecvState::Waiting,
                },
                OpKind::Send { .. } => continue,
            };
            g.post_recv(id, entry);
            op.set_state(OpState::Posted(id));
        }
        loop {
            if let Some(e) = &g.poison {
                return Err(e.clone());
            }
            if g.round() {
                // A message that became visible may complete another thread's receive.
                me.cv.notify_all();
            }
            let mut partial = false;
            for op in ops.iter_mut() {
                let OpState::Posted(id) = op.state() else { continue };
                if op.is_send() {
                    self.drive_send(&mut g, op, id)?;
                } else if let Drive::Partial = self.drive_recv(&mut g, op, id)? {
                    partial = true;
                }
            }
            let satisfied = match wait {
                Wait::All => ops.iter().all(Op::is_done),
                Wait::Any => ops.iter().zip(&incomplete).any(|(op, &was)| was && op.is_done()),
            };
            if satisfied {
                return Ok(());
            }
            if !g.acks.is_empty() {
                drop(g);
                self.flush_acks();
                g = lock(&me.inbox);
                continue;
            }
            if Instant::now() >= deadline {
                return Err(self.deadline_error(&g, ops, start));
            }
            if self.hub.havoc && (partial || !g.limbo.is_empty()) {
                // Havoc's clock is this rank's rounds: keep them coming while something is
                // held back, letting other threads in between.
                drop(g);
                yield_now();
                g = lock(&me.inbox);
                continue;
            }
            g = wait_until(&me.cv, g, deadline);
        }
    }

    /// Break the pair with `peer` after a cancel mid-message: later operations between the two
    /// fail with [`Error::Cancelled`]. This rank drops what it holds from the peer (it closed
    /// the connection, unread); the peer still gets what this rank sent whole before the
    /// break ([`Inbox::sever`]).
    fn break_pair(&self, peer: Rank, slot: Slot) {
        for (a, b) in [(self.rank, peer), (peer, self.rank)] {
            let node = self.node(a);
            let mut g = lock(&node.inbox);
            if g.unusable[b.index()].is_none() {
                g.unusable[b.index()] = Some(Error::Cancelled { peer: b, slot });
            }
            if a == self.rank {
                g.purge(b);
            } else {
                g.sever(b);
            }
            drop(g);
            node.cv.notify_all();
        }
    }
}

impl Communicator for LoopbackComm {
    fn rank(&self) -> Rank {
        self.rank
    }

    fn size(&self) -> u32 {
        self.size
    }

    fn progress(&self, ops: &mut [Op<'_>], wait: Wait, deadline: Instant) -> Result<()> {
        let start = Instant::now();
        let r = self.progress_inner(ops, wait, deadline, start);
        self.flush_acks();
        r
    }

    fn cancel(&self, ops: &mut [Op<'_>]) {
        let mut broken = Vec::new();
        {
            let mut g = lock(&self.node(self.rank).inbox);
            let g: &mut Inbox = &mut g;
            for op in ops.iter_mut() {
                match op.state() {
                    OpState::New => op.set_state(OpState::Cancelled),
                    OpState::Posted(id) if op.is_send() => {
                        if let Some(SendEntry { to, state }) = g.sends.remove(&id) {
                            match state {
                                SendState::Acked(len) => {
                                    op.set_state(OpState::Done { peer: to, len });
                                    continue;
                                }
                                SendState::InFlight => broken.push((to, op.slot(), Some(id))),
                            }
                        }
                        op.set_state(OpState::Cancelled);
                    }
                    OpState::Posted(id) => {
                        match g.recvs.remove(&id).map(|r| (r.slot, r.state)) {
                            Some((slot, RecvState::Waiting)) => g.unwait(slot, id),
                            Some((_, RecvState::Matched { msg, pos: 0 })) => g.requeue(msg),
                            Some((slot, RecvState::Matched { msg, .. })) => {
                                broken.push((msg.from, slot, None));
                            }
                            Some((_, RecvState::Failed(_))) | None => {}
                        }
                        op.set_state(OpState::Cancelled);
                    }
                    OpState::Done { .. } | OpState::Cancelled => {}
                }
            }
        }
        for (peer, slot, send) in broken {
            match send {
                // A rendezvous send whose message the receiver has not touched is withdrawn
                // from its mailbox; one it has started on breaks the pair.
                Some(id) => {
                    let node = self.node(peer);
                    let mut g = lock(&node.inbox);
                    let before = g.limbo.len();
                    g.limbo.retain(|m| !(m.from == self.rank && m.ack == Some(id)));
                    let mut found = g.limbo.len() != before;
                    if let Some(s) = g.streams.get_mut(&(self.rank, slot)) {
                        let before = s.queue.len();
                        s.queue.retain(|m| m.ack != Some(id));
                        found |= s.queue.len() != before;
                    }
                    drop(g);
                    if !found {
                        self.break_pair(peer, slot);
                    }
                }
                None => self.break_pair(peer, slot),
            }
        }
        // A requeued message may have gone to a receive another thread waits on.
        self.node(self.rank).cv.notify_all();
        self.flush_acks();
    }

    fn abort(&self, reason: &str) {
        let err = Error::Aborted { by: self.rank, reason: reason.to_string() };
        // This rank first, so that its own waiting threads fail with the abort before any
        // peer can react to it (by dropping its communicator, say).
        let me = self.rank.index();
        let order = std::iter::once(me).chain((0..self.hub.nodes.len()).filter(|&i| i != me));
        for node in order.map(|i| &self.hub.nodes[i]) {
            let mut g = lock(&node.inbox);
            if g.poison.is_none() {
                g.poison = Some(err.clone());
            }
            drop(g);
            node.cv.notify_all();
        }
    }

    fn poisoned(&self) -> Option<Error> {
        lock(&self.node(self.rank).inbox).poison.clone()
    }
}

impl Drop for LoopbackComm {
    fn drop(&mut self) {
        for node in &self.hub.nodes {
            let mut g = lock(&node.inbox);
            if g.me != self.rank && g.unusable[self.rank.index()].is_none() {
                g.unusable[self.rank.index()] = Some(Error::PeerLost {
                    peer: self.rank,
                    reason: "its loopback communicator was dropped".to_string(),
                });
            }
            drop(g);
            node.cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    /// One scoped thread per rank (gloo-testing's `run_ranks` cannot be used here: it links
    /// another copy of this crate).
    fn each<R: Send>(comms: Vec<LoopbackComm>, f: impl Fn(LoopbackComm) -> R + Sync) -> Vec<R> {
        let f = &f;
        std::thread::scope(|s| {
            let hs: Vec<_> = comms.into_iter().map(|c| s.spawn(move || f(c))).collect();
            hs.into_iter().map(|h| h.join().expect("a rank panicked")).collect()
        })
    }

    fn fp(epoch: u64, desc: u8) -> Fingerprint {
        let mut b = [desc; 32];
        b[..8].copy_from_slice(&epoch.to_le_bytes());
        Fingerprint(b)
    }

    const S: Slot = Slot::new(1, 0);

    #[test]
    fn a_break_delivers_what_was_sent_whole_before_it_and_drops_the_unfinished() {
        for seed in 0..20 {
            let comms = group(2, LoopbackConfig::havoc(seed));
            let (c0, c1) = (&comms[0], &comms[1]);
            let bufs: Vec<[u8; 1]> = (0..8u8).map(|i| [i]).collect();
            let slot = |i: usize| Slot::new(10 + i as u32, 0);
            // Havoc makes each send eager (done at once, perhaps held back from the receiver
            // for a few rounds) or rendezvous (posted until the receiver consumes it).
            let mut ops: Vec<Op<'_>> =
                bufs.iter().enumerate().map(|(i, b)| Op::send(Rank(1), slot(i), b)).collect();
            for op in ops.iter_mut() {
                c0.post_send(op).unwrap();
            }
            let eager: Vec<bool> = ops.iter().map(Op::is_done).collect();
            // Rank 0 breaks the pair, as a cancel part-way through a message does.
            c0.break_pair(Rank(1), Slot::new(99, 0));
            // Rank 1 then gets every eager message, whole and at once (a look with no time
            // for havoc's rounds), and the break for every rendezvous one.
            for (i, &eager) in eager.iter().enumerate() {
                let mut b = [0u8; 1];
                let r = c1.recv(Rank(0), slot(i), &mut b, Instant::now());
                if eager {
                    assert_eq!(r, Ok(1), "seed {seed}: eager message {i}");
                    assert_eq!(b, bufs[i], "seed {seed}: eager message {i}");
                } else {
                    assert!(matches!(r, Err(Error::Cancelled { .. })), "seed {seed}, {i}: {r:?}");
                }
            }
            assert!(eager.contains(&true) && eager.contains(&false), "seed {seed}: both kinds");
        }
    }

    #[test]
    fn loopback_comm_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<LoopbackComm>();
    }

    #[test]
    fn ping_pong_plain_and_havoc() {
        for cfg in [LoopbackConfig::default(), LoopbackConfig::havoc(7)] {
            each(group(2, cfg), |c| {
                let peer = Rank(1 - c.rank().0);
                let mut buf = [0u8; 8];
                for i in 0..200u64 {
                    if c.rank() == Rank(0) {
                        c.send(peer, S, &i.to_le_bytes(), soon(10)).unwrap();
                        assert_eq!(c.recv(peer, S, &mut buf, soon(10)).unwrap(), 8);
                        assert_eq!(u64::from_le_bytes(buf), i + 1);
                    } else {
                        c.recv(peer, S, &mut buf, soon(10)).unwrap();
                        let v = u64::from_le_bytes(buf) + 1;
                        c.send(peer, S, &v.to_le_bytes(), soon(10)).unwrap();
                    }
                }
            });
        }
    }

    #[test]
    fn havoc_keeps_fifo_within_a_stream_and_chunks_large_messages() {
        for seed in 0..4 {
            each(group(2, LoopbackConfig::havoc(seed)), |c| {
                let n = 60u32;
                if c.rank() == Rank(0) {
                    let msgs: Vec<Vec<u8>> = (0..n)
                        .map(|i| vec![i as u8; if i % 7 == 0 { 5000 } else { i as usize }])
                        .collect();
                    let mut ops: Vec<Op<'_>> = msgs
                        .iter()
                        .enumerate()
                        .map(|(i, m)| Op::send(Rank(1), Slot::new(1, (i % 3) as u32), m))
                        .collect();
                    c.run(&mut ops, soon(20)).unwrap();
                } else {
                    let mut bufs = vec![vec![0u8; 5000]; n as usize];
                    let mut ops: Vec<Op<'_>> = bufs
                        .iter_mut()
                        .enumerate()
                        .map(|(i, b)| Op::recv(Rank(0), Slot::new(1, (i % 3) as u32), b))
                        .collect();
                    c.run(&mut ops, soon(20)).unwrap();
                    for (i, op) in ops.iter().enumerate() {
                        let want = if i % 7 == 0 { 5000 } else { i };
                        assert_eq!(op.completed(), Some((Rank(0), want)));
                    }
                    drop(ops);
                    for (i, b) in bufs.iter().enumerate() {
                        let want = if i % 7 == 0 { 5000 } else { i };
                        assert!(b[..want].iter().all(|&x| x == i as u8), "message {i}");
                    }
                }
            });
        }
    }

    #[test]
    fn recv_any_reports_the_sender() {
        each(group(3, LoopbackConfig::havoc(3)), |c| {
            if c.rank() == Rank(0) {
                let mut seen = Vec::new();
                for _ in 0..2 {
                    let mut b = [0u8; 4];
                    let (r, n) = c.recv_any(&[Rank(1), Rank(2)], S, &mut b, soon(10)).unwrap();
                    assert_eq!(n, 1);
                    assert_eq!(u32::from(b[0]), r.0);
                    seen.push(r);
                }
                seen.sort();
                assert_eq!(seen, vec![Rank(1), Rank(2)]);
            } else {
                c.send(Rank(0), S, &[c.rank().0 as u8], soon(10)).unwrap();
            }
        });
    }

    #[test]
    fn invalid_peers_fail_before_anything_is_posted() {
        let g = group(2, LoopbackConfig::default());
        let c = &g[0];
        let mut b = [0u8; 1];
        for bad in [Rank(0), Rank(2)] {
            let mut ops = [Op::send(Rank(1), S, b"x"), Op::recv(bad, S, &mut b)];
            let e = c.progress(&mut ops, Wait::All, soon(1)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
            assert_eq!(ops[0].state(), OpState::New);
        }
        let e = c.recv_any(&[], S, &mut b, soon(1)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        // Nothing reached rank 1.
        let e = g[1].recv(Rank(0), S, &mut b, Instant::now()).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
    }

    #[test]
    fn timeout_names_the_pending_receive() {
        let g = group(2, LoopbackConfig::default());
        let mut b = [0u8; 1];
        let e = g[1].recv(Rank(0), S, &mut b, soon(0)).unwrap_err();
        match e {
            Error::Timeout { rank, pending, .. } => {
                assert_eq!(rank, Rank(1));
                assert_eq!(pending, vec![Pending::Recv { from: vec![Rank(0)], slot: S }]);
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn too_long_and_zero_byte_messages() {
        let g = group(2, LoopbackConfig::default());
        g[0].send(Rank(1), S, &[1, 2, 3], soon(1)).unwrap();
        g[0].send(Rank(1), S, &[], soon(1)).unwrap();
        let mut b = [0u8; 2];
        let e = g[1].recv(Rank(0), S, &mut b, soon(1)).unwrap_err();
        assert_eq!(e, Error::MessageTooLong { peer: Rank(0), slot: S, len: 3, capacity: 2 });
        assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(1)).unwrap(), 0);
        g[0].send(Rank(1), S, &[], soon(1)).unwrap();
        assert_eq!(g[1].recv(Rank(0), S, &mut [], soon(1)).unwrap(), 0);
    }

    #[test]
    fn abort_wakes_a_waiter_and_reaches_every_rank() {
        let g = group(3, LoopbackConfig::default());
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut b = [0u8; 1];
                g[1].recv(Rank(0), S, &mut b, soon(30)).unwrap_err()
            });
            std::thread::sleep(Duration::from_millis(20));
            g[2].abort("test");
            let e = waiter.join().unwrap();
            assert_eq!(e, Error::Aborted { by: Rank(2), reason: "test".into() });
        });
        for c in &g {
            assert_eq!(c.poisoned(), Some(Error::Aborted { by: Rank(2), reason: "test".into() }));
            assert!(matches!(
                c.send(Rank((c.rank().0 + 1) % 3), S, b"", soon(1)),
                Err(Error::Aborted { .. })
            ));
        }
    }

    #[test]
    fn cancel_of_an_unmatched_receive_leaves_the_stream_working() {
        let g = group(2, LoopbackConfig::default());
        let mut b = [0u8; 4];
        let mut ops = [Op::recv(Rank(0), S, &mut b)];
        assert!(g[1].progress(&mut ops, Wait::All, Instant::now()).is_err());
        g[1].cancel(&mut ops);
        assert_eq!(ops[0].state(), OpState::Cancelled);
        g[0].send(Rank(1), S, b"abcd", soon(1)).unwrap();
        assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(1)).unwrap(), 4);
        assert_eq!(&b, b"abcd");
    }

    #[test]
    fn fingerprint_rules() {
        let g = group(2, LoopbackConfig::default());
        let mut b = [0u8; 4];
        // Rule 1: the matched message carries another fingerprint (or none).
        g[0].run(&mut [Op::send(Rank(1), S, b"a").with_fingerprint(fp(1, 1))], soon(1)).unwrap();
        let e = g[1].run(&mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(1, 2))], soon(1));
        assert!(matches!(e, Err(Error::Mismatch { peer: Rank(0), .. })), "{e:?}");
        g[0].send(Rank(1), S, b"a", soon(1)).unwrap();
        let e = g[1].run(&mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(1, 2))], soon(1));
        assert!(matches!(e, Err(Error::Mismatch { theirs: None, .. })), "{e:?}");
        // Rule 2: same tag, another slot, same epoch, other description: fails at once.
        let other = Slot::new(1, 5);
        g[0].run(&mut [Op::send(Rank(1), other, b"a").with_fingerprint(fp(2, 1))], soon(1))
            .unwrap();
        let e = g[1].run(&mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(2, 2))], soon(30));
        assert!(matches!(e, Err(Error::Mismatch { slot, .. }) if slot == S), "{e:?}");
        // Rule 3: another tag, same epoch, other description: Mismatch at the deadline.
        g[0].run(
            &mut [Op::send(Rank(1), Slot::new(9, 0), b"a").with_fingerprint(fp(3, 1))],
            soon(1),
        )
        .unwrap();
        let e = g[1].run(
            &mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(3, 2))],
            Instant::now() + Duration::from_millis(50),
        );
        assert!(matches!(e, Err(Error::Mismatch { .. })), "{e:?}");
        // Same epoch, same description elsewhere: plain timeout.
        let e = g[1].run(
            &mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(3, 1))],
            Instant::now() + Duration::from_millis(50),
        );
        assert!(matches!(e, Err(Error::Timeout { .. })), "{e:?}");
    }

    #[test]
    fn a_dropped_peer_is_lost_after_its_messages_are_consumed() {
        let mut g = group(2, LoopbackConfig::default());
        let c1 = g.pop().unwrap();
        let c0 = g.pop().unwrap();
        c0.send(Rank(1), S, b"last", soon(1)).unwrap();
        drop(c0);
        let mut b = [0u8; 4];
        assert_eq!(c1.recv(Rank(0), S, &mut b, soon(5)).unwrap(), 4);
        let e = c1.recv(Rank(0), S, &mut b, soon(30)).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(0), .. }), "{e}");
        let e = c1.send(Rank(0), S, b"x", soon(1)).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(0), .. }), "{e}");
    }

    #[test]
    fn a_crashed_peer_poisons_every_other_rank_even_those_waiting_on_someone_else() {
        let mut g = group(3, LoopbackConfig::default());
        let c2 = g.pop().unwrap();
        let out = std::thread::scope(|s| {
            let waiters: Vec<_> = g
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        // Each waits on the other survivor, never on the rank that crashes.
                        let other = Rank(1 - c.rank().0);
                        c.recv(other, S, &mut [0u8; 4], soon(30))
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(20));
            c2.crash();
            waiters.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        });
        for r in out {
            assert!(matches!(r, Err(Error::PeerLost { peer: Rank(2), .. })), "{r:?}");
        }
        // Poisoned for good: a later operation fails the same way.
        let e = g[0].send(Rank(1), S, b"x", soon(1)).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(2), .. }), "{e}");
    }

    #[test]
    fn wait_any_returns_after_one_completion() {
        let g = group(2, LoopbackConfig::default());
        g[0].send(Rank(1), Slot::new(1, 1), b"x", soon(1)).unwrap();
        let (mut a, mut b) = ([0u8; 1], [0u8; 1]);
        let mut ops = [Op::recv(Rank(0), S, &mut a), Op::recv(Rank(0), Slot::new(1, 1), &mut b)];
        g[1].progress(&mut ops, Wait::Any, soon(5)).unwrap();
        assert!(!ops[0].is_done());
        assert_eq!(ops[1].completed(), Some((Rank(0), 1)));
        g[1].cancel(&mut ops);
    }

    #[test]
    fn rendezvous_sends_complete_only_when_consumed() {
        // Havoc makes about half of the sends rendezvous: over 32 sends some must be.
        let g = group(2, LoopbackConfig::havoc(11));
        let data = [7u8; 3];
        let mut ops: Vec<Op<'_>> =
            (0..32).map(|i| Op::send(Rank(1), Slot::new(2, i), &data)).collect();
        g[0].progress(&mut ops, Wait::Any, soon(5)).unwrap();
        let pending = ops.iter().filter(|o| !o.is_done()).count();
        assert!(pending > 0 && pending < 32, "{pending} of 32 pending");
        each_thread_pair(&g, &mut ops);
    }

    #[test]
    fn cancel_mid_message_breaks_the_pair_on_both_sides() {
        let g = group(3, LoopbackConfig::havoc(5));
        let big = vec![1u8; 1 << 20];
        // Posted with a past deadline: an eager send is done, a rendezvous one stays posted.
        let mut send = [Op::send(Rank(1), S, &big)];
        let _ = g[0].progress(&mut send, Wait::All, Instant::now());
        let mut b = vec![0u8; 1 << 20];
        let mut ops = [Op::recv(Rank(0), S, &mut b)];
        // Drive with past deadlines until part of the message (but not all) has moved.
        let mut partial = false;
        for _ in 0..1000 {
            let _ = g[1].progress(&mut ops, Wait::All, Instant::now());
            let OpState::Posted(id) = ops[0].state() else { break };
            let inbox = lock(&g[1].hub.nodes[1].inbox);
            if let Some(RecvEntry { state: RecvState::Matched { pos, .. }, .. }) =
                inbox.recvs.get(&id)
                && *pos > 0
            {
                partial = true;
                break;
            }
        }
        assert!(partial, "havoc never left the copy part-way");
        g[1].cancel(&mut ops);
        let e = g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap_err();
        assert_eq!(e, Error::Cancelled { peer: Rank(0), slot: S });
        let e = g[0].send(Rank(1), S, b"x", soon(5)).unwrap_err();
        assert_eq!(e, Error::Cancelled { peer: Rank(1), slot: S });
        if !send[0].is_done() {
            let e = g[0].progress(&mut send, Wait::All, soon(5)).unwrap_err();
            assert_eq!(e, Error::Cancelled { peer: Rank(1), slot: S });
        }
        // Other pairs are unaffected.
        let mut ok = [Op::send(Rank(1), S, b"ok")];
        let _ = g[2].progress(&mut ok, Wait::All, Instant::now());
        assert_eq!(g[1].recv(Rank(2), S, &mut b, soon(5)).unwrap(), 2);
        g[2].progress(&mut ok, Wait::All, soon(5)).unwrap();
    }

    #[test]
    fn a_cancelled_rendezvous_send_is_withdrawn() {
        // Find a send that havoc makes rendezvous, cancel it, and check that the receiver
        // sees only the next message.
        let g = group(2, LoopbackConfig::havoc(2));
        let mut withdrawn = 0;
        for i in 0..16u8 {
            let msg = [i];
            let mut ops = [Op::send(Rank(1), S, &msg)];
            if g[0].progress(&mut ops, Wait::All, Instant::now()).is_err() {
                g[0].cancel(&mut ops);
                assert_eq!(ops[0].state(), OpState::Cancelled);
                withdrawn += 1;
            } else {
                let mut b = [0u8; 1];
                assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap(), 1);
                assert_eq!(b, [i], "message {i} (after {withdrawn} withdrawn)");
            }
        }
        assert!(withdrawn > 0, "no send was rendezvous");
    }

    #[test]
    fn an_eager_limit_makes_large_sends_wait_for_their_receiver() {
        let g = group(2, LoopbackConfig::default().with_eager_limit(4));
        let mut small = [Op::send(Rank(1), S, b"1234")];
        g[0].progress(&mut small, Wait::All, Instant::now()).unwrap();
        let mut large = [Op::send(Rank(1), S, b"12345")];
        let e = g[0].progress(&mut large, Wait::All, Instant::now()).unwrap_err();
        assert!(
            matches!(e, Error::Timeout { ref pending, .. }
            if pending == &[Pending::Send { to: Rank(1), slot: S }]),
            "{e}"
        );
        let mut b = [0u8; 5];
        assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap(), 4);
        assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap(), 5);
        g[0].progress(&mut large, Wait::All, soon(5)).unwrap();
        assert_eq!(large[0].completed(), Some((Rank(1), 5)));
    }

    fn each_thread_pair(g: &[LoopbackComm], ops: &mut [Op<'_>]) {
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..32 {
                    let mut b = [0u8; 3];
                    assert_eq!(g[1].recv(Rank(0), Slot::new(2, i), &mut b, soon(10)).unwrap(), 3);
                }
            });
            g[0].progress(ops, Wait::All, soon(10)).unwrap();
        });
        assert!(ops.iter().all(Op::is_done));
    }
}
