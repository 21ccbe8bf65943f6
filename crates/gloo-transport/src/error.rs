//! The transport's error type.

use std::fmt;
use std::io;
use std::sync::Arc;
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
///
/// An [`Io`](Error::Io) error keeps the operating system's `io::Error` (shared, so the error
/// stays `Clone`) and returns it as its [`source`](std::error::Error::source); its `Display`
/// says only what was being done and with which peer, so a reporter that walks the chain
/// (`anyhow`'s `{:#}`, or a loop over `source()`) prints each message once. Two errors are
/// equal when their fields are; two `io::Error`s are compared as [`io_errors_match`] does.
#[derive(Clone, Debug)]
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
    /// An operating-system error (or a deadline that passed while one was being retried:
    /// its kind is then `TimedOut`).
    Io {
        /// The peer the socket belonged to, when there was one.
        peer: Option<Rank>,
        /// What was being done (without the error's own text, which is `source`'s).
        doing: String,
        /// The error itself; [`io_kind`](Error::io_kind) gives its kind.
        source: Arc<io::Error>,
    },
}

/// Whether two `io::Error`s are the same error, as far as can be told: the same kind, the
/// same OS error code (or none) and the same text. (`io::Error` is not `PartialEq`; the
/// error types of this crate and the crates built on it compare the ones they hold this way.)
pub fn io_errors_match(a: &io::Error, b: &io::Error) -> bool {
    std::ptr::eq(a, b)
        || (a.kind() == b.kind()
            && a.raw_os_error() == b.raw_os_error()
            && a.to_string() == b.to_string())
}

/// An error and every error under it ([`source`](std::error::Error::source) after
/// `source`), on one line separated by `": "`, as `anyhow`'s `{:#}` shows them: for logs, and
/// for a message that must carry a whole chain as text (`Display` of an error says only its
/// own part).
///
/// ```
/// # use gloo_transport::{Error, ErrorChain, Rank};
/// let e = Error::io(Some(Rank(1)), "connecting to 127.0.0.1:9", std::io::ErrorKind::ConnectionRefused.into());
/// assert_eq!(e.to_string(), "I/O error with rank 1: connecting to 127.0.0.1:9");
/// assert_eq!(ErrorChain(&e).to_string(), "I/O error with rank 1: connecting to 127.0.0.1:9: connection refused");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// An [`Error::Io`] from an `io::Error`, with what was being done.
    pub fn io(peer: Option<Rank>, doing: impl Into<String>, e: io::Error) -> Error {
        Error::Io { peer, doing: doing.into(), source: Arc::new(e) }
    }

    /// The kind of the `io::Error` underneath, if this is an [`Error::Io`].
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
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

/// Field by field, with the `io::Error` of an [`Error::Io`] compared by [`io_errors_match`].
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        use Error::*;
        // One arm per variant of `self` (no wildcard), so a new variant cannot be left out.
        match self {
            Timeout { rank, waited, pending } => matches!(other,
                Timeout { rank: r, waited: w, pending: p } if (rank, waited, pending) == (r, w, p)),
            PeerLost { peer, reason } => matches!(other,
                PeerLost { peer: p, reason: r } if (peer, reason) == (p, r)),
            Protocol { peer, detail } => matches!(other,
                Protocol { peer: p, detail: d } if (peer, detail) == (p, d)),
            Auth { peer, detail } => matches!(other,
                Auth { peer: p, detail: d } if (peer, detail) == (p, d)),
            Mismatch { peer, slot, ours, theirs } => matches!(other,
                Mismatch { peer: p, slot: s, ours: o, theirs: t }
                    if (peer, slot, ours, theirs) == (p, s, o, t)),
            MessageTooLong { peer, slot, len, capacity } => matches!(other,
                MessageTooLong { peer: p, slot: s, len: l, capacity: c }
                    if (peer, slot, len, capacity) == (p, s, l, c)),
            Aborted { by, reason } => matches!(other,
                Aborted { by: b, reason: r } if (by, reason) == (b, r)),
            Cancelled { peer, slot } => matches!(other,
                Cancelled { peer: p, slot: s } if (peer, slot) == (p, s)),
            InvalidArgument { what } => matches!(other, InvalidArgument { what: w } if what == w),
            Config { detail } => matches!(other, Config { detail: d } if detail == d),
            Io { peer, doing, source } => matches!(other,
                Io { peer: p, doing: d, source: s }
                    if (peer, doing) == (p, d) && io_errors_match(source, s)),
        }
    }
}

impl Eq for Error {}
