//! The pipes between the ranks of a loopback group, and the doorbells that wake a rank when
//! one of its pipes changes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use super::havoc::{MAX_DELAY_ROUNDS, SplitMix};
use crate::engine::{Link, Sleeper, Waker};
use crate::sync::{
    Arc, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering, lock, wait_until, yield_now,
};

/// How many bytes a pipe holds before its writer must wait, like a socket's buffer.
pub(super) const PIPE_CAP: usize = 4 << 20;

/// One rank's doorbell: rung when one of its pipes got bytes, room, or a close, and by its
/// communicator's waker. Its sleeper waits for a ring it has not seen.
pub(super) struct Bell {
    pub(super) rung: Mutex<u64>,
    pub(super) cv: Condvar,
    /// Pipes into this rank that hold havoc-delayed bytes: while there are any, the rank's
    /// sleeper does not block (havoc's clock is the rank's progress rounds, so they must go
    /// on).
    pub(super) held: AtomicUsize,
    /// Havoc's clock: the rank's progress rounds (pumps) while something is held back.
    pub(super) rounds: AtomicU64,
}

impl Bell {
    pub(super) fn new() -> Bell {
        Bell {
            rung: Mutex::new(0),
            cv: Condvar::new(),
            held: AtomicUsize::new(0),
            rounds: AtomicU64::new(0),
        }
    }

    pub(super) fn ring(&self) {
        *lock(&self.rung) += 1;
        self.cv.notify_all();
    }
}

/// How one side of a pipe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    Open,
    /// A clean close: the reader sees the end of the stream after the bytes before it; a
    /// writer to a closed reader has its bytes accepted and dropped (as a socket does until
    /// the peer's reset arrives).
    Closed,
    /// A crash: reads and writes fail at once, and what was buffered is lost.
    Reset,
}

pub(super) struct PipeState {
    pub(super) buf: VecDeque<u8>,
    /// How many bytes at the front of `buf` the reader may see.
    pub(super) visible: usize,
    /// Havoc: the bytes behind those, in segments, each with the reader's round from which
    /// it becomes visible (non-decreasing, so the stream keeps its order).
    pub(super) held: VecDeque<(usize, u64)>,
    pub(super) writer: End,
    pub(super) reader: End,
    pub(super) rng: Option<SplitMix>,
}

impl PipeState {
    pub(super) fn new(rng: Option<SplitMix>) -> PipeState {
        PipeState {
            buf: VecDeque::new(),
            visible: 0,
            held: VecDeque::new(),
            writer: End::Open,
            reader: End::Open,
            rng,
        }
    }

    /// Make everything held back visible (the writer closed: what it wrote before arrives).
    pub(super) fn release_all(&mut self, bell: &Bell) {
        if !self.held.is_empty() {
            self.held.clear();
            self.visible = self.buf.len();
            bell.held.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// What is due by the reader's round becomes visible.
    pub(super) fn due(&mut self, bell: &Bell) {
        if self.held.is_empty() {
            return;
        }
        let round = bell.rounds.load(Ordering::SeqCst);
        while let Some(&(n, at)) = self.held.front() {
            if at > round {
                break;
            }
            self.held.pop_front();
            self.visible += n;
        }
        if self.held.is_empty() {
            bell.held.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Drop everything (the reader went away or the pipe was reset).
    pub(super) fn clear(&mut self, bell: &Bell) {
        self.release_all(bell);
        self.buf.clear();
        self.visible = 0;
    }
}

/// The bytes from one rank to another.
pub(super) struct Pipe {
    pub(super) st: Mutex<PipeState>,
    pub(super) reader_bell: Arc<Bell>,
    pub(super) writer_bell: Arc<Bell>,
}

/// One rank's end of the pipes to and from one peer: the engine's link to that peer.
pub(super) struct PipeEnd {
    pub(super) tx: Arc<Pipe>,
    pub(super) rx: Arc<Pipe>,
}

impl Link for PipeEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let p = &*self.rx;
        let mut st = lock(&p.st);
        if st.writer == End::Reset || st.reader == End::Reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        st.due(&p.reader_bell);
        if st.visible == 0 {
            return if st.writer == End::Closed && st.held.is_empty() {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let mut n = buf.len().min(st.visible);
        if let Some(rng) = st.rng.as_mut() {
            n = rng.piece(n);
        }
        let was_full = st.buf.len() >= PIPE_CAP;
        let (a, b) = st.buf.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        st.buf.drain(..n);
        st.visible -= n;
        drop(st);
        if was_full {
            // A writer that found the pipe full waits for room.
            p.writer_bell.ring();
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let p = &*self.tx;
        let mut st = lock(&p.st);
        if st.writer == End::Reset || st.reader == End::Reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if st.reader == End::Closed {
            return Ok(total);
        }
        let room = PIPE_CAP.saturating_sub(st.buf.len());
        if room == 0 && total > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = total.min(room);
        let mut delay = 0;
        if let Some(rng) = st.rng.as_mut() {
            n = rng.piece(n);
            delay = rng.below(MAX_DELAY_ROUNDS + 1);
        }
        let mut left = n;
        for b in bufs {
            let k = left.min(b.len());
            st.buf.extend(&b[..k]);
            left -= k;
            if left == 0 {
                break;
            }
        }
        if delay == 0 && st.held.is_empty() {
            st.visible += n;
        } else {
            let round = p.reader_bell.rounds.load(Ordering::SeqCst);
            let at = (round + delay).max(st.held.back().map_or(0, |h| h.1));
            if st.held.is_empty() {
                p.reader_bell.held.fetch_add(1, Ordering::SeqCst);
            }
            st.held.push_back((n, at));
        }
        drop(st);
        p.reader_bell.ring();
        Ok(n)
    }

    fn input_waiting(&self) -> bool {
        let st = lock(&self.rx.st);
        st.visible > 0 || !st.held.is_empty()
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.tx.st);
            if st.writer == End::Open {
                st.writer = End::Closed;
            }
            st.release_all(&self.tx.reader_bell);
        }
        self.tx.reader_bell.ring();
        {
            let mut st = lock(&self.rx.st);
            if st.reader == End::Open {
                st.reader = End::Closed;
            }
            st.clear(&self.rx.reader_bell);
        }
        // A writer that waits for room writes (into nothing) at once.
        self.rx.writer_bell.ring();
    }
}

/// What a waiting thread of a rank sleeps on: the rank's doorbell.
pub(super) struct BellSleeper {
    pub(super) bell: Arc<Bell>,
    pub(super) seen: u64,
}

impl Sleeper for BellSleeper {
    fn sleep(&mut self, timeout: Duration) -> io::Result<()> {
        if self.bell.held.load(Ordering::SeqCst) > 0 {
            // Bytes held back by havoc become visible as the reads go on.
            yield_now();
            return Ok(());
        }
        let until = Instant::now() + timeout;
        let mut rung = lock(&self.bell.rung);
        while *rung == self.seen {
            // Under loom a wait ends only by a ring: a lost wake-up is a deadlock loom sees.
            if !cfg!(loom) && Instant::now() >= until {
                break;
            }
            rung = wait_until(&self.bell.cv, rung, until);
        }
        self.seen = *rung;
        Ok(())
    }
}

/// Rings a rank's doorbell.
pub(super) struct BellWaker(pub(super) Arc<Bell>);

impl Waker for BellWaker {
    fn wake(&self) {
        self.0.ring();
    }
}
