//! The call context's own tests.

use super::*;
use crate::element::DType;
use crate::select::Algorithm;

/// The fingerprint of call `epoch` of a 16-element f32 sum allreduce on `tag`.
fn allreduce_fp(tag: u32, count: u64, epoch: u64) -> Fingerprint {
    let mut info = CallInfo::new(
        Collective::Allreduce,
        Some(DType::F32),
        1,
        Algorithm::Ring,
        None,
        count,
        tag,
        0,
    );
    info.epoch = epoch;
    info.encode()
}

/// An error belongs to the call that met it: a mismatch the transport found with a
/// leftover of another call on another tag (same call number by chance) is this call's
/// timeout; one with this very call run on another tag is a mismatch, as before.
#[test]
fn a_leftover_of_another_tag_is_a_timeout_not_a_mismatch() {
    let comms = gloo_transport::loopback::group(2, Default::default());
    let ctx = Ctx::new(
        &comms[0],
        Collective::Allreduce,
        5,
        allreduce_fp(5, 16, 3),
        Instant::now(),
        Instant::now(),
        &[Rank(1)],
    );
    let slot = ctx.slot(0);
    let mismatch = |theirs| gloo_transport::Error::Mismatch {
        peer: Rank(1),
        slot,
        ours: Some(ctx.fp),
        theirs: Some(theirs),
    };
    // The same call on tag 6: the ranks used different tags.
    let e = ctx.fail(mismatch(allreduce_fp(6, 16, 3)));
    assert!(matches!(e, Error::Mismatch { .. }), "{e:?}");
    // Another call (another count) on tag 6 that shares the call number: a timeout.
    let e = ctx.fail(mismatch(allreduce_fp(6, 99, 3)));
    assert!(e.is_timeout(), "{e:?}");
    assert!(gloo_transport::ErrorChain(&e).to_string().contains("from rank 1"), "{e:?}");
}

#[test]
fn partition_spreads_the_remainder_over_the_first_parts() {
    assert_eq!(partition(7, 3), vec![0..3, 3..5, 5..7]);
    assert_eq!(partition(2, 4), vec![0..1, 1..2, 2..2, 2..2]);
    assert_eq!(partition(0, 2), vec![0..0, 0..0]);
}

#[test]
fn carve_returns_pieces_in_the_order_asked() {
    let mut buf: Vec<u8> = (0..10).collect();
    let pieces = carve(&mut buf, &[6..8, 0..2, 4..4, 2..3]);
    assert_eq!(pieces[0], &[6, 7]);
    assert_eq!(pieces[1], &[0, 1]);
    assert!(pieces[2].is_empty());
    assert_eq!(pieces[3], &[2]);
}

#[test]
fn the_pool_reuses_the_smallest_buffer_that_fits_and_stays_bounded() {
    let pool = ScratchPool::default();
    {
        let mut a = Scratch::from_pool(&pool, 100);
        a.bytes()[99] = 7;
        let _b = Scratch::from_pool(&pool, 1000);
    }
    let mut c = Scratch::from_pool(&pool, 90);
    // The 100-byte buffer (13 words) came back, stale bytes and all.
    assert_eq!(c.buf.len(), 13);
    assert_eq!(c.bytes().len(), 90);
    drop(c);
    // A small scratch lives inline: the pool neither gives nor takes one.
    let held = pool.0.lock().unwrap().len();
    for _ in 0..10 {
        let s = Scratch::from_pool(&pool, INLINE_WORDS * 8);
        assert!(!s.buf.spilled());
    }
    assert_eq!(pool.0.lock().unwrap().len(), held);
    for len in [8, 16, 24, 32, 40, 48] {
        pool.give(vec![0; len]);
    }
    assert!(pool.0.lock().unwrap().len() <= POOL_BUFFERS);
    pool.give(vec![0; POOL_MAX_BYTES / 8 + 1]);
    assert!(pool.0.lock().unwrap().iter().all(|b| b.len() * 8 <= POOL_MAX_BYTES));
}

#[test]
fn scratch_is_aligned_for_every_element_type() {
    let mut s = Scratch::new(13);
    assert_eq!(s.bytes().len(), 13);
    assert_eq!(s.bytes().as_ptr() as usize % 8, 0);
}
