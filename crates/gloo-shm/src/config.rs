//! What a rank says about itself and how its channels behave.
#![forbid(unsafe_code)]

use std::time::Duration;

use gloo_transport::Rank;

/// The default ring capacity per direction: 1 MiB (with two rings per pair, 2 MiB of memory
/// per pair). Large enough that a 64 MiB transfer runs at memory speed; small enough to stay
/// near the caches.
pub const DEFAULT_RING_CAPACITY: usize = 1 << 20;

/// The default peer timeout, the same as the tcp transport's: a peer whose heartbeat has not
/// moved for this long counts as lost (frozen, stopped, or dead without its socket noticing).
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// The default spin before a waiting rank starts yielding the CPU.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// The default time a waiting rank yields the CPU (`sched_yield`) between checks before it
/// sleeps on its doorbell.
pub const DEFAULT_YIELD: Duration = Duration::from_micros(200);

/// The default smallest write that is lent (single copy) instead of copied into the ring.
pub const DEFAULT_LEND_MIN: usize = 256 << 10;

/// Whether large writes may be read straight from the writer's memory by the reader
/// (`process_vm_readv`), saving the copy through the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SingleCopy {
    /// Where the kernel permits it: each side probes at set-up whether it can read the
    /// other's memory (Yama `ptrace_scope`, containers and seccomp may refuse) and falls back
    /// to the ring when it cannot.
    Auto,
    /// Never: every byte goes through the ring.
    Off,
}

/// One rank's identity and its channels' settings.
#[derive(Clone, Debug)]
pub struct ShmConfig {
    pub(crate) job: String,
    pub(crate) rank: Rank,
    pub(crate) size: u32,
    pub(crate) ring_capacity: usize,
    pub(crate) peer_timeout: Duration,
    pub(crate) spin: Duration,
    pub(crate) yield_for: Duration,
    pub(crate) single_copy: SingleCopy,
    pub(crate) lend_min: usize,
}

impl ShmConfig {
    /// Rank `rank` of a group of `size` in job `job` (at most 255 bytes), with the defaults.
    pub fn new(job: &str, rank: Rank, size: u32) -> ShmConfig {
        ShmConfig {
            job: job.to_string(),
            rank,
            size,
            ring_capacity: DEFAULT_RING_CAPACITY,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            spin: DEFAULT_SPIN,
            yield_for: DEFAULT_YIELD,
            single_copy: SingleCopy::Auto,
            lend_min: DEFAULT_LEND_MIN,
        }
    }

    /// The capacity of each ring this rank creates (the lower rank of a pair creates the
    /// pair's segment, so its value wins): a power of two from 4 KiB to 1 GiB.
    pub fn ring_capacity(mut self, bytes: usize) -> ShmConfig {
        self.ring_capacity = bytes;
        self
    }

    /// How long a peer's heartbeat may stand still before it counts as lost (at least 10 ms).
    pub fn peer_timeout(mut self, timeout: Duration) -> ShmConfig {
        self.peer_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// How long a waiting rank spins on the rings, then how long it yields the CPU between
    /// checks, before it sleeps on its doorbell. When ranks outnumber cores, spinning steals
    /// the CPU a peer needs: use [`ShmConfig::oversubscribed`].
    pub fn spin(mut self, spin: Duration, yield_for: Duration) -> ShmConfig {
        self.spin = spin;
        self.yield_for = yield_for;
        self
    }

    /// Settings for more ranks on this host than cores: no spinning, a short yield phase,
    /// then sleep, so the rank with work to do gets the CPU.
    pub fn oversubscribed(self) -> ShmConfig {
        self.spin(Duration::ZERO, Duration::from_micros(50))
    }

    /// Whether large writes may go single-copy; see [`SingleCopy`].
    pub fn single_copy(mut self, mode: SingleCopy) -> ShmConfig {
        self.single_copy = mode;
        self
    }

    /// The smallest write lent for single copy (default 256 KiB); smaller ones are copied
    /// through the ring, where the system call would cost more than the copy saves.
    pub fn lend_min(mut self, bytes: usize) -> ShmConfig {
        self.lend_min = bytes.max(1);
        self
    }

    /// This rank.
    pub fn rank(&self) -> Rank {
        self.rank
    }

    /// The group's size.
    pub fn size(&self) -> u32 {
        self.size
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.job.len() > 255 {
            return Err(format!("job id of {} bytes; at most 255", self.job.len()));
        }
        if self.rank.0 >= self.size {
            return Err(format!("rank {} in a group of {}", self.rank, self.size));
        }
        if !crate::segment::valid_capacity(self.ring_capacity as u64) {
            return Err(format!(
                "ring capacity {} is not a power of two from {} to {}",
                self.ring_capacity,
                crate::segment::MIN_CAPACITY,
                crate::segment::MAX_CAPACITY
            ));
        }
        Ok(())
    }
}
