//! The small value types every layer shares.

use std::fmt;

/// A process's index in its group, `0..size`.
///
/// A newtype rather than a `u32` alias so that a rank can never be confused with a count,
/// a slot or a byte length.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rank(pub u32);

impl Rank {
    /// The rank as an index into per-rank tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rank {}", self.0)
    }
}

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u32> for Rank {
    fn from(r: u32) -> Self {
        Rank(r)
    }
}

/// Names one message stream between two ranks.
///
/// Sends and receives on the same `(peer, slot)` pair match first-in, first-out. Collectives
/// derive their slots from a tag and a step ([`Slot::new`]) so that concurrent collectives
/// with distinct tags never see each other's messages.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Slot(pub u64);

impl Slot {
    /// A slot for step `step` of the operation tagged `tag`: the tag in the high 32 bits,
    /// the step in the low 32.
    pub const fn new(tag: u32, step: u32) -> Slot {
        Slot(((tag as u64) << 32) | step as u64)
    }

    /// The tag half of a slot made by [`Slot::new`].
    pub const fn tag(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The step half of a slot made by [`Slot::new`].
    pub const fn step(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {}:{}", self.tag(), self.step())
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An opaque description of the operation a message belongs to, compared by the receiver.
///
/// The transport does not interpret it: a collective layer encodes what it needs (kind,
/// element type, count, root, sequence number) and decodes it again for an error message.
/// When a receive that carries a fingerprint matches a message whose fingerprint differs, the
/// receive fails with [`Error::Mismatch`](crate::Error::Mismatch) instead of delivering data
/// into a buffer laid out for another operation.
///
/// Layout: bytes `0..8` are the **epoch** (little-endian `u64`, the collective layer's call
/// counter for the tag), bytes `8..32` the description of the call. Every transport applies
/// three rules, so that ranks that disagree get `Mismatch` rather than a hang:
///
/// 1. A receive with fingerprint `F` that matches (FIFO on `(peer, slot)`) a message whose
///    fingerprint is not `F` fails with `Mismatch`; the message is consumed.
/// 2. While a receive with `F` from peer `P` on slot `S` is pending, an unmatched message from
///    `P` on another slot with the same [tag](Slot::tag) whose fingerprint has the same epoch
///    as `F` but differs from `F` fails the receive with `Mismatch` at once. (Messages of one
///    call on one tag travel in order per pair, so a different description at the same epoch
///    can only mean the two ranks called different collectives.)
/// 3. At the deadline, a pending receive with `F` from `P` fails with `Mismatch` instead of
///    `Timeout` when any unmatched message from `P` (any slot) carries a fingerprint with the
///    same epoch as `F` but differing from it (this catches ranks that used different tags).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint(pub [u8; Fingerprint::LEN]);

impl Fingerprint {
    /// The size of a fingerprint on the wire.
    pub const LEN: usize = 32;

    /// The epoch: the first eight bytes as a little-endian `u64`.
    pub fn epoch(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(b)
    }
}

#[cfg(any(test, feature = "conformance"))]
impl Fingerprint {
    /// A fingerprint of epoch `epoch` whose other bytes are all `fill`: for tests, which need
    /// fingerprints that differ in their epoch or in the rest.
    pub(crate) fn with_epoch(epoch: u64, fill: u8) -> Fingerprint {
        let mut b = [fill; Fingerprint::LEN];
        b[..8].copy_from_slice(&epoch.to_le_bytes());
        Fingerprint(b)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprint(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}
