//! Property tests of the sans-io wire protocol: codec round trips, decoding hostile bytes,
//! and the matching state machine against a naive model.

use gloo_transport::proto::{
    Body, FrameReader, HEADER_LEN, Handshake, HandshakeConfig, Header, Matcher, Message, Opcode,
    Outcome, PeerProto, Step, job_hash,
};
use gloo_transport::{Fingerprint, Rank, Slot};
use proptest::prelude::*;

fn opcode() -> impl Strategy<Value = Opcode> {
    prop_oneof![
        Just(Opcode::Eager),
        Just(Opcode::Rts),
        Just(Opcode::Cts),
        Just(Opcode::Data),
        Just(Opcode::Credit),
        Just(Opcode::Heartbeat),
        Just(Opcode::Goodbye),
    ]
}

/// Feeds `bytes` split at `cuts` through a reader, collecting headers and payload bytes;
/// stops at the first error.
/// Headers read, payload bytes read, and whether decoding failed.
type Decoded = (Vec<(Header, Option<Fingerprint>)>, Vec<u8>, bool);

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
                    match step {
                        Step::NeedMore => {}
                        Step::Header(h, fp) => headers.push((h, fp)),
                        Step::Payload(p) => payload.extend_from_slice(p),
                    }
                    piece = &piece[n..];
                }
                Err(_) => return (headers, payload, true),
            }
        }
    }
    (headers, payload, false)
}

proptest! {
    #[test]
    fn header_round_trips(op in opcode(), slot: u64, len in 0u64..=65536, arg: u64, fp: bool) {
        let len = match op { Opcode::Eager | Opcode::Rts | Opcode::Data => len, _ => 0 };
        let mut h = Header::new(op, slot, len, arg);
        if fp && matches!(op, Opcode::Eager | Opcode::Rts) {
            h.flags = 1;
        }
        prop_assert_eq!(Header::decode(&h.encode(), None).unwrap(), h);
    }

    #[test]
    fn frames_survive_any_split(
        frames in prop::collection::vec((0u64..4, prop::collection::vec(any::<u8>(), 0..300), any::<bool>()), 1..8),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut wire = Vec::new();
        let mut want_payload = Vec::new();
        let mut want_headers = Vec::new();
        for (slot, payload, with_fp) in &frames {
            let mut h = Header::new(Opcode::Eager, *slot, payload.len() as u64, 0);
            let fp = with_fp.then_some(Fingerprint([*slot as u8; 32]));
            if fp.is_some() {
                h.flags = 1;
            }
            wire.extend_from_slice(&h.encode());
            if let Some(f) = fp {
                wire.extend_from_slice(&f.0);
            }
            wire.extend_from_slice(payload);
            want_payload.extend_from_slice(payload);
            want_headers.push((h, fp));
        }
        let (headers, payload, failed) = read_all(&wire, &cuts);
        prop_assert!(!failed);
        prop_assert_eq!(headers, want_headers);
        prop_assert_eq!(payload, want_payload);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
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
        let (headers, _, _) = read_all(&wire, &cuts);
        // Every header that came out passes the per-connection checks or fails them with a
        // typed error; nothing panics.
        let mut p = PeerProto::new(Rank(1));
        for (h, fp) in headers {
            let _ = p.on_header(&h, fp);
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

#[test]
fn header_len_is_32() {
    assert_eq!(HEADER_LEN, 32);
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
        },
        Outcome::Failed { error, .. } => panic!("no fingerprints, yet a failure: {error}"),
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
