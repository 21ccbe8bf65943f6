//! The schedules: who sends which bytes to whom, in which round. They work on byte buffers;
//! the only typed code they call is the reduction handed to them.
//!
//! Every schedule leaves bitwise-identical results on every rank: each block of a reduction
//! is computed once, by one rank, and then copied (ring, halving-doubling, bcube), or every
//! rank computes the same expression with the same operands in the same order (recursive
//! doubling puts the lower half's value on the left).

use std::ops::Range;

use gloo_transport::OpState;
use smallvec::{SmallVec, smallvec};

use crate::ctx::{Ctx, Ops, bytes_of, carve, partition};
use crate::element::ByteFn;
use crate::error::{Error, Result};
use crate::ring::{self, At, Land, Mem, ring_pass};

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
    let reduce = ring::in_place(&blocks, ctx.rank + n - 1, n - 1);
    ring_pass(ctx, Mem::in_place(buf), &reduce, Land::Reduce(f), seg, 0)?;
    let gather = ring::in_place(&blocks, ctx.rank, n - 1);
    ring_pass(ctx, Mem::in_place(buf), &gather, Land::Copy, seg, 1)
}

/// Reduce-scatter around the ring, in place; afterwards block `rank` of `buf` holds the
/// result.
pub(crate) fn reduce_scatter_ring(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    blocks: &[Range<usize>],
    f: &ByteFn<'_>,
    seg: usize,
) -> Result<()> {
    let n = ctx.size;
    let plan = ring::in_place(blocks, ctx.rank + n - 1, n - 1);
    ring_pass(ctx, Mem::in_place(buf), &plan, Land::Reduce(f), seg, 0)
}

/// Reduce-scatter around the ring from `input` (blocks `blocks`, left as they are) into
/// `output` (this rank's block): every message lands where it is reduced, partial results
/// wait in a few blocks of scratch, and the input is never copied.
pub(crate) fn reduce_scatter_ring_into(
    ctx: &Ctx<'_>,
    input: &[u8],
    output: &mut [u8],
    blocks: &[Range<usize>],
    f: &ByteFn<'_>,
    seg: usize,
) -> Result<()> {
    if ctx.size < 2 {
        output.copy_from_slice(&input[blocks[ctx.rank].clone()]);
        return Ok(());
    }
    let (plan, scratch) = ring::reduce_scatter_into(blocks, ctx.rank);
    let mut tmp = ctx.scratch(scratch);
    let mem = Mem { buf: tmp.bytes(), src: input, out: output };
    ring_pass(ctx, mem, &plan, Land::ReduceFrom(f), seg, 0)
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
    let plan = ring::in_place(&blocks, ctx.rank, n - 1);
    ring_pass(ctx, Mem::in_place(buf), &plan, Land::Copy, seg, 1)
}

/// A rank's part in a reduce: the root's buffer (its contribution, and where the result
/// goes), or another rank's contribution (read only: it is left as it was).
pub(crate) enum Mine<'b> {
    Root(&'b mut [u8]),
    Other(&'b [u8]),
}

impl Mine<'_> {
    fn len(&self) -> usize {
        match self {
            Mine::Root(b) => b.len(),
            Mine::Other(b) => b.len(),
        }
    }
}

/// The state of one segment of a pipelined tree reduce.
struct TreeItem {
    k: usize,
    range: Range<usize>,
    /// Per child, the receive of its partial result for this segment.
    recvs: SmallVec<[Option<OpState>; 8]>,
    /// How many children's partials have been reduced (in child order).
    reduced: usize,
    /// The send of this segment's partial result to the parent.
    send: Option<OpState>,
}

/// Binomial-tree reduce to `root`, pipelined by segments of `seg` bytes with
/// [`ring::WINDOW`] segments in flight: each rank reduces its children's partial results
/// for a segment into its own (children in order of subtree size, so a run gives the same
/// bits every time) and sends the segment on to its parent while the next ones arrive.
/// Children's segments land in scratch lanes (a segment each, so the reduction reads them
/// from cache), and a rank between the root and the leaves keeps its partials in a window of
/// segment-sized slots: no rank needs scratch the size of the message.
pub(crate) fn reduce_tree(
    ctx: &Ctx<'_>,
    mut mine: Mine<'_>,
    root: usize,
    f: &ByteFn<'_>,
    seg: usize,
) -> Result<()> {
    const W: usize = ring::WINDOW;
    let t = Tree::new(ctx, root);
    let children: SmallVec<[usize; 8]> = t.children().map(|c| t.real(c.start)).collect();
    let parent = t.parent();
    let len = mine.len();
    let seg = seg.max(1).min(len.max(1));
    let nseg = len.div_ceil(seg).max(1);
    let nc = children.len();
    // Lane (k % W, c) holds child c's segment k; slot k % W a middle rank's partial.
    let mut lanes = ctx.scratch(W * nc * seg);
    let middle = parent.is_some() && nc > 0;
    let mut slots = ctx.scratch(if middle { W * seg } else { 0 });
    let make = |k: usize| {
        let range = (k * seg).min(len)..((k + 1) * seg).min(len);
        let some = !range.is_empty();
        TreeItem {
            k,
            recvs: children.iter().map(|_| some.then_some(OpState::New)).collect(),
            reduced: if some { 0 } else { nc },
            send: (some && parent.is_some()).then_some(OpState::New),
            range,
        }
    };
    let done = |s: &Option<OpState>| matches!(s, None | Some(OpState::Done { .. }));
    let mut window: SmallVec<[TreeItem; W]> = SmallVec::new();
    let (mut next, mut retired) = (0, 0);
    while retired < nseg {
        while window.len() < W && next < nseg {
            let it = make(next);
            if middle
                && !it.range.is_empty()
                && let Mine::Other(input) = &mine
            {
                // The partial starts as this rank's own contribution.
                let at = (it.k % W) * seg;
                slots.bytes()[at..at + it.range.len()].copy_from_slice(&input[it.range.clone()]);
            }
            window.push(it);
            next += 1;
        }
        let waited;
        {
            let mut lane_bufs: SmallVec<[Option<&mut [u8]>; 16]> =
                lanes.bytes().chunks_mut(seg).map(Some).collect();
            let slot_bufs: SmallVec<[&[u8]; W]> = slots.bytes().chunks(seg).collect();
            let mut roles: SmallVec<[(usize, Option<usize>); 8]> = SmallVec::new();
            let mut ops = Ops::new();
            // Sends go to the parent in segment order (children's segments may complete
            // out of order), so a send waits for every earlier one to be under way.
            let mut in_order = true;
            for (w, it) in window.iter().enumerate() {
                let n = it.range.len();
                in_order &= it.reduced == nc;
                if let Some(p) = parent
                    && !done(&it.send)
                    && in_order
                {
                    let out: &[u8] = match &mine {
                        Mine::Other(input) if !middle => &input[it.range.clone()],
                        _ => &slot_bufs[it.k % W][..n],
                    };
                    let mut op = ctx.send(p, 0, out);
                    if let Some(st @ OpState::Posted(_)) = it.send {
                        op.set_state(st);
                    }
                    ops.push(op);
                    roles.push((w, None));
                }
                for (c, &child) in children.iter().enumerate() {
                    if done(&it.recvs[c]) {
                        continue;
                    }
                    // Each (item, child) pair has its own lane.
                    let lane = lane_bufs[(it.k % W) * nc + c].take().expect("one lane per pair");
                    let mut op = ctx.recv(child, 0, &mut lane[..n]);
                    if let Some(st @ OpState::Posted(_)) = it.recvs[c] {
                        op.set_state(st);
                    }
                    ops.push(op);
                    roles.push((w, Some(c)));
                }
            }
            waited = !ops.is_empty();
            if waited {
                if let Err(e) = ctx.drive(&mut ops, false) {
                    if !matches!(e, Error::Transport { .. } | Error::Mismatch { .. }) {
                        // A length error leaves our other operations posted.
                        ctx.comm.cancel(&mut ops);
                    }
                    return Err(e);
                }
                for (op, &(w, role)) in ops.iter().zip(&roles) {
                    match role {
                        None => window[w].send = Some(op.state()),
                        Some(c) => window[w].recvs[c] = Some(op.state()),
                    }
                }
            }
        }
        for it in window.iter_mut() {
            let n = it.range.len();
            while it.reduced < nc && done(&it.recvs[it.reduced]) {
                let c = it.reduced;
                let lane = &lanes.bytes()[((it.k % W) * nc + c) * seg..][..n];
                match &mut mine {
                    Mine::Root(buf) => f(&mut buf[it.range.clone()], lane),
                    Mine::Other(_) => f(&mut slots.bytes()[(it.k % W) * seg..][..n], lane),
                }
                it.reduced += 1;
            }
        }
        let before = retired;
        while let Some(first) = window.first() {
            if first.reduced == nc && done(&first.send) {
                window.remove(0);
                retired += 1;
            } else {
                break;
            }
        }
        if !waited && retired == before {
            // Nothing to wait for and nothing retired would spin forever: a schedule bug.
            return Err(Error::invalid(ctx.collective, "internal: the reduce pipeline stalled"));
        }
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

/// Gather by direct exchange with the root: every rank sends its block straight to the
/// root, which receives each into its place in `output` (rank order) and copies its own.
pub(crate) fn gather_direct(
    ctx: &Ctx<'_>,
    input: &[u8],
    output: &mut [u8],
    sizes: &[usize],
    root: usize,
) -> Result<()> {
    if ctx.rank != root {
        return ctx.run(smallvec![ctx.send(root, 0, input)]);
    }
    let blocks = crate::ctx::byte_ranges(sizes, 1);
    let mut pieces = carve(output, &blocks);
    let mine = std::mem::take(&mut pieces[root]);
    let mut ops = Ops::new();
    // The nearest ranks after the root first, as a tree's first children are.
    for i in 1..ctx.size {
        let q = (root + i) % ctx.size;
        ops.push(ctx.recv(q, 0, std::mem::take(&mut pieces[q])));
    }
    mine.copy_from_slice(input);
    ctx.run(ops)
}

/// Scatter by direct exchange with the root: the root sends block `q` of `input` straight to
/// rank `q` and copies its own; every other rank receives its block into `output`.
pub(crate) fn scatter_direct(
    ctx: &Ctx<'_>,
    input: &[u8],
    output: &mut [u8],
    sizes: &[usize],
    root: usize,
) -> Result<()> {
    if ctx.rank != root {
        return ctx.run(smallvec![ctx.recv(root, 0, output)]);
    }
    let blocks = crate::ctx::byte_ranges(sizes, 1);
    let mut ops = Ops::new();
    for i in 1..ctx.size {
        let q = (root + i) % ctx.size;
        ops.push(ctx.send(q, 0, &input[blocks[q].clone()]));
    }
    output.copy_from_slice(&input[blocks[root].clone()]);
    ctx.run(ops)
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
    let plan = ring::in_place(blocks, ctx.rank, ctx.size - 1);
    ring_pass(ctx, Mem::in_place(buf), &plan, Land::Copy, seg, 0)
}

/// Ring allgather of `input` (this rank's block) into `output`, whose blocks are `blocks`:
/// the first step sends straight from `input`, and each of its segments is copied into this
/// rank's block of `output` just before it goes (see [`ring::Step::keep`]), so the copy
/// overlaps the transfer of the others instead of preceding the whole pass.
pub(crate) fn allgather_ring_into(
    ctx: &Ctx<'_>,
    input: &[u8],
    output: &mut [u8],
    blocks: &[Range<usize>],
    seg: usize,
) -> Result<()> {
    let mut plan = ring::in_place(blocks, ctx.rank, ctx.size - 1);
    if let Some(first) = plan.first_mut() {
        first.send = At::Src(0..input.len());
        first.keep = blocks[ctx.rank].clone();
    }
    let mem = Mem { buf: output, src: input, out: &mut [] };
    ring_pass(ctx, mem, &plan, Land::Copy, seg, 0)
}

/// Bruck's allgather of equal blocks of `block` bytes over `output`, whose block `rank`
/// already holds this rank's part; afterwards it holds all blocks in rank order.
pub(crate) fn allgather_bruck(ctx: &Ctx<'_>, output: &mut [u8], block: usize) -> Result<()> {
    let n = ctx.size;
    let r = ctx.rank;
    let mut tmp = ctx.scratch(n * block);
    let t = tmp.bytes();
    t[..block].copy_from_slice(&output[r * block..(r + 1) * block]);
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
///
/// Each block travels as segments of at most `seg` bytes (an empty block as one empty
/// message), with [`ring::WINDOW`] segments each way in flight across the steps, so the next
/// segment's handshake is under way while one streams; one 32 MiB message each way kept the
/// pipe emptier than segments do, as in the ring. This rank's own block is copied into
/// `output` one segment at a time between waits, while the peers' segments stream in,
/// instead of before the first message.
pub(crate) fn alltoall_pairwise(
    ctx: &Ctx<'_>,
    input: &[u8],
    in_blocks: &[Range<usize>],
    output: &mut [u8],
    out_blocks: &[Range<usize>],
    seg: usize,
    fps: &dyn Fn(usize, usize) -> (gloo_transport::Fingerprint, gloo_transport::Fingerprint),
) -> Result<()> {
    let n = ctx.size;
    let r = ctx.rank;
    let seg = seg.max(1);
    let (own_in, own_out) = (in_blocks[r].clone(), out_blocks[r].clone());
    if own_in.len() != own_out.len() {
        return Err(Error::invalid(
            ctx.collective,
            "internal: this rank's block to itself differs in length between input and output",
        ));
    }
    // Segment `k` of a block, empty past its end; a block is at least one (empty) message.
    let piece = |b: &Range<usize>, k: usize| {
        let start = b.start.saturating_add(k.saturating_mul(seg)).min(b.end);
        start..start.saturating_add(seg).min(b.end)
    };
    let pieces = |b: &Range<usize>| b.len().div_ceil(seg).max(1);
    let step_items =
        |s: usize| pieces(&in_blocks[(r + s) % n]).max(pieces(&out_blocks[(r + n - s) % n]));
    let done = |st: &Option<OpState>| matches!(st, None | Some(OpState::Done { .. }));
    let mut window: SmallVec<[PairItem; ring::WINDOW]> = SmallVec::new();
    // The next (step, segment) to enter the window.
    let (mut step, mut k) = (1, 0);
    let mut copied = 0;
    loop {
        while window.len() < ring::WINDOW && step < n {
            let (to, from) = ((r + step) % n, (r + n - step) % n);
            let (sb, rb) = (&in_blocks[to], &out_blocks[from]);
            window.push(PairItem {
                to,
                from,
                send: (k < pieces(sb)).then(|| piece(sb, k)),
                recv: (k < pieces(rb)).then(|| piece(rb, k)),
                send_state: (k < pieces(sb)).then_some(OpState::New),
                recv_state: (k < pieces(rb)).then_some(OpState::New),
            });
            k += 1;
            if k == step_items(step) {
                (step, k) = (step + 1, 0);
            }
        }
        if window.is_empty() {
            break;
        }
        {
            let recv_ranges: SmallVec<[Range<usize>; ring::WINDOW]> = window
                .iter()
                .map(|it| match (&it.recv, done(&it.recv_state)) {
                    (Some(rr), false) => rr.clone(),
                    _ => 0..0,
                })
                .collect();
            let mut recv_pieces = carve(output, &recv_ranges).into_iter();
            let mut ops = Ops::new();
            // Which item and direction each operation is.
            let mut roles: SmallVec<[(usize, bool); 4]> = SmallVec::new();
            for (w, it) in window.iter().enumerate() {
                let (send_fp, recv_fp) = fps(it.to, it.from);
                let into = recv_pieces.next().unwrap_or_default();
                if let (Some(sr), false) = (&it.send, done(&it.send_state)) {
                    let mut op = ctx.send(it.to, 0, &input[sr.clone()]).with_fingerprint(send_fp);
                    if let Some(st @ OpState::Posted(_)) = it.send_state {
                        op.set_state(st);
                    }
                    ops.push(op);
                    roles.push((w, true));
                }
                if let (Some(_), false) = (&it.recv, done(&it.recv_state)) {
                    let mut op = ctx.recv(it.from, 0, into).with_fingerprint(recv_fp);
                    if let Some(st @ OpState::Posted(_)) = it.recv_state {
                        op.set_state(st);
                    }
                    ops.push(op);
                    roles.push((w, false));
                }
            }
            if let Err(e) = ctx.drive(&mut ops, false) {
                if !matches!(e, Error::Transport { .. } | Error::Mismatch { .. }) {
                    // A length error leaves our other operations posted.
                    ctx.comm.cancel(&mut ops);
                }
                return Err(e);
            }
            for (op, &(w, is_send)) in ops.iter().zip(&roles) {
                let st = Some(op.state());
                if is_send {
                    window[w].send_state = st;
                } else {
                    window[w].recv_state = st;
                }
            }
        }
        if copied < own_in.len() {
            let len = seg.min(own_in.len() - copied);
            let (from, to) = (own_in.start + copied, own_out.start + copied);
            output[to..to + len].copy_from_slice(&input[from..from + len]);
            copied += len;
        }
        window.retain(|it| !(done(&it.send_state) && done(&it.recv_state)));
    }
    // Fewer waits than segments of the own block (a world of one, or few segments).
    output[own_out.start + copied..own_out.end]
        .copy_from_slice(&input[own_in.start + copied..own_in.end]);
    Ok(())
}

/// One (step, segment) item of a pairwise exchange: the segment sent to `to` and the one
/// received from `from`, each absent when that block has fewer segments.
struct PairItem {
    to: usize,
    from: usize,
    send: Option<Range<usize>>,
    recv: Option<Range<usize>>,
    send_state: Option<OpState>,
    recv_state: Option<OpState>,
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
