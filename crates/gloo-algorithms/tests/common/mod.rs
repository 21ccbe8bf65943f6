//! Helpers shared by this crate's integration tests: groups over loopback, element types
//! with an exact or tolerant oracle, and deterministic data.
#![allow(dead_code, unreachable_pub)]

use gloo_algorithms::{Element, Group, ReduceOp, select::EnvOverrides};
use gloo_transport::loopback::{LoopbackComm, LoopbackConfig, group};
use half::{bf16, f16};

/// The world sizes the issue asks for.
pub const SIZES: &[u32] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16];

/// Element counts: 0, 1, primes, and counts not divisible by most world sizes.
pub const COUNTS: &[usize] = &[0, 1, 2, 3, 5, 7, 11, 13, 17, 31, 37, 64, 101];

/// Run `f` on every rank of an `n`-rank loopback group (havoc seeded with `seed`), each rank
/// with a [`Group`] that ignores the environment (tests choose algorithms explicitly).
///
/// With `GLOO_TEST_ON_SUBGROUPS=1` in the environment, `f` runs on the ranks of an `n`-rank
/// subgroup instead (see [`on_subgroup_ranks`]): the oracle test runs once that way too
/// (row `algorithms/oracle-subgroups`), so every collective, type, op and algorithm it checks
/// is also checked on subgroups.
pub fn on_ranks<R: Send>(
    n: u32,
    seed: u64,
    f: impl Fn(Group<LoopbackComm>) -> R + Send + Sync,
) -> Vec<R> {
    if on_subgroups() {
        return on_subgroup_ranks(n, LoopbackConfig::havoc(seed), f);
    }
    let comms = group(n, LoopbackConfig::havoc(seed));
    gloo_testing::run_ranks(comms, |c| f(Group::with_overrides(c, EnvOverrides::default())))
}

/// As [`on_ranks`] without havoc.
pub fn on_ranks_plain<R: Send>(
    n: u32,
    f: impl Fn(Group<LoopbackComm>) -> R + Send + Sync,
) -> Vec<R> {
    if on_subgroups() {
        return on_subgroup_ranks(n, LoopbackConfig::default(), f);
    }
    let comms = group(n, LoopbackConfig::default());
    gloo_testing::run_ranks(comms, |c| f(Group::with_overrides(c, EnvOverrides::default())))
}

/// Whether `GLOO_TEST_ON_SUBGROUPS=1` (any other value is refused, so that a typo cannot
/// quietly run the ordinary tests instead).
fn on_subgroups() -> bool {
    match std::env::var("GLOO_TEST_ON_SUBGROUPS") {
        Ok(v) if v == "1" => true,
        Ok(v) => panic!("GLOO_TEST_ON_SUBGROUPS={v:?}: only 1 (or unset) is understood"),
        Err(_) => false,
    }
}

/// Run `f` on every rank of an `n`-rank subgroup of an `n + 2`-rank loopback group, and
/// return the results in subgroup rank order. The subgroup is a split numbered against the
/// parent's order (descending keys), so subgroup rank `i` is never parent rank `i` (for
/// `n > 1`); parent ranks 1 and `n + 1` are left out, and run allreduces on a subgroup of
/// their own meanwhile (checked).
pub fn on_subgroup_ranks<R: Send>(
    n: u32,
    config: LoopbackConfig,
    f: impl Fn(Group<LoopbackComm>) -> R + Send + Sync,
) -> Vec<R> {
    use gloo_algorithms::Options;
    let world = n + 2;
    let outside = |w: u32| w == 1 || w == world - 1;
    let o = Options::new().with_timeout(std::time::Duration::from_secs(60));
    let results = gloo_testing::run_ranks(group(world, config), |c| {
        let g = Group::with_overrides(c, EnvOverrides::default());
        let w = g.rank().0;
        let color = Some(u32::from(outside(w)));
        let sub = g.split(color, -i64::from(w), &o).unwrap().expect("every rank has a color");
        if outside(w) {
            for k in 0..8u64 {
                let mut v = [k + u64::from(w)];
                sub.allreduce(&mut v, ReduceOp::Sum, &o).unwrap();
                assert_eq!(v[0], 2 * k + u64::from(world), "the outsiders' allreduce");
            }
            return None;
        }
        Some((sub.rank().0, f(sub)))
    });
    let mut got: Vec<(u32, R)> = results.into_iter().flatten().collect();
    got.sort_by_key(|(r, _)| *r);
    assert_eq!(got.len(), n as usize);
    got.into_iter().map(|(_, r)| r).collect()
}

/// A small deterministic generator (splitmix64), so every rank can derive every rank's data.
pub use gloo_testing::rng::mix;

/// The built-in ops by index, for strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Sum,
    Product,
    Min,
    Max,
    Average,
    Custom,
}

pub const OPS: [OpKind; 6] =
    [OpKind::Sum, OpKind::Product, OpKind::Min, OpKind::Max, OpKind::Average, OpKind::Custom];

/// An element type the tests know how to generate and check.
pub trait TestElem: Element + std::fmt::Debug + PartialEq {
    const FLOAT: bool;
    /// Relative tolerance against the f64 oracle (floats only).
    const TOL: f64;
    fn from_i64(v: i64) -> Self;
    fn to_f64(self) -> f64;
    /// Integers only: the value as i128.
    fn to_i128(self) -> i128;
    /// Integers only: an i128 wrapped into the type.
    fn wrap(v: i128) -> Self;
    /// The custom op the tests use: addition written by hand.
    fn custom_add(dst: &mut [Self], src: &[Self]);
    /// Bitwise identity (floats compared by bits, so NaN == NaN and -0 != +0).
    fn bits_eq(a: &[Self], b: &[Self]) -> bool {
        bytemuck::cast_slice::<Self, u8>(a) == bytemuck::cast_slice::<Self, u8>(b)
    }
}

macro_rules! int_test_elem {
    ($t:ty) => {
        impl TestElem for $t {
            const FLOAT: bool = false;
            const TOL: f64 = 0.0;
            fn from_i64(v: i64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn to_i128(self) -> i128 {
                self as i128
            }
            fn wrap(v: i128) -> Self {
                v as $t
            }
            fn custom_add(dst: &mut [Self], src: &[Self]) {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d = d.wrapping_add(*s));
            }
        }
    };
}
int_test_elem!(u8);
int_test_elem!(u16);
int_test_elem!(u32);
int_test_elem!(u64);
int_test_elem!(i8);
int_test_elem!(i16);
int_test_elem!(i32);
int_test_elem!(i64);

macro_rules! float_test_elem {
    ($t:ty, $tol:expr, $from:expr, $to:expr) => {
        impl TestElem for $t {
            const FLOAT: bool = true;
            const TOL: f64 = $tol;
            fn from_i64(v: i64) -> Self {
                // Quarters: exact in every float type at the magnitudes the tests use.
                ($from)(v as f64 / 4.0)
            }
            fn to_f64(self) -> f64 {
                ($to)(self)
            }
            fn to_i128(self) -> i128 {
                0
            }
            fn wrap(_: i128) -> Self {
                ($from)(0.0)
            }
            fn custom_add(dst: &mut [Self], src: &[Self]) {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d = ($from)(($to)(*d) + ($to)(*s)));
            }
        }
    };
}
float_test_elem!(f32, 1e-5, |x: f64| x as f32, |x: f32| x as f64);
float_test_elem!(f64, 1e-12, |x: f64| x, |x: f64| x);
float_test_elem!(f16, 2e-2, f16::from_f64, |x: f16| x.to_f64());
float_test_elem!(bf16, 2e-2, bf16::from_f64, |x: bf16| x.to_f64());

/// Rank `rank`'s input of `count` elements for `seed`, suited to `op` (products stay in range).
pub fn data<T: TestElem>(seed: u64, rank: u32, count: usize, op: OpKind) -> Vec<T> {
    (0..count)
        .map(|i| {
            let r = mix(seed ^ mix(u64::from(rank) << 32 | i as u64));
            let v = match op {
                // Products of ±1, ±2 (as quarters for floats: ±4/4, ±8/4) stay small: only
                // the first four inputs have factors other than ±1, so even an f16 product
                // of 16 ranks' (or 48 buffers') values stays far inside its range.
                OpKind::Product => {
                    let m = if T::FLOAT { [4, -4, 8, 2] } else { [1, -1, 2, 1] };
                    let k = if rank < 4 { r % 4 } else { r % 2 };
                    m[k as usize]
                }
                // Integer averages over the whole range, so that sums overflow the type
                // (the average must not wrap).
                OpKind::Average if !T::FLOAT => return T::wrap(i128::from(r as i64)),
                _ => (r % 33) as i64 - 16,
            };
            let v = if !T::FLOAT && T::wrap(-1).to_i128() > 0 { v.abs() } else { v };
            T::from_i64(v)
        })
        .collect()
}

/// The op as the library sees it (the custom one is [`TestElem::custom_add`]).
pub fn reduce_op<'f, T: TestElem>(
    op: OpKind,
    custom: &'f dyn Fn(&mut [T], &[T]),
) -> ReduceOp<'f, T> {
    match op {
        OpKind::Sum => ReduceOp::Sum,
        OpKind::Product => ReduceOp::Product,
        OpKind::Min => ReduceOp::Min,
        OpKind::Max => ReduceOp::Max,
        OpKind::Average => ReduceOp::Average,
        OpKind::Custom => ReduceOp::Custom(custom),
    }
}

/// The sequential oracle: element-wise reduction of `inputs` (one per rank), as f64 for
/// floats and as wrapped integers for integers.
pub fn oracle<T: TestElem>(inputs: &[Vec<T>], op: OpKind) -> Vec<f64> {
    let n = inputs.len();
    let count = inputs.first().map_or(0, Vec::len);
    (0..count)
        .map(|i| {
            let col = inputs.iter().map(|v| v[i]);
            if T::FLOAT {
                let xs: Vec<f64> = col.map(|x| x.to_f64()).collect();
                match op {
                    OpKind::Sum | OpKind::Custom => xs.iter().sum(),
                    OpKind::Average => xs.iter().sum::<f64>() / n as f64,
                    OpKind::Product => xs.iter().product(),
                    OpKind::Min => xs.iter().copied().fold(f64::INFINITY, f64::min),
                    OpKind::Max => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                }
            } else {
                let xs: Vec<i128> = col.map(|x| x.to_i128()).collect();
                let exact_sum = xs.iter().sum::<i128>();
                let wrapped_sum = T::wrap(exact_sum).to_i128();
                let v = match op {
                    OpKind::Sum | OpKind::Custom => wrapped_sum,
                    // Exact: the true mean truncated toward zero (i128 division truncates).
                    OpKind::Average => exact_sum / n as i128,
                    OpKind::Product => xs.iter().fold(1i128, |a, &b| T::wrap(a * b).to_i128()),
                    OpKind::Min => *xs.iter().min().unwrap_or(&0),
                    OpKind::Max => *xs.iter().max().unwrap_or(&0),
                };
                v as f64
            }
        })
        .collect()
}

/// Assert `got` matches the oracle: exactly for integers, within the type's tolerance for
/// floats.
pub fn assert_close<T: TestElem>(got: &[T], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        let ok = if T::FLOAT { (g - w).abs() <= T::TOL * w.abs().max(1.0) * 4.0 } else { g == *w };
        assert!(ok, "{what}: element {i}: got {g}, oracle {w} ({})", std::any::type_name::<T>());
    }
}

/// Assert every rank's result is bitwise identical.
pub fn assert_identical<T: TestElem>(results: &[Vec<T>], what: &str) {
    for (r, v) in results.iter().enumerate().skip(1) {
        assert!(
            T::bits_eq(v, &results[0]),
            "{what}: rank {r} differs from rank 0: {v:?} vs {:?}",
            results[0]
        );
    }
}

/// Dispatch a generic test function over a dtype index (0..12).
#[macro_export]
macro_rules! each_dtype {
    ($idx:expr, $f:ident ( $($arg:expr),* )) => {
        match $idx % 12 {
            0 => $f::<u8>($($arg),*),
            1 => $f::<u16>($($arg),*),
            2 => $f::<u32>($($arg),*),
            3 => $f::<u64>($($arg),*),
            4 => $f::<i8>($($arg),*),
            5 => $f::<i16>($($arg),*),
            6 => $f::<i32>($($arg),*),
            7 => $f::<i64>($($arg),*),
            8 => $f::<half::f16>($($arg),*),
            9 => $f::<half::bf16>($($arg),*),
            10 => $f::<f32>($($arg),*),
            _ => $f::<f64>($($arg),*),
        }
    };
}

/// Run every collective with every algorithm on this rank of `g` (f32 and i64 data, counts
/// not divisible by the size, every root), checking each result against the oracle computed
/// locally from every rank's deterministic input. Every rank of the group must call it.
pub fn every_collective_on_this_rank<C: gloo_transport::Communicator>(g: &Group<C>, seed: u64) {
    use gloo_algorithms::{Algorithm, Collective, Options};
    use gloo_transport::Rank;
    let n = g.size();
    let me = g.rank().0;
    let nn = n as usize;
    let o = |a: Option<Algorithm>| {
        let o =
            Options::new().with_timeout(std::time::Duration::from_secs(60)).with_segment_bytes(64);
        match a {
            Some(a) => o.with_algorithm(a),
            None => o,
        }
    };
    for count in [0usize, 1, 13, 1000] {
        let inputs: Vec<Vec<f32>> = (0..n).map(|r| data(seed, r, count, OpKind::Sum)).collect();
        let ints: Vec<Vec<i64>> = (0..n).map(|r| data(seed + 1, r, count, OpKind::Max)).collect();
        let want = oracle(&inputs, OpKind::Sum);
        let want_max = oracle(&ints, OpKind::Max);
        for alg in Collective::Allreduce.algorithms() {
            let mut v = inputs[me as usize].clone();
            g.allreduce(&mut v, ReduceOp::Sum, &o(Some(*alg))).unwrap();
            assert_close(&v, &want, &format!("allreduce {alg} count {count}"));
            let mut w = ints[me as usize].clone();
            g.allreduce(&mut w, ReduceOp::Max, &o(Some(*alg))).unwrap();
            assert_close(&w, &want_max, &format!("allreduce max {alg} count {count}"));
        }
        for root in 0..n {
            let mut v = inputs[me as usize].clone();
            g.reduce(&mut v, Rank(root), ReduceOp::Sum, &o(None)).unwrap();
            if me == root {
                assert_close(&v, &want, &format!("reduce root {root}"));
            }
            for alg in Collective::Broadcast.algorithms() {
                let mut b =
                    if me == root { inputs[root as usize].clone() } else { vec![0.0; count] };
                g.broadcast(&mut b, Rank(root), &o(Some(*alg))).unwrap();
                assert_eq!(b, inputs[root as usize], "broadcast {alg} root {root}");
            }
            let mut all = (me == root).then(|| vec![0.0f32; count * nn]);
            g.gather(&inputs[me as usize], all.as_deref_mut(), Rank(root), &o(None)).unwrap();
            if let Some(all) = all {
                assert_eq!(all, inputs.concat(), "gather root {root}");
            }
            let src = (me == root).then(|| inputs.concat());
            let mut mine = vec![0.0f32; count];
            g.scatter(src.as_deref(), &mut mine, Rank(root), &o(None)).unwrap();
            assert_eq!(mine, inputs[me as usize], "scatter root {root}");
        }
        for alg in Collective::Allgather.algorithms() {
            let mut all = vec![0.0f32; count * nn];
            g.allgather(&inputs[me as usize], &mut all, &o(Some(*alg))).unwrap();
            assert_eq!(all, inputs.concat(), "allgather {alg}");
        }
        let counts: Vec<usize> = (0..nn).map(|r| (count + r) % 7).collect();
        let vin: Vec<Vec<f32>> =
            (0..n).map(|r| data(seed + 2, r, counts[r as usize], OpKind::Sum)).collect();
        let mut all = vec![0.0f32; counts.iter().sum()];
        g.allgatherv(&vin[me as usize], &mut all, &counts, &o(None)).unwrap();
        assert_eq!(all, vin.concat(), "allgatherv");
        let mut at0 = (me == 0).then(|| vec![0.0f32; counts.iter().sum()]);
        g.gatherv(&vin[me as usize], at0.as_deref_mut(), &counts, Rank(0), &o(None)).unwrap();
        if let Some(at0) = at0 {
            assert_eq!(at0, vin.concat(), "gatherv");
        }
        let mut part = vec![0.0f32; counts[me as usize]];
        let src = (me == n - 1).then(|| vin.concat());
        g.scatterv(src.as_deref(), &mut part, &counts, Rank(n - 1), &o(None)).unwrap();
        assert_eq!(part, vin[me as usize], "scatterv");
        // Reduce-scatter over the whole vector of size × count elements.
        let big: Vec<Vec<f32>> =
            (0..n).map(|r| data(seed + 3, r, count * nn, OpKind::Sum)).collect();
        let bw = oracle(&big, OpKind::Sum);
        let mut out = vec![0.0f32; count];
        g.reduce_scatter(&big[me as usize], &mut out, ReduceOp::Sum, &o(None)).unwrap();
        assert_close(&out, &bw[me as usize * count..(me as usize + 1) * count], "reduce_scatter");
        let total: usize = counts.iter().sum();
        let vbig: Vec<Vec<f32>> = (0..n).map(|r| data(seed + 4, r, total, OpKind::Sum)).collect();
        let vw = oracle(&vbig, OpKind::Sum);
        let mut out = vec![0.0f32; counts[me as usize]];
        g.reduce_scatterv(&vbig[me as usize], &mut out, &counts, ReduceOp::Sum, &o(None)).unwrap();
        let off: usize = counts[..me as usize].iter().sum();
        assert_close(&out, &vw[off..off + counts[me as usize]], "reduce_scatterv");
        // Alltoall: block j of rank i's input goes to rank j.
        let mut out = vec![0.0f32; count * nn];
        g.alltoall(&big[me as usize], &mut out, &o(None)).unwrap();
        for (j, b) in big.iter().enumerate() {
            let m = me as usize;
            assert_eq!(
                out[j * count..(j + 1) * count],
                b[m * count..(m + 1) * count],
                "alltoall from {j}"
            );
        }
        let sc: Vec<usize> = (0..nn).map(|j| (me as usize + j + count) % 4).collect();
        let rc: Vec<usize> = (0..nn).map(|j| (j + me as usize + count) % 4).collect();
        let ain: Vec<f32> = data(seed + 5, me, sc.iter().sum(), OpKind::Sum);
        let mut aout = vec![0.0f32; rc.iter().sum()];
        g.alltoallv(&ain, &mut aout, &sc, &rc, &o(None)).unwrap();
        let mut off = 0;
        for (j, &k) in rc.iter().enumerate() {
            let theirs: Vec<f32> =
                data(seed + 5, j as u32, (0..nn).map(|q| (j + q + count) % 4).sum(), OpKind::Sum);
            let toff: usize = (0..me as usize).map(|q| (j + q + count) % 4).sum();
            assert_eq!(aout[off..off + k], theirs[toff..toff + k], "alltoallv from {j}");
            off += k;
        }
        g.barrier(&o(None)).unwrap();
    }
}
