//! The alarm watch a call keeps posted, and the watches a `Group` parks between calls.

use super::*;

/// The alarm watch's operation on `tag` (its state is set by the caller).
pub(super) fn watch_op(peers: &[Rank], tag: u32) -> Op<'_> {
    Op::recv_any(peers, Slot::new(tag, STEP_ALARM), Default::default()).with_fingerprint(WATCH_FP)
}

/// A parked watch's tag and id, if one is parked.
fn parked((tag, id): (u32, Option<u64>)) -> Option<(u32, u64)> {
    id.map(|id| (tag, id))
}

/// Withdraw the watch posted as `id` on `tag`.
pub(super) fn cancel_posted_watch(comm: &dyn Communicator, peers: &[Rank], tag: u32, id: u64) {
    let mut w = [watch_op(peers, tag)];
    w[0].set_state(OpState::Posted(id));
    comm.cancel(&mut w);
}

/// Alarm watches left posted between calls on tags that no [`Group`](crate::Group) handle
/// holds, by tag (the transport's id of each posted watch). Posting and withdrawing a watch
/// on every call costs a round through the transport's lock (and a wake-up of its other
/// waiters) per call, so a call leaves its watch posted for the next. While a handle holds
/// the tag, it keeps the watch itself (taken from here when it is made, given back when it
/// drops), so that a call takes no lock for it.
#[derive(Default)]
pub(crate) struct Watches {
    /// A `BTreeMap`: a group has a few tags, and SipHashing one cost more than the lookup.
    /// An entry is `None` while a handle holds its watch.
    pub(super) parked: Mutex<BTreeMap<u32, Option<u64>>>,
    /// Watches of tags that no handle will use again (a dropped split subgroup's), to be
    /// withdrawn by the next call on any tag: the handle's `Drop` cannot, as it has no
    /// `C: Communicator` at hand.
    pub(super) retired: Mutex<Vec<(u32, u64)>>,
    /// Whether `retired` may hold any (so that a call looks at one atomic, not a lock).
    pub(super) any_retired: AtomicBool,
}

impl Watches {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Option<u64>>> {
        // A poisoned lock only means a panic elsewhere while the map was held; the map of
        // ids is still valid.
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn lock_retired(&self) -> std::sync::MutexGuard<'_, Vec<(u32, u64)>> {
        // As above: a list of ids stays valid.
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Withdraw every parked watch (before the communicator is handed back to its owner).
    pub(crate) fn cancel_all(&self, comm: &dyn Communicator) {
        let peers: Vec<Rank> = (0..comm.size()).filter(|&p| p != comm.rank().0).map(Rank).collect();
        for (tag, id) in std::mem::take(&mut *self.lock()).into_iter().filter_map(parked) {
            cancel_posted_watch(comm, &peers, tag, id);
        }
        self.withdraw_retired(comm);
    }

    /// Take the watch parked on `tag`, for a new handle on it to keep.
    pub(crate) fn take(&self, tag: u32) -> Option<u64> {
        self.lock().get_mut(&tag).and_then(Option::take)
    }

    /// Park the watch `id` of a handle on `tag` that drops, for the next handle on the tag
    /// (one parked there already, which a handle holding the tag alone never leaves, is set
    /// aside for withdrawal).
    pub(crate) fn park(&self, tag: u32, id: u64) {
        let displaced = self.lock().insert(tag, Some(id)).flatten();
        if let Some(old) = displaced {
            self.lock_retired().push((tag, old));
            self.any_retired.store(true, Ordering::Release);
        }
    }

    /// Set aside the watch parked on `tag`, if any, for withdrawal by the next call (for a
    /// tag no handle will use again).
    pub(crate) fn retire(&self, tag: u32) {
        let parked = self.lock().remove(&tag).flatten();
        if let Some(id) = parked {
            self.lock_retired().push((tag, id));
            // After the push: a call that sees the flag sees the watch.
            self.any_retired.store(true, Ordering::Release);
        }
    }

    /// Withdraw the watches set aside by [`retire`](Watches::retire).
    pub(super) fn withdraw_retired(&self, comm: &dyn Communicator) {
        if !self.any_retired.load(Ordering::Relaxed)
            || !self.any_retired.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let retired = std::mem::take(&mut *self.lock_retired());
        for (tag, id) in retired {
            // The transport withdraws a posted operation by its id; the peers are for show.
            cancel_posted_watch(comm, &[], tag, id);
        }
    }

    /// How many watches are parked or set aside.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().values().flatten().count() + self.lock_retired().len()
    }
}
