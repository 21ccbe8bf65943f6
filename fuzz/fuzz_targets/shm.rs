//! gloo-shm's untrusted inputs: the set-up messages a peer sends over the pair's socket
//! (first byte even), and a ring whose shared words and data a peer scribbles on while our
//! producer and consumer use it (first byte odd). The ring runs a script of writes, reads,
//! lends, claims and scribbles: no panic, no read or write beyond what was asked or what
//! fits, indices that never go back, and while nobody scribbles, the bytes read are exactly
//! the bytes written (lent bytes included), in order.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use gloo_shm::ring::{Consumer, Producer, RingMem};
use libfuzzer_sys::fuzz_target;

const CAPACITY: usize = 64;

#[derive(Clone)]
struct Mem(Arc<([AtomicU64; 6], Vec<AtomicU8>)>);

impl Mem {
    fn new() -> Mem {
        Mem(Arc::new((Default::default(), (0..CAPACITY).map(|_| AtomicU8::new(0)).collect())))
    }
    fn word(&self, i: usize) -> &AtomicU64 {
        &self.0.0[i % 6]
    }
}

impl RingMem for Mem {
    fn tail(&self) -> &AtomicU64 {
        self.word(0)
    }
    fn head(&self) -> &AtomicU64 {
        self.word(1)
    }
    fn lend_state(&self) -> &AtomicU64 {
        self.word(2)
    }
    fn lend_at(&self) -> &AtomicU64 {
        self.word(3)
    }
    fn lend_addr(&self) -> &AtomicU64 {
        self.word(4)
    }
    fn lend_len(&self) -> &AtomicU64 {
        self.word(5)
    }
    fn capacity(&self) -> usize {
        CAPACITY
    }
    fn write_at(&self, index: usize, src: &[u8]) {
        for (i, b) in src.iter().enumerate() {
            self.0.1[index + i].store(*b, Ordering::Relaxed);
        }
    }
    fn read_at(&self, index: usize, dst: &mut [u8]) {
        for (i, b) in dst.iter_mut().enumerate() {
            *b = self.0.1[index + i].load(Ordering::Relaxed);
        }
    }
}

/// Where lent bytes live: the producer's "memory", addressed from `LEND_BASE`.
const LEND_BASE: u64 = 0x1000_0000;

fn ring(script: &[u8]) {
    let mem = Mem::new();
    let mut p = Producer::new(mem.clone());
    let mut c = Consumer::new(mem.clone());
    let mut next: u8 = 0; // the next byte value the producer sends
    let mut expect: u8 = 0; // the next byte value the consumer should see
    let mut scribbled = false;
    let mut lent: Vec<u8> = Vec::new();
    let (mut last_written, mut last_consumed) = (0u64, 0u64);
    let mut s = script.iter().copied();
    while let Some(op) = s.next() {
        let arg = usize::from(s.next().unwrap_or(0));
        match op % 8 {
            0 => {
                let buf: Vec<u8> = (0..arg % 100).map(|i| next.wrapping_add(i as u8)).collect();
                let room = p.room().ok();
                if let Ok(n) = p.write(&[&buf]) {
                    assert!(n <= buf.len());
                    if let Some(room) = room {
                        assert!(room <= CAPACITY);
                    }
                    next = next.wrapping_add(n as u8);
                }
            }
            1 => {
                let mut dst = vec![0u8; arg % 100];
                if let Ok(n) = c.read(&mut dst) {
                    assert!(n <= dst.len());
                    if !scribbled {
                        for b in &dst[..n] {
                            assert_eq!(*b, expect, "the ring reordered or lost bytes");
                            expect = expect.wrapping_add(1);
                        }
                    }
                }
            }
            2 | 3 => {
                // The peer stores a value into a word: small values near the indices, so
                // the checks' boundaries are reached, or anything.
                let v = match op % 2 {
                    0 => mem
                        .word(arg)
                        .load(Ordering::Relaxed)
                        .wrapping_add(u64::from(s.next().unwrap_or(0)))
                        .wrapping_sub(128),
                    _ => (0..8).fold(0u64, |v, _| v << 8 | u64::from(s.next().unwrap_or(0))),
                };
                mem.word(arg).store(v, Ordering::Relaxed);
                scribbled = true;
            }
            4 => {
                if !p.lending() {
                    lent = (0..arg.max(1)).map(|i| next.wrapping_add(i as u8)).collect();
                    assert!(p.lend(LEND_BASE, lent.len()));
                }
            }
            5 => match c.lent() {
                Ok(Some(l)) => {
                    let n = (arg as u64).min(l.remaining);
                    let off = l.addr.wrapping_sub(LEND_BASE);
                    let copied: Option<Vec<u8>> = (off..off.saturating_add(n))
                        .map(|i| lent.get(i as usize).copied())
                        .collect();
                    if c.claim(l, n) && !scribbled {
                        let copied = copied.expect("an honest lend points into the lent bytes");
                        for b in copied {
                            assert_eq!(b, expect, "lent bytes out of order");
                            expect = expect.wrapping_add(1);
                        }
                    }
                }
                Ok(None) | Err(_) => {}
            },
            6 => {
                if let Ok(taken) = p.end_lend() {
                    assert!(taken <= lent.len() as u64);
                    next = next.wrapping_add(taken as u8);
                }
            }
            _ => {
                let _ = p.drained();
                if let Ok(n) = c.available() {
                    assert!(n <= CAPACITY);
                }
                let _ = p.lent_taken();
            }
        }
        // Our own indices never go back, whatever the peer stores.
        assert!(p.written() >= last_written && c.consumed() >= last_consumed);
        (last_written, last_consumed) = (p.written(), c.consumed());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        gloo_shm::fuzzing::hello(rest);
    } else {
        ring(rest);
    }
});
