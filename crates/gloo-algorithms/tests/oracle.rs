//! Every collective against a sequential oracle over loopback with havoc: world sizes 1–9, 13
//! and 16; counts 0, 1, primes and counts not divisible by the world size; every dtype, op
//! and algorithm; random roots. Integers exact; floats bitwise identical across ranks and
//! within tolerance of the oracle.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use gloo_algorithms::{Algorithm, Collective, Options};
use gloo_transport::Rank;
use proptest::prelude::*;

fn opts(alg: Algorithm, seg: usize, base: u32) -> Options {
    Options::new()
        .with_algorithm(alg)
        .with_segment_bytes(seg)
        .with_bcube_base(base)
        .with_timeout(Duration::from_secs(60))
}

fn alg_of(c: Collective, i: usize) -> Algorithm {
    let a = c.algorithms();
    a[i % a.len()]
}

/// Counts per rank for the v-collectives, derived from the seed.
fn counts_for(seed: u64, n: u32, max: usize) -> Vec<usize> {
    (0..n).map(|r| (mix(seed ^ (0xc0 + u64::from(r))) % (max as u64 + 1)) as usize).collect()
}

// ---------------------------------------------------------------------------------------
// Checks, one generic function per collective
// ---------------------------------------------------------------------------------------

fn check_allreduce<T: TestElem>(
    n: u32,
    count: usize,
    op: OpKind,
    alg: Algorithm,
    seed: u64,
    seg: usize,
    base: u32,
) {
    let inputs: Vec<Vec<T>> = (0..n).map(|r| data(seed, r, count, op)).collect();
    let want = oracle(&inputs, op);
    let what = format!("allreduce n={n} count={count} {op:?} {alg} seg={seg} base={base}");
    let results = on_ranks(n, seed, |g| {
        let custom = |d: &mut [T], s: &[T]| T::custom_add(d, s);
        let mut buf = inputs[g.rank().index()].clone();
        g.allreduce(&mut buf, reduce_op(op, &custom), &opts(alg, seg, base)).unwrap();
        buf
    });
    assert_identical(&results, &what);
    assert_close(&results[0], &want, &what);
}

fn check_allreduce_many<T: TestElem>(n: u32, count: usize, op: OpKind, alg: Algorithm, seed: u64) {
    // Three buffers per rank: as if 3n ranks with one buffer each.
    let inputs: Vec<Vec<T>> = (0..3 * n).map(|r| data(seed, r, count, op)).collect();
    // The local part of an average is a sum; the division is by the world size only. For
    // integers the mean of the ranks' sums is exact, truncated toward zero, and wrapped into
    // the type only when it does not fit (a sum of several buffers can exceed the type).
    let want: Vec<f64> = if op == OpKind::Average {
        if T::FLOAT {
            let sums = oracle(&inputs, OpKind::Sum);
            sums.iter().map(|s| s / f64::from(n)).collect()
        } else {
            (0..count)
                .map(|i| {
                    let sum: i128 = inputs.iter().map(|v| v[i].to_i128()).sum();
                    T::wrap(sum / i128::from(n)).to_i128() as f64
                })
                .collect()
        }
    } else {
        oracle(&inputs, op)
    };
    let what = format!("allreduce_many n={n} count={count} {op:?} {alg}");
    let results = on_ranks(n, seed, |g| {
        let custom = |d: &mut [T], s: &[T]| T::custom_add(d, s);
        let r = g.rank().0 as usize;
        let (mut a, mut b, mut c) =
            (inputs[3 * r].clone(), inputs[3 * r + 1].clone(), inputs[3 * r + 2].clone());
        g.allreduce_many(&mut [&mut a, &mut b, &mut c], reduce_op(op, &custom), &opts(alg, 16, 3))
            .unwrap();
        assert!(T::bits_eq(&a, &b) && T::bits_eq(&a, &c), "{what}: buffers differ");
        a
    });
    assert_identical(&results, &what);
    assert_close(&results[0], &want, &what);
}

fn check_reduce<T: TestElem>(n: u32, count: usize, op: OpKind, root: u32, seed: u64, seg: usize) {
    let inputs: Vec<Vec<T>> = (0..n).map(|r| data(seed, r, count, op)).collect();
    let want = oracle(&inputs, op);
    let what = format!("reduce n={n} count={count} {op:?} root={root} seg={seg}");
    let results = on_ranks(n, seed, |g| {
        let custom = |d: &mut [T], s: &[T]| T::custom_add(d, s);
        let me = g.rank().index();
        let mut buf = inputs[me].clone();
        let o = opts(Algorithm::BinomialTree, seg, 2);
        if me % 2 == 0 {
            g.reduce(&mut buf, Rank(root), reduce_op(op, &custom), &o).unwrap();
            if me != root as usize {
                assert!(
                    T::bits_eq(&buf, &inputs[me]),
                    "{what}: non-root rank {me}'s buffer changed"
                );
            }
            buf
        } else {
            let mut out = (me == root as usize).then(|| vec![T::from_i64(0); count]);
            g.reduce_into(&buf, out.as_deref_mut(), Rank(root), reduce_op(op, &custom), &o)
                .unwrap();
            out.unwrap_or(buf)
        }
    });
    assert_close(&results[root as usize], &want, &what);
}

fn check_broadcast<T: TestElem>(
    n: u32,
    count: usize,
    alg: Algorithm,
    root: u32,
    seed: u64,
    seg: usize,
) {
    let src: Vec<T> = data(seed, root, count, OpKind::Sum);
    let what = format!("broadcast n={n} count={count} {alg} root={root}");
    let results = on_ranks(n, seed, |g| {
        let mut buf = if g.rank().0 == root { src.clone() } else { vec![T::from_i64(1); count] };
        g.broadcast(&mut buf, Rank(root), &opts(alg, seg, 2)).unwrap();
        buf
    });
    for (r, v) in results.iter().enumerate() {
        assert!(T::bits_eq(v, &src), "{what}: rank {r} got {v:?}");
    }
}

fn check_allgather<T: TestElem>(n: u32, count: usize, alg: Algorithm, seed: u64, seg: usize) {
    let inputs: Vec<Vec<T>> = (0..n).map(|r| data(seed, r, count, OpKind::Sum)).collect();
    let want: Vec<T> = inputs.concat();
    let what = format!("allgather n={n} count={count} {alg}");
    let results = on_ranks(n, seed, |g| {
        let me = g.rank().index();
        let o = opts(alg, seg, 2);
        if me % 2 == 0 {
            let mut out = vec![T::from_i64(3); count * n as usize];
            g.allgather(&inputs[me], &mut out, &o).unwrap();
            out
        } else {
            let mut buf = vec![T::from_i64(3); count * n as usize];
            buf[me * count..(me + 1) * count].copy_from_slice(&inputs[me]);
            g.allgather_in_place(&mut buf, &o).unwrap();
            buf
        }
    });
    for (r, v) in results.iter().enumerate() {
        assert!(T::bits_eq(v, &want), "{what}: rank {r} got {v:?}");
    }
}

fn check_allgatherv<T: TestElem>(n: u32, max: usize, seed: u64, seg: usize) {
    let counts = counts_for(seed, n, max);
    let inputs: Vec<Vec<T>> =
        (0..n).map(|r| data(seed, r, counts[r as usize], OpKind::Sum)).collect();
    let want: Vec<T> = inputs.concat();
    let what = format!("allgatherv n={n} counts={counts:?}");
    let results = on_ranks(n, seed, |g| {
        let me = g.rank().index();
        let mut out = vec![T::from_i64(3); want.len()];
        g.allgatherv(&inputs[me], &mut out, &counts, &opts(Algorithm::Ring, seg, 2)).unwrap();
        out
    });
    for (r, v) in results.iter().enumerate() {
        assert!(T::bits_eq(v, &want), "{what}: rank {r} got {v:?}");
    }
}

fn check_gather<T: TestElem>(
    n: u32,
    count: usize,
    alg: Algorithm,
    root: u32,
    seed: u64,
    varied: bool,
    seg: usize,
) {
    let counts = if varied { counts_for(seed, n, count) } else { vec![count; n as usize] };
    let inputs: Vec<Vec<T>> =
        (0..n).map(|r| data(seed, r, counts[r as usize], OpKind::Sum)).collect();
    let want: Vec<T> = inputs.concat();
    let what = format!("gather(v={varied}) n={n} counts={counts:?} {alg} root={root} seg={seg}");
    let results = on_ranks(n, seed, |g| {
        let me = g.rank().index();
        let mut out = (me == root as usize).then(|| vec![T::from_i64(3); want.len()]);
        // Small segments make the direct root copy its own block in many pieces, moving the
        // receives on between them.
        let o = opts(alg, seg, 2);
        if varied {
            g.gatherv(&inputs[me], out.as_deref_mut(), &counts, Rank(root), &o).unwrap();
        } else {
            g.gather(&inputs[me], out.as_deref_mut(), Rank(root), &o).unwrap();
        }
        out.unwrap_or_default()
    });
    assert!(T::bits_eq(&results[root as usize], &want), "{what}: got {:?}", results[root as usize]);
}

fn check_scatter<T: TestElem>(
    n: u32,
    count: usize,
    alg: Algorithm,
    root: u32,
    seed: u64,
    varied: bool,
) {
    let counts = if varied { counts_for(seed, n, count) } else { vec![count; n as usize] };
    let blocks: Vec<Vec<T>> =
        (0..n).map(|r| data(seed, r, counts[r as usize], OpKind::Sum)).collect();
    let all: Vec<T> = blocks.concat();
    let what = format!("scatter(v={varied}) n={n} counts={counts:?} {alg} root={root}");
    let results = on_ranks(n, seed, |g| {
        let me = g.rank().index();
        let input = (me == root as usize).then_some(&all[..]);
        let mut out = vec![T::from_i64(3); counts[me]];
        let o = opts(alg, 64, 2);
        if varied {
            g.scatterv(input, &mut out, &counts, Rank(root), &o).unwrap();
        } else {
            g.scatter(input, &mut out, Rank(root), &o).unwrap();
        }
        out
    });
    for (r, v) in results.iter().enumerate() {
        assert!(T::bits_eq(v, &blocks[r]), "{what}: rank {r} got {v:?}");
    }
}

fn check_reduce_scatter<T: TestElem>(
    n: u32,
    count: usize,
    op: OpKind,
    seed: u64,
    seg: usize,
    varied: bool,
) {
    let counts = if varied { counts_for(seed, n, count) } else { vec![count; n as usize] };
    let total: usize = counts.iter().sum();
    let inputs: Vec<Vec<T>> = (0..n).map(|r| data(seed, r, total, op)).collect();
    let want = oracle(&inputs, op);
    let what = format!("reduce_scatter(v={varied}) n={n} counts={counts:?} {op:?}");
    let results = on_ranks(n, seed, |g| {
        let custom = |d: &mut [T], s: &[T]| T::custom_add(d, s);
        let me = g.rank().index();
        let o = opts(Algorithm::Ring, seg, 2);
        let rop = reduce_op(op, &custom);
        match (varied, me % 2) {
            (false, 0) => {
                let mut out = vec![T::from_i64(3); count];
                g.reduce_scatter(&inputs[me], &mut out, rop, &o).unwrap();
                out
            }
            (false, _) => {
                let mut buf = inputs[me].clone();
                let r = g.reduce_scatter_in_place(&mut buf, rop, &o).unwrap();
                buf[r].to_vec()
            }
            (true, 0) => {
                let mut out = vec![T::from_i64(3); counts[me]];
                g.reduce_scatterv(&inputs[me], &mut out, &counts, rop, &o).unwrap();
                out
            }
            (true, _) => {
                let mut buf = inputs[me].clone();
                let r = g.reduce_scatterv_in_place(&mut buf, &counts, rop, &o).unwrap();
                buf[r].to_vec()
            }
        }
    });
    let mut off = 0;
    for (r, v) in results.iter().enumerate() {
        assert_close(v, &want[off..off + counts[r]], &format!("{what}: rank {r}"));
        off += counts[r];
    }
}

fn check_alltoall<T: TestElem>(n: u32, block: usize, seed: u64, varied: bool, seg: usize) {
    let nn = n as usize;
    // counts[i][j]: elements rank i sends to rank j.
    let counts: Vec<Vec<usize>> = (0..nn)
        .map(|i| {
            (0..nn)
                .map(|j| {
                    if varied {
                        (mix(seed ^ (i * 64 + j) as u64) % (block as u64 + 1)) as usize
                    } else {
                        block
                    }
                })
                .collect()
        })
        .collect();
    let inputs: Vec<Vec<T>> =
        (0..n).map(|r| data(seed, r, counts[r as usize].iter().sum(), OpKind::Sum)).collect();
    let what = format!("alltoall(v={varied}) n={n} block={block} seg={seg}");
    let results = on_ranks(n, seed, |g| {
        let me = g.rank().index();
        let recv: Vec<usize> = (0..nn).map(|j| counts[j][me]).collect();
        let mut out = vec![T::from_i64(3); recv.iter().sum()];
        let o = Options::new().with_timeout(Duration::from_secs(60)).with_segment_bytes(seg);
        if varied {
            g.alltoallv(&inputs[me], &mut out, &counts[me], &recv, &o).unwrap();
        } else {
            g.alltoall(&inputs[me], &mut out, &o).unwrap();
        }
        out
    });
    for (me, got) in results.iter().enumerate() {
        let mut want: Vec<T> = Vec::new();
        for (j, input) in inputs.iter().enumerate() {
            let off: usize = counts[j][..me].iter().sum();
            want.extend_from_slice(&input[off..off + counts[j][me]]);
        }
        assert!(T::bits_eq(got, &want), "{what}: rank {me} got {got:?}, want {want:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

fn size() -> impl Strategy<Value = u32> {
    prop::sample::select(SIZES)
}

fn count() -> impl Strategy<Value = usize> {
    prop::sample::select(COUNTS)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn allreduce_matches_the_oracle(n in size(), count in count(), dt in 0usize..12, op in 0usize..6,
                                    alg in 0usize..4, seed: u64, seg in 1usize..48, base in 2u32..6) {
        let alg = alg_of(Collective::Allreduce, alg);
        each_dtype!(dt, check_allreduce(n, count, OPS[op], alg, seed, seg, base));
    }

    /// Two ranks run the ring as one fused pass whose segments complete out of order under
    /// havoc: many segments each time, so that results posted out of order would be caught.
    #[test]
    fn two_rank_ring_allreduce_matches_the_oracle(count in 40usize..2000, dt in 0usize..12,
                                                   op in 0usize..6, seed: u64, seg in 1usize..64) {
        each_dtype!(dt, check_allreduce(2, count, OPS[op], Algorithm::Ring, seed, seg, 2));
    }

    #[test]
    fn allreduce_many_matches_the_oracle(n in size(), count in count(), dt in 0usize..12, op in 0usize..6,
                                         alg in 0usize..4, seed: u64) {
        let alg = alg_of(Collective::Allreduce, alg);
        each_dtype!(dt, check_allreduce_many(n, count, OPS[op], alg, seed));
    }

    #[test]
    fn reduce_matches_the_oracle(n in size(), count in count(), dt in 0usize..12, op in 0usize..6,
                                 root in 0u32..16, seed: u64, seg in 1usize..48) {
        each_dtype!(dt, check_reduce(n, count, OPS[op], root % n, seed, seg));
    }

    #[test]
    fn broadcast_delivers_the_roots_buffer(n in size(), count in count(), dt in 0usize..12, alg in 0usize..2,
                                           root in 0u32..16, seed: u64, seg in 1usize..48) {
        let alg = alg_of(Collective::Broadcast, alg);
        each_dtype!(dt, check_broadcast(n, count, alg, root % n, seed, seg));
    }

    #[test]
    fn allgather_concatenates(n in size(), count in count(), dt in 0usize..12, alg in 0usize..2,
                              seed: u64, seg in 1usize..48) {
        let alg = alg_of(Collective::Allgather, alg);
        each_dtype!(dt, check_allgather(n, count, alg, seed, seg));
    }

    #[test]
    fn allgatherv_concatenates(n in size(), max in count(), dt in 0usize..12, seed: u64, seg in 1usize..48) {
        each_dtype!(dt, check_allgatherv(n, max, seed, seg));
    }

    #[test]
    fn gather_and_gatherv_collect_at_the_root(n in size(), count in count(), dt in 0usize..12,
                                              alg in 0usize..2, root in 0u32..16, seed: u64,
                                              varied: bool, seg in 1usize..96) {
        let alg = alg_of(Collective::Gather, alg);
        each_dtype!(dt, check_gather(n, count, alg, root % n, seed, varied, seg));
    }

    #[test]
    fn scatter_and_scatterv_hand_out_blocks(n in size(), count in count(), dt in 0usize..12,
                                            alg in 0usize..2, root in 0u32..16, seed: u64,
                                            varied: bool) {
        let alg = alg_of(Collective::Scatter, alg);
        each_dtype!(dt, check_scatter(n, count, alg, root % n, seed, varied));
    }

    #[test]
    fn reduce_scatter_matches_the_oracle(n in size(), count in count(), dt in 0usize..12, op in 0usize..6,
                                         seed: u64, seg in 1usize..48, varied: bool) {
        each_dtype!(dt, check_reduce_scatter(n, count, OPS[op], seed, seg, varied));
    }

    #[test]
    fn alltoall_and_alltoallv_transpose(n in size(), block in 0usize..6, dt in 0usize..12, seed: u64,
                                        varied: bool, seg in 1usize..48) {
        each_dtype!(dt, check_alltoall(n, block, seed, varied, seg));
    }
}

// ---------------------------------------------------------------------------------------
// Exhaustive sweeps: every algorithm × dtype × op at least once, sizes and counts rotating
// ---------------------------------------------------------------------------------------

#[test]
fn every_allreduce_algorithm_dtype_and_op() {
    let mut i = 0usize;
    for alg in Collective::Allreduce.algorithms() {
        for dt in 0..12 {
            for op in OPS {
                let n = SIZES[i % SIZES.len()];
                let count = COUNTS[(i * 7) % COUNTS.len()];
                let seed = i as u64;
                each_dtype!(
                    dt,
                    check_allreduce(n, count, op, *alg, seed, 4 + i % 40, 2 + (i % 4) as u32)
                );
                i += 1;
            }
        }
    }
}

#[test]
fn every_rooted_and_gathering_collective_and_dtype() {
    for dt in 0..12 {
        let n = SIZES[(dt * 5) % SIZES.len()];
        let count = COUNTS[(dt * 3) % COUNTS.len()];
        let root = (dt as u32 * 7) % n;
        let seed = 1000 + dt as u64;
        for op in OPS {
            each_dtype!(dt, check_reduce(n, count, op, root, seed, 4 + dt * 8));
            each_dtype!(dt, check_reduce_scatter(n, count, op, seed, 8, dt % 2 == 0));
        }
        for alg in Collective::Broadcast.algorithms() {
            each_dtype!(dt, check_broadcast(n, count, *alg, root, seed, 12));
        }
        for alg in Collective::Allgather.algorithms() {
            each_dtype!(dt, check_allgather(n, count, *alg, seed, 12));
        }
        each_dtype!(dt, check_allgatherv(n, count, seed, 12));
        for alg in Collective::Gather.algorithms() {
            each_dtype!(dt, check_gather(n, count, *alg, root, seed, false, 64));
            each_dtype!(dt, check_gather(n, count, *alg, root, seed, true, 5));
        }
        for alg in Collective::Scatter.algorithms() {
            each_dtype!(dt, check_scatter(n, count, *alg, root, seed, false));
            each_dtype!(dt, check_scatter(n, count, *alg, root, seed, true));
        }
        each_dtype!(dt, check_alltoall(n, count % 6, seed, false, 4 + dt * 8));
        each_dtype!(dt, check_alltoall(n, count % 6, seed, true, 12));
    }
}

#[test]
fn large_allreduce_is_identical_on_every_rank_for_every_algorithm() {
    // Many segments and uneven blocks: 10_007 f32 over 6 ranks with 1 KiB segments.
    for alg in Collective::Allreduce.algorithms() {
        check_allreduce::<f32>(6, 10_007, OpKind::Sum, *alg, 77, 1024, 3);
        check_allreduce::<f64>(5, 4_099, OpKind::Average, *alg, 78, 512, 2);
    }
}

#[test]
fn large_reductions_to_one_rank_or_a_block_each_pipeline_many_segments() {
    // Many segments in flight: scratch slots of the out-of-place reduce-scatter are reused
    // (n - 2 > 3 partials), and middle ranks of the reduce tree keep partials in slots.
    for (n, seed) in [(2u32, 1u64), (5, 2), (7, 3), (16, 4)] {
        check_reduce_scatter::<f32>(n, 1_001, OpKind::Sum, seed, 256, false);
        check_reduce_scatter::<i16>(n, 997, OpKind::Average, seed, 96, true);
        check_reduce::<f64>(n, 4_099, OpKind::Sum, n - 1, seed, 512);
        check_reduce::<u8>(n, 3_001, OpKind::Average, n / 2, seed, 100);
    }
}

#[test]
fn barrier_lets_nobody_through_before_everybody_arrived() {
    for &n in SIZES {
        let arrived = AtomicUsize::new(0);
        let seen = on_ranks(n, u64::from(n), |g| {
            arrived.fetch_add(1, Ordering::SeqCst);
            g.barrier(&Options::new()).unwrap();
            arrived.load(Ordering::SeqCst)
        });
        assert!(seen.iter().all(|&s| s == n as usize), "n={n}: {seen:?}");
    }
}

#[test]
fn send_and_recv_carry_typed_messages_around_a_ring() {
    for n in [2u32, 3, 5] {
        let got = on_ranks(n, 5, |g| {
            let me = g.rank().0;
            let right = Rank((me + 1) % n);
            let left = Rank((me + n - 1) % n);
            let o = Options::new();
            let g = g.fork(3).unwrap();
            let mut buf = [0i32; 8];
            for round in 0..3 {
                let msg: Vec<i32> = (0..=round).map(|k| (me * 100 + k) as i32).collect();
                if me % 2 == 0 {
                    g.send(right, &msg, &o).unwrap();
                    let k = g.recv(left, &mut buf, &o).unwrap();
                    assert_eq!(k, round as usize + 1);
                } else {
                    let k = g.recv(left, &mut buf, &o).unwrap();
                    assert_eq!(k, round as usize + 1);
                    g.send(right, &msg, &o).unwrap();
                }
            }
            buf[0]
        });
        for (me, v) in got.iter().enumerate() {
            assert_eq!(*v, ((me as u32 + n - 1) % n * 100) as i32);
        }
    }
}

#[test]
fn signed_zeros_and_nans_still_give_identical_bits_on_every_rank() {
    // min(+0, -0), max(-0, +0) and NaN payloads depend on operand order; every algorithm
    // must still hand every rank the same bits.
    let specials = [0.0f32, -0.0, f32::NAN, f32::from_bits(0x7fc0_0001), -f32::NAN, 1.0, -1.0];
    for alg in Collective::Allreduce.algorithms() {
        for n in [2u32, 3, 5, 8, 9] {
            for op in [OpKind::Min, OpKind::Max, OpKind::Sum] {
                let results = on_ranks(n, 3, |g| {
                    let me = g.rank().0 as usize;
                    let mut v: Vec<f32> =
                        (0..29).map(|i| specials[(i * 3 + me * 5) % specials.len()]).collect();
                    let custom = |d: &mut [f32], s: &[f32]| f32::custom_add(d, s);
                    g.allreduce(&mut v, reduce_op(op, &custom), &opts(*alg, 8, 3)).unwrap();
                    v
                });
                assert_identical(&results, &format!("{alg} n={n} {op:?}"));
            }
        }
    }
}
