//! The pipelined ring engine: steps around the ring (send to `rank + 1`, receive from
//! `rank - 1`), each block cut into segments with [`WINDOW`] segments in flight, and what
//! arrives either written in place or reduced.
//!
//! A pass is described by a plan, one [`Step`] per step: where the block sent at that step
//! comes from and where the block received lands. Most passes work in place on one buffer;
//! the out-of-place reduce-scatter reads its first sends and its reduce operands from the
//! caller's input, keeps its partial results in scratch, and lands its last step in the
//! caller's output, so it never copies the input.

use std::ops::Range;

use gloo_transport::OpState;
use smallvec::SmallVec;

use crate::ctx::{Ctx, Ops, carve};
use crate::element::ByteFn;
use crate::error::{Error, Result};

/// How many (step, segment) items a pass keeps in flight. Each item is one message each
/// way; two keep the next segment's rendezvous under way while one streams.
pub(crate) const WINDOW: usize = 2;

/// Where a step's block lives: a byte range of one of the pass's buffers ([`Mem`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum At {
    /// The main buffer (in place), or the scratch of an out-of-place pass.
    Buf(Range<usize>),
    /// The read-only source (sends only).
    Src(Range<usize>),
    /// The output.
    Out(Range<usize>),
}

impl At {
    fn range(&self) -> &Range<usize> {
        match self {
            At::Buf(r) | At::Src(r) | At::Out(r) => r,
        }
    }

    /// Segment `k` of `seg` bytes (empty past the end).
    fn piece(&self, k: usize, seg: usize) -> At {
        let p = segment_of(self.range(), k, seg);
        match self {
            At::Buf(_) => At::Buf(p),
            At::Src(_) => At::Src(p),
            At::Out(_) => At::Out(p),
        }
    }
}

/// Segment `k` of `seg` bytes of the byte range `r` (empty past its end).
pub(crate) fn segment_of(r: &Range<usize>, k: usize, seg: usize) -> Range<usize> {
    let start = r.start.saturating_add(k.saturating_mul(seg)).min(r.end);
    start..start.saturating_add(seg).min(r.end)
}

/// One step of a pass: the block sent to the right, where the block from the left lands,
/// and, for [`Land::ReduceFrom`], the range of the source reduced into it.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) send: At,
    pub(crate) recv: At,
    pub(crate) with: Range<usize>,
    /// A range of the main buffer that each segment sent from the source is also copied into,
    /// just before it is sent (empty: none). An out-of-place allgather sends its own block
    /// straight from the caller's input and places it in the output on the way, one segment
    /// at a time while the transport streams the others, instead of copying the whole block
    /// before the pass starts; the send then reads bytes the copy left in cache.
    pub(crate) keep: Range<usize>,
}

/// The buffers of a pass. An in-place pass uses only `buf`.
pub(crate) struct Mem<'m> {
    pub(crate) buf: &'m mut [u8],
    pub(crate) src: &'m [u8],
    pub(crate) out: &'m mut [u8],
}

impl<'m> Mem<'m> {
    /// One buffer, worked on in place.
    pub(crate) fn in_place(buf: &'m mut [u8]) -> Mem<'m> {
        Mem { buf, src: &[], out: &mut [] }
    }
}

/// What a pass does with what it receives.
#[derive(Clone, Copy)]
pub(crate) enum Land<'r> {
    /// Receive into a scratch lane, then reduce the lane into the landing block (which holds
    /// this rank's contribution).
    Reduce(&'r ByteFn<'r>),
    /// Receive straight into the landing block, then reduce the source's `with` range into
    /// it (the ops are commutative, so the operands may come in either order).
    ReduceFrom(&'r ByteFn<'r>),
    /// Write it into the landing block.
    Copy,
}

/// The plan of an in-place pass of `steps` steps over `blocks` of one buffer: at step `s`
/// send block `base - s` and receive block `base - s - 1` (indices mod the block count).
pub(crate) fn in_place(blocks: &[Range<usize>], base: usize, steps: usize) -> Vec<Step> {
    let n = blocks.len();
    (0..steps)
        .map(|s| {
            let sb = (base + n - s % n) % n;
            let rb = (base + 2 * n - s % n - 1) % n;
            Step {
                send: At::Buf(blocks[sb].clone()),
                recv: At::Buf(blocks[rb].clone()),
                with: 0..0,
                keep: 0..0,
            }
        })
        .collect()
}

/// The plan of an out-of-place ring reduce-scatter on this rank (`blocks` are the byte
/// ranges of the input, block `rank` is this rank's result): the first step sends from the
/// input, partial results land in rotating scratch slots of `slot_len` bytes and are sent on
/// from there, and the last step lands in the output. Returns the plan and the scratch it
/// needs.
///
/// Slots: the partial of step `s` lands in slot `s % slots` and is read by the send of step
/// `s + 1`. Step `s + slots` lands in that slot again, and it may be posted only once that
/// send is done: the window holds items `i .. i + WINDOW` and an item's send waits for the
/// item a step before it, so `slots = WINDOW + 1` keeps them apart.
pub(crate) fn reduce_scatter_into(blocks: &[Range<usize>], rank: usize) -> (Vec<Step>, usize) {
    let n = blocks.len();
    let slots = n.saturating_sub(2).min(WINDOW + 1);
    let slot_len = blocks.iter().map(|b| b.len()).max().unwrap_or(0);
    let base = rank + n - 1;
    let mut plan: Vec<Step> = Vec::with_capacity(n.saturating_sub(1));
    for s in 0..n.saturating_sub(1) {
        let rb = (base + 2 * n - s - 1) % n;
        let len = blocks[rb].len();
        let recv = if s + 2 == n {
            At::Out(0..len)
        } else {
            let at = (s % slots) * slot_len;
            At::Buf(at..at + len)
        };
        let send = match plan.last() {
            None => At::Src(blocks[base % n].clone()),
            Some(prev) => prev.recv.clone(),
        };
        plan.push(Step { send, recv, with: blocks[rb].clone(), keep: 0..0 });
    }
    (plan, slots * slot_len)
}

/// The state of one (step, segment) item of a pass.
#[derive(Clone)]
struct Item {
    index: usize,
    send: At,
    recv: At,
    with: Range<usize>,
    /// Where the send's bytes are copied before it is posted; emptied once done.
    keep: Range<usize>,
    send_state: Option<OpState>,
    recv_state: Option<OpState>,
    reduced: bool,
}

/// Run `plan` around the ring, every block cut into segments of at most `seg_bytes`, with
/// [`WINDOW`] segments in flight. The send of segment `k` at step `s + 1` waits for
/// segment `k` of step `s` to land, because it is the same bytes.
///
/// Operations are rebuilt for each wait from the saved op state: the transport remembers a
/// posted operation by id only, so the borrows of the buffers last for one wait and the
/// reductions run between waits while the next segment is already posted.
pub(crate) fn ring_pass(
    ctx: &Ctx<'_>,
    mem: Mem<'_>,
    plan: &[Step],
    land: Land<'_>,
    seg_bytes: usize,
    step_slot: u32,
) -> Result<()> {
    let n = ctx.size;
    if n < 2 || plan.is_empty() {
        return Ok(());
    }
    let Mem { buf, src, out } = mem;
    let right = (ctx.rank + 1) % n;
    let left = (ctx.rank + n - 1) % n;
    let copying = matches!(land, Land::Copy);
    // Even a single-step copy (2 ranks) is cut: one 32 MiB message each way measured 10-30%
    // slower than 512 KiB segments (2-rank allreduce 72.6-81.1 ms against 59.7-64.9).
    let seg = seg_bytes.max(1);
    let longest =
        plan.iter().map(|s| s.send.range().len().max(s.recv.range().len())).max().unwrap_or(0);
    let nseg = longest.div_ceil(seg).max(1);
    let total = plan.len() * nseg;
    let lanes_through = matches!(land, Land::Reduce(_));
    let make = |i: usize| -> Item {
        let (s, k) = (i / nseg, i % nseg);
        let step = &plan[s];
        let send = step.send.piece(k, seg);
        let recv = step.recv.piece(k, seg);
        let with = match step.with.is_empty() {
            true => 0..0,
            false => At::Src(step.with.clone()).piece(k, seg).range().clone(),
        };
        let keep = match step.keep.is_empty() {
            true => 0..0,
            false => At::Buf(step.keep.clone()).piece(k, seg).range().clone(),
        };
        let has_recv = !recv.range().is_empty();
        Item {
            index: i,
            keep,
            send_state: (!send.range().is_empty()).then_some(OpState::New),
            recv_state: has_recv.then_some(OpState::New),
            reduced: !has_recv || copying,
            send,
            recv,
            with,
        }
    };
    // A lane holds one segment; small buffers need less than a whole segment.
    let lane = if lanes_through { seg.min(longest) } else { 0 };
    let mut lanes: SmallVec<[_; WINDOW]> = (0..WINDOW).map(|_| ctx.scratch(lane)).collect();
    let mut window: SmallVec<[Item; WINDOW]> = SmallVec::new();
    let mut next = 0;
    let mut retired = 0;
    let done = |s: &Option<OpState>| matches!(s, None | Some(OpState::Done { .. }));
    while retired < total {
        let waited;
        while window.len() < WINDOW && next < total {
            window.push(make(next));
            next += 1;
        }
        // A send may go once the same bytes' previous step has landed.
        let ready = |it: &Item| it.index < nseg || it.index - nseg < retired;
        for it in window.iter_mut() {
            if !it.keep.is_empty() && ready(it) {
                let from = match &it.send {
                    At::Src(r) if r.len() == it.keep.len() => r.clone(),
                    _ => {
                        return Err(Error::invalid(
                            ctx.collective,
                            "internal: a ring step keeps a copy of bytes it does not send from its source",
                        ));
                    }
                };
                buf[it.keep.clone()].copy_from_slice(&src[from]);
                it.keep = 0..0;
            }
        }
        {
            // What each operation of this wait reads or writes, in order: the window's
            // items, each with its send (if ready) and then its receive.
            let mut roles: SmallVec<[(usize, bool); 4]> = SmallVec::new();
            let mut in_buf: SmallVec<[Range<usize>; 4]> = SmallVec::new();
            let mut in_out: SmallVec<[Range<usize>; 4]> = SmallVec::new();
            for (w, it) in window.iter().enumerate() {
                if !done(&it.send_state) && ready(it) {
                    roles.push((w, true));
                    match &it.send {
                        At::Buf(r) => in_buf.push(r.clone()),
                        At::Out(r) => in_out.push(r.clone()),
                        At::Src(_) => {}
                    }
                }
                if !done(&it.recv_state) {
                    roles.push((w, false));
                    if !lanes_through {
                        match &it.recv {
                            At::Buf(r) => in_buf.push(r.clone()),
                            At::Out(r) => in_out.push(r.clone()),
                            At::Src(_) => {
                                return Err(Error::invalid(
                                    ctx.collective,
                                    "internal: a ring step receives into its source",
                                ));
                            }
                        }
                    }
                }
            }
            let mut buf_pieces = carve(buf, &in_buf).into_iter();
            let mut out_pieces = carve(out, &in_out).into_iter();
            let mut lane_bufs: SmallVec<[Option<&mut [u8]>; WINDOW]> =
                lanes.iter_mut().map(|l| Some(l.bytes())).collect();
            let mut ops = Ops::new();
            for &(w, is_send) in &roles {
                let it = &window[w];
                let (mut op, st) = if is_send {
                    let piece: &[u8] = match &it.send {
                        At::Src(r) => &src[r.clone()],
                        At::Buf(_) => buf_pieces.next().expect("one piece per buffer range"),
                        At::Out(_) => out_pieces.next().expect("one piece per output range"),
                    };
                    (ctx.send(right, step_slot, piece), it.send_state)
                } else {
                    let piece: &mut [u8] = if lanes_through {
                        // Items in the window have distinct indices mod WINDOW, so each
                        // lane is taken once.
                        let l = lane_bufs[it.index % WINDOW].take().expect("one item per lane");
                        &mut l[..it.recv.range().len()]
                    } else {
                        match &it.recv {
                            At::Out(_) => out_pieces.next().expect("one piece per output range"),
                            _ => buf_pieces.next().expect("one piece per buffer range"),
                        }
                    };
                    (ctx.recv(left, step_slot, piece), it.recv_state)
                };
                if let Some(st @ OpState::Posted(_)) = st {
                    op.set_state(st);
                }
                ops.push(op);
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
                for (op, &(w, is_send)) in ops.iter().zip(&roles) {
                    let st = Some(op.state());
                    if is_send {
                        window[w].send_state = st;
                    } else {
                        window[w].recv_state = st;
                    }
                }
            }
        }
        for it in window.iter_mut() {
            if it.reduced || !done(&it.recv_state) {
                continue;
            }
            let dst: &mut [u8] = match &it.recv {
                At::Out(r) => &mut out[r.clone()],
                At::Buf(r) | At::Src(r) => &mut buf[r.clone()],
            };
            match land {
                Land::Reduce(f) => f(dst, &lanes[it.index % WINDOW].bytes()[..dst.len()]),
                Land::ReduceFrom(f) => f(dst, &src[it.with.clone()]),
                Land::Copy => {}
            }
            it.reduced = true;
        }
        let before = retired;
        while let Some(first) = window.first() {
            if done(&first.send_state) && done(&first.recv_state) && first.reduced {
                window.remove(0);
                retired += 1;
            } else {
                break;
            }
        }
        if !waited && retired == before {
            // Nothing to wait for and nothing retired would spin forever: a schedule bug.
            return Err(Error::invalid(ctx.collective, "internal: the ring pipeline stalled"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::byte_ranges;

    #[test]
    fn in_place_steps_walk_the_blocks_backwards() {
        let blocks = byte_ranges(&[1, 2, 3], 1);
        let plan = in_place(&blocks, 2 + 3 - 1, 2);
        assert_eq!(plan[0].send, At::Buf(blocks[1].clone()));
        assert_eq!(plan[0].recv, At::Buf(blocks[0].clone()));
        assert_eq!(plan[1].send, At::Buf(blocks[0].clone()));
        assert_eq!(plan[1].recv, At::Buf(blocks[2].clone()));
    }

    #[test]
    fn an_out_of_place_reduce_scatter_sends_what_it_received_and_ends_in_the_output() {
        for n in 2..12 {
            let counts: Vec<usize> = (0..n).map(|q| q % 4 + 1).collect();
            let blocks = byte_ranges(&counts, 4);
            for rank in 0..n {
                let (plan, scratch) = reduce_scatter_into(&blocks, rank);
                assert_eq!(plan.len(), n - 1);
                assert!(matches!(plan[0].send, At::Src(_)));
                for s in 1..plan.len() {
                    assert_eq!(plan[s].send, plan[s - 1].recv, "n={n} rank={rank} step={s}");
                }
                let last = plan.last().unwrap();
                assert_eq!(last.recv, At::Out(0..blocks[rank].len()));
                assert_eq!(last.with, blocks[rank]);
                // Every partial fits the scratch, and a slot is not landed in again until
                // WINDOW + 1 steps later.
                let mut landed: Vec<(usize, Range<usize>)> = Vec::new();
                for (s, st) in plan.iter().enumerate() {
                    if let At::Buf(r) = &st.recv {
                        assert!(r.end <= scratch);
                        for (t, q) in &landed {
                            if q.start < r.end && r.start < q.end {
                                assert!(s - t > WINDOW, "n={n} rank={rank}: {t} and {s}");
                            }
                        }
                        landed.push((s, r.clone()));
                    }
                }
            }
        }
    }

    #[test]
    fn pieces_cut_whole_segments_and_end_empty() {
        let a = At::Out(10..25);
        assert_eq!(a.piece(0, 8), At::Out(10..18));
        assert_eq!(a.piece(1, 8), At::Out(18..25));
        assert_eq!(a.piece(2, 8), At::Out(25..25));
        assert_eq!(a.piece(0, usize::MAX), At::Out(10..25));
        assert_eq!(a.piece(3, usize::MAX), At::Out(25..25));
    }
}
