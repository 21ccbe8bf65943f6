//! Element types and the reduce kernels: the only generic code in the crate.
//!
//! Schedules move bytes; a reduction is a function `dst = dst op src` over two byte slices
//! that hold whole elements. The kernels below are written as plain zipped loops over
//! same-length slices, which the compiler turns into vector code without bounds checks.

use half::{bf16, f16};

/// The element types a collective can carry, as a stable number that travels in fingerprints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// `u8`.
    U8 = 1,
    /// `u16`.
    U16 = 2,
    /// `u32`.
    U32 = 3,
    /// `u64`.
    U64 = 4,
    /// `i8`.
    I8 = 5,
    /// `i16`.
    I16 = 6,
    /// `i32`.
    I32 = 7,
    /// `i64`.
    I64 = 8,
    /// `half::f16`.
    F16 = 9,
    /// `half::bf16`.
    BF16 = 10,
    /// `f32`.
    F32 = 11,
    /// `f64`.
    F64 = 12,
}

impl DType {
    /// The type's name as Rust spells it.
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// The type with this wire id, if any.
    pub fn from_id(id: u8) -> Option<DType> {
        const ALL: [DType; 12] = [
            DType::U8,
            DType::U16,
            DType::U32,
            DType::U64,
            DType::I8,
            DType::I16,
            DType::I32,
            DType::I64,
            DType::F16,
            DType::BF16,
            DType::F32,
            DType::F64,
        ];
        ALL.into_iter().find(|d| *d as u8 == id)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An element type collectives can reduce: `u8`–`u64`, `i8`–`i64`, `f16`, `bf16`, `f32`,
/// `f64`. Sealed: the set is fixed because every rank must agree on the wire id.
///
/// Integer sums and products wrap on overflow (they never panic); `f16` and `bf16` are
/// computed in `f32` and rounded once per pairwise step; an integer average truncates
/// toward zero.
pub trait Element: bytemuck::Pod + Send + Sync + sealed::Sealed {
    /// The wire id of the type.
    const DTYPE: DType;

    /// `dst[i] = dst[i] op src[i]` for a built-in op (`Average` sums).
    #[doc(hidden)]
    fn reduce_slices(op: Builtin, dst: &mut [Self], src: &[Self]);

    /// `buf[i] = buf[i] / n`, the last step of an average.
    #[doc(hidden)]
    fn divide_slice(buf: &mut [Self], n: u32);
}

/// The built-in reductions, as the kernels see them.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// Sum (also used by average).
    Sum,
    /// Product.
    Product,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
}

/// `dst[i] = f(dst[i], src[i])` over the slices' common length: equal lengths let the
/// compiler drop every bounds check and turn the loop into vector code.
#[inline(always)]
fn zip_with<T: Copy>(dst: &mut [T], src: &[T], f: impl Fn(T, T) -> T) {
    let n = dst.len().min(src.len());
    for (d, s) in dst[..n].iter_mut().zip(&src[..n]) {
        *d = f(*d, *s);
    }
}

/// The kernel of a built-in op, given the four ops (sum, product, min, max) as functions of
/// two elements. Each op gets a loop of its own (the match is outside the loops) with its
/// function inlined, so each vectorises.
#[inline(always)]
fn reduce_with<T: Copy>(
    op: Builtin,
    dst: &mut [T],
    src: &[T],
    (sum, product, min, max): (
        impl Fn(T, T) -> T,
        impl Fn(T, T) -> T,
        impl Fn(T, T) -> T,
        impl Fn(T, T) -> T,
    ),
) {
    match op {
        Builtin::Sum => zip_with(dst, src, sum),
        Builtin::Product => zip_with(dst, src, product),
        Builtin::Min => zip_with(dst, src, min),
        Builtin::Max => zip_with(dst, src, max),
    }
}

macro_rules! int_element {
    ($t:ty, $d:ident) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn reduce_slices(op: Builtin, dst: &mut [Self], src: &[Self]) {
                let ops =
                    (<$t>::wrapping_add, <$t>::wrapping_mul, <$t as Ord>::min, <$t as Ord>::max);
                reduce_with(op, dst, src, ops);
            }
            fn divide_slice(buf: &mut [Self], n: u32) {
                // Through i128 so that a divisor larger than the type's range still works:
                // |x / n| <= |x|, so the quotient always fits back.
                let n = i128::from(n.max(1));
                buf.iter_mut().for_each(|x| *x = (i128::from(*x) / n) as $t);
            }
        }
    };
}

int_element!(u8, U8);
int_element!(u16, U16);
int_element!(u32, U32);
int_element!(u64, U64);
int_element!(i8, I8);
int_element!(i16, I16);
int_element!(i32, I32);
int_element!(i64, I64);

macro_rules! float_element {
    ($t:ty, $d:ident) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn reduce_slices(op: Builtin, dst: &mut [Self], src: &[Self]) {
                reduce_with(op, dst, src, (|a, b| a + b, |a, b| a * b, <$t>::min, <$t>::max));
            }
            fn divide_slice(buf: &mut [Self], n: u32) {
                let n = n.max(1) as $t;
                buf.iter_mut().for_each(|x| *x /= n);
            }
        }
    };
}

float_element!(f32, F32);
float_element!(f64, F64);

/// Elements of a half-precision block converted to `f32` at a time: big enough for the
/// conversions and the arithmetic to vectorise, small enough to live on the stack.
const HALF_BLOCK: usize = 256;

macro_rules! half_element {
    ($t:ty, $d:ident) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn reduce_slices(op: Builtin, dst: &mut [Self], src: &[Self]) {
                use half::slice::HalfFloatSliceExt;
                let n = dst.len().min(src.len());
                let mut a = [0f32; HALF_BLOCK];
                let mut b = [0f32; HALF_BLOCK];
                for (d, s) in dst[..n].chunks_mut(HALF_BLOCK).zip(src[..n].chunks(HALF_BLOCK)) {
                    let len = d.len();
                    let (a, b) = (&mut a[..len], &mut b[..len]);
                    d.convert_to_f32_slice(a);
                    s.convert_to_f32_slice(b);
                    f32::reduce_slices(op, a, b);
                    d.convert_from_f32_slice(a);
                }
            }
            fn divide_slice(buf: &mut [Self], n: u32) {
                let n = n.max(1) as f32;
                buf.iter_mut().for_each(|x| *x = <$t>::from_f32(x.to_f32() / n));
            }
        }
    };
}

half_element!(f16, F16);

impl sealed::Sealed for bf16 {}
impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn reduce_slices(op: Builtin, dst: &mut [Self], src: &[Self]) {
        // bf16 widens to f32 by a shift and narrows by a rounding the compiler can turn into
        // selects, so one zipped loop vectorises without staging through f32 blocks.
        #[inline(always)]
        fn in_f32(f: impl Fn(f32, f32) -> f32) -> impl Fn(bf16, bf16) -> bf16 {
            move |a, b| bf16::from_f32(f(a.to_f32(), b.to_f32()))
        }
        let ops = (in_f32(|a, b| a + b), in_f32(|a, b| a * b), in_f32(f32::min), in_f32(f32::max));
        reduce_with(op, dst, src, ops);
    }
    fn divide_slice(buf: &mut [Self], n: u32) {
        let n = n.max(1) as f32;
        buf.iter_mut().for_each(|x| *x = bf16::from_f32(x.to_f32() / n));
    }
}

/// A reduction over bytes holding whole elements: `dst = dst op src`.
pub(crate) type ByteFn<'a> = dyn Fn(&mut [u8], &[u8]) + 'a;

/// `dst = dst op src` over byte slices, for element type `T`.
///
/// Callers pass slices cut at element boundaries of buffers that are aligned for `T` (user
/// slices of `T`, or scratch allocated as `u64`), so the casts succeed; a slice that is not
/// (which would be a bug in a schedule) is reduced through aligned copies rather than
/// panicking.
pub(crate) fn reduce_bytes<T: Element>(op: Builtin, dst: &mut [u8], src: &[u8]) {
    with_typed::<T>(dst, src, &|d, s| T::reduce_slices(op, d, s));
}

/// Run `f` over `dst` and `src` viewed as `T`, copying when they are misaligned.
pub(crate) fn with_typed<T: Element>(dst: &mut [u8], src: &[u8], f: &dyn Fn(&mut [T], &[T])) {
    match (bytemuck::try_cast_slice_mut::<u8, T>(dst), bytemuck::try_cast_slice::<u8, T>(src)) {
        (Ok(d), Ok(s)) => f(d, s),
        _ => {
            let size = std::mem::size_of::<T>();
            let mut dv: Vec<T> = dst.chunks_exact(size).map(bytemuck::pod_read_unaligned).collect();
            let sv: Vec<T> = src.chunks_exact(size).map(bytemuck::pod_read_unaligned).collect();
            f(&mut dv, &sv);
            dst[..dv.len() * size].copy_from_slice(bytemuck::cast_slice(&dv));
        }
    }
}

/// Divide every element of `buf` by `n` (the end of an average).
pub(crate) fn divide_bytes<T: Element>(buf: &mut [u8], n: u32) {
    with_typed::<T>(buf, &[], &|d, _| T::divide_slice(d, n));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_kernels_wrap_and_pick() {
        let mut a = [250u8, 3, 7];
        u8::reduce_slices(Builtin::Sum, &mut a, &[10, 4, 0]);
        assert_eq!(a, [4, 7, 7]);
        let mut b = [-5i16, 9, 0];
        i16::reduce_slices(Builtin::Min, &mut b, &[3, -2, 0]);
        assert_eq!(b, [-5, -2, 0]);
        i16::reduce_slices(Builtin::Max, &mut b, &[7, -9, 1]);
        assert_eq!(b, [7, -2, 1]);
        let mut c = [i64::MAX, 3];
        i64::reduce_slices(Builtin::Product, &mut c, &[2, -4]);
        assert_eq!(c, [-2, -12]);
    }

    #[test]
    fn integer_average_survives_a_divisor_beyond_the_type() {
        let mut a = [-100i8, 127, 5];
        i8::divide_slice(&mut a, 300);
        assert_eq!(a, [0, 0, 0]);
        let mut b = [u64::MAX, 10];
        u64::divide_slice(&mut b, 3);
        assert_eq!(b, [u64::MAX / 3, 3]);
    }

    #[test]
    fn half_kernels_compute_in_f32() {
        let mut a: Vec<f16> = (0..600).map(|i| f16::from_f32(i as f32)).collect();
        let b: Vec<f16> = (0..600).map(|_| f16::from_f32(0.5)).collect();
        f16::reduce_slices(Builtin::Sum, &mut a, &b);
        assert_eq!(a[3], f16::from_f32(3.5));
        assert_eq!(a[599], f16::from_f32(599.5));
        let mut c = [bf16::from_f32(2.0), bf16::from_f32(-1.0)];
        bf16::reduce_slices(Builtin::Product, &mut c, &[bf16::from_f32(3.0), bf16::from_f32(4.0)]);
        assert_eq!(c, [bf16::from_f32(6.0), bf16::from_f32(-4.0)]);
    }

    #[test]
    fn byte_kernels_handle_misaligned_slices() {
        let mut store = [0u8; 13];
        let src: Vec<u8> = bytemuck::cast_slice(&[1.5f32, 2.0, -1.0]).to_vec();
        store[1..13].copy_from_slice(bytemuck::cast_slice(&[1.0f32, 1.0, 1.0]));
        reduce_bytes::<f32>(Builtin::Sum, &mut store[1..13], &src);
        let out: Vec<f32> =
            store[1..13].chunks_exact(4).map(bytemuck::pod_read_unaligned).collect();
        assert_eq!(out, [2.5, 3.0, 0.0]);
    }

    #[test]
    fn dtype_ids_round_trip() {
        for id in 0..=255u8 {
            if let Some(d) = DType::from_id(id) {
                assert_eq!(d as u8, id);
            }
        }
        assert_eq!(DType::from_id(11), Some(DType::F32));
        assert_eq!(DType::from_id(0), None);
    }
}
