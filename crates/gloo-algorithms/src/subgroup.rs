//! Subgroups: [`Group::split`] and [`Group::subgroup`] make a [`Group`] of some of a group's
//! ranks over the same communicator (the same connections: no new sockets), on a tag of its
//! own, with its own call counters.
//!
//! A subgroup is a rank map (subgroup rank → communicator rank) that the call context
//! applies wherever an operation is addressed ([`Ctx::set_members`]), so every schedule
//! runs unchanged on it; maps of maps (a split of a split) are composed when the subgroup
//! is made, so a call looks up one map.
//!
//! # Tags
//!
//! Tags below 2³¹ are the whole communicator's ([`Group::fork`] takes them as given). Tags
//! from 2³¹ up are derived, on every member alike and without communication, from the
//! parent handle's tag and what defines the subgroup: for a split, the split's call number
//! on the parent's tag and the color; for a list, the members; for a subgroup's fork `t`,
//! the subgroup's tag and `t`. The tag is therefore the subgroup's identity: ranks that
//! disagree about a subgroup's members use different tags, and a fork of a subgroup never
//! lands on a tag of the parent. A derived tag is a 31-bit hash: two subgroups whose tags
//! collide (about one chance in 2³¹ per pair) cannot be held at once by one process (the
//! second is [`Error::TagInUse`]), and each only ever addresses its own members.
//!
//! [`Ctx::set_members`]: crate::ctx::Ctx::set_members

use std::sync::{Arc, Mutex};

use gloo_transport::{Communicator, Rank};

use crate::error::{Error, Result};
use crate::group::Group;
use crate::options::Options;

/// The first tag reserved for subgroups.
pub(crate) const DERIVED: u32 = 1 << 31;

/// What a derived tag is derived for (hashed with the parent's tag).
const SPLIT: u8 = 1;
const LIST: u8 = 2;
const FORK: u8 = 3;
const BACKGROUND: u8 = 4;

/// The color word of a rank that is in no subgroup of a split (colors are `u32`, so no
/// color maps to it).
const NO_COLOR: u64 = u64::MAX;

/// The members of a subgroup.
pub(crate) struct Members {
    /// The communicator rank of each rank of the subgroup, in subgroup order.
    pub(crate) ranks: Box<[Rank]>,
    /// This process's rank in the subgroup.
    pub(crate) me: usize,
    /// The communicator ranks of the other members, in subgroup order.
    pub(crate) peers: Box<[Rank]>,
    /// The tag the subgroup was made with (its fork 0), from which its forks' tags derive.
    base: u32,
    /// For a subgroup that cannot be made again (a split's: its tags derive from a call
    /// number), the tags its handles have used, forgotten when the last handle drops (so a
    /// program that splits in a loop does not accumulate counters and parked watches).
    /// `None` for a listed subgroup, which can be made again and then continues its
    /// counters.
    used: Option<Mutex<Vec<u32>>>,
}

impl Members {
    /// Remember `tag` among the tags to forget when the last handle drops (a split's).
    fn note_used(&self, tag: u32) {
        if let Some(used) = &self.used {
            let mut used = used.lock().unwrap_or_else(|p| p.into_inner());
            if !used.contains(&tag) {
                used.push(tag);
            }
        }
    }

    /// The tags to forget now that the last handle has dropped.
    pub(crate) fn retired(self) -> Option<Vec<u32>> {
        // A poisoned lock only means a panic while a tag was being pushed; the list is valid.
        self.used.map(|u| u.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A reserved tag for `kind` of the handle on `parent`, defined by `words` (FNV-1a 64 over
/// them, folded to 31 bits).
fn derive(parent: u32, kind: u8, words: impl IntoIterator<Item = u64>) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&parent.to_le_bytes());
    eat(&[kind]);
    for w in words {
        eat(&w.to_le_bytes());
    }
    DERIVED | ((h ^ (h >> 32)) as u32 & !DERIVED)
}

/// The tag of fork `tag` of a handle with `members` (see [`Group::fork`]).
pub(crate) fn fork_tag(members: Option<&Members>, tag: u32) -> Result<u32> {
    match members {
        None if tag >= DERIVED => Err(Error::InvalidGroup {
            what: format!(
                "fork tag {tag}: tags from 2^31 up are reserved for subgroups (fork a \
                 subgroup to get more tags of it)"
            ),
        }),
        None => Ok(tag),
        Some(m) => {
            let t = if tag == 0 { m.base } else { derive(m.base, FORK, [u64::from(tag)]) };
            m.note_used(t);
            Ok(t)
        }
    }
}

/// The tag of slot `slot` of the non-blocking calls issued by the subgroup handle on
/// `issuer` (`nonblocking.rs`): derived from the issuing handle's own tag, as a fork's is
/// from the subgroup's, so two handles of one subgroup never share one.
pub(crate) fn background_tag(m: &Members, issuer: u32, slot: u32) -> u32 {
    let t = derive(issuer, BACKGROUND, [u64::from(slot)]);
    m.note_used(t);
    t
}

impl<C: Communicator> Group<C> {
    /// Split this group into disjoint subgroups, as `MPI_Comm_split` does: the ranks that
    /// pass the same `color` form one subgroup, numbered in the order of their `key`s (ties
    /// in the order of their ranks here); a rank that passes `None` joins none and gets
    /// `Ok(None)`. Every rank of this group must call it (it is a collective: one allgather
    /// of each rank's color and key on this handle's tag, with `opts`' deadline).
    ///
    /// The subgroup shares this group's connections, and has a tag of its own (see
    /// [`fork`](Group::fork)) and call counters of its own, so calls on it, on disjoint
    /// subgroups and on this group can run at once from different threads. A subgroup can
    /// be split again, and forked. Ranks in errors are communicator ranks.
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options, ReduceOp};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    ///
    /// let out = gloo_transport::threads::run_ranks(group(4, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let me = g.rank().0;
    ///     // Evens and odds, each numbered from the highest rank down.
    ///     let sub = g.split(Some(me % 2), -i64::from(me), &Options::new()).unwrap().unwrap();
    ///     let mut v = [me];
    ///     sub.allreduce(&mut v, ReduceOp::Sum, &Options::new()).unwrap();
    ///     (sub.rank().0, sub.size(), v[0])
    /// });
    /// assert_eq!(out, vec![(1, 2, 2), (1, 2, 4), (0, 2, 2), (0, 2, 4)]);
    /// ```
    pub fn split(&self, color: Option<u32>, key: i64, opts: &Options) -> Result<Option<Group<C>>> {
        // The allgather below is the next call on this tag: its call number, the same on
        // every rank, tells this split from the tag's other splits.
        let call = self.epoch();
        let mine = [color.map_or(NO_COLOR, u64::from), key as u64];
        let mut all = vec![0u64; 2 * self.size() as usize];
        self.allgather(&mine, &mut all, opts)?;
        let Some(color) = color else { return Ok(None) };
        let mut chosen: Vec<(i64, usize)> = all
            .chunks_exact(2)
            .enumerate()
            .filter(|(_, e)| e[0] == u64::from(color))
            .map(|(r, e)| (e[1] as i64, r))
            .collect();
        chosen.sort_unstable();
        let ranks = chosen.iter().map(|&(_, r)| self.comm_rank(r)).collect();
        let tag = derive(self.tag, SPLIT, [call, u64::from(color)]);
        self.with_members(ranks, tag, true).map(Some)
    }

    /// The subgroup of the listed ranks of this group, numbered in the list's order (rank
    /// `i` of the subgroup is `ranks[i]` here). Local: nothing is sent. Every listed rank
    /// must make it, with the same list, on a handle on the same tag (the subgroup's tag is
    /// derived from that tag and the list, see [`split`](Group::split)); making it again
    /// once it is dropped continues its call counters, as [`fork`](Group::fork) does.
    ///
    /// A rank not in the list gets [`Error::NotAMember`]; an empty list, a rank out of
    /// range or listed twice is [`Error::InvalidGroup`]. Ranks whose lists differ use
    /// different tags, so their first call together fails by its deadline (with
    /// [`Error::Mismatch`] naming the peer, or a timeout) instead of pairing up. Where the
    /// ranks could disagree, prefer [`split`](Group::split): it computes the members from
    /// every rank's answer, so they cannot.
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options};
    /// use gloo_transport::{Rank, loopback::{LoopbackConfig, group}};
    ///
    /// let out = gloo_transport::threads::run_ranks(group(3, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     if g.rank() == Rank(1) {
    ///         return None;
    ///     }
    ///     // Ranks 2 and 0, as subgroup ranks 0 and 1.
    ///     let sub = g.subgroup(&[Rank(2), Rank(0)]).unwrap();
    ///     let mut v = [g.rank().0 * 10];
    ///     sub.broadcast(&mut v, Rank(0), &Options::new()).unwrap();
    ///     Some(v[0])
    /// });
    /// assert_eq!(out, vec![Some(20), None, Some(20)]);
    /// ```
    pub fn subgroup(&self, ranks: &[Rank]) -> Result<Group<C>> {
        let n = self.size() as usize;
        if ranks.is_empty() {
            return Err(Error::InvalidGroup { what: "the member list is empty".to_string() });
        }
        let mut listed = vec![false; n];
        for &r in ranks {
            let Some(seen) = listed.get_mut(r.index()) else {
                return Err(Error::InvalidGroup {
                    what: format!("rank {r} is not a rank of this group of {n}"),
                });
            };
            if std::mem::replace(seen, true) {
                return Err(Error::InvalidGroup { what: format!("rank {r} is listed twice") });
            }
        }
        let me = self.rank();
        if !listed[me.index()] {
            return Err(Error::NotAMember { rank: me, members: ranks.to_vec() });
        }
        let comm: Vec<Rank> = ranks.iter().map(|r| self.comm_rank(r.index())).collect();
        let tag = derive(self.tag, LIST, comm.iter().map(|r| u64::from(r.0)));
        self.with_members(comm, tag, false)
    }

    /// The communicator rank of rank `r` of this group.
    pub(crate) fn comm_rank(&self, r: usize) -> Rank {
        self.members.as_ref().map_or(Rank(r as u32), |m| m.ranks[r])
    }

    /// A handle on `tag` for the subgroup of the communicator ranks `ranks` (in subgroup
    /// order), which must include this process; `once` for a subgroup that cannot be made
    /// again (see [`Members::used`]).
    fn with_members(&self, ranks: Vec<Rank>, tag: u32, once: bool) -> Result<Group<C>> {
        let mine = self.shared.comm.rank();
        let Some(me) = ranks.iter().position(|&r| r == mine) else {
            return Err(Error::NotAMember { rank: mine, members: ranks });
        };
        let used = once.then(|| Mutex::new(vec![tag]));
        let peers = ranks.iter().copied().filter(|&r| r != mine).collect();
        self.claim(tag, Some(Arc::new(Members { ranks: ranks.into(), me, peers, base: tag, used })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_tags_are_reserved_and_depend_on_every_input() {
        let t = derive(0, LIST, [0, 1]);
        assert!(t >= DERIVED);
        assert_ne!(t, derive(0, LIST, [1, 0]));
        assert_ne!(t, derive(0, LIST, [0, 1, 2]));
        assert_ne!(t, derive(1, LIST, [0, 1]));
        assert_ne!(t, derive(0, SPLIT, [0, 1]));
        assert_eq!(t, derive(0, LIST, [0, 1]));
    }

    /// A split's subgroup cannot be made again: when its last handle drops, its tags'
    /// counters and parked watches go, so splitting in a loop holds nothing per split. A
    /// listed subgroup keeps its counters for the next time it is made.
    #[test]
    fn a_dropped_split_leaves_nothing_behind_and_a_dropped_list_keeps_its_counters() {
        use crate::ReduceOp;
        use gloo_transport::loopback::{LoopbackConfig, group};
        let out = gloo_transport::threads::run_ranks(group(3, LoopbackConfig::default()), |c| {
            let g = Group::new(c).unwrap();
            let opts = Options::new();
            for i in 0..20u32 {
                let sub = g.split(Some(i % 2), 0, &opts).unwrap().unwrap();
                let side = sub.fork(3).unwrap();
                let mut v = [1u32];
                sub.allreduce(&mut v, ReduceOp::Sum, &opts).unwrap();
                side.allreduce(&mut v, ReduceOp::Sum, &opts).unwrap();
                assert_eq!(v[0], 9);
                assert_eq!(g.shared.tags().len(), 3);
            }
            // The last subgroup's watches go with the next call.
            g.barrier(&opts).unwrap();
            let after_splits = (g.shared.tags().len(), crate::group::tests::parked_watches(&[&g]));
            let list = g.subgroup(&[Rank(0), Rank(1), Rank(2)]).unwrap();
            list.barrier(&opts).unwrap();
            let tag = list.tag();
            drop(list);
            let epoch = g.shared.tags().get(&tag).map(|t| t.epoch);
            (after_splits, epoch)
        });
        // Only tag 0 (whose allgathers made the splits) is left, with its parked watch.
        assert_eq!(out, vec![((1, 1), Some(1)); 3]);
    }

    /// A group over a borrowed communicator can be used where a shorter borrow is expected
    /// (gloo-bench relies on it): `Group` stays covariant in `C`. Compiling is the test.
    #[test]
    fn a_group_is_covariant_in_its_communicator() {
        fn shorter<'a>(
            g: Group<&'static dyn Communicator>,
            _: &'a u8,
        ) -> Group<&'a dyn Communicator> {
            g
        }
        let comm: &'static gloo_transport::loopback::LoopbackComm =
            Box::leak(Box::new(gloo_transport::loopback::group(1, Default::default()).remove(0)));
        let g = shorter(Group::new(comm as &dyn Communicator).unwrap(), &0);
        assert_eq!(g.size(), 1);
    }

    #[test]
    fn forks_of_the_communicator_stay_below_the_reserved_range() {
        assert_eq!(fork_tag(None, 7).unwrap(), 7);
        assert!(matches!(fork_tag(None, DERIVED), Err(Error::InvalidGroup { .. })));
        let base = derive(0, LIST, [0]);
        let m = Members { ranks: vec![Rank(0)].into(), me: 0, peers: [].into(), base, used: None };
        assert_eq!(fork_tag(Some(&m), 0).unwrap(), m.base);
        let f = fork_tag(Some(&m), 7).unwrap();
        assert!(f >= DERIVED && f != m.base);
    }
}
