//! `--overlap`: how much of an allreduce a compute loop hides when the allreduce runs in
//! the background (`Group::start_allreduce`) while the caller computes.
//!
//! Per size: the blocking allreduce's time (`comm`), a compute loop calibrated on rank 0 to
//! last about as long (`compute`, timed alone), the two one after the other (`serial`, the
//! blocking figure), and the loop beside a background allreduce started just before it and
//! waited for just after (`overlap`), the four interleaved round by round. Perfect overlap gives `overlap = max(compute, comm)`;
//! none gives `serial = compute + comm`. Each time is the slowest rank's, per iteration.

use std::hint::black_box;
use std::time::Instant;

use gloo_algorithms::{Group, Options, ReduceOp};
use gloo_transport::Communicator;

use crate::ctl;
use crate::error::{Error, Result};
use crate::report::OverlapRow;
use crate::stats::Latency;

/// Floats in the compute loop's working set: 16 KiB, so it runs from L1 and leaves memory
/// bandwidth to the allreduce, as a compute-bound kernel would.
const WORK_FLOATS: usize = 4096;

/// The fewest and most timed iterations per size.
const MIN_ITERS: u64 = 5;
const MAX_ITERS: u64 = 1000;

/// The caller's side of a step: `units` passes of a multiply-add over the working set, or
/// with `sleep`, a sleep of `units` µs (the CPU left free, as while a GPU kernel or I/O
/// runs), which shows the library's own overhead apart from the competition for cores.
fn compute(units: u64, work: &mut [f32], sleep: bool) {
    if sleep {
        std::thread::sleep(std::time::Duration::from_micros(units));
        return;
    }
    for _ in 0..units {
        for x in work.iter_mut() {
            *x = black_box(*x * 0.999_9 + 0.000_1);
        }
    }
    black_box(work);
}

type Comm = Box<dyn Communicator>;

fn collective(doing: &str, e: gloo_algorithms::Error) -> Error {
    Error::Collective { doing: doing.into(), source: e }
}

/// The p50 of the slowest rank per iteration; rank 0 only.
fn slowest_p50(comm: &dyn Communicator, samples: &[f64], deadline: Instant) -> Result<f64> {
    let Some(all) = ctl::gather_f64s(comm, samples, deadline)? else { return Ok(0.0) };
    let mut slowest: Vec<f64> =
        (0..samples.len()).map(|i| all.iter().map(|s| s[i]).fold(0.0, f64::max)).collect();
    Ok(Latency::from_samples(&mut slowest).p50)
}

/// Runs `--overlap` over `sizes` (bytes of f32) on every rank; rank 0 returns the rows.
pub(crate) fn run(
    comm: Comm,
    sizes: &[u64],
    iters: Option<u64>,
    secs_per_size: f64,
    check: bool,
    sleep: bool,
    deadline: Instant,
) -> Result<Vec<OverlapRow>> {
    let group = Group::new(comm).map_err(|e| collective("reading GLOO_ALGORITHM_*", e))?;
    let me = group.rank().0;
    let n = group.size();
    let opts = Options::new().with_deadline(deadline);
    let mut work = vec![1.0f32; WORK_FLOATS];
    let mut rows = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for &bytes in sizes {
        let len = (bytes / 4).max(1) as usize;
        if !seen.insert(len) {
            continue;
        }
        let c: &dyn Communicator = &**group.comm();
        // Zeros: the timed calls keep summing them without growing toward infinity.
        let mut buf = vec![0f32; len];
        // Warm up, and time one blocking allreduce to choose the number of rounds.
        for _ in 0..3 {
            group
                .allreduce(&mut buf, ReduceOp::Sum, &opts)
                .map_err(|e| collective("warming up", e))?;
        }
        let t0 = Instant::now();
        group.allreduce(&mut buf, ReduceOp::Sum, &opts).map_err(|e| collective("timing", e))?;
        let comm_guess = t0.elapsed().as_secs_f64();
        // A round is about 5 allreduce times (comm, compute, serial, overlap).
        let rounds = iters.unwrap_or_else(|| {
            ((secs_per_size / (5.0 * comm_guess).max(1e-9)) as u64).clamp(MIN_ITERS, MAX_ITERS)
        });
        let rounds = ctl::bcast_u64(c, rounds, deadline)?;
        // A calibration series of the blocking allreduce; rank 0 sizes the loop to the
        // slowest rank's median (timing the loop for at least 20 ms), and every rank runs
        // that many passes.
        let mut calib = Vec::new();
        for _ in 0..rounds.min(MIN_ITERS) {
            ctl::barrier(c, deadline)?;
            let t0 = Instant::now();
            group.allreduce(&mut buf, ReduceOp::Sum, &opts).map_err(|e| collective("timing", e))?;
            calib.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        let comm_est = slowest_p50(c, &calib, deadline)? * 1e-6;
        let (mut probe, mut spent) = (1u64, 0.0);
        while spent < 0.02 {
            probe *= 2;
            let t0 = Instant::now();
            compute(probe, &mut work, false);
            spent = t0.elapsed().as_secs_f64();
        }
        let unit = if sleep { 1e-6 } else { spent / probe as f64 };
        let units = ctl::bcast_u64(c, (comm_est / unit).round().max(1.0) as u64, deadline)?;
        // The four series interleaved, round after round, so that a change in the machine's
        // load (other processes) falls on all four alike; every timed step starts together
        // on every rank.
        let mut series: [Vec<f64>; 4] = Default::default();
        for _ in 0..rounds {
            for (which, samples) in series.iter_mut().enumerate() {
                ctl::barrier(c, deadline)?;
                let t0 = Instant::now();
                match which {
                    // The blocking allreduce alone.
                    0 => group
                        .allreduce(&mut buf, ReduceOp::Sum, &opts)
                        .map_err(|e| collective("allreduce", e))?,
                    // The loop alone.
                    1 => compute(units, &mut work, sleep),
                    // The loop, then the blocking allreduce.
                    2 => {
                        compute(units, &mut work, sleep);
                        group
                            .allreduce(&mut buf, ReduceOp::Sum, &opts)
                            .map_err(|e| collective("allreduce", e))?;
                    }
                    // The loop beside a background allreduce.
                    _ => {
                        let h = group
                            .start_allreduce(std::mem::take(&mut buf), ReduceOp::Sum, &opts)
                            .map_err(|e| collective("start_allreduce", e))?;
                        compute(units, &mut work, sleep);
                        buf = h.wait().map_err(|e| collective("waiting for start_allreduce", e))?;
                    }
                }
                samples.push(t0.elapsed().as_secs_f64() * 1e6);
            }
        }
        let [comm_s, compute_s, serial_s, overlap_s] = series;
        // The checked call: rank-specific values whose sum is exact in f32, through the
        // same background path, against the sum computed here.
        let status = if check {
            let value = |r: u32, i: usize| ((r as usize * 7 + i) % 64) as f32;
            let mine: Vec<f32> = (0..len).map(|i| value(me, i)).collect();
            let h = group
                .start_allreduce(mine, ReduceOp::Sum, &opts)
                .map_err(|e| collective("start_allreduce (check)", e))?;
            compute(units, &mut work, sleep);
            let got = h.wait().map_err(|e| collective("waiting for the checked call", e))?;
            let bad = (0..len).find(|&i| got[i] != (0..n).map(|r| value(r, i)).sum::<f32>());
            match bad {
                None => "ok".to_string(),
                Some(i) => format!("FAIL: element {i} is {}", got[i]),
            }
        } else {
            "off".to_string()
        };
        let comm_us = slowest_p50(c, &comm_s, deadline)?;
        let compute_us = slowest_p50(c, &compute_s, deadline)?;
        let serial_us = slowest_p50(c, &serial_s, deadline)?;
        let overlap_us = slowest_p50(c, &overlap_s, deadline)?;
        let statuses = ctl::gather_status(c, &status, deadline)?;
        let Some(statuses) = statuses else { continue };
        let check = match statuses.iter().enumerate().find(|(_, s)| s.as_str() != "ok") {
            None => "ok".to_string(),
            Some((r, s)) => format!("rank {r}: {s}"),
        };
        let longer = comm_us.max(compute_us);
        let shorter = comm_us.min(compute_us);
        let row = OverlapRow {
            bytes: len as u64 * 4,
            iters: rounds,
            units,
            comm_us,
            compute_us,
            serial_us,
            overlap_us,
            serial_ratio: serial_us / longer,
            overlap_ratio: overlap_us / longer,
            hidden_pct: (100.0 * (compute_us + comm_us - overlap_us) / shorter)
                .clamp(-999.0, 100.0),
            check,
        };
        say!(
            "gloo-bench: overlap {} B: comm {:.1} us, compute {:.1} us, serial {:.1} us, overlap {:.1} us (x{:.2} of the longer), check {}",
            row.bytes,
            row.comm_us,
            row.compute_us,
            row.serial_us,
            row.overlap_us,
            row.overlap_ratio,
            row.check
        );
        rows.push(row);
    }
    Ok(rows)
}
