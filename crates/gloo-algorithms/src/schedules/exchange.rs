//! Allgather (ring, Bruck), alltoall (pairwise) and the dissemination barrier.

use super::*;

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
/// `output` one segment at a time, each after a poll that posts and moves the window on
/// without waiting, so the copy runs while the peers' segments stream in; only then does
/// the exchange wait (2 ranks, p50 of 3 alternations against copying after each wait: shm
/// 1 MiB 233-243 us against 252-277, 16 MiB 3.9-4.3 ms against 4.4-4.5; tcp 1 MiB 346-349 us
/// against 355-441).
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
            // While this rank's own block is still being copied, post and move the window
            // on without waiting, so the copy runs while the peers' segments stream;
            // afterwards, wait for one more to complete.
            let moved =
                if copied < own_in.len() { ctx.poll(&mut ops) } else { ctx.drive(&mut ops, false) };
            if let Err(e) = moved {
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
