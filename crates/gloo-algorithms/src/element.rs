//! Element types and the reduce kernels: the only generic code in the crate.
//!
//! Schedules move bytes; a reduction is a function `dst = dst op src` over two byte slices
//! that hold whole elements. The kernels below are written as plain zipped loops over
//! same-length slices, which the compiler turns into vector code without bounds checks.
//! The f16 and bf16 kernels widen to f32, compute and round back in one such loop, with
//! branch-free conversions of their own (bit-identical to `half`'s), compiled through
//! `pulp` for the widest vector instructions the CPU has; f16 on AVX-512 uses the CPU's
//! conversion instructions.

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

/// Bit-exact, branch-free conversions between the half-precision types and `f32`.
///
/// `half`'s own conversions are exact but either branch per element (software) or call a
/// non-inlinable `f16c` function per 8 elements (hardware), so a loop over them does not
/// vectorise. These are written on `u32` bits and power-of-two scalings with selects only,
/// so a zipped loop over them turns into vector code. Each one returns, for every input,
/// the same bits as `half`'s conversion, hardware and software paths alike (the tests check
/// all 65,536 half inputs and a dense sweep of f32 ones): round to nearest, ties to even; a
/// NaN keeps its sign and top payload bits and gets its quiet bit set.
mod conv {
    /// 2^112: the distance between the f16 and f32 exponent biases (127 - 15).
    const TWO_POW_112: u32 = 0x7780_0000;
    /// 2^-110, with [`TWO_POW_112`] a scaling by 4 that overflows to infinity on the way.
    const TWO_POW_M110: u32 = 0x0880_0000;

    /// `f16` bits to `f32`, as `half::f16::to_f32`.
    #[inline(always)]
    pub(super) fn f16_to_f32(h: u16) -> f32 {
        let h = u32::from(h);
        let sign = (h & 0x8000) << 16;
        let e = (h & 0x7FFF) << 13;
        // Normals and subnormals: the f16 magnitude placed in an f32 reads 2^112 too small,
        // and scaling by a power of two is exact (a subnormal comes out normal).
        let finite = (f32::from_bits(e) * f32::from_bits(TWO_POW_112)).to_bits();
        // Infinity and NaN keep an all-ones exponent; a NaN also gets its quiet bit.
        let quiet = if e > 0x0F80_0000 { 0x0040_0000 } else { 0 };
        let inf_nan = e | 0x7F80_0000 | quiet;
        f32::from_bits(sign | if e >= 0x0F80_0000 { inf_nan } else { finite })
    }

    /// `f32` to `f16` bits, as `half::f16::from_f32`.
    #[inline(always)]
    pub(super) fn f32_to_f16(f: f32) -> u16 {
        let x = f.to_bits();
        let sign = (x >> 16) & 0x8000;
        let abs = x & 0x7FFF_FFFF;
        // The rounding is done by the FPU: adding a power of two whose ULP is the f16 ULP of
        // `abs` (never finer than the subnormal step 2^-24) rounds `abs` to nearest even at
        // exactly the f16 precision. Scaling up by 2^112 first turns everything from 2^16
        // up into infinity; scaling down by 2^-110 then leaves `abs * 4`, so that the
        // addend's exponent below lines up.
        let base = f32::from_bits(abs) * f32::from_bits(TWO_POW_112) * f32::from_bits(TWO_POW_M110);
        let bias = (abs & 0x7F80_0000).max(0x3880_0000);
        // For an infinity or NaN input the addend comes out negative and finite, which is
        // harmless: the sum stays infinite, and a NaN is selected away below.
        let bits = (f32::from_bits(bias + 0x0780_0000) + base).to_bits();
        // The sum's exponent minus the addend's is the f16 exponent, its low mantissa bits
        // the f16 mantissa; adding the two lets a mantissa carry bump the exponent.
        let finite = ((bits >> 13) & 0x7C00) + (bits & 0x0FFF);
        let nan = 0x7E00 | ((abs >> 13) & 0x03FF);
        (sign | if abs > 0x7F80_0000 { nan } else { finite }) as u16
    }

    /// `bf16` bits to `f32`, as `half::bf16::to_f32`.
    #[inline(always)]
    pub(super) fn bf16_to_f32(h: u16) -> f32 {
        let h = u32::from(h);
        // A NaN gets its quiet bit; everything else is the top half of an f32.
        let quiet = if h & 0x7FFF > 0x7F80 { 0x0040 } else { 0 };
        f32::from_bits((h | quiet) << 16)
    }

    /// `f32` to `bf16` bits, as `half::bf16::from_f32`.
    #[inline(always)]
    pub(super) fn f32_to_bf16(f: f32) -> u16 {
        let x = f.to_bits();
        let nan = (x >> 16) | 0x0040;
        // Round to nearest even on the 16 dropped bits: adding 0x7FFF plus the kept LSB
        // carries exactly when rounding goes up. Finite values never carry out of the top
        // bit (the largest, -MAX, rounds to -inf = 0xFF80); only NaNs can, hence wrapping.
        let rounded = x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16;
        (if x & 0x7FFF_FFFF > 0x7F80_0000 { nan } else { rounded }) as u16
    }
}

/// The f16 kernels on x86-64 CPUs with AVX-512: the CPU's own conversions (`vcvtph2ps`,
/// `vcvtps2ph`, round to nearest even), 16 elements an instruction, where the branch-free
/// software ones cost a dozen operations each way and leave the kernel at half of memcpy's
/// speed. They give the same bits as `half`'s conversions (which use the same
/// instructions when the CPU has `f16c`, and the tests compare against the software path
/// too). Safe code: `pulp`'s `V4` token proves the features, and its `vectorize` compiles
/// the loop with them enabled.
#[cfg(target_arch = "x86_64")]
mod f16_avx512 {
    use pulp::x86::V4;
    use std::arch::x86_64::{__m256i, __m512};

    use super::Builtin;

    /// Elements per vector.
    const LANES: usize = 16;

    /// `dst = dst op src` (`op` given) or `dst = dst / n` (`op` `None`, `src` unused) over
    /// the whole 16-element blocks at the front of `dst`, if the CPU has AVX-512; returns
    /// how many elements were done (0 without AVX-512), the rest is the caller's.
    pub(super) fn prefix(op: Option<Builtin>, n: f32, dst: &mut [u16], src: &[u16]) -> usize {
        let Some(v4) = V4::try_new() else {
            return 0;
        };
        match op {
            Some(Builtin::Sum) => blocks(v4, dst, src, |a, b| a + b),
            Some(Builtin::Product) => blocks(v4, dst, src, |a, b| a * b),
            Some(Builtin::Min) => blocks(v4, dst, src, f32::min),
            Some(Builtin::Max) => blocks(v4, dst, src, f32::max),
            None => v4.vectorize(
                #[inline(always)]
                || {
                    let len = dst.len();
                    let mut chunks = dst.chunks_exact_mut(LANES);
                    for d in &mut chunks {
                        store(v4, d, widen(v4, d).map(|x| x / n));
                    }
                    len - chunks.into_remainder().len()
                },
            ),
        }
    }

    /// The reduce loop over whole blocks of both slices' common length.
    #[inline(always)]
    fn blocks(v4: V4, dst: &mut [u16], src: &[u16], f: impl Fn(f32, f32) -> f32) -> usize {
        v4.vectorize(
            #[inline(always)]
            || {
                let len = dst.len().min(src.len());
                let mut chunks = dst[..len].chunks_exact_mut(LANES);
                for (d, s) in (&mut chunks).zip(src.chunks_exact(LANES)) {
                    let (a, b) = (widen(v4, d), widen(v4, s));
                    store(v4, d, std::array::from_fn(|i| f(a[i], b[i])));
                }
                len - chunks.into_remainder().len()
            },
        )
    }

    /// 16 f16 bit patterns (a `chunks_exact` block) to f32.
    #[inline(always)]
    fn widen(v4: V4, block: &[u16]) -> [f32; LANES] {
        let mut bits = [0u16; LANES];
        bits.copy_from_slice(block);
        pulp::cast(v4.avx512f._mm512_cvtph_ps(pulp::cast::<_, __m256i>(bits)))
    }

    /// 16 f32 rounded to nearest even into f16 bit patterns in `block`.
    #[inline(always)]
    fn store(v4: V4, block: &mut [u16], x: [f32; LANES]) {
        let bits: [u16; LANES] =
            pulp::cast(v4.avx512f._mm512_cvtps_ph::<0>(pulp::cast::<_, __m512>(x)));
        block.copy_from_slice(&bits);
    }
}

/// The elements a hardware path did at the front of the slices; see [`f16_avx512::prefix`].
type Prefix = fn(Option<Builtin>, f32, &mut [u16], &[u16]) -> usize;

/// No hardware path: everything is left to the portable loop.
fn no_prefix(_: Option<Builtin>, _: f32, _: &mut [u16], _: &[u16]) -> usize {
    0
}

/// The f16 hardware path of this target, if any.
#[cfg(target_arch = "x86_64")]
const F16_PREFIX: Prefix = f16_avx512::prefix;
#[cfg(not(target_arch = "x86_64"))]
const F16_PREFIX: Prefix = no_prefix;

/// `dst[i] = narrow(f(widen(dst[i]), widen(src[i])))` over 16-bit elements: one zipped loop
/// with every step inlined and branch-free, so it vectorises.
///
/// Run through `pulp`'s dispatch, which compiles the loop once per instruction set (SSE2,
/// AVX2, AVX-512 on x86) and picks the best the CPU has at run time: the conversions cost
/// a dozen vector operations per element each way, so the vector width decides whether
/// the kernel keeps up with memory. The results are the same on every path (IEEE f32
/// arithmetic, and conversions exact by construction).
#[inline(always)]
fn zip_half(
    dst: &mut [u16],
    src: &[u16],
    widen: impl Fn(u16) -> f32,
    narrow: impl Fn(f32) -> u16,
    f: impl Fn(f32, f32) -> f32,
) {
    pulp::Arch::new().dispatch(|| zip_with(dst, src, |a, b| narrow(f(widen(a), widen(b)))));
}

/// The portable half kernel: `dst = dst op src`, computed in f32 and rounded once per
/// element, bit for bit `from_f32(a.to_f32() op b.to_f32())`.
///
/// It repeats [`reduce_with`]'s match on purpose: one `pulp` dispatch per op's loop. A
/// single dispatch around `reduce_with` measured bf16 sum at 2.8–3.0 GB/s instead of 7 (the
/// four loops no longer inline into the dispatched function, so nothing vectorises).
#[inline(always)]
fn half_reduce(
    op: Builtin,
    dst: &mut [u16],
    src: &[u16],
    widen: impl Fn(u16) -> f32 + Copy,
    narrow: impl Fn(f32) -> u16 + Copy,
) {
    match op {
        Builtin::Sum => zip_half(dst, src, widen, narrow, |a, b| a + b),
        Builtin::Product => zip_half(dst, src, widen, narrow, |a, b| a * b),
        Builtin::Min => zip_half(dst, src, widen, narrow, f32::min),
        Builtin::Max => zip_half(dst, src, widen, narrow, f32::max),
    }
}

/// The portable half division `buf = buf / n`, rounded once per element.
#[inline(always)]
fn half_divide(buf: &mut [u16], n: f32, widen: impl Fn(u16) -> f32, narrow: impl Fn(f32) -> u16) {
    pulp::Arch::new().dispatch(|| buf.iter_mut().for_each(|x| *x = narrow(widen(*x) / n)));
}

macro_rules! half_element {
    ($t:ty, $d:ident, $widen:path, $narrow:path, $prefix:expr) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn reduce_slices(op: Builtin, dst: &mut [Self], src: &[Self]) {
                let dst: &mut [u16] = bytemuck::cast_slice_mut(dst);
                let src: &[u16] = bytemuck::cast_slice(src);
                let done = $prefix(Some(op), 1.0, dst, src);
                let (dst, src) = (&mut dst[done..], src.get(done..).unwrap_or_default());
                half_reduce(op, dst, src, $widen, $narrow);
            }
            fn divide_slice(buf: &mut [Self], n: u32) {
                let n = n.max(1) as f32;
                let buf: &mut [u16] = bytemuck::cast_slice_mut(buf);
                let done = $prefix(None, n, buf, &[]);
                half_divide(&mut buf[done..], n, $widen, $narrow);
            }
        }
    };
}

half_element!(f16, F16, conv::f16_to_f32, conv::f32_to_f16, F16_PREFIX);
half_element!(bf16, BF16, conv::bf16_to_f32, conv::f32_to_bf16, no_prefix);

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

    /// The element-at-a-time reference the half kernels must match bit for bit: widen with
    /// `half`, compute in f32, round back with `half`. `black_box` keeps each element a
    /// scalar computation of its own.
    fn half_reference(
        op: Option<Builtin>,
        a: u16,
        b: u16,
        n: u32,
        to_f32: fn(u16) -> f32,
        from_f32: fn(f32) -> u16,
    ) -> u16 {
        let (x, y) = (std::hint::black_box(to_f32(a)), std::hint::black_box(to_f32(b)));
        let r = match op {
            Some(Builtin::Sum) => x + y,
            Some(Builtin::Product) => x * y,
            Some(Builtin::Min) => x.min(y),
            Some(Builtin::Max) => x.max(y),
            None => x / n.max(1) as f32,
        };
        from_f32(std::hint::black_box(r))
    }

    const OPS: [Option<Builtin>; 5] =
        [Some(Builtin::Sum), Some(Builtin::Product), Some(Builtin::Min), Some(Builtin::Max), None];

    /// Run the kernel of `T` for `op` (`None`: divide by `n`) over bit patterns and compare
    /// every element with [`half_reference`]; the first mismatch names the op and operands.
    fn check_half_kernel<T: Element>(
        op: Option<Builtin>,
        dst: &[u16],
        src: &[u16],
        n: u32,
        to_f32: fn(u16) -> f32,
        from_f32: fn(f32) -> u16,
    ) {
        let mut out: Vec<T> = dst.iter().map(|&b| bytemuck::cast(b)).collect();
        let s: Vec<T> = src.iter().map(|&b| bytemuck::cast(b)).collect();
        match op {
            Some(op) => T::reduce_slices(op, &mut out, &s),
            None => T::divide_slice(&mut out, n),
        }
        let out: Vec<u16> = out.iter().map(|&o| bytemuck::cast(o)).collect();
        compare_half(T::DTYPE, op, dst, src, n, &out, to_f32, from_f32);
        if T::DTYPE == DType::F16 {
            // The f16 kernel takes a hardware path where the CPU has one; check the portable
            // one over the same operands too.
            let mut soft = dst.to_vec();
            match op {
                Some(op) => half_reduce(op, &mut soft, src, conv::f16_to_f32, conv::f32_to_f16),
                None => half_divide(&mut soft, n.max(1) as f32, conv::f16_to_f32, conv::f32_to_f16),
            }
            compare_half(T::DTYPE, op, dst, src, n, &soft, to_f32, from_f32);
        }
    }

    /// Compare a kernel's output with [`half_reference`] element by element.
    #[allow(clippy::too_many_arguments)]
    fn compare_half(
        dtype: DType,
        op: Option<Builtin>,
        dst: &[u16],
        src: &[u16],
        n: u32,
        out: &[u16],
        to_f32: fn(u16) -> f32,
        from_f32: fn(f32) -> u16,
    ) {
        for (i, &got) in out.iter().enumerate() {
            let want = half_reference(op, dst[i], src[i], n, to_f32, from_f32);
            assert_eq!(
                got, want,
                "{dtype} {op:?} (n = {n}) of {:#06x} and {:#06x}: got {got:#06x}, want {want:#06x}",
                dst[i], src[i]
            );
        }
    }

    fn f16_to_f32_half(b: u16) -> f32 {
        f16::from_bits(b).to_f32()
    }
    fn f16_from_f32_half(f: f32) -> u16 {
        f16::from_f32(f).to_bits()
    }
    fn bf16_to_f32_half(b: u16) -> f32 {
        bf16::from_bits(b).to_f32()
    }
    fn bf16_from_f32_half(f: f32) -> u16 {
        bf16::from_f32(f).to_bits()
    }

    /// Half-precision values at the edges: ±0, the smallest and largest subnormals, the
    /// smallest normal, one, the largest finite, ±inf, quiet and signalling NaNs with
    /// payloads, for f16 then bf16.
    const F16_EDGES: [u16; 16] = [
        0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00,
        0xFC00, 0x7E00, 0x7C01, 0xFE3F, 0x7FFF,
    ];
    const BF16_EDGES: [u16; 16] = [
        0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x3F80, 0xBF80, 0x7F7F, 0xFF7F, 0x7F80,
        0xFF80, 0x7FC0, 0x7F81, 0xFFA5, 0x7FFF,
    ];

    /// A deterministic stream of bit patterns (splitmix64), so a failure reproduces.
    fn patterns(seed: u64, len: usize) -> Vec<u16> {
        let mut g = gloo_testing::rng::SplitMix(seed);
        (0..len).map(|_| g.next_u64() as u16).collect()
    }

    #[test]
    fn half_widening_matches_half_for_every_bit_pattern() {
        for b in 0..=u16::MAX {
            let got = conv::f16_to_f32(b).to_bits();
            assert_eq!(got, f16::from_bits(b).to_f32().to_bits(), "f16 {b:#06x}");
            assert_eq!(got, f16::from_bits(b).to_f32_const().to_bits(), "f16 {b:#06x}");
            let got = conv::bf16_to_f32(b).to_bits();
            assert_eq!(got, bf16::from_bits(b).to_f32().to_bits(), "bf16 {b:#06x}");
            assert_eq!(got, bf16::from_bits(b).to_f32_const().to_bits(), "bf16 {b:#06x}");
        }
    }

    /// Every sign, exponent and top mantissa bits of an f32, each with low halves chosen at
    /// the rounding edges of both formats (f16 drops 13 bits of a normal and up to 24 of a
    /// subnormal, whose rounding bits the top halves cover; bf16 drops exactly the low half).
    #[test]
    fn half_narrowing_matches_half_across_every_f32_exponent() {
        const LOW: [u32; 14] = [
            0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3000, 0x7FFF, 0x8000, 0x8001,
            0xA000, 0xEFFF, 0xFFFF,
        ];
        for high in 0..=u32::from(u16::MAX) {
            for low in LOW {
                let x = f32::from_bits(high << 16 | low);
                let got = conv::f32_to_f16(x);
                assert_eq!(got, f16::from_f32(x).to_bits(), "f16 of {:#010x}", x.to_bits());
                assert_eq!(got, f16::from_f32_const(x).to_bits(), "f16 of {:#010x}", x.to_bits());
                assert_eq!(conv::f32_to_bf16(x), bf16::from_f32(x).to_bits(), "bf16 {x:e}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn half_narrowing_matches_half_for_any_f32(bits in proptest::prelude::any::<u32>()) {
            let x = f32::from_bits(bits);
            proptest::prop_assert_eq!(conv::f32_to_f16(x), f16::from_f32(x).to_bits());
            proptest::prop_assert_eq!(conv::f32_to_f16(x), f16::from_f32_const(x).to_bits());
            proptest::prop_assert_eq!(conv::f32_to_bf16(x), bf16::from_f32(x).to_bits());
        }

        /// Random operands at random lengths (most not a multiple of any vector width).
        #[test]
        fn half_kernels_match_the_reference_at_any_length(
            seed in proptest::prelude::any::<u64>(),
            len in 0usize..300,
            n in 0u32..9,
        ) {
            let (dst, src) = (patterns(seed, len), patterns(!seed, len));
            for op in OPS {
                check_half_kernel::<f16>(op, &dst, &src, n, f16_to_f32_half, f16_from_f32_half);
                check_half_kernel::<bf16>(op, &dst, &src, n, bf16_to_f32_half, bf16_from_f32_half);
            }
        }
    }

    /// Every bit pattern as `dst`, against random partners and against each edge value;
    /// and every pair of edge values, at an odd length.
    #[test]
    fn half_kernels_match_the_reference_for_every_bit_pattern() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        type Conv = (fn(u16) -> f32, fn(f32) -> u16);
        let f16c: Conv = (f16_to_f32_half, f16_from_f32_half);
        let bf16c: Conv = (bf16_to_f32_half, bf16_from_f32_half);
        for op in OPS {
            for (seed, n) in [(1u64, 3u32), (2, 7)] {
                let src = patterns(seed, all.len());
                check_half_kernel::<f16>(op, &all, &src, n, f16c.0, f16c.1);
                check_half_kernel::<bf16>(op, &all, &src, n, bf16c.0, bf16c.1);
            }
            for e in F16_EDGES {
                check_half_kernel::<f16>(op, &all, &vec![e; all.len()], 1, f16c.0, f16c.1);
            }
            for e in BF16_EDGES {
                check_half_kernel::<bf16>(op, &all, &vec![e; all.len()], 1, bf16c.0, bf16c.1);
            }
            for (edges, is_f16) in [(F16_EDGES, true), (BF16_EDGES, false)] {
                let dst: Vec<u16> = edges.iter().flat_map(|&a| edges.map(|_| a)).collect();
                let src: Vec<u16> = edges.iter().flat_map(|_| edges).collect();
                // 255 of the 256 pairs: a length no vector width divides.
                let (dst, src) = (&dst[..255], &src[..255]);
                if is_f16 {
                    check_half_kernel::<f16>(op, dst, src, 5, f16c.0, f16c.1);
                } else {
                    check_half_kernel::<bf16>(op, dst, src, 5, bf16c.0, bf16c.1);
                }
            }
        }
    }

    /// Sums that round to infinity at the top of each format's range, and a sum that is
    /// exactly halfway between two values (ties to even).
    #[test]
    fn half_kernels_round_to_overflow_and_to_even() {
        // 65504 (f16 max) + 16 is exactly halfway to 65536 and rounds to infinity (even).
        let mut a = [f16::MAX, f16::MAX, f16::from_f32(2048.0)];
        f16::reduce_slices(
            Builtin::Sum,
            &mut a,
            &[f16::from_f32(16.0), f16::from_f32(15.0), f16::ONE],
        );
        assert_eq!(a, [f16::INFINITY, f16::MAX, f16::from_f32(2048.0)]);
        let mut b = [bf16::MAX, bf16::MIN];
        bf16::reduce_slices(Builtin::Product, &mut b, &[bf16::from_f32(2.0), bf16::from_f32(2.0)]);
        assert_eq!(b, [bf16::INFINITY, bf16::NEG_INFINITY]);
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
