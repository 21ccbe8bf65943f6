//! One rank of a run: meet the others through the store, measure the limits, connect the
//! transport, run the chosen mode, and (rank 0) report.

use std::time::{Duration, Instant};

use crate::cli::{Cli, Command, StoreUrl};
use crate::error::{Error, Result};
use crate::limits::{self, LimitConfig, Limits};
use crate::net::NetConfig;
use crate::p2p::Waiting;
use crate::report::{self, Report};
use crate::{net, p2p, store, sweep};

/// What a rank ended with.
pub(crate) struct Outcome {
    /// The report (rank 0 only).
    pub(crate) report: Option<Report>,
}

/// Runs this process as rank `rank` of `size`.
pub(crate) fn run(cli: &Cli, rank: u32, size: u32, url: &StoreUrl) -> Result<Outcome> {
    let deadline = Instant::now() + Duration::from_secs_f64(cli.launch.timeout);
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
    let mut kv = store::open(url, rank, deadline)?;
    kv.join(size, deadline)?;
    let host_port = store::host_port(url);
    let host_port = host_port.as_deref();
    let message = match &cli.command {
        Some(Command::Transport(t)) => t.stream_bytes,
        _ => cli.sweep.max_bytes.clamp(1 << 20, 64 << 20),
    };
    let lim = if cli.launch.no_limits {
        Limits::default()
    } else {
        if rank == 0 {
            say!("gloo-bench: measuring the limits (plain sockets between ranks 0 and 1, memcpy)");
        }
        let cfg = LimitConfig { secs: cli.launch.limit_secs, message };
        limits::measure(rank, size, &kv, limits::local_ip_towards(host_port), cfg, deadline)?
    };
    let ip = limits::local_ip_towards(host_port);
    let busy_poll = cli.launch.busy_poll_us.map(Duration::from_micros);
    let spin_window = busy_poll.unwrap_or(gloo_transport::tcp::DEFAULT_BUSY_POLL);
    let waiting = |w: Duration| {
        if w.is_zero() {
            "blocking".to_string()
        } else {
            format!("busy-poll {} us, then sleep", w.as_micros())
        }
    };
    let net = NetConfig { kind: cli.launch.transport, job: "gloo-bench".into(), ip, busy_poll };
    let mut report = Report {
        tool: format!("gloo-bench {}", env!("CARGO_PKG_VERSION")),
        mode: String::new(),
        host: report::host_name(),
        cpus: report::cpu_count(),
        transport: cli.launch.transport.name().into(),
        waiting: waiting(spin_window),
        ranks: size,
        store: url.to_string(),
        collective: None,
        limits: lim,
        rows: Vec::new(),
        figures: Vec::new(),
        notes: Vec::new(),
    };
    match &cli.command {
        Some(Command::Limits) => report.mode = "limits".into(),
        Some(Command::Transport(t)) => {
            report.mode = "transport".into();
            let comm = net::connect(&net, rank, size, &kv, deadline)?;
            let mut waitings = vec![Waiting {
                comm: comm.as_ref(),
                label: waiting(spin_window),
                spin: !spin_window.is_zero(),
            }];
            // A second mesh that sleeps at once, so the ping-pong is compared with the plain
            // socket under both waiting strategies in the same run.
            let blocking_net = NetConfig {
                job: "gloo-bench-blocking".into(),
                busy_poll: Some(Duration::ZERO),
                ..net
            };
            let blocking = if spin_window.is_zero() {
                None
            } else {
                Some(net::connect(&blocking_net, rank, size, &kv, deadline)?)
            };
            if let Some(b) = &blocking {
                waitings.push(Waiting {
                    comm: b.as_ref(),
                    label: waiting(Duration::ZERO),
                    spin: false,
                });
            }
            report.figures =
                p2p::run(&waitings, t, &report.limits, cli.launch.limit_secs, deadline)?;
        }
        None => {
            report.mode = "sweep".into();
            let c = cli.sweep.collective;
            let spin = !spin_window.is_zero();
            report.collective = Some(c.name().into());
            report.notes = sweep::notes(c, size, spin);
            let comm = net::connect(&net, rank, size, &kv, deadline)?;
            report.rows = sweep::run(comm.as_ref(), &cli.sweep, &report.limits, spin, deadline)?;
        }
    }
    Ok(Outcome { report: (rank == 0).then_some(report) })
}
