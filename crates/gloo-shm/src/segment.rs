//! A pair's shared segment: its layout, creation, the checks on attaching, and the ring
//! memory over it.
//!
//! ```text
//! offset            what                                         stored by
//! 0                 magic, version, ring capacity                the creator, once
//! 128               side 0: heartbeat, sleeping, closed          side 0 (sleeping: both)
//! 256               side 1: heartbeat, sleeping, closed          side 1 (sleeping: both)
//! 384               ring 0 (side 0 -> side 1): tail | head | lend | data
//! 384 + R           ring 1 (side 1 -> side 0)
//! R = 512 + capacity: tail at +0, head at +128, lend at +256, data at +512
//! ```
//!
//! Every word that one side stores and the other loads sits in its own 128-byte block (two
//! cache lines, against the adjacent-line prefetcher), so the producer's `tail` and the
//! consumer's `head` never share a line. The creator (side 0, the lower rank) writes the
//! header before it sends the segment; the attacher checks the header once and afterwards
//! uses only its own copy of the capacity, so later scribbles on the header change nothing.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ring::RingMem;
use crate::sys::mapping::Mapping;
use crate::sys::memfd::{self, Refusal};

/// "GLOOSHM1", little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"GLOOSHM1");
/// The layout version; a peer with another one is refused at the handshake.
pub(crate) const VERSION: u64 = 1;

const BLOCK: usize = 128;
const SIDES: usize = BLOCK;
const RINGS: usize = 3 * BLOCK;
const RING_TAIL: usize = 0;
const RING_HEAD: usize = BLOCK;
const RING_LEND: usize = 2 * BLOCK;
const RING_DATA: usize = 4 * BLOCK;

/// The smallest ring capacity accepted.
pub const MIN_CAPACITY: usize = 4096;
/// The largest ring capacity accepted.
pub const MAX_CAPACITY: usize = 1 << 30;

/// Whether `capacity` is a ring capacity this layout accepts.
pub(crate) fn valid_capacity(capacity: u64) -> bool {
    capacity.is_power_of_two() && (MIN_CAPACITY as u64..=MAX_CAPACITY as u64).contains(&capacity)
}

/// The segment's size for rings of `capacity` bytes.
pub(crate) fn segment_len(capacity: usize) -> usize {
    RINGS + 2 * (RING_DATA + capacity)
}

/// Why attaching a received segment failed.
#[derive(Debug)]
pub(crate) enum AttachError {
    /// The file failed the checks (owner, mode, seals, size).
    Refused(Refusal),
    /// The header does not describe the agreed layout.
    Header(String),
    /// A system call failed.
    Io(io::Error),
}

/// A mapped segment.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    map: Arc<Mapping>,
    capacity: usize,
}

impl Segment {
    /// Create a segment for rings of `capacity` bytes (checked with [`valid_capacity`]):
    /// a sealed memfd, mode 0600, mapped, header written. Returns the file to send.
    pub(crate) fn create(capacity: usize) -> io::Result<(Segment, File)> {
        if !valid_capacity(capacity as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ring capacity {capacity} is not a power of two in [{MIN_CAPACITY}, {MAX_CAPACITY}]"
                ),
            ));
        }
        let len = segment_len(capacity);
        let file = memfd::create("gloo-shm", len as u64)?;
        let map = Mapping::map(&file, len)?;
        map.u64_at(8).store(VERSION, Ordering::Relaxed);
        map.u64_at(16).store(capacity as u64, Ordering::Relaxed);
        // Release, and sent after: the attacher's recvmsg happens after this store anyway.
        map.u64_at(0).store(MAGIC, Ordering::Release);
        Ok((Segment { map: Arc::new(map), capacity }, file))
    }

    /// Check and map a segment received from the peer, for rings of `capacity` bytes (the
    /// value agreed in the handshake, already checked with [`valid_capacity`]).
    pub(crate) fn attach(file: &File, capacity: usize) -> Result<Segment, AttachError> {
        let len = segment_len(capacity);
        memfd::check_received(file, len as u64)
            .map_err(AttachError::Io)?
            .map_err(AttachError::Refused)?;
        let map = Mapping::map(file, len).map_err(AttachError::Io)?;
        let (magic, version, cap) = (
            map.u64_at(0).load(Ordering::Acquire),
            map.u64_at(8).load(Ordering::Relaxed),
            map.u64_at(16).load(Ordering::Relaxed),
        );
        if magic != MAGIC || version != VERSION || cap != capacity as u64 {
            return Err(AttachError::Header(format!(
                "magic {magic:#x}, version {version}, capacity {cap}; want {MAGIC:#x}, {VERSION}, {capacity}"
            )));
        }
        Ok(Segment { map: Arc::new(map), capacity })
    }

    /// The ring that side `writer` (0 or 1) writes into.
    pub(crate) fn ring(&self, writer: usize) -> MappedRing {
        assert!(writer < 2);
        MappedRing {
            map: self.map.clone(),
            base: RINGS + writer * (RING_DATA + self.capacity),
            capacity: self.capacity,
        }
    }

    /// The words of side `side` (0 or 1).
    pub(crate) fn side(&self, side: usize) -> SideWords {
        assert!(side < 2);
        SideWords { map: self.map.clone(), base: SIDES + side * BLOCK }
    }

    /// The raw mapping, for a rogue view in tests.
    #[cfg(feature = "rogue")]
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }
}

/// One side's words: its heartbeat (bumped by its monitor thread), whether it sleeps (set by
/// it, cleared by whoever wakes it), and whether it closed its end cleanly.
#[derive(Clone, Debug)]
pub(crate) struct SideWords {
    map: Arc<Mapping>,
    base: usize,
}

impl SideWords {
    pub(crate) fn heartbeat(&self) -> &AtomicU64 {
        self.map.u64_at(self.base)
    }
    pub(crate) fn sleeping(&self) -> &AtomicU64 {
        self.map.u64_at(self.base + 8)
    }
    pub(crate) fn closed(&self) -> &AtomicU64 {
        self.map.u64_at(self.base + 16)
    }
}

/// One ring's memory inside a mapped segment.
#[derive(Clone, Debug)]
pub struct MappedRing {
    map: Arc<Mapping>,
    base: usize,
    capacity: usize,
}

impl MappedRing {
    /// A ring of `capacity` bytes in a private segment of its own (both ends in this
    /// process): for tests and benchmarks of the ring itself.
    pub fn private(capacity: usize) -> io::Result<MappedRing> {
        Ok(Segment::create(capacity)?.0.ring(0))
    }
}

impl RingMem for MappedRing {
    fn tail(&self) -> &AtomicU64 {
        self.map.u64_at(self.base + RING_TAIL)
    }
    fn head(&self) -> &AtomicU64 {
        self.map.u64_at(self.base + RING_HEAD)
    }
    fn lend_state(&self) -> &AtomicU64 {
        self.map.u64_at(self.base + RING_LEND)
    }
    fn lend_at(&self) -> &AtomicU64 {
        self.map.u64_at(self.base + RING_LEND + 8)
    }
    fn lend_addr(&self) -> &AtomicU64 {
        self.map.u64_at(self.base + RING_LEND + 16)
    }
    fn lend_len(&self) -> &AtomicU64 {
        self.map.u64_at(self.base + RING_LEND + 24)
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn write_at(&self, index: usize, src: &[u8]) {
        debug_assert!(index + src.len() <= self.capacity);
        self.map.write(self.base + RING_DATA + index, src);
    }
    fn read_at(&self, index: usize, dst: &mut [u8]) {
        debug_assert!(index + dst.len() <= self.capacity);
        self.map.read(self.base + RING_DATA + index, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_segment_attaches_and_both_views_share_the_rings() {
        let (a, file) = Segment::create(4096).unwrap();
        let b = Segment::attach(&file, 4096).unwrap();
        a.ring(1).tail().store(7, Ordering::Release);
        assert_eq!(b.ring(1).tail().load(Ordering::Acquire), 7);
        assert_eq!(b.ring(0).tail().load(Ordering::Acquire), 0);
        b.side(0).closed().store(1, Ordering::Release);
        assert_eq!(a.side(0).closed().load(Ordering::Acquire), 1);
        assert!(matches!(
            Segment::attach(&file, 8192),
            Err(AttachError::Refused(Refusal::Size { .. }))
        ));
    }

    #[test]
    fn a_scribbled_header_is_refused() {
        let (a, file) = Segment::create(4096).unwrap();
        a.map.u64_at(16).store(1 << 20, Ordering::Relaxed);
        assert!(matches!(Segment::attach(&file, 4096), Err(AttachError::Header(_))));
    }

    #[test]
    fn capacities_outside_the_layout_are_refused() {
        for bad in [0, 100, 2048, 4097, (MAX_CAPACITY * 2) as u64] {
            assert!(!valid_capacity(bad), "{bad}");
        }
        assert!(Segment::create(3000).is_err());
    }
}
