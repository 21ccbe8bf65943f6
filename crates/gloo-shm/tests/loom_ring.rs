//! loom models of the shared-memory ring: bytes handed from producer to consumer through a
//! tiny ring that wraps (the Acquire/Release pairs on `tail` and `head`, checked byte by byte
//! for races by loom's cells), the sleep/wake handshake (a lost wake-up is a deadlock loom
//! reports), and lending (a claim that wins copied the bytes before the lender could change
//! them; every byte counts once).
//!
//! Built only with `RUSTFLAGS="--cfg loom"`, where the ring's atomics are loom's and its
//! memory is `LoomMem` (an `Arc`) instead of a mapping:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p gloo-shm --test loom_ring --release
//! ```
#![cfg(loom)]

use gloo_shm::ring::{self, LoomMem, sleep};
use loom::sync::Arc;
use loom::sync::Notify;
use loom::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// Five bytes through a 4-byte ring in writes of up to 3: the consumer sees 0, 1, 2, 3, 4 in
/// order under every interleaving, and loom finds no racing byte access.
#[test]
fn bytes_cross_a_wrapping_ring_in_order() {
    model(|| {
        let (mut p, mut c) = ring::split(LoomMem::new(4));
        let t = thread::spawn(move || {
            let data = [0u8, 1, 2, 3, 4];
            let mut sent = 0;
            while sent < data.len() {
                let end = (sent + 3).min(data.len());
                let n = p.write(&[&data[sent..end]]).unwrap();
                sent += n;
                if n == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 5 {
            let mut buf = [0u8; 2];
            let n = c.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            if n == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        t.join().unwrap();
    });
}

/// The consumer sleeps when the ring is empty; the producer rings only when the flag says
/// so. A wake-up lost to a missing fence leaves the consumer waiting forever: a deadlock.
#[test]
fn a_sleeping_consumer_is_never_missed() {
    model(|| {
        let mem = LoomMem::new(4);
        let flag = Arc::new(AtomicU64::new(0));
        let bell = Arc::new(Notify::new());
        let (mut p, mut c) = ring::split(mem);
        let (f2, b2) = (flag.clone(), bell.clone());
        let t = thread::spawn(move || {
            let mut rung = 0;
            for byte in [7u8, 8] {
                while p.write(&[&[byte]]).unwrap() == 0 {
                    thread::yield_now();
                }
                if sleep::must_ring(&f2, &mut rung) {
                    b2.notify();
                }
            }
        });
        let mut count = 0;
        let mut got = Vec::new();
        while got.len() < 2 {
            let mut buf = [0u8; 2];
            let n = c.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            if n > 0 {
                continue;
            }
            sleep::announce(&flag, &mut count);
            if c.available().unwrap() == 0 {
                bell.wait();
            }
            sleep::clear(&flag, &mut count);
        }
        assert_eq!(got, [7, 8]);
        t.join().unwrap();
    });
}

/// The producer lends two bytes, then ends the lend (at any point) and overwrites them. A
/// consumer claim that wins must have copied the original bytes, and the producer's count of
/// bytes taken equals the consumer's count of bytes claimed. (Loom does not explore load
/// buffering, so the claim's Release, which keeps its copy before the lender's later stores,
/// is argued in `ring.rs`, not found by this model; the counting is.)
#[test]
fn a_won_claim_copied_the_lent_bytes_and_counts_once() {
    model(|| {
        let lent_mem = Arc::new([AtomicU8::new(1), AtomicU8::new(2)]);
        let (mut p, mut c) = ring::split(LoomMem::new(4));
        let m2 = lent_mem.clone();
        let t = thread::spawn(move || {
            assert!(p.lend(0, 2));
            thread::yield_now();
            let taken = p.end_lend().unwrap();
            // The lend is over: the memory may change now.
            m2[0].store(9, Ordering::Relaxed);
            m2[1].store(9, Ordering::Relaxed);
            taken
        });
        let mut claimed = 0;
        for _ in 0..2 {
            if let Some(l) = c.lent().unwrap() {
                // One byte at a time, as a short process_vm_readv would.
                let b = lent_mem[l.addr as usize].load(Ordering::Relaxed);
                if c.claim(l, 1) {
                    assert_eq!(b, [1, 2][l.addr as usize], "a won claim copied changed bytes");
                    claimed += 1;
                }
            }
            thread::yield_now();
        }
        assert_eq!(t.join().unwrap(), claimed);
    });
}
