//! The sweep: one operation over a range of message sizes, timed on every rank, summarised on
//! rank 0 (each iteration counts as long as its slowest rank), and checked.

use std::time::Instant;

use gloo_algorithms::{DynComm, Group};
use gloo_transport::{Communicator, Op, Rank, Slot};

use crate::cli::{Collective, SweepArgs};
use crate::collectives::{self, Shared};
use crate::ctl;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::report::Row;
use crate::stats::Latency;

/// The slot of `sendrecv`'s data (a tag of its own, beside the control tag).
const SENDRECV: Slot = Slot::new(0xFFFF_FF01, 0);

/// The most timed iterations of one size when they are chosen by time.
const MAX_ITERS: u64 = 100_000;
/// The fewest timed iterations of one size when they are chosen by time.
const MIN_ITERS: u64 = 5;

/// One message size of one operation, ready to run.
pub(crate) trait SizeBench {
    /// The size reported in the `bytes` column.
    fn bytes(&self) -> u64;
    /// Elements in that buffer.
    fn elements(&self) -> u64;
    /// The algorithm that runs.
    fn algorithm(&self) -> String;
    /// One call of the operation.
    fn run(&mut self, deadline: Instant) -> Result<()>;
    /// Fill the inputs with this rank's deterministic values for the checked call.
    fn prepare_check(&mut self);
    /// After the checked call: compare the output with the locally computed expected value.
    fn verify(&self) -> std::result::Result<(), String>;
    /// After the checked call: a digest of the output when every rank must end with the same
    /// bytes (allreduce, broadcast, allgather), so rank 0 can check that they are bitwise
    /// identical, floats included; `None` for operations whose outputs differ by rank.
    fn digest(&self) -> Option<u64> {
        None
    }
}

/// The message sizes of a sweep: `min`, `min·f`, `min·f²`, … up to `max` (inclusive).
pub(crate) fn sizes(min: u64, max: u64, factor: u64) -> Vec<u64> {
    let mut v = Vec::new();
    let mut s = min.max(1);
    while s <= max {
        v.push(s);
        match s.checked_mul(factor) {
            Some(n) => s = n,
            None => break,
        }
    }
    v
}

/// nccl-tests' bus-bandwidth factor of an operation over `n` ranks; `None` where no data moves.
pub(crate) fn bus_factor(c: Collective, n: u32) -> Option<f64> {
    let n = f64::from(n);
    match c {
        Collective::Allreduce => Some(2.0 * (n - 1.0) / n),
        Collective::Allgather
        | Collective::ReduceScatter
        | Collective::Alltoall
        | Collective::Gather
        | Collective::Scatter => Some((n - 1.0) / n),
        Collective::Broadcast | Collective::Reduce | Collective::Sendrecv => Some(1.0),
        Collective::Barrier => None,
    }
}

/// The measured limit busbw is compared with: the full-duplex stream for operations where
/// every rank sends and receives at once, the one-way stream for rooted ones.
pub(crate) fn limit_for(c: Collective, l: &Limits) -> Option<(&'static str, f64)> {
    match c {
        Collective::Allreduce
        | Collective::Allgather
        | Collective::ReduceScatter
        | Collective::Alltoall
        | Collective::Sendrecv => l.stream_duplex_gbps.map(|g| ("duplex", g)),
        Collective::Broadcast | Collective::Reduce | Collective::Gather | Collective::Scatter => {
            l.stream_oneway_gbps.map(|g| ("oneway", g))
        }
        Collective::Barrier => None,
    }
}

/// The definitions printed under the header for operations `cs` (each named when there are
/// several).
pub(crate) fn notes(cs: &[Collective], n: u32, spin: bool) -> Vec<String> {
    let mut v: Vec<String> = match cs {
        [c] => vec![bus_note(*c, n)],
        _ => cs.iter().map(|c| format!("{}: {}", c.name(), bus_note(*c, n))).collect(),
    };
    v.push(format!("algbw = bytes / p50 time; each time is the slowest rank's; pct_limit = busbw / the plain-socket limit named in `limit`; x_rtt = p50 / plain {} ping-pong p50 (the plain socket waiting as the transport does)", if spin { "busy-poll" } else { "blocking" }));
    v
}

/// What `bytes` and busbw mean for operation `c`.
fn bus_note(c: Collective, n: u32) -> String {
    let factor = match bus_factor(c, n) {
        Some(f) => format!("{f:.3}"),
        None => "-".into(),
    };
    match c {
        Collective::Allreduce => format!("bytes = each rank's buffer; busbw = algbw x 2(n-1)/n = algbw x {factor} (nccl-tests)"),
        Collective::Allgather => format!("bytes = the gathered output (n blocks); busbw = algbw x (n-1)/n = algbw x {factor} (nccl-tests)"),
        Collective::ReduceScatter => format!("bytes = each rank's input (n blocks); busbw = algbw x (n-1)/n = algbw x {factor} (nccl-tests)"),
        Collective::Alltoall => format!("bytes = each rank's input (n blocks); busbw = algbw x (n-1)/n = algbw x {factor} (nccl-tests)"),
        Collective::Gather | Collective::Scatter => format!("bytes = the root's buffer (n blocks); busbw = algbw x (n-1)/n = algbw x {factor} (the root's link carries n-1 of the n blocks)"),
        Collective::Broadcast | Collective::Reduce => "bytes = the buffer; busbw = algbw (nccl-tests)".to_string(),
        Collective::Sendrecv => "sendrecv: every rank sends `bytes` to rank+1 and receives `bytes` from rank-1 at once (a ring shift, as nccl-tests' sendrecv); busbw = algbw = bytes / p50, per direction".to_string(),
        Collective::Barrier => "barrier: no data, so no algbw or busbw; x_rtt compares its p50 with the plain ping-pong round trip".to_string(),
    }
}

/// Runs the sweep of every operation `--collective` names on every rank (one group for all
/// of them); rank 0 returns the rows.
pub(crate) fn run(
    comm: &dyn Communicator,
    args: &SweepArgs,
    limits: &Limits,
    spin: bool,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let group = Group::new(DynComm(comm)).map_err(|e| Error::Collective {
        doing: "reading the GLOO_ALGORITHM_* variables".into(),
        source: e,
    })?;
    let mut rows = Vec::new();
    for c in args.collective.each(comm.size()) {
        rows.extend(run_one(comm, &group, args, c, limits, spin, deadline)?);
    }
    Ok(rows)
}

/// The sweep of operation `c`.
fn run_one(
    comm: &dyn Communicator,
    group: &Group<Shared<'_>>,
    args: &SweepArgs,
    c: Collective,
    limits: &Limits,
    spin: bool,
    deadline: Instant,
) -> Result<Vec<Row>> {
    let rtt = if spin { limits.pingpong_spin_us } else { limits.pingpong_blocking_us };
    let n = comm.size();
    let mut rows = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let sizes = if c == Collective::Barrier {
        vec![0]
    } else {
        sizes(args.min_bytes, args.max_bytes, args.step_factor)
    };
    for bytes in sizes {
        let mut bench = make(comm, group, args, c, bytes)?;
        if !seen.insert(bench.bytes()) {
            // Rounding to whole elements (and blocks) made this size equal to an earlier one.
            continue;
        }
        ctl::barrier(comm, deadline)?;
        for _ in 0..args.warmup {
            bench.run(deadline)?;
        }
        let samples = match args.iters {
            Some(n) => timed(bench.as_mut(), n, deadline)?,
            None => timed_for(comm, bench.as_mut(), args.time_per_size, deadline)?,
        };
        let iters = samples.len() as u64;
        let (status, digest) = if args.checking() {
            bench.prepare_check();
            bench.run(deadline)?;
            let status = match bench.verify() {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAIL: {e}"),
            };
            (status, bench.digest())
        } else {
            ("off".to_string(), None)
        };
        let all = ctl::gather_f64s(comm, &samples, deadline)?;
        let mut statuses = ctl::gather_status(comm, &status, deadline)?;
        // Every rank sends a digest (0 when it has none) so the gathers line up; the u64
        // travels as the bits of an f64, which the gather moves without arithmetic.
        let digests = ctl::gather_f64s(comm, &[f64::from_bits(digest.unwrap_or(0))], deadline)?;
        if let (Some(st), Some(d)) = (statuses.as_mut(), digests) {
            let d: Vec<u64> = d.iter().map(|v| v.first().map_or(0, |x| x.to_bits())).collect();
            if digest.is_some() {
                for (r, h) in d.iter().enumerate() {
                    if *h != d[0] && st[r] == "ok" {
                        st[r] = "FAIL: its output differs from rank 0's (bitwise)".to_string();
                    }
                }
            }
        }
        let (Some(all), Some(statuses)) = (all, statuses) else { continue };
        let mut slowest: Vec<f64> =
            (0..samples.len()).map(|i| all.iter().map(|s| s[i]).fold(0.0, f64::max)).collect();
        let lat = Latency::from_samples(&mut slowest);
        let check = summarise(&statuses);
        let algbw = bus_factor(c, n)
            .map(|_| bench.bytes() as f64 / (lat.p50 * 1e-6) / 1e9)
            .filter(|v| v.is_finite());
        let busbw = algbw.zip(bus_factor(c, n)).map(|(a, f)| a * f);
        let limit = limit_for(c, limits);
        let row = Row {
            collective: c.name().into(),
            bytes: bench.bytes(),
            elements: bench.elements(),
            dtype: if c == Collective::Barrier { "-".into() } else { args.dtype.name().into() },
            op: if c.reduces() { args.op.name().into() } else { "-".into() },
            algorithm: bench.algorithm(),
            iters,
            min_us: lat.min,
            p50_us: lat.p50,
            p99_us: lat.p99,
            algbw_gbps: algbw,
            busbw_gbps: busbw,
            limit: limit.map(|(name, _)| name.to_string()),
            limit_pct: busbw.zip(limit).map(|(b, (_, l))| 100.0 * b / l).filter(|v| v.is_finite()),
            x_rtt: rtt.map(|p| lat.p50 / p.p50).filter(|v| v.is_finite()),
            check,
        };
        say!(
            "gloo-bench: {} {} B: {} iterations, p50 {:.1} us, check {}",
            c.name(),
            row.bytes,
            row.iters,
            row.p50_us,
            row.check
        );
        rows.push(row);
    }
    Ok(rows)
}

/// `n` timed calls; each sample in µs.
fn timed(bench: &mut dyn SizeBench, n: u64, deadline: Instant) -> Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(1 << 20));
    for _ in 0..n {
        let t0 = Instant::now();
        bench.run(deadline)?;
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(samples)
}

/// Timed calls for about `secs` (at least [`MIN_ITERS`], at most [`MAX_ITERS`]), in rounds:
/// before each round rank 0 tells every rank how many calls it holds (0: done), from the
/// mean of what it measured so far, so all ranks make the same number of calls and one slow
/// or fast early call cannot make the sample far too long or too short.
fn timed_for(
    comm: &dyn Communicator,
    bench: &mut dyn SizeBench,
    secs: f64,
    deadline: Instant,
) -> Result<Vec<f64>> {
    let budget_us = secs * 1e6;
    let mut samples: Vec<f64> = Vec::new();
    loop {
        let count = if comm.rank() == Rank(0) {
            let spent: f64 = samples.iter().sum();
            let have = samples.len() as u64;
            let count = if have == 0 {
                MIN_ITERS
            } else if (spent >= budget_us && have >= MIN_ITERS) || have >= MAX_ITERS {
                0
            } else {
                let mean = (spent / have as f64).max(0.01);
                // Ask for at most what fills the budget, at least enough to reach MIN_ITERS,
                // and at most double what was done so far so one round cannot run away.
                let left = ((budget_us - spent).max(0.0) / mean).ceil() as u64;
                left.max(MIN_ITERS.saturating_sub(have))
                    .clamp(1, have.max(1) * 2)
                    .min(MAX_ITERS - have)
            };
            ctl::bcast_u64(comm, count, deadline)?
        } else {
            let count = ctl::bcast_u64(comm, 0, deadline)?;
            if count > MAX_ITERS - samples.len() as u64 {
                return Err(Error::Peer {
                    rank: 0,
                    detail: format!("asked for {count} more calls"),
                });
            }
            count
        };
        if count == 0 {
            return Ok(samples);
        }
        samples.extend(timed(bench, count, deadline)?);
    }
}

/// `ok` when every rank's check passed, else the first failures with their ranks.
fn summarise(statuses: &[String]) -> String {
    let bad: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| s.as_str() != "ok" && s.as_str() != "off")
        .map(|(r, s)| format!("rank {r}: {}", s.trim_start_matches("FAIL: ")))
        .collect();
    if bad.is_empty() {
        statuses.first().cloned().unwrap_or_else(|| "off".into())
    } else {
        format!("FAIL: {}", bad.into_iter().take(3).collect::<Vec<_>>().join("; "))
    }
}

/// The bench of one size of operation `c`.
fn make<'g, 'c: 'g>(
    comm: &'c dyn Communicator,
    group: &'g Group<Shared<'c>>,
    args: &SweepArgs,
    c: Collective,
    bytes: u64,
) -> Result<Box<dyn SizeBench + 'g>> {
    match c {
        Collective::Sendrecv => {
            if comm.size() < 2 {
                return Err(Error::Invalid("--collective sendrecv needs at least 2 ranks".into()));
            }
            let esize = args.dtype.size();
            let elements = (bytes / esize).max(1);
            Ok(Box::new(SendRecv::new(comm, elements * esize, elements)))
        }
        _ => collectives::make(group, args, c, bytes),
    }
}

/// Every rank sends to rank+1 and receives from rank-1 at once.
struct SendRecv<'c> {
    comm: &'c dyn Communicator,
    to: Rank,
    from: Rank,
    out: Vec<u8>,
    inb: Vec<u8>,
    elements: u64,
}

impl<'c> SendRecv<'c> {
    fn new(comm: &'c dyn Communicator, bytes: u64, elements: u64) -> SendRecv<'c> {
        let (r, n) = (comm.rank().0, comm.size());
        // Sizes were bounded by the command line (16 GiB), so they fit a usize on 64-bit hosts.
        let len = usize::try_from(bytes).expect("message sizes are bounded by the command line");
        SendRecv {
            comm,
            to: Rank((r + 1) % n),
            from: Rank((r + n - 1) % n),
            out: vec![1u8; len],
            inb: vec![0u8; len],
            elements,
        }
    }
}

/// The byte rank `r` sends at offset `i` in a checked call.
fn pattern(r: u32, i: usize) -> u8 {
    (i as u32).wrapping_mul(31).wrapping_add(r.wrapping_mul(7)).wrapping_add(1) as u8
}

impl SizeBench for SendRecv<'_> {
    fn bytes(&self) -> u64 {
        self.out.len() as u64
    }

    fn elements(&self) -> u64 {
        self.elements
    }

    fn algorithm(&self) -> String {
        "direct".into()
    }

    fn run(&mut self, deadline: Instant) -> Result<()> {
        let mut ops =
            [Op::send(self.to, SENDRECV, &self.out), Op::recv(self.from, SENDRECV, &mut self.inb)];
        self.comm
            .run(&mut ops, deadline)
            .map_err(|e| Error::transport(format!("sendrecv of {} bytes", self.out.len()), e))?;
        match ops[1].completed() {
            Some((_, n)) if n == self.out.len() => Ok(()),
            got => Err(Error::Peer {
                rank: self.from.0,
                detail: format!(
                    "sent {got:?} where a {}-byte message was expected",
                    self.out.len()
                ),
            }),
        }
    }

    fn prepare_check(&mut self) {
        let r = self.comm.rank().0;
        for (i, b) in self.out.iter_mut().enumerate() {
            *b = pattern(r, i);
        }
        self.inb.fill(0xEE);
    }

    fn verify(&self) -> std::result::Result<(), String> {
        let from = self.from.0;
        match self.inb.iter().enumerate().find(|&(i, &b)| b != pattern(from, i)) {
            None => Ok(()),
            Some((i, &b)) => Err(format!(
                "byte {i} from rank {from} is {b:#04x}, expected {:#04x}",
                pattern(from, i)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_step_by_the_factor_and_include_the_maximum() {
        assert_eq!(sizes(4, 64, 2), vec![4, 8, 16, 32, 64]);
        assert_eq!(sizes(4, 100, 4), vec![4, 16, 64]);
        assert_eq!(sizes(8, 4, 2), Vec::<u64>::new());
        assert_eq!(sizes(0, 2, 2), vec![1, 2]);
        assert_eq!(sizes(4, 64 << 20, 2).len(), 25);
    }

    #[test]
    fn bus_factors_are_nccl_tests_ones() {
        assert_eq!(bus_factor(Collective::Allreduce, 2), Some(1.0));
        assert_eq!(bus_factor(Collective::Allreduce, 4), Some(1.5));
        assert_eq!(bus_factor(Collective::Allgather, 4), Some(0.75));
        assert_eq!(bus_factor(Collective::Broadcast, 8), Some(1.0));
        assert_eq!(bus_factor(Collective::Barrier, 8), None);
    }

    fn args(extra: &[&str]) -> SweepArgs {
        use clap::Parser;
        let mut v = vec!["gloo-bench"];
        v.extend_from_slice(extra);
        crate::cli::Cli::try_parse_from(v).unwrap().sweep
    }

    #[test]
    fn sendrecv_sweeps_and_checks_over_the_loopback_transport() {
        use gloo_transport::loopback::{LoopbackConfig, group};
        for n in [2, 3] {
            let a = args(&[
                "--collective",
                "sendrecv",
                "--min-bytes",
                "1",
                "--max-bytes",
                "64K",
                "--step-factor",
                "16",
                "--iters",
                "3",
                "--warmup",
                "1",
            ]);
            let comms = group(n, LoopbackConfig::havoc(7));
            let deadline = gloo_testing::deadline(60);
            let out =
                gloo_testing::run_ranks(comms, |c| run(&c, &a, &Limits::default(), true, deadline));
            let rows = out.into_iter().next().unwrap().unwrap();
            assert_eq!(
                rows.iter().map(|r| r.bytes).collect::<Vec<_>>(),
                vec![4, 16, 256, 4096, 65536]
            );
            for r in &rows {
                assert_eq!(r.check, "ok", "{r:?}");
                assert_eq!(r.iters, 3);
                assert!(r.min_us <= r.p50_us && r.p50_us <= r.p99_us);
                assert!(r.busbw_gbps.is_some());
            }
        }
    }

    #[test]
    fn every_collective_checks_out_over_the_loopback_transport() {
        use clap::ValueEnum;
        use gloo_transport::loopback::{LoopbackConfig, group};
        // Every collective the tool offers; sendrecv has a test of its own above.
        let all = Collective::value_variants().iter().filter(|c| **c != Collective::Sendrecv);
        for (k, c) in all.map(|c| c.name()).enumerate() {
            for n in [1u32, 2, 3, 5] {
                let root = (k as u32 % n).to_string();
                let a = args(&[
                    "--collective",
                    c,
                    "--root",
                    &root,
                    "--min-bytes",
                    "1",
                    "--max-bytes",
                    "4K",
                    "--step-factor",
                    "9",
                    "--iters",
                    "1",
                    "--warmup",
                    "0",
                ]);
                let comms = group(n, LoopbackConfig::havoc(k as u64));
                let deadline = gloo_testing::deadline(60);
                let out = gloo_testing::run_ranks(comms, |c| {
                    run(&c, &a, &Limits::default(), false, deadline)
                });
                let rows =
                    out.into_iter().next().unwrap().unwrap_or_else(|e| panic!("{c} n={n}: {e}"));
                assert!(!rows.is_empty(), "{c} n={n}");
                for r in &rows {
                    assert_eq!(r.check, "ok", "{c} n={n}: {r:?}");
                }
            }
        }
    }

    #[test]
    fn every_dtype_and_op_checks_out_in_allreduce_and_reduce_scatter() {
        use gloo_transport::loopback::{LoopbackConfig, group};
        let dtypes =
            ["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f16", "bf16", "f32", "f64"];
        let ops = ["sum", "product", "min", "max", "average"];
        for coll in ["allreduce", "reduce_scatter"] {
            for (k, d) in dtypes.iter().enumerate() {
                for o in ops {
                    let a = args(&[
                        "--collective",
                        coll,
                        "--dtype",
                        d,
                        "--op",
                        o,
                        "--min-bytes",
                        "64",
                        "--max-bytes",
                        "64K",
                        "--step-factor",
                        "1024",
                        "--iters",
                        "2",
                        "--warmup",
                        "0",
                    ]);
                    let deadline = gloo_testing::deadline(60);
                    let out =
                        gloo_testing::run_ranks(group(3, LoopbackConfig::havoc(k as u64)), |c| {
                            run(&c, &a, &Limits::default(), false, deadline)
                        });
                    let rows = out.into_iter().next().unwrap().unwrap();
                    assert_eq!(rows.len(), 2);
                    for r in &rows {
                        assert_eq!(r.check, "ok", "{coll} {d} {o}: {r:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn sizes_timed_by_budget_make_the_same_number_of_calls_on_every_rank() {
        use gloo_transport::loopback::{LoopbackConfig, group};
        let a = args(&["--max-bytes", "1K", "--step-factor", "16", "--time-per-size", "0.01"]);
        let deadline = gloo_testing::deadline(60);
        // A rank that made a different number of calls would leave the others waiting on a
        // collective, or make the sample gather fail on its length: both are errors here.
        let out = gloo_testing::run_ranks(group(3, LoopbackConfig::havoc(11)), |c| {
            run(&c, &a, &Limits::default(), false, deadline)
        });
        let rows = out.into_iter().next().unwrap().unwrap();
        assert_eq!(rows.len(), 3);
        for r in &rows {
            assert!((MIN_ITERS..=MAX_ITERS).contains(&r.iters), "{r:?}");
            assert_eq!(r.check, "ok");
        }
    }

    #[test]
    fn a_wrong_result_fails_the_check() {
        // Ranks that disagree on the op compute different things; the fingerprint or the
        // check must catch it, never report ok.
        use gloo_transport::loopback::{LoopbackConfig, group};
        let comms = group(2, LoopbackConfig::default());
        let deadline = gloo_testing::deadline(30);
        let out = gloo_testing::run_ranks(comms, |c| {
            let op = if c.rank() == Rank(0) { "sum" } else { "max" };
            let a = args(&[
                "--op",
                op,
                "--max-bytes",
                "64",
                "--min-bytes",
                "64",
                "--iters",
                "1",
                "--warmup",
                "0",
            ]);
            run(&c, &a, &Limits::default(), false, deadline)
        });
        let r0 = &out[0];
        assert!(
            r0.is_err() || r0.as_ref().unwrap().iter().any(|r| r.check.starts_with("FAIL")),
            "{r0:?}"
        );
    }

    #[test]
    fn a_failed_check_names_the_rank() {
        let s = summarise(&["ok".into(), "FAIL: byte 3".into()]);
        assert_eq!(s, "FAIL: rank 1: byte 3");
        assert_eq!(summarise(&["ok".into(), "ok".into()]), "ok");
    }
}
