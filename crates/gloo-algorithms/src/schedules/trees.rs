//! The rooted schedules: binomial trees for broadcast, reduce, gather and scatter, the
//! scatter-allgather broadcast, and the direct gather and scatter.

use super::*;

/// This rank's place in the binomial tree rooted at `root`. Ranks are renumbered relative to
/// the root; relative rank `vr` heads the subtree of relative ranks `vr..vr + mask` (cut at
/// `n`), whose other members hang below its children.
pub(super) struct Tree {
    pub(super) n: usize,
    pub(super) root: usize,
    pub(super) vr: usize,
    pub(super) mask: usize,
}

impl Tree {
    pub(super) fn new(ctx: &Ctx<'_>, root: usize) -> Tree {
        Tree::at(ctx.rank, ctx.size, root)
    }

    pub(super) fn at(rank: usize, n: usize, root: usize) -> Tree {
        let vr = (rank + n - root) % n;
        Tree { n, root, vr, mask: subtree_mask(vr, n) }
    }

    /// The real rank of relative rank `v`.
    pub(super) fn real(&self, v: usize) -> usize {
        (v + self.root) % self.n
    }

    /// The parent's real rank; `None` at the root.
    pub(super) fn parent(&self) -> Option<usize> {
        (self.vr != 0).then(|| self.real(self.vr - self.mask))
    }

    /// The relative ranks of this rank's subtree.
    pub(super) fn subtree(&self) -> Range<usize> {
        self.vr..(self.vr + self.mask).min(self.n)
    }

    /// The children's subtrees (relative ranks; each starts with the child), smallest first.
    pub(super) fn children(&self) -> impl DoubleEndedIterator<Item = Range<usize>> + '_ {
        (0..self.mask.trailing_zeros())
            .map(|i| 1usize << i)
            .filter(|m| self.vr + m < self.n)
            .map(|m| self.vr + m..(self.vr + 2 * m).min(self.n))
    }

    /// Byte offsets of the blocks of `sizes` (indexed by real rank) laid out in relative-rank
    /// order: relative rank `v`'s block is `off[v]..off[v + 1]`.
    pub(super) fn offsets(&self, sizes: &[usize]) -> Vec<usize> {
        let mut off = vec![0usize; self.n + 1];
        for v in 0..self.n {
            off[v + 1] = off[v] + sizes[self.real(v)];
        }
        off
    }

    /// The length of this rank's subtree buffer (its blocks in relative order, `off` from
    /// [`offsets`](Self::offsets)) and, per child, its real rank and the byte range of its
    /// subtree in that buffer.
    pub(super) fn layout(&self, off: &[usize]) -> (usize, Vec<(usize, Range<usize>)>) {
        let mine = self.subtree();
        let base = off[mine.start];
        let children =
            self.children().map(|c| (self.real(c.start), off[c.start] - base..off[c.end] - base));
        (off[mine.end] - base, children.collect())
    }

    /// For every block at the root, where it sits in relative order (`off`, from
    /// [`offsets`](Self::offsets)) and where in rank order: the root's buffer is laid out in
    /// relative order and the caller's in rank order.
    pub(super) fn to_rank_order(
        &self,
        off: &[usize],
        sizes: &[usize],
    ) -> Vec<(Range<usize>, Range<usize>)> {
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

/// Pipelined chain broadcast: the ranks in a line from the root (`root`, `root + 1`, ...),
/// the buffer cut into segments of `seg` bytes, each rank passing a segment on to the next
/// as soon as it has it. Every link carries data at once and the root sends the buffer
/// once, where a binomial tree's root sends it ⌈log2 n⌉ times, one after the other.
pub(crate) fn broadcast_chain(
    ctx: &Ctx<'_>,
    buf: &mut [u8],
    root: usize,
    seg: usize,
) -> Result<()> {
    /// Receives in flight, and at most as many sends waiting on the next rank: enough to
    /// keep both links busy, and a bounded list of operations however long the buffer.
    const WINDOW: usize = 4;
    let n = ctx.size;
    let pos = (ctx.rank + n - root) % n;
    let (prev, next) = ((ctx.rank + n - 1) % n, (ctx.rank + 1) % n);
    let seg = seg.max(1);
    if pos == 0 {
        let mut segs = buf.chunks(seg);
        let mut ops = Ops::new();
        loop {
            while ops.len() < WINDOW
                && let Some(s) = segs.next()
            {
                ops.push(ctx.send(next, 0, s));
            }
            if ops.is_empty() {
                return Ok(());
            }
            ctx.drive(&mut ops, false)?;
            ops.retain(|op| !op.is_done());
        }
    }
    let forward = pos + 1 < n;
    let mut segs = buf.chunks_mut(seg);
    let mut ops = Ops::new();
    loop {
        let receiving = ops.iter().filter(|op| !op.is_send()).count();
        let sending = ops.len() - receiving;
        let mut room = WINDOW.saturating_sub(receiving.max(sending));
        while room > 0
            && let Some(s) = segs.next()
        {
            ops.push(ctx.recv(prev, 0, s));
            room -= 1;
        }
        if ops.is_empty() {
            return Ok(());
        }
        ctx.drive(&mut ops, false)?;
        // Segments go on to the next rank in stream order (its receives match them first in
        // first out), so only the landed ones before the first still under way: a later one
        // can land first (its transfer overtook), and waits. A segment passed on leaves an
        // empty buffer in its receive (segments are never empty), which then goes.
        let mut landed: SmallVec<[&[u8]; WINDOW]> = SmallVec::new();
        for op in ops.iter_mut().filter(|op| !op.is_send()) {
            if !op.is_done() {
                break;
            }
            if let OpKind::Recv { buf, .. } = op.kind_mut() {
                let s: &mut [u8] = std::mem::take(buf);
                landed.push(s);
            }
        }
        ops.retain(|op| !(op.is_done() && (op.is_send() || op.buf_len() == 0)));
        if forward {
            ops.extend(landed.into_iter().map(|s| ctx.send(next, 0, s)));
        }
    }
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
/// root, which receives each into its place in `output` (rank order) and copies its own
/// there `seg` bytes at a time with the receives posted and moved on between pieces
/// ([`Ctx::copy_while`]): copied before posting, the copy added its whole time to the call's
/// (2 ranks, p50 of 4 alternations: tcp 64 MiB 9.4-10.9 ms against 10.9-13.6; shm 8 MiB
/// 0.39-0.46 ms against 0.89-2.66).
pub(crate) fn gather_direct(
    ctx: &Ctx<'_>,
    input: &[u8],
    output: &mut [u8],
    sizes: &[usize],
    root: usize,
    seg: usize,
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
    ctx.copy_while(&mut ops, mine, input, seg)?;
    ctx.run(ops)
}

/// Scatter by direct exchange with the root: the root sends block `q` of `input` straight to
/// rank `q` and copies its own; every other rank receives its block into `output`.
///
/// The root copies before its sends, not in pieces between them as gather's root does: over
/// tcp its core is busy sending anyway, and over shm the receiver pulls the block while the
/// root is inside a call, so polling between pieces stalls it (2 ranks, p50 of 3
/// alternations: shm 8 MiB 0.89-0.94 ms in pieces against 0.31-0.42, 64 MiB 8.4-9.3 ms
/// against 7.3-7.6; tcp no better).
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
