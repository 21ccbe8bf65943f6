//! The shared-memory limits: what gloo-shm's bare channel does between ranks 0 and 1 when
//! they share a host, measured in the same run as the plain-socket limits, so that the shm
//! transport's figures can be read against the channel they run on (the engine's own cost is
//! the difference).
//!
//! The same method as the plain sockets ([`crate::limits`]): a 1-byte ping-pong with both ends
//! busy-polling (1,000 warm-up round trips, then round trips for the set time, at most
//! 1,000,000), and a one-way stream of 4 MiB writes (or the library's message size, when
//! smaller) for twice the set time, read into one buffer of that size, its rate taken from the
//! first byte to the end. Both go through the channel's rings (one copy in, one copy out),
//! without the single-copy lend.

use std::time::{Duration, Instant};

use gloo_shm::auto::HostId;
use gloo_shm::{Channel, ShmConfig, ShmListener};
use gloo_transport::Rank;

use crate::error::{Error, Result};
use crate::limits::{LimitConfig, Limits, STREAM_CHUNK, rate_from_peer, time_round_trips};
use crate::stats::Latency;
use crate::store::Kv;

const HOST_KEY: &str = "gloo-bench.limits.shm.host";
const ADDR_KEY: &str = "gloo-bench.limits.shm.addr";
const RATE_KEY: &str = "gloo-bench.limits.shm.rate";
/// The job name both ends give their shm config (the store's keys are already this run's).
const JOB: &str = "gloo-bench-limits";
const PING: u8 = b'x';
const QUIT: u8 = b'Q';
/// How many spins between two looks at the clock for the deadline.
const SPINS_PER_LOOK: u32 = 1024;

/// Ranks 0 and 1 measure the shm limits into `out` (rank 0's copy gets the figures) when
/// they are on one host (by gloo-shm's host identity, which `GLOO_HOST_ID` overrides); other
/// ranks, and ranks on two hosts, return at once.
pub(crate) fn measure(
    rank: u32,
    kv: &dyn Kv,
    cfg: LimitConfig,
    deadline: Instant,
    out: &mut Limits,
) -> Result<()> {
    if rank > 1 {
        return Ok(());
    }
    let host = HostId::from_env();
    kv.set(&format!("{HOST_KEY}.{rank}"), host.as_str().as_bytes(), deadline)?;
    let theirs = kv.get(&format!("{HOST_KEY}.{}", 1 - rank), deadline)?;
    if theirs != host.as_str().as_bytes() {
        return Ok(());
    }
    let chunk = usize::try_from(cfg.message.min(STREAM_CHUNK))
        .expect("at most STREAM_CHUNK, far below usize::MAX");
    let secs = 2.0 * cfg.secs;
    if rank == 0 {
        // The lower rank accepts (it creates the segment), as in the shm transport.
        let listener = ShmListener::bind(ShmConfig::new(JOB, Rank(0), 2))
            .map_err(|e| shm("binding a shm listener for the limits", e))?;
        kv.set(ADDR_KEY, &listener.address_bytes(), deadline)?;
        let mut ch =
            listener.accept(deadline).map_err(|e| shm("accepting rank 1's shm channel", e))?;
        out.shm_pingpong_us = Some(pingpong(&mut ch, cfg.secs, deadline)?);
        stream_out(&mut ch, chunk, secs, deadline)?;
        let rate = kv.get(RATE_KEY, deadline)?;
        let rate = <[u8; 8]>::try_from(rate.as_slice()).map_err(|_| Error::Peer {
            rank: 1,
            detail: format!("reported a shm stream rate of {} bytes, not 8", rate.len()),
        })?;
        out.shm_stream_gbps = Some(rate_from_peer(rate)?);
    } else {
        let listener = ShmListener::bind(ShmConfig::new(JOB, Rank(1), 2))
            .map_err(|e| shm("binding a shm listener for the limits", e))?;
        let addr = kv.get(ADDR_KEY, deadline)?;
        let mut ch = listener
            .connect(Rank(0), &addr, deadline)
            .map_err(|e| shm("connecting a shm channel to rank 0", e))?;
        echo(&mut ch, deadline)?;
        let rate = stream_in(&mut ch, chunk, deadline)?;
        kv.set(RATE_KEY, &rate.to_le_bytes(), deadline)?;
    }
    Ok(())
}

fn shm(doing: &str, source: gloo_shm::Error) -> Error {
    Error::Shm { doing: doing.to_string(), source }
}

fn timeout(what: &str, since: Instant) -> Error {
    Error::Timeout { what: what.to_string(), waited: since.elapsed().as_secs_f64() }
}

/// Write one byte, spinning while the ring is full.
fn put(ch: &mut Channel, b: u8, deadline: Instant) -> Result<()> {
    let since = Instant::now();
    let mut spins = 0u32;
    while ch.write(&[&[b]]).map_err(|e| shm("writing to the shm channel", e))? == 0 {
        spins += 1;
        if spins.is_multiple_of(SPINS_PER_LOOK) && Instant::now() >= deadline {
            return Err(timeout("room in the shm channel", since));
        }
        std::hint::spin_loop();
    }
    Ok(())
}

/// Read one byte, busy-polling.
fn take(ch: &mut Channel, deadline: Instant) -> Result<u8> {
    let since = Instant::now();
    let mut b = [0u8; 1];
    let mut spins = 0u32;
    while ch.read(&mut b).map_err(|e| shm("reading the shm channel", e))? == 0 {
        spins += 1;
        if spins.is_multiple_of(SPINS_PER_LOOK) && Instant::now() >= deadline {
            return Err(timeout("a byte from the shm channel", since));
        }
        std::hint::spin_loop();
    }
    Ok(b[0])
}

fn pingpong(ch: &mut Channel, secs: f64, deadline: Instant) -> Result<Latency> {
    let lat = time_round_trips(secs, || {
        put(ch, PING, deadline)?;
        take(ch, deadline).map(drop)
    })?;
    put(ch, QUIT, deadline)?;
    Ok(lat)
}

fn echo(ch: &mut Channel, deadline: Instant) -> Result<()> {
    loop {
        let b = take(ch, deadline)?;
        if b == QUIT {
            return Ok(());
        }
        put(ch, b, deadline)?;
    }
}

/// Write `chunk`-byte buffers for `secs`, then close the channel (the reader's end of
/// stream).
fn stream_out(ch: &mut Channel, chunk: usize, secs: f64, deadline: Instant) -> Result<()> {
    let buf = vec![1u8; chunk];
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut spins = 0u32;
    while start.elapsed() < budget {
        let mut off = 0;
        while off < buf.len() {
            let n = ch.write(&[&buf[off..]]).map_err(|e| shm("streaming to rank 1", e))?;
            if n == 0 {
                spins += 1;
                if spins.is_multiple_of(SPINS_PER_LOOK) && Instant::now() >= deadline {
                    return Err(timeout("room in the shm channel", start));
                }
                std::hint::spin_loop();
            }
            off += n;
        }
    }
    ch.close();
    Ok(())
}

/// Read into one `chunk`-byte buffer until rank 0 closes; GB/s from the first byte.
fn stream_in(ch: &mut Channel, chunk: usize, deadline: Instant) -> Result<f64> {
    let mut buf = vec![0u8; chunk];
    let mut total = 0u64;
    let mut t0 = None;
    let since = Instant::now();
    let mut spins = 0u32;
    loop {
        match ch.read(&mut buf) {
            Ok(0) => {
                spins += 1;
                if spins.is_multiple_of(SPINS_PER_LOOK) && Instant::now() >= deadline {
                    return Err(timeout("the end of rank 0's shm stream", since));
                }
                std::hint::spin_loop();
            }
            Ok(n) => {
                t0.get_or_insert_with(Instant::now);
                total += n as u64;
            }
            Err(gloo_shm::Error::Closed { .. }) => break,
            Err(e) => return Err(shm("reading rank 0's shm stream", e)),
        }
    }
    let dt = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(if dt > 0.0 { total as f64 / dt / 1e9 } else { 0.0 })
}
