//! The machine's limits, measured in the same run between the same two processes (ranks 0 and
//! 1) with plain sockets, so every figure of the library can be read as a fraction of them.
//!
//! The measurements follow the usual C ping-pong and stream tools (as in NetPIPE): TCP_NODELAY on
//! both ends; 1-byte ping-pong with 1,000 warm-up round trips, then round trips for the set
//! time (at most 1,000,000), reporting min / p50 / p99; the busy-poll variant spins on
//! non-blocking reads on both ends without yielding, like the C tool's `recv(MSG_DONTWAIT)`
//! loop. The sockets keep the kernel's buffer sizes unless `--plain-sockbuf` asks otherwise:
//! a fixed SO_SNDBUF/SO_RCVBUF turns off Linux's autotuning and, on loopback, cuts the stream
//! rate to a third. The streams use the C tools' method so that the same machine gives the
//! same figure: writes of 4 MiB (or the library's message size, when smaller) from one
//! buffer, reads into one buffer of that size. One-way: rank 0 writes for the set time, then
//! shuts down; rank 1 reads until end of stream and reports bytes over the time from its
//! first byte to the end. Full duplex: both ranks do that at once, each with a writer thread;
//! the figure is the mean of both ranks' receive rates (per direction). The streams run for
//! twice the set time (2 s by default, the C tools' one-way duration), because a shorter
//! stream still weighs the window's ramp-up.
//! memcpy and f32 add are timed in rank 0 over 64 MiB buffers (best of at least 5 repetitions,
//! like `membw.c`).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::stats::Latency;
use crate::store::Kv;

/// What the limits were measured with and what they came to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Limits {
    /// Plain-socket 1-byte ping-pong round trip, blocking reads.
    pub(crate) pingpong_blocking_us: Option<Latency>,
    /// Plain-socket 1-byte ping-pong round trip, busy-polling reads.
    pub(crate) pingpong_spin_us: Option<Latency>,
    /// Plain-socket one-way stream, GB/s (1e9 B/s).
    pub(crate) stream_oneway_gbps: Option<f64>,
    /// Plain-socket full-duplex stream, GB/s per direction.
    pub(crate) stream_duplex_gbps: Option<f64>,
    /// Size of each write (and of the read buffer) of the streams, bytes.
    pub(crate) stream_message_bytes: u64,
    /// SO_SNDBUF/SO_RCVBUF asked for on the plain sockets (0: the kernel's defaults).
    #[serde(default)]
    pub(crate) socket_buffer_bytes: u64,
    /// memcpy of 64 MiB in rank 0, best GB/s.
    pub(crate) memcpy_gbps: Option<f64>,
    /// `a[i] += b[i]` over 64 MiB of f32 in rank 0, best GB/s (bytes of `a` per second).
    pub(crate) add_f32_gbps: Option<f64>,
    /// gloo-shm's bare channel between ranks 0 and 1 on one host: 1-byte ping-pong round
    /// trip, busy-polling (see [`crate::shm_limits`]).
    #[serde(default)]
    pub(crate) shm_pingpong_us: Option<Latency>,
    /// gloo-shm's bare channel: one-way stream through its rings, GB/s.
    #[serde(default)]
    pub(crate) shm_stream_gbps: Option<f64>,
}

/// How long each measurement runs and how big the stream messages are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitConfig {
    /// Seconds per measurement.
    pub(crate) secs: f64,
    /// The library's message size in bytes; the streams write chunks of this size, at most
    /// [`STREAM_CHUNK`].
    pub(crate) message: u64,
    /// SO_SNDBUF and SO_RCVBUF of the plain sockets; 0: the kernel's defaults (autotuning).
    pub(crate) sockbuf: u64,
}

/// The largest stream message rank 1 accepts from rank 0's request.
const MAX_MESSAGE: u64 = 1 << 30;

/// The C tools' write size (`CHUNK` in `tcp_pingpong.c` and `tcp_bidir.c`).
pub(crate) const STREAM_CHUNK: u64 = 4 << 20;

const KEY: &str = "gloo-bench.limits.addr";

/// Ranks 0 and 1 measure the plain-socket limits together (rank 0 gets the figures); rank 0
/// also measures memcpy. Other ranks return at once with nothing measured.
pub(crate) fn measure(
    rank: u32,
    size: u32,
    kv: &dyn Kv,
    local_ip: IpAddr,
    cfg: LimitConfig,
    deadline: Instant,
) -> Result<Limits> {
    let mut limits = Limits {
        stream_message_bytes: cfg.message.min(STREAM_CHUNK),
        socket_buffer_bytes: cfg.sockbuf,
        ..Limits::default()
    };
    match rank {
        0 => {
            if size >= 2 {
                let addr = kv.get(KEY, deadline)?;
                let addr = std::str::from_utf8(&addr)
                    .ok()
                    .and_then(|s| s.parse::<SocketAddr>().ok())
                    .ok_or_else(|| Error::Peer {
                        rank: 1,
                        detail: format!("published an unparsable address in store key {KEY}"),
                    })?;
                client(addr, cfg, deadline, &mut limits)?;
            }
            let (memcpy, add) = memory_bandwidth(cfg.secs / 2.0);
            limits.memcpy_gbps = Some(memcpy);
            limits.add_f32_gbps = Some(add);
        }
        1 => {
            let listener = listen(SocketAddr::new(local_ip, 0), cfg.sockbuf)
                .map_err(|e| Error::io(format!("binding a plain socket on {local_ip}"), e))?;
            let addr = listener.local_addr().map_err(|e| Error::io("reading its address", e))?;
            kv.set(KEY, addr.to_string().as_bytes(), deadline)?;
            server(&listener, deadline)?;
        }
        _ => {}
    }
    Ok(limits)
}

fn remaining(deadline: Instant, what: &str) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Error::Timeout { what: what.to_string(), waited: 0.0 })
    } else {
        Ok(left)
    }
}

fn configure(s: &TcpStream, deadline: Instant) -> Result<()> {
    let left = remaining(deadline, "the plain-socket limits")?;
    s.set_nodelay(true).map_err(|e| Error::io("setting TCP_NODELAY", e))?;
    s.set_read_timeout(Some(left)).map_err(|e| Error::io("setting a read timeout", e))?;
    s.set_write_timeout(Some(left)).map_err(|e| Error::io("setting a write timeout", e))
}

/// A socket with the configured buffer sizes (set before connect or listen, so that the
/// window scale negotiated at the handshake can use them).
fn socket(addr: SocketAddr, sockbuf: u64) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if sockbuf > 0 {
        let n = usize::try_from(sockbuf).unwrap_or(usize::MAX);
        s.set_send_buffer_size(n)?;
        s.set_recv_buffer_size(n)?;
    }
    Ok(s)
}

fn listen(addr: SocketAddr, sockbuf: u64) -> std::io::Result<TcpListener> {
    let s = socket(addr, sockbuf)?;
    s.bind(&addr.into())?;
    s.listen(16)?;
    Ok(s.into())
}

fn connect(addr: SocketAddr, sockbuf: u64, deadline: Instant) -> Result<TcpStream> {
    let left = remaining(deadline, "connecting to rank 1")?;
    let s = socket(addr, sockbuf)
        .and_then(|s| s.connect_timeout(&addr.into(), left).map(|()| TcpStream::from(s)))
        .map_err(|e| Error::io(format!("connecting to rank 1's plain socket at {addr}"), e))?;
    configure(&s, deadline)?;
    Ok(s)
}

fn accept(l: &TcpListener, deadline: Instant) -> Result<TcpStream> {
    // std's accept has no timeout: poll a non-blocking listener so a vanished rank 0 cannot
    // hang rank 1.
    l.set_nonblocking(true).map_err(|e| Error::io("making the listener non-blocking", e))?;
    let start = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| Error::io("making a socket blocking", e))?;
                configure(&s, deadline)?;
                return Ok(s);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: "rank 0 to connect its plain socket".into(),
                        waited: start.elapsed().as_secs_f64(),
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(Error::io("accepting rank 0's plain socket", e)),
        }
    }
}

fn read_exact(s: &mut TcpStream, buf: &mut [u8], peer: u32, what: &str) -> Result<()> {
    s.read_exact(buf).map_err(|e| Error::io(format!("reading {what} from rank {peer}"), e))
}

fn write_all(s: &mut TcpStream, buf: &[u8], peer: u32, what: &str) -> Result<()> {
    s.write_all(buf).map_err(|e| Error::io(format!("writing {what} to rank {peer}"), e))
}

/// Reads exactly one byte, spinning on a non-blocking socket when `spin` is set.
fn read_byte(s: &mut TcpStream, spin: bool, peer: u32, deadline: Instant) -> Result<u8> {
    let mut b = [0u8; 1];
    if !spin {
        read_exact(s, &mut b, peer, "a ping-pong byte")?;
        return Ok(b[0]);
    }
    let mut spins = 0u32;
    loop {
        match s.read(&mut b) {
            Ok(1) => return Ok(b[0]),
            Ok(_) => {
                return Err(Error::Peer {
                    rank: peer,
                    detail: "closed the ping-pong socket".into(),
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                // Retry at once, like the C tool: no pause, no yield, and the clock is read
                // only every 65,536 tries, so the loop never hangs past the deadline.
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1 << 16) && Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: format!("rank {peer}'s ping"),
                        waited: 0.0,
                    });
                }
            }
            Err(e) => {
                return Err(Error::io(format!("reading a ping-pong byte from rank {peer}"), e));
            }
        }
    }
}

/// Writes one byte; on a non-blocking socket a 1-byte write into an empty send buffer does not
/// block, but a full one is retried rather than treated as an error.
fn write_byte(s: &mut TcpStream, b: u8, peer: u32, deadline: Instant) -> Result<()> {
    loop {
        match s.write(&[b]) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(Error::Peer { rank: peer, detail: "closed the socket".into() }),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: format!("writing to rank {peer}"),
                        waited: 0.0,
                    });
                }
            }
            Err(e) => return Err(Error::io(format!("writing a ping-pong byte to rank {peer}"), e)),
        }
    }
}

const CMD_PING_BLOCKING: u8 = b'P';
const CMD_PING_SPIN: u8 = b'S';
const CMD_ONEWAY: u8 = b'O';
const CMD_DUPLEX: u8 = b'D';
const CMD_END: u8 = b'E';
const PING: u8 = b'x';
const QUIT: u8 = b'Q';

/// Rank 0's side: drives every measurement over a control connection to rank 1.
fn client(addr: SocketAddr, cfg: LimitConfig, deadline: Instant, out: &mut Limits) -> Result<()> {
    let mut ctl = connect(addr, cfg.sockbuf, deadline)?;
    for spin in [false, true] {
        write_all(
            &mut ctl,
            &[if spin { CMD_PING_SPIN } else { CMD_PING_BLOCKING }],
            1,
            "a command",
        )?;
        ctl.set_nonblocking(spin).map_err(|e| Error::io("switching the socket's mode", e))?;
        let lat = pingpong_client(&mut ctl, spin, cfg.secs, deadline)?;
        ctl.set_nonblocking(false).map_err(|e| Error::io("switching the socket's mode", e))?;
        if spin {
            out.pingpong_spin_us = Some(lat);
        } else {
            out.pingpong_blocking_us = Some(lat);
        }
    }
    let secs = 2.0 * cfg.secs;
    let chunk = cfg.message.min(STREAM_CHUNK);
    let mut params = Vec::with_capacity(17);
    params.push(CMD_ONEWAY);
    params.extend_from_slice(&secs.to_le_bytes());
    params.extend_from_slice(&chunk.to_le_bytes());
    write_all(&mut ctl, &params, 1, "a command")?;
    let data = connect(addr, cfg.sockbuf, deadline)?;
    let buf = filled(chunk, 1);
    stream_out(data, &buf, secs)?;
    out.stream_oneway_gbps = Some(read_f64(&mut ctl)?);

    params[0] = CMD_DUPLEX;
    write_all(&mut ctl, &params, 1, "a command")?;
    let data = connect(addr, cfg.sockbuf, deadline)?;
    let mine = duplex(data, buf, secs, 1)?;
    let theirs = read_f64(&mut ctl)?;
    out.stream_duplex_gbps = Some((mine + theirs) / 2.0);
    write_all(&mut ctl, &[CMD_END], 1, "a command")
}

fn read_f64(ctl: &mut TcpStream) -> Result<f64> {
    let mut b = [0u8; 8];
    read_exact(ctl, &mut b, 1, "a measured rate")?;
    rate_from_peer(b)
}

/// A rate rank 1 measured and sent as 8 little-endian bytes: finite and not negative, or rank
/// 1's error.
pub(crate) fn rate_from_peer(b: [u8; 8]) -> Result<f64> {
    let v = f64::from_le_bytes(b);
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(Error::Peer { rank: 1, detail: format!("reported an impossible rate {v}") })
    }
}

/// The ping-pong method of every limit (the C tools'): 1,000 warm-up round trips, then round
/// trips for `secs`, at most 1,000,000, each timed.
pub(crate) fn time_round_trips(
    secs: f64,
    mut round_trip: impl FnMut() -> Result<()>,
) -> Result<Latency> {
    for _ in 0..1000 {
        round_trip()?;
    }
    let budget = Duration::from_secs_f64(secs);
    let mut rtt = Vec::with_capacity(1_000_000);
    let start = Instant::now();
    while rtt.len() < 1_000_000 && start.elapsed() < budget {
        let t0 = Instant::now();
        round_trip()?;
        rtt.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Latency::from_samples(&mut rtt))
}

fn pingpong_client(s: &mut TcpStream, spin: bool, secs: f64, deadline: Instant) -> Result<Latency> {
    let lat = time_round_trips(secs, || {
        write_byte(s, PING, 1, deadline)?;
        read_byte(s, spin, 1, deadline).map(drop)
    })?;
    write_byte(s, QUIT, 1, deadline)?;
    Ok(lat)
}

/// A buffer of `len` bytes, every page written so that no page fault lands in a measurement.
fn filled(len: u64, v: u8) -> Vec<u8> {
    // `len` was bounded by the caller (the command line's limit or MAX_MESSAGE).
    vec![v; usize::try_from(len).expect("message sizes are bounded far below usize::MAX")]
}

/// Writes all of `buf` again and again for `secs`, then ends the stream.
fn stream_out(mut s: TcpStream, buf: &[u8], secs: f64) -> Result<()> {
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    while start.elapsed() < budget {
        s.write_all(buf).map_err(|e| Error::io("streaming to the peer", e))?;
    }
    s.shutdown(Shutdown::Write).map_err(|e| Error::io("ending the stream", e))
}

/// Reads into the whole of `buf` (as the C tools do) until the end of the stream; returns
/// GB/s from the first byte to the end.
fn stream_in(s: &mut TcpStream, buf: &mut [u8]) -> Result<f64> {
    let mut total = 0u64;
    let mut t0 = None;
    loop {
        let n = match s.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading the stream", e)),
        };
        t0.get_or_insert_with(Instant::now);
        total += n as u64;
    }
    let dt = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
    if dt > 0.0 { Ok(total as f64 / dt / 1e9) } else { Ok(0.0) }
}

/// Both directions at once: a writer thread streams `out` while this thread reads.
fn duplex(s: TcpStream, out: Vec<u8>, secs: f64, peer: u32) -> Result<f64> {
    let writer = s.try_clone().map_err(|e| Error::io("cloning the stream socket", e))?;
    let mut inbuf = filled(out.len() as u64, 0);
    let w = std::thread::spawn(move || stream_out(writer, &out, secs));
    let mut reader = s;
    let rate = stream_in(&mut reader, &mut inbuf);
    let wrote = w.join().map_err(|_| Error::Peer {
        rank: peer,
        detail: "the stream writer thread panicked".into(),
    })?;
    wrote?;
    rate
}

/// Rank 1's side: answers rank 0's commands.
fn server(l: &TcpListener, deadline: Instant) -> Result<()> {
    let mut ctl = accept(l, deadline)?;
    loop {
        let mut cmd = [0u8; 1];
        read_exact(&mut ctl, &mut cmd, 0, "a command")?;
        match cmd[0] {
            CMD_PING_BLOCKING | CMD_PING_SPIN => {
                let spin = cmd[0] == CMD_PING_SPIN;
                ctl.set_nonblocking(spin)
                    .map_err(|e| Error::io("switching the socket's mode", e))?;
                loop {
                    let b = read_byte(&mut ctl, spin, 0, deadline)?;
                    if b == QUIT {
                        break;
                    }
                    write_byte(&mut ctl, b, 0, deadline)?;
                }
                ctl.set_nonblocking(false)
                    .map_err(|e| Error::io("switching the socket's mode", e))?;
            }
            CMD_ONEWAY | CMD_DUPLEX => {
                let mut p = [0u8; 16];
                read_exact(&mut ctl, &mut p, 0, "stream parameters")?;
                let secs = f64::from_le_bytes(
                    p[..8].try_into().expect("p is 16 bytes: two 8-byte halves"),
                );
                let message = u64::from_le_bytes(
                    p[8..].try_into().expect("p is 16 bytes: two 8-byte halves"),
                );
                if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0)
                    || message == 0
                    || message > MAX_MESSAGE
                {
                    return Err(Error::Peer {
                        rank: 0,
                        detail: format!(
                            "asked for a stream of {message}-byte messages for {secs} s"
                        ),
                    });
                }
                let mut data = accept(l, deadline)?;
                let rate = if cmd[0] == CMD_ONEWAY {
                    let mut buf = filled(message, 0);
                    stream_in(&mut data, &mut buf)?
                } else {
                    duplex(data, filled(message, 2), secs, 0)?
                };
                write_all(&mut ctl, &rate.to_le_bytes(), 0, "a measured rate")?;
            }
            CMD_END => return Ok(()),
            other => {
                return Err(Error::Peer {
                    rank: 0,
                    detail: format!("sent unknown limit command {other:#04x}"),
                });
            }
        }
    }
}

/// Best memcpy and f32-add GB/s over 64 MiB buffers, each kernel repeated for about `secs`
/// and at least 5 times.
pub(crate) fn memory_bandwidth(secs: f64) -> (f64, f64) {
    const BYTES: usize = 64 << 20;
    let src = vec![1u8; BYTES];
    let mut dst = vec![0u8; BYTES];
    let memcpy = best_rate(BYTES, secs, || {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    });
    let b = vec![1.0f32; BYTES / 4];
    let mut a = vec![0.0f32; BYTES / 4];
    let add = best_rate(BYTES, secs, || {
        add_f32(std::hint::black_box(&mut a), std::hint::black_box(&b));
    });
    (memcpy, add)
}

#[inline(never)]
fn add_f32(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += *y;
    }
}

fn best_rate(bytes: usize, secs: f64, mut f: impl FnMut()) -> f64 {
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut reps = 0;
    while (start.elapsed() < budget || reps < 5) && reps < 100_000 {
        let t0 = Instant::now();
        f();
        best = best.min(t0.elapsed().as_secs_f64());
        reps += 1;
    }
    bytes as f64 / best / 1e9
}

/// The address this host uses to reach `host_port` (the store's), so that plain sockets bind
/// the interface the job uses rather than the wildcard. Loopback when there is no such host.
pub(crate) fn local_ip_towards(host_port: Option<&str>) -> IpAddr {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Some(hp) = host_port else { return loopback };
    let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(hp) else { return loopback };
    let Some(target) = addrs.next() else { return loopback };
    if target.ip().is_loopback() {
        return target.ip();
    }
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // A connected UDP socket sends nothing; it only asks the kernel which source address
    // routes to the target.
    std::net::UdpSocket::bind(bind)
        .and_then(|u| u.connect(target).and_then(|()| u.local_addr()))
        .map_or(loopback, |a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::StoreUrl;

    #[test]
    fn two_threads_measure_every_plain_limit() {
        let dir = std::env::temp_dir().join(format!("gloo-bench-limits-{}", std::process::id()));
        let mut kv =
            crate::store::open(&StoreUrl::File(dir.clone()), 0, gloo_testing::deadline(10))
                .unwrap();
        kv.join(1, gloo_testing::deadline(10)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let cfg = LimitConfig { secs: 0.05, message: 1 << 20, sockbuf: 1 << 20 };
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (l0, l1) = std::thread::scope(|s| {
            let t1 = s.spawn(|| measure(1, 2, &kv, ip, cfg, deadline));
            let l0 = measure(0, 2, &kv, ip, cfg, deadline);
            (l0, t1.join().unwrap())
        });
        let l0 = l0.unwrap();
        l1.unwrap();
        let pp = l0.pingpong_blocking_us.unwrap();
        assert!(pp.n > 0 && pp.min <= pp.p50 && pp.p50 <= pp.p99);
        assert!(l0.pingpong_spin_us.unwrap().n > 0);
        assert!(l0.stream_oneway_gbps.unwrap() > 0.0);
        assert!(l0.stream_duplex_gbps.unwrap() > 0.0);
        assert!(l0.memcpy_gbps.unwrap() > 0.0 && l0.add_f32_gbps.unwrap() > 0.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loopback_targets_give_loopback() {
        assert!(local_ip_towards(None).is_loopback());
        assert!(local_ip_towards(Some("127.0.0.1:1")).is_loopback());
    }
}
