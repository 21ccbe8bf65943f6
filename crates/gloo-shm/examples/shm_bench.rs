//! The shared-memory channel between two processes, beside memcpy measured in the same run:
//! 1-byte ping-pong latency, and 64 MiB one-way throughput through the ring and by single copy
//! (lending).
//!
//! ```text
//! cargo xtask bench shm                      # the two processes wherever the scheduler puts them
//! cargo xtask bench shm -- --cores 0,1       # parent on core 0, child on core 1 (taskset)
//! cargo run --release -p gloo-shm --example shm_bench -- [--cores A,B] [--iters N] [--mib M] [--ring KIB]
//! ```
//!
//! The parent (rank 0) binds, starts itself again as rank 1 (under `taskset -c B` with
//! `--cores`), and accepts; every figure is measured between those two processes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gloo_shm::{Channel, Interest, ShmConfig, ShmListener, lending};
use gloo_transport::Rank;

const CHILD_ENV: &str = "GLOO_SHM_BENCH_ADDR";
const PINNED_ENV: &str = "GLOO_SHM_BENCH_PINNED";

struct Args {
    cores: Option<(String, String)>,
    iters: usize,
    mib: usize,
    ring_kib: usize,
    reps: usize,
}

fn args() -> Args {
    let mut a = Args { cores: None, iters: 200_000, mib: 64, ring_kib: 1024, reps: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--cores" => {
                let v = val();
                let (x, y) = v.split_once(',').unwrap_or_else(|| usage("--cores takes A,B"));
                a.cores = Some((x.to_string(), y.to_string()));
            }
            "--iters" => {
                a.iters = val().parse().unwrap_or_else(|_| usage("--iters takes a number"))
            }
            "--mib" => a.mib = val().parse().unwrap_or_else(|_| usage("--mib takes a number")),
            "--ring" => a.ring_kib = val().parse().unwrap_or_else(|_| usage("--ring takes KiB")),
            "--reps" => a.reps = val().parse().unwrap_or_else(|_| usage("--reps takes a number")),
            "--bench" => {} // cargo bench passes this
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!(
        "shm_bench: {why}\nusage: shm_bench [--cores A,B] [--iters N] [--mib M] [--ring KIB] [--reps R]"
    );
    std::process::exit(2)
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

fn write_all(ch: &mut Channel, mut b: &[u8]) {
    while !b.is_empty() {
        let n = ch.write(&[b]).expect("write");
        b = &b[n..];
        if n == 0 {
            ch.wait(Interest::WRITE, deadline()).expect("wait to write");
        }
    }
}

fn read_exact(ch: &mut Channel, buf: &mut [u8]) {
    let mut got = 0;
    while got < buf.len() {
        let n = ch.read(&mut buf[got..]).expect("read");
        got += n;
        if n == 0 {
            ch.wait(Interest::READ, deadline()).expect("wait to read");
        }
    }
}

fn write_lent(ch: &mut Channel, b: &[u8]) {
    lending(&mut [ch], |l| {
        let mut sent = 0;
        while sent < b.len() {
            let n = l.write(0, &[&b[sent..]]).expect("lent write");
            sent += n;
            if n == 0 {
                l.wait(&[Interest::WRITE], deadline())
                    .expect("wait")
                    .expect("the reader takes the lend");
            }
        }
    });
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn main() {
    let a = args();
    let bytes = a.mib << 20;
    if let Ok(addr) = std::env::var(CHILD_ENV) {
        return child(&a, addr.as_bytes(), bytes);
    }
    // Pin the parent by running again under taskset (no unsafe sched_setaffinity here).
    if let Some((p, _)) = &a.cores
        && std::env::var_os(PINNED_ENV).is_none()
    {
        let status = Command::new("taskset")
            .args(["-c", p])
            .arg(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env(PINNED_ENV, "1")
            .status()
            .unwrap_or_else(|e| usage(&format!("cannot run taskset: {e}")));
        std::process::exit(status.code().unwrap_or(1));
    }
    let cfg = ShmConfig::new("shm-bench", Rank(0), 2).ring_capacity(a.ring_kib << 10);
    let l = ShmListener::bind(cfg).expect("bind");
    let hex_free = String::from_utf8(l.address_bytes()).expect("addresses are ASCII");
    let mut cmd = match &a.cores {
        Some((_, c)) => {
            let mut c2 = Command::new("taskset");
            c2.args(["-c", c]).arg(std::env::current_exe().unwrap());
            c2
        }
        None => Command::new(std::env::current_exe().unwrap()),
    };
    let mut child = cmd
        .args(std::env::args().skip(1))
        .env(CHILD_ENV, &hex_free)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the child");
    let mut ch = l.accept(deadline()).expect("accept");
    println!(
        "# gloo-shm channel between two processes (pid {} and {}), ring {} KiB, cores {}",
        std::process::id(),
        ch.peer_pid(),
        a.ring_kib,
        a.cores.as_ref().map_or("unpinned".to_string(), |(x, y)| format!("{x},{y}"))
    );

    // 1-byte ping-pong.
    let mut one = [0u8; 1];
    for _ in 0..a.iters / 10 {
        write_all(&mut ch, &one);
        read_exact(&mut ch, &mut one);
    }
    let mut rtts = Vec::with_capacity(a.iters);
    let start = Instant::now();
    for _ in 0..a.iters {
        let t = Instant::now();
        write_all(&mut ch, &one);
        read_exact(&mut ch, &mut one);
        rtts.push(t.elapsed());
    }
    let total = start.elapsed();
    rtts.sort();
    let p50 = rtts[rtts.len() / 2];
    let p99 = rtts[rtts.len() * 99 / 100];
    println!(
        "ping-pong 1 B: round trip min {:.3} us, p50 {:.3} us, p99 {:.3} us, mean {:.3} us; one-way (p50/2) {:.3} us",
        rtts[0].as_secs_f64() * 1e6,
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        total.as_secs_f64() * 1e6 / a.iters as f64,
        p50.as_secs_f64() * 1e6 / 2.0
    );

    // memcpy in this process, same size, same run.
    let src = vec![0x3cu8; bytes];
    let mut dst = vec![0u8; bytes];
    let mut best = Duration::MAX;
    for _ in 0..a.reps {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed());
    }
    let memcpy = gbps(bytes, best);
    println!("memcpy {} MiB: {:.2} GB/s (best of {})", a.mib, memcpy, a.reps);

    // One-way throughput: ring, then single copy. The child acknowledges each transfer with
    // one byte once it has every byte.
    for (name, lend) in [("ring", false), ("single copy", true)] {
        if lend && !ch.single_copy() {
            println!(
                "one-way {} MiB {name}: unavailable (the kernel refuses process_vm_readv here)",
                a.mib
            );
            // Still run it, through the ring, so the child's sequence stays the same.
        }
        let mut times = Vec::new();
        for _ in 0..a.reps {
            let t = Instant::now();
            if lend {
                write_lent(&mut ch, &src);
            } else {
                write_all(&mut ch, &src);
            }
            read_exact(&mut ch, &mut one);
            times.push(t.elapsed());
        }
        times.sort();
        let (b, m) = (gbps(bytes, times[0]), gbps(bytes, times[times.len() / 2]));
        println!(
            "one-way {} MiB {name}: best {:.2} GB/s ({:.0}% of memcpy), median {:.2} GB/s",
            a.mib,
            b,
            100.0 * b / memcpy,
            m
        );
    }
    drop(ch);
    let status = child.wait().expect("child");
    assert!(status.success(), "the child failed: {status}");
}

fn child(a: &Args, addr: &[u8], bytes: usize) {
    let cfg = ShmConfig::new("shm-bench", Rank(1), 2).ring_capacity(a.ring_kib << 10);
    let l = ShmListener::bind(cfg).expect("bind");
    let mut ch = l.connect(Rank(0), addr, deadline()).expect("connect");
    let mut one = [0u8; 1];
    for _ in 0..a.iters / 10 + a.iters {
        read_exact(&mut ch, &mut one);
        write_all(&mut ch, &one);
    }
    let mut buf = vec![0u8; bytes];
    for _ in 0..2 * a.reps {
        read_exact(&mut ch, &mut buf);
        write_all(&mut ch, &one);
    }
    assert!(buf.iter().all(|&b| b == 0x3c), "the child received wrong bytes");
}
