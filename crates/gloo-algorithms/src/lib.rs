//! Collectives for the Rust Gloo: allreduce, reduce, broadcast, allgather(v), gather(v),
//! scatter(v), reduce-scatter(v), alltoall(v), barrier and typed send/recv, over any
//! [`Communicator`](gloo_transport::Communicator).
//!
//! What it does:
//! - runs each collective with one of several algorithms ([`Algorithm`]): segmented ring,
//!   halving-doubling (Rabenseifner) and bcube for any world size, recursive doubling,
//!   binomial trees, scatter+allgather broadcast, Bruck, pairwise exchange and a
//!   dissemination barrier, picked from one table ([`select::TABLE`]) by message size and
//!   world size, overridable per call ([`Options::algorithm`]) and by environment
//!   (`GLOO_ALGORITHM_ALLREDUCE=ring`, one variable per collective);
//! - reduces `u8`–`u64`, `i8`–`i64`, `f16`, `bf16`, `f32` and `f64` ([`Element`]) with sum,
//!   product, min, max, average or a closure ([`ReduceOp`]); every rank ends with
//!   bitwise-identical results, floats included, whatever the algorithm;
//! - fingerprints every message with the call it belongs to ([`CallInfo`]), so that ranks
//!   that disagree get [`Error::Mismatch`] naming what differs, never corrupt output or a hang;
//! - checks arguments before sending anything ([`Error::InvalidArgument`]).
//!
//! What it does not do: I/O of its own, find or connect peers (`gloo-rendezvous`), or name a
//! concrete transport: it runs unchanged over loopback, TCP, TLS, shared memory or a
//! transport of yours. Schedules move bytes; only the reduce kernels are generic.
//!
//! ```
//! use gloo_algorithms::{Group, Options, ReduceOp};
//! use gloo_transport::loopback::{LoopbackConfig, group};
//!
//! let results = gloo_transport::threads::run_ranks(group(4, LoopbackConfig::default()), |comm| {
//!     let g = Group::new(comm).unwrap();
//!     let mut grads = vec![1.0f32; 1000];
//!     g.allreduce(&mut grads, ReduceOp::Average, &Options::new()).unwrap();
//!     grads[0]
//! });
//! assert_eq!(results, vec![1.0; 4]);
//! ```
//!
//! # How disagreement is caught
//!
//! Every message of a call carries the call's fingerprint: the tag's call number and a
//! description (collective, element type, count, op, root, tag, algorithm and its parameter,
//! a hash of any counts list). The transport refuses to deliver a message into a receive with
//! another fingerprint. On top of that:
//! - a rank that sees a mismatch sends a zero-byte *alarm* to every peer before it gives up,
//!   and every call keeps a receive posted for alarms, so ranks blocked on it (even in a send)
//!   learn at once instead of at their deadline;
//! - rooted collectives (broadcast, reduce, gather, scatter and their v-forms) also
//!   disseminate the fingerprint in ⌈log2 n⌉ rounds of zero-byte messages, because a leaf of a
//!   tree hears only from its parent. The rounds run alongside the data (each round is sent
//!   only after the previous one matched) and must all match before the call returns `Ok`;
//!   the data cannot land early in the wrong place, since every receive checks the
//!   fingerprint. The symmetric algorithms need no extra round, since every rank's result
//!   depends on a chain of messages from every other rank.
//!
//! A rank therefore returns `Ok` only when every rank made the same call. After an error the
//! buffers' contents are unspecified and the ranks' call counters for that tag may disagree:
//! continue on another tag ([`Group::fork`]), or with a new [`Group`]. A collective that
//! times out revokes the whole group (every rank's current or next call fails with
//! `Aborted`, naming the rank that gave up), and an error always belongs to the call that met
//! it: a leftover message of an old failed call on another tag never turns a later call's
//! timeout into a mismatch.
//!
//! # Threads
//!
//! A [`Group`] is a handle on one tag; it is `Send` but not `Sync`. Threads that run
//! collectives at once each take a handle on a tag of their own with [`Group::fork`]; two
//! handles on one tag cannot exist at once, so no two calls on one tag ever overlap.
//!
//! # Non-blocking calls
//!
//! `Group::start_allreduce` and the other `start_*` methods take an owned buffer, return
//! at once with a [`Handle`] and run the collective on a thread of the library, each on a
//! tag assigned in issue order from a reserved range ([`BACKGROUND_TAGS`]); see the
//! methods' section of [`Group`].
//!
//! # Which algorithm runs
//!
//! [`Options::algorithm`] if set, else the collective's `GLOO_ALGORITHM_<COLLECTIVE>`
//! variable (read by [`Group::new`]), else [`select::choose`] over [`select::TABLE`] (whose
//! crossovers are provisional until measured with `gloo-bench`). Every rank must end up
//! with the same choice; the algorithm is part of the fingerprint.
#![forbid(unsafe_code)]

mod average;
mod ctx;
mod element;
mod error;
mod fingerprint;
mod group;
mod names;
mod nonblocking;
mod options;
mod reduce_op;
mod ring;
mod schedules;
pub mod select;
mod subgroup;

pub use element::{DType, Element};
pub use error::{Error, Result};
pub use fingerprint::CallInfo;
pub use group::{Group, block_ranges};
pub use nonblocking::{BACKGROUND_TAGS, Handle, MAX_IN_FLIGHT};
pub use options::Options;
pub use reduce_op::ReduceOp;
pub use select::{Algorithm, Collective};

#[doc(hidden)]
pub use element::Builtin;

/// The reduce kernel `dst[i] = dst[i] op src[i]` for a built-in op, exposed for the kernel
/// benchmark (`examples/kernels.rs`).
#[doc(hidden)]
pub fn reduce_kernel<T: Element>(op: ReduceOp<'_, T>, dst: &mut [T], src: &[T]) {
    op.apply(dst, src);
}
