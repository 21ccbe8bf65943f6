//! `cargo xtask peers`: this machine's limits, Open MPI and C++ Gloo, measured by the small C and
//! C++ programs of `peers/`, so that anyone can rerun the comparison the README quotes.
//!
//! The programs are built against Debian's packages (`gcc`, `g++`, `libopenmpi-dev` and
//! `openmpi-bin`, `libgloo-dev`) into `<target>/peers/`, rebuilt only when their source is newer
//! than the binary, and run on 127.0.0.1 only, each under a time limit that kills it and every
//! process it started. Their output is printed unchanged, under a `## ...` heading per run; the
//! command fails (exit status 1) when a program fails or when its output lacks a result line it
//! owes (one row per count for the collectives), so a test-matrix row that only looks at the
//! exit status still checks the results.
//!
//! Nothing is installed unless `--install` is given: a missing tool is an error naming the Debian
//! package to install.

use crate::matrix::Context;
use crate::run::kill_tree;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The `peers` part of `cargo xtask help`.
pub const USAGE: &str =
    "  peers <limits|mpi|gloo|all> [--ranks N] [--counts a,b,c] [--collective C] [--algorithm A]
        [--seconds S] [--timeout S] [--install]
      Build the reference programs of peers/ against Debian's Open MPI and C++ Gloo into
      <target>/peers/ and run them on 127.0.0.1, for the comparison the README quotes:
        limits  memcpy and f32 add GB/s, TCP ping-pong RTT, TCP stream and full-duplex GB/s
        mpi     an Open MPI collective over shared memory and over TCP loopback (mpirun)
        gloo    a C++ Gloo collective over TCP loopback (one process per rank)
        all     the three, in that order
      --ranks N         ranks for mpi and gloo (default 2)
      --counts a,b,c    float32 element counts of the larger buffer, as gloo-bench's bytes/4
                        (default 1,1000,1000000,16777216)
      --collective C    allreduce (default), broadcast, reduce, allgather, reduce_scatter,
                        alltoall, gather, scatter, barrier
      --algorithm A     gloo allreduce only: new (gloo::allreduce, default), ring_chunked,
                        halving_doubling
      --seconds S       measuring time per count (mpi, gloo; default 1) and per limit
                        (default 1 s memory, 2 s ping-pong, 3 s full duplex)
      --timeout S       each program is killed after S seconds (default 600)
      --install         apt-get install the Debian packages that are missing first
";

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Memory bandwidth and plain TCP loopback.
    Limits,
    /// An Open MPI collective, over shared memory and over TCP loopback.
    Mpi,
    /// A C++ Gloo collective over TCP loopback.
    Gloo,
    /// Limits, then Open MPI, then C++ Gloo.
    All,
}

impl Suite {
    fn parse(s: &str) -> Option<Suite> {
        Some(match s {
            "limits" => Suite::Limits,
            "mpi" => Suite::Mpi,
            "gloo" => Suite::Gloo,
            "all" => Suite::All,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Suite::Limits => "limits",
            Suite::Mpi => "mpi",
            Suite::Gloo => "gloo",
            Suite::All => "all",
        }
    }

    /// The single suites this one runs, in order.
    fn parts(self) -> &'static [Suite] {
        match self {
            Suite::Limits => &[Suite::Limits],
            Suite::Mpi => &[Suite::Mpi],
            Suite::Gloo => &[Suite::Gloo],
            Suite::All => &[Suite::Limits, Suite::Mpi, Suite::Gloo],
        }
    }
}

/// A collective, by the library's own name (`reduce_scatter`, not MPI's `Reduce_scatter_block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collective {
    /// Sum allreduce.
    Allreduce,
    /// Broadcast from rank 0.
    Broadcast,
    /// Sum reduce to rank 0.
    Reduce,
    /// Allgather.
    Allgather,
    /// Sum reduce-scatter, one equal block per rank.
    ReduceScatter,
    /// Alltoall.
    Alltoall,
    /// Gather to rank 0.
    Gather,
    /// Scatter from rank 0.
    Scatter,
    /// Barrier (the counts are ignored: one row, of size 0).
    Barrier,
}

impl Collective {
    const ALL: [Collective; 9] = [
        Collective::Allreduce,
        Collective::Broadcast,
        Collective::Reduce,
        Collective::Allgather,
        Collective::ReduceScatter,
        Collective::Alltoall,
        Collective::Gather,
        Collective::Scatter,
        Collective::Barrier,
    ];

    /// The name on our command line and gloo_bench's `--coll`.
    pub fn name(self) -> &'static str {
        match self {
            Collective::Allreduce => "allreduce",
            Collective::Broadcast => "broadcast",
            Collective::Reduce => "reduce",
            Collective::Allgather => "allgather",
            Collective::ReduceScatter => "reduce_scatter",
            Collective::Alltoall => "alltoall",
            Collective::Gather => "gather",
            Collective::Scatter => "scatter",
            Collective::Barrier => "barrier",
        }
    }

    /// mpi_coll_bench's `-c` name (MPI calls broadcast `bcast`).
    pub fn mpi_name(self) -> &'static str {
        match self {
            Collective::Broadcast => "bcast",
            other => other.name(),
        }
    }

    /// Our name, MPI's `bcast`, or either with `-` for `_` (`reduce-scatter`).
    fn parse(s: &str) -> Option<Collective> {
        let s = s.replace('-', "_");
        Collective::ALL.into_iter().find(|c| c.name() == s || c.mpi_name() == s)
    }
}

/// Which of C++ Gloo's allreduce implementations gloo_bench times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `gloo::allreduce(AllreduceOptions)`, out of place (its default ring).
    New,
    /// `gloo::AllreduceRingChunked<float>`, in place.
    RingChunked,
    /// `gloo::AllreduceHalvingDoubling<float>`, in place.
    HalvingDoubling,
}

impl Algorithm {
    /// gloo_bench's `--algo` name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::New => "new",
            Algorithm::RingChunked => "ring_chunked",
            Algorithm::HalvingDoubling => "halving_doubling",
        }
    }

    fn parse(s: &str) -> Option<Algorithm> {
        [Algorithm::New, Algorithm::RingChunked, Algorithm::HalvingDoubling]
            .into_iter()
            .find(|a| a.name() == s.replace('-', "_"))
    }
}

/// What `cargo xtask peers` was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What to measure.
    pub suite: Suite,
    /// Ranks for mpi and gloo.
    pub ranks: u32,
    /// Float32 element counts of the larger buffer.
    pub counts: Vec<u64>,
    /// The collective for mpi and gloo.
    pub collective: Collective,
    /// Gloo's allreduce implementation.
    pub algorithm: Algorithm,
    /// Measuring time per count or per limit; `None` keeps each program's default.
    pub seconds: Option<f64>,
    /// Each program is killed after this long.
    pub timeout: Duration,
    /// Install missing Debian packages with apt-get first.
    pub install: bool,
}

/// The counts when none are given: 4 B, 4 KB, 4 MB, 64 MiB of float32.
pub const DEFAULT_COUNTS: [u64; 4] = [1, 1000, 1_000_000, 16_777_216];
/// More ranks than this is surely a typo (each is a process on this machine).
pub const MAX_RANKS: u32 = 64;
/// mpi_coll_bench reads at most this many counts.
pub const MAX_COUNTS: usize = 64;
/// The time limit of each program when none is given (as long as a 64 MiB sweep may take on a
/// busy 2-core machine, with room to spare).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What `parse` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// `-h` / `--help`.
    Help,
    /// Run this.
    Run(Request),
}

/// Parse `peers`' arguments (`--flag value` or `--flag=value`).
pub fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut suite = None;
    let mut ranks = 2;
    let mut counts = DEFAULT_COUNTS.to_vec();
    let mut collective = Collective::Allreduce;
    let mut algorithm = None;
    let mut seconds = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut install = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            inline.clone().or_else(|| args.next().cloned()).ok_or(format!("{flag} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--install" if inline.is_none() => install = true,
            "--ranks" => {
                let v = value()?;
                ranks =
                    v.parse().ok().filter(|n| (1..=MAX_RANKS).contains(n)).ok_or(format!(
                        "--ranks {v:?}: want a number of ranks in 1..={MAX_RANKS}"
                    ))?;
            }
            "--counts" => counts = parse_counts(&value()?)?,
            "--collective" => {
                let v = value()?;
                collective = Collective::parse(&v).ok_or(format!(
                    "--collective {v:?}: want one of {}",
                    Collective::ALL.map(Collective::name).join(", ")
                ))?;
            }
            "--algorithm" => {
                let v = value()?;
                algorithm = Some(Algorithm::parse(&v).ok_or(format!(
                    "--algorithm {v:?}: want new, ring_chunked or halving_doubling"
                ))?);
            }
            "--seconds" => {
                let v = value()?;
                seconds =
                    Some(v.parse::<f64>().ok().filter(|s| *s > 0.0 && *s <= 3600.0).ok_or(
                        format!("--seconds {v:?}: want a number of seconds in (0, 3600]"),
                    )?);
            }
            "--timeout" => {
                let v = value()?;
                let secs = v
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=86_400).contains(s))
                    .ok_or(format!("--timeout {v:?}: want whole seconds in 1..=86400"))?;
                timeout = Duration::from_secs(secs);
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other:?}")),
            other => match (suite, Suite::parse(other)) {
                (None, Some(s)) => suite = Some(s),
                (None, None) => {
                    return Err(format!("unknown suite {other:?}: want limits, mpi, gloo or all"));
                }
                (Some(_), _) => return Err(format!("unexpected argument {other:?}")),
            },
        }
    }
    let suite = suite.ok_or("name what to run: limits, mpi, gloo or all")?;
    if let Some(a) = algorithm {
        if suite == Suite::Mpi || suite == Suite::Limits {
            return Err(format!("--algorithm is for gloo (and all), not {}", suite.name()));
        }
        if a != Algorithm::New && collective != Collective::Allreduce {
            return Err(format!(
                "--algorithm {} is an allreduce; --collective {} takes only new",
                a.name(),
                collective.name()
            ));
        }
    }
    let max = (i32::MAX as u64) - u64::from(ranks);
    if let Some(n) = counts.iter().find(|&&n| n > max) {
        return Err(format!("--counts: {n} is more than {max} (2^31-1 minus the ranks)"));
    }
    Ok(Parsed::Run(Request {
        suite,
        ranks,
        counts,
        collective,
        algorithm: algorithm.unwrap_or(Algorithm::New),
        seconds,
        timeout,
        install,
    }))
}

fn parse_counts(v: &str) -> Result<Vec<u64>, String> {
    let counts = v
        .split(',')
        .map(|c| c.trim().parse::<u64>().ok().filter(|&n| n >= 1))
        .collect::<Option<Vec<u64>>>()
        .ok_or(format!("--counts {v:?}: want element counts >= 1, comma-separated"))?;
    if counts.len() > MAX_COUNTS {
        return Err(format!("--counts: {} counts, at most {MAX_COUNTS}", counts.len()));
    }
    Ok(counts)
}

/// Something a suite needs installed, and the Debian package that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// What it is, for the error message.
    pub what: &'static str,
    /// How to tell it is there.
    pub probe: Probe,
    /// The Debian package to install.
    pub package: &'static str,
}

/// How a [`Tool`] is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A command on `PATH`.
    Command(&'static str),
    /// A header under one of the compiler's include directories.
    Header(&'static str),
}

const GCC: Tool = Tool { what: "gcc", probe: Probe::Command("gcc"), package: "gcc" };
const GXX: Tool = Tool { what: "g++", probe: Probe::Command("g++"), package: "g++" };
const MPICC: Tool = Tool {
    what: "mpicc, Open MPI's compiler wrapper",
    probe: Probe::Command("mpicc"),
    package: "libopenmpi-dev",
};
const MPIRUN: Tool = Tool {
    what: "mpirun, Open MPI's launcher",
    probe: Probe::Command("mpirun"),
    package: "openmpi-bin",
};
const GLOO_HEADERS: Tool = Tool {
    what: "C++ Gloo's headers, gloo/allreduce.h",
    probe: Probe::Header("gloo/allreduce.h"),
    package: "libgloo-dev",
};

/// What `suite` needs, each once.
pub fn tools(suite: Suite) -> Vec<Tool> {
    let mut out: Vec<Tool> = Vec::new();
    for part in suite.parts() {
        let needs: &[Tool] = match part {
            Suite::Limits => &[GCC],
            // mpicc runs gcc underneath.
            Suite::Mpi => &[GCC, MPICC, MPIRUN],
            Suite::Gloo => &[GXX, GLOO_HEADERS],
            Suite::All => &[],
        };
        for tool in needs {
            if !out.contains(tool) {
                out.push(*tool);
            }
        }
    }
    out
}

/// The tools of `wanted` that `present` says are not installed.
pub fn missing(wanted: &[Tool], present: impl Fn(&Probe) -> bool) -> Vec<Tool> {
    wanted.iter().filter(|t| !present(&t.probe)).copied().collect()
}

/// The Debian packages holding `tools`, each once, in order.
pub fn packages(tools: &[Tool]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for tool in tools {
        if !out.contains(&tool.package) {
            out.push(tool.package);
        }
    }
    out
}

/// The error for `suite` when `gone` are missing: each tool with its package, and the commands
/// that install them.
pub fn missing_message(suite: Suite, gone: &[Tool]) -> String {
    let mut msg =
        format!("error: `cargo xtask peers {}` needs what is not installed:\n", suite.name());
    for tool in gone {
        let _ = writeln!(msg, "  {} (Debian package {})", tool.what, tool.package);
    }
    let _ = write!(
        msg,
        "install with:  apt-get update && apt-get install -y {}\n\
         or run:        cargo xtask peers {} --install\n",
        packages(gone).join(" "),
        suite.name()
    );
    msg
}

/// Whether `probe` finds its tool on this machine.
fn present(probe: &Probe) -> bool {
    match probe {
        Probe::Command(name) => on_path(name),
        Probe::Header(rel) => include_dirs().iter().any(|d| d.join(rel).is_file()),
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// Where gcc looks for headers: the caller's `CPLUS_INCLUDE_PATH` and `CPATH`, then the system's.
fn include_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["CPLUS_INCLUDE_PATH", "CPATH"] {
        if let Some(v) = std::env::var_os(var) {
            dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
        }
    }
    dirs.extend(["/usr/local/include", "/usr/include"].map(PathBuf::from));
    dirs
}

/// The apt-get commands that install `packages` (`sudo` first unless we are root).
pub fn install_commands(packages: &[&str], root: bool) -> Vec<Vec<String>> {
    let sudo: &[&str] = if root { &[] } else { &["sudo"] };
    let update = [sudo, &["apt-get", "update"]].concat();
    let install =
        [sudo, &["apt-get", "install", "-y", "--no-install-recommends"], packages].concat();
    [update, install].map(|c| c.iter().map(|s| s.to_string()).collect()).to_vec()
}

fn is_root() -> bool {
    // The real uid is the first number after `Uid:` in /proc/self/status.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().next())
            == Some("0")
    })
}

/// One of the programs of `peers/` and how it is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// The binary's name in `<target>/peers/`.
    pub name: &'static str,
    /// Its source, in `peers/`.
    pub source: &'static str,
    /// The compiler.
    pub compiler: &'static str,
    /// Flags before `-o`.
    pub flags: &'static [&'static str],
    /// Flags after the source (libraries).
    pub libs: &'static [&'static str],
}

/// Memory bandwidth: memcpy and an f32 add loop (`-O3` like Gloo's release build).
pub const MEMBW: Program =
    Program { name: "membw", source: "membw.c", compiler: "gcc", flags: &["-O3"], libs: &[] };
/// 1-byte TCP ping-pong and a one-way stream.
pub const TCP_PINGPONG: Program = Program {
    name: "tcp_pingpong",
    source: "tcp_pingpong.c",
    compiler: "gcc",
    flags: &["-O2"],
    libs: &[],
};
/// Full-duplex TCP stream on one connection.
pub const TCP_BIDIR: Program = Program {
    name: "tcp_bidir",
    source: "tcp_bidir.c",
    compiler: "gcc",
    flags: &["-O2", "-pthread"],
    libs: &[],
};
/// An MPI collective, timed per call.
pub const MPI_COLL_BENCH: Program = Program {
    name: "mpi_coll_bench",
    source: "mpi_coll_bench.c",
    compiler: "mpicc",
    flags: &["-O2"],
    libs: &[],
};
/// A C++ Gloo collective, timed per call like mpi_coll_bench.
pub const GLOO_BENCH: Program = Program {
    name: "gloo_bench",
    source: "gloo_bench.cc",
    compiler: "g++",
    flags: &["-O2", "-std=c++17"],
    libs: &["-lgloo", "-pthread"],
};

impl Program {
    /// The compiler command that builds `src_dir/<source>` into `out`.
    pub fn build_command(&self, src_dir: &Path, out: &Path) -> Vec<String> {
        let mut cmd = vec![self.compiler.to_string()];
        cmd.extend(self.flags.iter().map(|s| s.to_string()));
        cmd.push("-o".to_string());
        cmd.push(out.to_string_lossy().into_owned());
        cmd.push(src_dir.join(self.source).to_string_lossy().into_owned());
        cmd.extend(self.libs.iter().map(|s| s.to_string()));
        cmd
    }
}

/// The programs `suite` runs.
pub fn programs(suite: Suite) -> Vec<Program> {
    suite
        .parts()
        .iter()
        .flat_map(|part| match part {
            Suite::Limits => vec![MEMBW, TCP_PINGPONG, TCP_BIDIR],
            Suite::Mpi => vec![MPI_COLL_BENCH],
            Suite::Gloo => vec![GLOO_BENCH],
            Suite::All => vec![],
        })
        .collect()
}

/// Whether a binary last modified at `binary` (`None`: there is none) must be rebuilt from a
/// source last modified at `source`.
pub fn stale(source: std::time::SystemTime, binary: Option<std::time::SystemTime>) -> bool {
    binary.is_none_or(|b| source > b)
}

/// What a run's output must hold for the run to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A table row (nine numbers) for each of these element counts, in this order.
    Rows(Vec<u64>),
    /// Lines starting with each prefix, at least this many of each.
    Lines(&'static [(&'static str, usize)]),
}

/// One program run: a heading, the command, what its output must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The `## ...` heading printed before it.
    pub heading: String,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// What the output must hold.
    pub expect: Expect,
}

fn seconds_arg(seconds: f64) -> String {
    // `{}` prints 1.0 as "1" and 0.1 as "0.1": what atof reads back exactly.
    format!("{seconds}")
}

/// The limits runs, with binaries in `bin`. Port 0: each program takes a free port of the
/// kernel's choosing, so two runs at once do not collide.
pub fn limits_runs(seconds: Option<f64>, bin: &Path) -> Vec<Run> {
    let path = |p: &Program| bin.join(p.name).to_string_lossy().into_owned();
    let secs = |default: f64| seconds_arg(seconds.unwrap_or(default));
    vec![
        Run {
            heading: "## memory (one thread)".to_string(),
            argv: vec![path(&MEMBW), secs(1.0)],
            expect: Expect::Lines(&[("memcpy ", 3), ("add ", 3)]),
        },
        Run {
            heading: "## TCP loopback ping-pong (blocking reads) and one-way stream".to_string(),
            argv: vec![path(&TCP_PINGPONG), "0".to_string(), secs(2.0)],
            expect: Expect::Lines(&[("pingpong 1-byte RTT:", 1), ("bulk ", 1)]),
        },
        Run {
            heading: "## TCP loopback ping-pong (busy-polling reads)".to_string(),
            argv: vec![path(&TCP_PINGPONG), "0".to_string(), secs(2.0), "spin".to_string()],
            expect: Expect::Lines(&[("pingpong(spin) 1-byte RTT:", 1), ("bulk ", 1)]),
        },
        Run {
            heading: "## TCP loopback full duplex, one connection".to_string(),
            argv: vec![path(&TCP_BIDIR), "0".to_string(), secs(3.0)],
            expect: Expect::Lines(&[("client received ", 1), ("server received ", 1)]),
        },
    ]
}

/// The rows a collective's table must have: one per count, or one of size 0 for a barrier.
pub fn expected_rows(req: &Request) -> Vec<u64> {
    if req.collective == Collective::Barrier { vec![0] } else { req.counts.clone() }
}

fn counts_arg(counts: &[u64]) -> String {
    counts.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// The two Open MPI runs: shared memory (Open MPI's own choice on one host) and TCP loopback
/// (`ob1` with only the `tcp` and `self` transports). Every TCP socket Open MPI opens, its
/// runtime's included, is kept on `lo`.
pub fn mpi_runs(req: &Request, bin: &Path) -> Vec<Run> {
    let coll = req.collective;
    let base: Vec<String> = [
        "mpirun",
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &req.ranks.to_string(),
        "--mca",
        "btl_tcp_if_include",
        "lo",
        "--mca",
        "oob_tcp_if_include",
        "lo",
    ]
    .map(str::to_string)
    .to_vec();
    let program: Vec<String> = vec![
        bin.join(MPI_COLL_BENCH.name).to_string_lossy().into_owned(),
        "-c".to_string(),
        coll.mpi_name().to_string(),
        "-t".to_string(),
        seconds_arg(req.seconds.unwrap_or(1.0)),
        "-l".to_string(),
        counts_arg(&req.counts),
    ];
    let tcp: Vec<String> =
        ["--mca", "pml", "ob1", "--mca", "btl", "tcp,self"].map(str::to_string).to_vec();
    let heading =
        |how: &str| format!("## Open MPI {}, {} ranks, {how}", coll.mpi_name(), req.ranks);
    vec![
        Run {
            heading: heading("shared memory"),
            argv: [base.clone(), program.clone()].concat(),
            expect: Expect::Rows(expected_rows(req)),
        },
        Run {
            heading: heading("TCP loopback"),
            argv: [base, tcp, program].concat(),
            expect: Expect::Rows(expected_rows(req)),
        },
    ]
}

/// The heading of the C++ Gloo run.
pub fn gloo_heading(req: &Request) -> String {
    let mut label = req.collective.name().to_string();
    if req.collective == Collective::Allreduce {
        let _ = write!(label, ", algo {}", req.algorithm.name());
    }
    format!("## C++ Gloo (Debian libgloo) {label}, {} ranks, TCP loopback", req.ranks)
}

/// Rank `rank`'s gloo_bench command; the ranks meet through a FileStore in `store` (empty).
pub fn gloo_command(req: &Request, bin: &Path, rank: u32, store: &Path) -> Vec<String> {
    vec![
        bin.join(GLOO_BENCH.name).to_string_lossy().into_owned(),
        "--rank".to_string(),
        rank.to_string(),
        "--size".to_string(),
        req.ranks.to_string(),
        "--dir".to_string(),
        store.to_string_lossy().into_owned(),
        "--counts".to_string(),
        counts_arg(&req.counts),
        "--seconds".to_string(),
        seconds_arg(req.seconds.unwrap_or(1.0)),
        "--algo".to_string(),
        req.algorithm.name().to_string(),
        "--coll".to_string(),
        req.collective.name().to_string(),
    ]
}

/// The element counts of the table rows in `lines`: lines of nine numbers (size in bytes,
/// elements, min, p50, p99, max, mean, p50max, iterations), the second being the count.
pub fn table_rows(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let numeric = fields.len() == 9 && fields.iter().all(|f| f.parse::<f64>().is_ok());
            if numeric { fields[1].parse().ok() } else { None }
        })
        .collect()
}

/// Whether `lines` hold what `expect` asks; the error says what is missing.
pub fn check(expect: &Expect, lines: &[String]) -> Result<(), String> {
    match expect {
        Expect::Rows(want) => {
            let got = table_rows(lines);
            if &got == want {
                Ok(())
            } else {
                Err(format!("result rows for counts {got:?}, want one per count {want:?}"))
            }
        }
        Expect::Lines(prefixes) => {
            let short: Vec<String> = prefixes
                .iter()
                .filter_map(|(prefix, n)| {
                    let seen = lines.iter().filter(|l| l.starts_with(prefix)).count();
                    (seen < *n).then(|| format!("{n} line(s) starting {prefix:?}, got {seen}"))
                })
                .collect();
            if short.is_empty() { Ok(()) } else { Err(format!("missing {}", short.join("; "))) }
        }
    }
}

/// The command as one could paste it into a shell.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|s| {
            let plain = !s.is_empty()
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-./=:,@%+".contains(c));
            if plain { s.clone() } else { format!("'{}'", s.replace('\'', r"'\''")) }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `cargo xtask peers` as `req` says; returns the exit status (0: every run passed and
/// printed every result line).
pub fn run(req: &Request, ctx: &Context) -> i32 {
    let wanted = tools(req.suite);
    let mut gone = missing(&wanted, present);
    if !gone.is_empty() && req.install {
        let root = is_root();
        for cmd in install_commands(&packages(&gone), root) {
            eprintln!("==> {}", shell_line(&cmd));
            let status = Command::new(&cmd[0])
                .args(&cmd[1..])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("error: {} failed ({status:?})", shell_line(&cmd));
                return 1;
            }
        }
        gone = missing(&wanted, present);
    }
    if !gone.is_empty() {
        eprint!("{}", missing_message(req.suite, &gone));
        return 1;
    }

    let src = ctx.root.join("peers");
    let bin = ctx.target_dir.join("peers");
    if let Err(e) = std::fs::create_dir_all(&bin) {
        eprintln!("error: cannot create {}: {e}", bin.display());
        return 1;
    }
    for program in programs(req.suite) {
        if let Err(e) = build(&program, &src, &bin) {
            eprintln!("error: building {}: {e}", program.name);
            return 1;
        }
    }

    let mut failures = Vec::new();
    for part in req.suite.parts() {
        let runs = match part {
            Suite::Limits => limits_runs(req.seconds, &bin),
            Suite::Mpi => mpi_runs(req, &bin),
            Suite::Gloo => {
                if let Err(e) = run_gloo(req, &bin) {
                    failures.push(format!("{}: {e}", gloo_heading(req)));
                }
                continue;
            }
            Suite::All => continue,
        };
        for r in runs {
            if let Err(e) = run_one(&r, req.timeout) {
                failures.push(format!("{}: {e}", r.heading));
            }
        }
    }
    if failures.is_empty() {
        0
    } else {
        eprintln!("error: `cargo xtask peers {}` failed:", req.suite.name());
        for f in &failures {
            eprintln!("  {f}");
        }
        1
    }
}

/// Build `program` into `bin` unless its binary is newer than its source. The compiler writes a
/// temporary file that is renamed into place, so a failed or killed build leaves no binary that
/// would look up to date.
fn build(program: &Program, src: &Path, bin: &Path) -> Result<(), String> {
    let source = src.join(program.source);
    let out = bin.join(program.name);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
    let source_time = modified(&source).map_err(|e| format!("{}: {e}", source.display()))?;
    if !stale(source_time, modified(&out).ok()) {
        return Ok(());
    }
    let tmp = bin.join(format!(".{}.{}.tmp", program.name, std::process::id()));
    let cmd = program.build_command(src, &tmp);
    eprintln!("==> {}", shell_line(&cmd));
    let status = Command::new(&cmd[0]).args(&cmd[1..]).status();
    match status {
        Ok(s) if s.success() => std::fs::rename(&tmp, &out).map_err(|e| e.to_string()),
        other => {
            let _ = std::fs::remove_file(&tmp);
            Err(format!("{} failed: {other:?}", cmd[0]))
        }
    }
}

/// How long the pipes may stay open after a program exited (a child it left holding them).
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Start `argv` with its stdout read line by line on a thread that echoes each line to ours and
/// returns them all; stderr goes straight to ours.
fn spawn_echoing(argv: &[String]) -> io::Result<(Child, mpsc::Receiver<Vec<String>>)> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    // `spawn` with a piped stdout always yields its handle.
    let stdout = child.stdout.take().expect("stdout was piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            lines.push(line);
        }
        let _ = tx.send(lines);
    });
    Ok((child, rx))
}

/// Wait for `child` until `deadline`; past it, kill it with everything it started.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill_tree(child);
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn announce(heading: &str, argv: &[String]) {
    println!("{heading}");
    let _ = io::stdout().flush();
    eprintln!("==> {}", shell_line(argv));
}

/// Run one program to completion or its time limit, echoing its output, then check it.
fn run_one(r: &Run, timeout: Duration) -> Result<(), String> {
    announce(&r.heading, &r.argv);
    let (mut child, lines) =
        spawn_echoing(&r.argv).map_err(|e| format!("cannot start {}: {e}", r.argv[0]))?;
    let status = wait_until(&mut child, Instant::now() + timeout).map_err(|e| e.to_string())?;
    let lines = lines.recv_timeout(DRAIN_GRACE).unwrap_or_default();
    match status {
        None => Err(format!("killed after {} s (--timeout)", timeout.as_secs())),
        Some(s) if !s.success() => Err(format!("exited with {s}")),
        Some(_) => check(&r.expect, &lines),
    }
}

/// Run C++ Gloo: one process per rank, meeting through a fresh FileStore folder. Rank 0 prints
/// the table straight through; the other ranks' output goes to a log each, shown when the run
/// fails. When one rank fails the others get a few seconds to fail too, then are killed.
fn run_gloo(req: &Request, bin: &Path) -> Result<(), String> {
    let work = bin.join(format!(
        "gloo-run.{}.{}.{}",
        std::process::id(),
        req.collective.name(),
        req.algorithm.name()
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let store = work.join("store");
    let result = run_gloo_in(req, bin, &work, &store);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_gloo_in(req: &Request, bin: &Path, work: &Path, store: &Path) -> Result<(), String> {
    let argv0 = gloo_command(req, bin, 0, store);
    announce(&gloo_heading(req), &argv0);
    let deadline = Instant::now() + req.timeout;
    let mut children: Vec<Child> = Vec::new();
    let mut logs = Vec::new();
    let mut rank0_lines = None;
    let mut start_error = None;
    for rank in 0..req.ranks {
        let argv = gloo_command(req, bin, rank, store);
        let started = if rank == 0 {
            spawn_echoing(&argv).map(|(child, rx)| {
                rank0_lines = Some(rx);
                child
            })
        } else {
            let log = work.join(format!("rank{rank}.log"));
            logs.push((rank, log.clone()));
            File::create(&log).and_then(|out| {
                let err = out.try_clone()?;
                Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
            })
        };
        match started {
            Ok(child) => children.push(child),
            Err(e) => {
                start_error = Some(format!("cannot start rank {rank}: {e}"));
                break;
            }
        }
    }
    let mut deadline = if start_error.is_some() { Instant::now() } else { deadline };
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut timed_out = false;
    while statuses.iter().any(Option::is_none) {
        for (child, status) in children.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = child.try_wait().ok().flatten();
                if status.is_some_and(|s| !s.success()) {
                    // The others would wait for the failed rank until Gloo's own timeouts.
                    deadline = deadline.min(Instant::now() + Duration::from_secs(5));
                }
            }
        }
        if statuses.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() >= deadline {
            timed_out =
                start_error.is_none() && statuses.iter().all(|s| s.is_none_or(|s| s.success()));
            for (child, status) in children.iter_mut().zip(statuses.iter_mut()) {
                if status.is_none() {
                    kill_tree(child);
                    *status = child.wait().ok();
                }
            }
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let lines = rank0_lines.and_then(|rx| rx.recv_timeout(DRAIN_GRACE).ok()).unwrap_or_default();
    let failed: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter_map(|(rank, s)| match s {
            Some(s) if s.success() => None,
            Some(s) => Some(format!("rank {rank} exited with {s}")),
            None => Some(format!("rank {rank} could not be waited for")),
        })
        .collect();
    let outcome = if let Some(e) = start_error {
        Err(e)
    } else if timed_out {
        Err(format!("killed after {} s (--timeout)", req.timeout.as_secs()))
    } else if !failed.is_empty() {
        Err(failed.join(", "))
    } else {
        check(&Expect::Rows(expected_rows(req)), &lines)
    };
    if outcome.is_err() {
        for (rank, log) in &logs {
            for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
                eprintln!("# rank {rank}: {line}");
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn request(s: &str) -> Request {
        match parse(&args(s)) {
            Ok(Parsed::Run(r)) => r,
            other => panic!("{s:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_are_run_sh_defaults() {
        let r = request("all");
        assert_eq!(r.suite, Suite::All);
        assert_eq!(r.ranks, 2);
        assert_eq!(r.counts, vec![1, 1000, 1_000_000, 16_777_216]);
        assert_eq!(r.collective, Collective::Allreduce);
        assert_eq!(r.algorithm, Algorithm::New);
        assert_eq!(r.seconds, None);
        assert_eq!(r.timeout, DEFAULT_TIMEOUT);
        assert!(!r.install);
    }

    #[test]
    fn parses_every_flag_in_both_spellings() {
        let r = request(
            "gloo --ranks 3 --counts 1,1024 --collective allreduce --algorithm ring_chunked \
             --seconds 0.25 --timeout 90 --install",
        );
        assert_eq!(
            r,
            Request {
                suite: Suite::Gloo,
                ranks: 3,
                counts: vec![1, 1024],
                collective: Collective::Allreduce,
                algorithm: Algorithm::RingChunked,
                seconds: Some(0.25),
                timeout: Duration::from_secs(90),
                install: true,
            }
        );
        let same = request(
            "--ranks=3 gloo --counts=1,1024 --algorithm=ring-chunked --seconds=0.25 \
             --timeout=90 --install",
        );
        assert_eq!(same, r);
        // MPI's and dashed names are accepted, the library's are used.
        assert_eq!(request("mpi --collective bcast").collective, Collective::Broadcast);
        assert_eq!(
            request("mpi --collective reduce-scatter").collective,
            Collective::ReduceScatter
        );
        assert_eq!(parse(&args("--help")), Ok(Parsed::Help));
        assert_eq!(parse(&args("mpi -h")), Ok(Parsed::Help));
    }

    #[test]
    fn rejects_bad_arguments_with_a_reason() {
        let cases = [
            ("", "name what to run"),
            ("fast", "unknown suite"),
            ("mpi gloo", "unexpected argument"),
            ("mpi --ranks 0", "--ranks"),
            ("mpi --ranks 65", "--ranks"),
            ("mpi --ranks", "needs a value"),
            ("mpi --counts 1,,2", "--counts"),
            ("mpi --counts 0", "--counts"),
            ("mpi --counts -5", "--counts"),
            ("mpi --counts 2147483647", "2^31-1"),
            ("mpi --collective allsum", "--collective"),
            ("mpi --algorithm ring_chunked", "for gloo"),
            ("gloo --algorithm ring", "--algorithm"),
            ("gloo --collective broadcast --algorithm halving_doubling", "allreduce"),
            ("limits --seconds 0", "--seconds"),
            ("limits --seconds nan", "--seconds"),
            ("limits --timeout 0", "--timeout"),
            ("limits --verbose", "unknown option"),
            ("limits --install=yes", "unknown option"),
        ];
        for (line, want) in cases {
            match parse(&args(line)) {
                Err(e) => assert!(e.contains(want), "{line:?}: {e:?} does not say {want:?}"),
                Ok(p) => panic!("{line:?} parsed as {p:?}"),
            }
        }
        let many = (1..=65).map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        assert!(parse(&args(&format!("mpi --counts {many}"))).is_err());
        // The largest count gloo_bench takes at 2 ranks is accepted.
        assert_eq!(request("gloo --counts 2147483645").counts, vec![2_147_483_645]);
        // gloo's algorithms on all (which runs gloo) and new on any collective are fine.
        assert_eq!(
            request("all --algorithm halving_doubling").algorithm,
            Algorithm::HalvingDoubling
        );
        assert_eq!(
            request("gloo --collective gather --algorithm new").collective,
            Collective::Gather
        );
    }

    #[test]
    fn builds_each_program_as_run_sh_did() {
        let src = Path::new("/repo/peers");
        let out = Path::new("/t/peers/x");
        let line = |p: Program| p.build_command(src, out).join(" ");
        assert_eq!(line(MEMBW), "gcc -O3 -o /t/peers/x /repo/peers/membw.c");
        assert_eq!(line(TCP_PINGPONG), "gcc -O2 -o /t/peers/x /repo/peers/tcp_pingpong.c");
        assert_eq!(line(TCP_BIDIR), "gcc -O2 -pthread -o /t/peers/x /repo/peers/tcp_bidir.c");
        assert_eq!(line(MPI_COLL_BENCH), "mpicc -O2 -o /t/peers/x /repo/peers/mpi_coll_bench.c");
        assert_eq!(
            line(GLOO_BENCH),
            "g++ -O2 -std=c++17 -o /t/peers/x /repo/peers/gloo_bench.cc -lgloo -pthread"
        );
        let names = |s: Suite| programs(s).iter().map(|p| p.name).collect::<Vec<_>>();
        assert_eq!(names(Suite::Mpi), ["mpi_coll_bench"]);
        assert_eq!(
            names(Suite::All),
            ["membw", "tcp_pingpong", "tcp_bidir", "mpi_coll_bench", "gloo_bench"]
        );
        // Every program's source is in peers/.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers");
        for p in programs(Suite::All) {
            assert!(root.join(p.source).is_file(), "peers/{} is missing", p.source);
        }
    }

    #[test]
    fn rebuilds_only_when_the_source_is_newer() {
        let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = t + Duration::from_secs(1);
        assert!(stale(t, None));
        assert!(stale(later, Some(t)));
        assert!(!stale(t, Some(t)));
        assert!(!stale(t, Some(later)));
    }

    #[test]
    fn limits_runs_take_a_free_port_and_the_given_seconds() {
        let bin = Path::new("/t/peers");
        let lines: Vec<String> = limits_runs(None, bin).iter().map(|r| r.argv.join(" ")).collect();
        assert_eq!(
            lines,
            [
                "/t/peers/membw 1",
                "/t/peers/tcp_pingpong 0 2",
                "/t/peers/tcp_pingpong 0 2 spin",
                "/t/peers/tcp_bidir 0 3"
            ]
        );
        let short = limits_runs(Some(0.1), bin);
        assert!(short.iter().all(|r| r.argv[1..].contains(&"0.1".to_string())), "{short:?}");
    }

    #[test]
    fn mpi_runs_shared_memory_then_tcp_on_loopback_only() {
        let r = request("mpi --ranks 4 --counts 1,1024 --collective broadcast --seconds 0.1");
        let runs = mpi_runs(&r, Path::new("/t/peers"));
        assert_eq!(runs.len(), 2);
        let common = "mpirun --allow-run-as-root --oversubscribe -np 4 --mca btl_tcp_if_include lo \
                      --mca oob_tcp_if_include lo";
        let program = "/t/peers/mpi_coll_bench -c bcast -t 0.1 -l 1,1024";
        assert_eq!(runs[0].argv.join(" "), format!("{common} {program}"));
        assert_eq!(runs[0].heading, "## Open MPI bcast, 4 ranks, shared memory");
        assert_eq!(
            runs[1].argv.join(" "),
            format!("{common} --mca pml ob1 --mca btl tcp,self {program}")
        );
        assert_eq!(runs[1].heading, "## Open MPI bcast, 4 ranks, TCP loopback");
        for run in &runs {
            assert_eq!(run.expect, Expect::Rows(vec![1, 1024]));
        }
        // A barrier owes one row, of size 0, whatever the counts; the default time is 1 s.
        let barrier = mpi_runs(&request("mpi --collective barrier"), Path::new("/b"));
        assert_eq!(barrier[0].expect, Expect::Rows(vec![0]));
        assert!(barrier[0].argv.join(" ").ends_with("-c barrier -t 1 -l 1,1000,1000000,16777216"));
    }

    #[test]
    fn gloo_ranks_share_a_store_and_differ_only_in_rank() {
        let r = request("gloo --ranks 3 --counts 1,1024 --algorithm halving_doubling");
        let store = Path::new("/t/peers/run/store");
        assert_eq!(
            gloo_command(&r, Path::new("/t/peers"), 2, store).join(" "),
            "/t/peers/gloo_bench --rank 2 --size 3 --dir /t/peers/run/store --counts 1,1024 \
             --seconds 1 --algo halving_doubling --coll allreduce"
        );
        assert_eq!(
            gloo_heading(&r),
            "## C++ Gloo (Debian libgloo) allreduce, algo halving_doubling, 3 ranks, TCP loopback"
        );
        let g = request("gloo --collective reduce_scatter");
        assert_eq!(
            gloo_heading(&g),
            "## C++ Gloo (Debian libgloo) reduce_scatter, 2 ranks, TCP loopback"
        );
        assert!(
            gloo_command(&g, Path::new("/b"), 0, store).ends_with(&args("--coll reduce_scatter"))
        );
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn a_table_passes_only_with_one_row_per_count() {
        let table = lines(
            "# MPI_Allreduce(MPI_FLOAT,MPI_SUM) ranks=2 inplace=0 target=0.10s
    size(B)    elements    min(us)    p50(us)    p99(us)    max(us)   mean(us) p50max(us)     iters
          4           1        0.2        0.5        1.0    12374.0        2.1        0.5     47984
       4096        1024        2.5        3.6        6.2    31077.0       26.5        3.6     25933",
        );
        assert_eq!(table_rows(&table), vec![1, 1024]);
        assert_eq!(check(&Expect::Rows(vec![1, 1024]), &table), Ok(()));
        // A count that printed no row (the program died after the first) fails.
        let cut = &table[..3];
        let err = check(&Expect::Rows(vec![1, 1024]), cut).unwrap_err();
        assert!(err.contains("[1]") && err.contains("[1, 1024]"), "{err}");
        assert!(check(&Expect::Rows(vec![1, 1024]), &[]).is_err());
        // Rows out of order or repeated are not the table asked for.
        let swapped = vec![table[3].clone(), table[2].clone()];
        assert!(check(&Expect::Rows(vec![1, 1024]), &swapped).is_err());
    }

    #[test]
    fn limits_pass_only_with_every_line() {
        let out = lines(
            "pingpong 1-byte RTT: n=5739 min=13.4 us p50=13.6 us p99=39.4 us mean=17.5 us
bulk     bytes=520093696  time=0.100 s  throughput=5.22 GB/s (41.7 Gbit/s)",
        );
        let want = Expect::Lines(&[("pingpong 1-byte RTT:", 1), ("bulk ", 1)]);
        assert_eq!(check(&want, &out), Ok(()));
        let err = check(&want, &out[..1]).unwrap_err();
        assert!(err.contains("\"bulk \""), "{err}");
        let membw = &limits_runs(None, Path::new("/b"))[0].expect;
        let three = lines("memcpy 1 MiB 1 1 5\nmemcpy 64 MiB 1 1 5\nadd 1 MiB 1 1 5");
        assert!(check(membw, &three).unwrap_err().contains("\"add \""));
    }

    #[test]
    fn a_missing_tool_names_its_debian_package() {
        let gloo = tools(Suite::Gloo);
        assert_eq!(packages(&gloo), ["g++", "libgloo-dev"]);
        assert_eq!(packages(&tools(Suite::Mpi)), ["gcc", "libopenmpi-dev", "openmpi-bin"]);
        assert_eq!(
            packages(&tools(Suite::All)),
            ["gcc", "libopenmpi-dev", "openmpi-bin", "g++", "libgloo-dev"]
        );
        let gone = missing(&gloo, |p| matches!(p, Probe::Command("g++")));
        assert_eq!(gone, [GLOO_HEADERS]);
        let msg = missing_message(Suite::Gloo, &gone);
        assert!(msg.contains("gloo/allreduce.h (Debian package libgloo-dev)"), "{msg}");
        assert!(msg.contains("apt-get install -y libgloo-dev"), "{msg}");
        assert!(msg.contains("cargo xtask peers gloo --install"), "{msg}");
        assert!(missing(&gloo, |_| true).is_empty());
    }

    #[test]
    fn installs_with_apt_get_and_sudo_when_not_root() {
        let as_root: Vec<String> =
            install_commands(&["g++", "libgloo-dev"], true).iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            as_root,
            ["apt-get update", "apt-get install -y --no-install-recommends g++ libgloo-dev"]
        );
        let user = install_commands(&["gcc"], false);
        assert!(user.iter().all(|c| c[0] == "sudo"), "{user:?}");
    }

    /// A directory holding a fake `gloo_bench` (a shell script), removed on drop.
    struct FakeBin(PathBuf);

    impl FakeBin {
        fn new(tag: &str, script: &str) -> FakeBin {
            use std::os::unix::fs::PermissionsExt as _;
            let dir =
                std::env::temp_dir().join(format!("xtask-peers-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(GLOO_BENCH.name);
            // Written by a `sh` child, not by us: a descriptor open for writing here would be
            // inherited by a child another test thread forks meanwhile, and exec of the script
            // would fail with ETXTBSY until that child execs.
            let status = std::process::Command::new("sh")
                .args(["-c", r#"printf '#!/bin/sh\n%s\n' "$1" > "$2""#, "sh", script])
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success(), "writing {}: {status}", path.display());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            FakeBin(dir)
        }
    }

    impl Drop for FakeBin {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn gloo_passes_with_rank_0_s_table_and_fails_when_a_rank_fails() {
        let req = request("gloo --ranks 3 --counts 1,1024 --timeout 120");
        // `$2` is the rank. Rank 0 prints a row per count; the others print nothing.
        let good = FakeBin::new(
            "good",
            r#"[ "$2" = 0 ] && for n in 1 1024; do echo "4 $n 1 1 1 1 1 1 10"; done; exit 0"#,
        );
        assert_eq!(run_gloo(&req, &good.0), Ok(()));
        // A row short: the run fails though every rank exited 0.
        let short = FakeBin::new("short", r#"[ "$2" = 0 ] && echo "4 1 1 1 1 1 1 1 10"; exit 0"#);
        let err = run_gloo(&req, &short.0).unwrap_err();
        assert!(err.contains("want one per count [1, 1024]"), "{err}");
        // Rank 2 fails at once; ranks 0 and 1 would wait for it for 300 s and are killed.
        let bad =
            FakeBin::new("bad", r#"[ "$2" = 2 ] && { echo boom >&2; exit 3; }; exec sleep 300"#);
        let err = run_gloo(&req, &bad.0).unwrap_err();
        assert!(err.contains("rank 2 exited with exit status: 3"), "{err}");
        assert!(err.contains("rank 0 exited with signal: 9"), "{err}");
        assert!(!err.contains("--timeout"), "{err}");
        // Its FileStore folder is gone.
        let left: Vec<_> =
            std::fs::read_dir(&bad.0).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from(GLOO_BENCH.name)]);
    }

    #[test]
    fn a_program_past_its_time_limit_is_killed_and_fails() {
        let sh = |script: &str, expect| Run {
            heading: "## test".to_string(),
            argv: vec!["sh".to_string(), "-c".to_string(), script.to_string()],
            expect,
        };
        // The grandchild `sleep` would hold the pipe for 300 s had it not been killed too.
        let err = run_one(&sh("sleep 300 & wait", Expect::Lines(&[])), Duration::from_millis(300))
            .unwrap_err();
        assert!(err.contains("killed after"), "{err}");
        let long = Duration::from_secs(60);
        assert_eq!(run_one(&sh("echo add 1", Expect::Lines(&[("add ", 1)])), long), Ok(()));
        let err = run_one(&sh("echo add 1", Expect::Lines(&[("memcpy ", 1)])), long).unwrap_err();
        assert!(err.contains("memcpy"), "{err}");
        let err = run_one(&sh("echo add 1; exit 3", Expect::Lines(&[])), long).unwrap_err();
        assert!(err.contains("exit status: 3"), "{err}");
    }
}
