//! The transport's error type.

use std::fmt;
use std::time::Duration;

use crate::{Fingerprint, Rank, Slot};

/// A result with the transport's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which side of an operation is still waiting, for [`Error::Timeout`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pending {
    /// A send to `to` on `slot` had not completed.
    Send {
        /// The destination.
        to: Rank,
        /// The message stream.
        slot: Slot,
    },
    /// A receive from one of `from` on `slot` had not completed.
    Recv {
        /// The ranks the message could come from.
        from: Vec<Rank>,
        /// The message stream.
        slot: Slot,
    },
}

impl fmt::Display for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pending::Send { to, slot } => write!(f, "send to rank {to} on {slot}"),
            Pending::Recv { from, slot } if from.len() == 1 => {
                write!(f, "receive from rank {} on {slot}", from[0])
            }
            Pending::Recv { from, slot } => {
                write!(f, "receive from any of ranks {from:?} on {slot}")
            }
        }
    }
}

/// Everything that can go wrong in the transport.
///
/// Every variant names the rank, peer or slot concerned; errors caused by what a peer sent are
/// returned here, never panicked on. The type is `Clone` so that one fatal error can be handed
/// to every thread waiting on a communicator.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The deadline passed with operations still pending.
    Timeout {
        /// The rank that waited.
        rank: Rank,
        /// How long it waited.
        waited: Duration,
        /// What was still pending (the first few, when there were many).
        pending: Vec<Pending>,
    },
    /// A peer died, froze, closed its connection or sent a reset.
    PeerLost {
        /// The peer.
        peer: Rank,
        /// What was observed.
        reason: String,
    },
    /// A peer sent bytes that break the protocol (or, before its handshake completed, a
    /// connection whose rank is not yet known did).
    Protocol {
        /// The peer, when known.
        peer: Option<Rank>,
        /// What was wrong.
        detail: String,
    },
    /// A peer failed authentication (bad or missing token, replayed handshake).
    Auth {
        /// The rank the connection claimed, when it got that far.
        peer: Option<Rank>,
        /// What was wrong.
        detail: String,
    },
    /// A received message belongs to a different operation than the receive expected.
    Mismatch {
        /// The sender.
        peer: Rank,
        /// The message stream.
        slot: Slot,
        /// The fingerprint of our receive.
        ours: Option<Fingerprint>,
        /// The fingerprint the peer sent.
        theirs: Option<Fingerprint>,
    },
    /// A message was longer than the buffer posted to receive it.
    MessageTooLong {
        /// The sender.
        peer: Rank,
        /// The message stream.
        slot: Slot,
        /// The message's length.
        len: u64,
        /// The posted buffer's length.
        capacity: u64,
    },
    /// The communicator was aborted, locally ([`Communicator::abort`](crate::Communicator::abort))
    /// or by a peer's `Abort` frame.
    Aborted {
        /// The rank that aborted.
        by: Rank,
        /// Its reason.
        reason: String,
    },
    /// An operation was cancelled after part of its message had moved, so the stream to this
    /// peer can no longer be trusted and was closed.
    Cancelled {
        /// The peer.
        peer: Rank,
        /// The message stream.
        slot: Slot,
    },
    /// A caller passed an argument that cannot work.
    InvalidArgument {
        /// Which argument and why.
        what: String,
    },
    /// The configuration cannot work (no such interface, insecure bind refused, ...).
    Config {
        /// What was wrong and how to fix it.
        detail: String,
    },
    /// An operating-system error.
    Io {
        /// The peer the socket belonged to, when there was one.
        peer: Option<Rank>,
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The error's text, with what was being done.
        detail: String,
    },
}

impl Error {
    /// An [`Error::Io`] from an `io::Error`, with what was being done.
    pub fn io(peer: Option<Rank>, doing: &str, e: &std::io::Error) -> Error {
        Error::Io { peer, kind: e.kind(), detail: format!("{doing}: {e}") }
    }

    /// An [`Error::Protocol`] for a known peer.
    pub fn protocol(peer: Rank, detail: impl Into<String>) -> Error {
        Error::Protocol { peer: Some(peer), detail: detail.into() }
    }

    /// An [`Error::InvalidArgument`].
    pub fn invalid(what: impl Into<String>) -> Error {
        Error::InvalidArgument { what: what.into() }
    }

    /// The peer this error concerns, when it concerns one.
    pub fn peer(&self) -> Option<Rank> {
        match self {
            Error::PeerLost { peer, .. }
            | Error::Mismatch { peer, .. }
            | Error::MessageTooLong { peer, .. }
            | Error::Cancelled { peer, .. } => Some(*peer),
            Error::Protocol { peer, .. } | Error::Auth { peer, .. } | Error::Io { peer, .. } => {
                *peer
            }
            Error::Aborted { by, .. } => Some(*by),
            _ => None,
        }
    }
}

fn opt_rank(r: &Option<Rank>) -> String {
    match r {
        Some(r) => format!("rank {r}"),
        None => "an unidentified peer".to_string(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout { rank, waited, pending } => {
                write!(f, "rank {rank} timed out after {waited:.1?}")?;
                if !pending.is_empty() {
                    f.write_str(" waiting for ")?;
                    for (i, p) in pending.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{p}")?;
                    }
                }
                Ok(())
            }
            Error::PeerLost { peer, reason } => write!(f, "lost rank {peer}: {reason}"),
            Error::Protocol { peer, detail } => {
                write!(f, "protocol error from {}: {detail}", opt_rank(peer))
            }
            Error::Auth { peer, detail } => {
                write!(f, "authentication failed for {}: {detail}", opt_rank(peer))
            }
            Error::Mismatch { peer, slot, ours, theirs } => write!(
                f,
                "rank {peer} sent a message on {slot} for a different operation \
                 (ours {ours:?}, theirs {theirs:?})"
            ),
            Error::MessageTooLong { peer, slot, len, capacity } => write!(
                f,
                "rank {peer} sent {len} bytes on {slot} but the receive posted {capacity}"
            ),
            Error::Aborted { by, reason } => write!(f, "aborted by rank {by}: {reason}"),
            Error::Cancelled { peer, slot } => write!(
                f,
                "an operation with rank {peer} on {slot} was cancelled mid-message; \
                 the connection was closed"
            ),
            Error::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            Error::Config { detail } => write!(f, "configuration error: {detail}"),
            Error::Io { peer, detail, .. } => {
                write!(f, "I/O error with {}: {detail}", opt_rank(peer))
            }
        }
    }
}

impl std::error::Error for Error {}
