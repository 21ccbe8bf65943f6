//! Allreduce: ring, recursive doubling, halving-doubling (Rabenseifner) and BCube, and the
//! ring reduce-scatter.

use super::*;

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
pub(super) struct Fold {
    pub(super) p: usize,
    pub(super) rem: usize,
}

impl Fold {
    pub(super) fn new(n: usize) -> Fold {
        let p = pow2_floor(n);
        Fold { p, rem: n - p }
    }

    /// The real rank of core rank `nr`.
    pub(super) fn real(&self, nr: usize) -> usize {
        if nr < self.rem { 2 * nr + 1 } else { nr + self.rem }
    }

    /// Fold in; returns this rank's core rank, or `None` if it sits out.
    pub(super) fn fold_in(
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
    pub(super) fn fold_out(&self, ctx: &Ctx<'_>, buf: &mut [u8], step: u32) -> Result<()> {
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
