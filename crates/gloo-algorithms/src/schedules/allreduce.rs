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
    if n == 2 {
        return allreduce_pair(ctx, buf, &blocks, f, seg);
    }
    let reduce = ring::in_place(&blocks, ctx.rank + n - 1, n - 1);
    ring_pass(ctx, Mem::in_place(buf), &reduce, Land::Reduce(f), seg, 0)?;
    let gather = ring::in_place(&blocks, ctx.rank, n - 1);
    ring_pass(ctx, Mem::in_place(buf), &gather, Land::Copy, seg, 1)
}

/// Segments of a two-rank ring in flight at once (each up to four messages).
const PAIR_WINDOW: usize = 3;

/// Where one segment of [`allreduce_pair`] stands: each operation's state (`None`: nothing
/// to move, the piece is empty) and whether the received contribution has been reduced.
#[derive(Clone, Copy)]
struct PairSeg {
    k: usize,
    /// Our contribution to the peer's half, out.
    give: Option<OpState>,
    /// The peer's contribution to our half, into a lane.
    take: Option<OpState>,
    reduced: bool,
    /// Our half's result, out (once reduced).
    back: Option<OpState>,
    /// The peer's half's result, into the buffer (once `give` is done: same bytes).
    result: Option<OpState>,
}

/// The ring allreduce of two ranks, segment by segment: each segment of this rank's half is
/// reduced and sent back as soon as the peer's contribution to it lands, rather than after
/// the whole reduce-scatter pass. The peer then reads the result while it is still in the
/// cache the reduction left it in, instead of from memory: over shared memory, where a
/// large allreduce is bound by memory traffic, that is a quarter of each rank's traffic.
/// Messages and results are those of the two passes (each half is reduced once, by its
/// owner, so both ranks hold the same bits).
fn allreduce_pair(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    blocks: &[Range<usize>],
    f: &ByteFn<'_>,
    seg: usize,
) -> Result<()> {
    let peer = 1 - ctx.rank;
    let (mine, theirs) = (blocks[ctx.rank].clone(), blocks[peer].clone());
    let seg = seg.max(1);
    let piece = |r: &Range<usize>, k: usize| ring::segment_of(r, k, seg);
    let nseg = mine.len().max(theirs.len()).div_ceil(seg).max(1);
    let mut lanes: SmallVec<[_; PAIR_WINDOW]> =
        (0..PAIR_WINDOW).map(|_| ctx.scratch(seg.min(mine.len()))).collect();
    let op = |r: Range<usize>| (!r.is_empty()).then_some(OpState::New);
    let done = |s: Option<OpState>| matches!(s, None | Some(OpState::Done { .. }));
    let mut window: SmallVec<[PairSeg; PAIR_WINDOW]> = SmallVec::new();
    let mut next = 0;
    while next < nseg || !window.is_empty() {
        while window.len() < PAIR_WINDOW && next < nseg {
            let k = next;
            let take = op(piece(&mine, k));
            window.push(PairSeg {
                k,
                give: op(piece(&theirs, k)),
                take,
                reduced: take.is_none(),
                back: take,
                result: op(piece(&theirs, k)),
            });
            next += 1;
        }
        // The batch: per segment, what may be posted now. 0: give, 1: take, 2: back,
        // 3: result. A segment's pieces of the buffer in one batch never overlap: `result`
        // joins only once `give` is done, `take` lands in a lane.
        let mut roles: SmallVec<[(usize, u8); 12]> = SmallVec::new();
        let mut ranges: SmallVec<[Range<usize>; 12]> = SmallVec::new();
        // Messages of one slot between two ranks match in the order they are posted, and
        // transfers may complete out of that order: the results go out and are received in
        // segment order, each posted only once every earlier one is.
        let (mut backs_wait, mut results_wait) = (false, false);
        for (w, s) in window.iter().enumerate() {
            if !done(s.give) {
                roles.push((w, 0));
                ranges.push(piece(&theirs, s.k));
            }
            if !done(s.take) {
                roles.push((w, 1));
                ranges.push(0..0);
            }
            if s.reduced && !done(s.back) && !backs_wait {
                roles.push((w, 2));
                ranges.push(piece(&mine, s.k));
            } else if s.back == Some(OpState::New) {
                backs_wait = true;
            }
            if done(s.give) && !done(s.result) && !results_wait {
                roles.push((w, 3));
                ranges.push(piece(&theirs, s.k));
            } else if s.result == Some(OpState::New) {
                results_wait = true;
            }
        }
        if !roles.is_empty() {
            let mut pieces = carve(buf, &ranges).into_iter();
            let mut lane_bufs: SmallVec<[Option<&mut [u8]>; PAIR_WINDOW]> =
                lanes.iter_mut().map(|l| Some(l.bytes())).collect();
            let mut ops = Ops::new();
            for &(w, role) in &roles {
                let s = &window[w];
                let bytes = pieces.next().expect("one piece per role");
                let (mut o, st) = match role {
                    0 => (ctx.send(peer, 0, bytes), s.give),
                    1 => {
                        // Segments in the window have distinct indices mod the window, so
                        // each lane is taken once.
                        let lane =
                            lane_bufs[s.k % PAIR_WINDOW].take().expect("one segment per lane");
                        let len = piece(&mine, s.k).len();
                        (ctx.recv(peer, 0, &mut lane[..len]), s.take)
                    }
                    2 => (ctx.send(peer, 1, bytes), s.back),
                    _ => (ctx.recv(peer, 1, bytes), s.result),
                };
                if let Some(st @ OpState::Posted(_)) = st {
                    o.set_state(st);
                }
                ops.push(o);
            }
            if let Err(e) = ctx.drive(&mut ops, false) {
                if !matches!(e, Error::Transport { .. } | Error::Mismatch { .. }) {
                    // A length error leaves our other operations posted.
                    ctx.comm.cancel(&mut ops);
                }
                return Err(e);
            }
            for (o, &(w, role)) in ops.iter().zip(&roles) {
                let s = &mut window[w];
                let st = Some(o.state());
                match role {
                    0 => s.give = st,
                    1 => s.take = st,
                    2 => s.back = st,
                    _ => s.result = st,
                }
            }
        }
        let mut moved = false;
        for s in window.iter_mut() {
            if !s.reduced && done(s.take) {
                let r = piece(&mine, s.k);
                let len = r.len();
                f(&mut buf[r], &lanes[s.k % PAIR_WINDOW].bytes()[..len]);
                s.reduced = true;
                moved = true;
            }
        }
        // In order: a segment's lane is free for the segment `PAIR_WINDOW` after it only
        // once it retires.
        let before = window.len();
        while let Some(s) = window.first() {
            if done(s.give) && done(s.take) && s.reduced && done(s.back) && done(s.result) {
                window.remove(0);
            } else {
                break;
            }
        }
        if roles.is_empty() && !moved && window.len() == before {
            // Nothing to wait for and nothing retired would spin forever: a schedule bug.
            return Err(Error::invalid(ctx.collective, "internal: the two-rank ring stalled"));
        }
    }
    Ok(())
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
