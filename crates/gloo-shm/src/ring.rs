//! A single-producer/single-consumer byte ring in memory shared with an untrusted peer.
//!
//! One ring carries one direction of a pair's byte stream. Its control words are two
//! monotonically increasing `u64` byte counts: `tail` (bytes written, stored only by the
//! producer) and `head` (bytes consumed, stored only by the consumer); the data is
//! `capacity` bytes (a power of two) addressed modulo the capacity. A producer copies bytes
//! in, then publishes them with a Release store of `tail`; a consumer Acquire-loads `tail`,
//! copies the bytes out, then frees them with a Release store of `head`, which the producer
//! Acquire-loads before overwriting them. Those two pairs are the whole ordering argument,
//! and `tests/loom_ring.rs` checks it under every interleaving loom explores.
//!
//! # The peer is untrusted
//!
//! The other side can store anything into any word at any time. Each side therefore keeps
//! its own index privately (the shared copy is only ever stored to, never read back) and
//! checks every index it loads from the peer against what it already knows:
//!
//! - a consumer accepts a `tail` only if `0 <= tail - head <= capacity` and `tail` did not go
//!   back behind a value it already accepted;
//! - a producer accepts a `head` only if it lies between the `head` it last accepted and its
//!   own `tail`.
//!
//! Anything else is a [`RingError`], which the channel turns into a `Protocol` error naming
//! the peer. Bytes are never interpreted here; the layer above checks its frames like any
//! bytes from a socket. Wrapping arithmetic throughout: a peer cannot make an index overflow
//! into a panic.
//!
//! # Single copy (lending)
//!
//! For large messages a producer may [lend](Producer::lend) a range of its own memory instead
//! of copying it in: it publishes `(at, addr, len)` and a state word holding a lend id and the
//! bytes taken so far. The consumer, finding the ring empty at position `at`, copies straight
//! from the producer's memory into its own buffer (`process_vm_readv`) and then claims those
//! bytes with one compare-and-swap on the state word. The producer ends a lend with a swap of
//! the same word, which returns exactly the bytes claimed: a claim that loses that race
//! claims nothing and its copy is thrown away, so every byte counts once, and a claim that
//! wins was copied before the producer could reuse its memory (its swap reads the claim's
//! Release). While a lend is out the producer writes nothing into the ring, so the stream's
//! order is the ring's bytes up to `at`, then the lent bytes claimed, then the ring again.
#![forbid(unsafe_code)]

use std::fmt;

use crate::sync::{AtomicU64, Ordering, fence};

/// The memory a ring lives in: the shared mapping in production (`crate::segment`), an `Arc`
/// of loom atomics under `cfg(loom)`, or anything else that keeps the contract.
///
/// Contract: the words are distinct and live as long as `self`; `write_at`/`read_at` copy
/// `index..index + len` of the data area, which the ring keeps within `0..capacity()`.
pub trait RingMem {
    /// Bytes written (stored by the producer).
    fn tail(&self) -> &AtomicU64;
    /// Bytes consumed (stored by the consumer).
    fn head(&self) -> &AtomicU64;
    /// The lend state: `id << 32 | taken`, or 0 when no lend is out (see the module docs).
    fn lend_state(&self) -> &AtomicU64;
    /// The lend's position in the ring (the producer's tail when it lent).
    fn lend_at(&self) -> &AtomicU64;
    /// The lent range's address in the producer's memory.
    fn lend_addr(&self) -> &AtomicU64;
    /// The lent range's length.
    fn lend_len(&self) -> &AtomicU64;
    /// The data area's size in bytes: a power of two, fixed for the ring's life.
    fn capacity(&self) -> usize;
    /// Copy `src` into the data area at `index`.
    fn write_at(&self, index: usize, src: &[u8]);
    /// Copy from the data area at `index` into `dst`.
    fn read_at(&self, index: usize, dst: &mut [u8]);
}

/// Bytes copied between two publications of an index: small enough that producer and
/// consumer of a large transfer work on different pieces at once, large enough that the
/// stores cost nothing beside the copies.
const PIECE: usize = 64 << 10;

/// The largest range one lend covers (a larger buffer is lent in pieces): the lend state
/// keeps the bytes taken in its low 32 bits.
pub const MAX_LEND: usize = 1 << 30;

/// Something the peer stored into the ring's shared words that no honest peer stores.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingError {
    /// The consumer's `head` is not between what it had consumed before and our `tail`.
    HeadOutOfRange {
        /// The value read.
        head: u64,
        /// The last value accepted.
        accepted: u64,
        /// Our tail.
        tail: u64,
    },
    /// The producer's `tail` is more than a capacity ahead of our `head`, or behind a value
    /// already accepted.
    TailOutOfRange {
        /// The value read.
        tail: u64,
        /// Our head.
        head: u64,
        /// The last value accepted.
        accepted: u64,
        /// The ring's capacity.
        capacity: u64,
    },
    /// A lend whose fields cannot be true (position, length or bytes taken).
    BadLend {
        /// What was wrong.
        detail: String,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::HeadOutOfRange { head, accepted, tail } => write!(
                f,
                "ring head {head} is outside [{accepted}, {tail}] (consumed before, written)"
            ),
            RingError::TailOutOfRange { tail, head, accepted, capacity } => write!(
                f,
                "ring tail {tail} is outside [{accepted}, {head} + {capacity}] (accepted before, \
                 consumed + capacity)"
            ),
            RingError::BadLend { detail } => write!(f, "bad lend: {detail}"),
        }
    }
}

impl std::error::Error for RingError {}

/// The producing end of a ring.
#[derive(Debug)]
pub struct Producer<M: RingMem> {
    mem: M,
    /// Bytes written: the truth (the shared `tail` is only a copy for the consumer).
    tail: u64,
    /// The last `head` accepted from the consumer.
    head: u64,
    mask: u64,
    /// The lend out, if any: `(id, len)`.
    lend: Option<(u32, u64)>,
    /// The id of the last lend (ids are never 0, so a state of 0 means "none").
    lend_id: u32,
}

/// The consuming end of a ring.
#[derive(Debug)]
pub struct Consumer<M: RingMem> {
    mem: M,
    /// Bytes consumed: the truth.
    head: u64,
    /// The last `tail` accepted from the producer.
    tail: u64,
    mask: u64,
}

/// A lend the consumer may copy from: read it with [`Consumer::lent`], claim with
/// [`Consumer::claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lent {
    /// The state word as read (`id << 32 | taken`): the claim compares against it.
    state: u64,
    /// Address of the first byte not yet taken, in the producer's memory.
    pub addr: u64,
    /// Bytes left to take.
    pub remaining: u64,
}

/// A ring's two ends over one memory. `mem` must be fresh (all words 0) or the caller must
/// hold both ends' views of the same indices.
pub fn split<M: RingMem + Clone>(mem: M) -> (Producer<M>, Consumer<M>) {
    (Producer::new(mem.clone()), Consumer::new(mem))
}

impl<M: RingMem> Producer<M> {
    /// The producer over `mem`, whose words start at 0.
    pub fn new(mem: M) -> Producer<M> {
        let cap = mem.capacity();
        assert!(cap.is_power_of_two(), "ring capacity {cap} is not a power of two");
        Producer { mem, tail: 0, head: 0, mask: cap as u64 - 1, lend: None, lend_id: 0 }
    }

    fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Bytes that can be written now, after loading and checking the consumer's `head`.
    pub fn room(&mut self) -> Result<usize, RingError> {
        let head = self.mem.head().load(Ordering::Acquire);
        // `head` must lie in [accepted, tail]: measured back from our tail, no further than the
        // last accepted value (wrapping subtraction makes one comparison of both bounds).
        if self.tail.wrapping_sub(head) > self.tail.wrapping_sub(self.head) {
            return Err(RingError::HeadOutOfRange { head, accepted: self.head, tail: self.tail });
        }
        self.head = head;
        Ok(self.room_cached())
    }

    fn room_cached(&self) -> usize {
        (self.capacity() - self.tail.wrapping_sub(self.head)) as usize
    }

    /// Whether every byte written has been consumed (as of the last check of `head`).
    pub fn drained(&mut self) -> Result<bool, RingError> {
        self.room()?;
        Ok(self.head == self.tail)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.tail
    }

    /// Copy as much of the concatenation of `bufs` as fits and publish it; returns the bytes
    /// written (0 when the ring is full, or while a lend is out).
    pub fn write(&mut self, bufs: &[&[u8]]) -> Result<usize, RingError> {
        if self.lend.is_some() {
            return Ok(0);
        }
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        let mut room = self.room_cached();
        if room < want {
            room = self.room()?;
        }
        let mut left = room.min(want);
        let total = left;
        // Publish every PIECE bytes, so the consumer copies out one piece while we copy in
        // the next (a large write would otherwise leave it idle until the end), and once at
        // the end: a small write of several slices (a header and its payload) publishes once.
        let mut unpublished = 0;
        for buf in bufs {
            if left == 0 {
                break;
            }
            for piece in buf[..buf.len().min(left)].chunks(PIECE) {
                self.copy_in(self.tail, piece);
                self.tail = self.tail.wrapping_add(piece.len() as u64);
                left -= piece.len();
                unpublished += piece.len();
                if unpublished >= PIECE {
                    self.mem.tail().store(self.tail, Ordering::Release);
                    unpublished = 0;
                }
            }
        }
        if unpublished > 0 {
            self.mem.tail().store(self.tail, Ordering::Release);
        }
        Ok(total)
    }

    /// Copy `buf` to ring position `pos`, in two pieces where it wraps.
    fn copy_in(&self, pos: u64, buf: &[u8]) {
        let index = (pos & self.mask) as usize;
        let first = buf.len().min(self.capacity() as usize - index);
        self.mem.write_at(index, &buf[..first]);
        if first < buf.len() {
            self.mem.write_at(0, &buf[first..]);
        }
    }

    /// Offer `len` bytes at `addr` of this process's memory for the consumer to copy itself
    /// (at most [`MAX_LEND`]). Returns false (nothing lent) while another lend is out or
    /// `len` is 0. The caller keeps the bytes unchanged until [`Producer::end_lend`] returns.
    pub fn lend(&mut self, addr: u64, len: usize) -> bool {
        if self.lend.is_some() || len == 0 {
            return false;
        }
        let len = len.min(MAX_LEND) as u64;
        self.lend_id = self.lend_id.wrapping_add(1).max(1);
        self.mem.lend_at().store(self.tail, Ordering::Relaxed);
        self.mem.lend_addr().store(addr, Ordering::Relaxed);
        self.mem.lend_len().store(len, Ordering::Relaxed);
        // Release: a consumer that reads this state also reads the three fields above.
        self.mem.lend_state().store(u64::from(self.lend_id) << 32, Ordering::Release);
        self.lend = Some((self.lend_id, len));
        true
    }

    /// The bytes of the current lend taken so far (0 with no lend out).
    pub fn lent_taken(&self) -> Result<u64, RingError> {
        let Some((id, len)) = self.lend else { return Ok(0) };
        self.check_state(self.mem.lend_state().load(Ordering::Acquire), id, len)
    }

    fn check_state(&self, state: u64, id: u32, len: u64) -> Result<u64, RingError> {
        let taken = state & u64::from(u32::MAX);
        if state >> 32 != u64::from(id) || taken > len {
            return Err(RingError::BadLend {
                detail: format!("state {state:#x} for lend {id} of {len} bytes"),
            });
        }
        Ok(taken)
    }

    /// End the current lend (finished or not); returns the bytes the consumer took, which
    /// are part of the stream. Once this returns the consumer can take no more, so the lent
    /// memory may change. With no lend out, returns 0.
    pub fn end_lend(&mut self) -> Result<u64, RingError> {
        let Some((id, len)) = self.lend.take() else { return Ok(0) };
        // AcqRel: Acquire pairs with the consumer's claim (its copy happened before), Release
        // keeps this before our later writes. The fence orders the swap before any later
        // store to the lent memory, which the consumer's copy (by the kernel, not an atomic)
        // must not see; on x86 stores are not reordered anyway.
        let state = self.mem.lend_state().swap(0, Ordering::AcqRel);
        fence(Ordering::SeqCst);
        self.check_state(state, id, len)
    }

    /// Whether a lend is out.
    pub fn lending(&self) -> bool {
        self.lend.is_some()
    }
}

impl<M: RingMem> Consumer<M> {
    /// The consumer over `mem`, whose words start at 0.
    pub fn new(mem: M) -> Consumer<M> {
        let cap = mem.capacity();
        assert!(cap.is_power_of_two(), "ring capacity {cap} is not a power of two");
        Consumer { mem, head: 0, tail: 0, mask: cap as u64 - 1 }
    }

    fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Bytes readable now, after loading and checking the producer's `tail`.
    pub fn available(&mut self) -> Result<usize, RingError> {
        let tail = self.mem.tail().load(Ordering::Acquire);
        let ahead = tail.wrapping_sub(self.head);
        // In range of the capacity and not behind a value already accepted.
        if ahead > self.capacity() || ahead < self.tail.wrapping_sub(self.head) {
            return Err(RingError::TailOutOfRange {
                tail,
                head: self.head,
                accepted: self.tail,
                capacity: self.capacity(),
            });
        }
        self.tail = tail;
        Ok(ahead as usize)
    }

    fn available_cached(&self) -> usize {
        self.tail.wrapping_sub(self.head) as usize
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> u64 {
        self.head
    }

    /// Copy up to `dst.len()` available bytes out and free them; returns the count (0 when
    /// nothing is available).
    pub fn read(&mut self, dst: &mut [u8]) -> Result<usize, RingError> {
        let mut avail = self.available_cached();
        if avail < dst.len() {
            avail = self.available()?;
        }
        let n = avail.min(dst.len());
        if n == 0 {
            return Ok(0);
        }
        for piece in dst[..n].chunks_mut(PIECE) {
            let index = (self.head & self.mask) as usize;
            let first = piece.len().min(self.capacity() as usize - index);
            self.mem.read_at(index, &mut piece[..first]);
            if first < piece.len() {
                self.mem.read_at(0, &mut piece[first..]);
            }
            self.head = self.head.wrapping_add(piece.len() as u64);
            // Release: our copies above happen before the producer, having read this,
            // overwrites them. Per piece, so the producer refills while we copy on.
            self.mem.head().store(self.head, Ordering::Release);
        }
        Ok(n)
    }

    /// The lend to copy from next, if the ring is empty and the producer lent bytes at this
    /// position that are not all taken. Checks what the producer published.
    pub fn lent(&mut self) -> Result<Option<Lent>, RingError> {
        if self.available()? > 0 {
            return Ok(None);
        }
        let state = self.mem.lend_state().load(Ordering::Acquire);
        if state == 0 {
            return Ok(None);
        }
        let at = self.mem.lend_at().load(Ordering::Relaxed);
        let addr = self.mem.lend_addr().load(Ordering::Relaxed);
        let len = self.mem.lend_len().load(Ordering::Relaxed);
        let taken = state & u64::from(u32::MAX);
        if at != self.head {
            // The producer lends only at its tail and writes nothing while a lend is out, so
            // a lend at another position is either stale (ended, the ring moved on: the tail
            // loaded now is past our head) or a lie.
            if self.available()? > 0 {
                return Ok(None);
            }
            return Err(RingError::BadLend {
                detail: format!("lend at ring position {at}, but the stream is at {}", self.head),
            });
        }
        if len == 0 || len > MAX_LEND as u64 || taken > len || addr.checked_add(len).is_none() {
            return Err(RingError::BadLend {
                detail: format!("lend of {len} bytes at {addr:#x} with {taken} taken"),
            });
        }
        if taken == len {
            return Ok(None);
        }
        Ok(Some(Lent { state, addr: addr + taken, remaining: len - taken }))
    }

    /// Claim `n` bytes (at most `lent.remaining`) of `lent`, already copied out by the caller.
    /// `true`: they are ours and part of the stream. `false`: the producer ended the lend
    /// (or another claim moved it on) first, and the copy must be thrown away.
    pub fn claim(&mut self, lent: Lent, n: u64) -> bool {
        debug_assert!(n <= lent.remaining);
        let n = n.min(lent.remaining);
        // AcqRel: Release makes our copy happen before the producer's end_lend, which reads
        // this value with its swap; Acquire pairs with its lend.
        self.mem
            .lend_state()
            .compare_exchange(lent.state, lent.state + n, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// The sleep/wake handshake on a "sleeping" word in shared memory (a Dekker pair).
///
/// The word belongs to the sleeper, who alone stores it: odd while it sleeps (or is about to),
/// even while it is awake, counting up, so each sleep has its own value. A side about to
/// sleep [announces](sleep::announce) it, then checks its rings once more; a side that
/// changed something the sleeper may wait for (wrote, read, lent, closed) asks
/// [`sleep::must_ring`] whether to ring the sleeper's doorbell, which says yes once per sleep.
/// The two SeqCst fences make it impossible for both to miss each other: either the
/// sleeper's re-check sees the change, or the changer sees the odd value. A peer that stores
/// nonsense into our word costs us at most a ring it skips, and every sleep is bounded.
/// `tests/loom_ring.rs` checks the handshake with a doorbell that, like an eventfd, keeps a
/// ring that comes before the sleep.
pub mod sleep {
    use crate::sync::{AtomicU64, Ordering, fence};

    /// Before the last check: mark our word "sleeping" with the next odd value of `count`
    /// (our private copy of the word); sleep only if that check finds nothing.
    pub fn announce(word: &AtomicU64, count: &mut u64) {
        *count = count.wrapping_add(1) | 1;
        word.store(*count, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// After waking (or when the last check found work): mark our word "awake".
    pub fn clear(word: &AtomicU64, count: &mut u64) {
        *count = (*count | 1).wrapping_add(1);
        word.store(*count, Ordering::Relaxed);
    }

    /// After a change the peer may wait for: whether to ring its doorbell. `rung` is our
    /// private record of the last sleep we rang for, so a burst of changes rings once.
    pub fn must_ring(word: &AtomicU64, rung: &mut u64) -> bool {
        fence(Ordering::SeqCst);
        let v = word.load(Ordering::Relaxed);
        if v & 1 == 1 && v != *rung {
            *rung = v;
            return true;
        }
        false
    }
}

/// A ring in ordinary memory for loom models (in `sys`, since loom's cells need unsafe code to
/// touch): the words are loom atomics in an `Arc`, the data loom cells, so loom checks every
/// byte access for a race as well as every ordering.
#[cfg(loom)]
pub use crate::sys::loom_mem::LoomMem;
