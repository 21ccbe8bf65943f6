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
///
/// `Display` of a [`Transport`](Error::Transport) error says only which collective failed;
/// the transport's error (which names the peer and what happened) is its
/// [`source`](std::error::Error::source), and the operating system's error, if any, that
/// one's. So a reporter that walks the chain (`anyhow`'s `{:#}`, a loop over `source()`, or
/// [`gloo_transport::ErrorChain`]) prints each message once.
/// [`transport`](Error::transport) gives the transport error itself.
///
/// `Debug` (what `fn main() -> Result<..>` prints) decodes a mismatch's fingerprints into
/// the calls they stand for and lists what differs, as `Display` does.
#[derive(Clone, PartialEq, Eq)]
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
    /// [`Group::subgroup`](crate::Group::subgroup) or [`Group::split`](crate::Group::split)
    /// on a rank that is not one of the members it lists or computes. Nothing was sent.
    NotAMember {
        /// This rank, in the numbering of the group the call was made on.
        rank: Rank,
        /// The members, in the same numbering.
        members: Vec<Rank>,
    },
    /// A member list that cannot make a group (empty, a rank out of range, a rank twice), or
    /// a [`fork`](crate::Group::fork) tag in the range reserved for subgroups. Nothing was
    /// sent.
    InvalidGroup {
        /// What is wrong.
        what: String,
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
            Error::NotAMember { rank, members } => {
                write!(f, "rank {rank} is not a member of the subgroup of ranks [")?;
                for (i, m) in members.iter().enumerate() {
                    write!(f, "{}{}", if i > 0 { ", " } else { "" }, m.0)?;
                }
                f.write_str("]")
            }
            Error::InvalidGroup { what } => write!(f, "invalid subgroup: {what}"),
            Error::Transport { collective, .. } => write!(f, "{collective} failed"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument { collective, what } => f
                .debug_struct("InvalidArgument")
                .field("collective", collective)
                .field("what", what)
                .finish(),
            Error::UnknownAlgorithm { collective, source, name, valid } => f
                .debug_struct("UnknownAlgorithm")
                .field("collective", collective)
                .field("source", source)
                .field("name", name)
                .field("valid", valid)
                .finish(),
            Error::Mismatch { collective, peer, slot, ours, theirs } => {
                // The fingerprints' bytes mean nothing to a reader: show the calls they
                // encode, in the words of `Display`, and what differs between them.
                let o = CallInfo::decode(ours);
                let t = theirs.as_ref().map(CallInfo::decode);
                let mut d = f.debug_struct("Mismatch");
                d.field("collective", collective)
                    .field("peer", peer)
                    .field("slot", slot)
                    .field("ours", &format_args!("{o}"));
                match &t {
                    Some(t) => d
                        .field("theirs", &format_args!("{t}"))
                        .field("differences", &o.differences(t)),
                    None => d.field("theirs", &format_args!("(no fingerprint)")),
                };
                d.finish()
            }
            Error::LengthMismatch { collective, peer, slot, expected, received } => f
                .debug_struct("LengthMismatch")
                .field("collective", collective)
                .field("peer", peer)
                .field("slot", slot)
                .field("expected", expected)
                .field("received", received)
                .finish(),
            Error::Busy { collective, tag } => {
                f.debug_struct("Busy").field("collective", collective).field("tag", tag).finish()
            }
            Error::TagInUse { tag } => f.debug_struct("TagInUse").field("tag", tag).finish(),
            Error::NotAMember { rank, members } => {
                f.debug_struct("NotAMember").field("rank", rank).field("members", members).finish()
            }
            Error::InvalidGroup { what } => {
                f.debug_struct("InvalidGroup").field("what", what).finish()
            }
            Error::Transport { collective, source } => f
                .debug_struct("Transport")
                .field("collective", collective)
                .field("source", source)
                .finish(),
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::element::DType;
    use crate::select::Algorithm;

    fn call(count: u64) -> Fingerprint {
        let c = CallInfo::new(
            Collective::Allreduce,
            Some(DType::F32),
            1,
            Algorithm::Ring,
            None,
            count,
            0,
            0,
        );
        c.encode()
    }

    /// `fn main() -> Result<..>` prints `Debug`: a mismatch reads as the two calls and what
    /// differs, not as fingerprint bytes.
    #[test]
    fn a_mismatch_debugs_as_the_calls_not_their_bytes() {
        let e = Error::Mismatch {
            collective: Collective::Allreduce,
            peer: Rank(2),
            slot: Slot(7),
            ours: call(10),
            theirs: Some(call(12)),
        };
        let d = format!("{e:?}");
        assert!(d.starts_with("Mismatch {"), "{d}");
        assert!(d.contains("peer: rank 2"), "{d}");
        assert!(d.contains("count: ours 10, theirs 12"), "{d}");
        assert!(!d.contains("Fingerprint("), "{d}");
        let none = Error::Mismatch {
            collective: Collective::Allreduce,
            peer: Rank(2),
            slot: Slot(7),
            ours: call(10),
            theirs: None,
        };
        assert!(format!("{none:?}").contains("no fingerprint"), "{none:?}");
    }

    /// A transport error is the source, and its message appears once when the chain is
    /// printed: in its own `Display`, not again in the wrapper's.
    #[test]
    fn a_transport_error_is_the_source_printed_once() {
        let inner = gloo_transport::Error::PeerLost { peer: Rank(3), reason: "reset".into() };
        let e = Error::Transport { collective: Collective::Broadcast, source: inner.clone() };
        let chain = gloo_testing::errors::chain_printed_once(&e);
        assert_eq!(chain, vec!["broadcast failed".to_string(), inner.to_string()]);
        assert_eq!(e.transport(), Some(&inner));
        let s = e.source().and_then(|s| s.downcast_ref::<gloo_transport::Error>());
        assert_eq!(s, Some(&inner));
    }

    /// Under a transport I/O error, the OS error is reachable down the chain, as it was.
    #[test]
    fn the_os_error_under_a_transport_error_is_reachable() {
        let os = std::io::Error::from_raw_os_error(104);
        let inner = gloo_transport::Error::io(Some(Rank(1)), "reading a frame", os);
        let e = Error::Transport { collective: Collective::Allreduce, source: inner };
        let chain = gloo_testing::errors::chain_printed_once(&e);
        assert_eq!(chain.len(), 3, "{chain:#?}");
        let os = gloo_testing::errors::deepest_io(&e).expect("the OS error");
        assert_eq!(
            (os.kind(), os.raw_os_error()),
            (std::io::ErrorKind::ConnectionReset, Some(104))
        );
    }
}
