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
    set(0, 0x1000, 10, (1 << 32) | 4);
    let l = c.lent().unwrap().unwrap();
    assert_eq!((l.addr, l.remaining), (0x1004, 6));
    set(0, 0x1000, 10, 0);
    assert_eq!(c.lent().unwrap(), None, "state 0 is no lend");
}
