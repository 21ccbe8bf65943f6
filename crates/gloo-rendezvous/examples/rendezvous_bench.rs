//! Rendezvous plus full-mesh TCP connect of N local processes through a TcpStore.
//!
//! ```text
//! cargo run --release -p gloo-rendezvous --example rendezvous_bench -- 32 128
//! ```
//!
//! For each N, the parent hosts a `TcpStoreServer` (with a job token), starts N copies of
//! this binary as ranks, and reports: the wall time from the first spawn until every rank has
//! its connected communicator (process start-up included), and the slowest rank's own time
//! from connecting to the store to holding the communicator. With `RDV_BENCH_STORE_ONLY=1`
//! the ranks run only the bootstrap's store part ([`exchange_addresses`] with 30-byte
//! addresses). With `RDV_BENCH_STORE=torch` the store is a real PyTorch `TCPStore` (libuv)
//! started with the Python of `.ci/torch-venv` (see `gloo_testing::torch`), and the ranks are
//! [`TorchStore`] clients.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gloo_rendezvous::{Store, TcpStore, TcpStoreServer, TorchStore, connect, exchange_addresses};
use gloo_transport::tcp::{TcpConfig, TcpListener};
use gloo_transport::{Communicator, Rank};

const TOKEN: &[u8] = b"rendezvous-bench";

fn main() {
    if let Ok(spec) = std::env::var("RDV_BENCH_CHILD") {
        child(&spec);
        return;
    }
    let sizes: Vec<u32> =
        std::env::args().skip(1).map(|a| a.parse().expect("sizes are numbers")).collect();
    let sizes = if sizes.is_empty() { vec![32, 128] } else { sizes };
    println!(
        "{:>6} {:>14} {:>22} {:>18}",
        "ranks", "wall (spawn)", "slowest rank (store)", "median rank"
    );
    for n in sizes {
        run(n);
    }
}

fn torch() -> bool {
    std::env::var("RDV_BENCH_STORE").is_ok_and(|s| s == "torch")
}

/// A client of the store at `addr` (ours with the token, or the torch store).
fn client(addr: String, deadline: Instant) -> Box<dyn Store> {
    if torch() {
        Box::new(TorchStore::connect(addr, deadline).unwrap())
    } else {
        Box::new(TcpStore::connect(addr, Some(TOKEN), deadline).unwrap())
    }
}

fn run(n: u32) {
    let (_ours, _theirs, addr) = if torch() {
        let t = gloo_testing::torch::TorchServer::start(gloo_testing::torch::Backend::Libuv);
        let addr = t.endpoint();
        (None, Some(t), addr)
    } else {
        let s = TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), Some(TOKEN)).unwrap();
        let addr = s.local_addr().to_string();
        (Some(s), None, addr)
    };
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let mut children = Vec::new();
    for r in 0..n {
        children.push(
            Command::new(&exe)
                .env("RDV_BENCH_CHILD", format!("{addr} {r} {n}"))
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let store = client(addr, Instant::now() + Duration::from_secs(10));
    let keys: Vec<Vec<u8>> = (0..n).map(|r| format!("bench/connected/{r}").into_bytes()).collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let times = store.multi_get(&refs, Instant::now() + Duration::from_secs(300)).unwrap();
    let wall = start.elapsed();
    for mut c in children {
        c.wait().unwrap();
    }
    let mut per_rank: Vec<f64> =
        times.iter().map(|t| String::from_utf8_lossy(t).parse::<f64>().unwrap()).collect();
    per_rank.sort_by(f64::total_cmp);
    println!(
        "{n:>6} {:>12.3} s {:>20.3} s {:>16.3} s",
        wall.as_secs_f64(),
        per_rank[per_rank.len() - 1],
        per_rank[per_rank.len() / 2]
    );
}

fn child(spec: &str) {
    let mut it = spec.split(' ');
    let addr = it.next().unwrap().to_string();
    let rank: u32 = it.next().unwrap().parse().unwrap();
    let size: u32 = it.next().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let start = Instant::now();
    let store = client(addr, deadline);
    if std::env::var_os("RDV_BENCH_DEBUG").is_some() && start.elapsed() > Duration::from_millis(500)
    {
        eprintln!("rank {rank}: connect took {:?}", start.elapsed());
    }
    if std::env::var_os("RDV_BENCH_STORE_ONLY").is_some() {
        // The bootstrap's store part alone: publish 30 bytes, learn everybody's.
        let addrs = exchange_addresses(&*store, Rank(rank), size, &[7u8; 30], deadline).unwrap();
        assert_eq!(addrs.len(), size as usize);
        let took = start.elapsed().as_secs_f64();
        store
            .set(
                format!("bench/connected/{rank}").as_bytes(),
                took.to_string().as_bytes(),
                deadline,
            )
            .unwrap();
        return;
    }
    let listener = TcpListener::bind(TcpConfig::loopback("bench", Rank(rank), size)).unwrap();
    let comm = connect(&*store, listener, Rank(rank), size, deadline).unwrap();
    let took = start.elapsed().as_secs_f64();
    assert_eq!(comm.size(), size);
    store
        .set(format!("bench/connected/{rank}").as_bytes(), took.to_string().as_bytes(), deadline)
        .unwrap();
    // Stay until everybody is connected, so no rank's exit disturbs a slower rank's connect.
    let keys: Vec<Vec<u8>> =
        (0..size).map(|r| format!("bench/connected/{r}").into_bytes()).collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    store.wait(&refs, deadline).unwrap();
}
