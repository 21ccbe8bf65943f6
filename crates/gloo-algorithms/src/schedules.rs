//! The schedules: who sends which bytes to whom, in which round. They work on byte buffers;
//! the only typed code they call is the reduction handed to them.
//!
//! Every schedule leaves bitwise-identical results on every rank: each block of a reduction
//! is computed once, by one rank, and then copied (ring, halving-doubling, bcube), or every
//! rank computes the same expression with the same operands in the same order (recursive
//! doubling puts the lower half's value on the left).

use std::ops::Range;

use smallvec::smallvec;

use crate::ctx::{Ctx, Land, Ops, bytes_of, carve, partition, ring_pass};
use crate::element::ByteFn;
use crate::error::Result;

/// The step of the message that hands a folded rank its result (after the at most 64 steps
/// of halving and doubling, below the steps the context reserves at the top).
const STEP_UNFOLD: u32 = 1 << 16;

/// The largest power of two not above `n` (`n >= 1`).
fn pow2_floor(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// The lowest set bit of a relative rank, or the first power of two at or above `n` for the
/// root: the size of the binomial subtree a relative rank heads.
fn subtree_mask(vr: usize, n: usize) -> usize {
    if vr == 0 { n.next_power_of_two() } else { 1 << vr.trailing_zeros() }
}

// ---------------------------------------------------------------------------------------
// Allreduce
// ---------------------------------------------------------------------------------------

/// Ring allreduce: a pipelined reduce-scatter (this rank ends owning block `rank`) then a
/// pipelined allgather.
pub(crate) fn allreduce_ring(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    es: usize,
    f: &ByteFn<'_>,
    seg: usize,
) -> Result<()> {
    let n = ctx.size;
    let blocks: Vec<Range<usize>> =
        partition(buf.len() / es, n).iter().map(|r| bytes_of(r, es)).collect();
    ring_pass(ctx, buf, &blocks, ctx.rank + n - 1, n - 1, Land::Reduce(f), seg, 0)?;
    ring_pass(ctx, buf, &blocks, ctx.rank, n - 1, Land::Copy, seg, 1)
}

/// Reduce-scatter around the ring; afterwards block `rank` of `buf` holds the result.
pub(crate) fn reduce_scatter_ring(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    blocks: &[Range<usize>],
    f: &ByteFn<'_>,
    seg: usize,
) -> Result<()> {
    let n = ctx.size;
    ring_pass(ctx, buf, blocks, ctx.rank + n - 1, n - 1, Land::Reduce(f), seg, 0)
}

/// Folding of the ranks beyond the largest power of two `p`: among the first `2 * (n - p)`
/// ranks, each even rank hands its buffer to the odd rank above it and sits out.
struct Fold {
    p: usize,
    rem: usize,
}

impl Fold {
    fn new(n: usize) -> Fold {
        let p = pow2_floor(n);
        Fold { p, rem: n - p }
    }

    /// The real rank of core rank `nr`.
    fn real(&self, nr: usize) -> usize {
        if nr < self.rem { 2 * nr + 1 } else { nr + self.rem }
    }

    /// Fold in; returns this rank's core rank, or `None` if it sits out.
    fn fold_in(
        &self,
        ctx: &Ctx<'_>,
        buf: &mut [u8],
        f: &ByteFn<'_>,
        step: u32,
    ) -> Result<Option<usize>> {
        let r = ctx.rank;
        if r >= 2 * self.rem {
            return Ok(Some(r - self.rem));
        }
        if r.is_multiple_of(2) {
            ctx.run(smallvec![ctx.send(r + 1, step, buf)])?;
            Ok(None)
        } else {
            let mut tmp = ctx.scratch(buf.len());
            ctx.run(smallvec![ctx.recv(r - 1, step, tmp.bytes())])?;
            f(buf, tmp.bytes());
            Ok(Some(r / 2))
        }
    }

    /// Hand the result back to the ranks that sat out.
    fn fold_out(&self, ctx: &Ctx<'_>, buf: &mut [u8], step: u32) -> Result<()> {
        let r = ctx.rank;
        if r >= 2 * self.rem {
            return Ok(());
        }
        if r.is_multiple_of(2) {
            ctx.run(smallvec![ctx.recv(r + 1, step, buf)])
        } else {
            ctx.run(smallvec![ctx.send(r - 1, step, buf)])
        }
    }
}

/// Recursive doubling: whole buffers exchanged with partners at distance 1, 2, 4, ...; both
/// partners compute `lower op higher` so they hold the same bits.
pub(crate) fn allreduce_recursive_doubling(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    f: &ByteFn<'_>,
) -> Result<()> {
    let fold = Fold::new(ctx.size);
    if let Some(nr) = fold.fold_in(ctx, buf, f, 0)? {
        let mut tmp = ctx.scratch(buf.len());
        let mut mask = 1;
        let mut step = 1;
        while mask < fold.p {
            let pnr = nr ^ mask;
            let partner = fold.real(pnr);
            ctx.sendrecv(partner, buf, partner, tmp.bytes(), step)?;
            if pnr < nr {
                // The partner's (lower) value goes on the left.
                f(tmp.bytes(), buf);
                buf.copy_from_slice(tmp.bytes());
            } else {
                f(buf, tmp.bytes());
            }
            mask <<= 1;
            step += 1;
        }
    }
    fold.fold_out(ctx, buf, STEP_UNFOLD)
}

/// Rabenseifner: recursive halving (each core rank ends owning a slice computed only there),
/// then recursive doubling of the slices.
pub(crate) fn allreduce_halving_doubling(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    es: usize,
    f: &ByteFn<'_>,
) -> Result<()> {
    let fold = Fold::new(ctx.size);
    if let Some(nr) = fold.fold_in(ctx, buf, f, 0)? {
        let count = buf.len() / es;
        let mut tmp = ctx.scratch(count.div_ceil(2) * es);
        let mut range = 0..count;
        let mut history: Vec<Range<usize>> = Vec::new();
        let mut mask = fold.p / 2;
        let mut step = 1;
        while mask >= 1 {
            let pnr = nr ^ mask;
            let partner = fold.real(pnr);
            let mid = range.start + range.len() / 2;
            let (keep, give) = if nr < pnr {
                (range.start..mid, mid..range.end)
            } else {
                (mid..range.end, range.start..mid)
            };
            let kb = bytes_of(&keep, es);
            let t = &mut tmp.bytes()[..kb.len()];
            ctx.sendrecv(partner, &buf[bytes_of(&give, es)], partner, t, step)?;
            f(&mut buf[kb], t);
            history.push(range);
            range = keep;
            mask /= 2;
            step += 1;
        }
        let mut mask = 1;
        while mask < fold.p {
            let pnr = nr ^ mask;
            let partner = fold.real(pnr);
            // History holds one range per halving step, popped in reverse.
            let outer = history.pop().expect("one range per halving step");
            let mid = outer.start + outer.len() / 2;
            // The lower core rank kept the lower half (the halves may be empty, so compare
            // ranks rather than offsets).
            let other = if nr < pnr { mid..outer.end } else { outer.start..mid };
            let mut pieces = carve(buf, &[bytes_of(&range, es), bytes_of(&other, es)]);
            let theirs = std::mem::take(&mut pieces[1]);
            let mine: &[u8] = std::mem::take::<&mut [u8]>(&mut pieces[0]);
            ctx.sendrecv(partner, mine, partner, theirs, step)?;
            range = outer;
            mask <<= 1;
            step += 1;
        }
    }
    fold.fold_out(ctx, buf, STEP_UNFOLD)
}

/// The digits of the mixed-radix cube: factors of `n` no larger than `base` where possible (a
/// prime factor above `base` becomes a digit of its own).
pub(crate) fn bcube_digits(n: usize, base: usize) -> Vec<usize> {
    let mut m = n;
    let mut out = Vec::new();
    while m > 1 {
        let f = (2..=base.min(m))
            .rev()
            .find(|f| m.is_multiple_of(*f))
            .unwrap_or_else(|| (2..=m).find(|f| m.is_multiple_of(*f)).unwrap_or(m));
        out.push(f);
        m /= f;
    }
    out
}

/// BCube: for each digit, reduce-scatter the current slice within the group of ranks that
/// differ only in that digit; then the digits in reverse, allgathering.
pub(crate) fn allreduce_bcube(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    es: usize,
    f: &ByteFn<'_>,
    base: usize,
) -> Result<()> {
    let digits = bcube_digits(ctx.size, base);
    let r = ctx.rank;
    let mut range = 0..buf.len() / es;
    let mut history: Vec<Range<usize>> = Vec::new();
    let mut stride = 1;
    let mut strides = Vec::new();
    for (i, &g) in digits.iter().enumerate() {
        strides.push(stride);
        let d = (r / stride) % g;
        let member = |m: usize| r - d * stride + m * stride;
        let parts: Vec<Range<usize>> = partition(range.len(), g)
            .into_iter()
            .map(|p| range.start + p.start..range.start + p.end)
            .collect();
        let mine = bytes_of(&parts[d], es);
        let mut tmp = ctx.scratch(mine.len() * (g - 1));
        {
            let mut ops = Ops::new();
            let mut lanes = tmp.bytes().chunks_mut(mine.len().max(1));
            for m in (0..g).filter(|&m| m != d) {
                ops.push(ctx.send(member(m), i as u32, &buf[bytes_of(&parts[m], es)]));
                let lane = if mine.is_empty() {
                    Default::default()
                } else {
                    // (g - 1) lanes of the slice's length were allocated.
                    lanes.next().expect("one lane per member")
                };
                ops.push(ctx.recv(member(m), i as u32, lane));
            }
            ctx.run(ops)?;
        }
        if !mine.is_empty() {
            for lane in tmp.bytes().chunks(mine.len()) {
                f(&mut buf[mine.clone()], lane);
            }
        }
        history.push(range);
        range = parts[d].clone();
        stride *= g;
    }
    for (i, &g) in digits.iter().enumerate().rev() {
        let stride = strides[i];
        let d = (r / stride) % g;
        let member = |m: usize| r - d * stride + m * stride;
        // One range was pushed per digit.
        let outer = history.pop().expect("one range per digit");
        let parts: Vec<Range<usize>> = partition(outer.len(), g)
            .into_iter()
            .map(|p| bytes_of(&(outer.start + p.start..outer.start + p.end), es))
            .collect();
        let mut pieces = carve(buf, &parts);
        let mine: &[u8] = std::mem::take::<&mut [u8]>(&mut pieces[d]);
        let step = (digits.len() + i) as u32;
        let mut ops = Ops::new();
        for (m, piece) in pieces.into_iter().enumerate() {
            if m != d {
                ops.push(ctx.send(member(m), step, mine));
                ops.push(ctx.recv(member(m), step, piece));
            }
        }
        ctx.run(ops)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rooted trees
// ---------------------------------------------------------------------------------------

/// This rank's place in the binomial tree rooted at `root`. Ranks are renumbered relative to
/// the root; relative rank `vr` heads the subtree of relative ranks `vr..vr + mask` (cut at
/// `n`), whose other members hang below its children.
struct Tree {
    n: usize,
    root: usize,
    vr: usize,
    mask: usize,
}

impl Tree {
    fn new(ctx: &Ctx<'_>, root: usize) -> Tree {
        Tree::at(ctx.rank, ctx.size, root)
    }

    fn at(rank: usize, n: usize, root: usize) -> Tree {
        let vr = (rank + n - root) % n;
        Tree { n, root, vr, mask: subtree_mask(vr, n) }
    }

    /// The real rank of relative rank `v`.
    fn real(&self, v: usize) -> usize {
        (v + self.root) % self.n
    }

    /// The parent's real rank; `None` at the root.
    fn parent(&self) -> Option<usize> {
        (self.vr != 0).then(|| self.real(self.vr - self.mask))
    }

    /// The relative ranks of this rank's subtree.
    fn subtree(&self) -> Range<usize> {
        self.vr..(self.vr + self.mask).min(self.n)
    }

    /// The children's subtrees (relative ranks; each starts with the child), smallest first.
    fn children(&self) -> impl DoubleEndedIterator<Item = Range<usize>> + '_ {
        (0..self.mask.trailing_zeros())
            .map(|i| 1usize << i)
            .filter(|m| self.vr + m < self.n)
            .map(|m| self.vr + m..(self.vr + 2 * m).min(self.n))
    }

    /// Byte offsets of the blocks of `sizes` (indexed by real rank) laid out in relative-rank
    /// order: relative rank `v`'s block is `off[v]..off[v + 1]`.
    fn offsets(&self, sizes: &[usize]) -> Vec<usize> {
        let mut off = vec![0usize; self.n + 1];
        for v in 0..self.n {
            off[v + 1] = off[v] + sizes[self.real(v)];
        }
        off
    }

    /// The length of this rank's subtree buffer (its blocks in relative order, `off` from
    /// [`offsets`](Self::offsets)) and, per child, its real rank and the byte range of its
    /// subtree in that buffer.
    fn layout(&self, off: &[usize]) -> (usize, Vec<(usize, Range<usize>)>) {
        let mine = self.subtree();
        let base = off[mine.start];
        let children =
            self.children().map(|c| (self.real(c.start), off[c.start] - base..off[c.end] - base));
        (off[mine.end] - base, children.collect())
    }

    /// For every block at the root, where it sits in relative order (`off`, from
    /// [`offsets`](Self::offsets)) and where in rank order: the root's buffer is laid out in
    /// relative order and the caller's in rank order.
    fn to_rank_order(&self, off: &[usize], sizes: &[usize]) -> Vec<(Range<usize>, Range<usize>)> {
        let mut rank_off = vec![0usize; self.n + 1];
        for q in 0..self.n {
            rank_off[q + 1] = rank_off[q] + sizes[q];
        }
        (0..self.n)
            .map(|v| {
                let q = self.real(v);
                (off[v]..off[v + 1], rank_off[q]..rank_off[q + 1])
            })
            .collect()
    }
}

/// Binomial-tree broadcast of `buf` from `root`.
pub(crate) fn broadcast_binomial(ctx: &Ctx<'_>, buf: &mut [u8], root: usize) -> Result<()> {
    let t = Tree::new(ctx, root);
    if let Some(parent) = t.parent() {
        ctx.run(smallvec![ctx.recv(parent, 0, buf)])?;
    }
    let mut ops = Ops::new();
    for child in t.children().rev() {
        ops.push(ctx.send(t.real(child.start), 0, buf));
    }
    ctx.run(ops)
}

/// Broadcast as a binomial scatter of `n` blocks followed by a ring allgather.
pub(crate) fn broadcast_scatter_allgather(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    es: usize,
    root: usize,
    seg: usize,
) -> Result<()> {
    let n = ctx.size;
    let t = Tree::new(ctx, root);
    let rel: Vec<Range<usize>> =
        partition(buf.len() / es, n).iter().map(|r| bytes_of(r, es)).collect();
    // The bytes of a subtree of relative ranks.
    let span = |s: Range<usize>| rel[s.start].start..rel[s.end - 1].end;
    if let Some(parent) = t.parent() {
        ctx.run(smallvec![ctx.recv(parent, 0, &mut buf[span(t.subtree())])])?;
    }
    {
        let mut ops = Ops::new();
        for child in t.children().rev() {
            ops.push(ctx.send(t.real(child.start), 0, &buf[span(child)]));
        }
        ctx.run(ops)?;
    }
    let blocks: Vec<Range<usize>> = (0..n).map(|q| rel[(q + n - root) % n].clone()).collect();
    ring_pass(ctx, buf, &blocks, ctx.rank, n - 1, Land::Copy, seg, 1)
}

/// Binomial-tree reduce to `root`: each rank folds its children's partial results into its
/// own (in order of subtree size), then hands the result to its parent. Non-root ranks work
/// on a copy, so their `buf` is left as it was.
pub(crate) fn reduce_binomial(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    root: usize,
    f: &ByteFn<'_>,
) -> Result<()> {
    let t = Tree::new(ctx, root);
    let has_children = t.children().next().is_some();
    let mut acc = if t.vr != 0 && has_children {
        let mut s = ctx.scratch(buf.len());
        s.bytes().copy_from_slice(buf);
        Some(s)
    } else {
        None
    };
    if has_children {
        let mut tmp = ctx.scratch(buf.len());
        for child in t.children() {
            ctx.run(smallvec![ctx.recv(t.real(child.start), 0, tmp.bytes())])?;
            match acc.as_mut() {
                Some(a) => f(a.bytes(), tmp.bytes()),
                None => f(buf, tmp.bytes()),
            }
        }
    }
    if let Some(parent) = t.parent() {
        let out: &[u8] = match acc.as_mut() {
            Some(a) => a.bytes(),
            None => buf,
        };
        ctx.run(smallvec![ctx.send(parent, 0, out)])?;
    }
    Ok(())
}

/// Binomial-tree gather of per-rank blocks (`sizes[q]` bytes from rank `q`) into `output`
/// at `root` (blocks in rank order); `output` is ignored elsewhere.
pub(crate) fn gather_binomial(
    ctx: &Ctx<'_>,
    input: &[u8],
    output: &mut [u8],
    sizes: &[usize],
    root: usize,
) -> Result<()> {
    let t = Tree::new(ctx, root);
    let off = t.offsets(sizes);
    let (len, children) = t.layout(&off);
    if children.is_empty() {
        return match t.parent() {
            Some(parent) => ctx.run(smallvec![ctx.send(parent, 0, input)]),
            None => {
                output[..input.len()].copy_from_slice(input);
                Ok(())
            }
        };
    }
    let mut tmp = ctx.scratch(len);
    tmp.bytes()[..input.len()].copy_from_slice(input);
    {
        let ranges: Vec<Range<usize>> = children.iter().map(|(_, r)| r.clone()).collect();
        let pieces = carve(tmp.bytes(), &ranges);
        let mut ops = Ops::new();
        for ((child, _), piece) in children.iter().zip(pieces) {
            ops.push(ctx.recv(*child, 0, piece));
        }
        ctx.run(ops)?;
    }
    if let Some(parent) = t.parent() {
        return ctx.run(smallvec![ctx.send(parent, 0, tmp.bytes())]);
    }
    let b = tmp.bytes();
    for (rel, rank) in t.to_rank_order(&off, sizes) {
        output[rank].copy_from_slice(&b[rel]);
    }
    Ok(())
}

/// Binomial-tree scatter from `root` of blocks (`sizes[q]` bytes for rank `q`, in rank order
/// in `input`, which is read only at the root) into each rank's `output`.
pub(crate) fn scatter_binomial(
    ctx: &Ctx<'_>,
    input: &[u8],
    output: &mut [u8],
    sizes: &[usize],
    root: usize,
) -> Result<()> {
    let t = Tree::new(ctx, root);
    let off = t.offsets(sizes);
    let (len, children) = t.layout(&off);
    if children.is_empty() {
        return match t.parent() {
            Some(parent) => ctx.run(smallvec![ctx.recv(parent, 0, output)]),
            None => {
                output.copy_from_slice(&input[..output.len()]);
                Ok(())
            }
        };
    }
    let mut tmp = ctx.scratch(len);
    match t.parent() {
        Some(parent) => ctx.run(smallvec![ctx.recv(parent, 0, tmp.bytes())])?,
        None => {
            let b = tmp.bytes();
            for (rel, rank) in t.to_rank_order(&off, sizes) {
                b[rel].copy_from_slice(&input[rank]);
            }
        }
    }
    {
        let b = tmp.bytes();
        let mut ops = Ops::new();
        for (child, r) in &children {
            ops.push(ctx.send(*child, 0, &b[r.clone()]));
        }
        ctx.run(ops)?;
    }
    output.copy_from_slice(&tmp.bytes()[..output.len()]);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Allgather, alltoall, barrier
// ---------------------------------------------------------------------------------------

/// Ring allgather over `buf` whose block `rank` already holds this rank's part.
pub(crate) fn allgather_ring(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    blocks: &[Range<usize>],
    seg: usize,
) -> Result<()> {
    ring_pass(ctx, buf, blocks, ctx.rank, ctx.size - 1, Land::Copy, seg, 0)
}

/// Bruck's allgather of equal blocks of `block` bytes: `input` is this rank's block,
/// `output` receives all blocks in rank order.
pub(crate) fn allgather_bruck(
    ctx: &Ctx<'_>,
    input: &[u8],
    output: &mut [u8],
    block: usize,
) -> Result<()> {
    let n = ctx.size;
    let r = ctx.rank;
    let mut tmp = ctx.scratch(n * block);
    let t = tmp.bytes();
    t[..block].copy_from_slice(input);
    let mut pow = 1;
    let mut step = 0;
    while pow < n {
        let cnt = pow.min(n - pow);
        let (have, rest) = t.split_at_mut(pow * block);
        ctx.sendrecv(
            (r + n - pow) % n,
            &have[..cnt * block],
            (r + pow) % n,
            &mut rest[..cnt * block],
            step,
        )?;
        pow *= 2;
        step += 1;
    }
    for i in 0..n {
        let q = (r + i) % n;
        output[q * block..(q + 1) * block].copy_from_slice(&t[i * block..(i + 1) * block]);
    }
    Ok(())
}

/// Pairwise exchange: in step `s` send block `rank + s` of `input` and receive block
/// `rank - s` of `output`. `fps` gives each pair's fingerprints (send, receive), for
/// alltoallv whose per-pair counts go into them.
pub(crate) fn alltoall_pairwise(
    ctx: &Ctx<'_>,
    input: &[u8],
    in_blocks: &[Range<usize>],
    output: &mut [u8],
    out_blocks: &[Range<usize>],
    fps: &dyn Fn(usize, usize) -> (gloo_transport::Fingerprint, gloo_transport::Fingerprint),
) -> Result<()> {
    let n = ctx.size;
    let r = ctx.rank;
    output[out_blocks[r].clone()].copy_from_slice(&input[in_blocks[r].clone()]);
    for s in 1..n {
        let to = (r + s) % n;
        let from = (r + n - s) % n;
        let (send_fp, recv_fp) = fps(to, from);
        let mut ops = Ops::new();
        ops.push(ctx.send(to, 0, &input[in_blocks[to].clone()]).with_fingerprint(send_fp));
        ops.push(
            ctx.recv(from, 0, &mut output[out_blocks[from].clone()]).with_fingerprint(recv_fp),
        );
        ctx.run(ops)?;
    }
    Ok(())
}

/// Dissemination barrier: in round `k` signal `rank + 2^k` and wait for `rank - 2^k`.
pub(crate) fn barrier_dissemination(ctx: &Ctx<'_>) -> Result<()> {
    let n = ctx.size;
    let mut dist = 1;
    let mut step = 0;
    while dist < n {
        ctx.sendrecv((ctx.rank + dist) % n, &[], (ctx.rank + n - dist) % n, &mut [], step)?;
        dist *= 2;
        step += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcube_digits_multiply_to_the_world_size() {
        assert_eq!(bcube_digits(8, 2), vec![2, 2, 2]);
        assert_eq!(bcube_digits(12, 4), vec![4, 3]);
        assert_eq!(bcube_digits(13, 4), vec![13]);
        assert_eq!(bcube_digits(1, 4), Vec::<usize>::new());
        for n in 1..40 {
            for b in 2..6 {
                assert_eq!(bcube_digits(n, b).iter().product::<usize>(), n.max(1));
            }
        }
    }

    #[test]
    fn fold_maps_core_ranks_onto_distinct_real_ranks() {
        for n in 1..20 {
            let f = Fold::new(n);
            let mut seen: Vec<usize> = (0..f.p).map(|nr| f.real(nr)).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), f.p);
            assert!(seen.iter().all(|&r| r < n));
        }
    }

    #[test]
    fn tree_children_split_each_subtree_and_name_their_parent() {
        for n in 1..20 {
            for root in 0..n {
                for rank in 0..n {
                    let t = Tree::at(rank, n, root);
                    assert_eq!(t.parent().is_none(), rank == root);
                    // The children's subtrees follow this rank and tile the rest of its own.
                    let mut next = t.vr + 1;
                    for c in t.children() {
                        assert_eq!(c.start, next, "n={n} root={root} rank={rank}");
                        assert!(c.start < c.end);
                        let child = Tree::at(t.real(c.start), n, root);
                        assert_eq!(child.parent(), Some(rank));
                        assert_eq!(child.subtree(), c);
                        next = c.end;
                    }
                    assert_eq!(next, t.subtree().end, "n={n} root={root} rank={rank}");
                }
            }
        }
    }

    #[test]
    fn the_root_puts_blocks_back_in_rank_order() {
        let t = Tree::at(2, 3, 2);
        let sizes = [1, 2, 3];
        let off = t.offsets(&sizes);
        // Relative order is ranks 2, 0, 1.
        assert_eq!(off, [0, 3, 4, 6]);
        assert_eq!(t.to_rank_order(&off, &sizes), [(0..3, 3..6), (3..4, 0..1), (4..6, 1..3)]);
        assert_eq!(t.layout(&off), (6, vec![(0, 3..4), (1, 4..6)]));
    }

    #[test]
    fn subtree_masks() {
        assert_eq!(subtree_mask(0, 5), 8);
        assert_eq!(subtree_mask(4, 5), 4);
        assert_eq!(subtree_mask(6, 8), 2);
        assert_eq!(pow2_floor(13), 8);
        assert_eq!(pow2_floor(1), 1);
    }
}
