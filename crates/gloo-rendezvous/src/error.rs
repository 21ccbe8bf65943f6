//! The rendezvous crate's error type.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The result of every store and bootstrap call.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything a store or the bootstrap can fail with. Every variant names the key, rank or
/// endpoint involved and, where a wait was involved, the time waited.
///
/// `Display` says only this error's own part; what lies under it is its
/// [`source`](std::error::Error::source): the operating system's `io::Error` of an
/// [`Io`](Error::Io) error (and of an [`Unreachable`](Error::Unreachable) one, when there was
/// one), the transport's error of a [`Transport`](Error::Transport) one, a failed run's cause.
/// So a reporter that walks the chain (`anyhow`'s `{:#}`, or a loop over `source()`) prints
/// each message once; [`gloo_transport::ErrorChain`] prints it on one line. The `io::Error`s
/// are shared (`Arc`) so that the error stays `Clone`, and compared as
/// [`gloo_transport::io_errors_match`] does.
#[derive(Debug, Clone)]
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
        /// The last failure seen (what was being done, without `source`'s text).
        detail: String,
        /// How long the call kept trying.
        waited: Duration,
        /// The last failure's error, when it was one (the OS's, or the Redis client's inside
        /// an `io::Error`).
        source: Option<Arc<io::Error>>,
    },
    /// An operating-system call failed (or a lock stayed held, or a connection was lost
    /// mid-call: then the kind says which).
    Io {
        /// The key being handled, if any.
        key: Option<Vec<u8>>,
        /// What was being done (without `source`'s text).
        doing: String,
        /// The error itself; [`io_kind`](Error::io_kind) gives its kind.
        source: Arc<io::Error>,
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

/// A failure that a retry loop may outlive: what was seen, and the error when there was one
/// (what [`Error::Unreachable`] reports if it was the last).
pub(crate) struct Failure {
    pub(crate) detail: String,
    pub(crate) source: Option<io::Error>,
}

impl Failure {
    /// While doing `detail`, `e` happened.
    pub(crate) fn io(detail: impl Into<String>, e: io::Error) -> Failure {
        Failure { detail: detail.into(), source: Some(e) }
    }

    /// What was seen, with no error underneath.
    pub(crate) fn seen(detail: impl Into<String>) -> Failure {
        Failure { detail: detail.into(), source: None }
    }
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
            Error::Unreachable { endpoint, detail, waited, .. } => {
                write!(f, "store at {endpoint} unreachable for {}: {detail}", secs(waited))
            }
            Error::Io { key: Some(k), doing, .. } => {
                write!(f, "store I/O error on key {}: {doing}", KeyDisplay(k))
            }
            Error::Io { key: None, doing, .. } => write!(f, "store I/O error: {doing}"),
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
            Error::RunFailed { run, waited, .. } => write!(
                f,
                "the rendezvous run {run} on this store failed and was cleaned up before \
                 this rank could take part (no rank 0 of a new run came in the {} it \
                 waited)",
                secs(waited)
            ),
            Error::Transport(_) => f.write_str("the transport failed while connecting the group"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(&**source),
            Error::Unreachable { source: Some(s), .. } => Some(&**s),
            Error::RunFailed { cause, .. } => Some(&**cause),
            Error::Transport(e) => Some(e),
            _ => None,
        }
    }
}

/// Field by field, with the `io::Error`s compared by [`gloo_transport::io_errors_match`].
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        use Error::*;
        fn same_io(a: &Option<Arc<io::Error>>, b: &Option<Arc<io::Error>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => gloo_transport::io_errors_match(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        // One arm per variant of `self` (no wildcard), so a new variant cannot be left out.
        match self {
            Timeout { keys, waited } => matches!(other,
                Timeout { keys: k, waited: w } if (keys, waited) == (k, w)),
            Unreachable { endpoint, detail, waited, source } => matches!(other,
                Unreachable { endpoint: e, detail: d, waited: w, source: s }
                    if (endpoint, detail, waited) == (e, d, w) && same_io(source, s)),
            Io { key, doing, source } => matches!(other,
                Io { key: k, doing: d, source: s }
                    if (key, doing) == (k, d) && gloo_transport::io_errors_match(source, s)),
            Protocol { detail } => matches!(other, Protocol { detail: d } if detail == d),
            Auth { detail } => matches!(other, Auth { detail: d } if detail == d),
            Config { detail } => matches!(other, Config { detail: d } if detail == d),
            InvalidArgument { key, what } => matches!(other,
                InvalidArgument { key: k, what: w } if (key, what) == (k, w)),
            Refused { key, detail } => matches!(other,
                Refused { key: k, detail: d } if (key, detail) == (k, d)),
            MissingRanks { ranks, waited } => matches!(other,
                MissingRanks { ranks: r, waited: w } if (ranks, waited) == (r, w)),
            RankConflict { rank, detail } => matches!(other,
                RankConflict { rank: r, detail: d } if (rank, detail) == (r, d)),
            WorldSizeMismatch { rank, size, expected } => matches!(other,
                WorldSizeMismatch { rank: r, size: s, expected: e }
                    if (rank, size, expected) == (r, s, e)),
            BadAddress { rank, detail } => matches!(other,
                BadAddress { rank: r, detail: d } if (rank, detail) == (r, d)),
            RunFailed { run, cause, waited } => matches!(other,
                RunFailed { run: r, cause: c, waited: w } if (run, cause, waited) == (r, c, w)),
            Transport(e) => matches!(other, Transport(o) if e == o),
        }
    }
}

impl Eq for Error {}

impl From<gloo_transport::Error> for Error {
    fn from(e: gloo_transport::Error) -> Self {
        Error::Transport(e)
    }
}

impl Error {
    /// An I/O error while doing `doing` on `key`.
    pub(crate) fn io(key: Option<&[u8]>, doing: impl Into<String>, e: io::Error) -> Self {
        Error::Io { key: key.map(<[u8]>::to_vec), doing: doing.into(), source: Arc::new(e) }
    }

    /// The kind of the `io::Error` underneath, if this is an [`Error::Io`] or an
    /// [`Error::Unreachable`] that has one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } | Error::Unreachable { source: Some(source), .. } => {
                Some(source.kind())
            }
            _ => None,
        }
    }

    /// An [`Error::Unreachable`] for `endpoint`, after `waited`, with the last failure seen.
    pub(crate) fn unreachable(endpoint: &str, last: Failure, waited: Duration) -> Self {
        Error::Unreachable {
            endpoint: endpoint.to_string(),
            detail: last.detail,
            waited,
            source: last.source.map(Arc::new),
        }
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

    /// A transport error is this error's source, and its message appears once when the chain
    /// is printed: in its own `Display`, not again in the wrapper's.
    #[test]
    fn a_transport_error_is_the_source_printed_once() {
        let inner = gloo_transport::Error::PeerLost {
            peer: gloo_transport::Rank(1),
            reason: "connection reset".into(),
        };
        let e = Error::from(inner.clone());
        let chain = gloo_testing::errors::chain_printed_once(&e);
        assert_eq!(chain, vec![e.to_string(), inner.to_string()]);
        let s = e.source().and_then(|s| s.downcast_ref::<gloo_transport::Error>());
        assert_eq!(s, Some(&inner));
    }

    /// An I/O error keeps the OS error as its source, with its kind and code; the key and
    /// what was being done are this error's own message.
    #[test]
    fn an_io_error_is_the_source_of_the_store_error() {
        let e = Error::io(Some(b"k"), "opening /x/k", io::Error::from_raw_os_error(13));
        assert_eq!(e.to_string(), "store I/O error on key \"k\": opening /x/k");
        assert_eq!(e.io_kind(), Some(io::ErrorKind::PermissionDenied));
        let os = e.source().and_then(|s| s.downcast_ref::<io::Error>()).expect("io source");
        assert_eq!(os.raw_os_error(), Some(13));
        assert_eq!(gloo_testing::errors::chain_printed_once(&e).len(), 2);
        assert_eq!(e.clone(), e);
        assert_ne!(e, Error::io(Some(b"k"), "opening /x/k", io::Error::from_raw_os_error(2)));
    }

    /// A failed run's cause is the source, down to the OS error under it.
    #[test]
    fn a_failed_runs_cause_is_the_source() {
        let cause = Error::io(None, "binding", io::Error::from_raw_os_error(98));
        let e = Error::RunFailed {
            run: "0".repeat(32),
            cause: Box::new(cause.clone()),
            waited: Duration::from_secs(3),
        };
        let chain = gloo_testing::errors::chain_printed_once(&e);
        assert_eq!(chain.len(), 3, "{chain:#?}");
        assert_eq!(chain[1], cause.to_string());
        let os = gloo_testing::errors::deepest_io(&e).expect("the OS error");
        assert_eq!(os.raw_os_error(), Some(98));
    }
}
