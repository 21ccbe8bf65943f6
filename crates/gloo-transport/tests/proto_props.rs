//! Property tests of the sans-io wire protocol: codec round trips, decoding hostile bytes,
//! and the matching state machine against a naive model.

use gloo_transport::proto::{
    ABORT_REASON_MAX, AUTH_LEN, Body, FLAG_FP, FrameReader, HEADER_LEN, HELLO_LEN, Handshake,
    HandshakeConfig, Header, MAGIC, Matcher, Message, Opcode, Outcome, PeerProto, Step, VERSION,
    encode_with_fp, job_hash,
};
use gloo_transport::{Fingerprint, Rank, Slot};
use proptest::prelude::*;

/// Every opcode, the handshake's and the abort's included.
fn opcode() -> impl Strategy<Value = Opcode> {
    prop_oneof![
        Just(Opcode::Hello),
        Just(Opcode::Auth),
        Just(Opcode::Eager),
        Just(Opcode::Rts),
        Just(Opcode::Cts),
        Just(Opcode::Data),
        Just(Opcode::Credit),
        Just(Opcode::Heartbeat),
        Just(Opcode::Abort),
        Just(Opcode::Goodbye),
    ]
}

/// A frame a peer may send, as the module docs describe it: an opcode, the header fields
/// within that opcode's limits, a fingerprint where one is allowed, and the payload the
/// header announces (none for `Rts`, whose `len` is the length of a message still to come).
#[derive(Clone, Debug)]
struct Frame {
    header: Header,
    fp: Option<Fingerprint>,
    payload: Vec<u8>,
}

impl Frame {
    fn wire(&self) -> Vec<u8> {
        let mut out = [0u8; HEADER_LEN + Fingerprint::LEN];
        let n = encode_with_fp(self.header, self.fp.as_ref(), &mut out);
        let mut w = out[..n].to_vec();
        w.extend_from_slice(&self.payload);
        w
    }
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        opcode(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        any::<[u8; 32]>(),
        prop::collection::vec(any::<u8>(), 0..300),
        any::<u64>(),
    )
        .prop_map(|(op, slot, arg, with_fp, fp, payload, rts_len)| {
            let (len, payload) = match op {
                Opcode::Hello => (HELLO_LEN, vec![7; HELLO_LEN as usize]),
                Opcode::Auth => (AUTH_LEN, vec![9; AUTH_LEN as usize]),
                Opcode::Eager | Opcode::Data => (payload.len() as u64, payload),
                Opcode::Abort => {
                    let p = payload[..payload.len().min(ABORT_REASON_MAX as usize)].to_vec();
                    (p.len() as u64, p)
                }
                // Any length: the message itself comes later, in Data frames.
                Opcode::Rts => (rts_len, Vec::new()),
                Opcode::Cts | Opcode::Credit | Opcode::Heartbeat | Opcode::Goodbye => {
                    (0, Vec::new())
                }
                other => unreachable!("{other:?} needs a frame strategy here"),
            };
            let fp =
                (with_fp && matches!(op, Opcode::Eager | Opcode::Rts)).then_some(Fingerprint(fp));
            Frame { header: Header::new(op, slot, len, arg), fp, payload }
        })
}

/// Feeds `bytes` split at `cuts` through a reader, collecting headers and payload bytes;
/// stops at the first error.
/// Headers read, payload bytes read, and the error decoding stopped at, if any.
type Decoded = (Vec<(Header, Option<Fingerprint>)>, Vec<u8>, Option<gloo_transport::Error>);

fn read_all(bytes: &[u8], cuts: &[usize]) -> Decoded {
    let mut r = FrameReader::new(Some(Rank(1)));
    let mut headers = Vec::new();
    let mut payload = Vec::new();
    let mut pieces = Vec::new();
    let mut last = 0;
    let mut sorted: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    sorted.sort_unstable();
    for c in sorted {
        pieces.push(&bytes[last..c]);
        last = c;
    }
    pieces.push(&bytes[last..]);
    for mut piece in pieces {
        while !piece.is_empty() {
            match r.feed(piece) {
                Ok((n, step)) => {
                    assert!(n > 0 && n <= piece.len(), "feed used {n} of {} bytes", piece.len());
                    match step {
                        Step::NeedMore => assert_eq!(n, piece.len(), "NeedMore left input"),
                        Step::Header(h, fp) => headers.push((h, fp)),
                        Step::Payload(p) => {
                            assert_eq!(p.len(), n);
                            payload.extend_from_slice(p)
                        }
                        other => panic!("a reader step this test does not know: {other:?}"),
                    }
                    piece = &piece[n..];
                }
                Err(e) => return (headers, payload, Some(e)),
            }
        }
    }
    (headers, payload, None)
}

proptest! {
    #[test]
    fn header_round_trips(f in frame()) {
        let bytes = f.header.encode();
        prop_assert_eq!(Header::decode(&bytes, None).unwrap(), f.header);
        // Every field sits where the wire format's table puts it, little-endian.
        prop_assert_eq!(&bytes[0..4], &MAGIC.to_le_bytes()[..]);
        prop_assert_eq!(&bytes[4..6], &VERSION.to_le_bytes()[..]);
        prop_assert_eq!(bytes[6], f.header.opcode as u8);
        prop_assert_eq!(bytes[7], f.header.flags);
        prop_assert_eq!(&bytes[8..16], &f.header.slot.to_le_bytes()[..]);
        prop_assert_eq!(&bytes[16..24], &f.header.len.to_le_bytes()[..]);
        prop_assert_eq!(&bytes[24..32], &f.header.arg.to_le_bytes()[..]);
    }

    /// Frames of every kind, cut anywhere, come out of the reader as they went in: each
    /// header with its fingerprint, and exactly the payload bytes the header announces (an
    /// `Rts` announcing gigabytes is followed at once by the next frame).
    #[test]
    fn frames_survive_any_split(
        frames in prop::collection::vec(frame(), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut wire = Vec::new();
        let mut want_payload = Vec::new();
        let mut want_headers = Vec::new();
        for f in &frames {
            wire.extend_from_slice(&f.wire());
            want_payload.extend_from_slice(&f.payload);
            let mut h = f.header;
            if f.fp.is_some() {
                h.flags |= FLAG_FP;
            }
            want_headers.push((h, f.fp));
        }
        let (headers, payload, failed) = read_all(&wire, &cuts);
        prop_assert!(failed.is_none(), "{:?}", failed);
        prop_assert_eq!(headers, want_headers);
        prop_assert_eq!(payload, want_payload);
    }

    /// Hostile bytes: the reader either refuses them with a protocol error naming the peer,
    /// or splits them into frames that are exactly the bytes it was given (every header
    /// re-encodes to the bytes it came from, and only the payload its header announced
    /// follows it); the per-connection checks then accept each header or refuse it with a
    /// protocol error naming the peer. Nothing panics.
    #[test]
    fn arbitrary_bytes_are_read_faithfully_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        valid_prefix: bool,
    ) {
        // Half the cases start with a valid header so the decoder gets past the magic check.
        let mut wire = Vec::new();
        if valid_prefix {
            wire.extend_from_slice(&Header::new(Opcode::Heartbeat, 0, 0, 0).encode());
        }
        wire.extend_from_slice(&bytes);
        let (headers, payload, failed) = read_all(&wire, &cuts);
        if let Some(e) = &failed {
            let is_protocol = matches!(e, gloo_transport::Error::Protocol { peer: Some(Rank(1)), .. });
            prop_assert!(is_protocol, "{}", e);
        }
        if valid_prefix {
            prop_assert!(!headers.is_empty(), "the valid first header was not read");
        }
        // Re-encode what came out; it is a prefix of the input (all of it, when nothing failed
        // and the last frame is complete).
        let mut again = Vec::new();
        let mut payload_at = 0;
        for (i, (h, fp)) in headers.iter().enumerate() {
            let mut out = [0u8; HEADER_LEN + Fingerprint::LEN];
            let mut plain = *h;
            plain.flags &= !FLAG_FP;
            let n = encode_with_fp(plain, fp.as_ref(), &mut out);
            prop_assert_eq!(fp.is_some(), h.has_fp());
            again.extend_from_slice(&out[..n]);
            let len = if h.opcode == Opcode::Rts { 0 } else { h.len as usize };
            let take = if i + 1 == headers.len() { len.min(payload.len() - payload_at) } else { len };
            again.extend_from_slice(&payload[payload_at..payload_at + take]);
            payload_at += take;
        }
        prop_assert_eq!(payload_at, payload.len(), "payload bytes outside any frame");
        prop_assert_eq!(&wire[..again.len()], &again[..]);
        let mut p = PeerProto::new(Rank(1));
        for (h, fp) in headers {
            if let Err(e) = p.on_header(&h, fp) {
                let is_protocol = matches!(e, gloo_transport::Error::Protocol { peer: Some(Rank(1)), .. });
                prop_assert!(is_protocol, "{}", e);
            }
        }
    }

    #[test]
    fn handshake_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let cfg = HandshakeConfig { job: job_hash("j"), me: Rank(0), size: 3, token: Some(b"k".to_vec()) };
        let mut a = Handshake::acceptor(cfg, [0; 32]);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match a.feed(rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest = &rest[n..],
            }
        }
        prop_assert!(a.done().is_none(), "random bytes authenticated");
    }
}

#[derive(Clone, Debug)]
enum Action {
    /// Post a receive from one peer (or from all, when `any`).
    Post { peer: u32, slot: u64, any: bool },
    /// A message arrives.
    Arrive { peer: u32, slot: u64 },
    /// Cancel the n-th receive posted so far (if still pending).
    Cancel { nth: usize },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0u32..3, 0u64..3, any::<bool>()).prop_map(|(peer, slot, any)| Action::Post {
            peer,
            slot,
            any
        }),
        (0u32..3, 0u64..3).prop_map(|(peer, slot)| Action::Arrive { peer, slot }),
        (0usize..40).prop_map(|nth| Action::Cancel { nth }),
    ]
}

/// The naive model: lists in order, scanned linearly.
#[derive(Default)]
struct Model {
    /// (recv id, candidate peers, slot), in post order.
    posted: Vec<(u64, Vec<u32>, u64)>,
    /// (message id, peer, slot), in arrival order.
    held: Vec<(u64, u32, u64)>,
}

impl Model {
    fn post(&mut self, id: u64, from: Vec<u32>, slot: u64) -> Option<(u64, u64)> {
        if let Some(i) = self.held.iter().position(|(_, p, s)| *s == slot && from.contains(p)) {
            let (m, _, _) = self.held.remove(i);
            return Some((id, m));
        }
        self.posted.push((id, from, slot));
        None
    }
    fn arrive(&mut self, m: u64, peer: u32, slot: u64) -> Option<(u64, u64)> {
        if let Some(i) = self.posted.iter().position(|(_, f, s)| *s == slot && f.contains(&peer)) {
            let (id, _, _) = self.posted.remove(i);
            return Some((id, m));
        }
        self.held.push((m, peer, slot));
        None
    }
    fn cancel(&mut self, id: u64) -> bool {
        let before = self.posted.len();
        self.posted.retain(|(r, _, _)| *r != id);
        before != self.posted.len()
    }
}

fn msg_id(o: &Outcome) -> (u64, u64) {
    match o {
        Outcome::Matched { recv, msg } => match &msg.body {
            Body::Eager(v) => (*recv, u64::from_le_bytes(v[..8].try_into().unwrap())),
            Body::Rts { xfer, .. } => (*recv, *xfer),
            other => panic!("a message body this test does not know: {other:?}"),
        },
        Outcome::Failed { error, .. } => panic!("no fingerprints, yet a failure: {error}"),
        other => panic!("an outcome this test does not know: {other:?}"),
    }
}

proptest! {
    #[test]
    fn matcher_agrees_with_the_model(actions in prop::collection::vec(action(), 0..80)) {
        let mut m = Matcher::new();
        let mut model = Model::default();
        let mut next_recv = 0u64;
        let mut next_msg = 0u64;
        let mut delivered = std::collections::HashSet::new();
        for a in actions {
            match a {
                Action::Post { peer, slot, any } => {
                    next_recv += 1;
                    let from: Vec<u32> = if any { vec![0, 1, 2] } else { vec![peer] };
                    let ranks: Vec<Rank> = from.iter().map(|p| Rank(*p)).collect();
                    let got = m.post(next_recv, &ranks, Slot(slot), u64::MAX, None).map(|o| msg_id(&o));
                    let want = model.post(next_recv, from, slot);
                    prop_assert_eq!(got, want);
                    if let Some((_, msg)) = got {
                        prop_assert!(delivered.insert(msg), "message {} delivered twice", msg);
                    }
                }
                Action::Arrive { peer, slot } => {
                    next_msg += 1;
                    // Alternate eager messages and requests to send.
                    let body = if next_msg.is_multiple_of(2) {
                        Body::Eager(next_msg.to_le_bytes().to_vec())
                    } else {
                        Body::Rts { len: 10, xfer: next_msg }
                    };
                    let out = m.arrive(Message::new(Rank(peer), Slot(slot), None, body)).unwrap();
                    prop_assert!(out.len() <= 1);
                    let got = out.first().map(msg_id);
                    let want = model.arrive(next_msg, peer, slot);
                    prop_assert_eq!(got, want);
                    if let Some((_, msg)) = got {
                        prop_assert!(delivered.insert(msg), "message {} delivered twice", msg);
                    }
                }
                Action::Cancel { nth } => {
                    let id = nth as u64 + 1;
                    prop_assert_eq!(m.cancel(id), model.cancel(id));
                }
            }
        }
        prop_assert_eq!(m.unexpected_len(), model.held.len());
    }

    #[test]
    fn fingerprint_rule_one_consumes_and_fails(epoch: u64, a: u8, b: u8) {
        let mut fa = [a; 32];
        fa[..8].copy_from_slice(&epoch.to_le_bytes());
        let mut fb = [b; 32];
        fb[..8].copy_from_slice(&epoch.to_le_bytes());
        let (fa, fb) = (Fingerprint(fa), Fingerprint(fb));
        let mut m = Matcher::new();
        m.arrive(Message::new(Rank(1), Slot(5), Some(fb), Body::Eager(vec![1]))).unwrap();
        let out = m.post(1, &[Rank(1)], Slot(5), 10, Some(fa)).unwrap();
        match out {
            Outcome::Matched { .. } => prop_assert_eq!(fa, fb),
            Outcome::Failed { error, consumed, .. } => {
                prop_assert!(fa != fb);
                prop_assert!(consumed.is_some());
                let is_mismatch = matches!(error, gloo_transport::Error::Mismatch { peer: Rank(1), .. });
                prop_assert!(is_mismatch);
            }
            other => panic!("an outcome this test does not know: {other:?}"),
        }
        prop_assert_eq!(m.unexpected_len(), 0);
    }
}

fn fp(epoch: u64, desc: u8) -> Fingerprint {
    let mut f = [desc; 32];
    f[..8].copy_from_slice(&epoch.to_le_bytes());
    Fingerprint(f)
}

#[test]
fn fingerprint_rule_two_fails_pending_receive_at_once() {
    let mut m = Matcher::new();
    assert!(m.post(1, &[Rank(1)], Slot::new(7, 0), 10, Some(fp(3, 1))).is_none());
    // Another slot of the same tag, same epoch, another description: the receive fails.
    let out = m
        .arrive(Message::new(Rank(1), Slot::new(7, 1), Some(fp(3, 2)), Body::Eager(vec![])))
        .unwrap();
    assert!(matches!(out.as_slice(), [Outcome::Failed { recv: 1, consumed: None, .. }]), "{out:?}");
    // Posting against a held conflicting message fails at once, too.
    let out = m.post(2, &[Rank(1)], Slot::new(7, 0), 10, Some(fp(3, 1)));
    assert!(matches!(out, Some(Outcome::Failed { recv: 2, .. })), "{out:?}");
    // Another epoch does not conflict.
    assert!(m.post(3, &[Rank(1)], Slot::new(7, 0), 10, Some(fp(4, 1))).is_none());
}

#[test]
fn fingerprint_rule_three_reports_mismatch_at_deadline() {
    let mut m = Matcher::new();
    m.arrive(Message::new(Rank(2), Slot::new(9, 0), Some(fp(5, 9)), Body::Eager(vec![]))).unwrap();
    assert!(m.post(1, &[Rank(2)], Slot::new(1, 0), 10, Some(fp(5, 1))).is_none());
    assert!(matches!(
        m.deadline_mismatch(1),
        Some(gloo_transport::Error::Mismatch { peer: Rank(2), .. })
    ));
    assert!(m.post(2, &[Rank(2)], Slot::new(1, 1), 10, Some(fp(6, 1))).is_none());
    assert_eq!(m.deadline_mismatch(2), None);
}

#[test]
fn message_too_long_is_reported_and_consumed() {
    let mut m = Matcher::new();
    m.arrive(Message::new(Rank(0), Slot(1), None, Body::Rts { len: 5 << 30, xfer: 1 })).unwrap();
    match m.post(1, &[Rank(0)], Slot(1), 1 << 30, None) {
        Some(Outcome::Failed {
            error: gloo_transport::Error::MessageTooLong { len, capacity, .. },
            consumed: Some(_),
            ..
        }) => {
            assert_eq!((len, capacity), (5 << 30, 1 << 30));
        }
        other => panic!("{other:?}"),
    }
}
