//! The ring's memory under `cfg(loom)`: loom atomics in an `Arc` for the words and loom cells
//! for the data, so loom checks the data accesses for races against the words' orderings.

use std::sync::Arc;

use loom::cell::UnsafeCell;

use crate::ring::RingMem;
use crate::sync::AtomicU64;

/// The memory of one ring, shared by its two ends.
#[derive(Clone, Debug)]
pub struct LoomMem(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    tail: AtomicU64,
    head: AtomicU64,
    lend: [AtomicU64; 4],
    data: Box<[UnsafeCell<u8>]>,
}

impl LoomMem {
    /// A ring of `capacity` bytes (a power of two), all zero.
    pub fn new(capacity: usize) -> LoomMem {
        LoomMem(Arc::new(Inner {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            lend: std::array::from_fn(|_| AtomicU64::new(0)),
            data: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
        }))
    }
}

impl RingMem for LoomMem {
    fn tail(&self) -> &AtomicU64 {
        &self.0.tail
    }
    fn head(&self) -> &AtomicU64 {
        &self.0.head
    }
    fn lend_state(&self) -> &AtomicU64 {
        &self.0.lend[0]
    }
    fn lend_at(&self) -> &AtomicU64 {
        &self.0.lend[1]
    }
    fn lend_addr(&self) -> &AtomicU64 {
        &self.0.lend[2]
    }
    fn lend_len(&self) -> &AtomicU64 {
        &self.0.lend[3]
    }
    fn capacity(&self) -> usize {
        self.0.data.len()
    }
    fn write_at(&self, index: usize, src: &[u8]) {
        for (cell, &b) in self.0.data[index..index + src.len()].iter().zip(src) {
            // SAFETY: loom tracks this access: if any other thread could touch the cell
            // without a happens-before edge, loom fails the model (that is the point). The
            // pointer is valid: it is the cell's own storage, alive while `self` is.
            cell.with_mut(|p| unsafe { *p = b });
        }
    }
    fn read_at(&self, index: usize, dst: &mut [u8]) {
        for (cell, d) in self.0.data[index..index + dst.len()].iter().zip(dst) {
            // SAFETY: as in write_at; a read racing a write fails the model.
            *d = cell.with(|p| unsafe { *p });
        }
    }
}
