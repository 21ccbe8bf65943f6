//! The command line: every flag, its default and the values it accepts.
//!
//! Flags that every mode shares (how ranks are started, the store, the transport, the output)
//! are `global`, so they may stand before or after a subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The largest message the tool will allocate for, so a typo such as `--max-bytes 64T` is an
/// error rather than an out-of-memory kill.
pub(crate) const MAX_BYTES_LIMIT: u64 = 16 << 30;

/// Measure the Rust Gloo's collectives against this machine's limits.
///
/// With no arguments: starts 2 ranks as processes on this machine over an embedded store, each
/// on a core of its own, connected through shared memory (`--transport auto`), sweeps allreduce of f32 sum from 4 B to 64 MiB, checks every result and prints a table
/// beside the limits it measured in the same run (plain-socket ping-pong and streams between
/// ranks 0 and 1, memcpy).
#[derive(Parser, Debug, Clone)]
#[command(name = "gloo-bench", version, max_term_width = 100)]
pub(crate) struct Cli {
    /// What to measure (default: a sweep of one collective).
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// How ranks are started and find each other.
    #[command(flatten)]
    pub(crate) launch: LaunchArgs,
    /// What the sweep measures.
    #[command(flatten)]
    pub(crate) sweep: SweepArgs,
    /// How results are printed.
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// The modes other than the default collective sweep.
#[derive(Subcommand, Debug, Clone)]
pub(crate) enum Command {
    /// The transport benchmark: 1-byte ping-pong, one-way and full-duplex streams of large
    /// messages, each beside the plain-socket figure, and the peak memory of receiving one
    /// large message into a posted buffer. Uses ranks 0 and 1.
    Transport(TransportArgs),
    /// Only measure the limits (plain-socket ping-pong and streams between ranks 0 and 1,
    /// memcpy and f32 add).
    Limits,
}

/// Flags of the `transport` subcommand.
#[derive(Args, Debug, Clone)]
pub(crate) struct TransportArgs {
    /// Message size of the one-way and full-duplex streams (K, M, G suffixes are binary).
    #[arg(long, default_value = "64M", value_parser = parse_bytes, value_name = "BYTES")]
    pub(crate) stream_bytes: u64,
    /// Size of the message received for the memory measurement; 0 skips it.
    #[arg(long, default_value = "1G", value_parser = parse_bytes, value_name = "BYTES")]
    pub(crate) memory_bytes: u64,
}

/// Flags that say how ranks are started and how they meet.
#[derive(Args, Debug, Clone)]
pub(crate) struct LaunchArgs {
    /// Number of ranks to start as processes on this machine (ignored with --rank).
    #[arg(long, global = true, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) ranks: u32,
    /// This process's rank in a multi-machine run (needs --size and --store).
    #[arg(long, global = true, value_name = "R", requires_all = ["size", "store"])]
    pub(crate) rank: Option<u32>,
    /// The number of ranks in a multi-machine run.
    #[arg(long, global = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub(crate) size: Option<u32>,
    /// Where ranks meet: tcp://host:port, redis://host:port, file:///path, or env:// (rank,
    /// size and store from torchrun, Slurm, Open MPI or PMI variables).
    #[arg(long, global = true, value_name = "URL", value_parser = parse_store)]
    pub(crate) store: Option<StoreUrl>,
    /// The transport between ranks.
    #[arg(long, global = true, value_enum, default_value_t = TransportKind::Auto)]
    pub(crate) transport: TransportKind,
    /// How the local launcher places the ranks it starts: `core` binds each to a core of its
    /// own when there are at least as many cores as ranks (as mpirun does), `none` leaves
    /// them to the scheduler. Ranks started by torchrun, mpirun or srun (`env://`) with
    /// `core` bind themselves the same way by their local rank, unless the launcher already
    /// bound them to one CPU.
    #[arg(long, global = true, value_enum, default_value_t = Bind::Core)]
    pub(crate) bind: Bind,
    /// Set by the local launcher on the processes it starts with `--bind core`: the CPU this
    /// rank runs on.
    #[arg(long, global = true, hide = true, value_name = "CPU")]
    pub(crate) cpu: Option<usize>,
    /// How long a waiting call of the transport spins before it sleeps, in microseconds (0:
    /// sleep at once). Default: the transport's own, shown in the output's header.
    #[arg(long, global = true, value_name = "US",
          value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub(crate) busy_poll_us: Option<u64>,
    /// Every rank gives up (and the launcher kills what is left) after this many seconds.
    #[arg(long, global = true, default_value_t = 300.0, value_name = "SECS",
          value_parser = parse_positive_secs)]
    pub(crate) timeout: f64,
    /// Seconds spent on each limit measurement (ping-pong, memcpy); the plain-socket streams
    /// run twice as long.
    #[arg(long, global = true, default_value_t = 1.0, value_name = "SECS",
          value_parser = parse_positive_secs)]
    pub(crate) limit_secs: f64,
    /// SO_SNDBUF/SO_RCVBUF of the plain sockets the limits are measured with. The default, 0,
    /// keeps the kernel's defaults and its autotuning, as gloo-transport's tcp and
    /// the usual C stream tools do; a fixed size turns autotuning off.
    #[arg(long, global = true, default_value = "0", value_parser = parse_bytes, value_name = "BYTES")]
    pub(crate) plain_sockbuf: u64,
    /// Skip measuring the plain-socket and memory limits.
    #[arg(long, global = true)]
    pub(crate) no_limits: bool,
    /// Set by the local launcher on the processes it starts: rank 0 writes its report (JSON)
    /// to this file instead of printing it.
    #[arg(long, global = true, hide = true, value_name = "FILE")]
    pub(crate) child_report: Option<PathBuf>,
    /// Set by the local launcher on the processes it starts: exit when standard input (a pipe
    /// only the launcher holds) reaches end-of-file, that is when the launcher is gone.
    #[arg(long, global = true, hide = true)]
    pub(crate) exit_with_launcher: bool,
}

/// Flags of the collective sweep.
#[derive(Args, Debug, Clone)]
pub(crate) struct SweepArgs {
    /// The collective to measure; `all` sweeps every one in turn (sendrecv only with 2 ranks
    /// or more) and ends with a summary of each at the largest size.
    #[arg(long, value_enum, default_value_t = Which::One(Collective::Allreduce))]
    pub(crate) collective: Which,
    /// The algorithm ("auto" lets the library choose by size and world size).
    #[arg(long, default_value = "auto", value_name = "NAME")]
    pub(crate) algorithm: String,
    /// Element type.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub(crate) dtype: Dtype,
    /// Reduction (for allreduce, reduce and reduce_scatter).
    #[arg(long, value_enum, default_value_t = ReduceOp::Sum)]
    pub(crate) op: ReduceOp,
    /// Smallest message in bytes (K, M, G suffixes are binary).
    #[arg(long, default_value = "4", value_parser = parse_bytes, value_name = "BYTES")]
    pub(crate) min_bytes: u64,
    /// Largest message in bytes.
    #[arg(long, default_value = "64M", value_parser = parse_bytes, value_name = "BYTES")]
    pub(crate) max_bytes: u64,
    /// Each size is this many times the previous one.
    #[arg(long, default_value_t = 2, value_name = "F",
          value_parser = clap::value_parser!(u64).range(2..=1024))]
    pub(crate) step_factor: u64,
    /// Timed iterations per size (instead of --time-per-size).
    #[arg(long, value_name = "N", conflicts_with = "time_per_size",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) iters: Option<u64>,
    /// Untimed iterations before the timed ones, per size.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub(crate) warmup: u64,
    /// Seconds of timed iterations per size (at least 5 iterations, at most 100,000), when
    /// --iters is not given.
    #[arg(long, default_value_t = 0.2, value_name = "SECS", value_parser = parse_positive_secs)]
    pub(crate) time_per_size: f64,
    /// Verify one call per size against a locally computed expected value, and that every rank
    /// holds the same bytes where it must (the default).
    #[arg(long, overrides_with = "no_check")]
    pub(crate) check: bool,
    /// Do not verify results.
    #[arg(long, overrides_with = "check")]
    pub(crate) no_check: bool,
    /// Instead of the sweep: per size, a compute loop beside a background allreduce (f32
    /// sum, `Group::start_allreduce`), with the loop calibrated to last as long as the
    /// blocking allreduce; prints comm, compute, serial (loop then blocking allreduce) and
    /// overlapped times and overlap / max(compute, comm). Use a large --min-bytes: small
    /// calls have nothing to hide.
    #[arg(long)]
    pub(crate) overlap: bool,
    /// With --overlap: the compute step sleeps instead (the CPU left free, as while a GPU
    /// kernel or I/O runs), which shows the library's own overhead apart from the
    /// competition for cores.
    #[arg(long, requires = "overlap")]
    pub(crate) overlap_sleep: bool,
    /// Root rank of broadcast, reduce, gather and scatter.
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub(crate) root: u32,
}

impl SweepArgs {
    /// Whether results are verified: on unless `--no-check` came last.
    pub(crate) fn checking(&self) -> bool {
        !self.no_check
    }
}

/// What `--collective` names: one operation, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// One operation.
    One(Collective),
    /// Every operation in turn.
    All,
}

impl Which {
    /// The operations swept in a run of `size` ranks, in order.
    pub(crate) fn each(self, size: u32) -> Vec<Collective> {
        match self {
            Which::One(c) => vec![c],
            Which::All => Collective::value_variants()
                .iter()
                .copied()
                .filter(|&c| c != Collective::Sendrecv || size >= 2)
                .collect(),
        }
    }

    /// Whether any of the operations has a root.
    pub(crate) fn rooted(self) -> bool {
        match self {
            Which::One(c) => c.rooted(),
            Which::All => true,
        }
    }
}

impl ValueEnum for Which {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [Which; 11] = [
            Which::One(Collective::Allreduce),
            Which::One(Collective::Reduce),
            Which::One(Collective::Broadcast),
            Which::One(Collective::Allgather),
            Which::One(Collective::ReduceScatter),
            Which::One(Collective::Alltoall),
            Which::One(Collective::Gather),
            Which::One(Collective::Scatter),
            Which::One(Collective::Barrier),
            Which::One(Collective::Sendrecv),
            Which::All,
        ];
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self {
            Which::One(c) => c.to_possible_value(),
            Which::All => Some(
                clap::builder::PossibleValue::new("all")
                    .help("Every operation in turn, then a summary at the largest size"),
            ),
        }
    }
}

/// Flags that say how results are printed.
#[derive(Args, Debug, Clone)]
pub(crate) struct OutputArgs {
    /// Also write the results, with the limits, as JSON to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// How the results are printed on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

/// Where the local launcher puts its ranks.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bind {
    /// Each rank on a core of its own, when there are enough cores.
    Core,
    /// Wherever the scheduler puts them.
    None,
}

/// Transports this build can use.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportKind {
    /// Shared memory between the ranks of one host, tcp between hosts (gloo-shm's `auto`).
    Auto,
    /// Shared memory only (gloo-shm): every rank on this host.
    Shm,
    /// TCP (gloo-transport's `tcp`), ranks as processes.
    Tcp,
    /// TCP with mutual TLS 1.3 (gloo-tls), ranks as processes: certificates from
    /// GLOO_TLS_CA/CERT/KEY (`{rank}` in them is each rank's number), else a throwaway job
    /// CA made for the run.
    Tls,
    /// gloo-transport's in-process transport: ranks as threads of one process (no network;
    /// measures the algorithms and the library's own overhead).
    Loopback,
}

impl TransportKind {
    /// The name printed in the header.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TransportKind::Auto => "auto",
            TransportKind::Shm => "shm",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Loopback => "loopback",
        }
    }
}

/// The operations the sweep can measure.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collective {
    /// Every rank ends with the reduction of every rank's buffer.
    Allreduce,
    /// The root ends with the reduction.
    Reduce,
    /// The root's buffer is copied to every rank.
    Broadcast,
    /// Every rank ends with every rank's block.
    Allgather,
    /// Every rank ends with its block of the reduction.
    #[value(name = "reduce_scatter", alias = "reduce-scatter")]
    ReduceScatter,
    /// Every rank sends a distinct block to every rank.
    Alltoall,
    /// The root collects every rank's block.
    Gather,
    /// The root hands out one block to each rank.
    Scatter,
    /// No data; every rank waits for all.
    Barrier,
    /// Each rank sends to rank+1 and receives from rank-1 at once (a ring shift).
    Sendrecv,
}

impl Collective {
    /// The name used on the command line and in the output: the library's own
    /// ([`gloo_algorithms::Collective::name`]), except `sendrecv`, which is not the library's
    /// point-to-point `send_recv` but nccl-tests' ring shift built on it, and keeps
    /// nccl-tests' name.
    pub fn name(self) -> &'static str {
        match self {
            Collective::Sendrecv => "sendrecv",
            c => crate::collectives::library_collective(c).name(),
        }
    }

    /// Whether the operation reduces (and so uses `--op`).
    pub(crate) fn reduces(self) -> bool {
        matches!(self, Collective::Allreduce | Collective::Reduce | Collective::ReduceScatter)
    }

    /// Whether the operation has a root (and so uses `--root`).
    pub(crate) fn rooted(self) -> bool {
        matches!(
            self,
            Collective::Reduce | Collective::Broadcast | Collective::Gather | Collective::Scatter
        )
    }
}

/// Element types.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // The names say it all.
pub(crate) enum Dtype {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    Bf16,
    F32,
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub(crate) fn size(self) -> u64 {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// The library's element type.
    pub(crate) fn library(self) -> gloo_algorithms::DType {
        use gloo_algorithms::DType as L;
        match self {
            Dtype::U8 => L::U8,
            Dtype::U16 => L::U16,
            Dtype::U32 => L::U32,
            Dtype::U64 => L::U64,
            Dtype::I8 => L::I8,
            Dtype::I16 => L::I16,
            Dtype::I32 => L::I32,
            Dtype::I64 => L::I64,
            Dtype::F16 => L::F16,
            Dtype::Bf16 => L::BF16,
            Dtype::F32 => L::F32,
            Dtype::F64 => L::F64,
        }
    }

    /// The name used on the command line and in the output: the library's own.
    pub(crate) fn name(self) -> &'static str {
        self.library().name()
    }
}

/// Reductions.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // The names say it all.
pub(crate) enum ReduceOp {
    Sum,
    Product,
    Min,
    Max,
    Average,
}

impl ReduceOp {
    /// The name used on the command line and in the output: the library's own.
    pub(crate) fn name(self) -> &'static str {
        use gloo_algorithms::ReduceOp as L;
        match self {
            ReduceOp::Sum => L::<u8>::Sum,
            ReduceOp::Product => L::Product,
            ReduceOp::Min => L::Min,
            ReduceOp::Max => L::Max,
            ReduceOp::Average => L::Average,
        }
        .name()
    }
}

/// Output formats.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Aligned columns for people.
    Table,
    /// Comma-separated values with a header line, for programs.
    Csv,
}

/// A parsed `--store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreUrl {
    /// A TcpStore server at `host:port`.
    Tcp(String),
    /// A redis-server: what follows `redis://` (`[:password@]host:port[/db]`).
    Redis(String),
    /// A directory on a file system every rank sees.
    File(PathBuf),
    /// Rank, size and store from the launcher's environment variables.
    Env,
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Tcp(a) => write!(f, "tcp://{a}"),
            // The password, if any, is never printed.
            StoreUrl::Redis(a) => match a.rsplit_once('@') {
                Some((_, host)) => write!(f, "redis://***@{host}"),
                None => write!(f, "redis://{a}"),
            },
            StoreUrl::File(p) => write!(f, "file://{}", p.display()),
            StoreUrl::Env => f.write_str("env://"),
        }
    }
}

const STORE_CHOICES: &str = "tcp://host:port, redis://host:port, file:///path or env://";

fn parse_store(s: &str) -> Result<StoreUrl, String> {
    let host_port = |rest: &str| -> Result<String, String> {
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(rest.to_string())
            }
            _ => Err(format!("'{rest}' is not host:port (expected {STORE_CHOICES})")),
        }
    };
    if let Some(rest) = s.strip_prefix("tcp://") {
        Ok(StoreUrl::Tcp(host_port(rest)?))
    } else if let Some(rest) = s.strip_prefix("redis://") {
        let after_auth = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let server = after_auth.split_once('/').map_or(after_auth, |(h, _)| h);
        host_port(server)?;
        Ok(StoreUrl::Redis(rest.to_string()))
    } else if let Some(rest) = s.strip_prefix("file://") {
        if rest.starts_with('/') {
            Ok(StoreUrl::File(PathBuf::from(rest)))
        } else {
            Err(format!("a file store needs an absolute path, as in file:///tmp/job (got '{s}')"))
        }
    } else if s == "env://" || s == "env" {
        Ok(StoreUrl::Env)
    } else {
        Err(format!("unknown store (expected {STORE_CHOICES})"))
    }
}

/// Parses `4`, `4K`, `4KiB`, `64M`, `1G` (binary multiples).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number of bytes with an optional K, M or G suffix".to_string())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("unknown unit '{unit}' (expected K, M or G)")),
    };
    let v = n.checked_mul(mult).ok_or_else(|| "too large".to_string())?;
    if v > MAX_BYTES_LIMIT {
        return Err(format!("at most {} GiB", MAX_BYTES_LIMIT >> 30));
    }
    Ok(v)
}

fn parse_positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err("expected a number of seconds above 0 (at most 86400)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The command line, the output and the library spell every collective, type and op the
    /// same way (they once disagreed: `bf16` here, `BF16` there).
    #[test]
    fn names_are_the_librarys_and_the_command_lines() {
        let clap_name = |v: Option<clap::builder::PossibleValue>| v.unwrap().get_name().to_string();
        for c in Collective::value_variants() {
            assert_eq!(clap_name(c.to_possible_value()), c.name());
            if *c != Collective::Sendrecv {
                assert_eq!(c.name(), crate::collectives::library_collective(*c).name());
            }
        }
        for d in Dtype::value_variants() {
            assert_eq!(clap_name(d.to_possible_value()), d.name());
            assert_eq!(d.name(), d.library().name());
        }
        for o in ReduceOp::value_variants() {
            assert_eq!(clap_name(o.to_possible_value()), o.name());
        }
    }

    #[test]
    fn byte_sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("4"), Ok(4));
        assert_eq!(parse_bytes("4K"), Ok(4096));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert!(parse_bytes("4X").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("99999999999999999999G").is_err());
        assert!(parse_bytes("17G").is_err());
    }

    #[test]
    fn stores_parse_and_bad_ones_name_the_choices() {
        assert_eq!(parse_store("tcp://h:29500"), Ok(StoreUrl::Tcp("h:29500".into())));
        assert_eq!(
            parse_store("redis://127.0.0.1:6379"),
            Ok(StoreUrl::Redis("127.0.0.1:6379".into()))
        );
        assert_eq!(parse_store("file:///tmp/x"), Ok(StoreUrl::File("/tmp/x".into())));
        assert_eq!(parse_store("env://"), Ok(StoreUrl::Env));
        let r = parse_store("redis://:secret@h:6379/2").unwrap();
        assert_eq!(r.to_string(), "redis://***@h:6379/2");
        assert!(parse_store("tcp://nohost").unwrap_err().contains("host:port"));
        assert!(parse_store("http://x:1").unwrap_err().contains("redis://"));
        assert!(parse_store("file://relative").is_err());
    }

    #[test]
    fn check_is_on_by_default_and_no_check_turns_it_off() {
        let c = Cli::try_parse_from(["gloo-bench"]).unwrap();
        assert!(c.sweep.checking());
        let c = Cli::try_parse_from(["gloo-bench", "--no-check"]).unwrap();
        assert!(!c.sweep.checking());
        let c = Cli::try_parse_from(["gloo-bench", "--no-check", "--check"]).unwrap();
        assert!(c.sweep.checking());
    }

    #[test]
    fn collective_takes_every_operation_and_all() {
        let c = Cli::try_parse_from(["gloo-bench", "--collective", "reduce-scatter"]).unwrap();
        assert_eq!(c.sweep.collective, Which::One(Collective::ReduceScatter));
        let c = Cli::try_parse_from(["gloo-bench", "--collective", "all"]).unwrap();
        assert_eq!(c.sweep.collective, Which::All);
        assert_eq!(c.sweep.collective.each(2).len(), Collective::value_variants().len());
        assert!(!c.sweep.collective.each(1).contains(&Collective::Sendrecv));
        assert!(Cli::try_parse_from(["gloo-bench", "--collective", "everything"]).is_err());
    }

    #[test]
    fn global_flags_follow_a_subcommand() {
        let c = Cli::try_parse_from(["gloo-bench", "transport", "--ranks", "2", "--format", "csv"])
            .unwrap();
        assert!(matches!(c.command, Some(Command::Transport(_))));
        assert_eq!(c.output.format, Format::Csv);
    }
}
