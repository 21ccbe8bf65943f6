//! Real processes: a peer killed (`SIGKILL`) or frozen (`SIGSTOP`) mid-transfer is
//! `PeerLost` naming it for the survivor, within the peer timeout; `kill -9` of both ranks at
//! any moment leaves nothing in `/dev/shm`; eight ranks on this machine's two cores exchange
//! with every other rank and finish; a process of another user is refused.
//!
//! The test binary re-executes itself as the ranks (`gloo_testing::procs`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use gloo_shm::{Channel, Error, Interest, ShmConfig, ShmListener, wait};
use gloo_testing::procs::{self, Board};
use gloo_transport::Rank;

/// In a child: bind, publish, connect to every other rank through the board.
fn mesh(
    job: &str,
    rank: u32,
    size: u32,
    tune: impl Fn(ShmConfig) -> ShmConfig,
) -> Vec<Option<Channel>> {
    let board = Board::from_env().expect("the parent passes a board");
    let l = ShmListener::bind(tune(ShmConfig::new(job, Rank(rank), size))).unwrap();
    board.put(rank, &l.address_bytes()).unwrap();
    let addrs = board.get_all(size, deadline(60)).unwrap();
    l.connect_channels(&addrs, deadline(60)).unwrap()
}

/// Rank 0 streams to rank 1 until it fails; rank 1 reads, says so on the board after 1 MiB,
/// and goes on reading until it fails. The parent kills or stops one of them; the survivor
/// reports its error on the board and checks that it names the other rank.
fn stream_until_lost(job: &str, peer_timeout: Duration) {
    let (rank, size) = procs::child_rank().unwrap();
    let board = Board::from_env().unwrap();
    let mut chans = mesh(job, rank, size, |c| c.ring_capacity(64 << 10).peer_timeout(peer_timeout));
    let ch = chans[1 - rank as usize].as_mut().unwrap();
    let chunk = vec![0x5au8; 256 << 10];
    let mut moved = 0usize;
    let end = deadline(120);
    loop {
        let r = if rank == 0 { ch.write(&[&chunk]) } else { ch.read(&mut vec![0u8; 256 << 10]) };
        match r {
            Ok(0) => {
                let i = if rank == 0 { Interest::WRITE } else { Interest::READ };
                if let Err(e) = ch.wait(i, end) {
                    board.put_named("error", format!("{e:?}").as_bytes()).unwrap();
                    panic!("rank {rank} waited in vain: {e}");
                }
            }
            Ok(n) => {
                moved += n;
                if rank == 1 && moved >= 1 << 20 && moved - n < 1 << 20 {
                    board.put_named("progress", b"1").unwrap();
                }
            }
            Err(e) => {
                board.put_named("error", format!("{e:?}").as_bytes()).unwrap();
                let other = Rank(1 - rank);
                assert!(
                    matches!(e, Error::PeerLost { peer, .. } if peer == other),
                    "rank {rank}: {e}"
                );
                return;
            }
        }
    }
}

/// Kill (`SIGKILL`) or stop (`SIGSTOP`) rank `victim` of a streaming pair once bytes flow;
/// returns the survivor's error text. /dev/shm must be as it was.
fn fault_mid_transfer(test: &str, victim: u32, stop: bool) -> String {
    let before = dev_shm();
    let board = Board::fresh("shm-fault").unwrap();
    let mut group = procs::spawn_self(test, 2, &[board.env()]);
    board.get_named("progress", deadline(60)).unwrap();
    if stop {
        group.stop(victim);
    } else {
        group.kill(victim);
    }
    let error = String::from_utf8(board.get_named("error", deadline(60)).unwrap()).unwrap();
    group.kill(victim);
    let outcomes = group.wait(deadline(60));
    outcomes[1 - victim as usize].assert_success();
    assert_eq!(
        outcomes[victim as usize].signal(),
        Some(9),
        "{}",
        outcomes[victim as usize].report("was not killed")
    );
    assert!(error.contains("PeerLost") && error.contains(&format!("rank {victim}")), "{error}");
    assert_eq!(dev_shm(), before, "a killed rank left something in /dev/shm");
    error
}

/// The reader dies: the writer, asleep on a full ring, is woken by the socket's hang-up.
#[test]
fn sigkill_of_the_reader_is_peer_lost_for_the_writer() {
    if procs::child_rank().is_some() {
        return stream_until_lost("kill-r", Duration::from_secs(5));
    }
    let error = fault_mid_transfer("sigkill_of_the_reader_is_peer_lost_for_the_writer", 1, false);
    assert!(error.contains("socket hung up"), "{error}");
}

/// The writer dies: the reader, asleep on an empty ring, is woken by the socket's hang-up.
#[test]
fn sigkill_of_the_writer_is_peer_lost_for_the_reader() {
    if procs::child_rank().is_some() {
        return stream_until_lost("kill-w", Duration::from_secs(5));
    }
    let error = fault_mid_transfer("sigkill_of_the_writer_is_peer_lost_for_the_reader", 0, false);
    assert!(error.contains("socket hung up"), "{error}");
}

/// The reader freezes: its heartbeat stops, and the writer reports it after the peer timeout.
#[test]
fn sigstop_of_the_reader_is_peer_lost_within_the_peer_timeout() {
    if procs::child_rank().is_some() {
        return stream_until_lost("stop-r", Duration::from_secs(1));
    }
    let error =
        fault_mid_transfer("sigstop_of_the_reader_is_peer_lost_within_the_peer_timeout", 1, true);
    assert!(error.contains("no heartbeat"), "{error}");
}

/// The writer freezes: the reader reports it after the peer timeout.
#[test]
fn sigstop_of_the_writer_is_peer_lost_within_the_peer_timeout() {
    if procs::child_rank().is_some() {
        return stream_until_lost("stop-w", Duration::from_secs(1));
    }
    let error =
        fault_mid_transfer("sigstop_of_the_writer_is_peer_lost_within_the_peer_timeout", 0, true);
    assert!(error.contains("no heartbeat"), "{error}");
}

/// The liveness thread ends with the last channel: no thread is left behind.
#[test]
fn the_liveness_thread_ends_with_the_last_channel() {
    if procs::child_rank().is_some() {
        let liveness = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter(|t| {
                    let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm"))
                        .unwrap_or_default();
                    comm.trim() == "gloo-shm-livene" // comm is cut to 15 bytes
                })
                .count()
        };
        assert_eq!(liveness(), 0);
        let (c0, c1) = configs("threads", 4096);
        let (a, b) = pair(c0, c1);
        // The thread names itself when it first runs, which on a busy core may be later.
        let end = deadline(30);
        while liveness() == 0 {
            assert!(Instant::now() < end, "no liveness thread started");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(liveness(), 1, "one liveness thread per process");
        drop((a, b));
        while liveness() > 0 {
            assert!(Instant::now() < end, "the liveness thread outlived its channels");
            std::thread::sleep(Duration::from_millis(10));
        }
        return;
    }
    // In a child of its own: other tests of this binary hold channels in this process.
    procs::spawn_self("the_liveness_thread_ends_with_the_last_channel", 1, &[])
        .wait_success(deadline(60));
}

#[test]
fn kill_9_of_both_ranks_at_any_moment_leaves_nothing_behind() {
    if procs::child_rank().is_some() {
        return stream_until_lost("kill-both", Duration::from_secs(5));
    }
    let before = dev_shm();
    // From before the listener exists, through the handshake, to mid-transfer.
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80, 160] {
        let board = Board::fresh("shm-kill-both").unwrap();
        let mut group = procs::spawn_self(
            "kill_9_of_both_ranks_at_any_moment_leaves_nothing_behind",
            2,
            &[board.env()],
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        group.kill(0);
        group.kill(1);
        for o in group.wait(deadline(60)) {
            assert!(!o.hung, "{}", o.report("hung"));
        }
        assert_eq!(
            dev_shm(),
            before,
            "kill -9 of both after {delay_ms} ms left something in /dev/shm"
        );
    }
}

/// Eight ranks on the two cores of this machine, every pair connected, exchange 64 KiB with
/// every other rank for several rounds through 16 KiB rings, each checking every byte.
#[test]
fn eight_ranks_on_two_cores_exchange_with_everyone() {
    const SIZE: u32 = 8;
    const LEN: usize = 64 << 10;
    const ROUNDS: u64 = 4;
    if let Some((rank, size)) = procs::child_rank() {
        let mut chans = mesh("eight", rank, size, |c| c.ring_capacity(16 << 10).oversubscribed());
        let seed =
            |round: u64, from: u32, to: u32| round * 64 + u64::from(from) * 8 + u64::from(to);
        for round in 0..ROUNDS {
            let peers: Vec<u32> = (0..size).filter(|&p| p != rank).collect();
            let outs: Vec<Vec<u8>> =
                peers.iter().map(|&p| pattern(seed(round, rank, p), LEN)).collect();
            let mut ins: Vec<Vec<u8>> = peers.iter().map(|_| vec![0u8; LEN]).collect();
            let (mut sent, mut got) = (vec![0usize; peers.len()], vec![0usize; peers.len()]);
            let end = deadline(120);
            let mut live: Vec<&mut Channel> = chans.iter_mut().flatten().collect();
            while sent.iter().chain(&got).any(|&n| n < LEN) {
                let mut moved = false;
                for (i, ch) in live.iter_mut().enumerate() {
                    if sent[i] < LEN {
                        let n = ch.write(&[&outs[i][sent[i]..]]).unwrap();
                        sent[i] += n;
                        moved |= n > 0;
                    }
                    if got[i] < LEN {
                        let n = ch.read(&mut ins[i][got[i]..]).unwrap();
                        got[i] += n;
                        moved |= n > 0;
                    }
                }
                if !moved {
                    let interests: Vec<Interest> = (0..live.len())
                        .map(|i| Interest { read: got[i] < LEN, write: sent[i] < LEN })
                        .collect();
                    let ready = wait(&mut live, &interests, end).unwrap();
                    assert!(
                        ready.is_some(),
                        "rank {rank} round {round}: nothing ready by the deadline"
                    );
                }
            }
            for (i, &p) in peers.iter().enumerate() {
                assert!(
                    ins[i] == pattern(seed(round, p, rank), LEN),
                    "rank {rank} round {round}: bad bytes from {p}"
                );
            }
        }
        return;
    }
    let board = Board::fresh("shm-eight").unwrap();
    let group =
        procs::spawn_self("eight_ranks_on_two_cores_exchange_with_everyone", SIZE, &[board.env()]);
    group.wait_success(deadline(240));
}

/// A process of another user (uid 65534) that dials our listener is refused by us, and
/// refuses us in turn: memory is shared only within one user.
#[test]
fn a_process_of_another_user_is_refused() {
    const ADDR_ENV: &str = "GLOO_SHM_TEST_ADDR";
    if let Ok(hex) = std::env::var(ADDR_ENV) {
        let addr: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let l1 = ShmListener::bind(ShmConfig::new("uid", Rank(1), 2)).unwrap();
        let e = l1.connect(Rank(0), &addr, deadline(30)).unwrap_err();
        assert!(matches!(&e, Error::Refused { detail, .. } if detail.contains("uid 0")), "{e}");
        return;
    }
    use std::os::unix::process::CommandExt;
    let l0 = ShmListener::bind(ShmConfig::new("uid", Rank(0), 2)).unwrap();
    let hex: String = l0.address_bytes().iter().map(|b| format!("{b:02x}")).collect();
    // Run a copy of this binary from /tmp (not TMPDIR, which may be private): the build directory may not be
    // reachable by another user (a checkout under a 0700 home).
    let exe =
        std::path::Path::new("/tmp").join(format!("gloo-shm-uid-test-{}", std::process::id()));
    // The copy is written by a `cp` child, not by us: a descriptor open for writing in this
    // process would be inherited by any child another test thread forks meanwhile, and exec of
    // the copy would then fail with ETXTBSY ("Text file busy") until that child execs, as it did
    // on a CI machine. A descriptor opened in `cp` is never in our forks.
    let copied = std::process::Command::new("cp")
        .arg(std::env::current_exe().unwrap())
        .arg(&exe)
        .status()
        .unwrap();
    assert!(copied.success(), "cp of the test binary to {}: {copied}", exe.display());
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(exe.clone());
    let child = std::process::Command::new(&exe)
        .args([
            "--exact",
            "a_process_of_another_user_is_refused",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ADDR_ENV, hex)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let e = l0.accept(deadline(30)).unwrap_err();
    assert!(
        matches!(&e, Error::Refused { peer: None, detail } if detail.contains("uid 65534")),
        "{e}"
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("running 1 test"),
        "the other user's process failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
