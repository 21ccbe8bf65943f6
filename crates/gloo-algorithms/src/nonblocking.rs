//! Non-blocking collectives: a call on an owned buffer returns at once with a [`Handle`],
//! and a background thread of the library runs it while the caller computes.
//!
//! How it is built on the blocking API:
//! - each call runs on a handle of its own (as [`Group::fork`] makes) on a tag the library
//!   assigns: `BACKGROUND_TAGS | issuer << 5 | (sequence mod 32)`, where `issuer` is the tag
//!   of the handle that issued the call and `sequence` counts that handle's non-blocking
//!   calls (on a subgroup, a tag derived from the issuer's tag and the slot instead, in the
//!   subgroups' range; see [`Group::split`]).
//!   Every rank issues the same calls in the same order, so every rank assigns the same tags
//!   without a message; the tag is reused once the call 32 places earlier has finished on
//!   this rank (the tag's call counters carry on, as after any fork);
//! - every call in flight has a thread of its own (threads are kept in a pool and reused, so
//!   back-to-back small calls spawn nothing): a call never waits behind another in a queue,
//!   so calls on different tags cannot wait on each other across ranks;
//! - the thread owns the buffer for the whole call, and gives it back through the handle
//!   only once the collective has returned: no transport can hold a pointer into it after
//!   that, and dropping the handle only drops the way back.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use gloo_transport::{Communicator, Rank};

use crate::element::Element;
use crate::error::{Error, Result};
use crate::group::{Group, check_counts};
use crate::options::Options;
use crate::reduce_op::ReduceOp;
use crate::select::Collective;

/// The first tag of the range reserved for non-blocking calls on the whole communicator:
/// tags from `2^30` to `2^31 - 1` are assigned by the library (see
/// [`Group::start_allreduce`]); tags from `2^31` up are the subgroups' ([`Group::split`]).
/// A handle of yours on one of them ([`Group::fork`]) makes the non-blocking call that
/// needs it fail with [`Error::InvalidArgument`] naming the tag.
pub const BACKGROUND_TAGS: u32 = 1 << 30;

/// How many bits of a background tag number a call within its issuer's window.
const SLOT_BITS: u32 = 5;

/// How many non-blocking calls one handle may have in flight; the next one waits (up to its
/// deadline) until the oldest has finished on this rank.
pub const MAX_IN_FLIGHT: u32 = 1 << SLOT_BITS;

/// Issuing handles' tags must be below this, so that the issuer fits beside the slot
/// below [`BACKGROUND_TAGS`]'s bit.
const ISSUER_LIMIT: u32 = BACKGROUND_TAGS >> SLOT_BITS;

/// How long an idle pool thread waits for work before it ends.
const IDLE: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state behind these locks is plain bookkeeping updated in single statements (and
    // a panic of a user's reduction is caught before it reaches them): still consistent
    // after a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The non-blocking state of a communicator, shared by all its [`Group`] handles and
/// (through the `Arc`) by the calls in flight.
#[derive(Default)]
pub(crate) struct Background {
    inner: Arc<BgInner>,
}

#[derive(Default)]
struct BgInner {
    state: Mutex<IssueState>,
    /// Signalled when a call in flight releases its tag.
    freed: Condvar,
    pool: Pool,
}

#[derive(Default)]
struct IssueState {
    /// Per issuing tag: the sequence number of its next non-blocking call.
    next: HashMap<u32, u64>,
    /// The background tags of the calls in flight on this rank.
    busy: HashSet<u32>,
}

/// A pool of threads that run jobs, one job per thread at a time; a job never waits for a
/// thread (a new one starts when none is idle).
#[derive(Default)]
struct Pool {
    shared: Arc<PoolShared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct PoolShared {
    state: Mutex<PoolState>,
    wake: Condvar,
}

#[derive(Default)]
struct PoolState {
    /// Jobs handed over but not yet taken; never more than `idle` of them wait.
    jobs: Vec<Job>,
    idle: usize,
    closed: bool,
    spawned: u64,
}

impl Pool {
    /// Run `job` on an idle thread, or on a new one. If no thread can be started (the
    /// process is out of threads), run it here: the call blocks, but it still runs.
    fn run(&self, job: Job) {
        let mut st = lock(&self.shared.state);
        if st.idle > st.jobs.len() {
            st.jobs.push(job);
            drop(st);
            self.shared.wake.notify_one();
            return;
        }
        st.spawned += 1;
        let name = format!("gloo-background-{}", st.spawned);
        drop(st);
        let shared = Arc::clone(&self.shared);
        // The job goes to the new thread itself (not through the queue), so no other
        // thread can take it and leave this one idle.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1);
        match thread::Builder::new().name(name).spawn(move || {
            if let Ok(first) = rx.recv() {
                worker(&shared, first);
            }
        }) {
            Ok(h) => {
                // The thread holds `rx` until it has taken the job.
                if let Err(e) = tx.send(job) {
                    (e.0)();
                }
                let mut threads = lock(&self.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(h);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no thread for a non-blocking call: it runs in the caller");
                job();
            }
        }
    }
}

/// A pool thread: run `first`, then whatever it is handed, until idle for [`IDLE`] or the
/// pool closes.
fn worker(shared: &PoolShared, first: Job) {
    first();
    let mut st = lock(&shared.state);
    loop {
        if let Some(job) = st.jobs.pop() {
            drop(st);
            job();
            st = lock(&shared.state);
            continue;
        }
        if st.closed {
            return;
        }
        st.idle += 1;
        let (next, timeout) = shared.wake.wait_timeout(st, IDLE).unwrap_or_else(|p| p.into_inner());
        st = next;
        st.idle -= 1;
        if timeout.timed_out() && st.jobs.is_empty() {
            return;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_all();
        // Every thread is idle or about to be (a running job holds the communicator, so
        // the pool cannot drop under it), except perhaps this one: the last call to
        // finish may be what drops the communicator. That thread ends by itself once
        // its job returns.
        let me: ThreadId = thread::current().id();
        for t in lock(&self.threads).drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

/// What a call in flight hands back: its result, or the panic of a user's reduction.
type Outcome<R> = std::result::Result<Result<R>, Box<dyn Any + Send + 'static>>;

struct Done<R> {
    outcome: Mutex<Option<Outcome<R>>>,
    cv: Condvar,
}

/// A non-blocking collective in flight: [`wait`](Handle::wait) for its result (the buffer
/// back, or the output), or [`try_wait`](Handle::try_wait) / [`is_done`](Handle::is_done)
/// to look without blocking.
///
/// Dropping a handle **detaches** the call: it still runs to its end on this rank (so the
/// ranks stay in step, and later calls pair up as they should) and its buffer is dropped
/// by the library's thread when it ends. Nothing can point into the buffer after that: the
/// thread owns it for the whole call.
#[must_use = "a dropped handle detaches its call: its result (and buffer) is lost"]
pub struct Handle<R> {
    done: Arc<Done<R>>,
    tag: u32,
    collective: Collective,
}

impl<R> std::fmt::Debug for Handle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("collective", &self.collective)
            .field("tag", &self.tag)
            .field("done", &self.is_done())
            .finish()
    }
}

impl<R> Handle<R> {
    /// The tag the library assigned to the call (the same on every rank).
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// The collective.
    pub fn collective(&self) -> Collective {
        self.collective
    }

    /// Whether the call has ended (with a result or an error) on this rank.
    pub fn is_done(&self) -> bool {
        lock(&self.done.outcome).is_some()
    }

    /// Wait for the call to end on this rank: the buffer back (or the output) on success,
    /// the call's typed error otherwise. On an error the buffer is dropped, since its
    /// contents are unspecified then (as after a failed blocking call).
    ///
    /// The wait is bounded by the call's deadline ([`Options`]), counted from when the call
    /// started, which is at once: every call in flight has a thread of its own.
    ///
    /// # Panics
    ///
    /// If a custom reduction ([`Group::start_allreduce_with`]) panicked, its panic resumes
    /// here.
    pub fn wait(self) -> Result<R> {
        let mut slot = lock(&self.done.outcome);
        loop {
            if let Some(outcome) = slot.take() {
                return outcome.unwrap_or_else(|panic| resume_unwind(panic));
            }
            slot = self.done.cv.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The result if the call has ended, else the handle back.
    ///
    /// # Panics
    ///
    /// As [`wait`](Handle::wait).
    pub fn try_wait(self) -> std::result::Result<Result<R>, Handle<R>> {
        let taken = lock(&self.done.outcome).take();
        match taken {
            Some(outcome) => Ok(outcome.unwrap_or_else(|panic| resume_unwind(panic))),
            None => Err(self),
        }
    }
}

/// A built-in reduction, which (unlike a [`ReduceOp`] that may borrow a closure) can move
/// to the background thread.
#[derive(Clone, Copy)]
enum Builtin {
    Sum,
    Product,
    Min,
    Max,
    Average,
}

impl Builtin {
    fn of<T>(op: ReduceOp<'_, T>, c: Collective) -> Result<Builtin> {
        match op {
            ReduceOp::Sum => Ok(Builtin::Sum),
            ReduceOp::Product => Ok(Builtin::Product),
            ReduceOp::Min => Ok(Builtin::Min),
            ReduceOp::Max => Ok(Builtin::Max),
            ReduceOp::Average => Ok(Builtin::Average),
            ReduceOp::Custom(_) => Err(Error::invalid(
                c,
                "op: a custom reduction borrows its closure, which cannot move to the \
                 background thread; use Group::start_allreduce_with",
            )),
        }
    }

    fn op<T>(self) -> ReduceOp<'static, T> {
        match self {
            Builtin::Sum => ReduceOp::Sum,
            Builtin::Product => ReduceOp::Product,
            Builtin::Min => ReduceOp::Min,
            Builtin::Max => ReduceOp::Max,
            Builtin::Average => ReduceOp::Average,
        }
    }
}

/// A zeroed output of `len` elements.
fn zeroed<T: Element>(len: usize) -> Vec<T> {
    vec![T::zeroed(); len]
}

/// # Non-blocking collectives
///
/// Each `start_*` call takes an owned buffer (a `Vec<T>`, a `Box<[T]>`, or anything
/// `AsMut<[T]>`/`AsRef<[T]> + Send + 'static`), returns at once with a [`Handle`], and
/// runs the collective on a thread of the library while the caller goes on;
/// [`Handle::wait`] gives the buffer back, or the output, or the call's typed error.
///
/// - **Order.** Every rank must issue the same non-blocking calls in the same order on each
///   handle (as with blocking calls). Each call gets a tag of its own from that order (in
///   the range from [`BACKGROUND_TAGS`], the same on every rank), so calls in flight at once
///   never see each other's messages, and they may **end in any order**: wait for them in
///   any order. A handle may have [`MAX_IN_FLIGHT`] calls in flight; the next one waits
///   until the oldest has ended on this rank (up to its own deadline, then a timeout).
/// - **Blocking calls beside them.** Calls on the handle itself stay blocking and run on
///   its own tag, independent of the background ones.
/// - **Dropping** a [`Handle`] detaches its call (it still runs to its end, see
///   [`Handle`]). Dropping the [`Group`] while calls are in flight is fine too: each call
///   holds the communicator until it ends, and [`into_inner`](Group::into_inner) gives the
///   communicator back only once none is in flight.
/// - **Errors** of a background call (a lost peer, a mismatch, a timeout) come back from
///   [`wait`](Handle::wait), typed, as from the blocking call. As after a failed blocking
///   call, the ranks' counters for that call's tag may disagree: continue with a new
///   group.
/// - **Which calls.** Every collective has a `start_*` form (the `*v` ones with owned
///   count vectors; rooted ones give `Option`s where only the root has a buffer).
///   Point-to-point `send`/`recv` have none: the tags come from every rank issuing the
///   same calls in the same order, which a call between two ranks does not give. Run
///   those on a [`fork`](Group::fork)ed handle in a thread of your own.
/// - **Reductions** are the built-in ops (a [`ReduceOp::Custom`] borrows its closure and
///   is refused with [`Error::InvalidArgument`]); an owned closure goes to
///   [`start_allreduce_with`](Group::start_allreduce_with).
///
/// ```
/// use gloo_algorithms::{Group, Options, ReduceOp};
/// use gloo_transport::loopback::{LoopbackConfig, group};
///
/// let out = gloo_transport::threads::run_ranks(group(2, LoopbackConfig::default()), |comm| {
///     let g = Group::new(comm).unwrap();
///     let grads = vec![g.rank().0 as f32 + 1.0; 1 << 16];
///     let pending = g.start_allreduce(grads, ReduceOp::Sum, &Options::new()).unwrap();
///     let busy_work: f32 = (0..1000).map(|i| i as f32).sum(); // overlaps the allreduce
///     let grads = pending.wait().unwrap();
///     (grads[0], busy_work)
/// });
/// assert_eq!(out[0].0, 3.0);
/// ```
impl<C: Communicator + 'static> Group<C> {
    /// Start a non-blocking call: fork a handle on the next background tag of this issuer
    /// and run `body` with it on a pool thread.
    fn start<R, F>(&self, collective: Collective, opts: &Options, body: F) -> Result<Handle<R>>
    where
        R: Send + 'static,
        F: FnOnce(&Group<C>) -> Result<R> + Send + 'static,
    {
        let issuer = self.tag();
        if self.members.is_none() && issuer >= ISSUER_LIMIT {
            return Err(Error::invalid(
                collective,
                format!(
                    "this handle's tag {issuer} cannot issue non-blocking calls: only handles \
                     on tags below {ISSUER_LIMIT} can (tags from {BACKGROUND_TAGS} are the \
                     background calls' own)"
                ),
            ));
        }
        let bg = Arc::clone(&self.background().inner);
        let (tag, handle) = {
            let mut st = lock(&bg.state);
            let seq = st.next.get(&issuer).copied().unwrap_or(0);
            let slot = (seq % u64::from(MAX_IN_FLIGHT)) as u32;
            let tag = match self.members.as_deref() {
                None => BACKGROUND_TAGS | issuer << SLOT_BITS | slot,
                Some(m) => crate::subgroup::background_tag(m, issuer, slot),
            };
            // The call `MAX_IN_FLIGHT` places earlier on this tag must end first.
            let started = Instant::now();
            let deadline = opts.deadline_from_now();
            while st.busy.contains(&tag) {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::Transport {
                        collective,
                        source: gloo_transport::Error::Timeout {
                            rank: self.rank(),
                            waited: started.elapsed(),
                            pending: Vec::new(),
                        },
                    });
                }
                st = bg.freed.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            }
            let handle = match self.claim(tag, self.members.clone()) {
                Ok(h) => h,
                Err(Error::TagInUse { tag }) => {
                    return Err(Error::invalid(
                        collective,
                        format!(
                            "tag {tag}, this call's, is held by a handle of yours (Group::fork; \
                             non-blocking calls use the tags from {BACKGROUND_TAGS} below 2^31, \
                             and tags derived from a subgroup's)"
                        ),
                    ));
                }
                Err(e) => return Err(e),
            };
            st.busy.insert(tag);
            st.next.insert(issuer, seq + 1);
            (tag, handle)
        };
        let done = Arc::new(Done { outcome: Mutex::new(None), cv: Condvar::new() });
        let back = Arc::clone(&done);
        let span = tracing::Span::current();
        let job = Box::new(move || {
            let _entered = span.enter();
            let outcome = catch_unwind(AssertUnwindSafe(|| body(&handle)));
            // Release the tag before the result is visible: once `wait` returns, the tag
            // is free for the next call on it and the communicator is no longer held.
            drop(handle);
            {
                lock(&bg.state).busy.remove(&tag);
            }
            bg.freed.notify_all();
            *lock(&back.outcome) = Some(outcome);
            back.cv.notify_all();
            // `bg` (and with it perhaps the pool) drops here, after the handle's result
            // is out.
            drop(bg);
        });
        // The pool lives in `Background`, which the job holds too.
        self.background().inner.pool.run(job);
        Ok(Handle { done, tag, collective })
    }

    /// Non-blocking [`allreduce`](Group::allreduce) of an owned buffer: `wait` gives the
    /// buffer back with the result in it.
    pub fn start_allreduce<T, B>(
        &self,
        buf: B,
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<Handle<B>>
    where
        T: Element,
        B: AsMut<[T]> + Send + 'static,
    {
        let op = Builtin::of(op, Collective::Allreduce)?;
        let o = opts.clone();
        self.start(Collective::Allreduce, opts, move |g| {
            let mut buf = buf;
            g.allreduce(buf.as_mut(), op.op(), &o)?;
            Ok(buf)
        })
    }

    /// Non-blocking [`allreduce`](Group::allreduce) with a custom reduction that the
    /// background thread owns (`dst[i] = dst[i] op src[i]`; associative and commutative,
    /// the same on every rank, as for [`ReduceOp::Custom`]).
    pub fn start_allreduce_with<T, B, F>(&self, buf: B, f: F, opts: &Options) -> Result<Handle<B>>
    where
        T: Element,
        B: AsMut<[T]> + Send + 'static,
        F: Fn(&mut [T], &[T]) + Send + Sync + 'static,
    {
        let o = opts.clone();
        self.start(Collective::Allreduce, opts, move |g| {
            let mut buf = buf;
            g.allreduce(buf.as_mut(), ReduceOp::Custom(&f), &o)?;
            Ok(buf)
        })
    }

    /// Non-blocking [`broadcast`](Group::broadcast) from `root`: `wait` gives the buffer
    /// back holding the root's data.
    pub fn start_broadcast<T, B>(&self, buf: B, root: Rank, opts: &Options) -> Result<Handle<B>>
    where
        T: Element,
        B: AsMut<[T]> + Send + 'static,
    {
        let o = opts.clone();
        self.start(Collective::Broadcast, opts, move |g| {
            let mut buf = buf;
            g.broadcast(buf.as_mut(), root, &o)?;
            Ok(buf)
        })
    }

    /// Non-blocking [`reduce`](Group::reduce) to `root`: `wait` gives the buffer back,
    /// holding the result at the root and left as it was elsewhere.
    pub fn start_reduce<T, B>(
        &self,
        buf: B,
        root: Rank,
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<Handle<B>>
    where
        T: Element,
        B: AsMut<[T]> + Send + 'static,
    {
        let op = Builtin::of(op, Collective::Reduce)?;
        let o = opts.clone();
        self.start(Collective::Reduce, opts, move |g| {
            let mut buf = buf;
            g.reduce(buf.as_mut(), root, op.op(), &o)?;
            Ok(buf)
        })
    }

    /// Non-blocking [`allgather`](Group::allgather): `wait` gives the output, every rank's
    /// `input` in rank order (`size × input.len()` elements). The input is dropped.
    pub fn start_allgather<T, I>(&self, input: I, opts: &Options) -> Result<Handle<Vec<T>>>
    where
        T: Element,
        I: AsRef<[T]> + Send + 'static,
    {
        let c = Collective::Allgather;
        let o = opts.clone();
        self.start(c, opts, move |g| {
            let input = input.as_ref();
            let len = input
                .len()
                .checked_mul(g.size() as usize)
                .ok_or_else(|| Error::invalid(c, "input: too long"))?;
            let mut out = zeroed(len);
            g.allgather(input, &mut out, &o)?;
            Ok(out)
        })
    }

    /// Non-blocking [`reduce_scatter`](Group::reduce_scatter): `wait` gives this rank's
    /// block of the reduced `input` (`input.len() / size` elements). The input is dropped.
    pub fn start_reduce_scatter<T, I>(
        &self,
        input: I,
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<Handle<Vec<T>>>
    where
        T: Element,
        I: AsRef<[T]> + Send + 'static,
    {
        let op = Builtin::of(op, Collective::ReduceScatter)?;
        let o = opts.clone();
        self.start(Collective::ReduceScatter, opts, move |g| {
            let input = input.as_ref();
            // A length that does not split is the blocking call's error to name.
            let mut out = zeroed(input.len() / g.size() as usize);
            g.reduce_scatter(input, &mut out, op.op(), &o)?;
            Ok(out)
        })
    }

    /// Non-blocking [`alltoall`](Group::alltoall): `wait` gives the output (as long as
    /// `input`; block `q` came from rank `q`). The input is dropped.
    pub fn start_alltoall<T, I>(&self, input: I, opts: &Options) -> Result<Handle<Vec<T>>>
    where
        T: Element,
        I: AsRef<[T]> + Send + 'static,
    {
        let o = opts.clone();
        self.start(Collective::Alltoall, opts, move |g| {
            let input = input.as_ref();
            let mut out = zeroed(input.len());
            g.alltoall(input, &mut out, &o)?;
            Ok(out)
        })
    }

    /// Non-blocking [`allgatherv`](Group::allgatherv): `wait` gives the output, `counts[q]`
    /// elements from each rank `q` in rank order. The input is dropped.
    pub fn start_allgatherv<T, I>(
        &self,
        input: I,
        counts: Vec<usize>,
        opts: &Options,
    ) -> Result<Handle<Vec<T>>>
    where
        T: Element,
        I: AsRef<[T]> + Send + 'static,
    {
        let c = Collective::Allgatherv;
        let o = opts.clone();
        self.start(c, opts, move |g| {
            let mut out = zeroed(check_counts(c, "counts", &counts, g.size() as usize)?);
            g.allgatherv(input.as_ref(), &mut out, &counts, &o)?;
            Ok(out)
        })
    }

    /// Non-blocking [`alltoallv`](Group::alltoallv): `wait` gives the output,
    /// `recv_counts[q]` elements from each rank `q` in rank order. The input is dropped.
    pub fn start_alltoallv<T, I>(
        &self,
        input: I,
        send_counts: Vec<usize>,
        recv_counts: Vec<usize>,
        opts: &Options,
    ) -> Result<Handle<Vec<T>>>
    where
        T: Element,
        I: AsRef<[T]> + Send + 'static,
    {
        let c = Collective::Alltoallv;
        let o = opts.clone();
        self.start(c, opts, move |g| {
            let mut out = zeroed(check_counts(c, "recv_counts", &recv_counts, g.size() as usize)?);
            g.alltoallv(input.as_ref(), &mut out, &send_counts, &recv_counts, &o)?;
            Ok(out)
        })
    }

    /// Non-blocking [`reduce_scatterv`](Group::reduce_scatterv): `wait` gives this rank's
    /// `counts[rank]` elements of the reduced `input`. The input is dropped.
    pub fn start_reduce_scatterv<T, I>(
        &self,
        input: I,
        counts: Vec<usize>,
        op: ReduceOp<'_, T>,
        opts: &Options,
    ) -> Result<Handle<Vec<T>>>
    where
        T: Element,
        I: AsRef<[T]> + Send + 'static,
    {
        let c = Collective::ReduceScatterv;
        let op = Builtin::of(op, c)?;
        let o = opts.clone();
        self.start(c, opts, move |g| {
            // Checked as the blocking call checks them, so the index below is in range.
            check_counts(c, "counts", &counts, g.size() as usize)?;
            let mut out = zeroed(counts[g.rank().index()]);
            g.reduce_scatterv(input.as_ref(), &mut out, &counts, op.op(), &o)?;
            Ok(out)
        })
    }

    /// Non-blocking [`gather`](Group::gather) to `root`: `wait` gives `Some` of every rank's
    /// `input` in rank order at the root, and `None` elsewhere. The input is dropped.
    pub fn start_gather<T, I>(
        &self,
        input: I,
        root: Rank,
        opts: &Options,
    ) -> Result<Handle<Option<Vec<T>>>>
    where
        T: Element,
        I: AsRef<[T]> + Send + 'static,
    {
        let c = Collective::Gather;
        let o = opts.clone();
        self.start(c, opts, move |g| {
            let input = input.as_ref();
            let mut out = (g.rank() == root)
                .then(|| {
                    let len = input.len().checked_mul(g.size() as usize);
                    len.map(zeroed).ok_or_else(|| Error::invalid(c, "input: too long"))
                })
                .transpose()?;
            g.gather(input, out.as_deref_mut(), root, &o)?;
            Ok(out)
        })
    }

    /// Non-blocking [`gatherv`](Group::gatherv) to `root`: `wait` gives `Some` of
    /// `counts[q]` elements from each rank `q` at the root, and `None` elsewhere. The input
    /// is dropped.
    pub fn start_gatherv<T, I>(
        &self,
        input: I,
        counts: Vec<usize>,
        root: Rank,
        opts: &Options,
    ) -> Result<Handle<Option<Vec<T>>>>
    where
        T: Element,
        I: AsRef<[T]> + Send + 'static,
    {
        let c = Collective::Gatherv;
        let o = opts.clone();
        self.start(c, opts, move |g| {
            let mut out = (g.rank() == root)
                .then(|| check_counts(c, "counts", &counts, g.size() as usize).map(zeroed))
                .transpose()?;
            g.gatherv(input.as_ref(), out.as_deref_mut(), &counts, root, &o)?;
            Ok(out)
        })
    }

    /// Non-blocking [`scatter`](Group::scatter) from `root`: the root passes `Some(input)`
    /// (`size × output.len()` elements), the other ranks `None`; `wait` gives `output` back
    /// holding this rank's block.
    pub fn start_scatter<T, I, B>(
        &self,
        input: Option<I>,
        output: B,
        root: Rank,
        opts: &Options,
    ) -> Result<Handle<B>>
    where
        T: Element,
        I: AsRef<[T]> + Send + 'static,
        B: AsMut<[T]> + Send + 'static,
    {
        let o = opts.clone();
        self.start(Collective::Scatter, opts, move |g| {
            let mut output = output;
            g.scatter(input.as_ref().map(AsRef::as_ref), output.as_mut(), root, &o)?;
            Ok(output)
        })
    }

    /// Non-blocking [`scatterv`](Group::scatterv) from `root`: as
    /// [`start_scatter`](Self::start_scatter), with `counts[q]` elements for rank `q`
    /// (`output` is `counts[rank]` long).
    pub fn start_scatterv<T, I, B>(
        &self,
        input: Option<I>,
        output: B,
        counts: Vec<usize>,
        root: Rank,
        opts: &Options,
    ) -> Result<Handle<B>>
    where
        T: Element,
        I: AsRef<[T]> + Send + 'static,
        B: AsMut<[T]> + Send + 'static,
    {
        let o = opts.clone();
        self.start(Collective::Scatterv, opts, move |g| {
            let mut output = output;
            g.scatterv(input.as_ref().map(AsRef::as_ref), output.as_mut(), &counts, root, &o)?;
            Ok(output)
        })
    }

    /// Non-blocking [`barrier`](Group::barrier): `wait` returns once every rank has
    /// entered it.
    pub fn start_barrier(&self, opts: &Options) -> Result<Handle<()>> {
        let o = opts.clone();
        self.start(Collective::Barrier, opts, move |g| g.barrier(&o))
    }
}
