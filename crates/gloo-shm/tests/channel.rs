//! Channels between two threads of this process: bytes both ways, wrap-around, sleeping and
//! waking, close, lending (single copy), and set-up refusals.

mod common;

use std::time::Duration;

use common::*;
use gloo_shm::{Error, Interest, ShmConfig, ShmListener, SingleCopy, lending, wait};
use gloo_transport::Rank;

/// The io shape an engine's link uses: `WouldBlock` for nothing yet and for a full ring,
/// vectored writes, and `input_waiting` once bytes are there.
#[test]
fn the_io_shape_blocks_and_moves_bytes() {
    use std::io::{ErrorKind, IoSlice};
    let (c0, c1) = configs("io", 4096);
    let (mut a, mut b) = pair(c0, c1);
    assert_eq!(a.read_io(&mut [0u8; 4]).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(!a.input_waiting());
    assert_eq!(b.write_io(&[IoSlice::new(b"head"), IoSlice::new(b"er")]).unwrap(), 6);
    assert!(a.input_waiting());
    let mut buf = [0u8; 6];
    assert_eq!(a.read_io(&mut buf).unwrap(), 6);
    assert_eq!(&buf, b"header");
    assert_eq!(b.write_io(&[IoSlice::new(&[0u8; 5000])]).unwrap(), 4096);
    assert_eq!(b.write_io(&[IoSlice::new(b"x")]).unwrap_err().kind(), ErrorKind::WouldBlock);
}

#[test]
fn small_messages_ping_pong() {
    let (c0, c1) = configs("ping", 4096);
    let (mut a, mut b) = pair(c0, c1);
    assert_eq!((a.peer(), b.peer()), (Rank(1), Rank(0)));
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for i in 0..2000usize {
            let len = 1 + i % 64;
            recv_exact(&mut b, &mut buf[..len], deadline(30)).unwrap();
            assert!(buf[..len].iter().all(|&x| x == i as u8), "round {i}");
            send_all(&mut b, &buf[..len], deadline(30)).unwrap();
        }
    });
    let mut buf = [0u8; 64];
    for i in 0..2000usize {
        let len = 1 + i % 64;
        send_all(&mut a, &vec![i as u8; len], deadline(30)).unwrap();
        recv_exact(&mut a, &mut buf[..len], deadline(30)).unwrap();
        assert!(buf[..len].iter().all(|&x| x == i as u8), "echo {i}");
    }
    t.join().unwrap();
}

/// Both ends stream 8 MiB at once through 4 KiB rings: every byte arrives in order across
/// thousands of wrap-arounds, and neither side deadlocks on a full ring.
#[test]
fn large_streams_both_ways_at_once() {
    let (c0, c1) = configs("stream", 4096);
    let (a, b) = pair(c0, c1);
    const LEN: usize = 8 << 20;
    let run = |mut ch: gloo_shm::Channel, seed_out: u64, seed_in: u64| {
        std::thread::spawn(move || {
            let out = pattern(seed_out, LEN);
            let want = pattern(seed_in, LEN);
            let mut got = vec![0u8; LEN];
            let (mut sent, mut recvd) = (0, 0);
            let d = deadline(60);
            while sent < LEN || recvd < LEN {
                let mut moved = false;
                if sent < LEN {
                    // Odd sizes, so writes straddle the ring's end.
                    let end = (sent + 1000 + sent % 3001).min(LEN);
                    let n = ch.write(&[&out[sent..end]]).unwrap();
                    sent += n;
                    moved |= n > 0;
                }
                if recvd < LEN {
                    let n = ch.read(&mut got[recvd..]).unwrap();
                    recvd += n;
                    moved |= n > 0;
                }
                if !moved {
                    let interest = Interest { read: recvd < LEN, write: sent < LEN };
                    ch.wait(interest, d).unwrap();
                }
            }
            assert!(got == want, "stream {seed_in} corrupted");
        })
    };
    let ta = run(a, 1, 2);
    let tb = run(b, 2, 1);
    ta.join().unwrap();
    tb.join().unwrap();
}

/// With no spinning, a reader goes to sleep on its doorbell; the writer's bytes wake it.
#[test]
fn a_sleeping_reader_is_woken_by_the_writer() {
    let (c0, c1) = configs("sleep", 4096);
    let (mut a, mut b) = pair(c0.spin(Duration::ZERO, Duration::ZERO), c1);
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 5];
        recv_exact(&mut a, &mut buf, deadline(30)).unwrap();
        buf
    });
    // Give the reader time to fall asleep (not asserted: it may also find the bytes first).
    std::thread::sleep(Duration::from_millis(50));
    send_all(&mut b, b"wake!", deadline(30)).unwrap();
    assert_eq!(&t.join().unwrap(), b"wake!");
}

#[test]
fn a_closed_peer_is_read_to_the_end_then_closed() {
    let (c0, c1) = configs("close", 4096);
    let (mut a, mut b) = pair(c0, c1);
    send_all(&mut b, b"last words", deadline(10)).unwrap();
    drop(b);
    let mut buf = [0u8; 10];
    recv_exact(&mut a, &mut buf, deadline(10)).unwrap();
    assert_eq!(&buf, b"last words");
    a.wait(Interest::READ, deadline(10)).unwrap();
    assert_eq!(a.read(&mut buf), Err(Error::Closed { peer: Rank(1) }));
    assert!(matches!(a.write(&[b"x"]), Err(Error::PeerLost { peer: Rank(1), .. })));
    // The io shape: a clean close is the end of the stream, a write is a reset.
    assert_eq!(a.read_io(&mut buf).unwrap(), 0);
    let e = a.write_io(&[std::io::IoSlice::new(b"x")]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
}

/// One waiter over several channels returns the one that became ready.
#[test]
fn wait_over_several_channels_finds_the_ready_one() {
    let l0 = ShmListener::bind(ShmConfig::new("multi", Rank(0), 3).ring_capacity(4096)).unwrap();
    let a0 = l0.address_bytes();
    let peers: Vec<_> = (1..3)
        .map(|r| {
            let a0 = a0.clone();
            std::thread::spawn(move || {
                let l = ShmListener::bind(ShmConfig::new("multi", Rank(r), 3).ring_capacity(4096))
                    .unwrap();
                l.connect(Rank(0), &a0, deadline(30)).unwrap()
            })
        })
        .collect();
    let mut x = l0.accept(deadline(30)).unwrap();
    let mut y = l0.accept(deadline(30)).unwrap();
    let mut ends: Vec<_> = peers.into_iter().map(|t| t.join().unwrap()).collect();
    let writer = ends.iter_mut().find(|c| c.rank() == Rank(2)).unwrap();
    send_all(writer, b"2", deadline(10)).unwrap();
    let ready = wait(&mut [&mut x, &mut y], &[Interest::READ], deadline(10)).unwrap().unwrap();
    let from = [x.peer(), y.peer()][ready];
    assert_eq!(from, Rank(2));
}

/// Inside `lending`, an 8 MiB write is taken straight from the writer's memory, every byte
/// right, and a 64 MiB one through 4 KiB rings (so it cannot have gone through the ring).
#[test]
fn lending_moves_large_writes_single_copy() {
    let (c0, c1) = configs("lend", 4096);
    let (mut a, mut b) = pair(c0, c1);
    assert!(
        a.single_copy() && b.single_copy(),
        "process_vm_readv of our own process must work here"
    );
    const LEN: usize = 64 << 20;
    let t = std::thread::spawn(move || {
        let mut got = vec![0u8; LEN];
        recv_exact(&mut b, &mut got, deadline(60)).unwrap();
        got
    });
    let out = pattern(7, LEN);
    let d = deadline(60);
    lending(&mut [&mut a], |l| {
        let mut sent = 0;
        while sent < LEN {
            let n = l.write(0, &[&out[sent..]]).unwrap();
            sent += n;
            if n == 0 {
                l.wait(&[Interest::WRITE], d).unwrap().expect("the reader takes the lend");
            }
        }
    });
    assert!(t.join().unwrap() == out);
}

/// Both ends lend to each other at once, each reading the other's lend inside its own scope:
/// the symmetric exchange of a two-rank collective step, single copy both ways.
#[test]
fn both_ends_lend_and_read_at_once() {
    let (c0, c1) = configs("lend-both", 4096);
    let (a, b) = pair(c0.lend_min(1024), c1.lend_min(1024));
    const LEN: usize = 16 << 20;
    let run = |mut ch: gloo_shm::Channel, seed_out: u64, seed_in: u64| {
        std::thread::spawn(move || {
            let out = pattern(seed_out, LEN);
            let mut got = vec![0u8; LEN];
            let d = deadline(60);
            lending(&mut [&mut ch], |l| {
                let (mut sent, mut recvd) = (0, 0);
                while sent < LEN || recvd < LEN {
                    let mut moved = false;
                    if sent < LEN {
                        let n = l.write(0, &[&out[sent..]]).unwrap();
                        sent += n;
                        moved |= n > 0;
                    }
                    if recvd < LEN {
                        let n = l.read(0, &mut got[recvd..]).unwrap();
                        recvd += n;
                        moved |= n > 0;
                    }
                    if !moved {
                        let i = Interest { read: recvd < LEN, write: sent < LEN };
                        l.wait(&[i], d).unwrap().expect("progress before the deadline");
                    }
                }
            });
            assert!(got == pattern(seed_in, LEN), "stream {seed_in} corrupted");
            ch
        })
    };
    let ta = run(a, 21, 22);
    let tb = run(b, 22, 21);
    ta.join().unwrap();
    tb.join().unwrap();
}

/// A lending scope that ends while the reader is part-way through a lend: what the reader
/// took counts once, the rest goes by the next writes, and the stream stays whole.
#[test]
fn a_lend_cut_short_by_its_scope_keeps_the_stream_whole() {
    let (c0, c1) = configs("lend-cut", 4096);
    let (mut a, mut b) = pair(c0.lend_min(1024), c1);
    const LEN: usize = 4 << 20;
    let out = pattern(9, LEN);
    let mut got = vec![0u8; LEN];
    let mut recvd = 0;
    // Lend, let the reader take a little, end the scope, repeat with the rest.
    let mut sent = 0;
    let mut rounds = 0;
    while sent < LEN {
        rounds += 1;
        lending(&mut [&mut a], |l| {
            sent += l.write(0, &[&out[sent..]]).unwrap();
        });
        // Read a small piece: the lend is gone by now, so this reads ring bytes or nothing.
        let n = b.read(&mut got[recvd..(recvd + 1000).min(LEN)]).unwrap();
        recvd += n;
        // Outside any scope the next write reports what was taken, or goes by the ring.
        let n = a.write(&[&out[sent..(sent + 3000).min(LEN)]]).unwrap();
        sent += n;
        while recvd < sent {
            let n = b.read(&mut got[recvd..sent]).unwrap();
            assert!(n > 0, "bytes reported written must be readable");
            recvd += n;
        }
        assert!(rounds < 100_000, "no progress");
    }
    assert!(got == out, "the stream was corrupted after {rounds} rounds");
}

/// The reader takes part of a lend while the writer's scope is still open, then the scope
/// ends: the bytes taken are reported by the next write, not sent twice.
#[test]
fn bytes_taken_from_an_ended_lend_are_reported_not_resent() {
    let (c0, c1) = configs("lend-pending", 4096);
    let (mut a, mut b) = pair(c0.lend_min(1024), c1);
    let out = pattern(11, 100_000);
    let mut got = vec![0u8; 100_000];
    let first = lending(&mut [&mut a], |l| {
        assert_eq!(l.write(0, &[&out]).unwrap(), 0, "nothing taken yet");
        // The reader takes 30 000 bytes from the lend while it is out.
        let mut took = 0;
        while took < 30_000 {
            took += b.read(&mut got[took..30_000]).unwrap();
        }
        took
    });
    assert_eq!(first, 30_000);
    // The next write reports exactly those bytes as written (they are the leading bytes of
    // what it is offered), without putting them in the ring again.
    assert_eq!(a.write(&[&out]).unwrap(), 30_000);
    let reader = std::thread::spawn(move || {
        recv_exact(&mut b, &mut got[30_000..], deadline(30)).unwrap();
        got
    });
    send_all(&mut a, &out[30_000..], deadline(30)).unwrap();
    assert!(reader.join().unwrap() == out);
}

#[test]
fn single_copy_off_uses_the_ring() {
    let (c0, c1) = configs("no-lend", 4096);
    let (mut a, b) = pair(c0.single_copy(SingleCopy::Off), c1.single_copy(SingleCopy::Off));
    assert!(!a.single_copy() && !b.single_copy());
    let out = pattern(3, 1 << 20);
    lending(&mut [&mut a], |l| {
        // With no lending the ring takes at most its capacity.
        assert_eq!(l.write(0, &[&out]).unwrap(), 4096);
    });
}

/// One side off: neither lends, since the other cannot read it and it reads nobody.
#[test]
fn single_copy_off_on_one_side_is_off_for_the_pair() {
    let (c0, c1) = configs("half-lend", 4096);
    let (a, b) = pair(c0.single_copy(SingleCopy::Off), c1);
    assert!(!a.single_copy() && !b.single_copy());
    let (c0, c1) = configs("half-lend", 4096);
    let (a, b) = pair(c0, c1.single_copy(SingleCopy::Off));
    assert!(!a.single_copy() && !b.single_copy());
}

#[test]
fn set_up_refuses_another_job_and_impossible_ranks() {
    let l0 = ShmListener::bind(ShmConfig::new("job-a", Rank(0), 2)).unwrap();
    let addr = l0.address_bytes();
    let t = std::thread::spawn(move || {
        let l1 = ShmListener::bind(ShmConfig::new("job-b", Rank(1), 2)).unwrap();
        l1.connect(Rank(0), &addr, deadline(10))
    });
    let e = l0.accept(deadline(10)).unwrap_err();
    assert!(
        matches!(&e, Error::Refused { peer: Some(Rank(1)), detail } if detail.contains("job-b")),
        "{e}"
    );
    let e = t.join().unwrap().unwrap_err();
    assert!(
        matches!(&e, Error::Refused { peer: Some(Rank(0)), detail } if detail.contains("job")),
        "{e}"
    );

    let l1 = ShmListener::bind(ShmConfig::new("job-a", Rank(1), 2)).unwrap();
    let e = l1.connect(Rank(1), &l0.address_bytes(), deadline(1)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = l1.connect(Rank(0), b"tcp://127.0.0.1:1", deadline(1)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(matches!(
        ShmListener::bind(ShmConfig::new("j", Rank(2), 2)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        ShmListener::bind(ShmConfig::new("j", Rank(0), 2).ring_capacity(5000)),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn a_listener_nobody_dials_times_out_naming_what_it_waited_for() {
    let l0 = ShmListener::bind(ShmConfig::new("lonely", Rank(0), 2)).unwrap();
    let e = l0.accept(std::time::Instant::now() + Duration::from_millis(50)).unwrap_err();
    assert!(matches!(&e, Error::Timeout { doing, .. } if doing.contains("connect")), "{e}");
}

/// A sleeper that does not hold the channel (an engine's) announces its sleep through a
/// handle, polls the doorbell, and is woken by the peer's write; a handle's `wake` wakes it
/// from a third thread.
#[test]
fn a_sleep_handle_sleeps_outside_the_channel_and_is_woken() {
    let (c0, c1) = configs("handle", 4096);
    let (mut a, mut b) = pair(c0, c1);
    let h = a.sleep_handle();
    assert!(h.prepare_sleep(Interest::WRITE), "an empty ring has room");
    assert!(!h.prepare_sleep(Interest::READ), "nothing to read yet");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        send_all(&mut b, b"x", deadline(10)).unwrap();
        b
    });
    // Sleep on the doorbell alone (as a poller would), bounded.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 1];
    while a.read(&mut buf).unwrap() == 0 {
        assert!(std::time::Instant::now() < end, "never woken");
        if !h.prepare_sleep(Interest::READ) {
            wait_readable(h.doorbell(), Duration::from_millis(500));
            h.after_sleep();
            h.drain_doorbell();
        }
    }
    assert_eq!(&buf, b"x");
    let _b = writer.join().unwrap();
    let h2 = h.clone();
    let t = std::thread::spawn(move || h2.wake());
    t.join().unwrap();
    assert!(wait_readable(h.doorbell(), Duration::from_secs(10)), "wake() rings the doorbell");
}

/// Wait up to `timeout` for an eventfd to be readable, by non-blocking reads of a duplicate
/// (a test cannot call `poll` without unsafe code); a count read is written back, so the
/// caller's drain still finds it.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> bool {
    use std::io::Read;
    let file = std::fs::File::from(fd.try_clone_to_owned().unwrap());
    let end = std::time::Instant::now() + timeout;
    let mut b = [0u8; 8];
    loop {
        match (&file).read(&mut b) {
            Ok(_) => {
                // Put the count back so the caller's drain sees it too.
                std::io::Write::write_all(&mut &file, &1u64.to_ne_bytes()).unwrap();
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
