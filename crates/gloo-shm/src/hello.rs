//! The set-up messages exchanged over a pair's unix socket, and their codec.
//!
//! ```text
//! dialer (higher rank)                  acceptor (lower rank)
//!   Hello  {job, rank, size, probe}  ->
//!                                    <-  Welcome {job, rank, size, capacity, probe, can_read_you}
//!                                        + [segment memfd, acceptor's doorbell]
//!   Ack    {can_read_you}            ->
//!   + [dialer's doorbell]
//! ```
//!
//! Either side may answer `Reject {reason}` instead and hang up. Each message is a
//! little-endian length (at most [`MAX_MSG`]) and a body with a fixed-size head and the job
//! id or reason as text. Decoding checks everything a peer could get wrong: a message from
//! the socket is untrusted like any other.
#![forbid(unsafe_code)]

/// "GLOOSHMH", little-endian.
const MAGIC: u64 = u64::from_le_bytes(*b"GLOOSHMH");
/// The handshake version.
pub(crate) const VERSION: u32 = 1;
/// The largest message body.
pub(crate) const MAX_MSG: usize = 1024;
const HEAD: usize = 8 + 4 + 1 + 1 + 4 + 4 + 8 + 8 + 8 + 2;

/// Which message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Hello = 1,
    Welcome = 2,
    Ack = 3,
    Reject = 4,
}

/// One set-up message. Fields a kind does not use are zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Msg {
    pub(crate) kind: Kind,
    /// The sender's rank.
    pub(crate) rank: u32,
    /// The group's size.
    pub(crate) size: u32,
    /// Ring capacity (Welcome).
    pub(crate) capacity: u64,
    /// Address of the sender's probe word (Hello, Welcome).
    pub(crate) probe_addr: u64,
    /// The value the receiver must read there to use single copy.
    pub(crate) probe_value: u64,
    /// Whether the sender can read the receiver's memory (Welcome, Ack).
    pub(crate) can_read_you: bool,
    /// The job id, or a Reject's reason.
    pub(crate) text: String,
}

impl Msg {
    pub(crate) fn new(kind: Kind) -> Msg {
        Msg {
            kind,
            rank: 0,
            size: 0,
            capacity: 0,
            probe_addr: 0,
            probe_value: 0,
            can_read_you: false,
            text: String::new(),
        }
    }

    /// The message with its length prefix. The text is cut to fit (a reason is advisory; a
    /// job id is checked to fit when the configuration is made).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut text = self.text.as_bytes();
        text = &text[..text.len().min(MAX_MSG - HEAD)];
        let mut b = Vec::with_capacity(4 + HEAD + text.len());
        b.extend_from_slice(&((HEAD + text.len()) as u32).to_le_bytes());
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.push(self.kind as u8);
        b.push(u8::from(self.can_read_you));
        b.extend_from_slice(&self.rank.to_le_bytes());
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.capacity.to_le_bytes());
        b.extend_from_slice(&self.probe_addr.to_le_bytes());
        b.extend_from_slice(&self.probe_value.to_le_bytes());
        b.extend_from_slice(&(text.len() as u16).to_le_bytes());
        b.extend_from_slice(text);
        b
    }

    /// Decode a body (without its length prefix).
    pub(crate) fn decode(body: &[u8]) -> Result<Msg, String> {
        if body.len() < HEAD || body.len() > MAX_MSG {
            return Err(format!("set-up message of {} bytes", body.len()));
        }
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().expect("4 bytes"));
        if u64_at(0) != MAGIC {
            return Err(format!("bad magic {:#x} (not a gloo-shm peer)", u64_at(0)));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(format!("handshake version {version}, ours is {VERSION}"));
        }
        let kind = match body[12] {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Ack,
            4 => Kind::Reject,
            k => return Err(format!("unknown message kind {k}")),
        };
        let can_read_you = match body[13] {
            0 => false,
            1 => true,
            v => return Err(format!("flag byte {v}")),
        };
        let text_len = u16::from_le_bytes([body[HEAD - 2], body[HEAD - 1]]) as usize;
        if HEAD + text_len != body.len() {
            return Err(format!("text of {text_len} bytes in a body of {}", body.len()));
        }
        let text = String::from_utf8(body[HEAD..].to_vec())
            .map_err(|_| "text is not UTF-8".to_string())?;
        Ok(Msg {
            kind,
            can_read_you,
            rank: u32_at(14),
            size: u32_at(18),
            capacity: u64_at(22),
            probe_addr: u64_at(30),
            probe_value: u64_at(38),
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_message_round_trips() {
        let mut m = Msg::new(Kind::Welcome);
        m.rank = 3;
        m.size = 8;
        m.capacity = 1 << 20;
        m.probe_addr = 0x7fff_0000_1234;
        m.probe_value = 42;
        m.can_read_you = true;
        m.text = "job-α".into();
        let bytes = m.encode();
        assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len() - 4);
        assert_eq!(Msg::decode(&bytes[4..]).unwrap(), m);
    }

    #[test]
    fn bad_messages_are_errors() {
        let good = Msg::new(Kind::Hello).encode();
        let body = &good[4..];
        assert!(Msg::decode(&body[..HEAD - 1]).unwrap_err().contains("bytes"));
        let mut b = body.to_vec();
        b[0] ^= 1;
        assert!(Msg::decode(&b).unwrap_err().contains("magic"));
        let mut b = body.to_vec();
        b[8] = 9;
        assert!(Msg::decode(&b).unwrap_err().contains("version"));
        let mut b = body.to_vec();
        b[12] = 7;
        assert!(Msg::decode(&b).unwrap_err().contains("kind"));
        let mut b = body.to_vec();
        b[13] = 2;
        assert!(Msg::decode(&b).unwrap_err().contains("flag"));
        let mut b = body.to_vec();
        b[HEAD - 2] = 5;
        assert!(Msg::decode(&b).unwrap_err().contains("text"));
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = Msg::decode(&body);
        }

        #[test]
        fn any_change_to_magic_or_version_is_refused(i in 0usize..12, x in 1u8..=255) {
            let good = Msg::new(Kind::Ack).encode();
            let mut b = good[4..].to_vec();
            b[i] ^= x;
            prop_assert!(Msg::decode(&b).is_err());
        }
    }
}
