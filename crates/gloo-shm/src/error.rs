//! The crate's error type.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use gloo_transport::Rank;

/// A result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a shared-memory channel. Every variant names the peer
/// when one is known; what a peer wrote into shared memory is checked and reported here,
/// never panicked on.
///
/// An [`Io`](Error::Io) error keeps the operating system's `io::Error` (shared, so the error
/// stays `Clone`) as its [`source`](std::error::Error::source), and its `Display` says only
/// what was being done, so a reporter that walks the chain prints each message once.
/// Equality compares the `io::Error`s as [`gloo_transport::io_errors_match`] does.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer stored something into the shared segment (or sent on the set-up socket)
    /// that no honest peer does.
    Protocol {
        /// The peer.
        peer: Option<Rank>,
        /// What was wrong.
        detail: String,
    },
    /// The peer died (its end of the set-up socket hung up), froze (no heartbeat for the
    /// peer timeout), or is gone for another stated reason.
    PeerLost {
        /// The peer.
        peer: Rank,
        /// What was observed.
        reason: String,
    },
    /// The peer closed its end cleanly, and every byte it sent has been read.
    Closed {
        /// The peer.
        peer: Rank,
    },
    /// Set-up refused a peer or a segment: another user, another job, a rank that cannot be,
    /// or a segment file that is not a sealed memfd of ours with mode 0600 and the agreed size.
    Refused {
        /// The peer, when known.
        peer: Option<Rank>,
        /// What was refused and why.
        detail: String,
    },
    /// A deadline passed.
    Timeout {
        /// The peer waited for, when there is one.
        peer: Option<Rank>,
        /// What was being waited for.
        doing: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The caller passed something that cannot work.
    InvalidArgument {
        /// What and why.
        what: String,
    },
    /// An operating-system error.
    Io {
        /// The peer, when there is one.
        peer: Option<Rank>,
        /// What was being done (without the error's own text, which is `source`'s).
        doing: String,
        /// The error itself; [`io_kind`](Error::io_kind) gives its kind.
        source: Arc<io::Error>,
    },
}

impl Error {
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn io(peer: Option<Rank>, doing: impl Into<String>, e: io::Error) -> Error {
        Error::Io { peer, doing: doing.into(), source: Arc::new(e) }
    }

    /// The kind of the `io::Error` underneath, if this is an [`Error::Io`].
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// The peer this error concerns, when it concerns one.
    pub fn peer(&self) -> Option<Rank> {
        match self {
            Error::PeerLost { peer, .. } | Error::Closed { peer } => Some(*peer),
            Error::Protocol { peer, .. }
            | Error::Refused { peer, .. }
            | Error::Timeout { peer, .. }
            | Error::Io { peer, .. } => *peer,
            Error::InvalidArgument { .. } => None,
        }
    }
}

fn who(peer: &Option<Rank>) -> String {
    match peer {
        Some(r) => format!("rank {r}"),
        None => "an unidentified peer".to_string(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Protocol { peer, detail } => {
                write!(f, "shared-memory protocol error from {}: {detail}", who(peer))
            }
            Error::PeerLost { peer, reason } => write!(f, "lost rank {peer}: {reason}"),
            Error::Closed { peer } => write!(f, "rank {peer} closed its shared-memory channel"),
            Error::Refused { peer, detail } => write!(f, "refused {}: {detail}", who(peer)),
            Error::Timeout { peer, doing, waited } => {
                write!(f, "timed out after {waited:.1?} {doing}")?;
                if let Some(p) = peer {
                    write!(f, " (rank {p})")?;
                }
                Ok(())
            }
            Error::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            Error::Io { peer: Some(r), doing, .. } => write!(f, "I/O error with rank {r}: {doing}"),
            Error::Io { peer: None, doing, .. } => write!(f, "I/O error: {doing}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// Field by field, with the `io::Error` of an [`Error::Io`] compared by
/// [`gloo_transport::io_errors_match`].
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        use Error::*;
        // One arm per variant of `self` (no wildcard), so a new variant cannot be left out.
        match self {
            Protocol { peer, detail } => matches!(other,
                Protocol { peer: p, detail: d } if (peer, detail) == (p, d)),
            PeerLost { peer, reason } => matches!(other,
                PeerLost { peer: p, reason: r } if (peer, reason) == (p, r)),
            Closed { peer } => matches!(other, Closed { peer: p } if peer == p),
            Refused { peer, detail } => matches!(other,
                Refused { peer: p, detail: d } if (peer, detail) == (p, d)),
            Timeout { peer, doing, waited } => matches!(other,
                Timeout { peer: p, doing: d, waited: w } if (peer, doing, waited) == (p, d, w)),
            InvalidArgument { what } => matches!(other, InvalidArgument { what: w } if what == w),
            Io { peer, doing, source } => matches!(other,
                Io { peer: p, doing: d, source: s }
                    if (peer, doing) == (p, d) && gloo_transport::io_errors_match(source, s)),
        }
    }
}

impl Eq for Error {}

/// How a transport built on these channels reports their errors: protocol breaches stay
/// `Protocol` for the peer, a refused set-up is `Auth` (another user, job or rank is the
/// shared-memory form of a failed authentication), a clean close of a peer is `PeerLost`.
impl From<Error> for gloo_transport::Error {
    fn from(e: Error) -> gloo_transport::Error {
        use gloo_transport::Error as T;
        match e {
            Error::Protocol { peer, detail } => T::Protocol { peer, detail },
            Error::PeerLost { peer, reason } => T::PeerLost { peer, reason },
            Error::Closed { peer } => {
                T::PeerLost { peer, reason: "closed its shared-memory channel".into() }
            }
            Error::Refused { peer, detail } => T::Auth { peer, detail },
            // A deadline of the channel's own (not the transport's `Timeout`, which lists
            // pending operations): an I/O error of kind `TimedOut`, as a socket's would be.
            Error::Timeout { peer, doing, waited } => T::Io {
                peer,
                doing: format!("{doing} (gave up after {waited:.1?})"),
                source: Arc::new(io::ErrorKind::TimedOut.into()),
            },
            Error::InvalidArgument { what } => T::InvalidArgument { what },
            Error::Io { peer, doing, source } => T::Io { peer, doing, source },
        }
    }
}

/// For byte-stream interfaces (`std::io`, a transport engine's link): the kind says what
/// happened (`ConnectionReset` for a lost peer, `UnexpectedEof` for a close, `InvalidData` for
/// a protocol breach, ...) and the typed error rides along, so
/// `e.get_ref().and_then(|e| e.downcast_ref::<gloo_shm::Error>())` recovers it.
impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        use std::io::ErrorKind as K;
        let kind = match &e {
            Error::Protocol { .. } => K::InvalidData,
            Error::PeerLost { .. } => K::ConnectionReset,
            Error::Closed { .. } => K::UnexpectedEof,
            Error::Refused { .. } => K::PermissionDenied,
            Error::Timeout { .. } => K::TimedOut,
            Error::InvalidArgument { .. } => K::InvalidInput,
            Error::Io { source, .. } => source.kind(),
        };
        std::io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The operating system's error is the source, with its kind and code, printed once; it
    /// stays the source when the error becomes the transport's.
    #[test]
    fn an_io_error_is_the_source_here_and_in_the_transport() {
        let e = Error::io(Some(Rank(2)), "mapping the segment", io::Error::from_raw_os_error(12));
        assert_eq!(e.to_string(), "I/O error with rank 2: mapping the segment");
        assert_eq!(e.io_kind(), Some(io::ErrorKind::OutOfMemory));
        let os = e.source().and_then(|s| s.downcast_ref::<io::Error>()).expect("io source");
        assert_eq!(os.raw_os_error(), Some(12));
        let chain = gloo_testing::errors::chain_printed_once(&e);
        assert_eq!(chain.len(), 2, "{chain:?}");
        assert_eq!(e.clone(), e);

        let t = gloo_transport::Error::from(e);
        assert_eq!(t.to_string(), "I/O error with rank 2: mapping the segment");
        let os = t.source().and_then(|s| s.downcast_ref::<io::Error>()).expect("io source");
        assert_eq!(os.raw_os_error(), Some(12));
        assert_eq!(gloo_testing::errors::chain(&t), chain);
    }

    /// A channel's own deadline becomes a transport I/O error of kind `TimedOut` that says
    /// what was waited for, once.
    #[test]
    fn a_timeout_becomes_a_timed_out_io_error() {
        let e = Error::Timeout {
            peer: Some(Rank(1)),
            doing: "waiting for a peer to connect".into(),
            waited: Duration::from_secs(2),
        };
        let t = gloo_transport::Error::from(e);
        assert_eq!(t.io_kind(), Some(io::ErrorKind::TimedOut));
        let chain = gloo_testing::errors::chain_printed_once(&t);
        assert!(chain[0].contains("waiting for a peer to connect"), "{chain:?}");
    }
}
