//! Matching of arriving messages against posted receives, FIFO per `(peer, slot)`.

use std::collections::btree_map::{Entry, OccupiedEntry};
use std::collections::{BTreeMap, VecDeque};

use super::Ranks;

use crate::hash::Map;

use super::frame::MAX_UNEXPECTED_RTS;
use crate::{Error, Fingerprint, Rank, Result, Slot};

/// The id a transport gives a posted receive.
pub type RecvId = u64;

/// What arrived.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// A whole small message, held in a credit-bounded buffer.
    Eager(Vec<u8>),
    /// A request to send `len` bytes, answered with `Cts` for transfer `xfer`.
    Rts {
        /// The message's length.
        len: u64,
        /// The sender's transfer id.
        xfer: u64,
    },
}

impl Body {
    /// The message's length.
    pub fn len(&self) -> u64 {
        match self {
            Body::Eager(v) => v.len() as u64,
            Body::Rts { len, .. } => *len,
        }
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message (or announcement of one) from a peer.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub peer: Rank,
    /// The stream.
    pub slot: Slot,
    /// The fingerprint the sender attached.
    pub fp: Option<Fingerprint>,
    /// The contents.
    pub body: Body,
    seq: u64,
}

impl Message {
    /// A message; the matcher orders arrivals itself.
    pub fn new(peer: Rank, slot: Slot, fp: Option<Fingerprint>, body: Body) -> Message {
        Message { peer, slot, fp, body, seq: 0 }
    }
}

/// What the matcher decided about a posted receive.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// `recv` takes `msg`.
    Matched {
        /// The receive.
        recv: RecvId,
        /// The message it takes.
        msg: Message,
    },
    /// `recv` fails. When `consumed` is set, the failing receive took that message off its
    /// stream (rule 1, or a message longer than the buffer): the transport discards it
    /// (returning eager credit, or accepting the transfer into nowhere so the sender finishes).
    Failed {
        /// The receive.
        recv: RecvId,
        /// Why.
        error: Error,
        /// The message it consumed, if any.
        consumed: Option<Message>,
    },
}

#[derive(Debug)]
struct Posted {
    from: Ranks,
    slot: Slot,
    cap: u64,
    fp: Option<Fingerprint>,
}

#[derive(Debug, Default)]
struct SlotQueue {
    unexpected: VecDeque<Message>,
    posted: VecDeque<RecvId>,
    /// Empty, and left in the map for its stream's next message or receive (counted in
    /// [`Matcher::kept_empty`]).
    kept: bool,
}

impl SlotQueue {
    fn is_empty(&self) -> bool {
        self.unexpected.is_empty() && self.posted.is_empty()
    }

    /// Small enough to keep once empty: room for one message and a few receives, as most
    /// streams use. A queue a flood grew is dropped, not kept.
    fn small(&self) -> bool {
        self.unexpected.capacity() <= 1 && self.posted.capacity() <= 4
    }
}

/// The matching state of one communicator: per `(peer, slot)`, a FIFO of unexpected messages
/// and a FIFO of posted receives, never both non-empty.
///
/// Receives match in post order; a receive from any of several peers sits in each of their
/// queues and takes the earliest arrival. Fingerprints are checked by the three rules on
/// [`Fingerprint`].
#[derive(Debug, Default)]
pub struct Matcher {
    queues: BTreeMap<(Rank, Slot), SlotQueue>,
    posted: Map<RecvId, Posted>,
    /// Unexpected messages held per peer (eager and requests-to-send), bounded by
    /// [`MAX_UNEXPECTED_RTS`].
    held: Map<Rank, usize>,
    seq: u64,
    /// Emptied queues kept for reuse (at most [`SPARE_QUEUES`], each with room for one
    /// message or receive): most streams hold one message or receive at a time, so a queue
    /// is made and emptied for nearly every message, and reusing one saves an allocation.
    spare: Vec<SlotQueue>,
    /// Emptied queues left in place in `queues` (at most [`KEPT_EMPTY`]): a collective's
    /// streams come back call after call, and finding a stream's queue where it was costs
    /// a search, where removing it and making it again costs a B-tree removal and insertion
    /// for every message.
    kept_empty: usize,
}

/// How many emptied queues a matcher keeps for reuse.
const SPARE_QUEUES: usize = 8;
/// How many emptied queues a matcher leaves in place for their streams.
const KEPT_EMPTY: usize = 32;

fn mismatch(
    peer: Rank,
    slot: Slot,
    ours: Option<Fingerprint>,
    theirs: Option<Fingerprint>,
) -> Error {
    Error::Mismatch { peer, slot, ours, theirs }
}

impl Matcher {
    /// An empty matcher.
    pub fn new() -> Matcher {
        Matcher::default()
    }

    /// Whether `recv` is posted and unmatched.
    pub fn is_posted(&self, recv: RecvId) -> bool {
        self.posted.contains_key(&recv)
    }

    /// Unexpected messages held (for tests and diagnostics).
    pub fn unexpected_len(&self) -> usize {
        self.queues.values().map(|q| q.unexpected.len()).sum()
    }

    /// Unexpected messages held from `peer`.
    pub fn held_from(&self, peer: Rank) -> usize {
        self.held.get(&peer).copied().unwrap_or(0)
    }

    /// The heap bytes the held messages and their queues take, estimated from the queues'
    /// capacities (the messages' own payloads not counted): what a flood of unmatched
    /// messages makes this rank hold besides the payloads the eager credit bounds.
    pub fn bookkeeping_bytes(&self) -> usize {
        let entry = std::mem::size_of::<((Rank, Slot), SlotQueue)>();
        // Emptied queues left in place are few and bounded ([`KEPT_EMPTY`], each small):
        // not what a flood makes this rank hold.
        self.queues
            .values()
            .filter(|q| !q.kept)
            .map(|q| {
                entry
                    + q.unexpected.capacity() * std::mem::size_of::<Message>()
                    + q.posted.capacity() * std::mem::size_of::<RecvId>()
            })
            .sum()
    }

    /// Post a receive of up to `cap` bytes on `slot` from any of `from`. Returns its outcome
    /// at once when a held message matches it (or a held message proves a mismatch, rule 2).
    pub fn post(
        &mut self,
        recv: RecvId,
        from: &[Rank],
        slot: Slot,
        cap: u64,
        fp: Option<Fingerprint>,
    ) -> Option<Outcome> {
        // `held` counts each peer's held messages: with none from any candidate (a stream's
        // receive usually comes before its message), nothing can match or conflict, and no
        // queue needs searching for one.
        if from.iter().any(|p| self.held_from(*p) > 0) {
            // The earliest held message among the candidate peers wins.
            let best = from
                .iter()
                .filter_map(|p| {
                    let q = self.queues.get(&(*p, slot))?;
                    q.unexpected.front().map(|m| (m.seq, *p))
                })
                .min();
            if let Some((_, peer)) = best {
                let Entry::Occupied(mut e) = self.queues.entry((peer, slot)) else {
                    unreachable!("found above")
                };
                let msg = e.get_mut().unexpected.pop_front().expect("found above");
                Self::settle_queue(e, &mut self.kept_empty, &mut self.spare);
                self.note_taken(peer);
                return Some(Self::judge(recv, cap, fp, msg));
            }
            if let Some(f) = fp {
                // Only a held message can conflict: skip the look for peers that hold none.
                for p in from.iter().filter(|p| self.held_from(**p) > 0) {
                    if let Some(theirs) = self.rule2_conflict(*p, slot, &f) {
                        return Some(Outcome::Failed {
                            recv,
                            error: mismatch(*p, slot, fp, Some(theirs)),
                            consumed: None,
                        });
                    }
                }
            }
        }
        for p in from {
            self.queue((*p, slot)).posted.push_back(recv);
        }
        self.posted.insert(recv, Posted { from: Ranks::from_slice(from), slot, cap, fp });
        None
    }

    /// The queue of `key` about to take a message or receive: the one left in place, or
    /// one made (from a spare if there is one).
    fn queue(&mut self, key: (Rank, Slot)) -> &mut SlotQueue {
        let spare = &mut self.spare;
        let q = self.queues.entry(key).or_insert_with(|| spare.pop().unwrap_or_default());
        if q.kept {
            q.kept = false;
            self.kept_empty -= 1;
        }
        q
    }

    /// Once a queue in hand is empty: leave it in place while fewer than [`KEPT_EMPTY`] are,
    /// else drop it, keeping it for reuse while there is room; through its entry, with no
    /// second search.
    fn settle_queue(
        mut e: OccupiedEntry<'_, (Rank, Slot), SlotQueue>,
        kept_empty: &mut usize,
        spare: &mut Vec<SlotQueue>,
    ) {
        let q = e.get_mut();
        if q.kept || !q.is_empty() {
            return;
        }
        if *kept_empty < KEPT_EMPTY && q.small() {
            q.kept = true;
            *kept_empty += 1;
            return;
        }
        let q = e.remove();
        if spare.len() < SPARE_QUEUES && q.small() {
            spare.push(q);
        }
    }

    fn note_taken(&mut self, peer: Rank) {
        if let Some(n) = self.held.get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
    }

    /// Hold `msg` at the back (or, `front`, the front) of its stream. A stream's queue starts
    /// with room for one message, not the four a first push would reserve: most streams
    /// hold one message at a time, and a peer that spreads a flood over many slots would
    /// otherwise make each message cost four.
    fn hold(&mut self, msg: Message, front: bool) {
        *self.held.entry(msg.peer).or_default() += 1;
        let q = self.queue((msg.peer, msg.slot));
        if q.unexpected.capacity() == 0 {
            q.unexpected.reserve_exact(1);
        }
        if front {
            q.unexpected.push_front(msg);
        } else {
            q.unexpected.push_back(msg);
        }
    }

    /// A held message from `peer` on another slot of `slot`'s tag whose fingerprint has the
    /// same epoch as `f` but differs (rule 2).
    fn rule2_conflict(&self, peer: Rank, slot: Slot, f: &Fingerprint) -> Option<Fingerprint> {
        let lo = (peer, Slot::new(slot.tag(), 0));
        let hi = (peer, Slot::new(slot.tag(), u32::MAX));
        self.queues
            .range(lo..=hi)
            .filter(|((_, s), _)| *s != slot)
            .flat_map(|(_, q)| q.unexpected.iter())
            .filter_map(|m| m.fp)
            .find(|t| t.epoch() == f.epoch() && t != f)
    }

    fn judge(recv: RecvId, cap: u64, fp: Option<Fingerprint>, msg: Message) -> Outcome {
        if let Some(f) = fp
            && msg.fp != Some(f)
        {
            return Outcome::Failed {
                recv,
                error: mismatch(msg.peer, msg.slot, fp, msg.fp),
                consumed: Some(msg),
            };
        }
        if msg.body.len() > cap {
            return Outcome::Failed {
                recv,
                error: Error::MessageTooLong {
                    peer: msg.peer,
                    slot: msg.slot,
                    len: msg.body.len(),
                    capacity: cap,
                },
                consumed: Some(msg),
            };
        }
        Outcome::Matched { recv, msg }
    }

    fn unpost(&mut self, recv: RecvId) -> Option<Posted> {
        let p = self.posted.remove(&recv)?;
        for peer in &p.from {
            // One search per queue: the receive leaves it, and it is kept or dropped,
            // through its entry.
            if let Entry::Occupied(mut e) = self.queues.entry((*peer, p.slot)) {
                let q = e.get_mut();
                // Receives are taken in post order: the one leaving is nearly always first.
                if q.posted.front() == Some(&recv) {
                    q.posted.pop_front();
                } else {
                    q.posted.retain(|r| *r != recv);
                }
                Self::settle_queue(e, &mut self.kept_empty, &mut self.spare);
            }
        }
        Some(p)
    }

    /// A message arrived. Returns what happened to posted receives: the one it matched, or
    /// those it proves mismatched by rule 2 (the message is then held).
    ///
    /// Fails with a protocol error when the peer holds too many unmatched messages
    /// ([`MAX_UNEXPECTED_RTS`], requests-to-send and eager messages together).
    pub fn arrive(&mut self, msg: Message) -> Result<Vec<Outcome>> {
        let mut out = Vec::new();
        self.arrive_into(msg, &mut out)?;
        Ok(out)
    }

    /// [`arrive`](Matcher::arrive), appending the outcomes to `out` (so that a transport can
    /// reuse one list for every message).
    pub fn arrive_into(&mut self, mut msg: Message, out: &mut Vec<Outcome>) -> Result<()> {
        self.seq += 1;
        msg.seq = self.seq;
        let key = (msg.peer, msg.slot);
        if let Some(&recv) = self.queues.get(&key).and_then(|q| q.posted.front()) {
            let p = self.unpost(recv).expect("a queued receive is posted");
            out.push(Self::judge(recv, p.cap, p.fp, msg));
            return Ok(());
        }
        if self.held_from(msg.peer) >= MAX_UNEXPECTED_RTS {
            return Err(Error::protocol(
                msg.peer,
                format!(
                    "more than {MAX_UNEXPECTED_RTS} unmatched messages (requests to send and \
                     eager messages)"
                ),
            ));
        }
        if let Some(theirs) = msg.fp {
            let failing: Vec<(RecvId, Slot, Option<Fingerprint>)> = self
                .posted
                .iter()
                .filter(|(_, p)| {
                    p.from.contains(&msg.peer)
                        && p.slot != msg.slot
                        && p.slot.tag() == msg.slot.tag()
                        && p.fp.is_some_and(|f| f.epoch() == theirs.epoch() && f != theirs)
                })
                .map(|(r, p)| (*r, p.slot, p.fp))
                .collect();
            for (recv, slot, ours) in failing {
                self.unpost(recv);
                out.push(Outcome::Failed {
                    recv,
                    error: mismatch(msg.peer, slot, ours, Some(theirs)),
                    consumed: None,
                });
            }
        }
        self.hold(msg, false);
        Ok(())
    }

    /// The receive a message arriving from `peer` on `slot` would go to, if one is posted:
    /// its id, capacity and fingerprint. With [`take_posted`](Matcher::take_posted), a
    /// transport can deliver such a message straight into that receive's buffer instead of
    /// handing it to [`arrive`](Matcher::arrive) as a [`Message`].
    pub fn first_posted(
        &self,
        peer: Rank,
        slot: Slot,
    ) -> Option<(RecvId, u64, Option<Fingerprint>)> {
        let recv = *self.queues.get(&(peer, slot))?.posted.front()?;
        let p = self.posted.get(&recv)?;
        Some((recv, p.cap, p.fp))
    }

    /// A message arrived for `recv`, the receive [`first_posted`](Matcher::first_posted)
    /// named, and the transport delivered it there: the receive is matched. The transport
    /// has checked what [`arrive`](Matcher::arrive) would (the fingerprint, the length
    /// against the capacity); a message failing either goes through `arrive`, which reports
    /// it.
    pub fn take_posted(&mut self, recv: RecvId) {
        // No arrival number: those only order held messages, and this one is not held.
        self.unpost(recv);
    }

    /// Withdraw an unmatched receive; returns whether it was posted.
    pub fn cancel(&mut self, recv: RecvId) -> bool {
        self.unpost(recv).is_some()
    }

    /// Put back a message that a receive took but gave up before delivering a byte (it was
    /// cancelled). It goes back to the front of its stream, or to the next posted receive.
    pub fn requeue_front(&mut self, msg: Message) -> Option<Outcome> {
        let key = (msg.peer, msg.slot);
        if let Some(&recv) = self.queues.get(&key).and_then(|q| q.posted.front()) {
            let p = self.unpost(recv).expect("a queued receive is posted");
            return Some(Self::judge(recv, p.cap, p.fp, msg));
        }
        self.hold(msg, true);
        None
    }

    /// Rule 3, for a receive that reached its deadline: the mismatch to report instead of a
    /// timeout, if any held message from a candidate peer has the receive's epoch but
    /// another fingerprint.
    pub fn deadline_mismatch(&self, recv: RecvId) -> Option<Error> {
        let p = self.posted.get(&recv)?;
        let f = p.fp?;
        for peer in &p.from {
            let hit = self
                .queues
                .range((*peer, Slot(0))..=(*peer, Slot(u64::MAX)))
                .flat_map(|(_, q)| q.unexpected.iter())
                .filter_map(|m| m.fp)
                .find(|t| t.epoch() == f.epoch() && *t != f);
            if let Some(theirs) = hit {
                return Some(mismatch(*peer, p.slot, Some(f), Some(theirs)));
            }
        }
        None
    }

    /// `peer`'s connection is gone: forget its requests to send (their data can no longer
    /// come), keep its eager messages when `keep_eager` (they are here and still deliverable:
    /// the peer said goodbye) or forget them too (it broke the protocol, or the group is
    /// lost: nobody will take them), and withdraw the receives that named it, returning them
    /// so the transport can fail them or post them again for their other candidate peers.
    pub fn drop_peer(&mut self, peer: Rank, keep_eager: bool) -> Vec<RecvId> {
        let keys: Vec<_> =
            self.queues.range((peer, Slot(0))..=(peer, Slot(u64::MAX))).map(|(k, _)| *k).collect();
        let mut recvs = Vec::new();
        let mut kept = 0;
        for k in keys {
            if let Some(q) = self.queues.get_mut(&k) {
                recvs.extend(q.posted.iter().copied());
                q.unexpected.retain(|m| keep_eager && matches!(m.body, Body::Eager(_)));
                kept += q.unexpected.len();
            }
        }
        if kept == 0 {
            self.held.remove(&peer);
        } else {
            self.held.insert(peer, kept);
        }
        recvs.sort_unstable();
        recvs.dedup();
        for r in &recvs {
            self.unpost(*r);
        }
        self.queues.retain(|_, q| !q.is_empty());
        self.kept_empty = 0;
        recvs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eager(peer: u32, slot: u32, len: usize) -> Message {
        Message::new(Rank(peer), Slot::new(1, slot), None, Body::Eager(vec![0; len]))
    }

    #[test]
    fn a_body_is_empty_only_without_bytes() {
        assert!(Body::Eager(Vec::new()).is_empty());
        assert!(!Body::Eager(vec![1]).is_empty());
        assert!(Body::Rts { len: 0, xfer: 1 }.is_empty());
        assert!(!Body::Rts { len: 5, xfer: 1 }.is_empty());
    }

    /// A receive is posted until a message matches it or it is cancelled.
    #[test]
    fn a_receive_is_posted_until_matched_or_cancelled() {
        let mut m = Matcher::new();
        assert!(!m.is_posted(1));
        assert!(m.post(1, &[Rank(2)], Slot::new(1, 0), 8, None).is_none());
        assert!(m.post(2, &[Rank(2)], Slot::new(1, 1), 8, None).is_none());
        assert!(m.is_posted(1) && m.is_posted(2));
        let out = m.arrive(eager(2, 0, 3)).unwrap();
        assert!(matches!(out[..], [Outcome::Matched { recv: 1, .. }]), "{out:?}");
        assert!(!m.is_posted(1) && m.is_posted(2));
        assert!(m.cancel(2));
        assert!(!m.is_posted(2));
    }

    /// `first_posted` names the receive an arrival on a stream would take (the earliest
    /// posted, from any of its candidates), and `take_posted` matches it there, withdrawing
    /// a receive-from-any from its other peers' streams too.
    #[test]
    fn the_first_posted_receive_is_named_and_taken_in_post_order() {
        let mut m = Matcher::new();
        let (s, fp) = (Slot::new(1, 0), fp(3, 1));
        assert_eq!(m.first_posted(Rank(2), s), None);
        assert!(m.post(1, &[Rank(2), Rank(3)], s, 8, fp).is_none());
        assert!(m.post(2, &[Rank(2)], s, 16, None).is_none());
        assert_eq!(m.first_posted(Rank(2), s), Some((1, 8, fp)));
        assert_eq!(m.first_posted(Rank(3), s), Some((1, 8, fp)));
        assert_eq!(m.first_posted(Rank(2), Slot::new(1, 1)), None);
        m.take_posted(1);
        assert!(!m.is_posted(1));
        assert_eq!(m.first_posted(Rank(2), s), Some((2, 16, None)));
        assert_eq!(m.first_posted(Rank(3), s), None, "gone from the other candidate's stream");
        // A message held from a peer is still taken by the next receive posted for it.
        m.take_posted(2);
        assert!(m.arrive(eager(2, 0, 3)).unwrap().is_empty());
        let got = m.post(3, &[Rank(3), Rank(2)], s, 8, None);
        assert!(matches!(got, Some(Outcome::Matched { recv: 3, .. })), "{got:?}");
        assert_eq!((m.unexpected_len(), m.held_from(Rank(2))), (0, 0));
    }

    /// Emptied queues are left in place for their streams (at most `KEPT_EMPTY`) or kept
    /// for reuse (at most `SPARE_QUEUES`), and only small ones; a receive withdrawn from the
    /// middle of its queue leaves the others in order.
    #[test]
    fn emptied_queues_are_reused_within_bounds() {
        let mut m = Matcher::new();
        let streams = (KEPT_EMPTY + 3 * SPARE_QUEUES) as u32;
        for slot in 0..streams {
            assert!(m.post(u64::from(slot), &[Rank(2)], Slot::new(1, slot), 8, None).is_none());
        }
        for slot in 0..streams {
            let out = m.arrive(eager(2, slot, 1)).unwrap();
            assert!(matches!(out[..], [Outcome::Matched { .. }]), "{out:?}");
        }
        // The first emptied stay in place, the next go to the spares, the rest are dropped.
        assert_eq!((m.kept_empty, m.queues.len()), (KEPT_EMPTY, KEPT_EMPTY));
        assert_eq!(m.spare.len(), SPARE_QUEUES);
        assert_eq!(m.bookkeeping_bytes(), 0);
        // A stream whose queue stayed takes it again, and leaves it again, in order.
        for (recv, slot) in [(900, 0), (901, 0)] {
            assert!(m.post(recv, &[Rank(2)], Slot::new(1, slot), 8, None).is_none());
        }
        assert_eq!((m.kept_empty, m.queues.len()), (KEPT_EMPTY - 1, KEPT_EMPTY));
        for want in [900, 901] {
            let out = m.arrive(eager(2, 0, 1)).unwrap();
            assert!(matches!(out[..], [Outcome::Matched { recv, .. }] if recv == want), "{out:?}");
        }
        assert_eq!((m.kept_empty, m.queues.len()), (KEPT_EMPTY, KEPT_EMPTY));
        // A kept queue holds a message as any other, and counts again while it does.
        m.arrive(eager(2, 1, 1)).unwrap();
        assert_eq!((m.kept_empty, m.unexpected_len()), (KEPT_EMPTY - 1, 1));
        assert!(m.bookkeeping_bytes() > 0);
        assert!(m.post(902, &[Rank(2)], Slot::new(1, 1), 8, None).is_some());
        assert_eq!((m.kept_empty, m.bookkeeping_bytes()), (KEPT_EMPTY, 0));
        // Dropping a peer drops its kept queues too.
        let mut d = Matcher::new();
        assert!(d.post(1, &[Rank(2)], Slot::new(1, 0), 8, None).is_none());
        d.arrive(eager(2, 0, 1)).unwrap();
        assert_eq!((d.kept_empty, d.queues.len()), (1, 1));
        assert!(d.drop_peer(Rank(2), true).is_empty());
        assert_eq!((d.kept_empty, d.queues.len()), (0, 0));
        // Held, then taken: the queue comes from a spare and goes back to one.
        m.arrive(eager(2, 99, 1)).unwrap();
        assert_eq!(m.spare.len(), SPARE_QUEUES - 1);
        assert!(m.post(500, &[Rank(2)], Slot::new(1, 99), 8, None).is_some());
        assert_eq!(m.spare.len(), SPARE_QUEUES);
        // A queue grown past one message's room is not kept.
        let mut m = Matcher::new();
        for i in 0..3 {
            m.arrive(eager(2, 0, 1)).unwrap();
            assert!(m.spare.is_empty(), "{i}");
        }
        for i in 0..3 {
            assert!(m.post(i, &[Rank(2)], Slot::new(1, 0), 8, None).is_some());
        }
        assert!(m.spare.is_empty());
        assert_eq!((m.kept_empty, m.queues.len()), (0, 0), "nor left in place");
        // Nor one whose receives grew past the room a first receive makes.
        for i in 0..6 {
            assert!(m.post(10 + i, &[Rank(3)], Slot::new(1, 0), 8, None).is_none());
        }
        assert!(m.cancel(12), "a receive from the middle");
        for i in [10, 11, 13, 14, 15] {
            let out = m.arrive(eager(3, 0, 1)).unwrap();
            assert!(matches!(out[..], [Outcome::Matched { recv, .. }] if recv == i), "{out:?}");
        }
        assert!(m.spare.is_empty());
        assert_eq!((m.kept_empty, m.queues.len()), (0, 0), "nor left in place");
    }

    fn fp(epoch: u64, salt: u8) -> Option<Fingerprint> {
        Some(Fingerprint::with_epoch(epoch, salt))
    }

    /// Rule 2 fails exactly the receives it proves wrong: posted for the sender, on another
    /// step of the same tag, with the arriving message's epoch and another fingerprint. A
    /// receive for another peer, another tag, another epoch, or without a fingerprint stays.
    #[test]
    fn rule_two_fails_only_the_receives_it_proves_wrong() {
        let mut m = Matcher::new();
        let posts = [
            (1, Rank(2), Slot::new(1, 1), fp(7, 1)), // proved wrong
            (2, Rank(3), Slot::new(1, 2), fp(7, 2)), // another peer
            (3, Rank(2), Slot::new(2, 0), fp(7, 3)), // another tag
            (4, Rank(2), Slot::new(1, 3), fp(8, 4)), // another epoch
            (5, Rank(2), Slot::new(1, 4), None),     // no fingerprint
            (6, Rank(2), Slot::new(1, 5), fp(7, 9)), // the same fingerprint
        ];
        for (recv, peer, slot, f) in posts {
            assert!(m.post(recv, &[peer], slot, 8, f).is_none());
        }
        let msg = Message::new(Rank(2), Slot::new(1, 0), fp(7, 9), Body::Eager(vec![1]));
        let out = m.arrive(msg).unwrap();
        assert!(matches!(out[..], [Outcome::Failed { recv: 1, .. }]), "{out:?}");
        for recv in 2..=6 {
            assert!(m.is_posted(recv), "receive {recv} was failed");
        }
        assert_eq!(m.unexpected_len(), 1, "the message is held");
    }

    /// Rule 2 at a post: a receive posted after a held message on another step of its tag
    /// from one of its peers, with its epoch and another fingerprint, fails at once; a
    /// candidate peer holding nothing is no evidence, and a matching fingerprint none.
    #[test]
    fn rule_two_fails_a_receive_posted_after_the_message_that_proves_it_wrong() {
        let mut m = Matcher::new();
        let held = Message::new(Rank(2), Slot::new(1, 0), fp(7, 9), Body::Eager(vec![1]));
        assert!(m.arrive(held).unwrap().is_empty());
        assert!(m.post(1, &[Rank(3)], Slot::new(1, 1), 8, fp(7, 1)).is_none());
        assert!(m.post(2, &[Rank(2)], Slot::new(1, 2), 8, fp(7, 9)).is_none());
        let got = m.post(3, &[Rank(3), Rank(2)], Slot::new(1, 3), 8, fp(7, 1));
        assert!(matches!(got, Some(Outcome::Failed { recv: 3, consumed: None, .. })), "{got:?}");
        assert!(!m.is_posted(3) && m.is_posted(1) && m.is_posted(2));
        assert_eq!(m.unexpected_len(), 1, "the message is still held");
    }

    /// A message put back goes to the next posted receive, or to the front of its stream
    /// (before what arrived after it).
    #[test]
    fn a_requeued_message_comes_first() {
        let mut m = Matcher::new();
        let slot = Slot::new(1, 0);
        m.arrive(eager(2, 0, 1)).unwrap();
        let Some(Outcome::Matched { msg: first, .. }) = m.post(1, &[Rank(2)], slot, 8, None) else {
            panic!("no match");
        };
        m.arrive(eager(2, 0, 2)).unwrap();
        assert!(m.requeue_front(first).is_none(), "held again");
        let out = m.post(2, &[Rank(2)], slot, 8, None);
        assert!(
            matches!(&out, Some(Outcome::Matched { msg, .. }) if msg.body.len() == 1),
            "the later message came first: {out:?}"
        );
        assert!(m.post(3, &[Rank(3), Rank(2)], slot, 8, None).is_some());
        assert!(m.post(4, &[Rank(2)], slot, 8, None).is_none());
        let out = m.requeue_front(eager(2, 0, 5));
        assert!(matches!(out, Some(Outcome::Matched { recv: 4, .. })), "{out:?}");
    }

    /// Dropping a peer keeps its eager messages (and counts them as held) or forgets all of
    /// them, and withdraws the receives that named it.
    #[test]
    fn dropping_a_peer_keeps_or_forgets_what_it_sent() {
        let mut m = Matcher::new();
        for i in 0..3 {
            m.arrive(eager(2, i, 1)).unwrap();
        }
        m.arrive(Message::new(Rank(2), Slot::new(1, 9), None, Body::Rts { len: 9, xfer: 1 }))
            .unwrap();
        m.post(7, &[Rank(2), Rank(3)], Slot::new(1, 8), 8, None);
        assert_eq!(m.drop_peer(Rank(2), true), vec![7]);
        assert_eq!((m.held_from(Rank(2)), m.unexpected_len()), (3, 3), "eager kept, Rts gone");
        assert!(!m.is_posted(7));
        assert!(m.drop_peer(Rank(2), false).is_empty());
        assert_eq!((m.held_from(Rank(2)), m.unexpected_len()), (0, 0));
    }

    /// The bookkeeping of held messages counts at least each held message's record and each
    /// posted receive's id, on every slot and from every peer, and returns to nothing once
    /// they are gone.
    #[test]
    fn bookkeeping_counts_every_held_message() {
        let mut m = Matcher::new();
        assert_eq!(m.bookkeeping_bytes(), 0);
        for i in 0..10 {
            m.arrive(eager(1 + i % 2, i % 3, 4)).unwrap();
        }
        for _ in 0..100 {
            m.arrive(eager(1, 7, 0)).unwrap();
        }
        assert_eq!((m.held_from(Rank(1)), m.held_from(Rank(2))), (105, 5));
        let least = 110 * std::mem::size_of::<Message>();
        let held = m.bookkeeping_bytes();
        assert!(held >= least, "{held} < {least}");
        for r in 0..100 {
            m.post(1000 + r, &[Rank(3)], Slot::new(1, 9), 8, None);
        }
        let posted = m.bookkeeping_bytes() - held;
        let least = 100 * std::mem::size_of::<RecvId>();
        assert!(posted >= least, "{posted} < {least}");
        for r in 0..100 {
            assert!(m.cancel(1000 + r));
        }
        for i in 0..10u32 {
            let out = m.post(u64::from(i), &[Rank(1 + i % 2)], Slot::new(1, i % 3), 8, None);
            assert!(matches!(out, Some(Outcome::Matched { .. })), "{out:?}");
        }
        for r in 0..100 {
            let out = m.post(2000 + r, &[Rank(1)], Slot::new(1, 7), 8, None);
            assert!(matches!(out, Some(Outcome::Matched { .. })), "{out:?}");
        }
        assert_eq!(m.unexpected_len(), 0);
        assert_eq!((m.held_from(Rank(1)), m.held_from(Rank(2))), (0, 0), "taken, still counted");
        assert_eq!(m.bookkeeping_bytes(), 0);
    }
}
