//! The transport conformance suite over shared memory (ranks as threads of this process,
//! each with its own listener and channels), twice: with the default waits (spin, yield,
//! sleep), and with every wait sleeping at once, so the doorbells and the sleeper's looks
//! alone must drive the transport. Plus what only shm has: typed set-up errors through the
//! `Listener` trait.

use gloo_shm::{LinkKind, ShmComm, ShmConfig, ShmListener};
use gloo_testing::deadline;
use gloo_testing::rogue::{bind_group, connect_threads};
use gloo_transport::{Communicator, Error, Listener, Rank, Slot};

/// A connected group of `size` ranks from one config per rank.
fn group_with(size: u32, cfg: impl Fn(u32) -> ShmConfig) -> Vec<ShmComm> {
    let (listeners, addrs) = bind_group(size, |r| ShmListener::bind(cfg(r)).expect("bind"));
    connect_threads(listeners, &addrs, deadline(30))
        .into_iter()
        .map(|t| t.join().expect("connect thread").expect("connect_all"))
        .collect()
}

fn factory(size: u32) -> Vec<Box<dyn Communicator>> {
    gloo_testing::conformance::boxed(group_with(size, |r| {
        // Small rings, so large messages wrap and fill them many times over.
        ShmConfig::new("conformance", Rank(r), size).ring_capacity(64 << 10)
    }))
}

gloo_testing::conformance_tests!(factory);

/// The suite with no spinning or yielding: every wait sleeps at once.
mod sleeping {
    use super::*;

    fn factory(size: u32) -> Vec<Box<dyn Communicator>> {
        gloo_testing::conformance::boxed(group_with(size, |r| {
            ShmConfig::new("sleeping", Rank(r), size)
                .ring_capacity(16 << 10)
                .spin(std::time::Duration::ZERO, std::time::Duration::ZERO)
        }))
    }

    gloo_testing::conformance_tests!(factory);
}

#[test]
fn every_pair_is_shared_memory() {
    let comms = group_with(3, |r| ShmConfig::new("kinds", Rank(r), 3));
    for c in &comms {
        for p in 0..3 {
            let want = (p != c.rank().0).then_some(LinkKind::Shm);
            assert_eq!(c.link_kind(Rank(p)), want, "rank {} to {p}", c.rank());
        }
    }
}

// `ShmListener` is a `Listener` of `ShmComm`s: checked when this file compiles (a test
// function could not fail at run time).
const _: fn() = || {
    fn is_listener<L: Listener<Comm = ShmComm>>() {}
    is_listener::<ShmListener>();
};

#[test]
fn garbage_address_bytes_name_the_rank() {
    let l = ShmListener::bind(ShmConfig::new("garbage", Rank(2), 3)).unwrap();
    let good = l.address_bytes();
    let e = Listener::connect_all(l, &[good.clone(), b"nonsense".to_vec(), good], deadline(5))
        .unwrap_err();
    assert_eq!(e.peer(), Some(Rank(0)), "{e}");
}

#[test]
fn another_job_is_refused_as_an_auth_error_naming_the_rank() {
    let l0 = ShmListener::bind(ShmConfig::new("ours", Rank(0), 2)).unwrap();
    let l1 = ShmListener::bind(ShmConfig::new("theirs", Rank(1), 2)).unwrap();
    let addrs = vec![l0.address_bytes(), l1.address_bytes()];
    let a = addrs.clone();
    let t = std::thread::spawn(move || Listener::connect_all(l0, &a, deadline(3)).map(|_| ()));
    let e = Listener::connect_all(l1, &addrs, deadline(3)).map(|_| ()).unwrap_err();
    assert!(matches!(&e, Error::Auth { peer: Some(Rank(0)), .. }), "{e}");
    // The acceptor refuses the stray and keeps waiting for the real rank 1 until its deadline.
    let e0 = t.join().unwrap().unwrap_err();
    assert_eq!(e0.peer(), Some(Rank(1)), "{e0}");
}

#[test]
fn a_dropped_peer_is_lost_naming_it_and_messages_sent_before_arrive() {
    let mut comms = group_with(2, |r| ShmConfig::new("drop", Rank(r), 2));
    let c1 = comms.pop().unwrap();
    let c0 = comms.pop().unwrap();
    c1.send(Rank(0), Slot::new(1, 0), b"last words", deadline(10)).unwrap();
    drop(c1);
    let mut buf = [0u8; 10];
    assert_eq!(c0.recv(Rank(1), Slot::new(1, 0), &mut buf, deadline(10)).unwrap(), 10);
    assert_eq!(&buf, b"last words");
    let e = c0.recv(Rank(1), Slot::new(2, 0), &mut buf, deadline(10)).unwrap_err();
    assert!(matches!(e, Error::PeerLost { peer: Rank(1), .. }), "{e}");
}
