//! A rank killed (`SIGKILL`) or frozen (`SIGSTOP`) in the middle of a transfer (issue 2 §4).
//!
//! Two processes over loopback TCP stream 64 MiB messages without end, rank 1 to rank 0 or
//! rank 0 to rank 1; once one whole message has gone through, the parent kills or freezes
//! rank 1. Rank 0, whose peer timeout is 2 s (the default in one case), must fail with
//! `PeerLost` naming rank 1 (long before its own deadline, which would give `Timeout`
//! instead), later calls must fail fast with it, and once its communicator is dropped its
//! thread and descriptor counts must come back to what they were before the group was made.
//! A frozen rank is continued and killed at the end.
#![cfg(feature = "tcp")]

use std::time::Duration;

use gloo_testing::deadline;
use gloo_testing::procs::{self, Board};
use gloo_testing::rogue::{
    assert_ran_one_test, board_connect, exchange_with, fd_count, thread_count, wait_for_counts,
};
use gloo_transport::tcp::{TcpConfig, TcpListener};
use gloo_transport::{Communicator, Error, Rank, Slot};

const MSG: usize = 64 << 20;
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// SIGKILL's number on Linux.
const SIGKILL: i32 = 9;

/// Which way the messages go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Rank 1 (the faulty one) sends, rank 0 receives.
    FromFaulty,
    /// Rank 0 sends, rank 1 (the faulty one) receives.
    ToFaulty,
}

/// Most messages a rank streams: only a broken parent lets a rank get this far.
const MAX_MESSAGES: u64 = 10_000;

/// The survivor's peer timeout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerTimeout {
    /// [`PEER_TIMEOUT`].
    Short,
    /// The transport's default.
    Default,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `SIGKILL` while rank 1 streams.
    Kill,
    /// `SIGSTOP` while rank 1 streams (most likely in the middle of a `Data` frame).
    Stop,
    /// `SIGSTOP` while rank 1 sits idle between messages (heartbeats are all it sends).
    StopIdle,
}

/// Tells the parent that rank 0 is done, when dropped: also when it panics.
struct Finished<'a>(&'a Board);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let _ = self.0.put_named("finished", b"");
    }
}

fn survivor(job: &str, board: &Board, flow: Flow, timeout: PeerTimeout) {
    let _finished = Finished(board);
    let until = deadline(120);
    let (threads, fds) = (thread_count(), fd_count());
    {
        let cfg = TcpConfig::loopback(job, Rank(0), 2);
        let cfg = match timeout {
            PeerTimeout::Short => cfg.peer_timeout(PEER_TIMEOUT),
            PeerTimeout::Default => cfg,
        };
        let listener = TcpListener::bind(cfg).expect("bind");
        let comm = board_connect(listener, board, 0, 2, until).expect("connect_all");
        // The counters see the communicator's own thread and sockets.
        assert!(thread_count() > threads, "no thread for the communicator?");
        assert!(fd_count() > fds, "no descriptor for the communicator?");
        let mut buf = vec![0u8; MSG];
        let mut whole = 0u64;
        let err = loop {
            assert!(whole < MAX_MESSAGES, "rank 1 was never stopped");
            let slot = Slot::new(1, 0);
            let r = match flow {
                Flow::FromFaulty => comm.recv(Rank(1), slot, &mut buf, until).map(|n| {
                    assert_eq!(n, MSG);
                    let want = whole as u8;
                    assert!(buf.iter().all(|b| *b == want), "message {whole} has wrong bytes");
                }),
                Flow::ToFaulty => {
                    buf.fill(whole as u8);
                    comm.send(Rank(1), slot, &buf, until)
                }
            };
            match r {
                Ok(()) => {
                    whole += 1;
                    if whole == 1 {
                        board.put_named("first", b"").expect("tell the parent");
                    }
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::PeerLost { peer: Rank(1), .. }), "{err:?}");
        assert!(
            matches!(comm.poisoned(), Some(Error::PeerLost { peer: Rank(1), .. })),
            "{:?}",
            comm.poisoned()
        );
        // Later calls fail fast with the same error rather than waiting.
        let e = comm.send(Rank(1), Slot::new(2, 0), b"x", until).unwrap_err();
        assert!(matches!(e, Error::PeerLost { peer: Rank(1), .. }), "{e:?}");
    }
    let now = wait_for_counts(threads, fds, deadline(30));
    assert_eq!(now, (threads, fds), "(threads, fds) after the communicator was dropped");
}

/// Rank 1: streams (or takes) messages until the parent kills it; with `endless` unset it
/// sends one message and then idles.
fn faulty(job: &str, board: &Board, flow: Flow, endless: bool) {
    let until = deadline(120);
    let listener = TcpListener::bind(TcpConfig::loopback(job, Rank(1), 2)).expect("bind");
    let comm = board_connect(listener, board, 1, 2, until).expect("connect_all");
    let mut buf = vec![0u8; MSG];
    let count = if endless { MAX_MESSAGES } else { 1 };
    for i in 0..count {
        let r = match flow {
            Flow::FromFaulty => {
                buf.fill(i as u8);
                comm.send(Rank(0), Slot::new(1, 0), &buf, until)
            }
            Flow::ToFaulty => comm.recv(Rank(0), Slot::new(1, 0), &mut buf, until).map(drop),
        };
        if r.is_err() {
            return;
        }
    }
    // Idle until the parent ends this process: a receive nobody will answer.
    let _ = comm.recv(Rank(0), Slot::new(9, 0), &mut buf[..1], until);
}

fn run(name: &str, flow: Flow, fault: Fault, timeout: PeerTimeout) {
    if let Some((rank, _)) = procs::child_rank() {
        let board = Board::from_env().expect("the parent passes a board");
        if rank == 0 {
            survivor(name, &board, flow, timeout)
        } else {
            faulty(name, &board, flow, fault != Fault::StopIdle)
        }
        return;
    }
    let board = Board::fresh(name).expect("a board");
    let mut group = procs::spawn_self(name, 2, &[board.env()]);
    let first = board.get_named("first", deadline(120));
    match fault {
        Fault::Kill => group.kill(1),
        Fault::Stop | Fault::StopIdle => group.stop(1),
    }
    if fault != Fault::Kill {
        // Keep rank 1 frozen until rank 0 is done (whether it passed or panicked), then end it.
        let _ = board.get_named("finished", deadline(120));
        group.cont(1);
        group.kill(1);
    }
    let outcomes = group.wait(deadline(120));
    if let Err(e) = first {
        panic!(
            "no whole message went through: {e}\n{}\n{}",
            outcomes[0].report("ended"),
            outcomes[1].report("ended")
        );
    }
    assert_ran_one_test(&outcomes[0]);
    if fault == Fault::Kill {
        assert_eq!(outcomes[1].signal(), Some(SIGKILL), "{}", outcomes[1].report("was not killed"));
    }
}

#[test]
fn sigkill_mid_transfer_gives_peer_lost_and_leaks_nothing() {
    run(
        "sigkill_mid_transfer_gives_peer_lost_and_leaks_nothing",
        Flow::FromFaulty,
        Fault::Kill,
        PeerTimeout::Short,
    );
}

#[test]
fn sigstop_mid_transfer_gives_peer_lost_and_leaks_nothing() {
    run(
        "sigstop_mid_transfer_gives_peer_lost_and_leaks_nothing",
        Flow::FromFaulty,
        Fault::Stop,
        PeerTimeout::Short,
    );
}

#[test]
fn sigstop_between_messages_gives_peer_lost_and_leaks_nothing() {
    run(
        "sigstop_between_messages_gives_peer_lost_and_leaks_nothing",
        Flow::FromFaulty,
        Fault::StopIdle,
        PeerTimeout::Short,
    );
}

/// The same with the default peer timeout (issue 2 §4: at most 10 s), against a receive
/// deadline far beyond it.
#[test]
fn sigstop_with_the_default_peer_timeout_gives_peer_lost() {
    assert!(gloo_transport::tcp::DEFAULT_PEER_TIMEOUT <= Duration::from_secs(10));
    run(
        "sigstop_with_the_default_peer_timeout_gives_peer_lost",
        Flow::FromFaulty,
        Fault::Stop,
        PeerTimeout::Default,
    );
}

/// The survivor is the sender: its writes meet a reset connection.
#[test]
fn sigkill_of_the_receiver_gives_peer_lost_and_leaks_nothing() {
    run(
        "sigkill_of_the_receiver_gives_peer_lost_and_leaks_nothing",
        Flow::ToFaulty,
        Fault::Kill,
        PeerTimeout::Short,
    );
}

/// The survivor is the sender: its writes stall on a full socket while the frozen receiver
/// says nothing, not even heartbeats.
#[test]
fn sigstop_of_the_receiver_gives_peer_lost_and_leaks_nothing() {
    run(
        "sigstop_of_the_receiver_gives_peer_lost_and_leaks_nothing",
        Flow::ToFaulty,
        Fault::Stop,
        PeerTimeout::Short,
    );
}

/// Three ranks all exchange 4 MiB with each other, round after round, until rank 2 is killed
/// or frozen: both survivors fail with `PeerLost` naming rank 2 (or an abort from the other
/// survivor whose reason names rank 2), never blaming the other survivor, and neither leaks a
/// thread or descriptor.
fn one_of_three(name: &str, fault: Fault) {
    if let Some((rank, size)) = procs::child_rank() {
        let board = Board::from_env().expect("the parent passes a board");
        let until = deadline(120);
        let (threads, fds) = (thread_count(), fd_count());
        {
            let cfg = TcpConfig::loopback(name, Rank(rank), size).peer_timeout(PEER_TIMEOUT);
            let listener = TcpListener::bind(cfg).expect("bind");
            let comm = board_connect(listener, &board, rank, size, until).expect("connect_all");
            let others: Vec<Rank> = (0..size).map(Rank).filter(|r| *r != Rank(rank)).collect();
            let mut round = 0u32;
            let err = loop {
                assert!(u64::from(round) < MAX_MESSAGES, "rank 2 was never stopped");
                if let Err(e) = exchange_with(&comm, &others, round, 4 << 20, until) {
                    break e;
                }
                round += 1;
                if round == 1 && rank == 0 {
                    board.put_named("first", b"").expect("tell the parent");
                }
            };
            assert!(rank != 2, "rank 2 should have been stopped, it failed with {err}");
            // Both survivors have their verdict before either closes its connection (a close
            // would be a second, later lost peer for the other).
            board.put_named(&format!("verdict-{rank}"), b"").expect("board");
            let _ = board.get_named(&format!("verdict-{}", 1 - rank), until);
            // Either it saw rank 2 go itself, or the other survivor told it (an abort whose
            // reason names rank 2); blaming the other survivor for rank 2's fault is wrong.
            let named = match &err {
                Error::PeerLost { peer: Rank(2), .. } => true,
                Error::Aborted { by, reason } => by.0 == 1 - rank && reason.contains("rank 2"),
                _ => false,
            };
            assert!(named, "rank {rank} did not put rank 2's fault down to rank 2: {err:?}");
        }
        let now = wait_for_counts(threads, fds, deadline(30));
        assert_eq!(now, (threads, fds), "(threads, fds) after the communicator was dropped");
        return;
    }
    let board = Board::fresh("three").expect("a board");
    let mut group = procs::spawn_self(name, 3, &[board.env()]);
    let first = board.get_named("first", deadline(120));
    match fault {
        Fault::Kill => group.kill(2),
        Fault::Stop | Fault::StopIdle => {
            group.stop(2);
            // Keep rank 2 frozen until both survivors have their verdict, then end it.
            let _ = board.get_named("verdict-0", deadline(120));
            let _ = board.get_named("verdict-1", deadline(120));
            group.cont(2);
            group.kill(2);
        }
    }
    let outcomes = group.wait(deadline(120));
    if let Err(e) = first {
        panic!("no round went through: {e}\n{}", outcomes[0].report("ended"));
    }
    for o in &outcomes[..2] {
        if !o.success() {
            eprintln!("{}\n{}", outcomes[0].report("ended"), outcomes[1].report("ended"));
        }
        assert_ran_one_test(o);
    }
    if fault == Fault::Kill {
        let o = &outcomes[2];
        assert_eq!(o.signal(), Some(SIGKILL), "{}", o.report("was not killed"));
    }
}

#[test]
fn sigkill_one_of_three_every_survivor_gets_peer_lost() {
    one_of_three("sigkill_one_of_three_every_survivor_gets_peer_lost", Fault::Kill);
}

#[test]
fn sigstop_one_of_three_every_survivor_gets_peer_lost() {
    one_of_three("sigstop_one_of_three_every_survivor_gets_peer_lost", Fault::Stop);
}
