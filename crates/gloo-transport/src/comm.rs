//! The communicator trait that collectives program against.

use std::time::Instant;

use crate::{Error, Op, Rank, Result, Slot};

/// How long [`Communicator::progress`] keeps going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wait {
    /// Until every operation in the batch is complete.
    All,
    /// Until at least one operation that was incomplete on entry is complete.
    Any,
    /// Not at all: post what is new, move what can move now (trying the batch's peers
    /// whatever their readiness says) and return `Ok`, complete or not. For a caller that
    /// has work of its own to do while its operations' transfers go on: a transport moves
    /// bytes only inside a call, so such a caller polls between pieces of its work. The
    /// deadline does not apply (a poll is no timeout).
    Poll,
    /// Until the first `n` operations of the batch are all complete (a cancelled one never
    /// is, as with [`Wait::Any`]: the call runs to its deadline), or until one of the
    /// operations after them that was incomplete on entry is complete. For a caller whose
    /// batch ends with operations that only watch, such as a receive that only a peer's
    /// alarm would complete: it needs every data operation done, and to hear at once of an
    /// alarm, in one call where [`Wait::Any`] would return after each completion. `First(0)`
    /// returns at once; an `n` past the batch's end means all of it.
    First(usize),
}

/// A connected group of ranks that exchanges byte messages (Gloo's "context").
///
/// # Model
///
/// Operations ([`Op`]) borrow the caller's buffers and are driven by the caller's own thread:
/// [`progress`](Communicator::progress) posts the operations it has not seen, moves bytes
/// between sockets (or whatever the transport uses) and those buffers, and returns when the
/// batch is complete ([`Wait::All`]), when one more operation is ([`Wait::Any`]), or at the
/// deadline. Sends and receives on the same `(peer, slot)` match first-in, first-out.
/// Several threads may call into one communicator at once, each with its own batches on
/// distinct slots.
///
/// # Memory safety of borrowed buffers
///
/// A transport never keeps a pointer to an [`Op`]'s buffer beyond the call that was given the
/// `Op`: it reads a send buffer and writes a receive buffer only inside `progress`, through the
/// `&`/`&mut` borrow that call holds. A message that arrives while nobody is inside such a call
/// waits in the kernel's socket buffer or in a bounded, transport-owned eager buffer, and is
/// copied into the receive buffer by a later call. What a transport remembers of a posted
/// operation between calls is an id, never an address.
///
/// That is why leaking a [`Batch`] with `mem::forget`, or dropping ops mid-way without
/// [`cancel`](Communicator::cancel), cannot cause a use-after-free: the worst it does is leave a
/// posted receive that swallows one message (or a posted send that never goes), which costs a
/// wasted message and, at most, a [`Timeout`](Error::Timeout) for whoever waits on that stream.
/// This is the difference from C++ Gloo's register-now-wait-later buffers, which in Rust would
/// be unsound for the reason the "leakpocalypse" made plain.
///
/// # Errors
///
/// Errors come in three scopes:
///
/// - **The group.** A lost peer ([`Error::PeerLost`]: it died, froze or hung up) or an abort
///   ([`Error::Aborted`], local or from a peer) poisons the communicator: every current and
///   later call fails fast with it. A collective needs every rank, so a group with a rank gone
///   cannot complete one, and each survivor learns it from its own connection to that rank.
/// - **One peer.** A peer that breaks the protocol or fails authentication
///   ([`Error::Protocol`], [`Error::Auth`]) has its connection closed; operations with that peer
///   fail with the error, now and later, while every other pair keeps working. A rogue or buggy
///   peer cannot take down its victims' other connections.
/// - **One operation.** [`Error::MessageTooLong`], [`Error::Mismatch`] and
///   [`Error::InvalidArgument`] fail the operation concerned. [`Error::Timeout`] is not fatal
///   either: the operations that timed out are still posted and a later call may complete them,
///   or [`cancel`](Communicator::cancel) withdraws them.
///
/// The trait is object-safe; collectives take `&dyn Communicator`.
pub trait Communicator: Send + Sync {
    /// This process's rank.
    fn rank(&self) -> Rank;

    /// The number of ranks in the group.
    fn size(&self) -> u32;

    /// Post the operations not posted yet and drive them until `wait` is satisfied or
    /// `deadline` passes.
    ///
    /// Completed operations are marked done ([`Op::completed`] tells the peer and byte count).
    /// When an operation fails, the call returns its error and the operation is withdrawn
    /// (its state becomes [`OpState::Cancelled`]); when several failed, the first in `ops`
    /// is reported and the others stay posted, each to report its own error to the next call
    /// that drives it. Operations still pending when the call returns an error (a timeout, a
    /// poisoned group) stay posted. An operation's
    /// peer must be a rank of the group other than this one, or the call fails with
    /// [`Error::InvalidArgument`] before anything is posted.
    ///
    /// [`OpState::Cancelled`]: crate::OpState::Cancelled
    fn progress(&self, ops: &mut [Op<'_>], wait: Wait, deadline: Instant) -> Result<()>;

    /// [`progress`](Communicator::progress) for a caller that has just read the clock: `now`
    /// stands for the time of entry, so the transport need not read it again (a reading
    /// costs about as much as a twentieth of a small call over shared memory).
    ///
    /// `now` may be a little old (the work a caller did since it read it: milliseconds, far
    /// below the peer timeout); a transport uses it only where that is harmless (the time
    /// it stamps on what it hears and sends, never moving a stamp back, and a first look at
    /// the deadline) and reads the clock itself before anything that measures a wait. A
    /// reading older than the peer timeout could make a peer heard only in that call's
    /// first moments look silent. A transport that reads no clock, or gains nothing, keeps
    /// this default.
    fn progress_at(
        &self,
        ops: &mut [Op<'_>],
        wait: Wait,
        deadline: Instant,
        now: Instant,
    ) -> Result<()> {
        let _ = now;
        self.progress(ops, wait, deadline)
    }

    /// Withdraw every incomplete operation in `ops`.
    ///
    /// An operation that no byte of a message has moved for is simply forgotten. A send may
    /// still be delivered after it is withdrawn, as a letter already posted is: an eager one
    /// is on its way, and a small one (up to 64 KiB) that the receiver was told about but has
    /// not yet asked for is delivered from a copy when it does. A large send in that state,
    /// or an operation part-way through a message, cannot be taken back without corrupting
    /// the stream: the connection to that peer is closed and later operations with it fail
    /// with [`Error::Cancelled`].
    fn cancel(&self, ops: &mut [Op<'_>]);

    /// Fail every current and future operation on this communicator, here and on every peer
    /// (which receive [`Error::Aborted`] naming this rank). Callable from any thread.
    fn abort(&self, reason: &str);

    /// The fatal error this communicator has seen, if any.
    fn poisoned(&self) -> Option<Error>;

    /// Run `ops` to completion, cancelling whatever is left if it fails.
    fn run(&self, ops: &mut [Op<'_>], deadline: Instant) -> Result<()> {
        let r = self.progress(ops, Wait::All, deadline);
        if r.is_err() {
            self.cancel(ops);
        }
        r
    }

    /// Send `buf` to `to` on `slot`.
    fn send(&self, to: Rank, slot: Slot, buf: &[u8], deadline: Instant) -> Result<()> {
        self.run(&mut [Op::send(to, slot, buf)], deadline)
    }

    /// Receive one message from `from` on `slot` into `buf`; returns its length.
    fn recv(&self, from: Rank, slot: Slot, buf: &mut [u8], deadline: Instant) -> Result<usize> {
        let mut ops = [Op::recv(from, slot, buf)];
        self.run(&mut ops, deadline)?;
        Ok(ops[0].completed().map_or(0, |(_, n)| n))
    }

    /// Receive one message on `slot` from whichever rank in `from` sends first; returns that
    /// rank and the message's length.
    fn recv_any(
        &self,
        from: &[Rank],
        slot: Slot,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<(Rank, usize)> {
        let mut ops = [Op::recv_any(from, slot, buf)];
        self.run(&mut ops, deadline)?;
        ops[0].completed().ok_or_else(|| Error::invalid("recv_any completed without a source"))
    }
}

/// Forwards every method to the communicator pointed to, so that `&C`, `Box<C>` and
/// `Arc<C>` (including `Box<dyn Communicator>` and `Arc<dyn Communicator>`) are communicators
/// themselves, as `Arc<S>` is a store in `gloo-rendezvous`.
macro_rules! forward_communicator {
    ($($ptr:ty),*) => {$(
        impl<C: Communicator + ?Sized> Communicator for $ptr {
            fn rank(&self) -> Rank {
                (**self).rank()
            }

            fn size(&self) -> u32 {
                (**self).size()
            }

            fn progress(&self, ops: &mut [Op<'_>], wait: Wait, deadline: Instant) -> Result<()> {
                (**self).progress(ops, wait, deadline)
            }

            fn progress_at(
                &self,
                ops: &mut [Op<'_>],
                wait: Wait,
                deadline: Instant,
                now: Instant,
            ) -> Result<()> {
                (**self).progress_at(ops, wait, deadline, now)
            }

            fn cancel(&self, ops: &mut [Op<'_>]) {
                (**self).cancel(ops)
            }

            fn abort(&self, reason: &str) {
                (**self).abort(reason)
            }

            fn poisoned(&self) -> Option<Error> {
                (**self).poisoned()
            }

            fn run(&self, ops: &mut [Op<'_>], deadline: Instant) -> Result<()> {
                (**self).run(ops, deadline)
            }
        }
    )*};
}

forward_communicator!(&C, Box<C>, std::sync::Arc<C>);

/// A batch of operations that is cancelled when dropped, for pipelined algorithms that wait
/// for one operation at a time.
///
/// ```
/// # use gloo_transport::{Batch, Communicator, Op, Rank, Slot, Result};
/// # use std::time::Instant;
/// fn exchange(comm: &dyn Communicator, peer: Rank, out: &[u8], inb: &mut [u8],
///             deadline: Instant) -> Result<()> {
///     let mut ops = [Op::send(peer, Slot::new(1, 0), out), Op::recv(peer, Slot::new(1, 0), inb)];
///     let mut batch = Batch::new(comm, &mut ops);
///     while !batch.is_done() {
///         batch.wait_any(deadline)?;
///     }
///     Ok(())
/// }
/// ```
pub struct Batch<'c, 'o, 'b> {
    comm: &'c dyn Communicator,
    ops: &'o mut [Op<'b>],
}

impl<'c, 'o, 'b> Batch<'c, 'o, 'b> {
    /// Wrap `ops`; nothing is posted until the first wait.
    pub fn new(comm: &'c dyn Communicator, ops: &'o mut [Op<'b>]) -> Self {
        Batch { comm, ops }
    }

    /// Drive until at least one more operation completes.
    pub fn wait_any(&mut self, deadline: Instant) -> Result<()> {
        self.comm.progress(self.ops, Wait::Any, deadline)
    }

    /// Drive until every operation completes.
    pub fn wait_all(&mut self, deadline: Instant) -> Result<()> {
        self.comm.progress(self.ops, Wait::All, deadline)
    }

    /// Whether every operation completed.
    pub fn is_done(&self) -> bool {
        self.ops.iter().all(Op::is_done)
    }

    /// The operations, to look at which completed.
    pub fn ops(&self) -> &[Op<'b>] {
        self.ops
    }
}

impl Drop for Batch<'_, '_, '_> {
    fn drop(&mut self) {
        if !self.is_done() {
            self.comm.cancel(self.ops);
        }
    }
}

/// The first half of a transport's connection set-up, in the shape the store-based bootstrap
/// of `gloo-rendezvous` needs: bind, publish [`address_bytes`](Listener::address_bytes)
/// through a store, collect everybody's, then [`connect_all`](Listener::connect_all) (or,
/// for a transport that also implements [`LazyListener`],
/// [`connect_lazy`](LazyListener::connect_lazy)).
///
/// Address bytes are opaque to everybody but the transport that made them; a transport must
/// treat the bytes it is given as untrusted (a store can hold anything) and fail with an error
/// naming the rank whose address does not parse.
pub trait Listener: Send {
    /// The communicator this transport builds.
    type Comm: Communicator + 'static;

    /// This rank's address, to publish for the others.
    fn address_bytes(&self) -> Vec<u8>;

    /// Connect to every other rank, given every rank's address bytes indexed by rank (this
    /// rank's own entry is ignored), and return the connected group.
    fn connect_all(self, addrs: &[Vec<u8>], deadline: Instant) -> Result<Self::Comm>;
}

/// A [`Listener`] that can also return its group with no connection made, each pair
/// connecting on its first use (for large jobs in which a rank talks to few peers).
///
/// A separate trait rather than a method with a failing default, so that asking a transport
/// without a lazy mode for one (`gloo_rendezvous::connect_lazy` over it) fails to compile
/// instead of failing at run time.
pub trait LazyListener: Listener {
    /// Return the group at once with no connection made: each pair connects on its first
    /// use. Same arguments as [`connect_all`](Listener::connect_all); the addresses are still
    /// checked up front.
    fn connect_lazy(self, addrs: &[Vec<u8>], deadline: Instant) -> Result<Self::Comm>;
}
