//! Per-call options.

use std::time::{Duration, Instant};

use crate::select::Algorithm;

/// Options of one collective call: deadline, algorithm and tuning. (The tag is the
/// [`Group`](crate::Group) handle's: see [`Group::fork`](crate::Group::fork).)
///
/// Every rank must pass the same algorithm, segment size and bcube base for a call (they
/// are part of the fingerprint; a disagreement is a [`Mismatch`](crate::Error::Mismatch)).
///
/// ```
/// use gloo_algorithms::{Algorithm, Options};
/// use std::time::Duration;
/// let opts = Options::new()
///     .with_timeout(Duration::from_secs(5))
///     .with_algorithm(Algorithm::Ring)
///     .with_segment_bytes(256 << 10);
/// assert_eq!(opts.algorithm, Some(Algorithm::Ring));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// How long the call may take when no [`deadline`](Self::deadline) is set. Default 30 s.
    pub timeout: Duration,
    /// An absolute deadline; overrides [`timeout`](Self::timeout).
    pub deadline: Option<Instant>,
    /// Force an algorithm instead of the automatic choice (and of the environment's).
    pub algorithm: Option<Algorithm>,
    /// The segment size in bytes of the ring and of the pairwise exchange (alltoall): how
    /// large each message of a pipelined block is (rounded down to whole elements, at least
    /// one). Default 512 KiB (provisional, see [`select::TABLE`](crate::select::TABLE)).
    pub segment_bytes: usize,
    /// The largest group size of the bcube algorithm, at least 2. Default 4.
    pub bcube_base: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(30),
            deadline: None,
            algorithm: None,
            segment_bytes: 512 << 10,
            bcube_base: 4,
        }
    }
}

impl Options {
    /// The defaults: 30 s, automatic algorithm.
    pub fn new() -> Options {
        Options::default()
    }

    /// Set the timeout (measured from the start of each call).
    pub fn with_timeout(mut self, timeout: Duration) -> Options {
        self.timeout = timeout;
        self
    }

    /// Set an absolute deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Options {
        self.deadline = Some(deadline);
        self
    }

    /// Force an algorithm.
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Options {
        self.algorithm = Some(algorithm);
        self
    }

    /// Set the ring's segment size.
    pub fn with_segment_bytes(mut self, bytes: usize) -> Options {
        self.segment_bytes = bytes;
        self
    }

    /// Set the bcube base.
    pub fn with_bcube_base(mut self, base: u32) -> Options {
        self.bcube_base = base;
        self
    }

    /// The deadline of a call starting now.
    pub(crate) fn deadline_from_now(&self) -> Instant {
        self.deadline_from(Instant::now())
    }

    /// The deadline of a call that starts at `now`.
    pub(crate) fn deadline_from(&self, now: Instant) -> Instant {
        self.deadline.unwrap_or_else(|| {
            now.checked_add(self.timeout).unwrap_or(now + Duration::from_secs(86_400 * 365))
        })
    }
}
