//! A rogue view of a channel's segment (feature `rogue`), for tests that play a peer which
//! scribbles on shared memory.
//!
//! It stores arbitrary values into the words and bytes the *other* side reads, as a hostile
//! peer could. Nothing here is unsafe: every shared word is an atomic and the other side
//! validates everything it loads, which is exactly what these tests check.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use crate::channel::Channel;
use crate::ring::RingMem;

/// A word of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingWord {
    /// Bytes written.
    Tail,
    /// Bytes consumed.
    Head,
    /// The lend state (`id << 32 | taken`).
    LendState,
    /// The lend's ring position.
    LendAt,
    /// The lend's address.
    LendAddr,
    /// The lend's length.
    LendLen,
}

/// A word of a side's block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideWord {
    /// The heartbeat counter.
    Heartbeat,
    /// The "sleeping, ring my doorbell" flag.
    Sleeping,
    /// The "closed cleanly" flag.
    Closed,
}

/// Which ring: the one this end writes (the peer reads it) or the one it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// This end writes, the peer reads.
    Outgoing,
    /// The peer writes, this end reads.
    Incoming,
}

/// Scribbling access to a channel's segment.
#[derive(Debug)]
pub struct Rogue<'a> {
    ch: &'a Channel,
}

impl Channel {
    /// A rogue view of this channel's segment (feature `rogue`, for tests).
    pub fn rogue(&self) -> Rogue<'_> {
        Rogue { ch: self }
    }
}

impl Rogue<'_> {
    fn ring(&self, dir: Dir) -> crate::segment::MappedRing {
        let side = self.ch.side();
        self.ch.segment().ring(if dir == Dir::Outgoing { side } else { 1 - side })
    }

    /// Store `value` into `word` of the `dir` ring.
    pub fn ring_word(&self, dir: Dir, word: RingWord, value: u64) {
        let r = self.ring(dir);
        let w = match word {
            RingWord::Tail => r.tail(),
            RingWord::Head => r.head(),
            RingWord::LendState => r.lend_state(),
            RingWord::LendAt => r.lend_at(),
            RingWord::LendAddr => r.lend_addr(),
            RingWord::LendLen => r.lend_len(),
        };
        w.store(value, Ordering::Release);
    }

    /// Load `word` of the `dir` ring.
    pub fn load_ring_word(&self, dir: Dir, word: RingWord) -> u64 {
        let r = self.ring(dir);
        match word {
            RingWord::Tail => r.tail(),
            RingWord::Head => r.head(),
            RingWord::LendState => r.lend_state(),
            RingWord::LendAt => r.lend_at(),
            RingWord::LendAddr => r.lend_addr(),
            RingWord::LendLen => r.lend_len(),
        }
        .load(Ordering::Acquire)
    }

    /// Store `value` into `word` of our side's block (`peer == false`) or the peer's.
    pub fn side_word(&self, peer: bool, word: SideWord, value: u64) {
        let side = if peer { 1 - self.ch.side() } else { self.ch.side() };
        let s = self.ch.segment().side(side);
        let w = match word {
            SideWord::Heartbeat => s.heartbeat(),
            SideWord::Sleeping => s.sleeping(),
            SideWord::Closed => s.closed(),
        };
        w.store(value, Ordering::Release);
    }

    /// Write `bytes` into the `dir` ring's data at `index` (modulo the capacity).
    pub fn data(&self, dir: Dir, index: usize, bytes: &[u8]) {
        let r = self.ring(dir);
        let cap = r.capacity();
        for (i, b) in bytes.iter().enumerate() {
            r.write_at((index + i) % cap, std::slice::from_ref(b));
        }
    }

    /// Store `value` into the segment header's word `i` (0 magic, 1 version, 2 capacity).
    pub fn header_word(&self, i: usize, value: u64) {
        self.ch.segment().mapping().u64_at(8 * i.min(15)).store(value, Ordering::Release);
    }

    /// The ring capacity.
    pub fn capacity(&self) -> usize {
        self.ring(Dir::Outgoing).capacity()
    }
}

/// A fake acceptor that hands the first dialer `file` as the pair's segment: for tests that a
/// segment someone else made (a plain file in `/dev/shm`, an unsealed memfd, another owner,
/// another mode, another size) is refused. Returns its address bytes; the thread answers one
/// hello with a welcome for `capacity`-byte rings carrying `file` and a real doorbell, then
/// returns the dialer's answer (a reject, normally) as text.
pub fn fake_acceptor(
    job: &str,
    size: u32,
    capacity: u64,
    file: std::fs::File,
) -> std::io::Result<(Vec<u8>, std::thread::JoinHandle<std::io::Result<String>>)> {
    crate::setup::fake_acceptor(job, size, capacity, file)
}

/// Connect to a listener's address and send `bytes` raw, as a peer that speaks garbage
/// would; returns the socket (keep it open while the listener reads).
pub fn raw_dial(address: &[u8], bytes: &[u8]) -> std::io::Result<std::os::unix::net::UnixStream> {
    crate::setup::raw_dial(address, bytes)
}

/// A sealed memfd of `len` bytes, mode 0600, as set-up makes them (for tests that then
/// change its mode or owner).
pub fn memfd(len: u64) -> std::io::Result<std::fs::File> {
    crate::sys::memfd::create("gloo-shm-rogue", len)
}

/// The size of a segment for rings of `capacity` bytes.
pub fn segment_len(capacity: usize) -> usize {
    crate::segment::segment_len(capacity)
}

/// A fake dialer: says a proper hello as `rank` of `job` (`size` ranks) to the listener at
/// `address`, takes its welcome and segment, then answers with an ack carrying `doorbell`
/// as its doorbell (any descriptor, or none): for tests that the acceptor checks what the
/// dialer hands back. Returns the socket, to keep open while the acceptor decides.
pub fn fake_dialer(
    address: &[u8],
    job: &str,
    rank: u32,
    size: u32,
    doorbell: Option<std::os::fd::OwnedFd>,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    crate::setup::fake_dialer(address, job, rank, size, doorbell)
}
