//! Exact integer averages.
//!
//! Summing integers and dividing at the end wraps first: three `u8` 255s summed to 253 and
//! "averaged" to 84. Instead each rank splits every value `x` by the world size `n` into a
//! quotient and a remainder, `x = q * n + r` with `0 <= r < n`, and the collective reduces
//! records of `(q, r)`: the quotients summed in the element type (wrapping is harmless, see
//! [`Element::average_join`]) and the remainders summed exactly in a `u64` (their total is
//! below `n²`). The mean is then `Q + R / n`, truncated toward zero. It is one collective
//! call over records of `size_of::<T>() + 8` bytes, so the call counters, fingerprints and
//! algorithms are those of any other call.

use crate::element::Element;

/// The bytes of one record: the quotient's, then the remainder as a little-endian `u64`.
pub(crate) fn record<T: Element>() -> usize {
    std::mem::size_of::<T>() + 8
}

/// [`pack_into`] a new vector.
#[cfg(test)]
pub(crate) fn pack<T: Element>(values: &[T], more: &[&mut [T]], n: u32) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * record::<T>()];
    pack_into(values, more, n, &mut out);
    out
}

/// The divisor values are split by when a rank has `buffers` values per element: `n ×
/// buffers`, so that the quotients' true total stays a mean of values of the type (see
/// [`Element::average_join`]); `None` if it does not fit a `u32`.
pub(crate) fn divisor(n: u32, buffers: usize) -> Option<u32> {
    u32::try_from(buffers).ok().and_then(|b| n.checked_mul(b))
}

/// Records for `values` averaged over `n` ranks, into `out` (`values.len()` records long;
/// scratch a call keeps between calls): each value split by [`divisor`], and the splits of
/// the values at the same index in every slice of `more` added in (a multi-buffer allreduce
/// averages the sum of a rank's buffers). The caller checked that the divisor fits.
pub(crate) fn pack_into<T: Element>(values: &[T], more: &[&mut [T]], n: u32, out: &mut [u8]) {
    let es = std::mem::size_of::<T>();
    let d = divisor(n, 1 + more.len()).unwrap_or(u32::MAX);
    for (i, (rec, &v)) in out.chunks_exact_mut(record::<T>()).zip(values).enumerate() {
        let (mut q, mut r) = T::average_split(v, d);
        for m in more {
            let (mq, mr) = T::average_split(m[i], d);
            q = T::wrapping_sum(q, mq);
            // Below buffers × d per rank and element: no overflow for any real job.
            r = r.saturating_add(mr);
        }
        rec[..es].copy_from_slice(bytemuck::bytes_of(&q));
        rec[es..].copy_from_slice(&r.to_le_bytes());
    }
}

/// `dst = dst + src` over whole records (the reduction the collective runs).
pub(crate) fn sum<T: Element>(dst: &mut [u8], src: &[u8]) {
    let es = std::mem::size_of::<T>();
    for (d, s) in dst.chunks_exact_mut(record::<T>()).zip(src.chunks_exact(record::<T>())) {
        let q = T::wrapping_sum(
            bytemuck::pod_read_unaligned(&d[..es]),
            bytemuck::pod_read_unaligned(&s[..es]),
        );
        let r = remainder(d).saturating_add(remainder(s));
        d[..es].copy_from_slice(bytemuck::bytes_of(&q));
        d[es..].copy_from_slice(&r.to_le_bytes());
    }
}

/// The means of the reduced records into `out` (as many as there are records), for
/// `buffers` values per rank and element.
pub(crate) fn unpack<T: Element>(records: &[u8], out: &mut [T], n: u32, buffers: usize) {
    let es = std::mem::size_of::<T>();
    let b = u32::try_from(buffers).unwrap_or(u32::MAX);
    for (o, rec) in out.iter_mut().zip(records.chunks_exact(record::<T>())) {
        *o = T::average_join(bytemuck::pod_read_unaligned(&rec[..es]), remainder(rec), n, b);
    }
}

fn remainder(rec: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&rec[rec.len() - 8..]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packing every rank's values, summing the records pairwise in any grouping, and
    /// unpacking gives the exact truncated mean.
    #[test]
    fn packed_records_average_exactly() {
        let ranks: Vec<Vec<i8>> =
            vec![vec![127, -128, -1, 5], vec![127, -128, 0, 6], vec![127, -127, 0, 6]];
        let n = ranks.len() as u32;
        let mut acc = pack(&ranks[0], &[], n);
        for r in &ranks[1..] {
            sum::<i8>(&mut acc, &pack(r, &[], n));
        }
        let mut out = [0i8; 4];
        unpack(&acc, &mut out, n, 1);
        assert_eq!(out, [127, -127, 0, 5]);
    }

    /// Records of wider types (the remainder sits after a quotient of 2, 4 or 8 bytes), with
    /// sums that would overflow the type: still the exact mean truncated toward zero.
    #[test]
    fn wide_records_average_exactly() {
        fn mean_of<T: Element + std::fmt::Debug>(ranks: &[[T; 2]]) -> [T; 2] {
            let n = ranks.len() as u32;
            let mut acc = pack(&ranks[0], &[], n);
            for r in &ranks[1..] {
                sum::<T>(&mut acc, &pack(r, &[], n));
            }
            let mut out = [<T as bytemuck::Zeroable>::zeroed(); 2];
            unpack(&acc, &mut out, n, 1);
            out
        }
        assert_eq!(mean_of(&[[u16::MAX, 7], [u16::MAX, 8], [u16::MAX - 1, 9]]), [u16::MAX - 1, 8]);
        assert_eq!(mean_of(&[[i32::MIN, 5], [i32::MIN, -6], [i32::MIN + 2, 4]]), [i32::MIN + 1, 1]);
        assert_eq!(mean_of(&[[u64::MAX, 1], [u64::MAX - 3, 2]]), [u64::MAX - 2, 1]);
    }

    #[test]
    fn a_rank_with_several_buffers_averages_their_sum() {
        let mut b = [255u8, 255];
        let acc = pack(&[255u8, 1], &[&mut b], 2);
        let mut out = [0u8; 2];
        unpack(&acc, &mut out, 2, 2);
        assert_eq!(out, [255, 128]);
    }
}
