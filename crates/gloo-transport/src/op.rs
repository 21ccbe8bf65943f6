//! Point-to-point operations as values that borrow the caller's buffers.

use std::fmt;

use crate::{Fingerprint, Rank, Slot};

/// What an operation does, with the buffer it borrows.
#[non_exhaustive]
pub enum OpKind<'a> {
    /// Send `buf` to `to` on `slot`.
    Send {
        /// The destination.
        to: Rank,
        /// The message stream.
        slot: Slot,
        /// The bytes to send.
        buf: &'a [u8],
    },
    /// Receive one message from `from` on `slot` into `buf`.
    Recv {
        /// The source.
        from: Rank,
        /// The message stream.
        slot: Slot,
        /// Where the message lands; it may be longer than the message.
        buf: &'a mut [u8],
    },
    /// Receive one message on `slot` from whichever of `from` sends first.
    RecvAny {
        /// The candidate sources.
        from: &'a [Rank],
        /// The message stream.
        slot: Slot,
        /// Where the message lands; it may be longer than the message.
        buf: &'a mut [u8],
    },
}

/// Where an operation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpState {
    /// Not yet seen by a communicator.
    New,
    /// Posted to a communicator, which knows it by this id; not complete.
    Posted(u64),
    /// Complete: the peer it went to or came from, and the number of bytes moved.
    Done {
        /// The peer.
        peer: Rank,
        /// Bytes sent or received.
        len: usize,
    },
    /// Cancelled before it completed.
    Cancelled,
}

/// One send or receive in a batch handed to [`Communicator::progress`].
///
/// An `Op` borrows its buffer for its own lifetime `'a`. The communicator reads or writes that
/// buffer only while a call that was given the `Op` runs; it keeps no pointer to it afterwards.
///
/// [`Communicator::progress`]: crate::Communicator::progress
pub struct Op<'a> {
    kind: OpKind<'a>,
    state: OpState,
    fingerprint: Option<Fingerprint>,
}

impl<'a> Op<'a> {
    /// Send `buf` to `to` on `slot`.
    pub fn send(to: Rank, slot: Slot, buf: &'a [u8]) -> Op<'a> {
        Op { kind: OpKind::Send { to, slot, buf }, state: OpState::New, fingerprint: None }
    }

    /// Receive one message from `from` on `slot` into `buf` (which may be longer).
    pub fn recv(from: Rank, slot: Slot, buf: &'a mut [u8]) -> Op<'a> {
        Op { kind: OpKind::Recv { from, slot, buf }, state: OpState::New, fingerprint: None }
    }

    /// Receive one message on `slot` from whichever rank in `from` sends first.
    pub fn recv_any(from: &'a [Rank], slot: Slot, buf: &'a mut [u8]) -> Op<'a> {
        Op { kind: OpKind::RecvAny { from, slot, buf }, state: OpState::New, fingerprint: None }
    }

    /// Attach a fingerprint: on a send it travels with the message; on a receive it must
    /// equal the incoming message's, or the receive fails with
    /// [`Error::Mismatch`](crate::Error::Mismatch).
    pub fn with_fingerprint(mut self, fp: Fingerprint) -> Op<'a> {
        self.fingerprint = Some(fp);
        self
    }

    /// The fingerprint, if one was attached.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint
    }

    /// What the operation does.
    pub fn kind(&self) -> &OpKind<'a> {
        &self.kind
    }

    /// What the operation does, with mutable access to a receive buffer (for transports).
    pub fn kind_mut(&mut self) -> &mut OpKind<'a> {
        &mut self.kind
    }

    /// The slot.
    pub fn slot(&self) -> Slot {
        match self.kind {
            OpKind::Send { slot, .. }
            | OpKind::Recv { slot, .. }
            | OpKind::RecvAny { slot, .. } => slot,
        }
    }

    /// Whether this is a send.
    pub fn is_send(&self) -> bool {
        matches!(self.kind, OpKind::Send { .. })
    }

    /// The length of the borrowed buffer.
    pub fn buf_len(&self) -> usize {
        match &self.kind {
            OpKind::Send { buf, .. } => buf.len(),
            OpKind::Recv { buf, .. } | OpKind::RecvAny { buf, .. } => buf.len(),
        }
    }

    /// Where the operation stands.
    pub fn state(&self) -> OpState {
        self.state
    }

    /// Set the state (for transports).
    pub fn set_state(&mut self, state: OpState) {
        self.state = state;
    }

    /// Whether the operation completed.
    pub fn is_done(&self) -> bool {
        matches!(self.state, OpState::Done { .. })
    }

    /// For a completed operation: the peer and the number of bytes moved.
    pub fn completed(&self) -> Option<(Rank, usize)> {
        match self.state {
            OpState::Done { peer, len } => Some((peer, len)),
            _ => None,
        }
    }
}

impl fmt::Debug for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Op");
        match &self.kind {
            OpKind::Send { to, slot, buf } => {
                d.field("send_to", to).field("slot", slot).field("len", &buf.len())
            }
            OpKind::Recv { from, slot, buf } => {
                d.field("recv_from", from).field("slot", slot).field("cap", &buf.len())
            }
            OpKind::RecvAny { from, slot, buf } => {
                d.field("recv_any", from).field("slot", slot).field("cap", &buf.len())
            }
        };
        d.field("state", &self.state).finish()
    }
}
