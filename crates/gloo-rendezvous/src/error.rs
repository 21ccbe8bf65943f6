//! The rendezvous crate's error type.

use std::fmt;
use std::time::Duration;

/// The result of every store and bootstrap call.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything a store or the bootstrap can fail with. Every variant names the key, rank or
/// endpoint involved and, where a wait was involved, the time waited.
///
/// `Display` of a [`Transport`](Error::Transport) error includes the transport's message, so
/// [`source`](std::error::Error::source) skips to what lies under it: a reporter that prints
/// the whole chain prints each message once (match the variant for the transport error).
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
    /// This rank arrived after a run of the bootstrap on this store had failed and ended
    /// (rank 0 reported the failure and deleted the run's keys), and no rank 0 of a new run
    /// showed up within a few seconds; or it joined that run while rank 0 was cleaning it up.
    /// The failed run's cause is this rank's cause too (it is a late rank of that run, or its
    /// own rank 0 is late too).
    RunFailed {
        /// The failed run's id (as its store keys show it, 32 hex digits).
        run: String,
        /// The failure every rank of that run reported.
        cause: Box<Error>,
        /// How long this rank waited.
        waited: Duration,
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
            Error::RunFailed { run, cause, waited } => write!(
                f,
                "the rendezvous run {run} on this store failed and was cleaned up before \
                 this rank could take part (no rank 0 of a new run came in the {} it \
                 waited): {cause}",
                secs(waited)
            ),
            Error::Transport(e) => write!(f, "transport error while connecting: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // `Display` already includes the transport's message: skip past it.
            Error::Transport(e) => std::error::Error::source(e),
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A transport error's message appears once when the chain is printed: in this error's
    /// `Display`, not again as its `source`.
    #[test]
    fn a_transport_error_is_printed_once_along_the_chain() {
        let inner = gloo_transport::Error::PeerLost {
            peer: gloo_transport::Rank(1),
            reason: "connection reset".into(),
        };
        let e = Error::from(inner.clone());
        let mut chain = vec![e.to_string()];
        let mut next = e.source();
        while let Some(s) = next {
            chain.push(s.to_string());
            next = s.source();
        }
        let all = chain.join("\n");
        assert_eq!(all.matches(&inner.to_string()).count(), 1, "{all}");
    }
}
