//! Havoc's randomness: a small seeded generator, one stream per rank and per pipe.

/// The most progress rounds of its reader havoc holds written bytes back for.
pub(super) const MAX_DELAY_ROUNDS: u64 = 4;

/// A small, seeded generator (SplitMix64): enough randomness for havoc, no dependency.
pub(super) struct SplitMix(u64);

impl SplitMix {
    pub(super) fn new(seed: u64, stream: u64) -> SplitMix {
        let mut g = SplitMix(seed ^ (stream + 1).wrapping_mul(0xA076_1D64_78BD_642F));
        g.next();
        g
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// A piece of `n` bytes: anything from 1 to `n`.
    pub(super) fn piece(&mut self, n: usize) -> usize {
        if n > 1 { 1 + self.below(n as u64) as usize } else { n }
    }
}
