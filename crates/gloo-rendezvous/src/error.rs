//! The rendezvous crate's error type.

use std::fmt;
use std::time::Duration;

/// The result of every store and bootstrap call.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything a store or the bootstrap can fail with. Every variant names the key, rank or
/// endpoint involved and, where a wait was involved, the time waited.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The deadline passed before the keys appeared.
    Timeout {
        /// The keys still missing when the deadline passed (as the caller named them).
        keys: Vec<Vec<u8>>,
        /// How long the call waited.
        waited: Duration,
    },
    /// The store could not be reached (connection refused, reset or lost) until the deadline.
    Unreachable {
        /// The address or path of the store.
        endpoint: String,
        /// The last failure seen.
        detail: String,
        /// How long the call kept trying.
        waited: Duration,
    },
    /// An operating-system call failed.
    Io {
        /// The key being handled, if any.
        key: Option<Vec<u8>>,
        /// The kind of the underlying error.
        kind: std::io::ErrorKind,
        /// What was being done, and the error.
        detail: String,
    },
    /// The other side broke the store protocol (bad frame, unexpected answer, bad stored value).
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// Authentication failed or was required and missing.
    Auth {
        /// What was wrong.
        detail: String,
    },
    /// A configuration (URL, environment variables, options) is missing or contradictory.
    Config {
        /// What was wrong, naming the variables or options involved.
        detail: String,
    },
    /// A caller's argument is invalid (a value too large, a counter that is not a number, ...).
    InvalidArgument {
        /// The key involved, if any.
        key: Option<Vec<u8>>,
        /// What was wrong.
        what: String,
    },
    /// The store refused the operation for security reasons (a symbolic link at a key's path,
    /// a file that is not a regular file).
    Refused {
        /// The key involved.
        key: Vec<u8>,
        /// Why.
        detail: String,
    },
    /// Ranks that never published their address before the deadline.
    MissingRanks {
        /// The ranks that did not publish.
        ranks: Vec<u32>,
        /// How long the bootstrap waited.
        waited: Duration,
    },
    /// Another process already claimed this rank (or this process's claim was taken over).
    RankConflict {
        /// The rank claimed twice.
        rank: u32,
        /// What the store showed.
        detail: String,
    },
    /// Ranks were started with different world sizes.
    WorldSizeMismatch {
        /// The rank whose world size differs.
        rank: u32,
        /// The world size that rank was started with.
        size: u32,
        /// The world size rank 0 (which gathers the addresses) was started with.
        expected: u32,
    },
    /// A rank published something the transport could not use as an address.
    BadAddress {
        /// The rank whose entry is malformed.
        rank: u32,
        /// The transport's reason.
        detail: String,
    },
    /// The transport failed while connecting the group.
    Transport(gloo_transport::Error),
}

/// Shows a binary key readably: printable ASCII as is, other bytes escaped.
pub(crate) struct KeyDisplay<'a>(pub(crate) &'a [u8]);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

fn keys_list(keys: &[Vec<u8>]) -> String {
    let shown: Vec<String> = keys.iter().take(16).map(|k| KeyDisplay(k).to_string()).collect();
    let more = keys.len().saturating_sub(16);
    if more > 0 {
        format!("[{} and {more} more]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

fn secs(d: &Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout { keys, waited } => {
                write!(f, "keys {} did not appear within {}", keys_list(keys), secs(waited))
            }
            Error::Unreachable { endpoint, detail, waited } => {
                write!(f, "store at {endpoint} unreachable for {}: {detail}", secs(waited))
            }
            Error::Io { key: Some(k), detail, .. } => {
                write!(f, "store I/O error on key {}: {detail}", KeyDisplay(k))
            }
            Error::Io { key: None, detail, .. } => write!(f, "store I/O error: {detail}"),
            Error::Protocol { detail } => write!(f, "store protocol error: {detail}"),
            Error::Auth { detail } => write!(f, "store authentication failed: {detail}"),
            Error::Config { detail } => write!(f, "configuration error: {detail}"),
            Error::InvalidArgument { key: Some(k), what } => {
                write!(f, "invalid argument for key {}: {what}", KeyDisplay(k))
            }
            Error::InvalidArgument { key: None, what } => write!(f, "invalid argument: {what}"),
            Error::Refused { key, detail } => {
                write!(f, "store refused key {}: {detail}", KeyDisplay(key))
            }
            Error::MissingRanks { ranks, waited } => {
                write!(f, "ranks {ranks:?} did not publish within {}", secs(waited))
            }
            Error::RankConflict { rank, detail } => {
                write!(f, "rank {rank} was claimed by more than one process: {detail}")
            }
            Error::BadAddress { rank, detail } => {
                write!(f, "rank {rank} published a malformed address: {detail}")
            }
            Error::WorldSizeMismatch { rank, size, expected } => write!(
                f,
                "rank {rank} was started with a world of {size} ranks but rank 0 with {expected}: \
                 every rank must be given the same world size"
            ),
            Error::Transport(e) => write!(f, "transport error while connecting: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Transport(e) => Some(e),
            _ => None,
        }
    }
}

impl From<gloo_transport::Error> for Error {
    fn from(e: gloo_transport::Error) -> Self {
        Error::Transport(e)
    }
}

impl Error {
    /// An I/O error while doing `doing` on `key`.
    pub(crate) fn io(key: Option<&[u8]>, doing: &str, e: &std::io::Error) -> Self {
        Error::Io { key: key.map(<[u8]>::to_vec), kind: e.kind(), detail: format!("{doing}: {e}") }
    }

    /// The keys named in a [`Error::Timeout`], if this is one.
    pub fn missing_keys(&self) -> Option<&[Vec<u8>]> {
        match self {
            Error::Timeout { keys, .. } => Some(keys),
            _ => None,
        }
    }

    /// Whether this error is a timeout (the deadline passed while waiting for keys).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}
