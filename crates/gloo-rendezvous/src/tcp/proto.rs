//! The TCP store's wire format (sans-io: encoding and decoding only).
//!
//! Every frame is `len: u32 LE` (the bytes after this field) followed by the body. A request
//! body is `cmd: u8, req_id: u32 LE, args`; a response body is `status: u8, req_id: u32 LE,
//! payload`. Byte strings are `len: u32 LE` + bytes, integers explicit little-endian. Lengths
//! are checked against the bytes actually received, so nothing a peer sends sizes an
//! allocation beyond the frame it already delivered (itself bounded by [`MAX_FRAME`]).

use crate::error::{Error, Result};
use crate::store::{MAX_KEY_LEN, MAX_VALUE_LEN};

/// The largest frame either side accepts: one maximal value plus room for keys and headers.
pub(crate) const MAX_FRAME: usize = MAX_VALUE_LEN + 2 * MAX_KEY_LEN + 1024;

/// The largest frame accepted before a connection is authenticated.
pub(crate) const MAX_PREAUTH_FRAME: usize = 256;

/// Sent in the hello so a stray client of another protocol is told apart at once.
pub(crate) const MAGIC: &[u8; 9] = b"GLOOSTORE";

/// Whether `head` (at least 3 bytes where a store frame's length should be) is the start of
/// a TLS record instead: a handshake (0x16) or an alert (0x15), then a 3.x version. A store
/// frame's length never starts so on a connection's first frame (it would announce over
/// 197 KB for a hello or its answer), so there it tells a peer that speaks TLS.
pub(crate) fn looks_like_tls(head: &[u8]) -> bool {
    matches!(head, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
}

/// The protocol version.
pub(crate) const VERSION: u16 = 1;

/// Nonce length in the handshake.
pub(crate) const NONCE_LEN: usize = 32;

/// HMAC labels, distinct per direction so a client's proof cannot be replayed as a server's.
pub(crate) const CLIENT_LABEL: &[u8] = b"gloo-store v1 client proof";
pub(crate) const SERVER_LABEL: &[u8] = b"gloo-store v1 server proof";

/// Request commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Cmd {
    Hello = 0x01,
    Auth = 0x02,
    Set = 0x10,
    Get = 0x11,
    TryGet = 0x12,
    Wait = 0x13,
    Add = 0x14,
    CompareSet = 0x15,
    MultiSet = 0x16,
    Append = 0x17,
    Delete = 0x18,
    Ping = 0x19,
}

impl Cmd {
    pub(crate) fn from_u8(b: u8) -> Option<Cmd> {
        Some(match b {
            0x01 => Cmd::Hello,
            0x02 => Cmd::Auth,
            0x10 => Cmd::Set,
            0x11 => Cmd::Get,
            0x12 => Cmd::TryGet,
            0x13 => Cmd::Wait,
            0x14 => Cmd::Add,
            0x15 => Cmd::CompareSet,
            0x16 => Cmd::MultiSet,
            0x17 => Cmd::Append,
            0x18 => Cmd::Delete,
            0x19 => Cmd::Ping,
            _ => return None,
        })
    }
}

/// Response statuses.
pub(crate) const ST_OK: u8 = 0;
pub(crate) const ST_TIMEOUT: u8 = 1;
pub(crate) const ST_ERROR: u8 = 2;

/// Error kinds inside an `ST_ERROR` payload.
pub(crate) const ERR_INVALID: u8 = 1;
pub(crate) const ERR_PROTOCOL: u8 = 2;
pub(crate) const ERR_AUTH: u8 = 3;

/// Builds one frame; the length prefix is filled in by [`Frame::finish`].
#[derive(Debug)]
pub(crate) struct Frame {
    buf: Vec<u8>,
    /// Where this frame starts in `buf` (frames may be appended to a buffer of earlier ones).
    start: usize,
}

impl Frame {
    /// A request frame.
    pub(crate) fn request(cmd: Cmd, req_id: u32) -> Frame {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        buf.push(cmd as u8);
        buf.extend_from_slice(&req_id.to_le_bytes());
        Frame { buf, start: 0 }
    }

    /// A response frame.
    pub(crate) fn response(status: u8, req_id: u32) -> Frame {
        Self::response_after(Vec::with_capacity(64), status, req_id)
    }

    /// A response frame appended to `buf` (a connection's unsent output, whose allocation is
    /// reused).
    pub(crate) fn response_after(mut buf: Vec<u8>, status: u8, req_id: u32) -> Frame {
        let start = buf.len();
        buf.extend_from_slice(&[0; 4]);
        buf.push(status);
        buf.extend_from_slice(&req_id.to_le_bytes());
        Frame { buf, start }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// A length-prefixed byte string (callers bound lengths by the store limits, which fit
    /// in u32).
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }

    /// The request id written in the header.
    pub(crate) fn req_id(&self) -> u32 {
        let b = &self.buf[self.start + 5..self.start + 9];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The body length so far (without the prefix).
    pub(crate) fn body_len(&self) -> usize {
        self.buf.len() - self.start - 4
    }

    /// The finished frame (after any frames it was appended to), or an error if it exceeds
    /// [`MAX_FRAME`].
    pub(crate) fn finish(mut self) -> Result<Vec<u8>> {
        let len = self.body_len();
        if len > MAX_FRAME {
            return Err(Error::InvalidArgument {
                key: None,
                what: format!("request of {len} bytes exceeds the frame limit of {MAX_FRAME}"),
            });
        }
        let start = self.start;
        self.buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(self.buf)
    }

    /// Drop this frame, keeping the frames it was appended to.
    pub(crate) fn abandon(mut self) -> Vec<u8> {
        self.buf.truncate(self.start);
        self.buf
    }
}

/// Reads the fields of one received frame body, failing on truncation.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Protocol {
                detail: format!(
                    "truncated {}: needed {n} more bytes, had {}",
                    self.what,
                    self.buf.len()
                ),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A length-prefixed byte string; the length is checked against the bytes present.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A count of items that each take at least `min_item` bytes, checked against the bytes
    /// present (so a peer cannot make us reserve room for items it never sent).
    pub(crate) fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(Error::Protocol {
                detail: format!(
                    "{} claims {n} items but holds {} bytes",
                    self.what,
                    self.buf.len()
                ),
            });
        }
        Ok(n)
    }

    /// Fail unless every byte was consumed.
    pub(crate) fn end(&self) -> Result<()> {
        if !self.buf.is_empty() {
            return Err(Error::Protocol {
                detail: format!("{} has {} trailing bytes", self.what, self.buf.len()),
            });
        }
        Ok(())
    }
}

/// The HMAC of a handshake proof.
pub(crate) fn proof(
    token: &[u8],
    label: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(label);
    ctx.update(server_nonce);
    ctx.update(client_nonce);
    ctx.sign()
}

/// Verify a handshake proof in constant time.
pub(crate) fn verify_proof(
    token: &[u8],
    label: &[u8],
    server_nonce: &[u8],
    client_nonce: &[u8],
    mac: &[u8],
) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token);
    let mut msg = Vec::with_capacity(label.len() + server_nonce.len() + client_nonce.len());
    msg.extend_from_slice(label);
    msg.extend_from_slice(server_nonce);
    msg.extend_from_slice(client_nonce);
    ring::hmac::verify(&key, &msg, mac).is_ok()
}

/// Fresh random nonce.
pub(crate) fn nonce() -> Result<[u8; NONCE_LEN]> {
    use ring::rand::SecureRandom;
    let mut n = [0u8; NONCE_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut n)
        .map_err(|_| Error::Auth { detail: "the system random source failed".into() })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_told_from_store_frames() {
        // A ClientHello (TLS 1.0 record version, as TLS 1.3 sends it) and alerts.
        assert!(looks_like_tls(&[0x16, 0x03, 0x01, 0x00, 0xf4]));
        assert!(looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02]));
        assert!(!looks_like_tls(&[0x16, 0x03]));
        assert!(!looks_like_tls(&[0x17, 0x03, 0x03, 0x00]));
        assert!(!looks_like_tls(&[0x16, 0x03, 0x05, 0x00]));
        // The hello and a small answer.
        let mut f = Frame::request(Cmd::Hello, 0);
        f.raw(MAGIC).u16(VERSION).raw(&[0; NONCE_LEN]);
        assert!(!looks_like_tls(&f.finish().unwrap()));
        assert!(!looks_like_tls(&Frame::response(ST_OK, 0).finish().unwrap()));
    }

    #[test]
    fn frame_roundtrip_and_truncation() {
        let mut f = Frame::request(Cmd::Set, 7);
        f.bytes(b"key").bytes(b"").i64(-5);
        let buf = f.finish().unwrap();
        assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize, buf.len() - 4);
        let mut r = Reader::new(&buf[4..], "request");
        assert_eq!(Cmd::from_u8(r.u8().unwrap()), Some(Cmd::Set));
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.bytes().unwrap(), b"key");
        assert_eq!(r.bytes().unwrap(), b"");
        assert_eq!(r.i64().unwrap(), -5);
        r.end().unwrap();
        // A byte string claiming more than is there is an error, not an allocation.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0x7f, 1, 2], "request");
        assert!(matches!(r.bytes(), Err(Error::Protocol { .. })));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0x7f], "request");
        assert!(matches!(r.count(4), Err(Error::Protocol { .. })));
    }

    proptest::proptest! {
        /// Whatever bytes arrive, reading fields fails cleanly or succeeds; never a panic, and
        /// counts are checked against the bytes present.
        #[test]
        fn reader_never_panics(buf in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                               ops in proptest::collection::vec(0u8..6, 0..12)) {
            let mut r = Reader::new(&buf, "fuzz");
            for op in ops {
                let ok = match op {
                    0 => r.u8().is_ok(),
                    1 => r.u32().is_ok(),
                    2 => r.i64().is_ok(),
                    3 => r.bytes().is_ok(),
                    4 => r.count(4).map(|n| n * 4 <= buf.len()).unwrap_or(true),
                    _ => r.array::<32>().is_ok() || buf.len() < 32,
                };
                proptest::prop_assert!(ok || op != 4);
            }
        }
    }

    #[test]
    fn proofs_differ_by_direction_and_verify() {
        let s = [1u8; 32];
        let c = [2u8; 32];
        let p = proof(b"tok", CLIENT_LABEL, &s, &c);
        assert!(verify_proof(b"tok", CLIENT_LABEL, &s, &c, p.as_ref()));
        assert!(!verify_proof(b"tok", SERVER_LABEL, &s, &c, p.as_ref()));
        assert!(!verify_proof(b"other", CLIENT_LABEL, &s, &c, p.as_ref()));
    }
}
