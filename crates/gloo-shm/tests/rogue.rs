//! A rogue peer: it stores impossible values into the shared segment, hands over segments
//! that are not what set-up agreed, and speaks garbage on the set-up socket. Every case is a
//! typed error naming the peer (or a refusal), never a panic, a fault or a hang.
//!
//! Built with the `rogue` feature, which gives a channel a view that scribbles on its segment.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use gloo_shm::rogue::{self, Dir, RingWord, SideWord};
use gloo_shm::{Channel, Error, Interest, ShmConfig, ShmListener};
use gloo_transport::Rank;

const CAP: usize = 4096;

/// A victim (rank 0) and a rogue (rank 1).
fn victim_and_rogue() -> (Channel, Channel) {
    let (c0, c1) = configs("rogue", CAP);
    pair(c0, c1)
}

#[track_caller]
fn assert_protocol(r: Result<usize, Error>, what: &str) -> String {
    match r {
        Err(Error::Protocol { peer: Some(Rank(1)), detail }) => detail,
        other => panic!("{what}: want a protocol error naming rank 1, got {other:?}"),
    }
}

#[test]
fn a_tail_past_the_capacity_is_a_protocol_error() {
    let (mut v, r) = victim_and_rogue();
    r.rogue().ring_word(Dir::Outgoing, RingWord::Tail, CAP as u64 + 1);
    let d = assert_protocol(v.read(&mut [0u8; 16]), "tail past capacity");
    assert!(d.contains("tail"), "{d}");
    // The error is sticky: the stream cannot be trusted any more. Through the io shape it
    // keeps its kind and the typed error.
    assert!(matches!(v.read(&mut [0u8; 16]), Err(Error::Protocol { .. })));
    let io = v.read_io(&mut [0u8; 16]).unwrap_err();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    let typed = io.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(typed, Some(Error::Protocol { peer: Some(Rank(1)), .. })), "{io}");
    assert!(matches!(v.write(&[b"x"]), Err(Error::Protocol { .. })));
}

#[test]
fn a_tail_that_goes_back_is_a_protocol_error() {
    let (mut v, mut r) = victim_and_rogue();
    send_all(&mut r, &[7u8; 100], deadline(10)).unwrap();
    let mut buf = [0u8; 10];
    recv_exact(&mut v, &mut buf, deadline(10)).unwrap();
    r.rogue().ring_word(Dir::Outgoing, RingWord::Tail, 50);
    assert_protocol(v.read(&mut [0u8; 200]), "tail went back");
}

#[test]
fn a_head_past_our_tail_or_going_back_is_a_protocol_error() {
    // Past our tail (4106 after the writes below), far past it, and behind the accepted 10.
    for head in [CAP as u64 + 100, u64::MAX, 3] {
        let (mut v, mut r) = victim_and_rogue();
        // Fill the ring, let the rogue consume 10 bytes, so the victim must load its head.
        send_all(&mut v, &[1u8; CAP], deadline(10)).unwrap();
        recv_exact(&mut r, &mut [0u8; 10], deadline(10)).unwrap();
        assert_eq!(v.write(&[&[2u8; 10]]).unwrap(), 10);
        r.rogue().ring_word(Dir::Incoming, RingWord::Head, head);
        assert_protocol(v.write(&[&[3u8; 100]]), &format!("head {head}"));
    }
}

#[test]
fn lies_about_a_lend_are_protocol_errors() {
    // A lend of an address the rogue does not map, one too long, one at the wrong position.
    let cases: [(u64, u64, u64, &str); 3] = [
        (0x10, 100, 0, "does not map"),
        (0x1000, u64::MAX / 2, 0, "bad lend"),
        (0x1000, 100, 77, "bad lend"),
    ];
    for (addr, len, at, want) in cases {
        let (mut v, r) = victim_and_rogue();
        assert!(v.single_copy());
        let g = r.rogue();
        g.ring_word(Dir::Outgoing, RingWord::LendAt, at);
        g.ring_word(Dir::Outgoing, RingWord::LendAddr, addr);
        g.ring_word(Dir::Outgoing, RingWord::LendLen, len);
        g.ring_word(Dir::Outgoing, RingWord::LendState, 1 << 32);
        let d = assert_protocol(v.read(&mut [0u8; 64]), want);
        assert!(d.contains(want), "{want}: {d}");
    }
}

#[test]
fn a_lend_state_the_lender_did_not_write_is_a_protocol_error() {
    let (c0, c1) = configs("rogue-lend", CAP);
    let (mut v, r) = pair(c0.lend_min(1024), c1);
    // The victim lends 100 000 bytes; the rogue claims to have taken more than that.
    let out = vec![5u8; 100_000];
    let got = gloo_shm::lending(&mut [&mut v], |l| {
        assert_eq!(l.write(0, &[&out]).unwrap(), 0);
        let state = r.rogue().load_ring_word(Dir::Incoming, RingWord::LendState);
        r.rogue().ring_word(Dir::Incoming, RingWord::LendState, state + 200_000);
        l.write(0, &[&out])
    });
    let d = assert_protocol(got, "taken past the lend");
    assert!(d.contains("lend"), "{d}");
    drop(r);
}

#[test]
fn a_scribbled_header_after_set_up_changes_nothing() {
    let (mut v, mut r) = victim_and_rogue();
    let g = r.rogue();
    g.header_word(0, 0);
    g.header_word(2, 1 << 40);
    send_all(&mut r, b"still fine", deadline(10)).unwrap();
    let mut buf = [0u8; 10];
    recv_exact(&mut v, &mut buf, deadline(10)).unwrap();
    assert_eq!(&buf, b"still fine");
    send_all(&mut v, b"and back", deadline(10)).unwrap();
    let mut buf = [0u8; 8];
    recv_exact(&mut r, &mut buf, deadline(10)).unwrap();
    assert_eq!(&buf, b"and back");
}

/// The rogue keeps wiping the victim's "sleeping" word, so it never rings the victim's
/// doorbell; the victim's sleep is cut into bounded slices and it still gets the bytes.
#[test]
fn a_peer_that_never_rings_costs_latency_not_a_hang() {
    let (c0, c1) = configs("rogue-bell", CAP);
    let (mut v, r) =
        pair(c0.spin(Duration::ZERO, Duration::ZERO).peer_timeout(Duration::from_millis(200)), c1);
    let t = std::thread::spawn(move || {
        let mut r = r;
        let start = Instant::now();
        let mut sent = false;
        while start.elapsed() < Duration::from_secs(20) {
            r.rogue().side_word(true, SideWord::Sleeping, 0);
            if !sent && start.elapsed() > Duration::from_millis(100) {
                // Written without ringing: the victim's word reads "awake".
                sent = r.write(&[b"late"]).unwrap() == 4;
            }
            if sent && start.elapsed() > Duration::from_millis(400) {
                break;
            }
            std::thread::yield_now();
        }
        r
    });
    let mut buf = [0u8; 4];
    recv_exact(&mut v, &mut buf, deadline(30)).unwrap();
    assert_eq!(&buf, b"late");
    drop(t.join().unwrap());
}

#[test]
fn a_closed_flag_means_closed_after_the_bytes_before_it() {
    let (mut v, mut r) = victim_and_rogue();
    send_all(&mut r, b"abc", deadline(10)).unwrap();
    r.rogue().side_word(false, SideWord::Closed, 1);
    let mut buf = [0u8; 3];
    recv_exact(&mut v, &mut buf, deadline(10)).unwrap();
    v.wait(Interest::READ, deadline(10)).unwrap();
    assert_eq!(v.read(&mut buf), Err(Error::Closed { peer: Rank(1) }));
}

/// Segments that are not what set-up agreed: each is refused by the dialer, naming rank 0,
/// and the fake acceptor is told why.
#[test]
fn a_segment_made_by_someone_else_is_refused() {
    let len = gloo_shm_segment_len(CAP);
    let before = dev_shm();
    // A plain file in /dev/shm that "someone" created beforehand: unsealed, so it could be
    // truncated under our mapping.
    let path = format!("/dev/shm/gloo-rogue-precreated-{}", std::process::id());
    let plain =
        std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
    plain.set_len(len).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&path).unwrap();
    check_refused(plain, "seals");

    let chmodded = rogue_memfd(len);
    chmodded.set_permissions(std::fs::Permissions::from_mode(0o644)).unwrap();
    check_refused(chmodded, "mode 0644");

    let foreign = rogue_memfd(len);
    std::os::unix::fs::fchown(&foreign, Some(65534), Some(65534)).unwrap();
    check_refused(foreign, "owned by uid 65534");

    check_refused(rogue_memfd(len * 2), "bytes, want");
    assert_eq!(dev_shm(), before, "nothing left in /dev/shm");
}

/// A sealed memfd, mode 0600, as set-up makes them.
fn rogue_memfd(len: u64) -> std::fs::File {
    gloo_shm::rogue::memfd(len).unwrap()
}

fn gloo_shm_segment_len(cap: usize) -> u64 {
    gloo_shm::rogue::segment_len(cap) as u64
}

#[track_caller]
fn check_refused(file: std::fs::File, want: &str) {
    let (addr, fake) = rogue::fake_acceptor("rogue", 2, CAP as u64, file).unwrap();
    let l1 = ShmListener::bind(ShmConfig::new("rogue", Rank(1), 2)).unwrap();
    let e = l1.connect(Rank(0), &addr, deadline(10)).unwrap_err();
    match &e {
        Error::Refused { peer: Some(Rank(0)), detail } => {
            assert!(detail.contains(want), "{want}: {detail}")
        }
        other => panic!("{want}: want a refusal naming rank 0, got {other:?}"),
    }
    let told = fake.join().unwrap().unwrap();
    assert!(
        told.starts_with("Reject") && told.contains(want),
        "{want}: the acceptor was told {told:?}"
    );
}

/// Garbage on the set-up socket is a protocol error for the acceptor, and it keeps
/// listening: an honest dialer connects afterwards.
#[test]
fn garbage_on_the_set_up_socket_is_refused_and_the_listener_goes_on() {
    let l0 = ShmListener::bind(ShmConfig::new("garbage", Rank(0), 2)).unwrap();
    let addr = l0.address_bytes();
    for junk in
        [&b"\x10\x00\x00\x00GET / HTTP/1.1\r\n"[..], &[0xff; 64][..], &u32::MAX.to_le_bytes()[..]]
    {
        let _s = rogue::raw_dial(&addr, junk).unwrap();
        let e = l0.accept(deadline(10)).unwrap_err();
        assert!(matches!(e, Error::Protocol { peer: None, .. }), "{junk:?}: {e}");
    }
    // A dialer that says nothing and hangs up.
    drop(rogue::raw_dial(&addr, b"").unwrap());
    assert!(l0.accept(deadline(10)).is_err());
    // A dialer that says nothing and stays: the acceptor times out at its deadline.
    let _quiet = rogue::raw_dial(&addr, b"").unwrap();
    let e = l0.accept(Instant::now() + Duration::from_millis(200)).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    let t = std::thread::spawn(move || {
        ShmListener::bind(ShmConfig::new("garbage", Rank(1), 2))
            .unwrap()
            .connect(Rank(0), &addr, deadline(10))
            .unwrap()
    });
    let mut a = l0.accept(deadline(10)).unwrap();
    let mut b = t.join().unwrap();
    send_all(&mut b, b"ok", deadline(10)).unwrap();
    let mut buf = [0u8; 2];
    recv_exact(&mut a, &mut buf, deadline(10)).unwrap();
    assert_eq!(&buf, b"ok");
}

/// A dialer that hands back something other than an eventfd as its doorbell (a pipe, which
/// could block our rings of it), or none, is a protocol error naming it; the acceptor keeps
/// nothing of the pair.
#[test]
fn a_doorbell_that_is_not_an_eventfd_is_refused() {
    let l0 = ShmListener::bind(ShmConfig::new("bell", Rank(0), 2)).unwrap();
    let addr = l0.address_bytes();
    let (pipe_end, _other) = std::os::unix::net::UnixStream::pair().unwrap();
    for (bell, want) in
        [(Some(std::os::fd::OwnedFd::from(pipe_end)), "not an eventfd"), (None, "descriptors")]
    {
        let addr = addr.clone();
        let t = std::thread::spawn(move || rogue::fake_dialer(&addr, "bell", 1, 2, bell).unwrap());
        let e = l0.accept(deadline(10)).unwrap_err();
        assert!(
            matches!(&e, Error::Protocol { peer: Some(Rank(1)), detail } if detail.contains(want)),
            "{want}: {e}"
        );
        drop(t.join().unwrap());
    }
}
