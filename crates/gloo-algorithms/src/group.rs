//! [`Group`]: a communicator plus the per-tag call counters that make fingerprints, and every
//! collective as a method.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use gloo_transport::{Communicator, Rank};

use crate::average;
use crate::ctx::{
    CallGuard, Ctx, Ops, STEP_P2P, ScratchPool, Watches, byte_ranges, bytes_of, partition,
};
use crate::element::{DType, Element, divide_bytes};
use crate::error::{Error, Result};
use crate::fingerprint::{CallInfo, hash_counts};
use crate::options::Options;
use crate::reduce_op::ReduceOp;
use crate::schedules as s;
use crate::select::{Algorithm, Collective, EnvOverrides, choose};
use crate::subgroup::Members;

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
}

/// What every handle on one communicator shares (subgroups included: they are handles on
/// tags of their own over the same communicator).
pub(crate) struct Shared<C> {
    pub(crate) comm: C,
    /// Per tag: whether a handle holds it, and its call counters (kept when a handle drops,
    /// for the next handle on the tag).
    tags: Mutex<HashMap<u32, TagState>>,
    overrides: EnvOverrides,
    pool: ScratchPool,
    /// Alarm watches parked between calls.
    pub(crate) watches: Watches,
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
    pub(crate) fn tags(&self) -> std::sync::MutexGuard<'_, HashMap<u32, TagState>> {
        // A poisoned lock only means a panic elsewhere between two updates of plain
        // counters; the map is still consistent.
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<C> Drop for Group<C> {
    fn drop(&mut self) {
        if let Some(t) = self.shared.tags().get_mut(&self.tag) {
            t.held = false;
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

fn check_counts(c: Collective, name: &str, counts: &[usize], n: usize) -> Result<usize> {
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
        let shared = Shared {
            comm,
            tags: Mutex::new(HashMap::from([(0, TagState { held: true, ..TagState::default() })])),
            overrides,
            pool: ScratchPool::default(),
            watches: Watches::default(),
            background: Default::default(),
        };
        Group { shared: Arc::new(shared), tag: 0, members: None, in_call: Cell::new(false) }
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
        Ok(Group { shared: Arc::clone(&self.shared), tag, members, in_call: Cell::new(false) })
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
                Err(Group { shared, tag, members: None, in_call: Cell::new(false) })
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
        let ctx = Ctx::new(&self.shared.comm, c, self.tag, fp, opts.deadline_from_now());
        match &self.members {
            Some(m) => ctx.with_members(&m.ranks, m.me),
            None => ctx,
        }
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
        let epoch = {
            let mut tags = self.shared.tags();
            let state = tags.entry(self.tag).or_default();
            let v = state.epoch;
            state.epoch += 1;
            v
        };
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
        let ctx = self
            .ctx(call.collective, info.encode(), opts)
            .with_busy(busy)
            .with_pool(&self.shared.pool)
            .with_watches(&self.shared.watches);
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

    // -----------------------------------------------------------------------------------
    // Allreduce
    // -----------------------------------------------------------------------------------

    /// Reduce `buf` across all ranks, in place: afterwards every rank holds the same
    /// (bitwise-identical) result.
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options, ReduceOp};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    /// let out = gloo_transport::threads::run_ranks(group(4, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let mut v = [g.rank().0 as i64, 1];
    ///     g.allreduce(&mut v, ReduceOp::Max, &Options::new()).unwrap();
    ///     v
    /// });
    /// assert_eq!(out, vec![[3, 1]; 4]);
    /// ```
    pub fn allreduce<T: Element>(
        &self,
        buf: &mut [T],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        self.allreduce_parts(buf, &mut [], op, opts)
    }

    /// Allreduce of `first` with this rank's `rest` reduced into it first (the rest are not
    /// written).
    fn allreduce_parts<T: Element>(
        &self,
        first: &mut [T],
        rest: &mut [&mut [T]],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Allreduce;
        let n = self.n();
        let bytes = std::mem::size_of_val(first);
        let algorithm = self.algorithm(c, bytes, opts)?;
        let seg = segment(opts, es::<T>());
        let param = match algorithm {
            Algorithm::Ring => seg_param(seg),
            Algorithm::Bcube => opts.bcube_base,
            _ => 0,
        };
        let call = Call { op: op.id(), count: first.len(), param, ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        let run = |b: &mut [u8], es: usize, f: &dyn Fn(&mut [u8], &[u8])| -> Result<()> {
            match algorithm {
                Algorithm::Ring => s::allreduce_ring(&ctx, b, es, f, segment(opts, es)),
                Algorithm::HalvingDoubling => s::allreduce_halving_doubling(&ctx, b, es, f),
                Algorithm::Bcube => s::allreduce_bcube(&ctx, b, es, f, opts.bcube_base as usize),
                _ => s::allreduce_recursive_doubling(&ctx, b, f),
            }
        };
        if matches!(op, ReduceOp::Average) && T::INTEGER {
            // Exact: quotient and remainder records (see `average`).
            if average::divisor(n as u32, 1 + rest.len()).is_none() {
                return Err(Error::invalid(c, "bufs: too many buffers for an exact average"));
            }
            let mut records = ctx.scratch(first.len() * average::record::<T>());
            average::pack_into(first, rest, n as u32, records.bytes());
            if n > 1 {
                run(records.bytes(), average::record::<T>(), &average::sum::<T>)?;
            }
            average::unpack(records.bytes(), first, n as u32, 1 + rest.len());
            return Ok(());
        }
        for b in rest.iter() {
            op.apply(first, b);
        }
        let f = |d: &mut [u8], s: &[u8]| op.apply_bytes(d, s);
        let b = as_bytes_mut(first);
        if n > 1 {
            run(b, es::<T>(), &f)?;
        }
        if let ReduceOp::Average = op {
            divide_bytes::<T>(b, n as u32);
        }
        Ok(())
    }

    /// Reduce `input` across all ranks into `output` (same length), leaving `input` alone.
    pub fn allreduce_into<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        check_len(
            Collective::Allreduce,
            "output",
            output.len(),
            input.len(),
            "the input's length",
        )?;
        output.copy_from_slice(input);
        self.allreduce(output, op, opts)
    }

    /// Reduce several buffers per rank: this rank's buffers are first reduced locally (in
    /// order), then across ranks, and the result is written to every buffer.
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options, ReduceOp};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    /// let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let (mut a, mut b) = ([1u32, 2], [10u32, 20]);
    ///     g.allreduce_many(&mut [&mut a, &mut b], ReduceOp::Sum, &Options::new()).unwrap();
    ///     (a, b)
    /// });
    /// assert_eq!(out, vec![([22, 44], [22, 44]); 2]);
    /// ```
    pub fn allreduce_many<T: Element>(
        &self,
        bufs: &mut [&mut [T]],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Allreduce;
        let Some((first, rest)) = bufs.split_first_mut() else {
            return Err(Error::invalid(c, "bufs: at least one buffer is needed"));
        };
        for (i, b) in rest.iter().enumerate() {
            check_len(c, &format!("bufs[{}]", i + 1), b.len(), first.len(), "bufs[0]'s length")?;
        }
        self.allreduce_parts(first, rest, op, opts)?;
        for b in rest.iter_mut() {
            b.copy_from_slice(first);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Rooted collectives
    // -----------------------------------------------------------------------------------

    /// Reduce `buf` across all ranks into `root`'s `buf`; other ranks' buffers are left as
    /// they were.
    pub fn reduce<T: Element>(
        &self,
        buf: &mut [T],
        root: Rank,
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let root = check_root(Collective::Reduce, root, self.n())?;
        if self.rank().index() == root {
            self.reduce_run(Part::Root(&mut *buf), root, op, opts)?;
            if let ReduceOp::Average = op
                && !T::INTEGER
            {
                divide_bytes::<T>(as_bytes_mut(buf), self.size());
            }
            Ok(())
        } else {
            self.reduce_run(Part::Other(buf), root, op, opts)
        }
    }

    /// Reduce `input` across all ranks into `root`'s `output`, leaving `input` alone.
    ///
    /// `output` is the root's buffer, as long as `input`: the root passes `Some`, the other
    /// ranks `None` (a buffer they pass anyway is left untouched).
    ///
    /// ```
    /// # use gloo_algorithms::{Group, Options, ReduceOp};
    /// # use gloo_transport::{Rank, loopback::{LoopbackConfig, group}};
    /// # let ranks: Vec<_> = group(3, LoopbackConfig::default()).into_iter().map(|c| {
    /// #     std::thread::spawn(move || {
    /// #         let g = Group::new(c).unwrap();
    /// let root = Rank(0);
    /// let mine = [g.rank().0 + 1; 2];
    /// if g.rank() == root {
    ///     let mut total = [0u32; 2];
    ///     g.reduce_into(&mine, Some(&mut total), root, ReduceOp::Sum, &Options::new())?;
    ///     assert_eq!(total, [6, 6]);
    /// } else {
    ///     g.reduce_into(&mine, None, root, ReduceOp::Sum, &Options::new())?;
    /// }
    /// #         Ok::<(), gloo_algorithms::Error>(())
    /// #     })
    /// # }).collect();
    /// # for r in ranks { r.join().unwrap().unwrap(); }
    /// ```
    pub fn reduce_into<T: Element>(
        &self,
        input: &[T],
        output: Option<&mut [T]>,
        root: Rank,
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Reduce;
        let r = check_root(c, root, self.n())?;
        if self.rank().index() == r {
            let output = at_root(c, "output", output)?;
            check_len(c, "output", output.len(), input.len(), "the input's length (at the root)")?;
            output.copy_from_slice(input);
            self.reduce(output, root, op, opts)
        } else {
            self.reduce_run(Part::Other(input), r, op, opts)
        }
    }

    /// A reduce to `root`, this rank's part being `mine` (for an exact integer average the
    /// root's buffer receives the mean; for a float average it receives the sum, which the
    /// caller divides).
    fn reduce_run<T: Element>(
        &self,
        mine: Part<'_, T>,
        root: usize,
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Reduce;
        let n = self.n();
        let count = match &mine {
            Part::Root(b) => b.len(),
            Part::Other(b) => b.len(),
        };
        let algorithm = self.algorithm(c, count * es::<T>(), opts)?;
        let seg = segment(opts, es::<T>());
        let call =
            Call { op: op.id(), count, param: seg_param(seg), ..Call::new::<T>(c, algorithm) }
                .rooted(root);
        let ctx = self.begin(call, opts)?;
        if matches!(op, ReduceOp::Average) && T::INTEGER {
            // Exact: quotient and remainder records (see `average`).
            let (rec, nn) = (average::record::<T>(), n as u32);
            let mut records = ctx.scratch(count * rec);
            let values: &[T] = match &mine {
                Part::Root(b) => b,
                Part::Other(b) => b,
            };
            average::pack_into(values, &[], nn, records.bytes());
            if n > 1 {
                let part = match &mine {
                    Part::Root(_) => s::Mine::Root(records.bytes()),
                    Part::Other(_) => s::Mine::Other(records.bytes()),
                };
                s::reduce_tree(&ctx, part, root, &average::sum::<T>, segment(opts, rec))?;
            }
            ctx.finish_agreement()?;
            if let Part::Root(b) = mine {
                average::unpack(records.bytes(), b, nn, 1);
            }
            return Ok(());
        }
        let f = |d: &mut [u8], s: &[u8]| op.apply_bytes(d, s);
        if n > 1 {
            let part = match mine {
                Part::Root(b) => s::Mine::Root(as_bytes_mut(b)),
                Part::Other(b) => s::Mine::Other(as_bytes(b)),
            };
            s::reduce_tree(&ctx, part, root, &f, seg)?;
        }
        ctx.finish_agreement()
    }

    /// Send `root`'s `buf` to every rank's `buf`.
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options};
    /// use gloo_transport::{loopback::{LoopbackConfig, group}, Rank};
    /// let out = gloo_transport::threads::run_ranks(group(3, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let mut v = if g.rank() == Rank(2) { [7u8, 8] } else { [0, 0] };
    ///     g.broadcast(&mut v, Rank(2), &Options::new()).unwrap();
    ///     v
    /// });
    /// assert_eq!(out, vec![[7, 8]; 3]);
    /// ```
    pub fn broadcast<T: Element>(&self, buf: &mut [T], root: Rank, opts: &Options) -> Result<()> {
        let c = Collective::Broadcast;
        let n = self.n();
        let root = check_root(c, root, n)?;
        let algorithm = self.algorithm(c, std::mem::size_of_val(buf), opts)?;
        let seg = segment(opts, es::<T>());
        let param = if algorithm == Algorithm::ScatterAllgather { seg_param(seg) } else { 0 };
        let call = Call { count: buf.len(), param, ..Call::new::<T>(c, algorithm) }.rooted(root);
        let ctx = self.begin(call, opts)?;
        if n > 1 {
            let b = as_bytes_mut(buf);
            match algorithm {
                Algorithm::ScatterAllgather => {
                    s::broadcast_scatter_allgather(&ctx, b, es::<T>(), root, seg)?
                }
                _ => s::broadcast_binomial(&ctx, b, root)?,
            }
        }
        ctx.finish_agreement()
    }

    /// Gather every rank's `input` (all the same length) into `root`'s `output`, in rank
    /// order.
    ///
    /// `output` is the root's buffer of `size × input.len()` elements: the root passes
    /// `Some`, the other ranks `None` (a buffer they pass anyway is left untouched).
    ///
    /// ```
    /// # use gloo_algorithms::{Group, Options};
    /// # use gloo_transport::{Rank, loopback::{LoopbackConfig, group}};
    /// # let ranks: Vec<_> = group(3, LoopbackConfig::default()).into_iter().map(|c| {
    /// #     std::thread::spawn(move || {
    /// #         let g = Group::new(c).unwrap();
    /// let root = Rank(1);
    /// let mine = [g.rank().0 as u8 * 10];
    /// // Only the root holds a buffer for the result.
    /// let mut all = (g.rank() == root).then(|| vec![0u8; g.size() as usize]);
    /// g.gather(&mine, all.as_deref_mut(), root, &Options::new())?;
    /// if let Some(all) = all {
    ///     assert_eq!(all, [0, 10, 20]);
    /// }
    /// #         Ok::<(), gloo_algorithms::Error>(())
    /// #     })
    /// # }).collect();
    /// # for r in ranks { r.join().unwrap().unwrap(); }
    /// ```
    pub fn gather<T: Element>(
        &self,
        input: &[T],
        output: Option<&mut [T]>,
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        let n = self.n();
        self.gather_impl(Collective::Gather, input, output, &vec![input.len(); n], root, opts)
    }

    /// Gather `counts[q]` elements from each rank `q` into `root`'s `output`, in rank order.
    /// Every rank passes the same `counts`; `input.len()` must be `counts[rank]`. `output`
    /// (the sum of the counts) is the root's, as in [`gather`](Self::gather).
    pub fn gatherv<T: Element>(
        &self,
        input: &[T],
        output: Option<&mut [T]>,
        counts: &[usize],
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        self.gather_impl(Collective::Gatherv, input, output, counts, root, opts)
    }

    fn gather_impl<T: Element>(
        &self,
        c: Collective,
        input: &[T],
        output: Option<&mut [T]>,
        counts: &[usize],
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        let own = ("input", input.len());
        let output = self.root_buffer(c, root, "output", output)?;
        let whole = ("output", output.len(), "the sum of the counts (at the root)");
        let (ctx, root, sizes, algorithm) =
            self.start_rooted::<T>(c, counts, root, own, whole, opts)?;
        let out = as_bytes_mut(output);
        match algorithm {
            Algorithm::Direct => s::gather_direct(&ctx, as_bytes(input), out, &sizes, root)?,
            _ => s::gather_binomial(&ctx, as_bytes(input), out, &sizes, root)?,
        }
        ctx.finish_agreement()
    }

    /// Split `root`'s `input` into equal blocks and give block `q` to rank `q`'s `output`.
    ///
    /// `input` is the root's `size × output.len()` elements: the root passes `Some`, the
    /// other ranks `None` (a buffer they pass anyway is not read).
    ///
    /// ```
    /// # use gloo_algorithms::{Group, Options};
    /// # use gloo_transport::{Rank, loopback::{LoopbackConfig, group}};
    /// # let ranks: Vec<_> = group(2, LoopbackConfig::default()).into_iter().map(|c| {
    /// #     std::thread::spawn(move || {
    /// #         let g = Group::new(c).unwrap();
    /// let root = Rank(0);
    /// let mut mine = [0i16; 2];
    /// if g.rank() == root {
    ///     g.scatter(Some(&[1, 2, 3, 4]), &mut mine, root, &Options::new())?;
    /// } else {
    ///     g.scatter(None, &mut mine, root, &Options::new())?;
    /// }
    /// assert_eq!(mine, if g.rank() == root { [1, 2] } else { [3, 4] });
    /// #         Ok::<(), gloo_algorithms::Error>(())
    /// #     })
    /// # }).collect();
    /// # for r in ranks { r.join().unwrap().unwrap(); }
    /// ```
    pub fn scatter<T: Element>(
        &self,
        input: Option<&[T]>,
        output: &mut [T],
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        let n = self.n();
        self.scatter_impl(Collective::Scatter, input, output, &vec![output.len(); n], root, opts)
    }

    /// Give `counts[q]` elements of `root`'s `input` (blocks in rank order) to rank `q`'s
    /// `output`. Every rank passes the same `counts`; `output.len()` must be
    /// `counts[rank]`. `input` (the sum of the counts) is the root's, as in
    /// [`scatter`](Self::scatter).
    pub fn scatterv<T: Element>(
        &self,
        input: Option<&[T]>,
        output: &mut [T],
        counts: &[usize],
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        self.scatter_impl(Collective::Scatterv, input, output, counts, root, opts)
    }

    fn scatter_impl<T: Element>(
        &self,
        c: Collective,
        input: Option<&[T]>,
        output: &mut [T],
        counts: &[usize],
        root: Rank,
        opts: &Options,
    ) -> Result<()> {
        let own = ("output", output.len());
        let input: &[T] = self.root_buffer(c, root, "input", input)?;
        let whole = ("input", input.len(), "size × output (at the root)");
        let (ctx, root, sizes, algorithm) =
            self.start_rooted::<T>(c, counts, root, own, whole, opts)?;
        let inp = as_bytes(input);
        match algorithm {
            Algorithm::Direct => s::scatter_direct(&ctx, inp, as_bytes_mut(output), &sizes, root)?,
            _ => s::scatter_binomial(&ctx, inp, as_bytes_mut(output), &sizes, root)?,
        }
        ctx.finish_agreement()
    }

    // -----------------------------------------------------------------------------------
    // Allgather
    // -----------------------------------------------------------------------------------

    /// Gather every rank's `input` (all the same length) into every rank's `output`
    /// (`size × input.len()`, rank order).
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    /// let out = gloo_transport::threads::run_ranks(group(3, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let mut all = [0u16; 3];
    ///     g.allgather(&[g.rank().0 as u16 * 10], &mut all, &Options::new()).unwrap();
    ///     all
    /// });
    /// assert_eq!(out, vec![[0, 10, 20]; 3]);
    /// ```
    pub fn allgather<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Allgather;
        let n = self.n();
        let want =
            input.len().checked_mul(n).ok_or_else(|| Error::invalid(c, "input: too long"))?;
        check_len(c, "output", output.len(), want, "size × input")?;
        self.allgather_run(Some(input), output, input.len(), opts)
    }

    /// Allgather in place: `buf` is `size × block` elements and this rank's block (at
    /// `rank × block`) already holds its part.
    pub fn allgather_in_place<T: Element>(&self, buf: &mut [T], opts: &Options) -> Result<()> {
        let block = check_split(Collective::Allgather, "buf", buf.len(), self.n())?;
        self.allgather_run(None, buf, block, opts)
    }

    /// Allgather into `buf`, with this rank's block taken from `input`, or already in place.
    fn allgather_run<T: Element>(
        &self,
        input: Option<&[T]>,
        buf: &mut [T],
        block: usize,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Allgather;
        let n = self.n();
        let me = self.rank().index();
        let algorithm = self.algorithm(c, std::mem::size_of_val(buf), opts)?;
        let seg = segment(opts, es::<T>());
        let param = if algorithm == Algorithm::Ring { seg_param(seg) } else { 0 };
        let call = Call { count: block, param, ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        let blocks = byte_ranges(&vec![block; n], es::<T>());
        match (input, algorithm) {
            (Some(input), Algorithm::Ring) if n > 1 => {
                s::allgather_ring_into(&ctx, as_bytes(input), as_bytes_mut(buf), &blocks, seg)
            }
            _ => {
                if let Some(input) = input {
                    buf[me * block..(me + 1) * block].copy_from_slice(input);
                }
                if n == 1 {
                    return Ok(());
                }
                let b = as_bytes_mut(buf);
                match algorithm {
                    Algorithm::Bruck => s::allgather_bruck(&ctx, b, block * es::<T>()),
                    _ => s::allgather_ring(&ctx, b, &blocks, seg),
                }
            }
        }
    }

    /// Gather `counts[q]` elements from each rank `q` into every rank's `output`, in rank
    /// order. Every rank passes the same `counts`; `input.len()` must be `counts[rank]`.
    pub fn allgatherv<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        counts: &[usize],
        opts: &Options,
    ) -> Result<()> {
        let own = ("input", input.len());
        let whole = ("output", output.len(), "the sum of the counts");
        self.check_blocks(Collective::Allgatherv, counts, Some(own), Some(whole))?;
        self.allgatherv_run(Some(input), output, counts, opts)
    }

    /// Allgatherv in place: `buf` holds the blocks in rank order and this rank's block is
    /// already filled.
    pub fn allgatherv_in_place<T: Element>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        opts: &Options,
    ) -> Result<()> {
        let whole = ("buf", buf.len(), "the sum of the counts");
        self.check_blocks(Collective::Allgatherv, counts, None, Some(whole))?;
        self.allgatherv_run(None, buf, counts, opts)
    }

    /// Allgatherv into `buf` (checked), with this rank's block taken from `input`, or
    /// already in place.
    fn allgatherv_run<T: Element>(
        &self,
        input: Option<&[T]>,
        buf: &mut [T],
        counts: &[usize],
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Allgatherv;
        let total = buf.len();
        let algorithm = self.algorithm(c, total * es::<T>(), opts)?;
        let seg = segment(opts, es::<T>());
        let param = hash_counts(counts) ^ seg_param(seg);
        let call = Call { count: total, param, ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        let blocks = byte_ranges(counts, es::<T>());
        match input {
            Some(input) if self.n() > 1 => {
                s::allgather_ring_into(&ctx, as_bytes(input), as_bytes_mut(buf), &blocks, seg)
            }
            _ => {
                if let Some(input) = input {
                    let mine = blocks[self.rank().index()].clone();
                    as_bytes_mut(buf)[mine].copy_from_slice(as_bytes(input));
                }
                if self.n() == 1 {
                    return Ok(());
                }
                s::allgather_ring(&ctx, as_bytes_mut(buf), &blocks, seg)
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Reduce-scatter
    // -----------------------------------------------------------------------------------

    /// Reduce `input` (`size × output.len()` elements) across ranks and give block `rank` of
    /// the result to `output`. Bandwidth-optimal (ring).
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options, ReduceOp};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    /// let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let mut mine = [0i32; 2];
    ///     g.reduce_scatter(&[1, 2, 3, 4], &mut mine, ReduceOp::Sum, &Options::new()).unwrap();
    ///     mine
    /// });
    /// assert_eq!(out, vec![[2, 4], [6, 8]]);
    /// ```
    pub fn reduce_scatter<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::ReduceScatter;
        let n = self.n();
        let block = check_split(c, "input", input.len(), n)?;
        self.reduce_scatter_impl(c, input, output, &vec![block; n], op, opts)
    }

    /// Reduce `input` (the sum of `counts` elements) across ranks and give the `counts[rank]`
    /// elements of block `rank` to `output`.
    pub fn reduce_scatterv<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        counts: &[usize],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        self.reduce_scatter_impl(Collective::ReduceScatterv, input, output, counts, op, opts)
    }

    fn reduce_scatter_impl<T: Element>(
        &self,
        c: Collective,
        input: &[T],
        output: &mut [T],
        counts: &[usize],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<()> {
        let own = ("output", output.len());
        let whole = ("input", input.len(), "the sum of the counts (size × output)");
        self.check_blocks(c, counts, Some(own), Some(whole))?;
        let (ctx, seg, range) = self.reduce_scatter_begin::<T>(c, input.len(), counts, op, opts)?;
        let n = ctx.size;
        if matches!(op, ReduceOp::Average) && T::INTEGER {
            // Exact: quotient and remainder records (see `average`), reduced in place in
            // scratch.
            let (rec, nn) = (average::record::<T>(), n as u32);
            let mut records = ctx.scratch(input.len() * rec);
            average::pack_into(input, &[], nn, records.bytes());
            if n > 1 {
                let blocks = byte_ranges(counts, rec);
                s::reduce_scatter_ring(
                    &ctx,
                    records.bytes(),
                    &blocks,
                    &average::sum::<T>,
                    segment(opts, rec),
                )?;
            }
            average::unpack(&records.bytes()[bytes_of(&range, rec)], output, nn, 1);
            return Ok(());
        }
        let f = |d: &mut [u8], s: &[u8]| op.apply_bytes(d, s);
        let blocks = byte_ranges(counts, es::<T>());
        s::reduce_scatter_ring_into(&ctx, as_bytes(input), as_bytes_mut(output), &blocks, &f, seg)?;
        if let ReduceOp::Average = op {
            divide_bytes::<T>(as_bytes_mut(output), n as u32);
        }
        Ok(())
    }

    /// Start a reduce-scatter of `len` elements split by `counts`: the context, the ring's
    /// segment and the element range of this rank's block.
    fn reduce_scatter_begin<T: Element>(
        &self,
        c: Collective,
        len: usize,
        counts: &[usize],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<(Ctx<'_>, usize, Range<usize>)> {
        let algorithm = self.algorithm(c, len * es::<T>(), opts)?;
        let seg = segment(opts, es::<T>());
        let (count, param) = if c == Collective::ReduceScatter {
            (counts[0], seg_param(seg))
        } else {
            (len, hash_counts(counts) ^ seg_param(seg))
        };
        let call = Call { op: op.id(), count, param, ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        let me = ctx.rank;
        let start: usize = counts[..me].iter().sum();
        Ok((ctx, seg, start..start + counts[me]))
    }

    /// Reduce-scatter in place over equal blocks (`buf.len()` divisible by the size); returns
    /// the element range of `buf` that holds this rank's result (the rest is clobbered).
    pub fn reduce_scatter_in_place<T: Element>(
        &self,
        buf: &mut [T],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<Range<usize>> {
        let c = Collective::ReduceScatter;
        let n = self.n();
        let block = check_split(c, "buf", buf.len(), n)?;
        self.reduce_scatter_run(c, buf, &vec![block; n], op, opts)
    }

    /// Reduce-scatter in place with per-rank counts; returns the element range of `buf` that
    /// holds this rank's result (the rest is clobbered).
    pub fn reduce_scatterv_in_place<T: Element>(
        &self,
        buf: &mut [T],
        counts: &[usize],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<Range<usize>> {
        let c = Collective::ReduceScatterv;
        self.check_blocks(c, counts, None, Some(("buf", buf.len(), "the sum of the counts")))?;
        self.reduce_scatter_run(c, buf, counts, op, opts)
    }

    fn reduce_scatter_run<T: Element>(
        &self,
        c: Collective,
        buf: &mut [T],
        counts: &[usize],
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<Range<usize>> {
        let (ctx, seg, range) = self.reduce_scatter_begin::<T>(c, buf.len(), counts, op, opts)?;
        let n = ctx.size;
        if matches!(op, ReduceOp::Average) && T::INTEGER {
            // Exact: quotient and remainder records (see `average`).
            let (rec, nn) = (average::record::<T>(), n as u32);
            let mut records = ctx.scratch(buf.len() * rec);
            average::pack_into(buf, &[], nn, records.bytes());
            if n > 1 {
                let blocks = byte_ranges(counts, rec);
                s::reduce_scatter_ring(
                    &ctx,
                    records.bytes(),
                    &blocks,
                    &average::sum::<T>,
                    segment(opts, rec),
                )?;
            }
            average::unpack(
                &records.bytes()[bytes_of(&range, rec)],
                &mut buf[range.clone()],
                nn,
                1,
            );
            return Ok(range);
        }
        let f = |d: &mut [u8], s: &[u8]| op.apply_bytes(d, s);
        let b = as_bytes_mut(buf);
        if n > 1 {
            let blocks = byte_ranges(counts, es::<T>());
            s::reduce_scatter_ring(&ctx, b, &blocks, &f, seg)?;
        }
        if let ReduceOp::Average = op {
            divide_bytes::<T>(&mut b[bytes_of(&range, es::<T>())], n as u32);
        }
        Ok(range)
    }

    // -----------------------------------------------------------------------------------
    // Alltoall
    // -----------------------------------------------------------------------------------

    /// Send block `q` of `input` to rank `q`, which stores it as block `rank` of its
    /// `output` (both `size × block` elements).
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options};
    /// use gloo_transport::loopback::{LoopbackConfig, group};
    /// let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let r = g.rank().0 as u8;
    ///     let mut got = [0u8; 2];
    ///     g.alltoall(&[r * 10, r * 10 + 1], &mut got, &Options::new()).unwrap();
    ///     got
    /// });
    /// assert_eq!(out, vec![[0, 10], [1, 11]]);
    /// ```
    pub fn alltoall<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Alltoall;
        let n = self.n();
        check_len(c, "output", output.len(), input.len(), "the input's length")?;
        let block = check_split(c, "input", input.len(), n)?;
        let algorithm = self.algorithm(c, std::mem::size_of_val(input), opts)?;
        let seg = segment(opts, es::<T>());
        let call = Call { count: block, param: seg_param(seg), ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        let blocks = byte_ranges(&vec![block; n], es::<T>());
        let fp = ctx.fp;
        s::alltoall_pairwise(
            &ctx,
            as_bytes(input),
            &blocks,
            as_bytes_mut(output),
            &blocks,
            seg,
            &|_, _| (fp, fp),
        )
    }

    /// Send `send_counts[q]` elements (blocks of `input` in rank order) to each rank `q`, and
    /// receive `recv_counts[q]` elements from each rank `q` into `output` (rank order).
    /// Rank `a`'s `send_counts[b]` must equal rank `b`'s `recv_counts[a]`; a disagreement is
    /// a [`Mismatch`](Error::Mismatch) naming both counts.
    pub fn alltoallv<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        send_counts: &[usize],
        recv_counts: &[usize],
        opts: &Options,
    ) -> Result<()> {
        let c = Collective::Alltoallv;
        let n = self.n();
        let st = check_counts(c, "send_counts", send_counts, n)?;
        let rt = check_counts(c, "recv_counts", recv_counts, n)?;
        check_len(c, "input", input.len(), st, "the sum of send_counts")?;
        check_len(c, "output", output.len(), rt, "the sum of recv_counts")?;
        let me = self.rank().index();
        if send_counts[me] != recv_counts[me] {
            return Err(Error::invalid(
                c,
                format!(
                    "send_counts[{me}] = {} but recv_counts[{me}] = {} (this rank's block to itself)",
                    send_counts[me], recv_counts[me]
                ),
            ));
        }
        let algorithm = self.algorithm(c, std::mem::size_of_val(input), opts)?;
        let seg = segment(opts, es::<T>());
        let call = Call { param: seg_param(seg), ..Call::new::<T>(c, algorithm) };
        let ctx = self.begin(call, opts)?;
        // Per-pair fingerprints carry each pair's count, so that a disagreement is a
        // Mismatch naming both counts; every pair exchanges directly, so no watch is needed.
        ctx.without_watch();
        let info = CallInfo::decode(&ctx.fp);
        let with_count = |k: usize| {
            let mut i = info;
            i.count = k as u64;
            i.encode()
        };
        let fps =
            |to: usize, from: usize| (with_count(send_counts[to]), with_count(recv_counts[from]));
        s::alltoall_pairwise(
            &ctx,
            as_bytes(input),
            &byte_ranges(send_counts, es::<T>()),
            as_bytes_mut(output),
            &byte_ranges(recv_counts, es::<T>()),
            seg,
            &fps,
        )
    }

    // -----------------------------------------------------------------------------------
    // Barrier and point-to-point
    // -----------------------------------------------------------------------------------

    /// Return once every rank has entered the barrier.
    pub fn barrier(&self, opts: &Options) -> Result<()> {
        let c = Collective::Barrier;
        let algorithm = self.algorithm(c, 0, opts)?;
        let ctx = self.begin(Call::untyped(c, algorithm), opts)?;
        s::barrier_dissemination(&ctx)
    }

    fn p2p_ctx(&self, peer: Rank, sending: bool, dtype: DType, opts: &Options) -> Result<Ctx<'_>> {
        let c = Collective::SendRecv;
        let n = self.n();
        let what = if sending { "to" } else { "from" };
        if peer.index() >= n {
            return Err(Error::invalid(
                c,
                format!("{what}: {peer} is not a rank of this group of {n}"),
            ));
        }
        if peer == self.rank() {
            return Err(Error::invalid(c, format!("{what}: {peer} is this rank")));
        }
        if let Some(a) = opts.algorithm
            && a != Algorithm::Direct
        {
            return Err(Error::UnknownAlgorithm {
                collective: c,
                source: "Options::algorithm".to_string(),
                name: a.name().to_string(),
                valid: c.algorithm_names(),
            });
        }
        let busy = self.hold(c)?;
        let epoch = {
            let mut tags = self.shared.tags();
            let e = tags.entry(self.tag).or_default().p2p.entry((peer.0, sending)).or_insert(0);
            let v = *e;
            *e += 1;
            v
        };
        let mut info = CallInfo::new(c, Some(dtype), 0, Algorithm::Direct, None, 0, self.tag, 0);
        info.epoch = epoch | P2P_EPOCH;
        Ok(self.ctx(c, info.encode(), opts).with_busy(busy))
    }

    /// Send `buf` to rank `to` (matched by the `n`-th [`recv`](Self::recv) from this rank on
    /// the same tag there).
    pub fn send<T: Element>(&self, to: Rank, buf: &[T], opts: &Options) -> Result<()> {
        let ctx = self.p2p_ctx(to, true, T::DTYPE, opts)?;
        let mut ops = Ops::new();
        ops.push(ctx.send(to.index(), STEP_P2P, as_bytes(buf)));
        ctx.run(ops)
    }

    /// Receive one message from rank `from` into `buf` (which may be longer than the message);
    /// returns the number of elements received.
    ///
    /// ```
    /// use gloo_algorithms::{Group, Options};
    /// use gloo_transport::{loopback::{LoopbackConfig, group}, Rank};
    /// let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |c| {
    ///     let g = Group::new(c).unwrap();
    ///     let mut buf = [0f64; 4];
    ///     if g.rank() == Rank(0) {
    ///         g.send(Rank(1), &[1.5, 2.5], &Options::new()).unwrap();
    ///         0
    ///     } else {
    ///         g.recv(Rank(0), &mut buf, &Options::new()).unwrap()
    ///     }
    /// });
    /// assert_eq!(out, vec![0, 2]);
    /// ```
    pub fn recv<T: Element>(&self, from: Rank, buf: &mut [T], opts: &Options) -> Result<usize> {
        let ctx = self.p2p_ctx(from, false, T::DTYPE, opts)?;
        let mut ops = [ctx.recv(from.index(), STEP_P2P, as_bytes_mut(buf))];
        if let Err(e) = ctx.comm.run(&mut ops, ctx.deadline) {
            return Err(ctx.fail(e));
        }
        let len = ops[0].completed().map_or(0, |(_, len)| len);
        if len % es::<T>() != 0 {
            return Err(Error::LengthMismatch {
                collective: Collective::SendRecv,
                peer: self.comm_rank(from.index()),
                slot: ctx.slot(STEP_P2P),
                expected: len.next_multiple_of(es::<T>()),
                received: len,
            });
        }
        Ok(len / es::<T>())
    }
}

/// Elements of `count` split over `parts` as the ring and halving-doubling split them (for
/// tests and tools that want to know which rank computes which block).
pub fn block_ranges(count: usize, parts: usize) -> Vec<Range<usize>> {
    partition(count, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_checked() {
        let c = Collective::Gatherv;
        assert!(check_counts(c, "counts", &[1, 2], 3).is_err());
        assert_eq!(check_counts(c, "counts", &[1, 2, 3], 3).unwrap(), 6);
        let e = check_counts(c, "counts", &[usize::MAX, 2], 2).unwrap_err();
        assert!(e.to_string().contains("counts"), "{e}");
    }

    #[test]
    fn segment_is_whole_elements() {
        let o = Options::new().with_segment_bytes(10);
        assert_eq!(segment(&o, 4), 8);
        assert_eq!(segment(&o.clone().with_segment_bytes(0), 8), 8);
    }
}
