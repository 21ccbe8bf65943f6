//! The sans-io wire protocol: frame codec, handshake, per-connection checks and matching.
//!
//! Nothing here touches a socket or a clock: callers feed bytes in, take bytes out, and pass
//! deadlines as arguments. The [engine](crate::engine) runs the data phase over every
//! transport's links; the handshake is run by the transports that need one (tcp), and a TLS
//! layer can sit between the socket and the engine unchanged.
//!
//! # Wire format (version 1)
//!
//! A connection is a byte stream of frames. Every frame starts with a fixed 32-byte header,
//! all fields little-endian:
//!
//! | bytes  | field   | type | meaning                                                    |
//! |--------|---------|------|------------------------------------------------------------|
//! | 0..4   | magic   | u32  | [`MAGIC`] = `0x474C4F4F` (bytes `4F 4F 4C 47`)              |
//! | 4..6   | version | u16  | [`VERSION`] = 1; any other value is refused                |
//! | 6      | opcode  | u8   | [`Opcode`], below; unknown values are refused              |
//! | 7      | flags   | u8   | bit 0 [`FLAG_FP`]; other bits must be zero                 |
//! | 8..16  | slot    | u64  | per opcode                                                 |
//! | 16..24 | len     | u64  | per opcode (usually the payload length)                    |
//! | 24..32 | arg     | u64  | per opcode                                                 |
//!
//! With `FLAG_FP` set (allowed on `Eager` and `Rts` only), a 32-byte [`Fingerprint`](crate::Fingerprint)
//! follows the header, before any payload. Then come `len` payload bytes, except for `Rts`,
//! which carries no payload.
//!
//! | opcode | name      | slot            | len                           | arg          | payload        |
//! |--------|-----------|-----------------|-------------------------------|--------------|----------------|
//! | 1      | Hello     | 0               | [`HELLO_LEN`] = 80            | 0            | see below      |
//! | 2      | Auth      | 0               | [`AUTH_LEN`] = 32             | 0            | HMAC-SHA256    |
//! | 3      | Eager     | message slot    | message length ≤ [`EAGER_MAX`]| 0            | the message    |
//! | 4      | Rts       | message slot    | message length (any u64)      | transfer id  | none           |
//! | 5      | Cts       | slot of the Rts | 0                             | transfer id  | none           |
//! | 6      | Data      | byte offset     | payload length                | transfer id  | message bytes  |
//! | 7      | Credit    | 0               | 0                             | bytes        | none           |
//! | 8      | Heartbeat | 0               | 0                             | 0            | none           |
//! | 9      | Abort     | 0               | ≤ [`ABORT_REASON_MAX`] = 1024 | 0            | UTF-8 reason   |
//! | 10     | Goodbye   | 0               | 0                             | 0            | none           |
//!
//! ## Handshake
//!
//! The higher rank of each pair connects to the lower one. The `Hello` payload (80 bytes) is
//! `job: [u8; 32]` (SHA-256 of the job id), `from: u32`, `to: u32`, `size: u32`,
//! `flags: u32` (bit 0 [`HELLO_TOKEN`]: this side authenticates with a token; bit 1: the
//! lazy handshake, below), and a fresh 32-byte nonce.
//!
//! 1. connector → `Hello { from: connector, to: acceptor, nonce_c }`
//! 2. acceptor → `Hello { from: acceptor, to: connector, nonce_a }`, then, in token mode,
//!    `Auth { HMAC-SHA256(token, "acceptor" || Hc || Ha) }`
//! 3. connector (token mode) → `Auth { HMAC-SHA256(token, "connector" || Hc || Ha) }`
//!
//! `Hc` and `Ha` are the two `Hello` frames as sent (header and payload, 112 bytes each), so
//! both nonces are covered and a recorded handshake does not verify against a fresh nonce.
//! MACs are compared in constant time. Each side refuses a `Hello` with another job, size,
//! security mode (token flag), a rank out of range or equal to its own, a `to` that is not
//! itself, or a connection in the wrong direction; the transport also refuses a second
//! connection from a rank already connected. In insecure mode no `Auth` frames are sent.
//! The handshake ends for the acceptor when the connector's `Auth` (insecure: its `Hello`)
//! verified, and for the connector when the acceptor's `Auth` (insecure: `Hello`) did.
//!
//! **Lazy handshake** (flag bit 1, set on both sides or refused; see [`Handshake::lazy`]):
//! either rank may dial, so the direction check is off, and the acceptor ends the handshake
//! with a verdict, one more `Auth` frame whose MAC (keyed with the token, or an empty key in
//! insecure mode) covers `Hc || Ha` under the label `"verdict: accept"` or
//! `"verdict: decline"`. Only an accepted connection carries data; the tcp transport's rule
//! for choosing (one connection per pair when both dial at once) is in its lazy module.
//!
//! ## Messages
//!
//! A message of at most [`EAGER_MAX`] (64 KiB) bytes goes in one `Eager` frame when the
//! sender holds enough credit: each eager message costs `len + `[`EAGER_OVERHEAD`] bytes of
//! a per-connection window of [`EAGER_CREDIT`] (4 MiB). The receiver hands consumed credit
//! back in `Credit` frames once at least half the window has accumulated. A receiver that
//! sees a peer exceed the window fails that peer with a protocol error. A sender without
//! credit uses the rendezvous path instead, so a full window never deadlocks.
//!
//! Larger messages (and eager-eligible ones without credit) announce themselves with
//! `Rts { slot, len, xfer }`, where `xfer` is a transfer id unique per connection and
//! direction. When a receive matches the announcement, the receiver answers
//! `Cts { xfer }` and the sender streams `Data { offset, len, xfer }` frames in order
//! (this implementation sends at most [`DATA_CHUNK`] bytes per frame, so control frames
//! interleave). A receiver discards (still reading) the data of a transfer it accepted only
//! to drop it (a mismatch, or a message longer than the buffer), so the sender completes.
//! A zero-length rendezvous message has no `Data` frames.
//!
//! Sends and receives match first-in, first-out per `(peer, slot)`; fingerprints are
//! checked by the three rules documented on [`Fingerprint`](crate::Fingerprint)
//! ([`Matcher`]).
//!
//! ## What a receiver refuses
//!
//! Each of these is an [`Error::Protocol`](crate::Error::Protocol) naming the peer, after
//! which the connection is closed: bad magic, another version, an unknown opcode or flag, a
//! fingerprint on another opcode, a length that breaks the per-opcode limits above (an
//! `Abort` reason over 1 KiB, an `Eager` over 64 KiB), a handshake frame after the
//! handshake, eager bytes beyond the credit window, credit never granted, a duplicate
//! transfer id, a `Cts` or `Data` for a transfer not open, `Data` out of order or past the
//! announced length (offsets are added with overflow checks), and more than
//! [`MAX_UNEXPECTED_RTS`] unmatched messages (`Rts` and `Eager` together) from one peer. No buffer is ever sized by a
//! peer-given length beyond these bounds: payloads go to the posted buffer or to a
//! credit-bounded eager buffer.
//!
//! ## Liveness and shutdown
//!
//! Each side sends `Heartbeat` about once a second when it has sent nothing else; a peer heard
//! from for nothing within the configured timeout is lost. `Abort` carries the reason a rank
//! gave up; `Goodbye` precedes a clean close (an end of stream without it is a lost peer).

mod frame;
mod handshake;
mod matching;
mod peer;

pub use frame::{
    ABORT_REASON_MAX, AUTH_LEN, CHECK_LEN, DATA_CHUNK, EAGER_CREDIT, EAGER_MAX, EAGER_OVERHEAD,
    FLAG_FP, FrameReader, HEADER_LEN, HELLO_LEN, Header, MAGIC, MAX_UNEXPECTED_RTS, Opcode, Step,
    VERSION, check_block, crc32c, crc32c_append, encode_with_fp,
};
pub use handshake::{
    HELLO_INTEGRITY, HELLO_TOKEN, Handshake, HandshakeConfig, Hello, LABEL_ACCEPTOR,
    LABEL_CONNECTOR, MIN_TOKEN_LEN, NONCE_LEN, fresh_nonce, job_hash, transcript_mac, weak_token,
};
pub use matching::{Body, Matcher, Message, Outcome, RecvId};
pub use peer::{Incoming, PeerProto, SendId, eager_charge};

/// The candidate senders of a posted receive: inline for up to four, so that posting a
/// receive allocates nothing in the common cases (one peer; any of a few).
pub(crate) type Ranks = smallvec::SmallVec<[crate::Rank; 4]>;
