//! No collective allocates memory in proportion to its message once it is warm: after two
//! calls have filled the group's scratch pool, a third call of every collective and
//! algorithm allocates less than 1/64 of its 4 MiB buffer, counted by a counting global
//! allocator (this test binary's own, `stats_alloc`) over every thread of the process, the
//! tcp transport's included.
//! Ranks are threads joined by tcp over loopback, so that large messages take the
//! transport's direct path (its eager path buffers small messages by design).

use std::alloc::System;
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use gloo_algorithms::{Algorithm, Group, Options, ReduceOp, select::EnvOverrides};
use gloo_transport::tcp::{TcpComm, TcpConfig, TcpListener};
use gloo_transport::{Communicator, Rank};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Elements of f32 per rank's buffer: 4 MiB.
const COUNT: usize = 1 << 20;
/// The most a warm call may allocate over the whole process.
const BUDGET: usize = (COUNT * 4) / 64;

/// `n` tcp communicators over loopback, connected.
fn tcp_group(n: u32, job: &str) -> Vec<TcpComm> {
    let deadline = gloo_testing::deadline(60);
    let listeners: Vec<TcpListener> =
        (0..n).map(|r| TcpListener::bind(TcpConfig::loopback(job, Rank(r), n)).unwrap()).collect();
    let addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> =
            listeners.into_iter().map(|l| s.spawn(|| l.connect_all(&addrs, deadline))).collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    })
}

/// One collective call of this rank on its buffers.
type Call = fn(&Group<TcpComm>, &mut Bufs, &Options);

/// A rank's buffers of `COUNT` elements: floats, and integers for the exact average.
struct Bufs {
    a: Vec<f32>,
    b: Vec<f32>,
    ints: Vec<i32>,
    ints_out: Vec<i32>,
}

fn opts(alg: Option<Algorithm>) -> Options {
    let o = Options::new().with_timeout(Duration::from_secs(60));
    match alg {
        Some(a) => o.with_algorithm(a),
        None => o,
    }
}

fn cases() -> Vec<(&'static str, Option<Algorithm>, Call)> {
    use Algorithm::*;
    vec![
        ("allreduce", Some(Ring), |g, b, o| g.allreduce(&mut b.a, ReduceOp::Sum, o).unwrap()),
        ("allreduce", Some(HalvingDoubling), |g, b, o| {
            g.allreduce(&mut b.a, ReduceOp::Sum, o).unwrap()
        }),
        ("allreduce", Some(Bcube), |g, b, o| g.allreduce(&mut b.a, ReduceOp::Max, o).unwrap()),
        ("allreduce", Some(RecursiveDoubling), |g, b, o| {
            g.allreduce(&mut b.a, ReduceOp::Min, o).unwrap()
        }),
        ("allreduce average i32", Some(Ring), |g, b, o| {
            g.allreduce(&mut b.ints, ReduceOp::Average, o).unwrap()
        }),
        ("allreduce_many", None, |g, b, o| {
            g.allreduce_many(&mut [&mut b.a, &mut b.b], ReduceOp::Sum, o).unwrap()
        }),
        ("reduce", None, |g, b, o| g.reduce(&mut b.a, Rank(1), ReduceOp::Sum, o).unwrap()),
        ("reduce average i32", None, |g, b, o| {
            g.reduce(&mut b.ints, Rank(0), ReduceOp::Average, o).unwrap()
        }),
        ("reduce_into", None, |g, b, o| {
            let out = (g.rank() == Rank(0)).then_some(&mut b.b[..]);
            g.reduce_into(&b.a, out, Rank(0), ReduceOp::Sum, o).unwrap()
        }),
        ("broadcast", Some(BinomialTree), |g, b, o| g.broadcast(&mut b.a, Rank(1), o).unwrap()),
        ("broadcast", Some(ScatterAllgather), |g, b, o| g.broadcast(&mut b.a, Rank(0), o).unwrap()),
        ("broadcast", Some(Chain), |g, b, o| g.broadcast(&mut b.a, Rank(1), o).unwrap()),
        ("allgather", Some(Ring), |g, b, o| {
            let k = COUNT / g.size() as usize;
            g.allgather(&b.a[..k], &mut b.b[..k * g.size() as usize], o).unwrap()
        }),
        ("allgather", Some(Bruck), |g, b, o| {
            let k = COUNT / g.size() as usize;
            g.allgather(&b.a[..k], &mut b.b[..k * g.size() as usize], o).unwrap()
        }),
        ("allgatherv", None, |g, b, o| {
            let n = g.size() as usize;
            let counts: Vec<usize> = (0..n).map(|q| COUNT / n - q).collect();
            let me = g.rank().index();
            let total: usize = counts.iter().sum();
            g.allgatherv(&b.a[..counts[me]], &mut b.b[..total], &counts, o).unwrap()
        }),
        ("reduce_scatter", None, |g, b, o| {
            let k = COUNT / g.size() as usize;
            g.reduce_scatter(&b.a[..k * g.size() as usize], &mut b.b[..k], ReduceOp::Sum, o)
                .unwrap()
        }),
        ("reduce_scatter average i32", None, |g, b, o| {
            let k = COUNT / g.size() as usize;
            let input = &b.ints[..k * g.size() as usize];
            g.reduce_scatter(input, &mut b.ints_out[..k], ReduceOp::Average, o).unwrap()
        }),
        ("reduce_scatter_in_place", None, |g, b, o| {
            let k = COUNT / g.size() as usize;
            g.reduce_scatter_in_place(&mut b.a[..k * g.size() as usize], ReduceOp::Sum, o).unwrap();
        }),
        ("reduce_scatterv", None, |g, b, o| {
            let n = g.size() as usize;
            let counts: Vec<usize> = (0..n).map(|q| COUNT / n - 3 * q).collect();
            let total: usize = counts.iter().sum();
            let me = g.rank().index();
            g.reduce_scatterv(&b.a[..total], &mut b.b[..counts[me]], &counts, ReduceOp::Sum, o)
                .unwrap()
        }),
        ("alltoall", None, |g, b, o| g.alltoall(&b.a, &mut b.b, o).unwrap()),
        ("alltoallv", None, |g, b, o| {
            let n = g.size() as usize;
            let counts = vec![COUNT / n; n];
            g.alltoallv(&b.a[..COUNT / n * n], &mut b.b[..COUNT / n * n], &counts, &counts, o)
                .unwrap()
        }),
        ("gather", Some(Direct), |g, b, o| {
            let k = COUNT / g.size() as usize;
            let out = (g.rank() == Rank(1)).then_some(&mut b.b[..k * g.size() as usize]);
            g.gather(&b.a[..k], out, Rank(1), o).unwrap()
        }),
        ("gather", Some(BinomialTree), |g, b, o| {
            let k = COUNT / g.size() as usize;
            let out = (g.rank() == Rank(0)).then_some(&mut b.b[..k * g.size() as usize]);
            g.gather(&b.a[..k], out, Rank(0), o).unwrap()
        }),
        ("scatter", Some(Direct), |g, b, o| {
            let k = COUNT / g.size() as usize;
            let input = (g.rank() == Rank(0)).then_some(&b.a[..k * g.size() as usize]);
            g.scatter(input, &mut b.b[..k], Rank(0), o).unwrap()
        }),
        ("scatter", Some(BinomialTree), |g, b, o| {
            let k = COUNT / g.size() as usize;
            let input = (g.rank() == Rank(1)).then_some(&b.a[..k * g.size() as usize]);
            g.scatter(input, &mut b.b[..k], Rank(1), o).unwrap()
        }),
        ("barrier", None, |g, _, o| g.barrier(o).unwrap()),
    ]
}

/// The tests of this binary one at a time: the counting allocator sees every thread.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn a_warm_call_of_every_collective_allocates_nothing_in_proportion_to_its_message() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for n in [2u32, 4] {
        let comms = tcp_group(n, &format!("alloc-{n}"));
        let cases = cases();
        let start = Barrier::new(n as usize);
        let end = Barrier::new(n as usize);
        let found = Mutex::new(Vec::new());
        let region = Mutex::new(None);
        gloo_testing::run_ranks(comms, |comm| {
            let me = comm.rank();
            let g = Group::with_overrides(comm, EnvOverrides::default());
            let mut bufs = Bufs {
                a: vec![1.0; COUNT],
                b: vec![0.0; COUNT],
                ints: vec![i32::from(me.0 as u8) - 3; COUNT],
                ints_out: vec![0; COUNT],
            };
            for (name, alg, call) in &cases {
                let o = opts(*alg);
                call(&g, &mut bufs, &o);
                call(&g, &mut bufs, &o);
                start.wait();
                if me == Rank(0) {
                    *region.lock().unwrap() = Some(Region::new(GLOBAL));
                }
                start.wait();
                call(&g, &mut bufs, &o);
                end.wait();
                if me == Rank(0) {
                    let stats = region.lock().unwrap().take().expect("set above").change();
                    let bytes = stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize;
                    found.lock().unwrap().push((*name, *alg, bytes, stats.allocations));
                }
                end.wait();
            }
        });
        let found = found.into_inner().unwrap();
        assert_eq!(found.len(), cases.len());
        for (name, alg, bytes, count) in found {
            assert!(
                bytes < BUDGET,
                "n={n} {name} {alg:?}: a warm call allocated {bytes} bytes ({count} allocations) \
                 for a {} byte buffer",
                COUNT * 4
            );
        }
    }
}

/// Small calls allocate nothing once warm: the transport reuses its receive buffers and the
/// matcher its queues, so a 4-byte allreduce, a small alltoall and a barrier make no
/// allocation per call. Counted over 200 calls of each, on every thread of the process;
/// the few allowed are for the transport's occasional heartbeat.
#[test]
fn small_warm_calls_allocate_nothing_per_call() {
    const CALLS: usize = 200;
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let comms = tcp_group(2, "alloc-small");
    let start = Barrier::new(2);
    let end = Barrier::new(2);
    let found = Mutex::new(Vec::new());
    let region = Mutex::new(None);
    gloo_testing::run_ranks(comms, |comm| {
        let me = comm.rank();
        let g = Group::with_overrides(comm, EnvOverrides::default());
        let o = opts(None);
        let mut v = [me.0 as f32; 1];
        let send = [me.0 as u8; 16];
        let mut recv = [0u8; 16];
        for name in ["allreduce 4 B", "alltoall 16 B", "barrier"] {
            let mut call = || match name {
                "allreduce 4 B" => g.allreduce(&mut v, ReduceOp::Sum, &o).unwrap(),
                "alltoall 16 B" => g.alltoall(&send, &mut recv, &o).unwrap(),
                _ => g.barrier(&o).unwrap(),
            };
            for _ in 0..CALLS {
                call();
            }
            start.wait();
            if me == Rank(0) {
                *region.lock().unwrap() = Some(Region::new(GLOBAL));
            }
            start.wait();
            for _ in 0..CALLS {
                call();
            }
            end.wait();
            if me == Rank(0) {
                let stats = region.lock().unwrap().take().expect("set above").change();
                found.lock().unwrap().push((name, stats.allocations + stats.reallocations));
            }
            end.wait();
        }
    });
    let found = found.into_inner().unwrap();
    assert_eq!(found.len(), 3);
    for (name, count) in found {
        assert!(
            count < CALLS / 20,
            "{name}: {CALLS} warm calls on 2 ranks allocated {count} times"
        );
    }
}
