//! One message of 3 GiB and a few bytes between two processes over loopback TCP (issue 2 §4,
//! the "large" row of the test matrix). Lengths beyond `u32` and the chunking of syscalls are
//! what it checks; memory is the two buffers, one per process.
#![cfg(feature = "tcp")]

use gloo_testing::deadline;
use gloo_testing::procs::{self, Board};
use gloo_testing::rogue::{assert_ran_one_test, board_connect};
use gloo_transport::tcp::{TcpConfig, TcpListener};
use gloo_transport::{Communicator, Rank, Slot};

/// 3 GiB and 5 bytes: past `u32::MAX - 2 GiB` and `i32::MAX`, and not a multiple of 8.
const LEN: usize = (3 << 30) + 5;

/// Well below the seconds the transfer takes, so a receiver that stops sending heartbeats
/// while it receives is declared lost (the heartbeat thread's liveness tick runs every 31 ms with this, heartbeats are due every 125 ms).
const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The pattern word at index `i` (splitmix64), so a shifted, repeated or lost chunk shows.
fn word(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fill(buf: &mut [u8]) {
    let mut words = buf.chunks_exact_mut(8);
    for (i, w) in (&mut words).enumerate() {
        w.copy_from_slice(&word(i as u64).to_le_bytes());
    }
    let tail = words.into_remainder();
    let last = word((LEN / 8) as u64).to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// The offset of the first byte that differs from the pattern, if any.
fn first_difference(buf: &[u8]) -> Option<usize> {
    let words = buf.chunks_exact(8);
    let tail = words.remainder();
    for (i, w) in words.enumerate() {
        if w != word(i as u64).to_le_bytes() {
            return Some(i * 8);
        }
    }
    let last = word((LEN / 8) as u64).to_le_bytes();
    (tail != &last[..tail.len()]).then_some(LEN - tail.len())
}

#[test]
fn large_3gib_between_processes() {
    const NAME: &str = "large_3gib_between_processes";
    if let Some((rank, size)) = procs::child_rank() {
        let until = deadline(600);
        let board = Board::from_env().expect("the parent passes a board");
        // A short peer timeout: the receiver is busy for seconds and must keep its heartbeats
        // going while it is (a CI run once lost it at the 5 s default).
        let cfg = TcpConfig::loopback(NAME, Rank(rank), size).peer_timeout(PEER_TIMEOUT);
        let listener = TcpListener::bind(cfg).expect("bind");
        let comm = board_connect(listener, &board, rank, size, until).expect("connect_all");
        let slot = Slot::new(1, 0);
        if rank == 0 {
            let mut buf = vec![0u8; LEN];
            fill(&mut buf);
            comm.send(Rank(1), slot, &buf, until).expect("send 3 GiB");
            // Wait for the receiver's verdict before dropping the connection.
            let mut ack = [0u8; 1];
            comm.recv(Rank(1), slot, &mut ack, until).expect("the receiver's answer");
            assert_eq!(ack, [1], "the receiver saw wrong content");
        } else {
            // Zeroed pages are mapped lazily: this is the only other buffer.
            let mut buf = vec![0u8; LEN];
            let n = comm.recv(Rank(0), slot, &mut buf, until).expect("receive 3 GiB");
            assert_eq!(n, LEN, "received length");
            let diff = first_difference(&buf);
            comm.send(Rank(0), slot, &[u8::from(diff.is_none())], until).expect("answer");
            assert_eq!(diff, None, "first wrong byte at this offset");
        }
        return;
    }
    let board = Board::fresh("large").expect("a board");
    let group = procs::spawn_self(NAME, 2, &[board.env()]);
    for o in group.wait(deadline(900)) {
        assert_ran_one_test(&o);
    }
}
