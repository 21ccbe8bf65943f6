//! The frame header codec and the incremental frame reader.

use crate::{Error, Fingerprint, Rank, Result};

/// `"GLOO"` read as a big-endian `u32`; written little-endian it is the bytes `4F 4F 4C 47`.
pub const MAGIC: u32 = 0x474C_4F4F;
/// The protocol version this build speaks. A peer with another version is refused.
pub const VERSION: u16 = 1;
/// The size of every frame header.
pub const HEADER_LEN: usize = 32;
/// Flag bit: a [`Fingerprint`] of [`Fingerprint::LEN`] bytes follows the header.
pub const FLAG_FP: u8 = 1;
/// The largest message sent eagerly (in one `Eager` frame).
pub const EAGER_MAX: u64 = 64 * 1024;
/// Eager bytes a sender may have outstanding per peer before the receiver returns credit.
pub const EAGER_CREDIT: u64 = 4 << 20;
/// The credit every eager message costs on top of its payload, so that a flood of empty
/// messages is bounded too.
pub const EAGER_OVERHEAD: u64 = 64;
/// The largest payload of one `Data` frame this implementation sends (a receiver accepts any
/// length that stays within the transfer).
pub const DATA_CHUNK: u64 = 4 << 20;
/// The longest `Abort` reason accepted.
pub const ABORT_REASON_MAX: u64 = 1024;
/// The length of a `Hello` payload.
pub const HELLO_LEN: u64 = 80;
/// The length of an `Auth` payload (an HMAC-SHA256 tag).
pub const AUTH_LEN: u64 = 32;
/// The most messages a receiver holds unmatched per peer: requests-to-send and eager
/// messages together (the eager ones are also bounded by [`EAGER_CREDIT`]). A peer that
/// sends more is refused, so a flood cannot make a rank hold more than this many messages'
/// bookkeeping (about 10 MB) besides the eager payloads.
pub const MAX_UNEXPECTED_RTS: usize = 1 << 16;

/// The kind of a frame (header byte 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Handshake greeting.
    Hello = 1,
    /// Handshake authenticator.
    Auth = 2,
    /// A whole small message.
    Eager = 3,
    /// Request to send a large message.
    Rts = 4,
    /// Clear to send a large message.
    Cts = 5,
    /// A chunk of a large message.
    Data = 6,
    /// Eager credit handed back.
    Credit = 7,
    /// Liveness.
    Heartbeat = 8,
    /// The sender aborted.
    Abort = 9,
    /// The sender is closing cleanly.
    Goodbye = 10,
}

impl Opcode {
    fn from_u8(b: u8) -> Option<Opcode> {
        Some(match b {
            1 => Opcode::Hello,
            2 => Opcode::Auth,
            3 => Opcode::Eager,
            4 => Opcode::Rts,
            5 => Opcode::Cts,
            6 => Opcode::Data,
            7 => Opcode::Credit,
            8 => Opcode::Heartbeat,
            9 => Opcode::Abort,
            10 => Opcode::Goodbye,
            _ => return None,
        })
    }
}

/// A decoded frame header. Field meanings per opcode are in the [module docs](super).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The frame's kind.
    pub opcode: Opcode,
    /// Flag bits ([`FLAG_FP`]).
    pub flags: u8,
    /// Header bytes 8..16.
    pub slot: u64,
    /// Header bytes 16..24.
    pub len: u64,
    /// Header bytes 24..32.
    pub arg: u64,
}

impl Header {
    /// A header with no flags.
    pub fn new(opcode: Opcode, slot: u64, len: u64, arg: u64) -> Header {
        Header { opcode, flags: 0, slot, len, arg }
    }

    /// Whether a fingerprint follows.
    pub fn has_fp(&self) -> bool {
        self.flags & FLAG_FP != 0
    }

    /// The number of payload bytes that follow the header (and fingerprint, if any).
    ///
    /// For `Rts` the `len` field is the length of the announced message, which travels later
    /// in `Data` frames, so no payload follows.
    pub fn payload_len(&self) -> u64 {
        match self.opcode {
            Opcode::Rts => 0,
            _ => self.len,
        }
    }

    /// The header's wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6] = self.opcode as u8;
        b[7] = self.flags;
        b[8..16].copy_from_slice(&self.slot.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b[24..32].copy_from_slice(&self.arg.to_le_bytes());
        b
    }

    /// Decode and validate a header: magic, version, opcode, flags and the per-opcode length
    /// limits. `peer` names the sender in the error.
    pub fn decode(b: &[u8; HEADER_LEN], peer: Option<Rank>) -> Result<Header> {
        let bad = |detail: String| Error::Protocol { peer, detail };
        let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if magic != MAGIC {
            return Err(bad(format!("bad frame magic {magic:#010x}")));
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        if version != VERSION {
            return Err(bad(format!("protocol version {version}, this build speaks {VERSION}")));
        }
        let opcode =
            Opcode::from_u8(b[6]).ok_or_else(|| bad(format!("unknown opcode {}", b[6])))?;
        let flags = b[7];
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        let h = Header { opcode, flags, slot: u64_at(8), len: u64_at(16), arg: u64_at(24) };
        if flags & !FLAG_FP != 0 {
            return Err(bad(format!("unknown flags {flags:#04x} on {opcode:?}")));
        }
        if h.has_fp() && !matches!(opcode, Opcode::Eager | Opcode::Rts) {
            return Err(bad(format!("fingerprint flag on {opcode:?}")));
        }
        let len_ok = match opcode {
            Opcode::Hello => h.len == HELLO_LEN,
            Opcode::Auth => h.len == AUTH_LEN,
            Opcode::Eager => h.len <= EAGER_MAX,
            Opcode::Rts | Opcode::Data => true,
            Opcode::Abort => h.len <= ABORT_REASON_MAX,
            Opcode::Cts | Opcode::Credit | Opcode::Heartbeat | Opcode::Goodbye => h.len == 0,
        };
        if !len_ok {
            return Err(bad(format!("{opcode:?} frame with length {}", h.len)));
        }
        Ok(h)
    }
}

/// Encode a header, followed by `fp` if given, into `out`; returns the bytes used (32 or 64).
pub fn encode_with_fp(
    mut h: Header,
    fp: Option<&Fingerprint>,
    out: &mut [u8; HEADER_LEN + Fingerprint::LEN],
) -> usize {
    if fp.is_some() {
        h.flags |= FLAG_FP;
    }
    out[..HEADER_LEN].copy_from_slice(&h.encode());
    match fp {
        Some(fp) => {
            out[HEADER_LEN..].copy_from_slice(&fp.0);
            HEADER_LEN + Fingerprint::LEN
        }
        None => HEADER_LEN,
    }
}

/// One step of [`FrameReader::feed`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// All input was consumed without completing anything.
    NeedMore,
    /// A header (with its fingerprint, if flagged) is complete. Its payload, if any, comes in
    /// the following steps.
    Header(Header, Option<Fingerprint>),
    /// Payload bytes of the current frame (a prefix of the input).
    Payload(&'a [u8]),
}

/// Splits a byte stream into frames, over input that arrives in arbitrary pieces.
///
/// It buffers only the fixed-size header and fingerprint; it never allocates, and payload
/// bytes are handed out as slices of the input (or read by the caller straight into their
/// destination, then reported with [`consume_payload`](FrameReader::consume_payload)).
#[derive(Debug)]
pub struct FrameReader {
    peer: Option<Rank>,
    buf: [u8; HEADER_LEN + Fingerprint::LEN],
    have: usize,
    header: Option<Header>,
    payload_left: u64,
}

impl FrameReader {
    /// A reader for frames from `peer` (named in errors).
    pub fn new(peer: Option<Rank>) -> FrameReader {
        FrameReader {
            peer,
            buf: [0; HEADER_LEN + Fingerprint::LEN],
            have: 0,
            header: None,
            payload_left: 0,
        }
    }

    /// Name the peer in later errors (once the handshake told who it is).
    pub fn set_peer(&mut self, peer: Rank) {
        self.peer = Some(peer);
    }

    /// Payload bytes of the current frame still to come (0 between frames).
    pub fn payload_left(&self) -> u64 {
        self.payload_left
    }

    /// Whether the reader is between frames (no partial header or payload held).
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// Record that the caller read `n` payload bytes itself (straight into their destination).
    ///
    /// # Panics
    ///
    /// If `n` exceeds [`payload_left`](FrameReader::payload_left), which would be a bug in the
    /// caller, never a consequence of peer input.
    pub fn consume_payload(&mut self, n: u64) {
        assert!(n <= self.payload_left, "consumed more payload than the frame holds");
        self.payload_left -= n;
    }

    /// Consume a prefix of `input`; returns how many bytes were used and what they made.
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Step<'a>)> {
        if self.payload_left > 0 {
            let n = (input.len() as u64).min(self.payload_left) as usize;
            if n == 0 {
                return Ok((0, Step::NeedMore));
            }
            self.payload_left -= n as u64;
            return Ok((n, Step::Payload(&input[..n])));
        }
        let mut used = 0;
        if self.have < HEADER_LEN {
            let n = (HEADER_LEN - self.have).min(input.len());
            self.buf[self.have..self.have + n].copy_from_slice(&input[..n]);
            self.have += n;
            used += n;
            if self.have < HEADER_LEN {
                return Ok((used, Step::NeedMore));
            }
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(&self.buf[..HEADER_LEN]);
            match Header::decode(&hb, self.peer) {
                Ok(h) => self.header = Some(h),
                Err(e) => {
                    self.have = 0;
                    return Err(e);
                }
            }
        }
        // The header is complete here; `header` was set when it completed.
        let Some(h) = self.header else {
            return Err(Error::Protocol { peer: self.peer, detail: "reader state lost".into() });
        };
        let want = if h.has_fp() { HEADER_LEN + Fingerprint::LEN } else { HEADER_LEN };
        if self.have < want {
            let n = (want - self.have).min(input.len() - used);
            self.buf[self.have..self.have + n].copy_from_slice(&input[used..used + n]);
            self.have += n;
            used += n;
            if self.have < want {
                return Ok((used, Step::NeedMore));
            }
        }
        let fp = h.has_fp().then(|| {
            let mut f = [0u8; Fingerprint::LEN];
            f.copy_from_slice(&self.buf[HEADER_LEN..]);
            Fingerprint(f)
        });
        self.have = 0;
        self.header = None;
        self.payload_left = h.payload_len();
        Ok((used, Step::Header(h, fp)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_layout() {
        let h = Header::new(Opcode::Data, 7, 1 << 40, u64::MAX);
        let b = h.encode();
        assert_eq!(&b[0..4], &[0x4F, 0x4F, 0x4C, 0x47]);
        assert_eq!(b[6], 6);
        assert_eq!(Header::decode(&b, None).unwrap(), h);
    }

    #[test]
    fn rejects_bad_magic_version_opcode_and_lengths() {
        let good = Header::new(Opcode::Heartbeat, 0, 0, 0).encode();
        let mut b = good;
        b[0] ^= 1;
        assert!(matches!(
            Header::decode(&b, Some(Rank(3))),
            Err(Error::Protocol { peer: Some(Rank(3)), .. })
        ));
        let mut b = good;
        b[4] = 9;
        assert!(Header::decode(&b, None).is_err());
        let mut b = good;
        b[6] = 200;
        assert!(Header::decode(&b, None).is_err());
        let mut b = good;
        b[7] = FLAG_FP;
        assert!(Header::decode(&b, None).is_err());
        let abort = Header::new(Opcode::Abort, 0, ABORT_REASON_MAX + 1, 0).encode();
        assert!(Header::decode(&abort, None).is_err());
        let eager = Header::new(Opcode::Eager, 0, EAGER_MAX + 1, 0).encode();
        assert!(Header::decode(&eager, None).is_err());
    }

    #[test]
    fn lengths_beyond_4_gib_pass_through_the_codec() {
        // A 5 GiB message: the header carries it as a u64, Rts has no payload of its own and
        // Data frames announce u64 payload lengths the reader counts down without allocating.
        let big = 5u64 << 30;
        let rts = Header::new(Opcode::Rts, 1, big, 9);
        assert_eq!(Header::decode(&rts.encode(), None).unwrap().len, big);
        let data = Header::new(Opcode::Data, 1 << 32, big, 9);
        let mut r = FrameReader::new(None);
        let bytes = data.encode();
        let (n, step) = r.feed(&bytes).unwrap();
        assert_eq!(n, HEADER_LEN);
        assert_eq!(step, Step::Header(data, None));
        assert_eq!(r.payload_left(), big);
        r.consume_payload(big - 3);
        let (n, step) = r.feed(&[1, 2, 3, 4]).unwrap();
        assert_eq!((n, step), (3, Step::Payload(&[1, 2, 3])));
        assert!(r.at_boundary());
    }
}
