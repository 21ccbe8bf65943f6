//! [`Group`]: a communicator plus the per-tag call counters that make fingerprints, and every
//! collective as a method.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use gloo_transport::{Communicator, Rank};

use crate::average;
use crate::ctx::{
    CallGuard, Ctx, Ops, STEP_P2P, ScratchPool, Watches, byte_ranges, bytes_of, even_ranges,
    partition,
};
use crate::element::{DType, Element, divide_bytes};
use crate::error::{Error, Result};
use crate::fingerprint::{CallInfo, hash_counts};
use crate::options::Options;
use crate::reduce_op::ReduceOp;
use crate::schedules as s;
use crate::select::{Algorithm, Collective, EnvOverrides, choose};
use crate::subgroup::Members;

// The collectives, as methods of `Group` in impl blocks of their own.
mod exchange;
mod p2p;
mod reduce;
mod rooted;

/// Bit 63 of a point-to-point epoch, so that it never equals a collective's call number.
const P2P_EPOCH: u64 = 1 << 63;

/// A communicator ready for collectives: a handle on one tag of it.
///
/// Every message of a collective carries a fingerprint with the handle's tag and its call
/// counter (see [`CallInfo`]), which is how ranks that call different collectives, counts,
/// types, ops, roots or tags get [`Error::Mismatch`] instead of corrupt data or a hang.
/// Every rank must therefore make the same sequence of calls on each tag. After a call
/// fails, the ranks' counters for that tag may disagree: continue on another tag
/// ([`fork`](Group::fork)) or a new group.
///
/// A call that fails may have written part of its output (a collective's data and its checks
/// travel together): after an error, the contents of output buffers are unspecified.
///
/// A collective that times out **revokes the group** (as MPI's ULFM does): the rank aborts
/// the communicator, so every other rank's current or next call fails with
/// `Aborted { by: <that rank> }` instead of finishing the call, or going on, with a rank
/// that gave up (the ranks' call counters would no longer agree). Continue with a new group.
/// A point-to-point [`send`](Group::send) or [`recv`](Group::recv) that times out does not
/// revoke: its operation is withdrawn and the stream stays usable.
///
/// # Threads
///
/// A `Group` is `Send` but not `Sync`: one thread at a time makes calls on it. To run
/// collectives from several threads at once, give each thread its own handle on its own
/// tag with [`fork`](Group::fork); handles share the connections, and calls on distinct
/// tags never see each other's messages. Subgroups ([`split`](Group::split),
/// [`subgroup`](Group::subgroup)) are handles on tags of their own in the same way, so
/// calls on them also run at once with calls on the parent and on other subgroups. Two
/// handles on one tag cannot exist at once, so
/// two threads can never run calls on the same tag concurrently: such calls would pair up
/// differently on different ranks and could return each other's data. Sharing one handle
/// between threads does not compile:
///
/// ```compile_fail
/// fn shared_between_threads<T: Sync>() {}
/// shared_between_threads::<gloo_algorithms::Group<gloo_transport::loopback::LoopbackComm>>();
/// ```
///
/// ```
/// use gloo_algorithms::{Group, Options, ReduceOp};
/// use gloo_transport::loopback::{LoopbackConfig, group};
///
/// let comms = group(3, LoopbackConfig::default());
/// let sums = gloo_transport::threads::run_ranks(comms, |comm| {
///     let g = Group::new(comm).unwrap();
///     let mut v = vec![g.rank().0 as f32; 4];
///     g.allreduce(&mut v, ReduceOp::Sum, &Options::new()).unwrap();
///     v
/// });
/// assert!(sums.iter().all(|v| v == &vec![3.0f32; 4]));
/// ```
pub struct Group<C> {
    pub(crate) shared: Arc<Shared<C>>,
    /// This handle's tag (held in `shared.tags` until the handle drops).
    pub(crate) tag: u32,
    /// The members of a subgroup ([`split`](Group::split), [`subgroup`](Group::subgroup));
    /// `None` for the whole communicator.
    pub(crate) members: Option<Arc<Members>>,
    /// Set while a call runs on this handle: a call that re-enters the handle (from a
    /// custom reduction) is refused with [`Error::Busy`]. Also what makes the handle
    /// `!Sync`.
    in_call: Cell<bool>,
    /// The tag's next call number, and its alarm watch parked between calls: the handle
    /// holds its tag alone, so it keeps both itself while it lives (a call then takes no
    /// lock for them) and hands them back to `shared` when it drops.
    epoch: Cell<u64>,
    pub(crate) watch: Cell<Option<u64>>,
}

/// What every handle on one communicator shares (subgroups included: they are handles on
/// tags of their own over the same communicator).
pub(crate) struct Shared<C> {
    pub(crate) comm: C,
    /// Per tag: whether a handle holds it, and its call counters (kept when a handle drops,
    /// for the next handle on the tag). A `BTreeMap`: a group has a few tags, and every call
    /// looks its tag up, where SipHashing it cost more than the search.
    tags: Mutex<BTreeMap<u32, TagState>>,
    overrides: EnvOverrides,
    pool: ScratchPool,
    /// Alarm watches parked between calls.
    pub(crate) watches: Watches,
    /// Every communicator rank but this one (what a call on the whole communicator
    /// addresses its watch and alarm to).
    peers: Box<[Rank]>,
    /// The non-blocking calls' tags and threads (`nonblocking.rs`).
    background: crate::nonblocking::Background,
}

/// The call counters of one tag.
#[derive(Default)]
pub(crate) struct TagState {
    held: bool,
    /// The next collective's call number.
    pub(crate) epoch: u64,
    /// The next point-to-point call number per (peer, sending).
    p2p: HashMap<(u32, bool), u64>,
}

impl<C> Shared<C> {
    pub(crate) fn tags(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, TagState>> {
        // A poisoned lock only means a panic elsewhere between two updates of plain
        // counters; the map is still consistent.
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<C> Drop for Group<C> {
    fn drop(&mut self) {
        if let Some(t) = self.shared.tags().get_mut(&self.tag) {
            t.held = false;
            t.epoch = self.epoch.get();
        }
        if let Some(id) = self.watch.take() {
            self.shared.watches.park(self.tag, id);
        }
        // The last handle of a subgroup that cannot be made again takes its tags along:
        // their counters, and their parked watches (withdrawn by the next call).
        if let Some(tags) = self.members.take().and_then(Arc::into_inner).and_then(|m| m.retired())
        {
            let mut map = self.shared.tags();
            for tag in tags {
                if map.get(&tag).is_some_and(|t| !t.held) {
                    map.remove(&tag);
                    self.shared.watches.retire(tag);
                }
            }
        }
    }
}

impl<C: std::fmt::Debug> std::fmt::Debug for Group<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("comm", &self.shared.comm)
            .field("tag", &self.tag)
            .field("members", &self.members.as_ref().map(|m| &m.ranks))
            .field("overrides", &self.shared.overrides)
            .finish()
    }
}

/// What a call says about itself before it starts.
struct Call {
    collective: Collective,
    algorithm: Algorithm,
    dtype: Option<DType>,
    op: u8,
    root: Option<usize>,
    count: usize,
    param: u32,
    check: bool,
}

impl Call {
    /// A call of `collective` by `algorithm` over elements of `T` that says nothing else yet:
    /// no op, no root, no count or parameter, no agreement round. Callers state what differs
    /// with struct-update syntax.
    fn new<T: Element>(collective: Collective, algorithm: Algorithm) -> Call {
        Call { dtype: Some(T::DTYPE), ..Call::untyped(collective, algorithm) }
    }

    /// A call that carries no elements (a barrier).
    fn untyped(collective: Collective, algorithm: Algorithm) -> Call {
        Call {
            collective,
            algorithm,
            dtype: None,
            op: 0,
            root: None,
            count: 0,
            param: 0,
            check: false,
        }
    }

    /// The same call with a root. A rooted call also runs the agreement check
    /// ([`Ctx::start_agreement`]), alongside its data, because ranks that disagree on the
    /// root would otherwise wait on each other until the deadline, or finish although
    /// another rank disagrees. The call must end with [`Ctx::finish_agreement`].
    fn rooted(self, root: usize) -> Call {
        Call { root: Some(root), check: true, ..self }
    }
}

fn check_root(c: Collective, root: Rank, n: usize) -> Result<usize> {
    if root.index() >= n {
        return Err(Error::invalid(c, format!("root: {root} is not a rank of this group of {n}")));
    }
    Ok(root.index())
}

pub(crate) fn check_counts(c: Collective, name: &str, counts: &[usize], n: usize) -> Result<usize> {
    if counts.len() != n {
        return Err(Error::invalid(
            c,
            format!(
                "{name}: {} entries for a group of {n} ranks (one per rank is needed)",
                counts.len()
            ),
        ));
    }
    counts
        .iter()
        .try_fold(0usize, |a, &b| a.checked_add(b))
        .filter(|t| t.checked_mul(16).is_some())
        .ok_or_else(|| {
            Error::invalid(c, format!("{name}: the counts add up to more than memory can hold"))
        })
}

fn check_len(c: Collective, name: &str, got: usize, want: usize, why: &str) -> Result<()> {
    if got != want {
        return Err(Error::invalid(c, format!("{name}: {got} elements, but {why} needs {want}")));
    }
    Ok(())
}

/// The block length of a buffer argument `name` of `len` elements split into `n` equal
/// blocks.
fn check_split(c: Collective, name: &str, len: usize, n: usize) -> Result<usize> {
    if !len.is_multiple_of(n) {
        return Err(Error::invalid(
            c,
            format!("{name}: {len} elements do not split into {n} equal blocks"),
        ));
    }
    Ok(len / n)
}

/// A root-only buffer argument: the buffer at the root (where it must be given), an empty
/// one elsewhere (where it is not touched).
fn at_root<B>(c: Collective, name: &str, buf: Option<B>) -> Result<B> {
    buf.ok_or_else(|| {
        Error::invalid(c, format!("{name}: None at the root, which needs the buffer (Some)"))
    })
}

/// A rank's part in a reduce: the root's buffer (its contribution, and where the result
/// goes) or another rank's contribution (left as it was).
enum Part<'b, T> {
    Root(&'b mut [T]),
    Other(&'b [T]),
}

/// A buffer argument as an error names it: its name and its length in elements.
type Arg<'a> = (&'a str, usize);

/// The ring segment in bytes: whole elements, at least one.
fn segment(opts: &Options, es: usize) -> usize {
    (opts.segment_bytes / es).max(1) * es
}

/// The segment as it goes into a fingerprint (saturated: only equality matters there).
fn seg_param(seg: usize) -> u32 {
    u32::try_from(seg).unwrap_or(u32::MAX)
}

fn as_bytes<T: Element>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

fn as_bytes_mut<T: Element>(v: &mut [T]) -> &mut [u8] {
    bytemuck::cast_slice_mut(v)
}

fn es<T>() -> usize {
    std::mem::size_of::<T>()
}

impl<C: Communicator> Group<C> {
    /// Wrap a connected communicator (as the handle on tag 0), reading the
    /// `GLOO_ALGORITHM_<COLLECTIVE>` environment variables (an unknown algorithm name there
    /// is an error listing the valid ones).
    pub fn new(comm: C) -> Result<Group<C>> {
        Ok(Group::with_overrides(comm, EnvOverrides::from_env()?))
    }

    /// Wrap a communicator with explicit algorithm overrides instead of the environment's.
    pub fn with_overrides(comm: C, overrides: EnvOverrides) -> Group<C> {
        let me = comm.rank();
        let peers = (0..comm.size()).map(Rank).filter(|&r| r != me).collect();
        let shared = Shared {
            peers,
            comm,
            tags: Mutex::new(BTreeMap::from([(0, TagState { held: true, ..TagState::default() })])),
            overrides,
            pool: ScratchPool::default(),
            watches: Watches::default(),
            background: Default::default(),
        };
        Group::handle(Arc::new(shared), 0, None)
    }

    /// A handle on `tag`, just marked held in `shared.tags`: it takes the tag's call counter
    /// and parked watch from the shared maps, to keep while it lives.
    fn handle(shared: Arc<Shared<C>>, tag: u32, members: Option<Arc<Members>>) -> Group<C> {
        let epoch = Cell::new(shared.tags().get(&tag).map_or(0, |t| t.epoch));
        let watch = Cell::new(shared.watches.take(tag));
        Group { shared, tag, members, in_call: Cell::new(false), epoch, watch }
    }

    /// A handle on `tag` of the same communicator, for another thread: calls on it run
    /// concurrently with calls on other tags, over the same connections. Fails with
    /// [`Error::TagInUse`] while another handle holds `tag`; once that handle is dropped,
    /// a new one continues the tag's call counters (so every rank must drop and fork in
    /// the same order, as with calls).
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options, ReduceOp};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    ///
    /// let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |comm| {
    ///     let g = Group::new(comm).unwrap();
    ///     let side = g.fork(1).unwrap();
    ///     std::thread::scope(|s| {
    ///         let t = s.spawn(move || {
    ///             let mut v = [1u32];
    ///             side.allreduce(&mut v, ReduceOp::Sum, &Options::new()).unwrap();
    ///             v[0]
    ///         });
    ///         let mut w = [10u32];
    ///         g.allreduce(&mut w, ReduceOp::Sum, &Options::new()).unwrap();
    ///         (w[0], t.join().unwrap())
    ///     })
    /// });
    /// assert_eq!(out, vec![(20, 2); 2]);
    /// ```
    ///
    /// On the whole communicator, `tag` is the tag itself, below 2³¹ (tags from 2³¹ up are
    /// reserved for subgroups: a larger one is [`Error::InvalidGroup`]). On a subgroup,
    /// `tag` numbers the subgroup's own tags: 0 is the one it was made with, and another is
    /// mapped to a reserved tag derived from that one (see [`split`](Group::split)), so a
    /// subgroup's forks never share a tag with the parent's.
    pub fn fork(&self, tag: u32) -> Result<Group<C>> {
        let tag = crate::subgroup::fork_tag(self.members.as_deref(), tag)?;
        self.claim(tag, self.members.clone())
    }

    /// A new handle on `tag` for the given members, once no handle holds the tag.
    pub(crate) fn claim(&self, tag: u32, members: Option<Arc<Members>>) -> Result<Group<C>> {
        let mut tags = self.shared.tags();
        let state = tags.entry(tag).or_default();
        if state.held {
            return Err(Error::TagInUse { tag });
        }
        state.held = true;
        drop(tags);
        Ok(Group::handle(Arc::clone(&self.shared), tag, members))
    }

    /// The non-blocking calls' state, shared by every handle on the communicator.
    pub(crate) fn background(&self) -> &crate::nonblocking::Background {
        &self.shared.background
    }

    /// This handle's tag: the one its messages travel on (for a subgroup, a reserved tag
    /// derived from its parent's, see [`split`](Group::split)).
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// The call number of this handle's next collective.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    /// The communicator (the whole of it, for a subgroup too).
    pub fn comm(&self) -> &C {
        &self.shared.comm
    }

    /// Unwrap the communicator; gives the handle back while other handles
    /// ([`fork`](Group::fork)) on the communicator are alive.
    pub fn into_inner(self) -> std::result::Result<C, Group<C>> {
        // Only a handle can fork another, so when this is the only one, nothing can make
        // another while we unwrap.
        if Arc::strong_count(&self.shared) > 1 {
            return Err(self);
        }
        let (shared, tag) = (Arc::clone(&self.shared), self.tag);
        drop(self);
        match Arc::try_unwrap(shared) {
            Ok(shared) => {
                shared.watches.cancel_all(&shared.comm);
                Ok(shared.comm)
            }
            // Not reached (see the count above); if it were, hold the tag again and give
            // the handle back rather than lose the communicator.
            Err(shared) => {
                shared.tags().entry(tag).or_default().held = true;
                Err(Group::handle(shared, tag, None))
            }
        }
    }

    /// This rank (in a subgroup, its rank there).
    pub fn rank(&self) -> Rank {
        match &self.members {
            Some(m) => Rank(m.me as u32),
            None => self.shared.comm.rank(),
        }
    }

    /// The number of ranks (of the subgroup, for a subgroup).
    pub fn size(&self) -> u32 {
        match &self.members {
            // At most the communicator's size, which is a u32.
            Some(m) => m.ranks.len() as u32,
            None => self.shared.comm.size(),
        }
    }

    fn n(&self) -> usize {
        self.size() as usize
    }

    /// A call's context on this handle's communicator, addressed through the subgroup's
    /// members if this is a subgroup.
    fn ctx(&self, c: Collective, fp: gloo_transport::Fingerprint, opts: &Options) -> Ctx<'_> {
        // One reading of the clock for the call's start and its deadline.
        let now = std::time::Instant::now();
        let s = &*self.shared;
        let mut ctx = Ctx::new(&s.comm, c, self.tag, fp, opts.deadline_from(now), now, &s.peers);
        if let Some(m) = &self.members {
            ctx.set_members(m);
        }
        ctx
    }

    /// The algorithm for a call: the option, else the environment, else the table.
    fn algorithm(&self, c: Collective, bytes: usize, opts: &Options) -> Result<Algorithm> {
        if opts.bcube_base < 2 {
            return Err(Error::invalid(c, format!("bcube_base: {} (at least 2)", opts.bcube_base)));
        }
        if let Some(a) = opts.algorithm {
            if !c.algorithms().contains(&a) {
                return Err(Error::UnknownAlgorithm {
                    collective: c,
                    source: "Options::algorithm".to_string(),
                    name: a.name().to_string(),
                    valid: c.algorithm_names(),
                });
            }
            return Ok(a);
        }
        if let Some(a) = self.shared.overrides.algorithm(c) {
            return Ok(a);
        }
        Ok(choose(c, self.size(), bytes as u64))
    }

    /// Mark a call of `collective` as running on this handle, or fail with
    /// [`Error::Busy`] if one already is (a custom reduction calling back into the group).
    fn hold(&self, collective: Collective) -> Result<CallGuard<'_>> {
        CallGuard::take(&self.in_call).ok_or(Error::Busy { collective, tag: self.tag })
    }

    /// Start a call: take the tag's next call number and build the context.
    fn begin(&self, call: Call, opts: &Options) -> Result<Ctx<'_>> {
        let busy = self.hold(call.collective)?;
        let epoch = self.epoch.get();
        self.epoch.set(epoch + 1);
        let mut info = CallInfo::new(
            call.collective,
            call.dtype,
            call.op,
            call.algorithm,
            call.root.map(|r| r as u32),
            call.count as u64,
            self.tag,
            call.param,
        );
        info.epoch = epoch;
        tracing::trace!(rank = self.rank().0, call = %info, "collective");
        // Set in place: the context is large, and each by-value builder step moved it.
        let mut ctx = self.ctx(call.collective, info.encode(), opts);
        ctx.set_busy(busy);
        ctx.set_pool(&self.shared.pool);
        ctx.set_watch(&self.watch, &self.shared.watches);
        if call.check {
            ctx.start_agreement();
        }
        Ok(ctx)
    }

    /// Checks a per-rank `counts` argument and the buffers it describes: `own` (if given)
    /// must hold `counts[rank]` elements, `whole` (if given) the counts' sum, and its third
    /// part says why. Returns the sum.
    fn check_blocks(
        &self,
        c: Collective,
        counts: &[usize],
        own: Option<Arg<'_>>,
        whole: Option<(&str, usize, &str)>,
    ) -> Result<usize> {
        let total = check_counts(c, "counts", counts, self.n())?;
        if let Some((name, len)) = own {
            check_len(c, name, len, counts[self.rank().index()], "counts[rank]")?;
        }
        if let Some((name, len, why)) = whole {
            check_len(c, name, len, total, why)?;
        }
        Ok(total)
    }

    /// A root-only buffer argument: `buf` at the root (which must give one), an empty
    /// buffer at the other ranks (whatever they gave is left alone).
    fn root_buffer<B: Default>(
        &self,
        c: Collective,
        root: Rank,
        name: &str,
        buf: Option<B>,
    ) -> Result<B> {
        let r = check_root(c, root, self.n())?;
        if self.rank().index() == r { at_root(c, name, buf) } else { Ok(B::default()) }
    }

    /// The start of gather and scatter and their v forms, which differ only in which buffer
    /// is this rank's block (`own`) and which is the root's whole (`whole`, checked at the
    /// root only). Returns the context, the root's index, the blocks' sizes in bytes and the
    /// algorithm.
    fn start_rooted<T: Element>(
        &self,
        c: Collective,
        counts: &[usize],
        root: Rank,
        own: Arg<'_>,
        whole: (&str, usize, &str),
        opts: &Options,
    ) -> Result<(Ctx<'_>, usize, Vec<usize>, Algorithm)> {
        let root = check_root(c, root, self.n())?;
        let at_root = self.rank().index() == root;
        let total = self.check_blocks(c, counts, Some(own), at_root.then_some(whole))?;
        let algorithm = self.algorithm(c, total * es::<T>(), opts)?;
        // The equal-block forms say their block; the v forms their total and counts.
        let (count, param) = if matches!(c, Collective::Gather | Collective::Scatter) {
            (own.1, 0)
        } else {
            (total, hash_counts(counts))
        };
        let call = Call { count, param, ..Call::new::<T>(c, algorithm) }.rooted(root);
        let ctx = self.begin(call, opts)?;
        let sizes = counts.iter().map(|k| k * es::<T>()).collect();
        Ok((ctx, root, sizes, algorithm))
    }
}

/// Elements of `count` split over `parts` as the ring and halving-doubling split them (for
/// tests and tools that want to know which rank computes which block).
pub fn block_ranges(count: usize, parts: usize) -> Vec<Range<usize>> {
    partition(count, parts)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn counts_are_checked() {
        let c = Collective::Gatherv;
        assert!(check_counts(c, "counts", &[1, 2], 3).is_err());
        assert_eq!(check_counts(c, "counts", &[1, 2, 3], 3).unwrap(), 6);
        let e = check_counts(c, "counts", &[usize::MAX, 2], 2).unwrap_err();
        assert!(e.to_string().contains("counts"), "{e}");
    }

    /// The watches parked on the communicator of `handles`: those kept by the handles and
    /// those given back by dropped ones.
    pub(crate) fn parked_watches<C>(handles: &[&Group<C>]) -> usize {
        let kept = handles.iter().filter(|h| h.watch.get().is_some()).count();
        handles[0].shared.watches.len() + kept
    }

    /// Calls on a tag leave one alarm watch parked between them (the next call takes it and
    /// puts it back), and another tag parks its own. The handle keeps its tag's watch, gives
    /// it back when it drops, and the next handle on the tag takes that same watch.
    #[test]
    fn each_tag_keeps_one_watch_parked_between_calls() {
        use gloo_transport::loopback::{LoopbackConfig, group};
        let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |c| {
            let g = Group::new(c).unwrap();
            let opts = Options::new();
            let mut parked = vec![parked_watches(&[&g])];
            for _ in 0..3 {
                g.barrier(&opts).unwrap();
                parked.push(parked_watches(&[&g]));
            }
            let other = g.fork(5).unwrap();
            other.barrier(&opts).unwrap();
            parked.push(parked_watches(&[&g, &other]));
            let id = other.watch.get();
            drop(other);
            parked.push(g.shared.watches.len());
            let again = g.fork(5).unwrap();
            assert!(id.is_some() && again.watch.get() == id, "the same watch is taken again");
            parked.push(g.shared.watches.len());
            // Not counted: a rank that returns closes its communicator, and a watch still
            // out with its peer then fails and is not parked. This keeps the peer until
            // both have counted.
            g.barrier(&opts).unwrap();
            parked
        });
        assert_eq!(out, vec![vec![0, 1, 1, 1, 2, 1, 0]; 2]);
    }

    #[test]
    fn segment_is_whole_elements() {
        let o = Options::new().with_segment_bytes(10);
        assert_eq!(segment(&o, 4), 8);
        assert_eq!(segment(&o.clone().with_segment_bytes(0), 8), 8);
    }
}
