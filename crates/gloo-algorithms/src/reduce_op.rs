//! Reduction operators.

use std::fmt;

use crate::element::{Builtin, Element};

/// How a reducing collective combines elements.
///
/// Built-in ops are associative and commutative. A [`Custom`](ReduceOp::Custom) closure
/// computes `dst[i] = dst[i] op src[i]` over equal-length slices and must be associative and
/// commutative too (the algorithms group and order operands differently); every rank must
/// pass the same closure, which the fingerprint cannot check beyond "custom".
///
/// ```
/// use gloo_algorithms::ReduceOp;
/// let bitwise_or = |dst: &mut [u32], src: &[u32]| {
///     dst.iter_mut().zip(src).for_each(|(d, s)| *d |= *s)
/// };
/// let op = ReduceOp::Custom(&bitwise_or);
/// assert_eq!(op.name(), "custom");
/// assert_eq!(ReduceOp::<u32>::Sum.name(), "sum");
/// ```
#[non_exhaustive]
pub enum ReduceOp<'f, T> {
    /// Sum (integers wrap).
    Sum,
    /// Product (integers wrap).
    Product,
    /// Minimum. A NaN operand is ignored (only NaNs everywhere give NaN), and `-0.0` is
    /// below `+0.0`. See [`Element`] for the float rules.
    Min,
    /// Maximum. A NaN operand is ignored, and `+0.0` is above `-0.0`.
    Max,
    /// The mean over the ranks. Floats: the sum divided by the world size at the end.
    /// Integers: exact (the true mean, truncated toward zero, never wrapped on the way; see
    /// [`Element`]). With [`allreduce_many`](crate::Group::allreduce_many), the result is the
    /// mean over the ranks of each rank's sum of its buffers (the division is by the world
    /// size only); for integers it is exact and truncated, and wraps into the type only when
    /// it does not fit.
    Average,
    /// A user closure, `dst = dst op src`.
    Custom(&'f dyn Fn(&mut [T], &[T])),
}

impl<T> Clone for ReduceOp<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ReduceOp<'_, T> {}

impl<T> fmt::Debug for ReduceOp<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<T> ReduceOp<'_, T> {
    /// The op's name (`"sum"`, `"custom"`, ...).
    pub fn name(&self) -> &'static str {
        op_name(self.id())
    }

    /// The wire id of the op, for fingerprints.
    pub(crate) fn id(&self) -> u8 {
        match self {
            ReduceOp::Sum => 1,
            ReduceOp::Product => 2,
            ReduceOp::Min => 3,
            ReduceOp::Max => 4,
            ReduceOp::Average => 5,
            ReduceOp::Custom(_) => 6,
        }
    }
}

/// The name of an op wire id (0 means "no op").
pub(crate) fn op_name(id: u8) -> &'static str {
    match id {
        0 => "none",
        1 => "sum",
        2 => "product",
        3 => "min",
        4 => "max",
        5 => "average",
        6 => "custom",
        _ => "unknown",
    }
}

impl<T: Element> ReduceOp<'_, T> {
    /// `dst = dst op src` over bytes holding whole `T`s.
    pub(crate) fn apply_bytes(&self, dst: &mut [u8], src: &[u8]) {
        match self {
            ReduceOp::Sum | ReduceOp::Average => {
                crate::element::reduce_bytes::<T>(Builtin::Sum, dst, src)
            }
            ReduceOp::Product => crate::element::reduce_bytes::<T>(Builtin::Product, dst, src),
            ReduceOp::Min => crate::element::reduce_bytes::<T>(Builtin::Min, dst, src),
            ReduceOp::Max => crate::element::reduce_bytes::<T>(Builtin::Max, dst, src),
            ReduceOp::Custom(f) => crate::element::with_typed::<T>(dst, src, *f),
        }
    }

    /// `dst = dst op src` over typed slices (the local part of a multi-buffer allreduce).
    pub(crate) fn apply(&self, dst: &mut [T], src: &[T]) {
        self.apply_bytes(bytemuck::cast_slice_mut(dst), bytemuck::cast_slice(src));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(d: &mut [i32], s: &[i32]) {
        d.iter_mut().zip(s).for_each(|(d, s)| *d -= s);
    }

    /// Every op has its own wire id and name (fingerprints carry the id, errors the name),
    /// the name of an id is the op's, and `Debug` prints it.
    #[test]
    fn ids_and_names_are_distinct_and_agree() {
        let ops: [ReduceOp<'_, i32>; 6] = [
            ReduceOp::Sum,
            ReduceOp::Product,
            ReduceOp::Min,
            ReduceOp::Max,
            ReduceOp::Average,
            ReduceOp::Custom(&sub),
        ];
        let names = ["sum", "product", "min", "max", "average", "custom"];
        for (i, (op, name)) in ops.iter().zip(names).enumerate() {
            assert_eq!(op.id(), i as u8 + 1, "{name}");
            assert_eq!(op.name(), name);
            assert_eq!(op_name(op.id()), name);
            assert_eq!(format!("{op:?}"), name);
        }
        assert_eq!(op_name(0), "none");
        assert_eq!(op_name(7), "unknown");
        assert_eq!(op_name(u8::MAX), "unknown");
    }

    /// `apply` reduces typed slices with each op (`Average` sums: the division comes at the
    /// end of the collective); a custom op runs the caller's closure.
    #[test]
    fn apply_reduces_with_each_op() {
        let cases: [(ReduceOp<'_, i32>, [i32; 3]); 6] = [
            (ReduceOp::Sum, [7, -1, 0]),
            (ReduceOp::Product, [10, -6, 0]),
            (ReduceOp::Min, [2, -3, 0]),
            (ReduceOp::Max, [5, 2, 0]),
            (ReduceOp::Average, [7, -1, 0]),
            (ReduceOp::Custom(&sub), [3, 5, 0]),
        ];
        for (op, want) in cases {
            let mut d = [5, 2, 0];
            op.apply(&mut d, &[2, -3, 0]);
            assert_eq!(d, want, "{op:?}");
        }
    }
}
