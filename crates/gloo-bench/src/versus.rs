//! `transport --transport tls`: TLS beside TCP between the same processes in the same run
//! (issue 10 §4). Each measure runs on a tcp mesh, then on the tls mesh, back to back, so
//! both see the same machine: 1-byte ping-pong, the one-way and full-duplex streams, a 4 B
//! f32 allreduce and one as large as the streams' messages (64 MiB by default), and the time
//! to connect the full mesh; beside them the
//! cipher's own speed here (AES-128-GCM sealing 16 KiB records with ring, one core), which
//! bounds what TLS can move. The `plain` column of these figures holds tcp's figure.

use std::time::Instant;

use gloo_algorithms::{Group, Options, ReduceOp};
use gloo_transport::{Communicator, Rank};

use crate::cli::TransportArgs;
use crate::ctl;
use crate::error::{Error, Result};
use crate::p2p;
use crate::report::{Figure, human_bytes};
use crate::stats::Latency;

/// What each rank measured of the two meshes' connection (seconds).
pub(crate) struct ConnectTimes {
    /// Connecting the tcp mesh.
    pub(crate) tcp: f64,
    /// Connecting the tls mesh.
    pub(crate) tls: f64,
}

fn figure(name: String, tls: f64, tcp: f64, unit: &str, goal: &str) -> Figure {
    Figure {
        name,
        value: tls,
        unit: unit.into(),
        plain: Some(tcp),
        ratio: (tcp > 0.0).then(|| tls / tcp),
        goal: goal.into(),
    }
}

/// The p50 time of `iters` f32 sum allreduces of `elements` elements, in µs (after a
/// warm-up), on every rank (rank 0's is reported). The deadline of each call is the
/// group's default.
fn allreduce_p50(comm: &dyn Communicator, elements: usize, iters: u32) -> Result<f64> {
    let group = Group::new(comm)
        .map_err(|e| Error::Collective { doing: "making a group".into(), source: e })?;
    let mut buf = vec![1.0f32; elements];
    let opts = Options::default();
    let run = |buf: &mut [f32]| {
        group
            .allreduce(buf, ReduceOp::Sum, &opts)
            .map_err(|e| Error::Collective { doing: "allreduce".into(), source: e })
    };
    for _ in 0..(iters / 10).max(2) {
        run(&mut buf)?;
    }
    let mut us = Vec::with_capacity(iters as usize);
    for _ in 0..iters {
        buf.fill(1.0);
        let t0 = Instant::now();
        run(&mut buf)?;
        us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Latency::from_samples(&mut us).p50)
}

/// Every rank runs this with its two communicators (same ranks); rank 0 returns the figures.
pub(crate) fn run(
    tcp: &dyn Communicator,
    tls: &dyn Communicator,
    connect: &ConnectTimes,
    args: &TransportArgs,
    secs: f64,
    deadline: Instant,
) -> Result<Vec<Figure>> {
    let r = tls.rank().0;
    let n = tls.size();
    let mut figures = Vec::new();
    let say = |what: &str| {
        if r == 0 {
            say!("gloo-bench: tls vs tcp: {what}");
        }
    };
    if r <= 1 {
        let peer = Rank(1 - r);
        say("1-byte ping-pong");
        let a = p2p::pingpong(tcp, peer, secs, deadline)?;
        let b = p2p::pingpong(tls, peer, secs, deadline)?;
        if let (Some(a), Some(b)) = (a, b) {
            figures.push(figure(
                "ping-pong 1 B RTT p50, tls (plain: tcp, same run)".into(),
                b.p50,
                a.p50,
                "us",
                "<= 1.3",
            ));
        }
        let len = human_bytes(args.stream_bytes);
        say(&format!("one-way stream of {len} messages"));
        let a = p2p::oneway(tcp, peer, args.stream_bytes, secs, deadline)?;
        let b = p2p::oneway(tls, peer, args.stream_bytes, secs, deadline)?;
        say(&format!("full-duplex exchange of {len} messages"));
        let c = p2p::duplex(tcp, peer, args.stream_bytes, secs, a, deadline)?;
        let d = p2p::duplex(tls, peer, args.stream_bytes, secs, b, deadline)?;
        if let (Some(a), Some(b), Some(c), Some(d)) = (a, b, c, d) {
            figures.push(figure(
                format!("one-way stream, {len} messages, tls (plain: tcp, same run)"),
                b,
                a,
                "GB/s",
                ">= 0.6",
            ));
            figures.push(figure(
                format!("full-duplex exchange per direction, {len} messages, tls (plain: tcp)"),
                d,
                c,
                "GB/s",
                ">= 0.6",
            ));
        }
    }
    ctl::barrier(tls, deadline)?;
    say("allreduce, f32 sum, 4 B");
    let small_tcp = allreduce_p50(tcp, 1, 3000)?;
    let small_tls = allreduce_p50(tls, 1, 3000)?;
    // The large allreduce is as large as the streams' messages (64 MiB by default).
    let big = usize::try_from(args.stream_bytes / 4).unwrap_or(usize::MAX).max(1);
    say(&format!("allreduce, f32 sum, {}", human_bytes(big as u64 * 4)));
    let big_tcp = allreduce_p50(tcp, big, 5)?;
    let big_tls = allreduce_p50(tls, big, 5)?;
    let all = ctl::gather_f64s(tls, &[connect.tcp, connect.tls], deadline)?;
    if r == 0 {
        figures.push(figure(
            "allreduce 4 B f32 sum p50, tls (plain: tcp, same run)".into(),
            small_tls,
            small_tcp,
            "us",
            "<= 1.3",
        ));
        // busbw = bytes / p50 × 2(n-1)/n (nccl-tests).
        let factor = 2.0 * f64::from(n - 1) / f64::from(n);
        let busbw = |us: f64| (big as f64 * 4.0) / (us * 1e-6) * factor / 1e9;
        figures.push(figure(
            format!(
                "allreduce {} f32 sum busbw, tls (plain: tcp, same run)",
                human_bytes(big as u64 * 4)
            ),
            busbw(big_tls),
            busbw(big_tcp),
            "GB/s",
            ">= 0.6",
        ));
        if let Some(all) = all {
            // The mesh is connected when its last rank is.
            let slowest = |i: usize| all.iter().map(|v| v[i]).fold(0.0f64, f64::max) * 1e3;
            figures.push(figure(
                format!("full-mesh connect, {n} ranks, slowest rank, tls (plain: tcp)"),
                slowest(1),
                slowest(0),
                "ms",
                "-",
            ));
        }
        say("AES-128-GCM's own speed (ring, one core)");
        let cipher = crate::tls::cipher_gbps(secs.min(1.0));
        figures.push(Figure {
            name: "AES-128-GCM seal of 16 KiB records (ring, one core): the bound of tls".into(),
            value: cipher,
            unit: "GB/s".into(),
            plain: None,
            ratio: None,
            goal: "-".into(),
        });
    }
    Ok(figures)
}
