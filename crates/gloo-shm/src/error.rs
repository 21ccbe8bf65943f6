//! The crate's error type.
#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

use gloo_transport::Rank;

/// A result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a shared-memory channel. Every variant names the peer
/// when one is known; what a peer wrote into shared memory is checked and reported here,
/// never panicked on.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The error's text, with what was being done.
        detail: String,
    },
}

impl Error {
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn io(peer: Option<Rank>, doing: &str, e: &std::io::Error) -> Error {
        Error::Io { peer, kind: e.kind(), detail: format!("{doing}: {e}") }
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
            Error::Io { peer, detail, .. } => write!(f, "I/O error with {}: {detail}", who(peer)),
        }
    }
}

impl std::error::Error for Error {}

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
            Error::Timeout { peer, doing, waited } => T::Io {
                peer,
                kind: std::io::ErrorKind::TimedOut,
                detail: format!("timed out after {waited:.1?} {doing}"),
            },
            Error::InvalidArgument { what } => T::InvalidArgument { what },
            Error::Io { peer, kind, detail } => T::Io { peer, kind, detail },
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
            Error::Io { kind, .. } => *kind,
        };
        std::io::Error::new(kind, e)
    }
}
