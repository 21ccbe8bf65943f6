//! The in-process transport: threads as ranks.
//!
//! [`group`] builds `size` connected [`LoopbackComm`]s. Each is the [engine](crate::engine)'s
//! communicator over in-process pipes, one bounded byte pipe per ordered pair of ranks, so it
//! runs exactly the code every other transport runs (matching, the fingerprint rules,
//! framing, credit, rendezvous, cancellation, abort, the error scopes): what the collectives'
//! tests check over loopback holds over tcp for the same reason. It is always built (no
//! feature, no I/O).
//!
//! # How a message moves
//!
//! A send is framed by the engine and written into the pipe to its peer (a copy, as into a
//! socket buffer), which wakes the peer; the peer's engine reads the frames out and matches
//! them. A pipe holds at most a few MiB: a writer that finds it full waits, as on a socket,
//! and the reader wakes it when it makes room. As on every engine transport, the bytes of a
//! message reach the receiver's buffer only inside a `progress` call that was handed the
//! receive, and a large (rendezvous) message moves only while its sender drives its send.
//!
//! # Havoc
//!
//! With [`LoopbackConfig::havoc`] a seeded generator (one stream per rank and one per pipe,
//! so runs repeat for a given seed up to thread scheduling) shakes out bugs in the engine
//! and in the algorithms above it:
//! - a pipe holds back what is written to it for a random number of the reader's progress
//!   rounds (its pumps), which delays one peer's messages against another's and leaves
//!   large messages part-way (never reordering one pair's stream);
//! - reads and writes move random-sized pieces, so frames arrive split anywhere;
//! - about half of the sends go by rendezvous (ready-to-send, clear-to-send, data) whatever
//!   their size, so an algorithm that needs sends to complete before the matching receive is
//!   posted times out here too.
//!
//! Havoc holds back only what a network could: a rank that closes its end of a pair (it
//! dropped its communicator, or a cancel part-way through a message broke the pair) lets
//! everything it wrote before become visible at once, as the bytes written before a tcp
//! connection closes still arrive, so a peer never sees the close before an earlier message
//! (an alarm, say).
//!
//! # Goodbye and crash
//!
//! Dropping a communicator is a goodbye: its peers receive what it sent, then fail only the
//! operations that need it, without poisoning their groups. [`LoopbackComm::crash`] is a
//! death: every pipe of the rank is reset at once, so every survivor fails with
//! [`PeerLost`](Error::PeerLost) and is poisoned, as over tcp when a process is killed.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineComm, EngineConfig, Link, Sleeper, Waker, Wire};
use crate::sync::{
    Arc, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering, lock, wait_until, yield_now,
};
use crate::{Communicator, Error, Op, Rank, Result, Wait};

/// How many bytes a pipe holds before its writer must wait, like a socket's buffer.
const PIPE_CAP: usize = 4 << 20;

/// The most progress rounds of its reader havoc holds written bytes back for.
const MAX_DELAY_ROUNDS: u64 = 4;

/// How a loopback group behaves.
///
/// ```
/// use gloo_transport::loopback::{LoopbackConfig, group};
/// let plain = group(2, LoopbackConfig::default());
/// let shaken = group(2, LoopbackConfig::havoc(42));
/// assert_eq!(plain.len() + shaken.len(), 4);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopbackConfig {
    /// The seed of the havoc generator, or `None` for plain, immediate delivery.
    pub havoc: Option<u64>,
    /// Sends longer than this many bytes go by rendezvous, as large sends do on a network
    /// transport: they complete only once the receiver has posted a matching receive and the
    /// data moved (`None`, the default: every send that fits the eager rules goes eagerly,
    /// unless havoc picks it). `Some(0)` makes every non-empty send wait, which turns an
    /// algorithm that relies on sends being buffered into a deterministic timeout.
    pub eager_limit: Option<usize>,
}

impl LoopbackConfig {
    /// A configuration with havoc seeded by `seed` (see the [module docs](self)).
    pub fn havoc(seed: u64) -> LoopbackConfig {
        LoopbackConfig { havoc: Some(seed), eager_limit: None }
    }

    /// This configuration with sends longer than `bytes` waiting for their receiver.
    pub fn with_eager_limit(self, bytes: usize) -> LoopbackConfig {
        LoopbackConfig { eager_limit: Some(bytes), ..self }
    }
}

/// Build a connected group of `size` in-process communicators; element `i` is rank `i`.
///
/// Hand each one to its own thread (for example with `gloo_testing::run_ranks`). Dropping a
/// communicator tells its peers: their operations that can only be satisfied by it fail with
/// [`Error::PeerLost`] once the messages it already sent are consumed.
pub fn group(size: u32, cfg: LoopbackConfig) -> Vec<LoopbackComm> {
    let n = size as usize;
    let bells: Vec<Arc<Bell>> = (0..n).map(|_| Arc::new(Bell::new())).collect();
    // pipes[from * n + to], none from a rank to itself.
    let pipes: Vec<Option<Arc<Pipe>>> = (0..n * n)
        .map(|i| {
            let (from, to) = (i / n, i % n);
            (from != to).then(|| {
                let rng = cfg.havoc.map(|seed| SplitMix::new(seed ^ 0x5049_5045, i as u64));
                Arc::new(Pipe {
                    st: Mutex::new(PipeState::new(rng)),
                    reader_bell: Arc::clone(&bells[to]),
                    writer_bell: Arc::clone(&bells[from]),
                })
            })
        })
        .collect();
    let hub = Arc::new(Hub { size, pipes });
    (0..size)
        .map(|r| {
            let mut engine = Engine::new(Rank(r), size, EngineConfig::default().peer_timeout(None));
            for p in (0..size).filter(|p| *p != r) {
                let link =
                    PipeEnd { tx: Arc::clone(hub.pipe(r, p)), rx: Arc::clone(hub.pipe(p, r)) };
                engine.attach(Rank(p), link, &[]);
            }
            let wire = LoopbackWire {
                bell: Arc::clone(&bells[r as usize]),
                rng: cfg.havoc.map(|seed| SplitMix::new(seed, u64::from(r))),
                eager_limit: cfg.eager_limit,
            };
            let bell = &bells[r as usize];
            let sleeper = BellSleeper { bell: Arc::clone(bell), seen: 0 };
            let inner = EngineComm::start(engine, wire, sleeper, BellWaker(Arc::clone(bell)))
                .unwrap_or_else(|e| panic!("cannot start loopback rank {r}: {e}"));
            LoopbackComm { rank: Rank(r), hub: Arc::clone(&hub), havoc: cfg.havoc.is_some(), inner }
        })
        .collect()
}

/// One rank of a loopback group: a [`Communicator`] whose peers are other threads of this
/// process. `Send + Sync`; several threads may drive it at once with distinct slots.
pub struct LoopbackComm {
    rank: Rank,
    hub: Arc<Hub>,
    havoc: bool,
    inner: EngineComm<LoopbackWire>,
}

impl fmt::Debug for LoopbackComm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackComm")
            .field("rank", &self.rank)
            .field("size", &self.hub.size)
            .field("havoc", &self.havoc)
            .finish()
    }
}

/// What the ranks of one group share: the pipes between them.
struct Hub {
    size: u32,
    pipes: Vec<Option<Arc<Pipe>>>,
}

impl Hub {
    fn pipe(&self, from: u32, to: u32) -> &Arc<Pipe> {
        let i = from as usize * self.size as usize + to as usize;
        self.pipes[i].as_ref().expect("no pipe from a rank to itself is ever asked for")
    }
}

/// A small, seeded generator (SplitMix64): enough randomness for havoc, no dependency.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64, stream: u64) -> SplitMix {
        let mut g = SplitMix(seed ^ (stream + 1).wrapping_mul(0xA076_1D64_78BD_642F));
        g.next();
        g
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// A piece of `n` bytes: anything from 1 to `n`.
    fn piece(&mut self, n: usize) -> usize {
        if n > 1 { 1 + self.below(n as u64) as usize } else { n }
    }
}

/// One rank's doorbell: rung when one of its pipes got bytes, room, or a close, and by its
/// communicator's waker. Its sleeper waits for a ring it has not seen.
struct Bell {
    rung: Mutex<u64>,
    cv: Condvar,
    /// Pipes into this rank that hold havoc-delayed bytes: while there are any, the rank's
    /// sleeper does not block (havoc's clock is the rank's progress rounds, so they must go
    /// on).
    held: AtomicUsize,
    /// Havoc's clock: the rank's progress rounds (pumps) while something is held back.
    rounds: AtomicU64,
}

impl Bell {
    fn new() -> Bell {
        Bell {
            rung: Mutex::new(0),
            cv: Condvar::new(),
            held: AtomicUsize::new(0),
            rounds: AtomicU64::new(0),
        }
    }

    fn ring(&self) {
        *lock(&self.rung) += 1;
        self.cv.notify_all();
    }
}

/// How one side of a pipe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Open,
    /// A clean close: the reader sees the end of the stream after the bytes before it; a
    /// writer to a closed reader has its bytes accepted and dropped (as a socket does until
    /// the peer's reset arrives).
    Closed,
    /// A crash: reads and writes fail at once, and what was buffered is lost.
    Reset,
}

struct PipeState {
    buf: VecDeque<u8>,
    /// How many bytes at the front of `buf` the reader may see.
    visible: usize,
    /// Havoc: the bytes behind those, in segments, each with the reader's round from which
    /// it becomes visible (non-decreasing, so the stream keeps its order).
    held: VecDeque<(usize, u64)>,
    writer: End,
    reader: End,
    rng: Option<SplitMix>,
}

impl PipeState {
    fn new(rng: Option<SplitMix>) -> PipeState {
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
    fn release_all(&mut self, bell: &Bell) {
        if !self.held.is_empty() {
            self.held.clear();
            self.visible = self.buf.len();
            bell.held.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// What is due by the reader's round becomes visible.
    fn due(&mut self, bell: &Bell) {
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
    fn clear(&mut self, bell: &Bell) {
        self.release_all(bell);
        self.buf.clear();
        self.visible = 0;
    }
}

/// The bytes from one rank to another.
struct Pipe {
    st: Mutex<PipeState>,
    reader_bell: Arc<Bell>,
    writer_bell: Arc<Bell>,
}

/// One rank's end of the pipes to and from one peer: the engine's link to that peer.
struct PipeEnd {
    tx: Arc<Pipe>,
    rx: Arc<Pipe>,
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
struct BellSleeper {
    bell: Arc<Bell>,
    seen: u64,
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
struct BellWaker(Arc<Bell>);

impl Waker for BellWaker {
    fn wake(&self) {
        self.0.ring();
    }
}

/// The loopback side of one communicator.
struct LoopbackWire {
    /// This rank's doorbell, whose clock havoc advances once per pump.
    bell: Arc<Bell>,
    rng: Option<SplitMix>,
    eager_limit: Option<usize>,
}

impl Wire for LoopbackWire {
    type Link = PipeEnd;
    type Sleeper = BellSleeper;
    type Waker = BellWaker;

    const NAME: &'static str = "loopback";

    fn note_ready(&mut self, _sleeper: &mut BellSleeper, engine: &mut Engine<PipeEnd>) {
        // A ring does not say which pipe; trying each costs a lock.
        engine.set_all_ready();
    }

    fn drive(&mut self, _engine: &mut Engine<PipeEnd>, _force: bool, _now: Instant) -> bool {
        // One progress round more for havoc's clock, when something waits for it.
        if self.bell.held.load(Ordering::SeqCst) > 0 {
            self.bell.rounds.fetch_add(1, Ordering::SeqCst);
        }
        false
    }

    fn rendezvous(&mut self, _to: Rank, len: usize) -> bool {
        self.eager_limit.is_some_and(|limit| len > limit)
            || self.rng.as_mut().is_some_and(|r| r.below(2) == 0)
    }
}

impl LoopbackComm {
    /// Die the way a process does when it is killed: every pipe to and from this rank is
    /// reset at once, so every other rank's communicator is poisoned with
    /// [`Error::PeerLost`] naming this rank as soon as it looks, whichever peer it waits on,
    /// as over a network transport (whose engine poisons the group when a connection breaks
    /// without a goodbye). What this rank sent and nobody has read yet is lost.
    ///
    /// Dropping a communicator instead is a goodbye: peers fail only the operations that
    /// need this rank, once they have consumed what it sent.
    pub fn crash(self) {
        let me = self.rank.0;
        let pipes: Vec<&Arc<Pipe>> = (0..self.hub.size)
            .filter(|p| *p != me)
            .flat_map(|p| [self.hub.pipe(me, p), self.hub.pipe(p, me)])
            .collect();
        // Every pipe is locked before any is reset, so no survivor can react to the loss
        // (cancelling its exchange with another survivor, say) before every survivor would
        // see it. Elsewhere one pipe lock is held at a time, so taking them all cannot
        // deadlock.
        let mut guards: Vec<_> = pipes.iter().map(|p| lock(&p.st)).collect();
        for (g, p) in guards.iter_mut().zip(&pipes) {
            g.writer = End::Reset;
            g.reader = End::Reset;
            g.clear(&p.reader_bell);
        }
        drop(guards);
        for p in &pipes {
            p.reader_bell.ring();
        }
        // The communicator's goodbyes now meet reset pipes and reach nobody.
        drop(self);
    }

    /// Bytes received so far of the rendezvous message `op` (a posted receive) is taking in,
    /// for tests that need a transfer part-way.
    #[cfg(test)]
    fn received_so_far(&self, op: &Op<'_>) -> Option<u64> {
        self.inner.received_so_far(op)
    }
}

impl Communicator for LoopbackComm {
    fn rank(&self) -> Rank {
        self.rank
    }

    fn size(&self) -> u32 {
        self.hub.size
    }

    fn progress(&self, ops: &mut [Op<'_>], wait: Wait, deadline: Instant) -> Result<()> {
        self.inner.progress(ops, wait, deadline)
    }

    fn cancel(&self, ops: &mut [Op<'_>]) {
        self.inner.cancel(ops);
    }

    fn abort(&self, reason: &str) {
        self.inner.abort(reason);
    }

    /// What has arrived is read first, so an abort or a crash elsewhere in the group shows
    /// here as soon as it happened, even on a rank that is inside no call.
    fn poisoned(&self) -> Option<Error> {
        self.inner.poll_now();
        self.inner.poisoned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fingerprint, OpState, Pending, Slot};

    fn soon(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    /// One scoped thread per rank (gloo-testing's `run_ranks` cannot be used here: it links
    /// another copy of this crate).
    fn each<R: Send>(comms: Vec<LoopbackComm>, f: impl Fn(LoopbackComm) -> R + Sync) -> Vec<R> {
        let f = &f;
        std::thread::scope(|s| {
            let hs: Vec<_> = comms.into_iter().map(|c| s.spawn(move || f(c))).collect();
            hs.into_iter().map(|h| h.join().expect("a rank panicked")).collect()
        })
    }

    fn fp(epoch: u64, desc: u8) -> Fingerprint {
        let mut b = [desc; 32];
        b[..8].copy_from_slice(&epoch.to_le_bytes());
        Fingerprint(b)
    }

    const S: Slot = Slot::new(1, 0);

    #[test]
    fn loopback_comm_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<LoopbackComm>();
    }

    #[test]
    fn ping_pong_plain_and_havoc() {
        for cfg in [LoopbackConfig::default(), LoopbackConfig::havoc(7)] {
            each(group(2, cfg), |c| {
                let peer = Rank(1 - c.rank().0);
                let mut buf = [0u8; 8];
                for i in 0..200u64 {
                    if c.rank() == Rank(0) {
                        c.send(peer, S, &i.to_le_bytes(), soon(10)).unwrap();
                        assert_eq!(c.recv(peer, S, &mut buf, soon(10)).unwrap(), 8);
                        assert_eq!(u64::from_le_bytes(buf), i + 1);
                    } else {
                        c.recv(peer, S, &mut buf, soon(10)).unwrap();
                        let v = u64::from_le_bytes(buf) + 1;
                        c.send(peer, S, &v.to_le_bytes(), soon(10)).unwrap();
                    }
                }
            });
        }
    }

    #[test]
    fn havoc_keeps_fifo_within_a_stream_and_chunks_large_messages() {
        for seed in 0..4 {
            each(group(2, LoopbackConfig::havoc(seed)), |c| {
                let n = 60u32;
                if c.rank() == Rank(0) {
                    let msgs: Vec<Vec<u8>> = (0..n)
                        .map(|i| vec![i as u8; if i % 7 == 0 { 5000 } else { i as usize }])
                        .collect();
                    let mut ops: Vec<Op<'_>> = msgs
                        .iter()
                        .enumerate()
                        .map(|(i, m)| Op::send(Rank(1), Slot::new(1, (i % 3) as u32), m))
                        .collect();
                    c.run(&mut ops, soon(20)).unwrap();
                } else {
                    let mut bufs = vec![vec![0u8; 5000]; n as usize];
                    let mut ops: Vec<Op<'_>> = bufs
                        .iter_mut()
                        .enumerate()
                        .map(|(i, b)| Op::recv(Rank(0), Slot::new(1, (i % 3) as u32), b))
                        .collect();
                    c.run(&mut ops, soon(20)).unwrap();
                    for (i, op) in ops.iter().enumerate() {
                        let want = if i % 7 == 0 { 5000 } else { i };
                        assert_eq!(op.completed(), Some((Rank(0), want)));
                    }
                    drop(ops);
                    for (i, b) in bufs.iter().enumerate() {
                        let want = if i % 7 == 0 { 5000 } else { i };
                        assert!(b[..want].iter().all(|&x| x == i as u8), "message {i}");
                    }
                }
            });
        }
    }

    #[test]
    fn recv_any_reports_the_sender() {
        each(group(3, LoopbackConfig::havoc(3)), |c| {
            if c.rank() == Rank(0) {
                let mut seen = Vec::new();
                for _ in 0..2 {
                    let mut b = [0u8; 4];
                    let (r, n) = c.recv_any(&[Rank(1), Rank(2)], S, &mut b, soon(10)).unwrap();
                    assert_eq!(n, 1);
                    assert_eq!(u32::from(b[0]), r.0);
                    seen.push(r);
                }
                seen.sort();
                assert_eq!(seen, vec![Rank(1), Rank(2)]);
            } else {
                c.send(Rank(0), S, &[c.rank().0 as u8], soon(10)).unwrap();
            }
        });
    }

    #[test]
    fn invalid_peers_fail_before_anything_is_posted() {
        let g = group(2, LoopbackConfig::default());
        let c = &g[0];
        let mut b = [0u8; 1];
        for bad in [Rank(0), Rank(2)] {
            let mut ops = [Op::send(Rank(1), S, b"x"), Op::recv(bad, S, &mut b)];
            let e = c.progress(&mut ops, Wait::All, soon(1)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
            assert_eq!(ops[0].state(), OpState::New);
        }
        let e = c.recv_any(&[], S, &mut b, soon(1)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        // Nothing reached rank 1.
        let e = g[1].recv(Rank(0), S, &mut b, Instant::now()).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
    }

    #[test]
    fn timeout_names_the_pending_receive() {
        let g = group(2, LoopbackConfig::default());
        let mut b = [0u8; 1];
        let e = g[1].recv(Rank(0), S, &mut b, soon(0)).unwrap_err();
        match e {
            Error::Timeout { rank, pending, .. } => {
                assert_eq!(rank, Rank(1));
                assert_eq!(pending, vec![Pending::Recv { from: vec![Rank(0)], slot: S }]);
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn too_long_and_zero_byte_messages() {
        let g = group(2, LoopbackConfig::default());
        g[0].send(Rank(1), S, &[1, 2, 3], soon(1)).unwrap();
        g[0].send(Rank(1), S, &[], soon(1)).unwrap();
        let mut b = [0u8; 2];
        let e = g[1].recv(Rank(0), S, &mut b, soon(1)).unwrap_err();
        assert_eq!(e, Error::MessageTooLong { peer: Rank(0), slot: S, len: 3, capacity: 2 });
        assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(1)).unwrap(), 0);
        g[0].send(Rank(1), S, &[], soon(1)).unwrap();
        assert_eq!(g[1].recv(Rank(0), S, &mut [], soon(1)).unwrap(), 0);
    }

    #[test]
    fn abort_wakes_a_waiter_and_reaches_every_rank() {
        let g = group(3, LoopbackConfig::default());
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut b = [0u8; 1];
                g[1].recv(Rank(0), S, &mut b, soon(30)).unwrap_err()
            });
            std::thread::sleep(Duration::from_millis(20));
            g[2].abort("test");
            let e = waiter.join().unwrap();
            assert_eq!(e, Error::Aborted { by: Rank(2), reason: "test".into() });
        });
        for c in &g {
            assert_eq!(c.poisoned(), Some(Error::Aborted { by: Rank(2), reason: "test".into() }));
            assert!(matches!(
                c.send(Rank((c.rank().0 + 1) % 3), S, b"", soon(1)),
                Err(Error::Aborted { .. })
            ));
        }
    }

    #[test]
    fn cancel_of_an_unmatched_receive_leaves_the_stream_working() {
        let g = group(2, LoopbackConfig::default());
        let mut b = [0u8; 4];
        let mut ops = [Op::recv(Rank(0), S, &mut b)];
        assert!(g[1].progress(&mut ops, Wait::All, Instant::now()).is_err());
        g[1].cancel(&mut ops);
        assert_eq!(ops[0].state(), OpState::Cancelled);
        g[0].send(Rank(1), S, b"abcd", soon(1)).unwrap();
        assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(1)).unwrap(), 4);
        assert_eq!(&b, b"abcd");
    }

    #[test]
    fn fingerprint_rules() {
        let g = group(2, LoopbackConfig::default());
        let mut b = [0u8; 4];
        // Rule 1: the matched message carries another fingerprint (or none).
        g[0].run(&mut [Op::send(Rank(1), S, b"a").with_fingerprint(fp(1, 1))], soon(1)).unwrap();
        let e = g[1].run(&mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(1, 2))], soon(1));
        assert!(matches!(e, Err(Error::Mismatch { peer: Rank(0), .. })), "{e:?}");
        g[0].send(Rank(1), S, b"a", soon(1)).unwrap();
        let e = g[1].run(&mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(1, 2))], soon(1));
        assert!(matches!(e, Err(Error::Mismatch { theirs: None, .. })), "{e:?}");
        // Rule 2: same tag, another slot, same epoch, other description: fails at once.
        let other = Slot::new(1, 5);
        g[0].run(&mut [Op::send(Rank(1), other, b"a").with_fingerprint(fp(2, 1))], soon(1))
            .unwrap();
        let e = g[1].run(&mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(2, 2))], soon(30));
        assert!(matches!(e, Err(Error::Mismatch { slot, .. }) if slot == S), "{e:?}");
        // Rule 3: another tag, same epoch, other description: Mismatch at the deadline.
        g[0].run(
            &mut [Op::send(Rank(1), Slot::new(9, 0), b"a").with_fingerprint(fp(3, 1))],
            soon(1),
        )
        .unwrap();
        let e = g[1].run(
            &mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(3, 2))],
            Instant::now() + Duration::from_millis(50),
        );
        assert!(matches!(e, Err(Error::Mismatch { .. })), "{e:?}");
        // Same epoch, same description elsewhere: plain timeout.
        let e = g[1].run(
            &mut [Op::recv(Rank(0), S, &mut b).with_fingerprint(fp(3, 1))],
            Instant::now() + Duration::from_millis(50),
        );
        assert!(matches!(e, Err(Error::Timeout { .. })), "{e:?}");
    }

    #[test]
    fn a_dropped_peer_is_lost_after_its_messages_are_consumed() {
        let mut g = group(2, LoopbackConfig::default());
        let c1 = g.pop().unwrap();
        let c0 = g.pop().unwrap();
        c0.send(Rank(1), S, b"last", soon(1)).unwrap();
        drop(c0);
        let mut b = [0u8; 4];
        assert_eq!(c1.recv(Rank(0), S, &mut b, soon(5)).unwrap(), 4);
        let e = c1.recv(Rank(0), S, &mut b, soon(30)).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(0), .. }), "{e}");
        let e = c1.send(Rank(0), S, b"x", soon(1)).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(0), .. }), "{e}");
    }

    #[test]
    fn a_crashed_peer_poisons_every_other_rank_even_those_waiting_on_someone_else() {
        let mut g = group(3, LoopbackConfig::default());
        let c2 = g.pop().unwrap();
        let out = std::thread::scope(|s| {
            let waiters: Vec<_> = g
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        // Each waits on the other survivor, never on the rank that crashes.
                        let other = Rank(1 - c.rank().0);
                        c.recv(other, S, &mut [0u8; 4], soon(30))
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(20));
            c2.crash();
            waiters.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        });
        for r in out {
            assert!(matches!(r, Err(Error::PeerLost { peer: Rank(2), .. })), "{r:?}");
        }
        // Poisoned for good: a later operation fails the same way.
        let e = g[0].send(Rank(1), S, b"x", soon(1)).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(2), .. }), "{e}");
    }

    #[test]
    fn wait_any_returns_after_one_completion() {
        let g = group(2, LoopbackConfig::default());
        g[0].send(Rank(1), Slot::new(1, 1), b"x", soon(1)).unwrap();
        let (mut a, mut b) = ([0u8; 1], [0u8; 1]);
        let mut ops = [Op::recv(Rank(0), S, &mut a), Op::recv(Rank(0), Slot::new(1, 1), &mut b)];
        g[1].progress(&mut ops, Wait::Any, soon(5)).unwrap();
        assert!(!ops[0].is_done());
        assert_eq!(ops[1].completed(), Some((Rank(0), 1)));
        g[1].cancel(&mut ops);
    }

    #[test]
    fn rendezvous_sends_complete_only_when_consumed() {
        // Havoc makes about half of the sends rendezvous: over 32 sends some must be.
        let g = group(2, LoopbackConfig::havoc(11));
        let data = [7u8; 3];
        let mut ops: Vec<Op<'_>> =
            (0..32).map(|i| Op::send(Rank(1), Slot::new(2, i), &data)).collect();
        g[0].progress(&mut ops, Wait::Any, soon(5)).unwrap();
        let pending = ops.iter().filter(|o| !o.is_done()).count();
        assert!(pending > 0 && pending < 32, "{pending} of 32 pending");
        each_thread_pair(&g, &mut ops);
    }

    #[test]
    fn a_break_delivers_what_was_sent_whole_before_it_and_fails_the_unfinished() {
        let mut both_kinds = 0;
        for seed in 0..20 {
            let comms = group(2, LoopbackConfig::havoc(seed));
            let (c0, c1) = (&comms[0], &comms[1]);
            let bufs: Vec<[u8; 1]> = (0..8u8).map(|i| [i]).collect();
            let slot = |i: usize| Slot::new(10 + i as u32, 0);
            // Havoc makes each send eager (done at once, perhaps held back by the pipe for a
            // few of the receiver's reads) or rendezvous (posted until the receiver clears it).
            let mut ops: Vec<Op<'_>> =
                bufs.iter().enumerate().map(|(i, b)| Op::send(Rank(1), slot(i), b)).collect();
            let _ = c0.progress(&mut ops, Wait::All, Instant::now());
            let eager: Vec<bool> = ops.iter().map(Op::is_done).collect();
            // Rank 0 breaks the pair: a large send withdrawn before its clear-to-send cannot
            // be taken off the stream, so cancelling it closes the pair (and the small
            // rendezvous sends withdrawn with it can no longer go).
            let big = vec![0u8; 1 << 20];
            let mut large = [Op::send(Rank(1), Slot::new(99, 0), &big)];
            let _ = c0.progress(&mut large, Wait::All, Instant::now());
            c0.cancel(&mut ops);
            c0.cancel(&mut large);
            // Rank 1 then gets every eager message, whole and at once (a look with no time
            // for havoc's rounds), and the closed pair for every rendezvous one.
            for (i, &eager) in eager.iter().enumerate() {
                let mut b = [0u8; 1];
                let r = c1.recv(Rank(0), slot(i), &mut b, Instant::now());
                if eager {
                    assert_eq!(r, Ok(1), "seed {seed}: eager message {i}");
                    assert_eq!(b, bufs[i], "seed {seed}: eager message {i}");
                } else {
                    assert!(
                        matches!(r, Err(Error::PeerLost { peer: Rank(0), .. })),
                        "seed {seed}, {i}: {r:?}"
                    );
                }
            }
            assert_eq!(c1.poisoned(), None, "seed {seed}: a closed pair is not a lost group");
            both_kinds += usize::from(eager.contains(&true) && eager.contains(&false));
        }
        assert!(both_kinds >= 10, "only {both_kinds} of 20 seeds mixed eager and rendezvous");
    }

    #[test]
    fn cancel_mid_message_breaks_the_pair_on_both_sides() {
        let g = group(3, LoopbackConfig::havoc(5));
        let big = vec![1u8; 1 << 20];
        let mut send = [Op::send(Rank(1), S, &big)];
        let mut b = vec![0u8; 1 << 20];
        let mut ops = [Op::recv(Rank(0), S, &mut b)];
        // Drive both sides with past deadlines until part of the message (but not all) has
        // reached the receive: havoc holds the rest back in the pipe.
        let mut partial = false;
        for _ in 0..10_000 {
            let _ = g[0].progress(&mut send, Wait::All, Instant::now());
            let _ = g[1].progress(&mut ops, Wait::All, Instant::now());
            if ops[0].is_done() {
                break;
            }
            if g[1].received_so_far(&ops[0]).is_some_and(|n| n > 0) {
                partial = true;
                break;
            }
        }
        assert!(partial, "havoc never left the transfer part-way");
        g[1].cancel(&mut ops);
        let e = g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap_err();
        assert_eq!(e, Error::Cancelled { peer: Rank(0), slot: S });
        // Rank 0 learns that rank 1 closed the pair (with a goodbye): operations with it fail
        // naming it, and its group is not poisoned.
        let e = g[0].recv(Rank(1), S, &mut b, soon(5)).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(1), .. }), "{e}");
        if !send[0].is_done() {
            let e = g[0].progress(&mut send, Wait::All, soon(5)).unwrap_err();
            assert!(matches!(e, Error::PeerLost { peer: Rank(1), .. }), "{e}");
        }
        assert_eq!(g[0].poisoned(), None);
        assert_eq!(g[1].poisoned(), None);
        // Other pairs are unaffected.
        std::thread::scope(|s| {
            s.spawn(|| g[2].send(Rank(1), S, b"ok", soon(5)).unwrap());
            assert_eq!(g[1].recv(Rank(2), S, &mut b, soon(5)).unwrap(), 2);
        });
    }

    #[test]
    fn a_withdrawn_small_rendezvous_send_is_still_delivered_and_the_pair_goes_on() {
        // Find a send that havoc makes rendezvous and cancel it before its clear-to-send: its
        // announcement is on the stream already, so it is delivered from a copy when the
        // receiver asks for it, and the pair goes on.
        let g = group(2, LoopbackConfig::havoc(2));
        let mut sent = Vec::new();
        for i in 0..16u8 {
            let msg = [i];
            let mut ops = [Op::send(Rank(1), S, &msg)];
            sent.push(i);
            if g[0].progress(&mut ops, Wait::All, Instant::now()).is_err() {
                g[0].cancel(&mut ops);
                assert_eq!(ops[0].state(), OpState::Cancelled);
                break;
            }
        }
        assert!(sent.len() < 16, "no send was rendezvous");
        std::thread::scope(|s| {
            s.spawn(|| g[0].send(Rank(1), S, &[99], soon(5)).unwrap());
            let mut b = [0u8; 1];
            for &i in sent.iter().chain(&[99]) {
                assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(5)), Ok(1), "message {i}");
                assert_eq!(b, [i], "message {i}");
            }
        });
        assert_eq!(g[0].poisoned(), None);
        assert_eq!(g[1].poisoned(), None);
    }

    #[test]
    fn a_withdrawn_large_rendezvous_send_breaks_only_its_pair() {
        // A large send withdrawn before its clear-to-send would need a copy of its size to
        // go later: the pair is closed instead (with a goodbye).
        let g = group(3, LoopbackConfig::default());
        let big = vec![3u8; (64 << 10) + 1];
        let mut ops = [Op::send(Rank(1), S, &big)];
        let e = g[0].progress(&mut ops, Wait::All, Instant::now()).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        g[0].cancel(&mut ops);
        assert_eq!(ops[0].state(), OpState::Cancelled);
        // Rank 1 finds the pair closed; its group is not poisoned.
        let mut b = vec![0u8; big.len()];
        let e = g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(0), .. }), "{e}");
        assert_eq!(g[1].poisoned(), None);
        // Rank 0's later operations with rank 1 fail as cancelled.
        let e = g[0].send(Rank(1), S, b"x", soon(5)).unwrap_err();
        assert_eq!(e, Error::Cancelled { peer: Rank(1), slot: S });
        // Another pair works.
        std::thread::scope(|s| {
            s.spawn(|| g[2].send(Rank(1), S, b"y", soon(5)).unwrap());
            assert_eq!(g[1].recv(Rank(2), S, &mut b, soon(5)), Ok(1));
            assert_eq!(b[0], b'y');
        });
    }

    #[test]
    fn an_eager_limit_makes_large_sends_wait_for_their_receiver() {
        let g = group(2, LoopbackConfig::default().with_eager_limit(4));
        let mut small = [Op::send(Rank(1), S, b"1234")];
        g[0].progress(&mut small, Wait::All, Instant::now()).unwrap();
        let mut large = [Op::send(Rank(1), S, b"12345")];
        let e = g[0].progress(&mut large, Wait::All, Instant::now()).unwrap_err();
        assert!(
            matches!(e, Error::Timeout { ref pending, .. }
            if pending == &[Pending::Send { to: Rank(1), slot: S }]),
            "{e}"
        );
        // The large send completes once rank 1 receives it (both sides driving).
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut b = [0u8; 5];
                assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap(), 4);
                assert_eq!(g[1].recv(Rank(0), S, &mut b, soon(5)).unwrap(), 5);
                assert_eq!(&b, b"12345");
            });
            g[0].progress(&mut large, Wait::All, soon(5)).unwrap();
        });
        assert_eq!(large[0].completed(), Some((Rank(1), 5)));
    }

    #[test]
    fn a_crash_resets_the_pipes_and_drops_what_was_unread() {
        let mut g = group(3, LoopbackConfig::default());
        let c2 = g.pop().unwrap();
        c2.send(Rank(0), S, b"lost", soon(5)).unwrap();
        c2.crash();
        // Rank 0 never reads the message: the crash reset the pipe it was in.
        let mut b = [0u8; 4];
        let e = g[0].recv(Rank(2), S, &mut b, soon(5)).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(2), .. }), "{e}");
        assert!(matches!(g[1].poisoned(), Some(Error::PeerLost { peer: Rank(2), .. })));
    }

    fn each_thread_pair(g: &[LoopbackComm], ops: &mut [Op<'_>]) {
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..32 {
                    let mut b = [0u8; 3];
                    assert_eq!(g[1].recv(Rank(0), Slot::new(2, i), &mut b, soon(10)).unwrap(), 3);
                }
            });
            g[0].progress(ops, Wait::All, soon(10)).unwrap();
        });
        assert!(ops.iter().all(Op::is_done));
    }
}
