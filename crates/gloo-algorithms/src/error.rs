//! The collective layer's error type.

use std::fmt;

use gloo_transport::{Fingerprint, Rank, Slot};

use crate::fingerprint::CallInfo;
use crate::select::Collective;

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a collective can fail with.
///
/// Timeouts, lost peers and aborts come from the transport, wrapped in
/// [`Transport`](Error::Transport) with the collective that was running; the transport's
/// error names the peer (a `Timeout` lists what was still pending, and from whom).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A caller passed an argument that cannot work; nothing was sent.
    InvalidArgument {
        /// The collective.
        collective: Collective,
        /// Which argument and why.
        what: String,
    },
    /// An algorithm name (from the environment or an option) that this collective does not
    /// have.
    UnknownAlgorithm {
        /// The collective.
        collective: Collective,
        /// Where the name came from (an environment variable or `Options::algorithm`).
        source: String,
        /// The name given.
        name: String,
        /// The valid names.
        valid: Vec<&'static str>,
    },
    /// A peer is running a different call (another collective, count, type, op, root, tag or
    /// call number) than this rank. The call returns this instead of a result computed from
    /// the wrong data; the buffers' contents are unspecified (a rank may have combined data
    /// from agreeing peers before the disagreement reached it).
    Mismatch {
        /// The collective this rank was running.
        collective: Collective,
        /// The peer whose message gave the mismatch away.
        peer: Rank,
        /// The message stream.
        slot: Slot,
        /// This rank's fingerprint.
        ours: Fingerprint,
        /// The peer's, when its message carried one.
        theirs: Option<Fingerprint>,
    },
    /// A peer sent a message of another length than this rank expected (e.g. alltoallv with
    /// send and receive counts that do not agree).
    LengthMismatch {
        /// The collective.
        collective: Collective,
        /// The peer.
        peer: Rank,
        /// The message stream.
        slot: Slot,
        /// Bytes expected.
        expected: usize,
        /// Bytes received.
        received: usize,
    },
    /// A call on a [`Group`](crate::Group) handle while another call on the same handle
    /// was running (a custom reduction that calls back into its group). Nothing was sent
    /// and the tag's call counter did not move.
    Busy {
        /// The collective this rank was asked to start.
        collective: Collective,
        /// The handle's tag.
        tag: u32,
    },
    /// [`Group::fork`](crate::Group::fork) on a tag that a live handle holds: two handles on
    /// one tag would let two threads run calls on it at once, which could pair up
    /// differently on different ranks and swap their data.
    TagInUse {
        /// The tag.
        tag: u32,
    },
    /// The transport failed (timeout, lost peer, abort, ...).
    Transport {
        /// The collective that was running.
        collective: Collective,
        /// The transport's error.
        source: gloo_transport::Error,
    },
}

impl Error {
    /// The transport error underneath, if this is one.
    pub fn transport(&self) -> Option<&gloo_transport::Error> {
        match self {
            Error::Transport { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether this is a transport timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.transport(), Some(gloo_transport::Error::Timeout { .. }))
    }

    /// Our call and the peer's, decoded, for a [`Mismatch`](Error::Mismatch).
    pub fn mismatch_calls(&self) -> Option<(CallInfo, Option<CallInfo>)> {
        match self {
            Error::Mismatch { ours, theirs, .. } => {
                Some((CallInfo::decode(ours), theirs.as_ref().map(CallInfo::decode)))
            }
            _ => None,
        }
    }

    pub(crate) fn invalid(collective: Collective, what: impl Into<String>) -> Error {
        Error::InvalidArgument { collective, what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument { collective, what } => {
                write!(f, "{collective}: invalid argument: {what}")
            }
            Error::UnknownAlgorithm { collective, source, name, valid } => write!(
                f,
                "{source}: {name:?} is not an algorithm for {collective}; valid: {}",
                valid.join(", ")
            ),
            Error::Mismatch { collective, peer, slot, ours, theirs } => {
                let o = CallInfo::decode(ours);
                write!(f, "{collective}: rank {peer} is running a different call on {slot}: ")?;
                match theirs {
                    None => write!(f, "ours is {o}, its message carried no fingerprint"),
                    Some(t) => {
                        let t = CallInfo::decode(t);
                        write!(f, "ours is {o}, theirs is {t}")?;
                        let d = o.differences(&t);
                        if !d.is_empty() {
                            write!(f, " ({})", d.join("; "))?;
                        } else if t.relayed {
                            write!(
                                f,
                                " (rank {peer} agrees with us but saw another rank disagree; \
                                 that rank's error names the difference)"
                            )?;
                        }
                        Ok(())
                    }
                }
            }
            Error::LengthMismatch { collective, peer, slot, expected, received } => write!(
                f,
                "{collective}: rank {peer} sent {received} bytes on {slot} where {expected} \
                 were expected (do the ranks' counts agree?)"
            ),
            Error::Busy { collective, tag } => write!(
                f,
                "{collective}: a call is already running on this handle (tag {tag}); a \
                 custom reduction must not call back into its group"
            ),
            Error::TagInUse { tag } => write!(
                f,
                "tag {tag} is held by another handle of this group; each thread needs a \
                 handle on a tag of its own (Group::fork)"
            ),
            Error::Transport { collective, source } => write!(f, "{collective}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Transport { source, .. } => Some(source),
            _ => None,
        }
    }
}
