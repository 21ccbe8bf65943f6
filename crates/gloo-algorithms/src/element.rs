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

use crate::names::named_ids;

named_ids! {
    /// The element types a collective can carry, as a stable number that travels in fingerprints.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum DType {
        /// `u8`.
        U8 = 1 => "u8",
        /// `u16`.
        U16 = 2 => "u16",
        /// `u32`.
        U32 = 3 => "u32",
        /// `u64`.
        U64 = 4 => "u64",
        /// `i8`.
        I8 = 5 => "i8",
        /// `i16`.
        I16 = 6 => "i16",
        /// `i32`.
        I32 = 7 => "i32",
        /// `i64`.
        I64 = 8 => "i64",
        /// `half::f16`.
        F16 = 9 => "f16",
        /// `half::bf16`.
        BF16 = 10 => "bf16",
        /// `f32`.
        F32 = 11 => "f32",
        /// `f64`.
        F64 = 12 => "f64",
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An element type collectives can reduce: `u8`–`u64`, `i8`–`i64`, `f16`, `bf16`, `f32`,
/// `f64`. Sealed: the set is fixed because every rank must agree on the wire id.
///
/// Integer sums and products wrap on overflow (they never panic); `f16` and `bf16` are
/// computed in `f32` and rounded once per pairwise step.
///
/// An integer average is exact: it is the true mean of the ranks' values truncated toward
/// zero, whatever their sum (three `u8` 255s average to 255), because every rank splits its
/// value into a quotient and a remainder by the world size and the two are summed apart
/// (the remainders in 64 bits), so nothing wraps before the division.
///
/// Floating-point results are the same bits on every CPU, whichever instruction set the
/// kernels run with: a NaN result is always the canonical quiet NaN (sign clear, quiet bit
/// set, payload zero: `f32` `0x7fc0_0000`, `f64` `0x7ff8_0000_0000_0000`, `f16` `0x7e00`,
/// `bf16` `0x7fc0`), since which operand's payload an operation keeps differs between
/// instruction sets and compilers. `Min` and `Max` ignore a NaN operand (IEEE 754
/// `minNum`/`maxNum`: only two NaNs give NaN) and order `-0.0` below `+0.0`.
pub trait Element: bytemuck::Pod + Send + Sync + sealed::Sealed {
    /// The wire id of the type.
    const DTYPE: DType;

    /// Whether this is an integer type (whose average is computed exactly, see above).
    #[doc(hidden)]
    const INTEGER: bool;

    /// `dst[i] = dst[i] op src[i]` for a built-in op (`Average` sums).
    #[doc(hidden)]
    fn reduce_slices(op: Builtin, dst: &mut [Self], src: &[Self]);

    /// `buf[i] = buf[i] / n`, the last step of an average.
    #[doc(hidden)]
    fn divide_slice(buf: &mut [Self], n: u32);

    /// An integer's split for an exact average over `n` ranks: `x = q * n + r` with
    /// `0 <= r < n` (floor division). Floats return `(x, 0)`; they never take this path.
    #[doc(hidden)]
    fn average_split(x: Self, n: u32) -> (Self, u64);

    /// The exact average over `n` ranks, truncated toward zero, from the wrapping sum of the
    /// quotients `q` and the exact sum of the remainders `r` of values split by `n * b`
    /// (`b` values per rank, whose per-rank sums are averaged: a multi-buffer allreduce).
    #[doc(hidden)]
    fn average_join(q: Self, r: u64, n: u32, b: u32) -> Self;

    /// `a + b`, wrapping (integers).
    #[doc(hidden)]
    fn wrapping_sum(a: Self, b: Self) -> Self;
}

/// The built-in reductions, as the kernels see them.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
            const INTEGER: bool = true;
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
            fn average_split(x: Self, n: u32) -> (Self, u64) {
                // |q| <= |x|, so q fits back; 0 <= r < n.
                let (x, n) = (i128::from(x), i128::from(n.max(1)));
                (x.div_euclid(n) as $t, x.rem_euclid(n) as u64)
            }
            fn average_join(q: Self, r: u64, n: u32, b: u32) -> Self {
                // The values were split by d = n * b, so their total is Q * d + R, where Q
                // is the true sum of the quotients and `q` is Q modulo 2^bits. F =
                // floor(total / d) = Q + floor(R / d) is a value of the type (a mean of
                // values of the type), so computing it modulo 2^bits (the wrapping cast)
                // gives it exactly. With R' = R mod d, total / n = F * b + R' / n: its floor
                // is exact in i128, and it is negative exactly when F is. Then truncate
                // toward zero, and wrap (a sum of b values per rank may not fit).
                let (n, b) = (u64::from(n.max(1)), u64::from(b.max(1)));
                let d = n * b;
                let f = (i128::from(q) + i128::from(r / d)) as $t;
                let rest = r % d;
                let floor = i128::from(f) * i128::from(b) + i128::from(rest / n);
                if rest % n != 0 && f < (0 as $t) {
                    // A negative mean with a fraction: floor is one below the truncation.
                    (floor + 1) as $t
                } else {
                    floor as $t
                }
            }
            fn wrapping_sum(a: Self, b: Self) -> Self {
                a.wrapping_add(b)
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
    ($t:ty, $d:ident, $reduce:ident, $canon:ident, $min:ident, $max:ident) => {
        /// The kernel at instruction-set level `isa`, one dispatch per op's loop (as
        /// `half_reduce` does): the float rules cost a few selects per element, which wider
        /// vectors pay for (f32 min measured 8 GB/s at the baseline, 14 with AVX-512).
        pub(crate) fn $reduce(isa: Isa, op: Builtin, dst: &mut [$t], src: &[$t]) {
            let arch = isa.arch();
            match op {
                Builtin::Sum => arch.dispatch(|| zip_with(dst, src, |a, b| $canon(a + b))),
                Builtin::Product => arch.dispatch(|| zip_with(dst, src, |a, b| $canon(a * b))),
                Builtin::Min => arch.dispatch(|| zip_with(dst, src, $min)),
                Builtin::Max => arch.dispatch(|| zip_with(dst, src, $max)),
            }
        }

        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            const INTEGER: bool = false;
            fn reduce_slices(op: Builtin, dst: &mut [Self], src: &[Self]) {
                $reduce(Isa::best(), op, dst, src);
            }
            fn divide_slice(buf: &mut [Self], n: u32) {
                let n = n.max(1) as $t;
                buf.iter_mut().for_each(|x| *x = $canon(*x / n));
            }
            fn average_split(x: Self, _: u32) -> (Self, u64) {
                (x, 0)
            }
            fn average_join(q: Self, _: u64, _: u32, _: u32) -> Self {
                q
            }
            fn wrapping_sum(a: Self, b: Self) -> Self {
                a + b
            }
        }
    };
}

/// Deterministic float rules, shared by every kernel path: one canonical NaN, and min/max
/// that order the signed zeros and ignore a single NaN.
///
/// Without them the bits of a result depend on the code the compiler emitted: x86's vector
/// and scalar instructions keep the first operand's NaN payload, but the compiler may swap
/// the operands of a commutative operation, and `f32::min(0.0, -0.0)` may return either
/// zero. (On an AVX-512 CPU the f16 sum of NaNs `0xfe3d` and `0xfd9a` gave `0xff9a` on one
/// path and `0xfe3d` on another.) Each rule is a compare and a select, so loops over them
/// still vectorise.
macro_rules! float_rules {
    ($t:ty, $canon:ident, $min:ident, $max:ident, $nan:expr) => {
        /// The canonical NaN if `x` is a NaN, else `x`.
        #[inline(always)]
        pub(crate) fn $canon(x: $t) -> $t {
            if x.is_nan() { <$t>::from_bits($nan) } else { x }
        }

        /// IEEE `minNum` with `-0 < +0`; two NaNs give the canonical NaN.
        #[inline(always)]
        pub(crate) fn $min(a: $t, b: $t) -> $t {
            // Selects only (no chain of branches), so that loops vectorise: replace a NaN
            // operand by the other one, then pick; equal operands are the same bits or the
            // two zeros, and OR keeps a sign bit.
            let a = if a.is_nan() { b } else { a };
            let b = if b.is_nan() { a } else { b };
            let pick = if b < a { b } else { a };
            let r = if a == b { <$t>::from_bits(a.to_bits() | b.to_bits()) } else { pick };
            $canon(r)
        }

        /// IEEE `maxNum` with `+0 > -0`; two NaNs give the canonical NaN.
        #[inline(always)]
        pub(crate) fn $max(a: $t, b: $t) -> $t {
            // As `min`; AND clears a sign bit.
            let a = if a.is_nan() { b } else { a };
            let b = if b.is_nan() { a } else { b };
            let pick = if b > a { b } else { a };
            let r = if a == b { <$t>::from_bits(a.to_bits() & b.to_bits()) } else { pick };
            $canon(r)
        }
    };
}

float_rules!(f32, canon32, min32, max32, 0x7FC0_0000);
float_rules!(f64, canon64, min64, max64, 0x7FF8_0000_0000_0000);

float_element!(f32, F32, f32_reduce, canon32, min32, max32);
float_element!(f64, F64, f64_reduce, canon64, min64, max64);

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

/// The instruction-set levels the half kernels are compiled for; [`Isa::best`] is the one
/// the CPU runs them with. Every level gives the same bits for every input (the tests run
/// each level this CPU has against the same reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Whatever the target's baseline is (SSE2 on x86-64).
    Portable,
    /// x86-64-v3: AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86-64-v4: AVX-512, whose f16 conversion instructions the f16 kernels use.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// The best `pulp` finds on another architecture (NEON on aarch64).
    #[cfg(not(target_arch = "x86_64"))]
    Native,
}

impl Isa {
    /// The best level this CPU has, detected once.
    pub(crate) fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| *Isa::available().last().unwrap_or(&Isa::Portable))
    }

    /// Every level this CPU can run, worst first.
    pub(crate) fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if pulp::x86::V3::try_new().is_some() {
                v.push(Isa::Avx2);
            }
            if pulp::x86::V4::try_new().is_some() {
                v.push(Isa::Avx512);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        v.push(Isa::Native);
        v
    }

    /// `pulp`'s dispatcher for this level.
    fn arch(self) -> pulp::Arch {
        match self {
            Isa::Portable => pulp::Arch::Scalar,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => pulp::x86::V3::try_new().map_or(pulp::Arch::Scalar, pulp::Arch::V3),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => pulp::x86::V4::try_new().map_or(pulp::Arch::Scalar, pulp::Arch::V4),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Native => pulp::Arch::new(),
        }
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

    use super::{Builtin, Isa, canon32, max32, min32};

    /// Elements per vector.
    const LANES: usize = 16;

    /// `dst = dst op src` (`op` given) or `dst = dst / n` (`op` `None`, `src` unused) over
    /// the whole 16-element blocks at the front of `dst`, at level `isa` (only
    /// [`Isa::Avx512`] has this path); returns how many elements were done, the rest is the
    /// caller's.
    pub(super) fn prefix(
        isa: Isa,
        op: Option<Builtin>,
        n: f32,
        dst: &mut [u16],
        src: &[u16],
    ) -> usize {
        if isa != Isa::Avx512 {
            return 0;
        }
        let Some(v4) = V4::try_new() else {
            return 0;
        };
        match op {
            Some(Builtin::Sum) => blocks(v4, dst, src, |a, b| canon32(a + b)),
            Some(Builtin::Product) => blocks(v4, dst, src, |a, b| canon32(a * b)),
            Some(Builtin::Min) => blocks(v4, dst, src, min32),
            Some(Builtin::Max) => blocks(v4, dst, src, max32),
            None => v4.vectorize(
                #[inline(always)]
                || {
                    let len = dst.len();
                    let mut chunks = dst.chunks_exact_mut(LANES);
                    for d in &mut chunks {
                        store(v4, d, widen(v4, d).map(|x| canon32(x / n)));
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
type Prefix = fn(Isa, Option<Builtin>, f32, &mut [u16], &[u16]) -> usize;

/// No hardware path: everything is left to the portable loop.
fn no_prefix(_: Isa, _: Option<Builtin>, _: f32, _: &mut [u16], _: &[u16]) -> usize {
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
/// Run through `pulp`'s dispatch at level `isa`, which compiles the loop once per
/// instruction set (SSE2, AVX2, AVX-512 on x86) : the conversions cost a dozen vector
/// operations per element each way, so the vector width decides whether the kernel keeps
/// up with memory. The results are the same on every path (IEEE f32 arithmetic, the float
/// rules above, and conversions exact by construction).
#[inline(always)]
fn zip_half(
    isa: Isa,
    dst: &mut [u16],
    src: &[u16],
    widen: impl Fn(u16) -> f32,
    narrow: impl Fn(f32) -> u16,
    f: impl Fn(f32, f32) -> f32,
) {
    isa.arch().dispatch(|| zip_with(dst, src, |a, b| narrow(f(widen(a), widen(b)))));
}

/// The portable half kernel: `dst = dst op src`, computed in f32 and rounded once per
/// element, bit for bit `from_f32(a.to_f32() op b.to_f32())` under the float rules.
///
/// It repeats [`reduce_with`]'s match on purpose: one `pulp` dispatch per op's loop. A
/// single dispatch around `reduce_with` measured bf16 sum at 2.8–3.0 GB/s instead of 7 (the
/// four loops no longer inline into the dispatched function, so nothing vectorises).
#[inline(always)]
fn half_reduce(
    isa: Isa,
    op: Builtin,
    dst: &mut [u16],
    src: &[u16],
    widen: impl Fn(u16) -> f32 + Copy,
    narrow: impl Fn(f32) -> u16 + Copy,
) {
    match op {
        Builtin::Sum => zip_half(isa, dst, src, widen, narrow, |a, b| canon32(a + b)),
        Builtin::Product => zip_half(isa, dst, src, widen, narrow, |a, b| canon32(a * b)),
        Builtin::Min => zip_half(isa, dst, src, widen, narrow, min32),
        Builtin::Max => zip_half(isa, dst, src, widen, narrow, max32),
    }
}

/// The portable half division `buf = buf / n`, rounded once per element.
#[inline(always)]
fn half_divide(
    isa: Isa,
    buf: &mut [u16],
    n: f32,
    widen: impl Fn(u16) -> f32,
    narrow: impl Fn(f32) -> u16,
) {
    isa.arch().dispatch(|| buf.iter_mut().for_each(|x| *x = narrow(canon32(widen(*x) / n))));
}

/// The half kernels at a given instruction-set level: what [`Element::reduce_slices`] and
/// [`Element::divide_slice`] run at [`Isa::best`], and what the tests run at every level.
macro_rules! half_kernels {
    ($reduce:ident, $divide:ident, $widen:path, $narrow:path, $prefix:expr) => {
        pub(crate) fn $reduce(isa: Isa, op: Builtin, dst: &mut [u16], src: &[u16]) {
            let done = $prefix(isa, Some(op), 1.0, dst, src);
            let (dst, src) = (&mut dst[done..], src.get(done..).unwrap_or_default());
            half_reduce(isa, op, dst, src, $widen, $narrow);
        }

        pub(crate) fn $divide(isa: Isa, buf: &mut [u16], n: u32) {
            let n = n.max(1) as f32;
            let done = $prefix(isa, None, n, buf, &[]);
            half_divide(isa, &mut buf[done..], n, $widen, $narrow);
        }
    };
}

half_kernels!(f16_reduce, f16_divide, conv::f16_to_f32, conv::f32_to_f16, F16_PREFIX);
half_kernels!(bf16_reduce, bf16_divide, conv::bf16_to_f32, conv::f32_to_bf16, no_prefix);

macro_rules! half_element {
    ($t:ty, $d:ident, $reduce:ident, $divide:ident) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            const INTEGER: bool = false;
            fn reduce_slices(op: Builtin, dst: &mut [Self], src: &[Self]) {
                $reduce(Isa::best(), op, bytemuck::cast_slice_mut(dst), bytemuck::cast_slice(src));
            }
            fn divide_slice(buf: &mut [Self], n: u32) {
                $divide(Isa::best(), bytemuck::cast_slice_mut(buf), n);
            }
            fn average_split(x: Self, _: u32) -> (Self, u64) {
                (x, 0)
            }
            fn average_join(q: Self, _: u64, _: u32, _: u32) -> Self {
                q
            }
            fn wrapping_sum(a: Self, b: Self) -> Self {
                <$t>::from_f32(a.to_f32() + b.to_f32())
            }
        }
    };
}

half_element!(f16, F16, f16_reduce, f16_divide);
half_element!(bf16, BF16, bf16_reduce, bf16_divide);

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

    /// The level the dispatcher picks. The rows that run these tests on emulated CPUs name the
    /// level they are for (`GLOO_EXPECT_ISA`), so a row cannot pass on another one; elsewhere
    /// the pick must be the best level detected.
    #[test]
    fn the_detected_level_is_the_expected_one() {
        match std::env::var("GLOO_EXPECT_ISA") {
            Ok(want) => assert_eq!(format!("{:?}", Isa::best()), want),
            Err(_) => assert_eq!(Some(&Isa::best()), Isa::available().last()),
        }
    }

    /// Each level runs on the dispatcher it names, so the tests that run every level really
    /// run the portable path, the AVX2 one and the AVX-512 one (a level mapped to another
    /// would give the same bits and hide that its own path went untested).
    #[test]
    fn each_level_runs_its_own_code() {
        for isa in Isa::available() {
            let arch = format!("{:?}", isa.arch());
            let want = match isa {
                Isa::Portable => "Scalar",
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => "V3",
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => "V4",
                #[cfg(not(target_arch = "x86_64"))]
                Isa::Native => continue,
            };
            assert!(arch.starts_with(want), "{isa:?} runs on {arch}");
        }
    }

    /// The AVX-512 f16 path does every whole 16-element block when the level is AVX-512
    /// (and the CPU has it), and nothing at any other level; what it does matches the
    /// portable kernels.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_f16_path_takes_whole_blocks_at_its_level_only() {
        let a: Vec<u16> = (0..37).map(|i| f16::from_f32(i as f32 * 0.25).to_bits()).collect();
        let b: Vec<u16> = (0..37).map(|i| f16::from_f32(3.0 - i as f32).to_bits()).collect();
        for isa in Isa::available() {
            for op in [Some(Builtin::Sum), Some(Builtin::Max), None] {
                let mut d = a.clone();
                let done = f16_avx512::prefix(isa, op, 3.0, &mut d, &b);
                if isa == Isa::Avx512 {
                    assert_eq!(done, 32, "{op:?}");
                    let mut want = a[..32].to_vec();
                    match op {
                        Some(op) => f16_reduce(Isa::Portable, op, &mut want, &b[..32]),
                        None => f16_divide(Isa::Portable, &mut want, 3),
                    }
                    assert_eq!(d[..32], want[..], "{op:?}");
                    assert_eq!(d[32..], a[32..], "{op:?}: the tail is the caller's");
                } else {
                    assert_eq!((done, &d), (0, &a), "{isa:?} {op:?}");
                }
            }
        }
    }

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

    /// The float rules stated on [`Element`], written out element by element as the
    /// reference every kernel path must match: a NaN result is the canonical NaN, min/max
    /// ignore one NaN and order -0 below +0.
    fn ref_op(op: Option<Builtin>, x: f32, y: f32, n: u32) -> f32 {
        let r = match op {
            Some(Builtin::Sum) => x + y,
            Some(Builtin::Product) => x * y,
            Some(b @ (Builtin::Min | Builtin::Max)) => match (x.is_nan(), y.is_nan()) {
                (true, true) => f32::NAN,
                (true, false) => y,
                (false, true) => x,
                (false, false) if x == y => {
                    // Equal: the same value, or +0 and -0.
                    let neg = if x.is_sign_negative() { x } else { y };
                    let pos = if x.is_sign_negative() { y } else { x };
                    if b == Builtin::Min { neg } else { pos }
                }
                (false, false) => {
                    if (x < y) == (b == Builtin::Min) {
                        x
                    } else {
                        y
                    }
                }
            },
            None => x / n.max(1) as f32,
        };
        if r.is_nan() { f32::from_bits(0x7FC0_0000) } else { r }
    }

    /// The element-at-a-time reference the half kernels must match bit for bit: widen with
    /// `half`, compute [`ref_op`] in f32, round back with `half`. `black_box` keeps each
    /// element a scalar computation of its own.
    fn half_reference(
        op: Option<Builtin>,
        a: u16,
        b: u16,
        n: u32,
        to_f32: fn(u16) -> f32,
        from_f32: fn(f32) -> u16,
    ) -> u16 {
        let (x, y) = (std::hint::black_box(to_f32(a)), std::hint::black_box(to_f32(b)));
        from_f32(std::hint::black_box(ref_op(op, x, y, n)))
    }

    const OPS: [Option<Builtin>; 5] =
        [Some(Builtin::Sum), Some(Builtin::Product), Some(Builtin::Min), Some(Builtin::Max), None];

    /// A half type's kernels at a given level, and its `half` conversions for the reference.
    struct HalfKind {
        dtype: DType,
        reduce: fn(Isa, Builtin, &mut [u16], &[u16]),
        divide: fn(Isa, &mut [u16], u32),
        to_f32: fn(u16) -> f32,
        from_f32: fn(f32) -> u16,
    }

    const F16: HalfKind = HalfKind {
        dtype: DType::F16,
        reduce: f16_reduce,
        divide: f16_divide,
        to_f32: f16_to_f32_half,
        from_f32: f16_from_f32_half,
    };
    const BF16: HalfKind = HalfKind {
        dtype: DType::BF16,
        reduce: bf16_reduce,
        divide: bf16_divide,
        to_f32: bf16_to_f32_half,
        from_f32: bf16_from_f32_half,
    };

    /// Run the kernel of `kind` for `op` (`None`: divide by `n`) over bit patterns at every
    /// instruction-set level this CPU has, and through the public `Element` path, comparing
    /// every element with [`half_reference`]; the first mismatch names the level, the op and
    /// the operands.
    fn check_half_kernel(kind: &HalfKind, op: Option<Builtin>, dst: &[u16], src: &[u16], n: u32) {
        let levels = Isa::available();
        assert!(levels.contains(&Isa::best()), "the best level {:?} is tested", Isa::best());
        for isa in levels {
            let mut out = dst.to_vec();
            match op {
                Some(op) => (kind.reduce)(isa, op, &mut out, src),
                None => (kind.divide)(isa, &mut out, n),
            }
            compare_half(kind, isa, op, dst, src, n, &out);
        }
        let mut out = dst.to_vec();
        if kind.dtype == DType::F16 {
            let mut typed: Vec<f16> = bytemuck::cast_slice(&out).to_vec();
            let s: &[f16] = bytemuck::cast_slice(src);
            match op {
                Some(op) => f16::reduce_slices(op, &mut typed, s),
                None => f16::divide_slice(&mut typed, n),
            }
            out.copy_from_slice(bytemuck::cast_slice(&typed));
        } else {
            let mut typed: Vec<bf16> = bytemuck::cast_slice(&out).to_vec();
            let s: &[bf16] = bytemuck::cast_slice(src);
            match op {
                Some(op) => bf16::reduce_slices(op, &mut typed, s),
                None => bf16::divide_slice(&mut typed, n),
            }
            out.copy_from_slice(bytemuck::cast_slice(&typed));
        }
        compare_half(kind, Isa::best(), op, dst, src, n, &out);
    }

    /// Compare a kernel's output with [`half_reference`] element by element.
    fn compare_half(
        kind: &HalfKind,
        isa: Isa,
        op: Option<Builtin>,
        dst: &[u16],
        src: &[u16],
        n: u32,
        out: &[u16],
    ) {
        let dtype = kind.dtype;
        for (i, &got) in out.iter().enumerate() {
            let want = half_reference(op, dst[i], src[i], n, kind.to_f32, kind.from_f32);
            assert_eq!(
                got, want,
                "{dtype} {op:?} (n = {n}) at {isa:?} of {:#06x} and {:#06x}: got {got:#06x}, \
                 want {want:#06x}",
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
                check_half_kernel(&F16, op, &dst, &src, n);
                check_half_kernel(&BF16, op, &dst, &src, n);
            }
        }
    }

    /// Every bit pattern as `dst`, against random partners and against each edge value;
    /// and every pair of edge values, at an odd length.
    #[test]
    fn half_kernels_match_the_reference_for_every_bit_pattern() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        for op in OPS {
            for (seed, n) in [(1u64, 3u32), (2, 7)] {
                let src = patterns(seed, all.len());
                check_half_kernel(&F16, op, &all, &src, n);
                check_half_kernel(&BF16, op, &all, &src, n);
            }
            for (kind, edges) in [(&F16, F16_EDGES), (&BF16, BF16_EDGES)] {
                for e in edges {
                    check_half_kernel(kind, op, &all, &vec![e; all.len()], 1);
                }
                let dst: Vec<u16> = edges.iter().flat_map(|&a| edges.map(|_| a)).collect();
                let src: Vec<u16> = edges.iter().flat_map(|_| edges).collect();
                // 255 of the 256 pairs: a length no vector width divides.
                check_half_kernel(kind, op, &dst[..255], &src[..255], 5);
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

    /// f32 kernels against [`ref_op`] over random bit patterns and the edge values (NaNs
    /// with payloads and signs, signed zeros, infinities), every op.
    #[test]
    fn f32_kernels_follow_the_float_rules() {
        const EDGES: [u32; 12] = [
            0x0000_0000,
            0x8000_0000,
            0x7F80_0000,
            0xFF80_0000,
            0x7FC0_0000,
            0xFFC0_0000,
            0x7F80_0001,
            0xFFA5_5A5A,
            0x3F80_0000,
            0xBF80_0000,
            0x0000_0001,
            0x7F7F_FFFF,
        ];
        let mut g = gloo_testing::rng::SplitMix(7);
        let mut a: Vec<u32> = (0..4000).map(|_| g.next_u64() as u32).collect();
        let mut b: Vec<u32> = (0..4000).map(|_| g.next_u64() as u32).collect();
        for x in EDGES {
            for y in EDGES {
                a.push(x);
                b.push(y);
            }
        }
        let src: Vec<f32> = b.iter().map(|&x| f32::from_bits(x)).collect();
        for op in OPS {
            // Every level this CPU has, then the public path (`None`: the best level).
            for isa in Isa::available().into_iter().map(Some).chain([None]) {
                let mut out: Vec<f32> = a.iter().map(|&x| f32::from_bits(x)).collect();
                match (op, isa) {
                    (Some(op), Some(isa)) => f32_reduce(isa, op, &mut out, &src),
                    (Some(op), None) => f32::reduce_slices(op, &mut out, &src),
                    (None, _) => f32::divide_slice(&mut out, 3),
                }
                for (i, o) in out.iter().enumerate() {
                    let want = ref_op(op, f32::from_bits(a[i]), src[i], 3);
                    assert_eq!(
                        o.to_bits(),
                        want.to_bits(),
                        "f32 {op:?} at {isa:?} of {:#010x} and {:#010x}",
                        a[i],
                        b[i]
                    );
                }
            }
        }
    }

    #[test]
    fn f64_kernels_give_one_nan_and_order_the_zeros() {
        let nan_a = f64::from_bits(0xFFF8_0000_0000_1234);
        let nan_b = f64::from_bits(0x7FF0_0000_0000_0001);
        let canon = 0x7FF8_0000_0000_0000u64;
        let neg0 = (-0.0f64).to_bits();
        // Each case repeated past every vector width, so vector loops and tails both run.
        let cases: [(Builtin, f64, f64, u64); 11] = [
            (Builtin::Sum, nan_a, nan_b, canon),
            (Builtin::Sum, 1.0, nan_b, canon),
            (Builtin::Sum, nan_a, 2.0, canon),
            (Builtin::Sum, f64::INFINITY, f64::NEG_INFINITY, canon),
            (Builtin::Sum, 0.0, -0.0, 0),
            (Builtin::Min, 0.0, -0.0, neg0),
            (Builtin::Min, -0.0, 0.0, neg0),
            (Builtin::Min, nan_a, 5.0, 5.0f64.to_bits()),
            (Builtin::Min, nan_a, nan_b, canon),
            (Builtin::Max, -0.0, 0.0, 0),
            (Builtin::Max, 3.0, nan_b, 3.0f64.to_bits()),
        ];
        for isa in Isa::available() {
            for (op, x, y, want) in cases {
                let mut d = vec![x; 37];
                f64_reduce(isa, op, &mut d, &vec![y; 37]);
                for r in d {
                    assert_eq!(r.to_bits(), want, "{op:?} at {isa:?} of {x:?} and {y:?}");
                }
            }
        }
    }

    /// The average split and join give the exact mean truncated toward zero, for values
    /// whose sum overflows the type, for every integer type and several world sizes.
    #[test]
    fn integer_average_is_exact() {
        fn check<T: Element + Into<i128> + std::fmt::Debug>(values: &[T]) {
            let n = values.len() as u32;
            let mut q = T::zeroed();
            let mut r = 0u64;
            for &v in values {
                let (vq, vr) = T::average_split(v, n);
                q = T::wrapping_sum(q, vq);
                r += vr;
            }
            let got: i128 = T::average_join(q, r, n, 1).into();
            let sum: i128 = values.iter().map(|&v| v.into()).sum();
            assert_eq!(got, sum / i128::from(n), "average of {values:?}");
        }
        // `b` values per rank: the truncated mean of the per-rank sums, wrapped into the
        // type when it does not fit (two u8 ranks of 255 + 255 + 10 average to 520 → 8).
        fn check_many<T: Element + Into<i128> + std::fmt::Debug + PartialEq>(
            ranks: &[&[T]],
            wrap: fn(i128) -> T,
        ) {
            let (n, b) = (ranks.len() as u32, ranks[0].len() as u32);
            let mut q = T::zeroed();
            let mut r = 0u64;
            for &v in ranks.iter().flat_map(|r| r.iter()) {
                let (vq, vr) = T::average_split(v, n * b);
                q = T::wrapping_sum(q, vq);
                r += vr;
            }
            let got = T::average_join(q, r, n, b);
            let sum: i128 = ranks.iter().flat_map(|r| r.iter()).map(|&v| v.into()).sum();
            assert_eq!(got, wrap(sum / i128::from(n)), "average of {ranks:?}");
        }
        check_many::<u8>(&[&[255, 255, 10], &[255, 255, 10]], |v| v as u8);
        check_many::<i8>(&[&[100, 50, -20], &[101, 50, -20]], |v| v as i8);
        check_many::<i8>(&[&[-100, -50, -20], &[-101, -50, -20]], |v| v as i8);
        check_many::<i8>(&[&[-128, -128], &[127, -1], &[5, 3]], |v| v as i8);
        check_many::<u64>(&[&[u64::MAX, u64::MAX], &[u64::MAX, 3]], |v| v as u64);
        check_many::<i64>(&[&[i64::MIN, i64::MIN], &[i64::MIN, 1]], |v| v as i64);
        check(&[255u8, 255, 255]);
        check(&[255u8, 254]);
        check(&[-128i8, -127]);
        check(&[-128i8, 127, -1]);
        check(&[127i8, 127, 127, -128]);
        check(&[u64::MAX, u64::MAX, 1]);
        check(&[i64::MIN, i64::MIN, i64::MAX]);
        check(&[i64::MIN, 1]);
        let mut g = gloo_testing::rng::SplitMix(3);
        for n in 1..12 {
            for _ in 0..200 {
                let v: Vec<i16> = (0..n).map(|_| g.next_u64() as i16).collect();
                check(&v);
                let v: Vec<u32> = (0..n).map(|_| g.next_u64() as u32).collect();
                check(&v);
                let v: Vec<i64> = (0..n).map(|_| g.next_u64() as i64).collect();
                check(&v);
                let v: Vec<u8> = (0..n).map(|_| g.next_u64() as u8).collect();
                check(&v);
            }
        }
        // 300 ranks of u8: the quotient is 0 and the remainders carry everything.
        check(&[200u8; 300]);
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
        // Dividing, misaligned and aligned (the end of an average).
        divide_bytes::<f32>(&mut store[1..13], 2);
        let out: Vec<f32> =
            store[1..13].chunks_exact(4).map(bytemuck::pod_read_unaligned).collect();
        assert_eq!(out, [1.25, 1.5, 0.0]);
        let mut aligned = [9i32, -7, 4];
        divide_bytes::<i32>(bytemuck::cast_slice_mut(&mut aligned), 2);
        assert_eq!(aligned, [4, -3, 2]);
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
