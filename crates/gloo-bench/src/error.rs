//! The tool's error type: every failure names what was being done and, where there is one,
//! the rank or peer involved.

use std::fmt;

use gloo_transport::ErrorChain;

/// Why a run failed.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum Error {
    /// A transport operation failed.
    Transport {
        /// What this rank was doing.
        doing: String,
        /// The transport's error (it names the peer).
        source: gloo_transport::Error,
    },
    /// A collective failed.
    Collective {
        /// What this rank was doing.
        doing: String,
        /// The library's error (it names the peer, the collective and what differed).
        source: gloo_algorithms::Error,
    },
    /// A store operation failed.
    Store {
        /// What was being done.
        doing: String,
        /// The store's error (it names the key or endpoint).
        source: gloo_rendezvous::Error,
    },
    /// A shared-memory channel (the shm limits) failed.
    Shm {
        /// What was being done.
        doing: String,
        /// gloo-shm's error (it names the peer).
        source: gloo_shm::Error,
    },
    /// A system call or file operation failed.
    Io {
        /// What was being done.
        doing: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A peer (plain-socket limit measurement, store entry, report) sent something invalid.
    Peer {
        /// The peer.
        rank: u32,
        /// What was wrong.
        detail: String,
    },
    /// A deadline passed.
    Timeout {
        /// What was being waited for.
        what: String,
        /// Seconds waited.
        waited: f64,
    },
    /// The arguments cannot work together for this run (found after parsing, e.g. when the
    /// world size is known).
    Invalid(String),
}

impl Error {
    /// An [`Error::Io`] for `doing`.
    pub(crate) fn io(doing: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { doing: doing.into(), source }
    }

    /// An [`Error::Transport`] for `doing`.
    pub(crate) fn transport(doing: impl Into<String>, source: gloo_transport::Error) -> Error {
        Error::Transport { doing: doing.into(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The library's errors say only their own part and hold the cause as `source`;
            // this tool's message is what a user reads, so it carries the whole chain (and
            // this type, a message and nothing under it, has no `source` of its own).
            Error::Transport { doing, source } => write!(f, "{doing}: {}", ErrorChain(source)),
            Error::Io { doing, source } => write!(f, "{doing}: {}", ErrorChain(source)),
            Error::Collective { doing, source } => write!(f, "{doing}: {}", ErrorChain(source)),
            Error::Store { doing, source } => write!(f, "{doing}: {}", ErrorChain(source)),
            Error::Shm { doing, source } => write!(f, "{doing}: {}", ErrorChain(source)),
            Error::Peer { rank, detail } => write!(f, "rank {rank}: {detail}"),
            Error::Timeout { what, waited } => {
                write!(f, "timed out after {waited:.1} s waiting for {what}")
            }
            Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// The tool's result type.
pub(crate) type Result<T> = std::result::Result<T, Error>;
