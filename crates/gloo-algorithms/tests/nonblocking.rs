//! Non-blocking collectives (`Group::start_*`): the same results as the blocking calls,
//! several in flight at once and ending in any order, tags assigned in issue order and the
//! same on every rank, detached handles, a dropped group, typed errors, and progress while
//! the caller does something else.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::Duration;

use common::{mix, on_ranks, on_ranks_plain};
use gloo_algorithms::{Algorithm, BACKGROUND_TAGS, Error, Group, MAX_IN_FLIGHT, Options, ReduceOp};
use gloo_transport::loopback::LoopbackComm;
use gloo_transport::{Error as TError, Rank};

fn opts() -> Options {
    Options::new().with_timeout(Duration::from_secs(30))
}

/// Rank `r`'s data for call `call`: `len` values that differ per rank, call and index.
fn data(r: u32, call: u64, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (mix(u64::from(r) << 40 ^ call << 20 ^ i as u64) % 1000) as f32 - 500.0)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn add_u32(d: &mut [u32], s: &[u32]) {
    d.iter_mut().zip(s).for_each(|(d, s)| *d = d.wrapping_add(*s));
}

/// What every covered collective gives on this rank, blocking or not.
#[derive(Debug, PartialEq)]
struct Results {
    allreduce: Vec<u32>,
    allreduce_avg: Vec<u32>,
    custom: Vec<u32>,
    broadcast: Vec<u32>,
    reduce: Vec<u32>,
    allgather: Vec<u32>,
    reduce_scatter: Vec<u32>,
    alltoall: Vec<u32>,
    allgatherv: Vec<u32>,
    alltoallv: Vec<u32>,
    reduce_scatterv: Vec<u32>,
    gather: Option<Vec<u32>>,
    gatherv: Option<Vec<u32>>,
    scatter: Vec<u32>,
    scatterv: Vec<u32>,
}

/// Counts that differ per rank (rank `q` has `len + q` elements), for the `*v` calls.
fn counts(n: usize, len: usize) -> Vec<usize> {
    (0..n).map(|q| len + q).collect()
}

/// Rank `r`'s send counts to each rank for alltoallv (`len + r + q` to rank `q`), and its
/// receive counts (what each rank `q` sends to it: `len + q + r`).
fn a2av_counts(r: usize, n: usize, len: usize) -> (Vec<usize>, Vec<usize>) {
    let c: Vec<usize> = (0..n).map(|q| len + r + q).collect();
    (c.clone(), c)
}

fn blocking(g: &Group<LoopbackComm>, len: usize) -> Results {
    let (r, n, o) = (g.rank().0, g.size() as usize, opts());
    let mut allreduce = data(r, 1, len);
    g.allreduce(&mut allreduce, ReduceOp::Sum, &o).unwrap();
    let mut allreduce_avg = data(r, 2, len);
    g.allreduce(&mut allreduce_avg, ReduceOp::Average, &o).unwrap();
    let mut custom: Vec<u32> = bits(&data(r, 3, len));
    g.allreduce(&mut custom, ReduceOp::Custom(&add_u32), &o).unwrap();
    let mut broadcast = data(r, 4, len);
    g.broadcast(&mut broadcast, Rank(n as u32 - 1), &o).unwrap();
    let mut reduce = data(r, 5, len);
    g.reduce(&mut reduce, Rank(1), ReduceOp::Max, &o).unwrap();
    let mut allgather = vec![0f32; len * n];
    g.allgather(&data(r, 6, len), &mut allgather, &o).unwrap();
    let mut reduce_scatter = vec![0f32; len];
    g.reduce_scatter(&data(r, 7, len * n), &mut reduce_scatter, ReduceOp::Sum, &o).unwrap();
    let mut alltoall = vec![0f32; len * n];
    g.alltoall(&data(r, 8, len * n), &mut alltoall, &o).unwrap();
    let (ri, c) = (r as usize, counts(n, len));
    let total: usize = c.iter().sum();
    let mut allgatherv = vec![0f32; total];
    g.allgatherv(&data(r, 9, c[ri]), &mut allgatherv, &c, &o).unwrap();
    let (sc, rc) = a2av_counts(ri, n, len);
    let mut alltoallv = vec![0f32; rc.iter().sum()];
    g.alltoallv(&data(r, 10, sc.iter().sum()), &mut alltoallv, &sc, &rc, &o).unwrap();
    let mut reduce_scatterv = vec![0f32; c[ri]];
    g.reduce_scatterv(&data(r, 11, total), &mut reduce_scatterv, &c, ReduceOp::Sum, &o).unwrap();
    let root = Rank(n as u32 / 2);
    let mut gather = (g.rank() == root).then(|| vec![0f32; len * n]);
    g.gather(&data(r, 12, len), gather.as_deref_mut(), root, &o).unwrap();
    let mut gatherv = (g.rank() == root).then(|| vec![0f32; total]);
    g.gatherv(&data(r, 13, c[ri]), gatherv.as_deref_mut(), &c, root, &o).unwrap();
    let scatter_in = (g.rank() == root).then(|| data(r, 14, len * n));
    let mut scatter = vec![0f32; len];
    g.scatter(scatter_in.as_deref(), &mut scatter, root, &o).unwrap();
    let scatterv_in = (g.rank() == root).then(|| data(r, 15, total));
    let mut scatterv = vec![0f32; c[ri]];
    g.scatterv(scatterv_in.as_deref(), &mut scatterv, &c, root, &o).unwrap();
    g.barrier(&o).unwrap();
    Results {
        allgatherv: bits(&allgatherv),
        alltoallv: bits(&alltoallv),
        reduce_scatterv: bits(&reduce_scatterv),
        gather: gather.as_deref().map(bits),
        gatherv: gatherv.as_deref().map(bits),
        scatter: bits(&scatter),
        scatterv: bits(&scatterv),
        allreduce: bits(&allreduce),
        allreduce_avg: bits(&allreduce_avg),
        custom,
        broadcast: bits(&broadcast),
        reduce: bits(&reduce),
        allgather: bits(&allgather),
        reduce_scatter: bits(&reduce_scatter),
        alltoall: bits(&alltoall),
    }
}

/// Every covered collective started at once, waited for in reverse order.
fn nonblocking(g: &Group<LoopbackComm>, len: usize) -> Results {
    let (r, n, o) = (g.rank().0, g.size() as usize, opts());
    let allreduce = g.start_allreduce(data(r, 1, len), ReduceOp::Sum, &o).unwrap();
    let allreduce_avg = g.start_allreduce(data(r, 2, len), ReduceOp::Average, &o).unwrap();
    // A boxed slice, to show any owned `AsMut<[T]>` will do.
    let custom_in: Box<[u32]> = bits(&data(r, 3, len)).into();
    let custom = g.start_allreduce_with(custom_in, add_u32, &o).unwrap();
    let broadcast = g.start_broadcast(data(r, 4, len), Rank(n as u32 - 1), &o).unwrap();
    let reduce = g.start_reduce(data(r, 5, len), Rank(1), ReduceOp::Max, &o).unwrap();
    let allgather = g.start_allgather(data(r, 6, len), &o).unwrap();
    let reduce_scatter = g.start_reduce_scatter(data(r, 7, len * n), ReduceOp::Sum, &o).unwrap();
    let alltoall = g.start_alltoall(data(r, 8, len * n), &o).unwrap();
    let (ri, c) = (r as usize, counts(n, len));
    let total: usize = c.iter().sum();
    let allgatherv = g.start_allgatherv(data(r, 9, c[ri]), c.clone(), &o).unwrap();
    let (sc, rc) = a2av_counts(ri, n, len);
    let alltoallv = g.start_alltoallv(data(r, 10, sc.iter().sum()), sc, rc, &o).unwrap();
    let reduce_scatterv =
        g.start_reduce_scatterv(data(r, 11, total), c.clone(), ReduceOp::Sum, &o).unwrap();
    let root = Rank(n as u32 / 2);
    let gather = g.start_gather(data(r, 12, len), root, &o).unwrap();
    let gatherv = g.start_gatherv(data(r, 13, c[ri]), c.clone(), root, &o).unwrap();
    let scatter_in = (g.rank() == root).then(|| data(r, 14, len * n));
    let scatter = g.start_scatter(scatter_in, vec![0f32; len], root, &o).unwrap();
    let scatterv_in = (g.rank() == root).then(|| data(r, 15, total));
    let scatterv = g.start_scatterv(scatterv_in, vec![0f32; c[ri]], c, root, &o).unwrap();
    let barrier = g.start_barrier(&o).unwrap();
    barrier.wait().unwrap();
    let scatterv = bits(&scatterv.wait().unwrap());
    let scatter = bits(&scatter.wait().unwrap());
    let gatherv = gatherv.wait().unwrap().as_deref().map(bits);
    let gather = gather.wait().unwrap().as_deref().map(bits);
    let reduce_scatterv = bits(&reduce_scatterv.wait().unwrap());
    let alltoallv = bits(&alltoallv.wait().unwrap());
    let allgatherv = bits(&allgatherv.wait().unwrap());
    let alltoall = bits(&alltoall.wait().unwrap());
    let reduce_scatter = bits(&reduce_scatter.wait().unwrap());
    let allgather = bits(&allgather.wait().unwrap());
    let reduce = bits(&reduce.wait().unwrap());
    let broadcast = bits(&broadcast.wait().unwrap());
    let custom = custom.wait().unwrap().into_vec();
    let allreduce_avg = bits(&allreduce_avg.wait().unwrap());
    let allreduce = bits(&allreduce.wait().unwrap());
    Results {
        allgatherv,
        alltoallv,
        reduce_scatterv,
        gather,
        gatherv,
        scatter,
        scatterv,
        allreduce,
        allreduce_avg,
        custom,
        broadcast,
        reduce,
        allgather,
        reduce_scatter,
        alltoall,
    }
}

#[test]
fn every_collective_gives_what_the_blocking_call_gives_at_2_to_4_ranks() {
    for n in 2..=4u32 {
        for len in [1usize, 777, 4096] {
            let out = on_ranks(n, u64::from(n) * 31 + len as u64, |g| {
                let b = blocking(&g, len);
                let nb = nonblocking(&g, len);
                (b, nb)
            });
            for (rank, (b, nb)) in out.iter().enumerate() {
                assert_eq!(b, nb, "{n} ranks, {len} elements, rank {rank}");
                // The blocking results are themselves right (a check that the comparison
                // is not between two untouched inputs): the sum is every rank's data.
                let want: Vec<u32> = (0..len)
                    .map(|i| (0..n).map(|q| data(q, 1, len)[i]).fold(0.0f32, |a, x| a + x))
                    .map(f32::to_bits)
                    .collect();
                if len == 1 {
                    assert_eq!(b.allreduce, want, "{n} ranks, rank {rank}: allreduce sum");
                }
                let gathered: Vec<u32> = (0..n).flat_map(|q| bits(&data(q, 12, len))).collect();
                let root = n as usize / 2;
                assert_eq!(b.gather, (rank == root).then_some(gathered), "{n} ranks, rank {rank}");
            }
        }
    }
}

#[test]
fn calls_in_flight_at_once_pair_up_by_issue_order_on_every_rank() {
    // More calls than the window, from two issuing handles on two threads at once, with
    // delivery reordered by havoc: each call's result must be its own, and every rank must
    // assign the same tags in issue order.
    let calls = u64::from(MAX_IN_FLIGHT) + 8;
    let out = on_ranks(3, 7, |g| {
        let side = g.fork(5).unwrap();
        let issue = |g: &Group<LoopbackComm>, salt: u64| {
            let r = g.rank().0;
            let hs: Vec<_> = (0..calls)
                .map(|i| {
                    let v = vec![u64::from(r) * 1000 + i + salt; 3 + i as usize];
                    g.start_allreduce(v, ReduceOp::Sum, &opts()).unwrap()
                })
                .collect();
            let tags: Vec<u32> = hs.iter().map(|h| h.tag()).collect();
            let sums: Vec<Vec<u64>> = hs.into_iter().map(|h| h.wait().unwrap()).collect();
            (tags, sums)
        };
        std::thread::scope(|s| {
            let t = s.spawn(move || issue(&side, 1 << 32));
            let main = issue(&g, 0);
            (main, t.join().unwrap())
        })
    });
    for (rank, ((tags, sums), (side_tags, side_sums))) in out.iter().enumerate() {
        for i in 0..calls as usize {
            let slot = i as u32 % MAX_IN_FLIGHT;
            assert_eq!(tags[i], BACKGROUND_TAGS | slot, "rank {rank}, call {i}");
            assert_eq!(side_tags[i], BACKGROUND_TAGS | 5 << 5 | slot, "rank {rank}, side call {i}");
            let want = (0..3u64).map(|q| q * 1000 + i as u64).sum::<u64>();
            assert_eq!(sums[i], vec![want; 3 + i], "rank {rank}, call {i}");
            let want = want + 3 * (1 << 32);
            assert_eq!(side_sums[i], vec![want; 3 + i], "rank {rank}, side call {i}");
        }
        assert_eq!(tags, &out[0].0.0, "rank {rank}'s tags differ from rank 0's");
    }
}

#[test]
fn a_later_call_can_end_while_an_earlier_one_is_still_running() {
    // The first call's reduction blocks until the caller opens a gate, which it does only
    // after the second call has ended: so the second ends first, or (if calls ran one
    // after the other) the gate gives up after its deadline and the test fails.
    let out = on_ranks_plain(2, |g| {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let gave_up = Arc::new(Mutex::new(false));
        let (gate2, gave_up2) = (Arc::clone(&gate), Arc::clone(&gave_up));
        let blocked = move |d: &mut [u32], s: &[u32]| {
            let (open, cv) = &*gate2;
            let st = open.lock().unwrap();
            let (st, t) = cv.wait_timeout_while(st, Duration::from_secs(20), |o| !*o).unwrap();
            drop(st);
            if t.timed_out() {
                *gave_up2.lock().unwrap() = true;
            }
            add_u32(d, s);
        };
        let o = opts().with_algorithm(Algorithm::RecursiveDoubling);
        let first = g.start_allreduce_with(vec![g.rank().0 + 1; 4], blocked, &o).unwrap();
        let second = g.start_allreduce(vec![10u32; 4], ReduceOp::Sum, &o).unwrap();
        let second = second.wait().unwrap();
        let first_done_before_gate = first.is_done();
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let first = first.wait().unwrap();
        let gave_up = *gave_up.lock().unwrap();
        (first, second, first_done_before_gate, gave_up)
    });
    for (rank, (first, second, early, gave_up)) in out.into_iter().enumerate() {
        assert!(!gave_up, "rank {rank}: the second call waited behind the first");
        assert!(!early, "rank {rank}: the first call ended before its gate opened");
        assert_eq!(first, vec![3; 4], "rank {rank}");
        assert_eq!(second, vec![20; 4], "rank {rank}");
    }
}

#[test]
fn the_call_progresses_while_the_caller_is_blocked_elsewhere() {
    // Rank 0 starts an allreduce, tells rank 1, and then blocks on a channel that rank 1
    // writes only once its own allreduce (started only after rank 0's start returned) has
    // ended, which needs rank 0's part. So rank 0's start must return before the call ends
    // (a start that blocks never tells rank 1), and the call must progress while rank 0
    // is blocked elsewhere, without wait (a library that progresses only inside wait, as
    // PyTorch's gloo backend does, would leave rank 1 to time out).
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<Result<bool, Error>>();
    let (started_rx, done_rx) = (Mutex::new(started_rx), Mutex::new(done_rx));
    let out = on_ranks_plain(2, |g| {
        let o = opts().with_timeout(Duration::from_secs(20)).with_algorithm(Algorithm::Ring);
        let mine = vec![g.rank().0 + 1; 1 << 20];
        if g.rank() == Rank(1) {
            let heard = started_rx.lock().unwrap().recv_timeout(Duration::from_secs(60));
            let h = g.start_allreduce(mine, ReduceOp::Sum, &o).unwrap();
            done_tx.send(h.wait().map(|v| v.iter().all(|&x| x == 3))).unwrap();
            (heard.is_ok(), None)
        } else {
            let h = g.start_allreduce(mine, ReduceOp::Sum, &o).unwrap();
            started_tx.send(()).unwrap();
            let heard = done_rx.lock().unwrap().recv_timeout(Duration::from_secs(60));
            let mine = h.wait();
            (true, Some((heard, mine.map(|v| v.iter().all(|&x| x == 3)))))
        }
    });
    assert!(out[1].0, "rank 0's start_allreduce did not return before its call ended");
    let (heard, mine) = out[0].1.as_ref().unwrap();
    assert!(
        matches!(heard, Ok(Ok(true))),
        "rank 1's allreduce did not end (right) while rank 0 was blocked: {heard:?}"
    );
    assert!(matches!(mine, Ok(true)), "rank 0's result: {mine:?}");
}

#[test]
fn a_dropped_handle_detaches_and_later_calls_still_work() {
    let out = on_ranks(3, 11, |g| {
        let o = opts();
        let r = g.rank().0;
        // Dropped at once, and one dropped after the next call started.
        drop(g.start_allreduce(vec![r; 1000], ReduceOp::Sum, &o).unwrap());
        let dropped_late = g.start_allgather(vec![r; 10], &o).unwrap();
        let next = g.start_allreduce(vec![r + 1; 1000], ReduceOp::Sum, &o).unwrap();
        drop(dropped_late);
        let next = next.wait().unwrap();
        let mut blocking = vec![r * 2; 5];
        g.allreduce(&mut blocking, ReduceOp::Sum, &o).unwrap();
        // The detached calls end by themselves and give the communicator back.
        let mut g = g;
        let deadline = gloo_testing::deadline(30);
        let comm = loop {
            match g.into_inner() {
                Ok(c) => break Some(c),
                Err(back) if std::time::Instant::now() < deadline => {
                    g = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => break None,
            }
        };
        (next, blocking, comm.is_some())
    });
    for (rank, (next, blocking, unwrapped)) in out.into_iter().enumerate() {
        assert_eq!(next, vec![6; 1000], "rank {rank}");
        assert_eq!(blocking, vec![6; 5], "rank {rank}");
        assert!(unwrapped, "rank {rank}: the detached calls still hold the communicator");
    }
}

#[test]
fn dropping_the_group_while_calls_are_in_flight_lets_them_finish() {
    let out = on_ranks(2, 12, |g| {
        let o = opts();
        let r = g.rank().0;
        let a = g.start_allreduce(vec![r + 1; 100_000], ReduceOp::Sum, &o).unwrap();
        let b = g.start_broadcast(vec![r + 7; 10], Rank(0), &o).unwrap();
        drop(g);
        (a.wait().unwrap(), b.wait().unwrap())
    });
    for (rank, (a, b)) in out.into_iter().enumerate() {
        assert_eq!(a, vec![3; 100_000], "rank {rank}");
        assert_eq!(b, vec![7; 10], "rank {rank}");
    }
}

#[test]
fn a_peer_lost_mid_call_reaches_wait_as_a_typed_error() {
    let started = Barrier::new(2);
    let out = on_ranks_plain(2, |g| {
        if g.rank() == Rank(1) {
            started.wait();
            let Ok(comm) = g.into_inner() else { panic!("rank 1 has no call in flight") };
            comm.crash();
            return None;
        }
        let o = opts().with_timeout(Duration::from_secs(10));
        let h = g.start_allreduce(vec![1f32; 1 << 16], ReduceOp::Sum, &o).unwrap();
        started.wait();
        // wait() must end (by the call's own deadline at the latest); a watchdog thread
        // turns a hang into a failure.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(h.wait());
        });
        Some(rx.recv_timeout(Duration::from_secs(60)))
    });
    match &out[0] {
        Some(Ok(Err(Error::Transport {
            source: TError::PeerLost { peer: Rank(1), .. }, ..
        }))) => {}
        other => panic!("rank 0: expected PeerLost naming rank 1 from wait, got {other:?}"),
    }
}

#[test]
fn ranks_that_start_different_calls_get_a_mismatch_from_wait() {
    let out = on_ranks_plain(2, |g| {
        let len = 4 + g.rank().index();
        let h = g.start_allreduce(vec![1u8; len], ReduceOp::Sum, &opts()).unwrap();
        h.wait()
    });
    for (rank, r) in out.into_iter().enumerate() {
        assert!(matches!(r, Err(Error::Mismatch { .. })), "rank {rank}: {r:?}");
    }
}

#[test]
fn a_borrowed_custom_op_and_a_held_reserved_tag_are_refused_before_anything_is_sent() {
    let out = on_ranks_plain(2, |g| {
        let f = |d: &mut [u32], s: &[u32]| add_u32(d, s);
        let custom = g.start_allreduce(vec![1u32; 4], ReduceOp::Custom(&f), &opts()).map(drop);
        // The first background tag is held by a handle of the caller's.
        let squatter = g.fork(BACKGROUND_TAGS).unwrap();
        let held = g.start_barrier(&opts()).map(drop);
        drop(squatter);
        // Neither refusal took a tag: the next call gets the first one, on every rank.
        let h = g.start_allreduce(vec![2u32; 4], ReduceOp::Sum, &opts()).unwrap();
        let tag = h.tag();
        (custom, held, tag, h.wait().unwrap())
    });
    for (rank, (custom, held, tag, sum)) in out.into_iter().enumerate() {
        assert!(
            matches!(&custom, Err(Error::InvalidArgument { what, .. }) if what.contains("start_allreduce_with")),
            "rank {rank}: {custom:?}"
        );
        assert!(
            matches!(&held, Err(Error::InvalidArgument { what, .. }) if what.contains(&BACKGROUND_TAGS.to_string())),
            "rank {rank}: {held:?}"
        );
        assert_eq!(tag, BACKGROUND_TAGS, "rank {rank}");
        assert_eq!(sum, vec![4; 4], "rank {rank}");
    }
}

/// Count vectors are checked as the blocking calls check them, before any output is
/// allocated: one count per rank, and a sum memory can hold.
#[test]
fn bad_count_vectors_are_the_blocking_calls_errors() {
    let out = on_ranks_plain(2, |g| {
        let o = opts();
        let short = g.start_allgatherv(vec![1u8], vec![1], &o).unwrap().wait().map(drop);
        let huge = vec![usize::MAX / 2, usize::MAX / 2];
        let too_big = g.start_alltoallv(vec![1u8], vec![1, 1], huge, &o).unwrap().wait().map(drop);
        let rsv = g.start_reduce_scatterv(vec![1u8], vec![1], ReduceOp::Sum, &o).unwrap();
        (short, too_big, rsv.wait().map(drop))
    });
    for (rank, (short, too_big, rsv)) in out.iter().enumerate() {
        for (call, e) in [("allgatherv", short), ("reduce_scatterv", rsv)] {
            assert!(
                matches!(e, Err(Error::InvalidArgument { what, .. }) if what.contains("one per rank")),
                "rank {rank}, {call}: {e:?}"
            );
        }
        assert!(
            matches!(too_big, Err(Error::InvalidArgument { what, .. }) if what.contains("recv_counts")),
            "rank {rank}: {too_big:?}"
        );
    }
}
