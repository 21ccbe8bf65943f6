//! A fixed-size shared mapping of a segment file, and the only ways to touch its memory.
//!
//! # Memory shared with another process
//!
//! The other process may write any byte of the mapping at any moment, so no Rust reference to
//! a plain value in it (`&u64`, `&[u8]`) is ever made: the compiler may assume such a value
//! does not change while the reference lives, and a racing write would break that. Two kinds
//! of access are used instead:
//!
//! - **Control words** (ring indices, flags, counters) are `AtomicU64`s, reached
//!   through [`Mapping::u64_at`]. Atomics are made for memory that others
//!   write concurrently, and every bit pattern is a valid value, so whatever the peer stores
//!   is a value we validate, never undefined behaviour.
//! - **Payload bytes** are moved with [`Mapping::write`]/[`Mapping::read`]: one raw-pointer
//!   `copy_nonoverlapping` between the mapping and private memory. The copy is taken once and
//!   only the private copy is ever looked at; payload bytes have no validity invariant, so a
//!   racing peer can only make the copy hold different bytes (which the protocol above checks
//!   like any bytes from a socket), never make this process misbehave. In the ring protocol an
//!   honest peer never writes bytes while we copy them (the Acquire/Release pairs on the ring
//!   indices order the two), so this race exists only against a peer that breaks the protocol.
//!
//!   Per-word atomic copies would make even that case a race-free program under Rust's memory
//!   model, but they cannot be vectorised and cost the large-message path most of memcpy's
//!   speed. A per-byte atomic memcpy (Rust RFC 3301, `atomic_load_per_byte_memcpy`) is the
//!   standard answer in waiting; when it lands, these two functions are the only places to
//!   change. Until then this is the same contract the kernel's `copy_from_user` and every
//!   shared-memory transport (Open MPI's, NCCL's) rely on: a copy out of memory another
//!   process controls yields some bytes, and they are treated as untrusted.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// A shared read-write mapping of a whole segment file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access through it is an
// atomic operation or a raw copy (see the module docs), both of which may happen from any
// thread at once.
unsafe impl Send for Mapping {}
// SAFETY: as for Send: `&Mapping` only hands out atomics and performs raw copies.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map all `len` bytes of `file` shared, readable and writable. The caller has checked
    /// that the file is at least `len` bytes long and cannot shrink (a sealed memfd), so no
    /// access within the mapping can fault.
    pub(crate) fn map(file: &File, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: a fresh mapping at an address the kernel picks (null hint), so it overlaps
        // nothing of ours; `file`'s descriptor is open for the call; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Mapping { ptr, len })
    }

    /// The atomic 64-bit word at byte offset `off`. Offsets come from the crate's own layout,
    /// never from a peer; one that is out of bounds or misaligned is a bug and panics.
    pub(crate) fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off.checked_add(8).is_some_and(|end| end <= self.len),
            "u64 at {off}"
        );
        // SAFETY: in bounds and 8-aligned (checked above; the mapping is page-aligned); the
        // memory lives as long as `self` (the returned reference borrows it); AtomicU64 has
        // the size and alignment of u64, every bit pattern is valid, and it may be written
        // concurrently by anyone (this process's threads or the peer).
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Copy `src` into the mapping at byte offset `off`. Out of bounds is a bug and panics.
    pub(crate) fn write(&self, off: usize, src: &[u8]) {
        assert!(off.checked_add(src.len()).is_some_and(|end| end <= self.len), "write at {off}");
        // SAFETY: the destination range is inside the mapping (checked above) and the mapping
        // is not borrowed as a Rust slice anywhere (module docs), so `src`, private memory,
        // cannot overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len())
        }
    }

    /// Copy from the mapping at byte offset `off` into `dst`. Out of bounds is a bug and
    /// panics.
    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) {
        assert!(off.checked_add(dst.len()).is_some_and(|end| end <= self.len), "read at {off}");
        // SAFETY: the source range is inside the mapping (checked above); `dst` is private
        // memory we hold exclusively, so the ranges do not overlap. A concurrent write by the
        // peer can only change which bytes land in `dst` (module docs).
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; every reference into the mapping
        // borrows `self`, so none outlives this call.
        let ret = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert_eq!(ret, 0, "munmap failed: {}", io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn two_mappings_of_one_memfd_share_words_and_bytes() {
        let f = super::super::memfd::create("gloo-shm-map-test", 4096).unwrap();
        let a = Mapping::map(&f, 4096).unwrap();
        let b = Mapping::map(&f, 4096).unwrap();
        a.u64_at(64).store(0xdead_beef, Ordering::Release);
        assert_eq!(b.u64_at(64).load(Ordering::Acquire), 0xdead_beef);
        a.write(4000, b"hello");
        let mut got = [0u8; 5];
        b.read(4000, &mut got);
        assert_eq!(&got, b"hello");
    }

    #[test]
    #[should_panic(expected = "read at 4093")]
    fn out_of_bounds_is_a_panic_not_a_fault() {
        let f = super::super::memfd::create("gloo-shm-map-test", 4096).unwrap();
        let a = Mapping::map(&f, 4096).unwrap();
        a.read(4093, &mut [0u8; 4]);
    }
}
