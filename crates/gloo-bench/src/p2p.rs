//! The transport benchmark (foundation issue §6), between ranks 0 and 1 of a connected group:
//! 1-byte ping-pong, a one-way stream and a full-duplex exchange of large messages, each beside
//! the plain-socket figure measured in the same run, and the peak memory of receiving one large
//! message into a posted buffer. Other ranks only wait for the end.

use std::time::{Duration, Instant};

use gloo_transport::{Communicator, Op, Rank, Slot};

use crate::cli::TransportArgs;
use crate::ctl;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::report::{Figure, human_bytes};
use crate::stats::Latency;

/// Data slots of the benchmark (tags of their own, beside the control tag).
const PING: Slot = Slot::new(0xFFFF_FF02, 0);
const STREAM: Slot = Slot::new(0xFFFF_FF03, 0);
const MEMORY: Slot = Slot::new(0xFFFF_FF04, 0);
/// Rank 0 and 1's private control messages.
const PAIR: Slot = Slot::new(0xFFFF_FF05, 0);

const QUIT: u8 = b'Q';

/// A communicator and the waiting strategy it was built with.
pub(crate) struct Waiting<'a> {
    /// The communicator.
    pub(crate) comm: &'a dyn Communicator,
    /// How it waits, for the output (`busy-poll 50 us`, `blocking`).
    pub(crate) label: String,
    /// Whether it spins before sleeping (then the plain busy-poll ping-pong is its peer).
    pub(crate) spin: bool,
}

/// Runs the transport benchmark on every rank; rank 0 returns the figures. Ping-pong runs
/// over every communicator of `waitings`; the streams and the memory test over the first.
pub(crate) fn run(
    waitings: &[Waiting<'_>],
    args: &TransportArgs,
    limits: &Limits,
    secs: f64,
    deadline: Instant,
) -> Result<Vec<Figure>> {
    let comm = waitings[0].comm;
    if comm.size() < 2 {
        return Err(Error::Invalid("the transport benchmark needs at least 2 ranks".into()));
    }
    let r = comm.rank().0;
    let mut figures = Vec::new();
    if r <= 1 {
        let peer = Rank(1 - r);
        if args.memory_bytes > 0 {
            progress(r, "memory: receiving one large message into a posted buffer");
            memory(comm, peer, args.memory_bytes, deadline, &mut figures)?;
        }
        for w in waitings {
            progress(r, &format!("1-byte ping-pong ({})", w.label));
            let Some(lat) = pingpong(w.comm, peer, secs, deadline)? else { continue };
            let (plain, plain_name) = if w.spin {
                (limits.pingpong_spin_us, "busy-poll")
            } else {
                (limits.pingpong_blocking_us, "blocking")
            };
            let plain = plain.map(|p| p.p50);
            figures.push(Figure {
                name: format!("ping-pong 1 B RTT p50, {} (plain: {plain_name})", w.label),
                value: lat.p50,
                unit: "us".into(),
                plain,
                ratio: plain.map(|p| lat.p50 / p),
                goal: "<= 1.3".into(),
            });
        }
        progress(r, &format!("one-way stream of {} messages", human_bytes(args.stream_bytes)));
        let oneway = oneway(comm, peer, args.stream_bytes, secs, deadline)?;
        progress(
            r,
            &format!("full-duplex exchange of {} messages", human_bytes(args.stream_bytes)),
        );
        let duplex = duplex(comm, peer, args.stream_bytes, secs, oneway, deadline)?;
        if r == 0 {
            let same = limits.stream_message_bytes == args.stream_bytes;
            let tag = if same { String::new() } else { " (plain used other sizes)".into() };
            for (name, v, plain) in [
                ("one-way stream", oneway, limits.stream_oneway_gbps),
                ("full-duplex exchange, per direction", duplex, limits.stream_duplex_gbps),
            ] {
                figures.push(Figure {
                    name: format!("{name}, {} messages{tag}", human_bytes(args.stream_bytes)),
                    value: v.unwrap_or(0.0),
                    unit: "GB/s".into(),
                    plain,
                    ratio: plain.zip(v).map(|(p, v)| v / p),
                    goal: ">= 0.9".into(),
                });
            }
        }
    }
    ctl::barrier(comm, deadline)?;
    Ok(if r == 0 { figures } else { Vec::new() })
}

fn progress(rank: u32, what: &str) {
    if rank == 0 {
        say!("gloo-bench: transport: {what}");
    }
}

fn terr(doing: &str) -> impl FnOnce(gloo_transport::Error) -> Error + '_ {
    move |e| Error::transport(doing, e)
}

/// Sends `v` to the other rank of the pair.
fn tell(comm: &dyn Communicator, peer: Rank, v: &[u8], deadline: Instant) -> Result<()> {
    comm.send(peer, PAIR, v, deadline).map_err(terr("sending a control message"))
}

/// Receives exactly `N` bytes from the other rank of the pair.
fn hear<const N: usize>(comm: &dyn Communicator, peer: Rank, deadline: Instant) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    let n =
        comm.recv(peer, PAIR, &mut b, deadline).map_err(terr("waiting for a control message"))?;
    if n != N {
        return Err(Error::Peer {
            rank: peer.0,
            detail: format!("sent {n} control bytes, not {N}"),
        });
    }
    Ok(b)
}

/// Peak and current resident memory of this process, bytes, from /proc/self/status.
fn memory_status() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Receiving a `bytes` message into a posted buffer must not allocate a second copy: each
/// rank's peak RSS grows by about one buffer, never two.
fn memory(
    comm: &dyn Communicator,
    peer: Rank,
    bytes: u64,
    deadline: Instant,
    figures: &mut Vec<Figure>,
) -> Result<()> {
    // Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS, so earlier
    // measurements' buffers do not count. Where that is refused the peak still bounds the
    // growth from above, so the test can only look worse, never better.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = memory_status();
    let len = usize::try_from(bytes).expect("message sizes are bounded by the command line");
    let receiver = comm.rank() == Rank(1);
    {
        // Every page is written before the transfer so the buffer itself is resident and
        // only what the transport adds shows above it.
        let mut buf = vec![if receiver { 0u8 } else { 7u8 }; len];
        if receiver {
            buf.fill(1);
        }
        tell(comm, peer, b"r", deadline)?;
        hear::<1>(comm, peer, deadline)?;
        if receiver {
            let n = comm
                .recv(peer, MEMORY, &mut buf, deadline)
                .map_err(terr("receiving the memory test's message"))?;
            if n != len || buf[len - 1] != 7 || buf[0] != 7 {
                return Err(Error::Peer {
                    rank: peer.0,
                    detail: "the memory test's message arrived wrong".into(),
                });
            }
        } else {
            comm.send(peer, MEMORY, &buf, deadline)
                .map_err(terr("sending the memory test's message"))?;
        }
    }
    let after = memory_status();
    let growth = match (before, after) {
        (Some((_, rss0)), Some((hwm1, _))) => hwm1.saturating_sub(rss0),
        _ => 0,
    };
    // Rank 1 tells rank 0 its growth so rank 0 reports both.
    if receiver {
        tell(comm, peer, &growth.to_le_bytes(), deadline)?;
    } else {
        let theirs = u64::from_le_bytes(hear::<8>(comm, peer, deadline)?);
        for (who, g) in [("rank 0 (sender)", growth), ("rank 1 (receiver)", theirs)] {
            figures.push(Figure {
                name: format!("peak RSS growth moving {}, {who}, in buffers", human_bytes(bytes)),
                value: g as f64 / bytes as f64,
                unit: "x buffer".into(),
                plain: Some(1.0),
                ratio: Some(g as f64 / bytes as f64),
                goal: "< 1.2 (a second copy would be >= 2)".into(),
            });
        }
    }
    Ok(())
}

/// 1-byte ping-pong for `secs` after 1,000 warm-up round trips; rank 0 gets the latency.
pub(crate) fn pingpong(
    comm: &dyn Communicator,
    peer: Rank,
    secs: f64,
    deadline: Instant,
) -> Result<Option<Latency>> {
    let mut b = [0u8; 1];
    if comm.rank() == Rank(1) {
        loop {
            comm.recv(peer, PING, &mut b, deadline).map_err(terr("waiting for a ping"))?;
            if b[0] == QUIT {
                return Ok(None);
            }
            comm.send(peer, PING, &b, deadline).map_err(terr("answering a ping"))?;
        }
    }
    let round = |b: &mut [u8; 1]| -> Result<()> {
        comm.send(peer, PING, b, deadline).map_err(terr("sending a ping"))?;
        comm.recv(peer, PING, b, deadline).map_err(terr("waiting for a pong"))?;
        Ok(())
    };
    for _ in 0..1000 {
        b[0] = b'x';
        round(&mut b)?;
    }
    let budget = Duration::from_secs_f64(secs);
    let mut rtt = Vec::with_capacity(100_000);
    let start = Instant::now();
    while rtt.len() < 1_000_000 && start.elapsed() < budget {
        b[0] = b'x';
        let t0 = Instant::now();
        round(&mut b)?;
        rtt.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    comm.send(peer, PING, &[QUIT], deadline).map_err(terr("ending the ping-pong"))?;
    Ok(Some(Latency::from_samples(&mut rtt)))
}

/// Rank 0 sends `bytes`-byte messages for `secs`, then an empty one; rank 1 receives them
/// into one posted buffer and measures from the end of the first message to the end of the
/// last. Rank 0 returns rank 1's GB/s.
pub(crate) fn oneway(
    comm: &dyn Communicator,
    peer: Rank,
    bytes: u64,
    secs: f64,
    deadline: Instant,
) -> Result<Option<f64>> {
    let len = usize::try_from(bytes).expect("message sizes are bounded by the command line");
    if comm.rank() == Rank(0) {
        let buf = vec![3u8; len];
        hear::<1>(comm, peer, deadline)?;
        let budget = Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut sent = 0;
        while sent < 2 || start.elapsed() < budget {
            comm.send(peer, STREAM, &buf, deadline).map_err(terr("streaming"))?;
            sent += 1;
        }
        comm.send(peer, STREAM, &[], deadline).map_err(terr("ending the stream"))?;
        let rate = f64::from_le_bytes(hear::<8>(comm, peer, deadline)?);
        Ok(Some(rate))
    } else {
        let mut buf = vec![0u8; len];
        tell(comm, peer, b"r", deadline)?;
        let mut first: Option<Instant> = None;
        let mut total = 0u64;
        loop {
            let n = comm
                .recv(peer, STREAM, &mut buf, deadline)
                .map_err(terr("receiving the stream"))?;
            if n == 0 {
                break;
            }
            if first.is_none() {
                first = Some(Instant::now());
            } else {
                total += n as u64;
            }
        }
        let dt = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let rate = if dt > 0.0 { total as f64 / dt / 1e9 } else { 0.0 };
        tell(comm, peer, &rate.to_le_bytes(), deadline)?;
        Ok(None)
    }
}

/// Both ranks send and receive a `bytes` message at once, as many times as the one-way rate
/// says fits in `secs` (at least 3); each measures from the end of the first exchange; rank 0
/// returns the mean of both ranks' receive rates.
pub(crate) fn duplex(
    comm: &dyn Communicator,
    peer: Rank,
    bytes: u64,
    secs: f64,
    oneway: Option<f64>,
    deadline: Instant,
) -> Result<Option<f64>> {
    let len = usize::try_from(bytes).expect("message sizes are bounded by the command line");
    let rank0 = comm.rank() == Rank(0);
    let count = if rank0 {
        let per = bytes as f64 / (oneway.unwrap_or(1.0).max(0.01) * 1e9);
        let count = ((secs / per) as u64).clamp(3, 100_000);
        tell(comm, peer, &count.to_le_bytes(), deadline)?;
        count
    } else {
        let c = u64::from_le_bytes(hear::<8>(comm, peer, deadline)?);
        if !(1..=100_000).contains(&c) {
            return Err(Error::Peer { rank: peer.0, detail: format!("asked for {c} exchanges") });
        }
        c
    };
    let out = vec![5u8; len];
    let mut inb = vec![0u8; len];
    let mut first = None;
    for _ in 0..count {
        let mut ops = [Op::send(peer, STREAM, &out), Op::recv(peer, STREAM, &mut inb)];
        comm.run(&mut ops, deadline).map_err(terr("exchanging"))?;
        first.get_or_insert_with(Instant::now);
    }
    let dt = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let mine = if dt > 0.0 { (count - 1) as f64 * bytes as f64 / dt / 1e9 } else { 0.0 };
    if rank0 {
        let theirs = f64::from_le_bytes(hear::<8>(comm, peer, deadline)?);
        Ok(Some((mine + theirs) / 2.0))
    } else {
        tell(comm, peer, &mine.to_le_bytes(), deadline)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_benchmark_runs_over_the_loopback_transport() {
        use gloo_transport::loopback::{LoopbackConfig, group};
        let args = TransportArgs { stream_bytes: 64 << 10, memory_bytes: 1 << 20 };
        let limits = Limits {
            pingpong_blocking_us: Some(Latency { n: 1, min: 1.0, p50: 1.0, p99: 1.0, mean: 1.0 }),
            pingpong_spin_us: Some(Latency { n: 1, min: 1.0, p50: 1.0, p99: 1.0, mean: 1.0 }),
            stream_oneway_gbps: Some(1.0),
            stream_duplex_gbps: Some(1.0),
            stream_message_bytes: 64 << 10,
            ..Limits::default()
        };
        let deadline = gloo_testing::deadline(60);
        let out = gloo_testing::run_ranks(group(3, LoopbackConfig::havoc(3)), |c| {
            let w = [
                Waiting { comm: &c, label: "loopback".into(), spin: false },
                Waiting { comm: &c, label: "loopback again".into(), spin: true },
            ];
            run(&w, &args, &limits, 0.05, deadline)
        });
        let mut out = out.into_iter();
        let figures = out.next().unwrap().unwrap();
        for other in out {
            assert!(other.unwrap().is_empty(), "only rank 0 reports");
        }
        let names: Vec<&str> = figures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(figures.len(), 6, "{names:?}");
        for want in ["rank 0 (sender)", "rank 1 (receiver)", "ping-pong", "one-way", "full-duplex"]
        {
            assert!(names.iter().any(|n| n.contains(want)), "{want} missing from {names:?}");
        }
        for f in &figures {
            assert!(f.value.is_finite() && f.value >= 0.0, "{f:?}");
            assert!(f.ratio.is_some(), "{f:?}");
        }
    }
}
