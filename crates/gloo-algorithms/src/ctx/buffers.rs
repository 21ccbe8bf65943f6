//! Byte ranges of a call's buffers, and the scratch buffers a `Group` keeps between calls.

use super::*;

/// Split `count` elements into `parts` nearly equal contiguous ranges (the first
/// `count % parts` get one more).
pub(crate) fn partition(count: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.max(1);
    let (q, r) = (count / parts, count % parts);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for i in 0..parts {
        let len = q + usize::from(i < r);
        out.push(start..start + len);
        start += len;
    }
    out
}

/// Contiguous ranges of `counts[i] * size` bytes, in order.
pub(crate) fn byte_ranges(counts: &[usize], size: usize) -> Vec<Range<usize>> {
    let mut start = 0;
    counts
        .iter()
        .map(|c| {
            let r = start..start + c * size;
            start = r.end;
            r
        })
        .collect()
}

/// `n` ranges of `len` bytes each, back to back: the blocks of a call whose ranks all
/// give the same count (inline up to 8 ranks, so a small call allocates nothing for them).
pub(crate) fn even_ranges(n: usize, len: usize) -> SmallVec<[Range<usize>; 8]> {
    (0..n).map(|q| q * len..(q + 1) * len).collect()
}

/// Scale an element range to bytes.
pub(crate) fn bytes_of(r: &Range<usize>, size: usize) -> Range<usize> {
    r.start * size..r.end * size
}

/// Scratch buffers kept between calls by a [`Group`](crate::Group), so that a call does not
/// pay for allocating (and the kernel for zeroing and faulting in) its scratch every time.
/// Holds at most [`POOL_BUFFERS`] buffers of at most [`POOL_MAX_BYTES`] each.
#[derive(Default)]
pub(crate) struct ScratchPool(pub(super) Mutex<Vec<Vec<u64>>>);

/// The most words a [`Scratch`] holds inline.
pub(crate) const INLINE_WORDS: usize = 8;

/// How many buffers a pool keeps.
pub(super) const POOL_BUFFERS: usize = 4;
/// The largest buffer a pool keeps (larger ones are freed).
pub(super) const POOL_MAX_BYTES: usize = 64 << 20;

impl ScratchPool {
    pub(super) fn take(&self, words: usize) -> Option<Vec<u64>> {
        // A poisoned lock only means a panic elsewhere while the list was held; the list
        // of spare buffers is still valid.
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let i =
            v.iter().enumerate().filter(|(_, b)| b.len() >= words).min_by_key(|(_, b)| b.len())?.0;
        Some(v.swap_remove(i))
    }

    pub(super) fn give(&self, buf: Vec<u64>) {
        if buf.len() * 8 > POOL_MAX_BYTES || buf.is_empty() {
            return;
        }
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < POOL_BUFFERS {
            v.push(buf);
        } else if let Some(smallest) = v.iter_mut().min_by_key(|b| b.len())
            && smallest.len() < buf.len()
        {
            *smallest = buf;
        }
    }
}

/// A scratch buffer of `len` bytes aligned for every element type (it is allocated as
/// `u64`s), so that typed kernels can view its element-aligned pieces without copying. Its
/// contents are unspecified (a reused buffer keeps old bytes): schedules write every byte
/// they later read. Up to [`INLINE_WORDS`] words it lives inline; a larger one comes from
/// its pool and goes back when dropped.
pub(crate) struct Scratch<'p> {
    pub(super) buf: SmallVec<[u64; INLINE_WORDS]>,
    pub(super) len: usize,
    pub(super) pool: Option<&'p ScratchPool>,
}

impl<'p> Scratch<'p> {
    /// A fresh buffer, not from a pool.
    pub(crate) fn new(len: usize) -> Scratch<'p> {
        Scratch { buf: smallvec::smallvec![0u64; len.div_ceil(8)], len, pool: None }
    }

    pub(super) fn from_pool(pool: &'p ScratchPool, len: usize) -> Scratch<'p> {
        let words = len.div_ceil(8);
        if words <= INLINE_WORDS {
            // A small call's scratch: the pool's lock, taken and given back, would cost
            // more than the buffer.
            return Scratch::new(len);
        }
        let buf = pool.take(words).unwrap_or_else(|| vec![0u64; words]);
        Scratch { buf: SmallVec::from_vec(buf), len, pool: Some(pool) }
    }

    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.buf[..])[..self.len]
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool
            && self.buf.spilled()
        {
            pool.give(std::mem::take(&mut self.buf).into_vec());
        }
    }
}

/// Cut disjoint `ranges` out of `buf`, returned in the order of `ranges`. Empty ranges give
/// empty slices. The ranges of non-empty slices must not overlap (the schedules guarantee
/// it); an overlap would be a bug in a schedule and panics.
pub(crate) fn carve<'b>(buf: &'b mut [u8], ranges: &[Range<usize>]) -> SmallVec<[&'b mut [u8]; 4]> {
    let mut order: SmallVec<[usize; 4]> =
        (0..ranges.len()).filter(|&i| !ranges[i].is_empty()).collect();
    order.sort_by_key(|&i| ranges[i].start);
    let mut out: SmallVec<[&'b mut [u8]; 4]> = ranges.iter().map(|_| Default::default()).collect();
    let mut rest = buf;
    let mut base = 0;
    for i in order {
        let r = &ranges[i];
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - base);
        let (piece, tail) = tail.split_at_mut(r.len());
        out[i] = piece;
        rest = tail;
        base = r.end;
    }
    out
}
