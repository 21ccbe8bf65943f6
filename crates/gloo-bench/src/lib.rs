//! gloo-bench: the Rust Gloo's benchmark tool, and the yardstick for every speed claim the
//! project makes.
//!
//! What it does: run with no arguments, it starts 2 ranks as processes on this machine over
//! an embedded store, measures the machine's limits between them (plain-socket ping-pong and
//! streams, memcpy), then sweeps one operation over a range of message sizes and prints, per
//! size, min / p50 / p99 time, algbw and busbw (nccl-tests definitions) and busbw as a
//! percentage of the measured limit, with every result checked. `--rank/--size/--store` run
//! one rank of a multi-machine job instead; `transport` runs the point-to-point transport
//! benchmark; `limits` only measures the limits.
//!
//! What it does not do: assert anything about speed (it reports; people and CI decide), or
//! pick algorithms (the library does; `--algorithm` overrides it).
//!
//! The tool lives in this library target, with `src/main.rs` calling [`run`], so that the
//! tests of the built binary (`tests/cli.rs`) take their expectations from the tool's own
//! definitions (such as [`Collective`]) instead of restating them. It is not an API for
//! other crates: only what those tests need is public.
#![forbid(unsafe_code)]

/// `eprintln!` that hands the whole line to the kernel in one write, so the lines of several
/// ranks sharing the launcher's stderr never interleave mid-line.
macro_rules! say {
    ($($arg:tt)*) => {{
        // One formatted argument and no literal pieces: std writes it with one write_all,
        // and tests still capture it (a raw handle to stderr would bypass the capture).
        let line = format!("{}\n", format_args!($($arg)*));
        eprint!("{line}");
    }};
}

mod cli;
mod collectives;
mod ctl;
mod error;
mod launch;
mod limits;
mod net;
mod overlap;
mod p2p;
mod rank;
mod report;
mod shm_limits;
mod stats;
mod store;
mod sweep;
mod tls;
mod versus;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, error::ErrorKind};

pub use crate::cli::Collective;
use crate::cli::{Bind, Cli, Command, StoreUrl, TransportKind, Which};
use crate::report::Report;

/// Runs gloo-bench with this process's command line (what `main` does).
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // The library's tracing (a `collective` span per call, naming the rank; connection and
    // failure events) goes to stderr when `RUST_LOG` asks for it, e.g.
    // `RUST_LOG=gloo_algorithms=debug,gloo_transport=info`; without `RUST_LOG` nothing is
    // installed and the output is the table alone. Ranks started by the launcher inherit it.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    if let Err((kind, msg)) = validate(&cli) {
        // clap's usage errors exit with status 2, like the ones it finds itself.
        Cli::command().error(kind, msg).exit();
    }
    let rank_mode = cli.launch.rank.is_some() || cli.launch.store == Some(StoreUrl::Env);
    if cli.launch.transport == TransportKind::Loopback {
        run_threads(&cli)
    } else if rank_mode {
        run_rank(&cli)
    } else {
        run_launcher(&cli)
    }
}

fn run_threads(cli: &Cli) -> ExitCode {
    let report = match rank::run_in_process(cli) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if let Err(e) = report.emit(cli.output.format, cli.output.json.as_deref()) {
        return fail(e);
    }
    if checks_pass(&report) {
        ExitCode::SUCCESS
    } else {
        fail("result checks failed (see the check column)")
    }
}

/// Checks that clap cannot express (they need several flags at once).
fn validate(cli: &Cli) -> Result<(), (ErrorKind, String)> {
    if cli.launch.transport == TransportKind::Loopback
        && (cli.launch.rank.is_some() || cli.launch.store.is_some())
    {
        return Err((
            ErrorKind::ArgumentConflict,
            "--transport loopback runs every rank as a thread of this process: it takes \
             --ranks, not --rank/--size/--store"
                .into(),
        ));
    }
    let size = match (cli.launch.rank, cli.launch.size) {
        (Some(r), Some(n)) => {
            if r >= n {
                return Err((
                    ErrorKind::InvalidValue,
                    format!("--rank {r} must be below --size {n}"),
                ));
            }
            n
        }
        // Under env:// the size comes from the environment: rank::run checks it there.
        _ if cli.launch.store == Some(StoreUrl::Env) => u32::MAX,
        _ => cli.launch.ranks,
    };
    let s = &cli.sweep;
    match &cli.command {
        None => {
            if s.min_bytes > s.max_bytes {
                return Err((
                    ErrorKind::InvalidValue,
                    format!(
                        "--min-bytes ({}) is larger than --max-bytes ({})",
                        s.min_bytes, s.max_bytes
                    ),
                ));
            }
            if s.overlap
                && (s.collective != Which::One(Collective::Allreduce)
                    || s.algorithm != "auto"
                    || s.dtype != cli::Dtype::F32
                    || s.op != cli::ReduceOp::Sum)
            {
                return Err((
                    ErrorKind::ArgumentConflict,
                    "--overlap measures an f32 sum allreduce with the library's own algorithm: \
                     it takes no --collective, --algorithm, --dtype or --op"
                        .into(),
                ));
            }
            if s.collective.rooted() && s.root >= size {
                return Err((
                    ErrorKind::InvalidValue,
                    format!(
                        "--root {} is not a rank of a {size}-rank run (valid: 0..={})",
                        s.root,
                        size - 1
                    ),
                ));
            }
            match s.collective {
                Which::One(Collective::Sendrecv) if size < 2 => {
                    return Err((
                        ErrorKind::InvalidValue,
                        "--collective sendrecv needs --ranks 2 or more".into(),
                    ));
                }
                Which::One(c) => {
                    let valid = collectives::algorithm_choices(c);
                    if !valid.contains(&s.algorithm.as_str()) {
                        return Err((
                            ErrorKind::InvalidValue,
                            format!(
                                "invalid value '{}' for '--algorithm' with --collective {} [possible values: {}]",
                                s.algorithm,
                                c.name(),
                                valid.join(", ")
                            ),
                        ));
                    }
                }
                Which::All if s.algorithm != "auto" => {
                    return Err((
                        ErrorKind::ArgumentConflict,
                        "--collective all runs each operation with the library's own choice: \
                         --algorithm must be auto"
                            .into(),
                    ));
                }
                Which::All => {}
            }
        }
        Some(Command::Transport(t)) => {
            if size < 2 {
                return Err((
                    ErrorKind::InvalidValue,
                    "the transport benchmark needs --ranks 2 or more".into(),
                ));
            }
            if t.stream_bytes == 0 {
                return Err((ErrorKind::InvalidValue, "--stream-bytes must be above 0".into()));
            }
        }
        Some(Command::Limits) => {}
    }
    Ok(())
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    say!("gloo-bench: error: {msg}");
    ExitCode::FAILURE
}

/// Whether every checked row passed.
fn checks_pass(r: &Report) -> bool {
    r.rows.iter().all(|row| !row.check.starts_with("FAIL"))
        && r.overlap.iter().all(|row| row.check == "ok" || row.check == "off")
}

/// The exit code of a rank whose launcher went away.
const ORPHAN_EXIT: u8 = 3;

/// In a rank the local launcher started: end this process when the launcher is gone (its
/// end of our stdin pipe closes), so a launcher killed with `SIGKILL` leaves no rank running
/// until its own `--timeout`. (A death signal, `prctl(PR_SET_PDEATHSIG)`, would need unsafe
/// code; the pipe gives the same guarantee.)
fn exit_with_launcher(rank: u32) {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        // The launcher never writes: anything read is ignored until end-of-file or an error.
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        // Not `say!`: stderr may be a pipe to a reader that died with the launcher, and a
        // failed write must not panic this thread instead of ending the process.
        let _ =
            writeln!(std::io::stderr(), "gloo-bench: rank {rank}: the launcher is gone; exiting");
        std::process::exit(ORPHAN_EXIT.into());
    });
}

/// With `--bind core`, the CPU a rank started by torchrun, mpirun or srun binds itself to, as
/// the local launcher binds the ranks it starts: a core of its own when the ranks of this host
/// (all of them on a one-host job, else `LOCAL_WORLD_SIZE` or `OMPI_COMM_WORLD_LOCAL_SIZE`)
/// fit on the CPUs it may use. A launcher that bound the rank already (mpirun binds to a core
/// by default) left it one CPU, so that binding stands; an unknown local rank or size binds
/// nothing. Measured under torchrun with 2 ranks: 4 B allreduce p50 3.5 and 2.2 us unbound,
/// against 1.6 and 1.5 us for the same ranks bound by the local launcher.
fn launcher_cpu(env: &gloo_rendezvous::EnvConfig) -> Option<usize> {
    let local_rank = env.local_rank? as usize;
    let local_size = if env.single_host {
        env.size as usize
    } else {
        ["LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok())?
    };
    let cores = gloo_shm::placement::cores_for(local_size).ok()??;
    pick_cpu(local_rank, local_size, &cores)
}

/// The CPU of local rank `local_rank` of `local_size` among `cores` (one per local rank, from
/// `cores_for`): none when the numbers do not fit together.
fn pick_cpu(local_rank: usize, local_size: usize, cores: &[usize]) -> Option<usize> {
    (local_size >= 2 && local_rank < local_size && cores.len() == local_size)
        .then(|| cores[local_rank])
}

fn run_rank(cli: &Cli) -> ExitCode {
    let url = cli.launch.store.clone().unwrap_or(StoreUrl::Env);
    // The CPU a launcher-started rank binds itself to (see `launcher_cpu`).
    let mut env_cpu = None;
    let (rank, size) = if url == StoreUrl::Env {
        let env = match store::env_config() {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        if cli.launch.bind == Bind::Core {
            env_cpu = launcher_cpu(&env);
        }
        let given = (cli.launch.rank.unwrap_or(env.rank), cli.launch.size.unwrap_or(env.size));
        if given != (env.rank, env.size) {
            return fail(format_args!(
                "--rank/--size say rank {} of {} but the environment says rank {} of {}",
                given.0, given.1, env.rank, env.size
            ));
        }
        (env.rank, env.size)
    } else {
        // clap made --rank require --size and --store.
        match (cli.launch.rank, cli.launch.size) {
            (Some(r), Some(n)) => (r, n),
            _ => return fail("--rank needs --size and --store"),
        }
    };
    // Before any thread starts, so every thread of the rank inherits the binding.
    if let Some(cpu) = cli.launch.cpu.or(env_cpu)
        && let Err(e) = gloo_shm::placement::bind_to_cpu(cpu)
    {
        return fail(format_args!("rank {rank}: binding to cpu {cpu}: {e}"));
    }
    if cli.launch.exit_with_launcher {
        exit_with_launcher(rank);
    }
    let url = &url;
    let outcome = match rank::run(cli, rank, size, url) {
        Ok(o) => o,
        Err(e) => return fail(format_args!("rank {rank}: {e}")),
    };
    let Some(report) = outcome.report else { return ExitCode::SUCCESS };
    let written = match &cli.launch.child_report {
        Some(path) => serde_json::to_vec(&report)
            .map_err(|e| error::Error::Invalid(format!("encoding the report: {e}")))
            .and_then(|b| {
                std::fs::write(path, b)
                    .map_err(|e| error::Error::io(format!("writing {}", path.display()), e))
            }),
        None => report.emit(cli.output.format, cli.output.json.as_deref()),
    };
    if let Err(e) = written {
        return fail(e);
    }
    if checks_pass(&report) {
        ExitCode::SUCCESS
    } else {
        fail("result checks failed (see the check column)")
    }
}

fn run_launcher(cli: &Cli) -> ExitCode {
    let launched = match launch::run(cli) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut ok = launched.failures.is_empty();
    if let Some(report) = &launched.report {
        if let Err(e) = report.emit(cli.output.format, cli.output.json.as_deref()) {
            return fail(e);
        }
        if !checks_pass(report) {
            say!("gloo-bench: error: result checks failed (see the check column)");
            ok = false;
        }
    } else if ok {
        return fail("rank 0 finished without writing its report");
    }
    if !launched.failures.is_empty() {
        say!("gloo-bench: error: {}", launched.failures.join("; "));
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[cfg(test)]
mod tests {
    use super::pick_cpu;

    #[test]
    fn a_launcher_started_rank_takes_its_local_ranks_core_when_the_ranks_fit() {
        assert_eq!(pick_cpu(0, 2, &[4, 6]), Some(4));
        assert_eq!(pick_cpu(1, 2, &[4, 6]), Some(6));
        // One rank on the host: nothing to keep apart.
        assert_eq!(pick_cpu(0, 1, &[4]), None);
        // A local rank outside the local size, or cores that do not match it: no binding.
        assert_eq!(pick_cpu(2, 2, &[4, 6]), None);
        assert_eq!(pick_cpu(0, 3, &[4, 6]), None);
    }
}
