//! Per-connection state after the handshake: eager credit, transfers, and the checks that
//! turn a frame header into something the transport may act on.

use crate::hash::{Map, Set};

use super::frame::{EAGER_CREDIT, EAGER_MAX, EAGER_OVERHEAD, Header, Opcode};
use super::matching::RecvId;
use crate::{Error, Fingerprint, Rank, Result, Slot};

/// The id a transport gives a posted send.
pub type SendId = u64;

/// The credit an eager message of `len` bytes costs.
pub fn eager_charge(len: u64) -> u64 {
    len + EAGER_OVERHEAD
}

/// A checked frame from the peer, with what the transport must do next.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A small message: read `len` payload bytes into an owned buffer (already charged
    /// against the peer's credit), then hand it to the matcher.
    Eager {
        /// The stream.
        slot: Slot,
        /// The sender's fingerprint.
        fp: Option<Fingerprint>,
        /// The payload length (at most [`EAGER_MAX`]).
        len: u64,
    },
    /// A request to send; hand it to the matcher.
    Rts {
        /// The stream.
        slot: Slot,
        /// The sender's fingerprint.
        fp: Option<Fingerprint>,
        /// The message length.
        len: u64,
        /// The transfer id to answer with `Cts`.
        xfer: u64,
    },
    /// The peer cleared our send `send`: stream its bytes in `Data` frames of transfer `xfer`.
    Cts {
        /// Our send.
        send: SendId,
        /// The transfer.
        xfer: u64,
    },
    /// `len` payload bytes of transfer `xfer` follow, for bytes `offset..offset + len` of the
    /// message; they go to receive `recv` (or nowhere, when `None`: a discarded transfer).
    Data {
        /// The transfer.
        xfer: u64,
        /// The receive, if the message is wanted.
        recv: Option<RecvId>,
        /// Where in the message.
        offset: u64,
        /// Payload length.
        len: u64,
    },
    /// The peer returned eager credit (already added).
    Credit,
    /// Liveness only.
    Heartbeat,
    /// The peer aborted; a reason of `len` bytes follows.
    Abort {
        /// Reason length (at most [`ABORT_REASON_MAX`](super::frame::ABORT_REASON_MAX)).
        len: u64,
    },
    /// The peer is closing cleanly.
    Goodbye,
}

#[derive(Debug)]
struct InXfer {
    recv: Option<RecvId>,
    len: u64,
    received: u64,
}

#[derive(Debug)]
struct OutXfer {
    send: SendId,
}

/// The data-phase protocol state of one connection (both directions).
#[derive(Debug)]
pub struct PeerProto {
    peer: Rank,
    send_credit: u64,
    charged: u64,
    to_return: u64,
    next_xfer: u64,
    awaiting_cts: Map<u64, OutXfer>,
    announced: Set<u64>,
    incoming: Map<u64, InXfer>,
}

impl PeerProto {
    /// Fresh state for the connection to `peer`.
    pub fn new(peer: Rank) -> PeerProto {
        PeerProto {
            peer,
            send_credit: EAGER_CREDIT,
            charged: 0,
            to_return: 0,
            next_xfer: 1,
            awaiting_cts: Map::default(),
            announced: Set::default(),
            incoming: Map::default(),
        }
    }

    /// The peer.
    pub fn peer(&self) -> Rank {
        self.peer
    }

    fn bad(&self, detail: String) -> Error {
        Error::protocol(self.peer, detail)
    }

    /// Check a frame header and update the state it changes.
    pub fn on_header(&mut self, h: &Header, fp: Option<Fingerprint>) -> Result<Incoming> {
        match h.opcode {
            Opcode::Hello | Opcode::Auth => {
                Err(self.bad(format!("{:?} frame after the handshake", h.opcode)))
            }
            Opcode::Eager => {
                let charge = eager_charge(h.len);
                let total = self.charged.checked_add(charge).filter(|t| *t <= EAGER_CREDIT);
                let Some(total) = total else {
                    return Err(self.bad(format!(
                        "eager message of {} bytes exceeds the credit of {EAGER_CREDIT} bytes",
                        h.len
                    )));
                };
                self.charged = total;
                Ok(Incoming::Eager { slot: Slot(h.slot), fp, len: h.len })
            }
            Opcode::Rts => {
                let xfer = h.arg;
                if self.incoming.contains_key(&xfer) || !self.announced.insert(xfer) {
                    return Err(self.bad(format!("transfer id {xfer} announced twice")));
                }
                Ok(Incoming::Rts { slot: Slot(h.slot), fp, len: h.len, xfer })
            }
            Opcode::Cts => {
                let xfer = h.arg;
                match self.awaiting_cts.remove(&xfer) {
                    Some(o) => Ok(Incoming::Cts { send: o.send, xfer }),
                    None => Err(self.bad(format!("unsolicited clear-to-send for transfer {xfer}"))),
                }
            }
            Opcode::Data => {
                let (xfer, offset, len) = (h.arg, h.slot, h.len);
                let Some(x) = self.incoming.get(&xfer) else {
                    return Err(self.bad(format!("unsolicited data for transfer {xfer}")));
                };
                if offset != x.received {
                    return Err(self.bad(format!(
                        "data for transfer {xfer} at offset {offset}, expected {}",
                        x.received
                    )));
                }
                match offset.checked_add(len) {
                    Some(end) if end <= x.len => {}
                    _ => {
                        return Err(self.bad(format!(
                            "data for transfer {xfer} at {offset}+{len} runs past its {} bytes",
                            x.len
                        )));
                    }
                }
                Ok(Incoming::Data { xfer, recv: x.recv, offset, len })
            }
            Opcode::Credit => {
                match self.send_credit.checked_add(h.arg).filter(|c| *c <= EAGER_CREDIT) {
                    Some(c) => self.send_credit = c,
                    None => {
                        return Err(
                            self.bad(format!("returned {} bytes of credit it never had", h.arg))
                        );
                    }
                }
                Ok(Incoming::Credit)
            }
            Opcode::Heartbeat => Ok(Incoming::Heartbeat),
            Opcode::Abort => Ok(Incoming::Abort { len: h.len }),
            Opcode::Goodbye => Ok(Incoming::Goodbye),
        }
    }

    /// Whether a message of `len` bytes may go eagerly now; if so its credit is taken.
    pub fn try_eager(&mut self, len: u64) -> bool {
        let charge = eager_charge(len);
        if len <= EAGER_MAX && charge <= self.send_credit {
            self.send_credit -= charge;
            true
        } else {
            false
        }
    }

    /// Start a rendezvous send: returns the transfer id to put in the `Rts` frame.
    pub fn start_rts(&mut self, send: SendId) -> u64 {
        let xfer = self.next_xfer;
        self.next_xfer += 1;
        self.awaiting_cts.insert(xfer, OutXfer { send });
        xfer
    }

    /// Forget a rendezvous send that was never announced; returns whether it was waiting.
    pub fn withdraw_rts(&mut self, xfer: u64) -> bool {
        self.awaiting_cts.remove(&xfer).is_some()
    }

    /// We answer the peer's `Rts` for `xfer` (of `len` bytes) with `Cts`; its data goes to
    /// `recv`, or is discarded when `None`.
    pub fn clear(&mut self, xfer: u64, recv: Option<RecvId>, len: u64) -> Result<()> {
        if !self.announced.remove(&xfer) {
            return Err(self.bad(format!("clear-to-send for unannounced transfer {xfer}")));
        }
        if len == 0 {
            return Ok(());
        }
        self.incoming.insert(xfer, InXfer { recv, len, received: 0 });
        Ok(())
    }

    /// `n` payload bytes of transfer `xfer` were delivered; returns `true` when the transfer
    /// is complete.
    pub fn data_received(&mut self, xfer: u64, n: u64) -> bool {
        let Some(x) = self.incoming.get_mut(&xfer) else { return true };
        x.received += n;
        if x.received >= x.len {
            self.incoming.remove(&xfer);
            true
        } else {
            false
        }
    }

    /// Bytes received so far of transfer `xfer`, if it is open.
    pub fn transfer_progress(&self, xfer: u64) -> Option<u64> {
        self.incoming.get(&xfer).map(|x| x.received)
    }

    /// Stop delivering transfer `xfer` to its receive: the rest is discarded.
    pub fn discard_transfer(&mut self, xfer: u64) {
        if let Some(x) = self.incoming.get_mut(&xfer) {
            x.recv = None;
        }
    }

    /// An eager message of `len` bytes was consumed (delivered or discarded). Returns the
    /// credit to hand back in a `Credit` frame now, if enough has accumulated (half the
    /// window) to be worth a frame.
    pub fn eager_consumed(&mut self, len: u64) -> Option<u64> {
        let charge = eager_charge(len);
        self.to_return += charge;
        if self.to_return >= EAGER_CREDIT / 2 {
            let r = self.to_return;
            self.to_return = 0;
            self.charged = self.charged.saturating_sub(r);
            Some(r)
        } else {
            None
        }
    }

    /// Eager credit we may still use.
    pub fn send_credit(&self) -> u64 {
        self.send_credit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsolicited_cts_and_data_are_protocol_errors() {
        let mut p = PeerProto::new(Rank(2));
        assert_eq!(p.peer(), Rank(2));
        let e = p.on_header(&Header::new(Opcode::Cts, 0, 0, 5), None).unwrap_err();
        assert!(matches!(e, Error::Protocol { peer: Some(Rank(2)), .. }));
        let e = p.on_header(&Header::new(Opcode::Data, 0, 1, 5), None).unwrap_err();
        assert!(matches!(e, Error::Protocol { peer: Some(Rank(2)), .. }));
    }

    /// A rendezvous send withdrawn before its `Cts` is forgotten: withdrawing it again
    /// finds nothing, and a `Cts` for it is then unsolicited.
    #[test]
    fn a_withdrawn_rendezvous_send_is_forgotten() {
        let mut p = PeerProto::new(Rank(4));
        let xfer = p.start_rts(11);
        let kept = p.start_rts(12);
        assert!(p.withdraw_rts(xfer));
        assert!(!p.withdraw_rts(xfer), "withdrawn twice");
        let e = p.on_header(&Header::new(Opcode::Cts, 0, 0, xfer), None).unwrap_err();
        assert!(matches!(e, Error::Protocol { peer: Some(Rank(4)), .. }), "{e}");
        assert!(p.withdraw_rts(kept), "the other send was forgotten too");
    }

    #[test]
    fn data_is_checked_against_the_transfer() {
        let mut p = PeerProto::new(Rank(1));
        let rts = Header::new(Opcode::Rts, 3, 100, 7);
        assert!(matches!(
            p.on_header(&rts, None).unwrap(),
            Incoming::Rts { len: 100, xfer: 7, .. }
        ));
        assert!(p.on_header(&rts, None).is_err(), "duplicate transfer id accepted");
        p.clear(7, Some(11), 100).unwrap();
        // Past the end, overflowing, and out of order.
        assert!(p.on_header(&Header::new(Opcode::Data, 0, 101, 7), None).is_err());
        assert!(p.on_header(&Header::new(Opcode::Data, u64::MAX, 2, 7), None).is_err());
        assert!(p.on_header(&Header::new(Opcode::Data, 5, 5, 7), None).is_err());
        let ok = p.on_header(&Header::new(Opcode::Data, 0, 60, 7), None).unwrap();
        assert_eq!(ok, Incoming::Data { xfer: 7, recv: Some(11), offset: 0, len: 60 });
        assert!(!p.data_received(7, 60));
        assert_eq!(p.transfer_progress(7), Some(60));
        // Discarded from here on: the rest still comes in order, to no receive.
        p.discard_transfer(7);
        let rest = p.on_header(&Header::new(Opcode::Data, 60, 40, 7), None).unwrap();
        assert_eq!(rest, Incoming::Data { xfer: 7, recv: None, offset: 60, len: 40 });
        assert!(p.data_received(7, 40));
        assert!(p.on_header(&Header::new(Opcode::Data, 100, 0, 7), None).is_err());
    }

    #[test]
    fn eager_credit_is_bounded_and_returned() {
        let mut p = PeerProto::new(Rank(1));
        let mut sent = 0;
        while p.try_eager(EAGER_MAX) {
            sent += 1;
        }
        assert_eq!(sent, EAGER_CREDIT / eager_charge(EAGER_MAX));
        // The receiving side refuses a peer that overruns the credit.
        let mut r = PeerProto::new(Rank(0));
        for _ in 0..sent {
            r.on_header(&Header::new(Opcode::Eager, 0, EAGER_MAX, 0), None).unwrap();
        }
        assert!(r.on_header(&Header::new(Opcode::Eager, 0, EAGER_MAX, 0), None).is_err());
        let mut back = 0;
        for _ in 0..sent {
            back += r.eager_consumed(EAGER_MAX).unwrap_or(0);
        }
        assert!(back >= EAGER_CREDIT / 2);
        p.on_header(&Header::new(Opcode::Credit, 0, 0, back), None).unwrap();
        assert!(p.try_eager(1));
        // Credit never granted is a protocol error.
        assert!(p.on_header(&Header::new(Opcode::Credit, 0, 0, EAGER_CREDIT), None).is_err());
    }

    /// The sender's credit starts at the window and each eager message takes its charge;
    /// the receiver hands credit back in one frame per half window, not per message.
    #[test]
    fn credit_is_charged_per_message_and_returned_per_half_window() {
        let mut p = PeerProto::new(Rank(1));
        assert_eq!(p.send_credit(), EAGER_CREDIT);
        assert!(p.try_eager(100));
        assert_eq!(p.send_credit(), EAGER_CREDIT - eager_charge(100));
        let mut r = PeerProto::new(Rank(0));
        let per_half = (EAGER_CREDIT / 2).div_ceil(eager_charge(1000));
        for i in 1..per_half {
            r.on_header(&Header::new(Opcode::Eager, 0, 1000, 0), None).unwrap();
            assert_eq!(r.eager_consumed(1000), None, "credit returned after {i} messages");
        }
        r.on_header(&Header::new(Opcode::Eager, 0, 1000, 0), None).unwrap();
        assert_eq!(r.eager_consumed(1000), Some(per_half * eager_charge(1000)));
    }
}
