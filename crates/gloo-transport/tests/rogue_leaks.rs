//! After rogue peers, nothing leaks: a child process (so that no other test's threads or
//! sockets are counted) connects a group of 3 over TCP while outsiders send garbage and hold
//! half-open connections, then an insider playing rank 2 breaks the protocol. Once every
//! communicator and rogue connection is dropped, the process's thread and descriptor counts
//! must be back to their values from before the group was made.
#![cfg(feature = "tcp")]

use std::time::Duration;

use gloo_testing::deadline;
use gloo_testing::procs;
use gloo_testing::rogue::{
    Closed, Rogue, assert_ran_one_test, bind_group, connect_threads, exchange_with, fd_count,
    header, thread_count, wait_for_counts,
};
use gloo_transport::proto::{HandshakeConfig, Opcode, job_hash};
use gloo_transport::tcp::{Security, TcpComm, TcpConfig, TcpListener};
use gloo_transport::{Communicator, Error, Rank, Slot};

const TOKEN: &[u8] = b"rogue-leaks-token-16";
const NAME: &str = "rogue_attacks_leak_no_thread_or_descriptor";

fn attacked_group() {
    let until = deadline(60);
    let cfg = |r: u32| {
        TcpConfig::loopback(NAME, Rank(r), 3)
            .security(Security::Token(TOKEN.to_vec()))
            .peer_timeout(Duration::from_secs(60))
    };
    let (mut listeners, addrs) = bind_group(3, |r| TcpListener::bind(cfg(r)).expect("bind"));
    drop(listeners.pop()); // Rank 2 is the insider; its listener only gave an address.
    let sock: Vec<_> = listeners.iter().map(TcpListener::local_addr).collect();
    let handles = connect_threads(listeners, &addrs, until);

    // Outsiders: garbage (refused at once) and half-open hellos (dropped with the set-up).
    let mut garbage = Rogue::connect(sock[0], until).expect("connect");
    garbage.send(&[0xEE; 100]).expect("send");
    let mut idle: Vec<Rogue> =
        (0..5).map(|_| Rogue::connect(sock[0], until).expect("connect")).collect();
    assert_eq!(garbage.wait_closed(deadline(30)), Closed::Yes);

    // The insider joins as rank 2.
    let hs =
        HandshakeConfig { job: job_hash(NAME), me: Rank(2), size: 3, token: Some(TOKEN.into()) };
    let mut insider: Vec<Rogue> = sock
        .iter()
        .enumerate()
        .map(|(r, a)| {
            let mut c = Rogue::connect(*a, until).expect("connect");
            c.handshake(hs.clone(), Rank(r as u32), until).expect("handshake");
            c
        })
        .collect();
    let comms: Vec<TcpComm> =
        handles.into_iter().map(|h| h.join().expect("thread").expect("connect_all")).collect();
    for (i, r) in idle.iter_mut().enumerate() {
        assert_eq!(r.wait_closed(deadline(30)), Closed::Yes, "half-open connection {i} kept");
    }

    // Ranks 0 and 1 talk; then the insider breaks the protocol towards rank 0.
    std::thread::scope(|s| {
        for c in &comms {
            s.spawn(move || {
                exchange_with(c, &[Rank(1 - c.rank().0)], 1, 200_000, until).expect("exchange")
            });
        }
    });
    let mut h = header(Opcode::Heartbeat, 0, 0, 0);
    h[6] = 250;
    insider[0].send(&h).expect("send");
    let mut buf = [0u8; 4];
    let e = comms[0].recv(Rank(2), Slot(1), &mut buf, until).unwrap_err();
    assert!(matches!(e, Error::Protocol { peer: Some(Rank(2)), .. }), "{e:?}");
    assert_eq!(insider[0].wait_closed(deadline(30)), Closed::Yes);
}

#[test]
fn rogue_attacks_leak_no_thread_or_descriptor() {
    if procs::child_rank().is_some() {
        let (threads, fds) = (thread_count(), fd_count());
        attacked_group();
        let now = wait_for_counts(threads, fds, deadline(30));
        assert_eq!(now, (threads, fds), "(threads, fds) after everything was dropped");
        return;
    }
    let group = procs::spawn_self(NAME, 1, &[]);
    for o in group.wait(deadline(180)) {
        assert_ran_one_test(&o);
    }
}
