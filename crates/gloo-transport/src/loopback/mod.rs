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

mod havoc;
mod pipe;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Instant;

use crate::engine::{Engine, EngineComm, EngineConfig, Wire};
use crate::sync::{Arc, Mutex, Ordering, lock};
use crate::{Communicator, Error, Op, Rank, Result, Wait};

use havoc::SplitMix;
use pipe::{Bell, BellSleeper, BellWaker, End, Pipe, PipeEnd, PipeState};

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
/// Hand each one to its own thread (for example with [`run_ranks`](crate::threads::run_ranks)). Dropping a
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

    fn progress_at(
        &self,
        ops: &mut [Op<'_>],
        wait: Wait,
        deadline: Instant,
        now: Instant,
    ) -> Result<()> {
        self.inner.progress_at(ops, wait, deadline, now)
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
