//! The collectives of `gloo-algorithms`, one message size at a time, with deterministic inputs
//! per rank and the expected output computed locally for `--check`.
//!
//! Inputs are small integers chosen so that every op is exact in every element type, whatever
//! order an algorithm combines them in: sums of 1..=4 per rank, products of 1s and a few 2s,
//! minima and maxima of 0..=60. So the expected value is exact too (integers wrap as the library
//! wraps them); only an average may round, and floats are compared with a tolerance that the
//! type's precision sets.

use std::time::Instant;

use gloo_algorithms::{Algorithm, DynComm, Element, Group, Options, ReduceOp};
use gloo_transport::{Communicator, Rank};
use half::{bf16, f16};

use crate::cli::{Collective, Dtype, ReduceOp as OpArg, SweepArgs};
use crate::error::{Error, Result};
use crate::sweep::SizeBench;

/// A borrowed communicator, as a [`Group`] (which owns its communicator) takes it.
pub(crate) type Shared<'a> = DynComm<&'a dyn Communicator>;

/// The library's name for one of the bench's operations.
pub(crate) fn library_collective(c: Collective) -> gloo_algorithms::Collective {
    use gloo_algorithms::Collective as L;
    match c {
        Collective::Allreduce => L::Allreduce,
        Collective::Reduce => L::Reduce,
        Collective::Broadcast => L::Broadcast,
        Collective::Allgather => L::Allgather,
        Collective::ReduceScatter => L::ReduceScatter,
        Collective::Alltoall => L::Alltoall,
        Collective::Gather => L::Gather,
        Collective::Scatter => L::Scatter,
        Collective::Barrier => L::Barrier,
        Collective::Sendrecv => L::SendRecv,
    }
}

/// What `--algorithm` accepts for `c`: `auto` and the library's algorithms for it.
pub(crate) fn algorithm_choices(c: Collective) -> Vec<&'static str> {
    let mut v = vec!["auto"];
    v.extend(library_collective(c).algorithm_names());
    v
}

/// An element type the bench can fill, reduce in its head, and compare.
pub(crate) trait Num: Element + Copy + PartialEq + std::fmt::Debug {
    /// Whether results are compared with a tolerance.
    const FLOAT: bool;
    /// The relative tolerance of a float comparison.
    const TOL: f64;
    /// `v` in this type (integers: wrapped, as the library's integer arithmetic wraps).
    fn from_i128(v: i128) -> Self;
    /// The value as a wide integer (integers only).
    fn to_i128(self) -> i128;
    /// The value as an f64.
    fn to_f64(self) -> f64;
}

macro_rules! int_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const FLOAT: bool = false;
            const TOL: f64 = 0.0;
            fn from_i128(v: i128) -> Self { v as $t }
            fn to_i128(self) -> i128 { self as i128 }
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
int_num!(u8, u16, u32, u64, i8, i16, i32, i64);

impl Num for f32 {
    const FLOAT: bool = true;
    const TOL: f64 = 1e-6;
    fn from_i128(v: i128) -> Self {
        v as f32
    }
    fn to_i128(self) -> i128 {
        self as i128
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Num for f64 {
    const FLOAT: bool = true;
    const TOL: f64 = 1e-12;
    fn from_i128(v: i128) -> Self {
        v as f64
    }
    fn to_i128(self) -> i128 {
        self as i128
    }
    fn to_f64(self) -> f64 {
        self
    }
}

impl Num for f16 {
    const FLOAT: bool = true;
    const TOL: f64 = 2e-3;
    fn from_i128(v: i128) -> Self {
        f16::from_f64(v as f64)
    }
    fn to_i128(self) -> i128 {
        self.to_f64() as i128
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
}

impl Num for bf16 {
    const FLOAT: bool = true;
    const TOL: f64 = 1.6e-2;
    fn from_i128(v: i128) -> Self {
        bf16::from_f64(v as f64)
    }
    fn to_i128(self) -> i128 {
        self.to_f64() as i128
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
}

/// Rank `q`'s input at index `i` for op `op`.
fn input(op: OpArg, q: u32, i: usize) -> i128 {
    let (q, i) = (q as i128, i as i128);
    match op {
        OpArg::Sum | OpArg::Average => (i + q) % 4 + 1,
        OpArg::Product => {
            if (i + q) % 7 == 0 {
                2
            } else {
                1
            }
        }
        OpArg::Min | OpArg::Max => (i * 7 + q * 13) % 61,
    }
}

/// Rank `q`'s data at index `i` for operations that do not reduce.
fn data(q: u32, i: usize) -> i128 {
    ((i as i128) * 3 + (q as i128) * 5) % 97
}

/// The reduction over ranks `0..n` of [`input`] at index `i`, in `T` (integers wrapped the
/// way the library wraps; averages divided as the library divides).
fn reduced<T: Num>(op: OpArg, n: u32, i: usize) -> (T, f64) {
    let vals = (0..n).map(|q| input(op, q, i));
    let exact: i128 = match op {
        OpArg::Sum | OpArg::Average => vals.sum(),
        OpArg::Product => vals.product(),
        OpArg::Min => vals.min().unwrap_or(0),
        OpArg::Max => vals.max().unwrap_or(0),
    };
    if op == OpArg::Average {
        let as_float = exact as f64 / f64::from(n);
        let t = if T::FLOAT {
            // Floats: the value is compared as f64 with a tolerance.
            T::from_i128(0)
        } else {
            T::from_i128(T::from_i128(exact).to_i128() / i128::from(n))
        };
        (t, as_float)
    } else {
        (T::from_i128(exact), exact as f64)
    }
}

/// Compares `got` with `want` (exact for integers, within the type's tolerance for floats).
fn same<T: Num>(got: T, want: T, want_f: f64) -> bool {
    if T::FLOAT {
        let g = got.to_f64();
        (g - want_f).abs() <= T::TOL * want_f.abs().max(1.0)
    } else {
        got == want
    }
}

/// The first index where `got` differs from `want(i)`, described.
fn first_wrong<T: Num>(
    got: &[T],
    what: &str,
    want: impl Fn(usize) -> (T, f64),
) -> std::result::Result<(), String> {
    for (i, g) in got.iter().enumerate() {
        let (w, wf) = want(i);
        if !same(*g, w, wf) {
            let shown = if T::FLOAT { format!("{wf}") } else { format!("{w:?}") };
            return Err(format!("{what}[{i}] is {g:?}, expected {shown}"));
        }
    }
    Ok(())
}

fn lib_op<T>(op: OpArg) -> ReduceOp<'static, T> {
    match op {
        OpArg::Sum => ReduceOp::Sum,
        OpArg::Product => ReduceOp::Product,
        OpArg::Min => ReduceOp::Min,
        OpArg::Max => ReduceOp::Max,
        OpArg::Average => ReduceOp::Average,
    }
}

/// The bench of one size of a library collective.
struct CollBench<'g, 'c, T: Num> {
    group: &'g Group<Shared<'c>>,
    c: Collective,
    op: OpArg,
    root: u32,
    algorithm: Option<Algorithm>,
    shown_algorithm: String,
    /// Elements per rank's block (block collectives) or per buffer.
    count: usize,
    input: Vec<T>,
    output: Vec<T>,
}

/// Builds the bench of `bytes` for operation `c` and the sweep's element type.
pub(crate) fn make<'g, 'c>(
    group: &'g Group<Shared<'c>>,
    args: &SweepArgs,
    c: Collective,
    bytes: u64,
) -> Result<Box<dyn SizeBench + 'g>>
where
    'c: 'g,
{
    macro_rules! typed {
        ($t:ty) => {
            Ok(Box::new(CollBench::<$t>::new(group, args, c, bytes)?) as Box<dyn SizeBench + 'g>)
        };
    }
    match args.dtype {
        Dtype::U8 => typed!(u8),
        Dtype::U16 => typed!(u16),
        Dtype::U32 => typed!(u32),
        Dtype::U64 => typed!(u64),
        Dtype::I8 => typed!(i8),
        Dtype::I16 => typed!(i16),
        Dtype::I32 => typed!(i32),
        Dtype::I64 => typed!(i64),
        Dtype::F16 => typed!(f16),
        Dtype::Bf16 => typed!(bf16),
        Dtype::F32 => typed!(f32),
        Dtype::F64 => typed!(f64),
    }
}

/// Whether the operation's buffers hold one block per rank.
fn blocked(c: Collective) -> bool {
    matches!(
        c,
        Collective::Allgather
            | Collective::ReduceScatter
            | Collective::Alltoall
            | Collective::Gather
            | Collective::Scatter
    )
}

impl<'g, 'c, T: Num> CollBench<'g, 'c, T> {
    fn new(
        group: &'g Group<Shared<'c>>,
        args: &SweepArgs,
        c: Collective,
        bytes: u64,
    ) -> Result<Self> {
        let n = group.size() as usize;
        let es = std::mem::size_of::<T>() as u64;
        let elems = usize::try_from((bytes / es).max(1))
            .map_err(|_| Error::Invalid(format!("{bytes} bytes do not fit this machine")))?;
        // Block operations move whole blocks: round down to a multiple of the world size
        // (at least one element per rank).
        let count = if blocked(c) { (elems / n).max(1) } else { elems };
        let total = if blocked(c) { count * n } else { count };
        let (in_len, out_len) = match c {
            Collective::Allreduce | Collective::Reduce | Collective::Broadcast => (total, 0),
            Collective::Allgather | Collective::Gather => (count, total),
            Collective::ReduceScatter | Collective::Scatter => (total, count),
            Collective::Alltoall => (total, total),
            Collective::Barrier | Collective::Sendrecv => (0, 0),
        };
        let algorithm = match args.algorithm.as_str() {
            "auto" => None,
            name => Some(Algorithm::from_name(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "--algorithm {name} is not one of {}",
                    algorithm_choices(c).join(", ")
                ))
            })?),
        };
        let lc = library_collective(c);
        let lib_bytes = (total as u64) * es;
        let shown_algorithm = match algorithm {
            Some(a) => a.name().to_string(),
            None => {
                let from_env = gloo_algorithms::select::EnvOverrides::from_env()
                    .ok()
                    .and_then(|o| o.algorithm(lc));
                match from_env {
                    Some(a) => format!("{} (env)", a.name()),
                    None => gloo_algorithms::select::choose(lc, group.size(), lib_bytes)
                        .name()
                        .to_string(),
                }
            }
        };
        let fill = T::from_i128(1);
        Ok(CollBench {
            group,
            c,
            op: args.op,
            root: args.root,
            algorithm,
            shown_algorithm,
            count,
            input: vec![fill; in_len],
            output: vec![fill; out_len],
        })
    }

    fn me(&self) -> u32 {
        self.group.rank().0
    }

    fn n(&self) -> u32 {
        self.group.size()
    }
}

impl<T: Num> SizeBench for CollBench<'_, '_, T> {
    fn bytes(&self) -> u64 {
        let elems = self.input.len().max(self.output.len()) as u64;
        elems * std::mem::size_of::<T>() as u64
    }

    fn elements(&self) -> u64 {
        self.input.len().max(self.output.len()) as u64
    }

    fn algorithm(&self) -> String {
        self.shown_algorithm.clone()
    }

    fn run(&mut self, deadline: Instant) -> Result<()> {
        let mut opts = Options::new().with_deadline(deadline);
        if let Some(a) = self.algorithm {
            opts = opts.with_algorithm(a);
        }
        let g = self.group;
        let root = Rank(self.root);
        let op = lib_op::<T>(self.op);
        let r = match self.c {
            Collective::Allreduce => g.allreduce(&mut self.input, op, &opts),
            Collective::Reduce => g.reduce(&mut self.input, root, op, &opts),
            Collective::Broadcast => g.broadcast(&mut self.input, root, &opts),
            Collective::Allgather => g.allgather(&self.input, &mut self.output, &opts),
            Collective::ReduceScatter => g.reduce_scatter(&self.input, &mut self.output, op, &opts),
            Collective::Alltoall => g.alltoall(&self.input, &mut self.output, &opts),
            Collective::Gather => g.gather(&self.input, &mut self.output, root, &opts),
            Collective::Scatter => g.scatter(&self.input, &mut self.output, root, &opts),
            Collective::Barrier => g.barrier(&opts),
            Collective::Sendrecv => {
                return Err(Error::Invalid("sendrecv does not run through a collective".into()));
            }
        };
        r.map_err(|e| Error::Collective {
            doing: format!("{} of {} bytes", self.c.name(), self.bytes()),
            source: e,
        })
    }

    fn prepare_check(&mut self) {
        let (me, op) = (self.me(), self.op);
        let reducing = self.c.reduces();
        match self.c {
            Collective::Broadcast if me != self.root => self.input.fill(T::from_i128(99)),
            Collective::Scatter if me != self.root => self.input.fill(T::from_i128(99)),
            _ => {
                for (i, x) in self.input.iter_mut().enumerate() {
                    *x = T::from_i128(if reducing { input(op, me, i) } else { data(me, i) });
                }
            }
        }
        // Outputs start as a value no check expects at every index, so an untouched output
        // fails.
        self.output.fill(T::from_i128(101));
    }

    fn verify(&self) -> std::result::Result<(), String> {
        let (me, n, count, op, root) = (self.me(), self.n(), self.count, self.op, self.root);
        let exact = |v: i128| (T::from_i128(v), T::from_i128(v).to_f64());
        match self.c {
            Collective::Allreduce => first_wrong(&self.input, "buf", |i| reduced::<T>(op, n, i)),
            Collective::Reduce if me == root => {
                first_wrong(&self.input, "buf", |i| reduced::<T>(op, n, i))
            }
            Collective::Reduce => Ok(()),
            Collective::Broadcast => first_wrong(&self.input, "buf", |i| exact(data(root, i))),
            Collective::Allgather => {
                first_wrong(&self.output, "output", |i| exact(data((i / count) as u32, i % count)))
            }
            Collective::Gather if me == root => {
                first_wrong(&self.output, "output", |i| exact(data((i / count) as u32, i % count)))
            }
            Collective::Gather => Ok(()),
            Collective::ReduceScatter => first_wrong(&self.output, "output", |i| {
                reduced::<T>(op, n, me as usize * count + i)
            }),
            Collective::Scatter => {
                first_wrong(&self.output, "output", |i| exact(data(root, me as usize * count + i)))
            }
            Collective::Alltoall => first_wrong(&self.output, "output", |i| {
                let from = (i / count) as u32;
                exact(data(from, me as usize * count + i % count))
            }),
            Collective::Barrier | Collective::Sendrecv => Ok(()),
        }
    }

    fn digest(&self) -> Option<u64> {
        match self.c {
            Collective::Allreduce | Collective::Broadcast => Some(digest(&self.input)),
            Collective::Allgather => Some(digest(&self.output)),
            _ => None,
        }
    }
}

/// A 64-bit digest of a buffer's bytes (FNV-style over 8-byte words: not cryptographic, only
/// to tell whether ranks hold the same bytes).
fn digest<T: Num>(buf: &[T]) -> u64 {
    let bytes: &[u8] = bytemuck::cast_slice(buf);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes(w.try_into().expect("chunks_exact(8) yields 8-byte slices"));
        h = (h ^ v).wrapping_mul(0x0000_0100_0000_01b3);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Mixes in the length so that buffers that differ only by trailing zero bytes differ.
    h ^ bytes.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_values_wrap_like_the_library_and_average_truncates() {
        // 40 ranks of u8 sums: 1..=4 each, wrapped mod 256.
        let exact: i128 = (0..40).map(|q| input(OpArg::Sum, q, 0)).sum();
        assert_eq!(reduced::<u8>(OpArg::Sum, 40, 0).0, exact as u8);
        // Average of 1 and 2 (ranks 0 and 1 at index 0) truncates for integers.
        assert_eq!(reduced::<i32>(OpArg::Average, 2, 0).0, 1);
        assert_eq!(reduced::<f32>(OpArg::Average, 2, 0).1, 1.5);
        assert_eq!(reduced::<i64>(OpArg::Max, 3, 0).0, 26);
    }

    #[test]
    fn digests_tell_buffers_apart_bitwise() {
        assert_eq!(digest(&[1.0f32, 2.0]), digest(&[1.0f32, 2.0]));
        assert_ne!(digest(&[0.0f32]), digest(&[-0.0f32]));
        assert_ne!(digest(&[1u8, 2, 3]), digest(&[1u8, 2, 3, 0]));
        assert_ne!(digest(&[7u64; 9]), digest(&[7u64; 10]));
    }

    #[test]
    fn float_comparison_uses_the_types_tolerance() {
        assert!(same(f16::from_f32(1.5), f16::ZERO, 1.5));
        assert!(!same(1.5f32, 0.0, 1.6));
        assert!(same(7u8, 7u8, 7.0));
        assert!(!same(7u8, 8u8, 7.0));
    }
}
