//! The ring over a real shared mapping, against a `VecDeque` model (proptest), and with a
//! peer that stores arbitrary indices: every value is either accepted consistently or a
//! typed `RingError`, never a panic or an out-of-bounds copy.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use gloo_shm::MappedRing;
use gloo_shm::ring::{self, RingError, RingMem};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Write these buffers (a vectored write).
    Write(Vec<Vec<u8>>),
    /// Read into a buffer of this size.
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..4)
            .prop_map(Op::Write),
        (0usize..9000).prop_map(Op::Read),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of writes and reads behaves as a bounded FIFO of bytes: a write takes
    /// exactly what fits, a read returns exactly the oldest bytes.
    #[test]
    fn the_ring_is_a_bounded_fifo(ops in proptest::collection::vec(op(), 1..200)) {
        const CAP: usize = 4096;
        let (mut p, mut c) = ring::split(MappedRing::private(CAP).unwrap());
        let mut model: VecDeque<u8> = VecDeque::new();
        for op in ops {
            match op {
                Op::Write(bufs) => {
                    let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
                    let want: usize = bufs.iter().map(Vec::len).sum();
                    let n = p.write(&slices).unwrap();
                    prop_assert_eq!(n, want.min(CAP - model.len()));
                    model.extend(bufs.concat().into_iter().take(n));
                    prop_assert_eq!(p.room().unwrap(), CAP - model.len());
                }
                Op::Read(len) => {
                    let mut buf = vec![0u8; len];
                    let n = c.read(&mut buf).unwrap();
                    prop_assert_eq!(n, len.min(model.len()));
                    let want: Vec<u8> = model.drain(..n).collect();
                    prop_assert_eq!(&buf[..n], &want[..]);
                }
            }
            prop_assert_eq!(c.available().unwrap(), model.len());
            prop_assert_eq!(p.written() - c.consumed(), model.len() as u64);
        }
    }

    /// A producer that stores any tail: the consumer accepts it only within a capacity of its
    /// head (then reads that many bytes, in bounds), and refuses the rest with TailOutOfRange.
    #[test]
    fn any_tail_is_accepted_in_range_or_refused(tail in any::<u64>(), near in 0u64..10_000) {
        const CAP: usize = 4096;
        let mem = MappedRing::private(CAP).unwrap();
        let mut c = ring::Consumer::new(mem.clone());
        for t in [tail, near] {
            mem.tail().store(t, Ordering::Release);
            match c.available() {
                Ok(n) => {
                    prop_assert!(n as u64 == t && t <= CAP as u64);
                    let mut buf = vec![0u8; CAP + 10];
                    prop_assert_eq!(c.read(&mut buf).unwrap(), n);
                }
                Err(RingError::TailOutOfRange { tail: got, .. }) => {
                    prop_assert_eq!(got, t);
                    prop_assert!(t.wrapping_sub(c.consumed()) > CAP as u64 || t < c.consumed());
                }
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }

    /// A consumer that stores any head: the producer accepts only a head between what it
    /// accepted before and its own tail.
    #[test]
    fn any_head_is_accepted_in_range_or_refused(written in 0usize..4096, head in any::<u64>()) {
        const CAP: usize = 4096;
        let mem = MappedRing::private(CAP).unwrap();
        let mut p = ring::Producer::new(mem.clone());
        prop_assert_eq!(p.write(&[&vec![1u8; written]]).unwrap(), written);
        mem.head().store(head, Ordering::Release);
        match p.room() {
            Ok(room) => {
                prop_assert!(head <= written as u64);
                prop_assert_eq!(room, CAP - (written - head as usize));
            }
            Err(RingError::HeadOutOfRange { .. }) => prop_assert!(head > written as u64),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }
}

/// A tail that goes back behind a value the consumer accepted is refused, even in range.
#[test]
fn a_tail_that_goes_back_is_refused() {
    let mem = MappedRing::private(4096).unwrap();
    let mut c = ring::Consumer::new(mem.clone());
    mem.tail().store(100, Ordering::Release);
    assert_eq!(c.available().unwrap(), 100);
    mem.tail().store(50, Ordering::Release);
    assert!(matches!(
        c.available(),
        Err(RingError::TailOutOfRange { tail: 50, accepted: 100, .. })
    ));
}

/// A head that goes back is refused.
#[test]
fn a_head_that_goes_back_is_refused() {
    let mem = MappedRing::private(4096).unwrap();
    let mut p = ring::Producer::new(mem.clone());
    p.write(&[&[0u8; 200]]).unwrap();
    mem.head().store(150, Ordering::Release);
    assert_eq!(p.room().unwrap(), 4096 - 50);
    mem.head().store(100, Ordering::Release);
    assert!(matches!(p.room(), Err(RingError::HeadOutOfRange { head: 100, accepted: 150, .. })));
}

/// Lends with impossible fields are refused: wrong position, too long, taken past the end.
#[test]
fn impossible_lends_are_refused() {
    let mem = MappedRing::private(4096).unwrap();
    let mut c = ring::Consumer::new(mem.clone());
    let set = |at: u64, addr: u64, len: u64, state: u64| {
        mem.lend_at().store(at, Ordering::Relaxed);
        mem.lend_addr().store(addr, Ordering::Relaxed);
        mem.lend_len().store(len, Ordering::Relaxed);
        mem.lend_state().store(state, Ordering::Release);
    };
    set(5, 0x1000, 10, 1 << 32);
    assert!(matches!(c.lent(), Err(RingError::BadLend { .. })), "lend past the stream position");
    set(0, 0x1000, u64::MAX, 1 << 32);
    assert!(matches!(c.lent(), Err(RingError::BadLend { .. })), "lend longer than MAX_LEND");
    set(0, u64::MAX - 5, 10, 1 << 32);
    assert!(matches!(c.lent(), Err(RingError::BadLend { .. })), "lend whose end overflows");
    set(0, 0x1000, 10, (1 << 32) | 11);
    assert!(matches!(c.lent(), Err(RingError::BadLend { .. })), "more taken than lent");
    set(0, 0x1000, 0, 1 << 32);
    assert!(matches!(c.lent(), Err(RingError::BadLend { .. })), "a lend of no bytes");
    set(0, 0x1000, 10, (1 << 32) | 4);
    let l = c.lent().unwrap().unwrap();
    assert_eq!((l.addr, l.remaining), (0x1004, 6));
    set(0, 0x1000, 10, 0);
    assert_eq!(c.lent().unwrap(), None, "state 0 is no lend");
}

/// Writes and reads larger than one publication piece (64 KiB), across the wrap: the bytes
/// come out in order, and the consumer sees each piece published as it is copied (its
/// `available` counts the whole write afterwards).
#[test]
fn large_writes_and_reads_cross_pieces_and_the_wrap() {
    const CAP: usize = 1 << 18;
    let (mut p, mut c) = ring::split(MappedRing::private(CAP).unwrap());
    let mut seed = 1u64;
    let mut next = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect()
    };
    // 100 KiB first, so that later transfers start off the ring's start and wrap.
    let mut sent = Vec::new();
    let mut got = Vec::new();
    for len in [100 << 10, 200 << 10, 250 << 10, 3, CAP] {
        let bytes = next(len);
        let n = p.write(&[&bytes]).unwrap();
        assert_eq!(n, len.min(CAP), "a write of {len} bytes into an empty ring");
        assert_eq!(c.available().unwrap(), n);
        sent.extend_from_slice(&bytes[..n]);
        let mut buf = vec![0u8; n + 7];
        assert_eq!(c.read(&mut buf).unwrap(), n);
        got.extend_from_slice(&buf[..n]);
        assert!(p.drained().unwrap(), "everything read, yet not drained");
    }
    assert!(got == sent, "bytes out of order or corrupt");
    assert_eq!(p.written(), c.consumed());
}

/// `drained` is true only once the consumer has read everything written.
#[test]
fn drained_waits_for_the_consumer() {
    let (mut p, mut c) = ring::split(MappedRing::private(4096).unwrap());
    assert!(p.drained().unwrap());
    p.write(&[b"abc"]).unwrap();
    assert!(!p.drained().unwrap());
    let mut b = [0u8; 2];
    c.read(&mut b).unwrap();
    assert!(!p.drained().unwrap());
    c.read(&mut b).unwrap();
    assert!(p.drained().unwrap());
}

/// A lend end to end: the consumer finds it once the ring is empty at its position, claims
/// bytes in steps (each claim moving the lend on), and the producer's end returns exactly the
/// bytes claimed; while it is out the producer writes nothing, and it caps at MAX_LEND.
#[test]
fn a_lend_is_found_claimed_in_steps_and_ended() {
    let mem = MappedRing::private(4096).unwrap();
    let (mut p, mut c) = ring::split(mem.clone());
    assert!(!p.lend(0x1000, 0), "an empty lend");
    assert_eq!(p.write(&[b"before"]).unwrap(), 6);
    assert!(p.lend(0x1000, 100));
    assert!(p.lending());
    assert!(!p.lend(0x9000, 10), "a second lend while one is out");
    assert_eq!(p.write(&[b"during"]).unwrap(), 0, "written past a lend");
    assert_eq!(p.lent_taken().unwrap(), 0);
    // The ring's bytes come first.
    assert_eq!(c.lent().unwrap(), None, "a lend found before the bytes ahead of it");
    let mut b = [0u8; 6];
    assert_eq!(c.read(&mut b).unwrap(), 6);
    let l = c.lent().unwrap().expect("the lend, now that the ring is empty");
    assert_eq!((l.addr, l.remaining), (0x1000, 100));
    assert!(c.claim(l, 30));
    assert_eq!(p.lent_taken().unwrap(), 30);
    // A claim against the state it read: a second claim with the same (now stale) view fails.
    assert!(!c.claim(l, 10), "a stale claim succeeded");
    let l = c.lent().unwrap().unwrap();
    assert_eq!((l.addr, l.remaining), (0x1000 + 30, 70));
    assert!(c.claim(l, 70));
    assert_eq!(c.lent().unwrap(), None, "a lend taken whole is no lend");
    assert_eq!(p.end_lend().unwrap(), 100);
    assert!(!p.lending());
    assert_eq!(p.end_lend().unwrap(), 0, "ending no lend");
    assert_eq!(p.lent_taken().unwrap(), 0, "taken with no lend out");
    assert_eq!(mem.lend_state().load(Ordering::Relaxed), 0, "the ended lend is withdrawn");
    assert_eq!(p.write(&[b"after"]).unwrap(), 5);
    // A claim on an ended lend loses: the producer's end came first.
    assert!(p.lend(0x2000, 10));
    let mut b = [0u8; 5];
    c.read(&mut b).unwrap();
    let l = c.lent().unwrap().unwrap();
    assert_eq!((l.addr, l.remaining), (0x2000, 10));
    assert_eq!(p.end_lend().unwrap(), 0);
    assert!(!c.claim(l, 4), "a claim on an ended lend");
    // A new lend has a new id, so a claim read from an older lend cannot land on it.
    assert!(p.lend(0x2000, 10));
    assert!(!c.claim(l, 4), "a claim from an older lend landed on a new one");
    assert_eq!(p.end_lend().unwrap(), 0);
    // One lend covers at most MAX_LEND bytes.
    assert!(p.lend(0x4000, ring::MAX_LEND * 2));
    let l = c.lent().unwrap().unwrap();
    assert_eq!(l.remaining, ring::MAX_LEND as u64);
    assert_eq!(p.end_lend().unwrap(), 0);
}

/// A consumer that stores nonsense into the lend state: the producer refuses it when it
/// reads it (a state of another lend, or more taken than lent).
#[test]
fn a_forged_lend_state_is_refused_by_the_producer() {
    let mem = MappedRing::private(4096).unwrap();
    let mut p = ring::Producer::new(mem.clone());
    for forged in [|s: u64| s + 11, |s: u64| s ^ (1 << 32), |_| u64::MAX] {
        assert!(p.lend(0x1000, 10));
        let state = mem.lend_state().load(Ordering::Relaxed);
        assert_eq!(state & 0xFFFF_FFFF, 0, "nothing taken yet");
        mem.lend_state().store(forged(state), Ordering::Release);
        assert!(matches!(p.lent_taken(), Err(RingError::BadLend { .. })), "{state:#x}");
        assert!(matches!(p.end_lend(), Err(RingError::BadLend { .. })), "{state:#x}");
        assert!(!p.lending());
    }
    // Exactly all of it taken is fine.
    assert!(p.lend(0x1000, 10));
    let state = mem.lend_state().load(Ordering::Relaxed);
    mem.lend_state().store(state + 10, Ordering::Release);
    assert_eq!(p.lent_taken().unwrap(), 10);
    assert_eq!(p.end_lend().unwrap(), 10);
}

/// A lend at another position than the consumer's: stale (the ring has moved on: bytes are
/// available past it) is no lend; with the ring empty it is a lie.
#[test]
fn a_lend_at_another_position_is_stale_or_refused() {
    let mem = MappedRing::private(4096).unwrap();
    let (mut p, mut c) = ring::split(mem.clone());
    assert!(p.lend(0x1000, 10));
    assert_eq!(p.end_lend().unwrap(), 0);
    // A state left behind at position 0 (as a peer might leave it), with bytes after it.
    mem.lend_state().store(7 << 32, Ordering::Release);
    p.write(&[b"xyz"]).unwrap();
    let mut b = [0u8; 3];
    c.read(&mut b).unwrap();
    p.write(&[b"more"]).unwrap();
    assert_eq!(c.lent().unwrap(), None, "bytes are available: no lend");
    let mut b = [0u8; 4];
    c.read(&mut b).unwrap();
    assert!(matches!(c.lent(), Err(RingError::BadLend { .. })), "a lend behind the stream");
}

/// Bytes in the ring come before a lend, even one a peer claims at the consumer's own
/// position (an honest producer writes nothing while a lend is out, so this is a lie that
/// must not reorder the stream).
#[test]
fn ring_bytes_come_before_a_lend_at_the_same_position() {
    let mem = MappedRing::private(4096).unwrap();
    let (mut p, mut c) = ring::split(mem.clone());
    p.write(&[b"abc"]).unwrap();
    mem.lend_at().store(0, Ordering::Relaxed);
    mem.lend_addr().store(0x1000, Ordering::Relaxed);
    mem.lend_len().store(10, Ordering::Relaxed);
    mem.lend_state().store(1 << 32, Ordering::Release);
    assert_eq!(c.lent().unwrap(), None, "a lend taken before the ring's bytes");
    let mut b = [0u8; 3];
    assert_eq!(c.read(&mut b).unwrap(), 3);
    assert_eq!(&b, b"abc");
}

/// A read of any size from an empty ring copies nothing, and a one-byte read takes exactly
/// the one byte published (the consumer's cached view of the tail never runs ahead of it).
#[test]
fn small_reads_take_only_published_bytes() {
    let mem = MappedRing::private(4096).unwrap();
    let (mut p, mut c) = ring::split(mem);
    for len in [1, 2, 4096] {
        let mut b = vec![0u8; len];
        assert_eq!(c.read(&mut b).unwrap(), 0, "read {len} bytes from an empty ring");
    }
    p.write(&[b"z"]).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(c.read(&mut b).unwrap(), 1);
    assert_eq!(&b, b"z");
    assert_eq!(c.read(&mut b).unwrap(), 0, "read past the one byte written");
    assert_eq!(c.consumed(), 1);
}

/// Every error names the values that were wrong.
#[test]
fn ring_errors_say_what_was_wrong() {
    let head = RingError::HeadOutOfRange { head: 9, accepted: 5, tail: 7 }.to_string();
    assert!(head.contains("9") && head.contains("[5, 7]"), "{head}");
    let tail =
        RingError::TailOutOfRange { tail: 99, head: 3, accepted: 4, capacity: 64 }.to_string();
    assert!(tail.contains("99") && tail.contains("[4, 3 + 64]"), "{tail}");
    let lend = RingError::BadLend { detail: "odd".into() }.to_string();
    assert!(lend.contains("bad lend: odd"), "{lend}");
}

/// The sleep handshake: announcing makes the word odd (a new value each sleep), the peer
/// rings once per sleep however many changes it makes, and clearing makes it even (no ring).
#[test]
fn the_sleep_word_rings_once_per_sleep() {
    use gloo_shm::ring::sleep;
    use std::sync::atomic::AtomicU64;
    let word = AtomicU64::new(0);
    let (mut count, mut rung) = (0u64, 0u64);
    assert!(!sleep::must_ring(&word, &mut rung), "rang an awake peer");
    let mut seen = Vec::new();
    for _ in 0..3 {
        sleep::announce(&word, &mut count);
        let v = word.load(Ordering::Relaxed);
        assert_eq!(v % 2, 1, "announced sleep is odd");
        assert_eq!(v, count);
        assert!(!seen.contains(&v), "a sleep value reused");
        seen.push(v);
        assert!(sleep::must_ring(&word, &mut rung), "did not ring a sleeper");
        assert!(!sleep::must_ring(&word, &mut rung), "rang twice for one sleep");
        sleep::clear(&word, &mut count);
        let v = word.load(Ordering::Relaxed);
        assert_eq!(v % 2, 0, "cleared is even");
        assert!(v > seen[seen.len() - 1], "the word counts up");
        assert!(!sleep::must_ring(&word, &mut rung), "rang an awake peer");
    }
}

/// A ring memory whose producer writes `bytes` into the ring just as the consumer looks at
/// the lend state (once armed): the interleaving that makes a lend the consumer finds at an
/// old position stale rather than a lie.
#[derive(Clone)]
struct WritesDuringLendCheck {
    mem: MappedRing,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    bytes: u64,
}

impl RingMem for WritesDuringLendCheck {
    fn tail(&self) -> &std::sync::atomic::AtomicU64 {
        self.mem.tail()
    }
    fn head(&self) -> &std::sync::atomic::AtomicU64 {
        self.mem.head()
    }
    fn lend_state(&self) -> &std::sync::atomic::AtomicU64 {
        if self.armed.swap(false, Ordering::Relaxed) {
            self.mem.tail().fetch_add(self.bytes, Ordering::Release);
        }
        self.mem.lend_state()
    }
    fn lend_at(&self) -> &std::sync::atomic::AtomicU64 {
        self.mem.lend_at()
    }
    fn lend_addr(&self) -> &std::sync::atomic::AtomicU64 {
        self.mem.lend_addr()
    }
    fn lend_len(&self) -> &std::sync::atomic::AtomicU64 {
        self.mem.lend_len()
    }
    fn capacity(&self) -> usize {
        self.mem.capacity()
    }
    fn write_at(&self, index: usize, src: &[u8]) {
        self.mem.write_at(index, src)
    }
    fn read_at(&self, index: usize, dst: &mut [u8]) {
        self.mem.read_at(index, dst)
    }
}

/// The consumer finds the ring empty, then a lend at a position behind its own: if the
/// producer wrote meanwhile (the lend ended and the stream moved on), that is a stale lend,
/// no error; the bytes are read next.
#[test]
fn a_lend_left_behind_while_the_producer_writes_is_stale() {
    let mem = MappedRing::private(4096).unwrap();
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racy = WritesDuringLendCheck { mem: mem.clone(), armed: armed.clone(), bytes: 4 };
    let mut c = ring::Consumer::new(racy);
    let mut p = ring::Producer::new(mem.clone());
    p.write(&[b"abc"]).unwrap();
    let mut b = [0u8; 3];
    assert_eq!(c.read(&mut b).unwrap(), 3);
    // A lend state left at position 0; the ring is empty at position 3 ...
    mem.lend_state().store(7 << 32, Ordering::Release);
    mem.lend_len().store(10, Ordering::Relaxed);
    armed.store(true, Ordering::Relaxed);
    // ... until the producer's next 4 bytes land as the consumer reads the lend state.
    mem.write_at(3, b"more");
    assert_eq!(c.lent().unwrap(), None);
    let mut b = [0u8; 4];
    assert_eq!(c.read(&mut b).unwrap(), 4);
    assert_eq!(&b, b"more");
}
