//! TcpStore against redis-server: set/get operations per second from 64 client connections,
//! the same workload against both servers in the same run (needs `redis-server` and
//! `redis-benchmark` on PATH, and the `redis` feature).
//!
//! ```text
//! cargo run --release -p gloo-rendezvous --features redis --example store_bench -- [clients] [seconds]
//! ```
//!
//! Each server runs in its own process. The workload: every client thread owns one
//! connection and loops `set(key, 16-byte value)` then `get(key)` over 1,000 keys of its own,
//! one request in flight per connection (no pipelining), for the given time. TcpStore is
//! driven by its own client; redis-server by `RedisStore` (the `redis` crate) and, as a
//! reference with a lighter C client, by `redis-benchmark -c <clients> -t set,get`, and by a
//! lean RESP client below that, like TcpStore's client, does one write and one read per
//! operation (so the two servers are compared with equally cheap clients).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gloo_rendezvous::{RedisOptions, RedisStore, Store, TcpStore, TcpStoreServer};

fn main() {
    if std::env::var_os("STORE_BENCH_SERVE").is_some() {
        serve();
        return;
    }
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(64, |a| a.parse().expect("clients is a number"));
    let secs: u64 = args.next().map_or(5, |a| a.parse().expect("seconds is a number"));
    let d = || Instant::now() + Duration::from_secs(30);

    // The TcpStore server, in a child process of its own.
    let mut server = Command::new(std::env::current_exe().unwrap())
        .env("STORE_BENCH_SERVE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().to_string();
    let tcp = workload("TcpStore (gloo client)", clients, secs, || {
        Box::new(TcpStore::connect(addr.clone(), None, d()).unwrap())
    });
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();

    let redis = gloo_testing::redis::RedisServer::start(None);
    let url = redis.url();
    let via_crate = workload("redis-server (RedisStore, redis crate)", clients, secs, || {
        Box::new(RedisStore::connect(&url, RedisOptions::default(), d()).unwrap())
    });
    let port = redis.port();
    let lean = workload("redis-server (lean RESP client)", clients, secs, || {
        Box::new(Resp::connect(port))
    });
    let n = (via_crate as u64 * 2).max(100_000).to_string();
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &redis.port().to_string(), "-c", &clients.to_string()])
        .args(["-n", &n, "-d", "16", "-r", "1000", "-t", "set,get", "-q"])
        .output();
    match out {
        Ok(o) => {
            for l in String::from_utf8_lossy(&o.stdout)
                .split(['\r', '\n'])
                .filter(|l| l.contains("per second"))
            {
                println!("{:<42} {}", "redis-server (redis-benchmark)", l.trim());
            }
        }
        Err(e) => println!("redis-benchmark not run: {e}"),
    }
    println!(
        "TcpStore / redis-server: {:.2}x (vs the redis crate), {:.2}x (vs the lean RESP client)",
        tcp as f64 / via_crate.max(1) as f64,
        tcp as f64 / lean.max(1) as f64
    );
}

/// Run the set/get loop on `clients` threads for `secs` seconds; print and return ops/s.
fn workload(name: &str, clients: usize, secs: u64, make: impl Fn() -> Box<dyn Store>) -> usize {
    let stores: Vec<Box<dyn Store>> = (0..clients).map(|_| make()).collect();
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let value = [0x5au8; 16];
    let start = Instant::now();
    std::thread::scope(|s| {
        for (t, store) in stores.iter().enumerate() {
            let (stop, ops) = (&stop, &ops);
            s.spawn(move || {
                let mut i = 0u64;
                let mut local = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("bench:{t}:{}", i % 1000);
                    let d = Instant::now() + Duration::from_secs(30);
                    store.set(key.as_bytes(), &value, d).unwrap();
                    assert_eq!(store.get(key.as_bytes(), d).unwrap(), value);
                    local += 2;
                    i += 1;
                }
                ops.fetch_add(local, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let rate = ops.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    println!("{name:<42} {rate:>10.0} ops/s ({clients} connections, set+get, 16-byte values)");
    rate as usize
}

/// The server side: serve until stdin closes.
fn serve() {
    let server = TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    println!("{}", server.local_addr());
    let mut sink = String::new();
    // EOF on stdin (the parent closed it or died) ends the server.
    while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
}

/// A minimal RESP client for SET and GET only: one `write` and (usually) one `read` per
/// operation, like TcpStore's client. Only for this benchmark.
struct Resp {
    stream: std::sync::Mutex<(std::net::TcpStream, Vec<u8>)>,
}

impl Resp {
    fn connect(port: u16) -> Resp {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        Resp { stream: std::sync::Mutex::new((s, Vec::with_capacity(4096))) }
    }

    /// Send one command and read one reply (simple string, or bulk string of `len` bytes).
    fn call(&self, args: &[&[u8]]) -> Vec<u8> {
        use std::io::{Read, Write};
        let mut g = self.stream.lock().unwrap();
        let (s, buf) = &mut *g;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).unwrap();
        buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "redis closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(v) = parse_reply(buf) {
                return v;
            }
        }
    }
}

/// A complete reply's payload, or `None` if more bytes are needed.
fn parse_reply(b: &[u8]) -> Option<Vec<u8>> {
    let end = b.windows(2).position(|w| w == b"\r\n")?;
    match b[0] {
        b'+' => Some(b[1..end].to_vec()),
        b'$' => {
            let len: usize = std::str::from_utf8(&b[1..end]).ok()?.parse().ok()?;
            (b.len() >= end + 2 + len + 2).then(|| b[end + 2..end + 2 + len].to_vec())
        }
        _ => panic!("unexpected reply {:?}", String::from_utf8_lossy(b)),
    }
}

impl Store for Resp {
    fn set(&self, key: &[u8], value: &[u8], _deadline: Instant) -> gloo_rendezvous::Result<()> {
        self.call(&[b"SET", key, value]);
        Ok(())
    }
    fn get(&self, key: &[u8], _deadline: Instant) -> gloo_rendezvous::Result<Vec<u8>> {
        Ok(self.call(&[b"GET", key]))
    }
    fn try_get(&self, _: &[u8], _: Instant) -> gloo_rendezvous::Result<Option<Vec<u8>>> {
        unimplemented!("only set and get are benchmarked")
    }
    fn wait(&self, _: &[&[u8]], _: Instant) -> gloo_rendezvous::Result<()> {
        unimplemented!("only set and get are benchmarked")
    }
    fn add(&self, _: &[u8], _: i64, _: Instant) -> gloo_rendezvous::Result<i64> {
        unimplemented!("only set and get are benchmarked")
    }
    fn compare_set(
        &self,
        _: &[u8],
        _: Option<&[u8]>,
        _: &[u8],
        _: Instant,
    ) -> gloo_rendezvous::Result<gloo_rendezvous::CompareSet> {
        unimplemented!("only set and get are benchmarked")
    }
    fn multi_get(&self, _: &[&[u8]], _: Instant) -> gloo_rendezvous::Result<Vec<Vec<u8>>> {
        unimplemented!("only set and get are benchmarked")
    }
    fn multi_set(&self, _: &[(&[u8], &[u8])], _: Instant) -> gloo_rendezvous::Result<()> {
        unimplemented!("only set and get are benchmarked")
    }
    fn append(&self, _: &[u8], _: &[u8], _: Instant) -> gloo_rendezvous::Result<()> {
        unimplemented!("only set and get are benchmarked")
    }
    fn delete(&self, _: &[u8], _: Instant) -> gloo_rendezvous::Result<bool> {
        unimplemented!("only set and get are benchmarked")
    }
}
