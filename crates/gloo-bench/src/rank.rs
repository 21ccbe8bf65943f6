//! One rank of a run: meet the others through the store, measure the limits, connect the
//! transport, run the chosen mode, and (rank 0) report.

use std::time::{Duration, Instant};

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use gloo_rendezvous::HashStore;
use gloo_transport::loopback::{self, LoopbackConfig};

use crate::cli::{Cli, Command, StoreUrl, TransportKind, Which};
use crate::error::{Error, Result};
use crate::limits::{self, LimitConfig, Limits};
use crate::net::{Connected, NetConfig};
use crate::p2p::Waiting;
use crate::report::{self, Report, Summary};
use crate::{ctl, net, overlap, p2p, store, sweep, versus};

/// What a rank ended with.
pub(crate) struct Outcome {
    /// The report (rank 0 only).
    pub(crate) report: Option<Report>,
}

/// Runs this process as rank `rank` of `size`.
pub(crate) fn run(cli: &Cli, rank: u32, size: u32, url: &StoreUrl) -> Result<Outcome> {
    let deadline = Instant::now() + Duration::from_secs_f64(cli.launch.timeout);
    check(cli, rank, size)?;
    let mut kv = store::open(url, rank, deadline)?;
    kv.join(size, deadline)?;
    let ip = limits::local_ip_towards(store::host_port(url).as_deref());
    let name = kv.name().to_string();
    let mut connect = |cfg: &NetConfig| net::connect(cfg, rank, size, &kv, deadline);
    run_with(cli, rank, size, &kv, ip, &name, &mut connect, deadline)
}

/// Runs every rank of a `--transport loopback` run as a thread of this process, over an
/// in-process store; returns rank 0's report.
pub(crate) fn run_in_process(cli: &Cli) -> Result<Report> {
    let deadline = Instant::now() + Duration::from_secs_f64(cli.launch.timeout);
    let size = cli.launch.ranks;
    check(cli, 0, size)?;
    let store = Arc::new(HashStore::new());
    let comms = loopback::group(size, LoopbackConfig::default());
    say!("gloo-bench: running {size} ranks as threads over the loopback transport");
    let results: Vec<Result<Outcome>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .enumerate()
            .map(|(r, comm)| {
                let store = store.clone();
                s.spawn(move || {
                    let rank = r as u32;
                    let kv = store::in_process(store);
                    let mut comm = Some(comm);
                    let mut connect = |_: &NetConfig| {
                        let c = comm.take().ok_or_else(|| {
                            Error::Invalid("the loopback transport has one group per run".into())
                        })?;
                        Ok(Connected::uniform(Box::new(c), "loopback", rank, size))
                    };
                    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
                    run_with(cli, rank, size, &kv, ip, "in-process", &mut connect, deadline)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Invalid("a rank's thread panicked (see above)".into()))
                })
            })
            .collect()
    });
    let mut report = None;
    for (r, res) in results.into_iter().enumerate() {
        match res {
            Ok(o) => report = report.or(o.report),
            Err(e) => return Err(Error::Invalid(format!("rank {r}: {e}"))),
        }
    }
    report.ok_or_else(|| Error::Invalid("rank 0 made no report".into()))
}

/// The CPUs this rank may run on, as the kernel says (after any `--cpu` binding).
fn runs_on(rank: u32) -> String {
    match gloo_shm::placement::allowed_cpus() {
        Ok(cpus) => {
            let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
            format!("rank {rank} runs on cpus [{}]", list.join(","))
        }
        Err(e) => format!("rank {rank}: its cpus are unknown ({e})"),
    }
}

/// Checks that need the world size.
fn check(cli: &Cli, rank: u32, size: u32) -> Result<()> {
    if rank >= size {
        return Err(Error::Invalid(format!("--rank {rank} is not below --size {size}")));
    }
    let sweep_args = &cli.sweep;
    if cli.command.is_none() && sweep_args.collective.rooted() && sweep_args.root >= size {
        return Err(Error::Invalid(format!(
            "--root {} is not a rank of a {size}-rank run (0..{size})",
            sweep_args.root
        )));
    }
    Ok(())
}

/// A connected communicator for a mesh configuration.
type Connect<'a> = dyn FnMut(&NetConfig) -> Result<Connected> + 'a;

/// The part of a rank's run after it has met the others: limits, mode, report.
#[allow(clippy::too_many_arguments)] // One call site each; a struct would only rename them.
fn run_with(
    cli: &Cli,
    rank: u32,
    size: u32,
    kv: &store::Opened,
    ip: IpAddr,
    store_name: &str,
    connect: &mut Connect<'_>,
    deadline: Instant,
) -> Result<Outcome> {
    let message = match &cli.command {
        Some(Command::Transport(t)) => t.stream_bytes,
        _ => cli.sweep.max_bytes.clamp(1 << 20, 64 << 20),
    };
    let lim = if cli.launch.no_limits {
        Limits::default()
    } else {
        if rank == 0 {
            say!(
                "gloo-bench: measuring the limits (plain sockets and shm between ranks 0 and 1, memcpy)"
            );
        }
        let cfg =
            LimitConfig { secs: cli.launch.limit_secs, message, sockbuf: cli.launch.plain_sockbuf };
        let mut lim = limits::measure(rank, size, kv, ip, cfg, deadline)?;
        if size >= 2 && matches!(cli.launch.transport, TransportKind::Shm | TransportKind::Auto) {
            crate::shm_limits::measure(rank, kv, cfg, deadline, &mut lim)?;
        }
        lim
    };
    let in_process = cli.launch.transport == TransportKind::Loopback;
    let busy_poll = cli.launch.busy_poll_us.map(Duration::from_micros);
    let shm_waits = matches!(cli.launch.transport, TransportKind::Shm | TransportKind::Auto);
    let spin_window = busy_poll.unwrap_or(if shm_waits {
        gloo_shm::DEFAULT_SPIN + gloo_shm::DEFAULT_YIELD
    } else {
        gloo_transport::tcp::DEFAULT_BUSY_POLL
    });
    // tcp spins (rather than yields) through its window where shm would: left to its
    // defaults, bound to a cpu of its own, and the ranks fit on this host's cpus.
    let tcp_spins = busy_poll.is_none()
        && !shm_waits
        && !in_process
        && size as usize <= gloo_shm::placement::online_cpus()
        && gloo_shm::placement::bound_to_one_cpu();
    let waiting = |w: Duration| {
        if w.is_zero() {
            "blocking".to_string()
        } else if shm_waits && busy_poll.is_none() {
            // As gloo-shm picks them: the oversubscribed waits when this host's ranks (all of
            // them, as far as this rank can tell before connecting) outnumber its CPUs.
            if size as usize > gloo_shm::placement::online_cpus() {
                format!(
                    "shm: no spin, yield {} us, then sleep (ranks outnumber cpus)",
                    gloo_shm::OVERSUBSCRIBED_YIELD.as_micros()
                )
            } else if !gloo_shm::placement::bound_to_one_cpu() {
                format!(
                    "shm: no spin, yield {} us, then sleep (not bound to a cpu)",
                    (gloo_shm::DEFAULT_SPIN + gloo_shm::DEFAULT_YIELD).as_micros()
                )
            } else {
                format!(
                    "shm: spin {} us, yield {} us, then sleep",
                    gloo_shm::DEFAULT_SPIN.as_micros(),
                    gloo_shm::DEFAULT_YIELD.as_micros()
                )
            }
        } else if tcp_spins {
            format!("busy-poll {} us spinning (bound to a cpu), then sleep", w.as_micros())
        } else {
            format!("busy-poll {} us, then sleep", w.as_micros())
        }
    };
    let tls =
        if cli.launch.transport == TransportKind::Tls { crate::tls::from_env()? } else { None };
    let net = NetConfig {
        kind: cli.launch.transport,
        job: "gloo-bench".into(),
        ip,
        busy_poll,
        tcp_spins,
        tls,
    };
    let mut report = Report {
        tool: format!("gloo-bench {}", env!("CARGO_PKG_VERSION")),
        mode: String::new(),
        command: report::command_line(),
        host: report::host_name(),
        cpus: gloo_shm::placement::online_cpus(),
        transport: cli.launch.transport.name().into(),
        waiting: if in_process { "in-process threads".into() } else { waiting(spin_window) },
        placement: if in_process { "threads of one process".into() } else { runs_on(rank) },
        ranks: size,
        store: store_name.to_string(),
        collective: None,
        limits: lim,
        rows: Vec::new(),
        summary: Vec::new(),
        figures: Vec::new(),
        overlap: Vec::new(),
        notes: Vec::new(),
    };
    match &cli.command {
        Some(Command::Limits) => report.mode = "limits".into(),
        Some(Command::Transport(t)) => {
            report.mode = "transport".into();
            // Under tls, a tcp mesh too, for the figures of both in the same run; each mesh's
            // connection is timed after the others have reached the same point.
            let tcp_twin = if cli.launch.transport == TransportKind::Tls {
                let tcp_net = NetConfig {
                    kind: TransportKind::Tcp,
                    job: "gloo-bench-tcp".into(),
                    tls: None,
                    ..net.clone()
                };
                Some(connect(&tcp_net)?.comm)
            } else {
                None
            };
            let timed = |connect: &mut Connect<'_>, cfg: &NetConfig| -> Result<(Connected, f64)> {
                if let Some(t) = &tcp_twin {
                    ctl::barrier(t.as_ref(), deadline)?;
                }
                let t0 = Instant::now();
                let c = connect(cfg)?;
                Ok((c, t0.elapsed().as_secs_f64()))
            };
            let (Connected { comm, links }, tls_secs) = timed(connect, &net)?;
            report.notes.push(format!("links of rank {rank}: {links}"));
            let tcp_secs = match &tcp_twin {
                Some(_) => {
                    let again = NetConfig {
                        kind: TransportKind::Tcp,
                        job: "gloo-bench-tcp-timed".into(),
                        tls: None,
                        ..net.clone()
                    };
                    timed(connect, &again)?.1
                }
                None => 0.0,
            };
            let mut waitings = vec![Waiting {
                comm: comm.as_ref(),
                label: report.waiting.clone(),
                spin: !spin_window.is_zero() && !in_process,
            }];
            // A second mesh that sleeps at once, so the ping-pong is compared with the plain
            // socket under both waiting strategies in the same run.
            let blocking_net = NetConfig {
                job: "gloo-bench-blocking".into(),
                busy_poll: Some(Duration::ZERO),
                tcp_spins: false,
                ..net
            };
            let blocking = if spin_window.is_zero() || in_process {
                None
            } else {
                Some(connect(&blocking_net)?.comm)
            };
            if let Some(b) = &blocking {
                waitings.push(Waiting {
                    comm: b.as_ref(),
                    label: waiting(Duration::ZERO),
                    spin: false,
                });
            }
            let mut t = t.clone();
            if in_process {
                // Both ranks share one process, so its peak RSS holds both buffers: the
                // measurement only means something with ranks as processes.
                t.memory_bytes = 0;
                report.notes.push("memory: not measured (ranks are threads of one process)".into());
            }
            report.figures =
                p2p::run(&waitings, &t, &report.limits, cli.launch.limit_secs, deadline)?;
            if let Some(tcp) = &tcp_twin {
                let times = versus::ConnectTimes { tcp: tcp_secs, tls: tls_secs };
                let more = versus::run(
                    tcp.as_ref(),
                    comm.as_ref(),
                    &times,
                    &t,
                    cli.launch.limit_secs,
                    deadline,
                )?;
                report.figures.extend(more);
                report.notes.push(
                    "tls vs tcp: in the figures marked (plain: tcp), the plain column is tcp's \
                     figure between the same processes in this run"
                        .into(),
                );
            }
        }
        None if cli.sweep.overlap => {
            report.mode = "overlap".into();
            report.collective = Some("allreduce".into());
            report.notes.push(
                "overlap: per size, comm = the blocking allreduce (f32 sum); compute = a loop \
                 calibrated on rank 0 to last about as long; serial = compute then the blocking \
                 allreduce; overlap = start_allreduce, compute, wait. Each time is the p50 of \
                 the slowest rank per iteration; ratios are over max(compute, comm) (perfect \
                 overlap: 1; goal: at most 1.15); hidden_pct = (compute + comm - overlap) / \
                 min(compute, comm)"
                    .into(),
            );
            if cli.sweep.overlap_sleep {
                report.notes.push(
                    "overlap: --overlap-sleep: the compute step sleeps (units = us), leaving \
                     the cpu to the allreduce"
                        .into(),
                );
            } else if !in_process && cli.launch.bind == crate::cli::Bind::Core {
                report.notes.push(
                    "overlap: each rank is bound to one cpu (--bind core), which its background \
                     thread shares with the compute loop; --bind none lets them run apart"
                        .into(),
                );
            }
            let Connected { comm, links } = connect(&net)?;
            report.notes.push(format!("links of rank {rank}: {links}"));
            let s = &cli.sweep;
            let sizes = sweep::sizes(s.min_bytes, s.max_bytes, s.step_factor);
            report.overlap = overlap::run(
                comm,
                &sizes,
                s.iters,
                s.time_per_size,
                s.checking(),
                s.overlap_sleep,
                deadline,
            )?;
        }
        None => {
            report.mode = "sweep".into();
            let which = cli.sweep.collective;
            let spin = !spin_window.is_zero() && !in_process;
            report.collective = Some(match which {
                Which::One(c) => c.name().into(),
                Which::All => "all".into(),
            });
            report.notes = sweep::notes(&which.each(size), size, spin);
            let Connected { comm, links } = connect(&net)?;
            report.notes.push(format!("links of rank {rank}: {links}"));
            report.rows = sweep::run(comm.as_ref(), &cli.sweep, &report.limits, spin, deadline)?;
            if which == Which::All {
                report.summary = Summary::of(&report.rows);
            }
        }
    }
    Ok(Outcome { report: (rank == 0).then_some(report) })
}
