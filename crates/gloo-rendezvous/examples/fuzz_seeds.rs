//! Capture the seed corpora of the fuzz targets in `fuzz/` from real traffic: the TCP store
//! (both directions of a session through a recording relay), a PyTorch `TCPStore` server's
//! replies (when the PyTorch environment of `.ci/torch-venv` is there), a Redis server's
//! replies to the Redis store's scripts (feature `redis`, when `redis-server` is installed),
//! published TCP addresses, the bootstrap's entries and results (from a real rendezvous) and
//! `env://` variables as launchers set them.
//!
//! ```text
//! cargo run -p gloo-rendezvous --features redis --example fuzz_seeds -- fuzz/corpus
//! ```
//!
//! Each seed is written in the input format of its target (see the targets' docs). Seeds are
//! starting points: the fuzzer only needs them to be valid traffic, so rerunning this after a
//! protocol change is enough to keep them useful.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gloo_rendezvous::{
    CompareSet, HashStore, Store, TcpStore, TcpStoreServer, TorchStore, exchange_addresses,
};
use gloo_testing::netfault::{Dir, Proxy};
use gloo_transport::Rank;
use gloo_transport::tcp::{TcpConfig, TcpListener};

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
    std::fs::write(d.join(name), bytes).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    println!("{target}/{name}: {} bytes", bytes.len());
}

/// Every kind of request once, on `store`.
fn session(store: &dyn Store) {
    let d = deadline();
    store.set(b"seed/a", b"alpha", d).unwrap();
    store.get(b"seed/a", d).unwrap();
    store.try_get(b"seed/missing", d).unwrap();
    store.wait(&[b"seed/a"], d).unwrap();
    store.add(b"seed/counter", 7, d).unwrap();
    assert_eq!(store.compare_set(b"seed/cas", None, b"one", d).unwrap(), CompareSet::Swapped);
    store.compare_set(b"seed/cas", Some(b"zzz"), b"two", d).unwrap();
    store.multi_set(&[(b"seed/m1", b"x"), (b"seed/m2", b"yy")], d).unwrap();
    store.multi_get(&[b"seed/m1", b"seed/m2", b"seed/a"], d).unwrap();
    store.append(b"seed/log", b"ab", d).unwrap();
    store.delete(b"seed/m1", d).unwrap();
    // A wait that times out (the server answers with the missing keys).
    let _ = store.wait(&[b"seed/never"], Instant::now() + Duration::from_millis(50));
}

/// The store server's script format: mode byte, then (connection, length, bytes) records.
fn server_script(mode: u8, stream: &[u8]) -> Vec<u8> {
    let mut s = vec![mode];
    for chunk in stream.chunks(255) {
        s.push(0);
        s.push(chunk.len() as u8);
        s.extend_from_slice(chunk);
    }
    s
}

fn tcp_store(dir: &Path) {
    for (mode, token) in [(0u8, None), (1, Some(&b"fuzz-store-token-0123456789"[..]))] {
        let server = TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), token).unwrap();
        let proxy = Proxy::recording(server.local_addr()).unwrap();
        let client = TcpStore::connect(proxy.addr().to_string(), token, deadline()).unwrap();
        session(&client);
        drop(client);
        let name = if token.is_some() { "session_token" } else { "session" };
        write(dir, "store_server", name, &server_script(mode, &proxy.recorded(Dir::ToTarget)));
        write(dir, "store_client", name, &proxy.recorded(Dir::ToClient));
    }
}

/// Replies a torch server sent during each call, as `torch_client` seeds: each reply
/// preceded by the byte that picks how it is read.
fn torch(dir: &Path) {
    let venv = gloo_testing::torch::venv().join("bin/python");
    if !venv.is_file() {
        println!("torch_client: skipped (no PyTorch environment; run `bash .ci/torch-venv`)");
        return;
    }
    use gloo_testing::torch::{Backend, TorchServer};
    for (name, backend) in [("libuv", Backend::Libuv), ("legacy", Backend::Legacy)] {
        let server = TorchServer::start(backend);
        let proxy = Proxy::recording(server.endpoint().parse().unwrap()).unwrap();
        let mut seed = Vec::new();
        let mut seen = 0;
        let mut take = |seed: &mut Vec<u8>, picks: &[(u8, usize)]| {
            let got = proxy.recorded(Dir::ToClient);
            let mut rest = &got[seen..];
            seen = got.len();
            for (i, (pick, len)) in picks.iter().enumerate() {
                let n = if i + 1 == picks.len() { rest.len() } else { *len };
                seed.push(*pick);
                seed.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
        };
        let store = TorchStore::connect(proxy.addr().to_string(), deadline()).unwrap();
        take(&mut seed, &[(6, 8)]); // VALIDATE + GETNUMKEYS: an i64
        let d = deadline();
        store.set(b"a", b"alpha", d).unwrap();
        take(&mut seed, &[(0, 1)]); // the CHECK behind SET
        store.try_get(b"a", d).unwrap();
        take(&mut seed, &[(0, 1), (2, 0)]); // CHECK, then the value
        store.add(b"n", 3, d).unwrap();
        take(&mut seed, &[(1, 8)]);
        store.set(b"bb", b"x", d).unwrap();
        store.set(b"ccc", b"", d).unwrap();
        take(&mut seed, &[(0, 1), (0, 1)]);
        store.multi_get(&[b"a", b"bb", b"ccc"], d).unwrap();
        take(&mut seed, &[(4 | 3 << 4, 1), (3 | 3 << 4, 0)]); // WAIT, then CHECK + MULTI_GET
        store.compare_set(b"a", Some(b"alpha"), b"beta", d).unwrap();
        take(&mut seed, &[(2, 0)]);
        store.delete(b"bb", d).unwrap();
        take(&mut seed, &[(1, 8)]);
        write(dir, "torch_client", name, &seed);
    }
}

#[cfg(feature = "redis")]
fn redis(dir: &Path) {
    use gloo_rendezvous::{RedisOptions, RedisStore};
    use gloo_testing::redis::RedisServer;
    if !RedisServer::available() {
        println!("redis_reply: skipped (no redis-server)");
        return;
    }
    let server = RedisServer::start(None);
    let proxy = Proxy::recording(format!("127.0.0.1:{}", server.port()).parse().unwrap()).unwrap();
    let url = format!("redis://{}", proxy.addr());
    let store = RedisStore::connect(&url, RedisOptions::with_prefix("seed"), deadline()).unwrap();
    let d = deadline();
    store.set(b"a", b"alpha", d).unwrap();
    store.set(b"b", b"", d).unwrap();
    let mut seen = proxy.recorded(Dir::ToClient).len();
    let mut reply = |name: &str, f: &dyn Fn()| {
        f();
        let got = proxy.recorded(Dir::ToClient);
        write(dir, "redis_reply", name, &got[seen..]);
        seen = got.len();
    };
    reply("set", &|| {
        store.set(b"c", &[0u8, 255, 10], d).unwrap();
    });
    reply("read_three", &|| {
        store.multi_get(&[b"a", b"b", b"c"], d).unwrap();
    });
    reply("read_missing", &|| {
        store.try_get(b"missing", d).unwrap();
    });
    reply("cas_swapped", &|| {
        store.compare_set(b"cas", None, b"one", d).unwrap();
    });
    reply("cas_mismatch", &|| {
        store.compare_set(b"cas", Some(b"x"), b"two", d).unwrap();
    });
    reply("add", &|| {
        store.add(b"n", 5, d).unwrap();
    });
}

#[cfg(not(feature = "redis"))]
fn redis(_dir: &Path) {
    println!("redis_reply: skipped (build with --features redis)");
}

fn address(dir: &Path) {
    let v4 = TcpListener::bind(TcpConfig::loopback("seed", Rank(0), 2)).unwrap();
    write(dir, "address", "loopback_v4", &v4.address_bytes());
    if let Ok(v6) = TcpListener::bind(
        TcpConfig::loopback("seed", Rank(0), 2).bind_addr("[::1]:0".parse().unwrap()),
    ) {
        write(dir, "address", "loopback_v6", &v6.address_bytes());
    }
}

/// A store that keeps every value set, so the bootstrap's entries and result can be seen
/// after it deletes them.
struct Keeping {
    inner: HashStore,
    kept: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Store for Keeping {
    fn set(&self, key: &[u8], value: &[u8], deadline: Instant) -> gloo_rendezvous::Result<()> {
        self.kept.lock().unwrap().push((key.to_vec(), value.to_vec()));
        self.inner.set(key, value, deadline)
    }
    fn try_get(&self, key: &[u8], d: Instant) -> gloo_rendezvous::Result<Option<Vec<u8>>> {
        self.inner.try_get(key, d)
    }
    fn wait(&self, keys: &[&[u8]], d: Instant) -> gloo_rendezvous::Result<()> {
        self.inner.wait(keys, d)
    }
    fn multi_get(&self, keys: &[&[u8]], d: Instant) -> gloo_rendezvous::Result<Vec<Vec<u8>>> {
        self.inner.multi_get(keys, d)
    }
    fn add(&self, key: &[u8], delta: i64, d: Instant) -> gloo_rendezvous::Result<i64> {
        self.inner.add(key, delta, d)
    }
    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        d: Instant,
    ) -> gloo_rendezvous::Result<CompareSet> {
        let r = self.inner.compare_set(key, expected, new, d)?;
        if r == CompareSet::Swapped {
            self.kept.lock().unwrap().push((key.to_vec(), new.to_vec()));
        }
        Ok(r)
    }
    fn multi_set(&self, pairs: &[(&[u8], &[u8])], d: Instant) -> gloo_rendezvous::Result<()> {
        for (k, v) in pairs {
            self.kept.lock().unwrap().push((k.to_vec(), v.to_vec()));
        }
        self.inner.multi_set(pairs, d)
    }
    fn append(&self, key: &[u8], value: &[u8], d: Instant) -> gloo_rendezvous::Result<()> {
        self.inner.append(key, value, d)
    }
    fn delete(&self, key: &[u8], d: Instant) -> gloo_rendezvous::Result<bool> {
        self.inner.delete(key, d)
    }
}

fn bootstrap(dir: &Path) {
    let store = Arc::new(Keeping { inner: HashStore::new(), kept: Mutex::new(Vec::new()) });
    let size = 3u32;
    let listeners: Vec<TcpListener> = (0..size)
        .map(|r| TcpListener::bind(TcpConfig::loopback("seed", Rank(r), size)).unwrap())
        .collect();
    std::thread::scope(|s| {
        for (r, l) in listeners.iter().enumerate() {
            let store = store.clone();
            s.spawn(move || {
                exchange_addresses(&*store, Rank(r as u32), size, &l.address_bytes(), deadline())
                    .unwrap()
            });
        }
    });
    // A failed start-up too: a rank that never comes.
    let failed = Arc::new(Keeping { inner: HashStore::new(), kept: Mutex::new(Vec::new()) });
    let l = &listeners[0];
    let short = Instant::now() + Duration::from_millis(600);
    let _ = exchange_addresses(&*failed, Rank(0), 2, &l.address_bytes(), short);
    // The bootstrap target's input: a byte that picks the decoder, then the value.
    let mut n = 0;
    for kept in [&store, &failed] {
        for (key, value) in kept.kept.lock().unwrap().iter() {
            let key = String::from_utf8_lossy(key);
            let pick = if key.ends_with("/result") {
                0
            } else if key.contains("/addr/") {
                1
            } else if key.ends_with("/run") || key.ends_with("/last-failure") {
                2
            } else {
                continue;
            };
            let mut seed = vec![pick];
            seed.extend_from_slice(value);
            write(
                dir,
                "bootstrap",
                &format!("{}_{n}", key.rsplit('/').next().unwrap_or("v")),
                &seed,
            );
            n += 1;
        }
    }
}

fn env(dir: &Path) {
    // Records of (variable index, length, value), in the order the env target lists the
    // variables.
    const NAMES: &[&str] = &[
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "GLOO_AUTH_TOKEN",
        "TORCHELASTIC_RUN_ID",
        "TORCHELASTIC_RESTART_COUNT",
        "TORCHELASTIC_USE_AGENT_STORE",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "PMIX_NAMESPACE",
        "OMPI_MCA_ess_base_jobid",
        "OMPI_MCA_orte_ess_jobid",
        "PMI_RANK",
        "PMI_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_LOCALID",
        "SLURM_NNODES",
        "SLURM_STEP_NUM_NODES",
        "SLURM_JOB_ID",
        "SLURM_JOBID",
        "SLURM_STEP_ID",
        "SLURM_STEPID",
        "SLURM_NODELIST",
        "SLURM_STEP_NODELIST",
        "SLURM_JOB_NODELIST",
    ];
    let launchers: &[(&str, &[(&str, &str)])] = &[
        (
            "torchrun",
            &[
                ("RANK", "1"),
                ("WORLD_SIZE", "4"),
                ("LOCAL_RANK", "1"),
                ("LOCAL_WORLD_SIZE", "4"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "29500"),
                ("TORCHELASTIC_RUN_ID", "none"),
                ("TORCHELASTIC_RESTART_COUNT", "0"),
                ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ],
        ),
        (
            "srun",
            &[
                ("SLURM_PROCID", "3"),
                ("SLURM_NTASKS", "8"),
                ("SLURM_LOCALID", "1"),
                ("SLURM_NNODES", "2"),
                ("SLURM_JOB_ID", "123456"),
                ("SLURM_STEP_ID", "0"),
                ("SLURM_STEP_NODELIST", "node[01-02]"),
            ],
        ),
        (
            "mpirun",
            &[
                ("OMPI_COMM_WORLD_RANK", "0"),
                ("OMPI_COMM_WORLD_SIZE", "2"),
                ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
                ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
                ("PMIX_NAMESPACE", "prterun-host-1234@1"),
            ],
        ),
        (
            "by_hand",
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "[::1]"),
                ("MASTER_PORT", "29501"),
                ("GLOO_AUTH_TOKEN", "0123456789abcdef0123"),
            ],
        ),
        (
            "pmi",
            &[("PMI_RANK", "1"), ("PMI_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")],
        ),
    ];
    for (name, vars) in launchers {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        // Only environments the code accepts are seeds of what launchers really set.
        gloo_rendezvous::parse_env(&map).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut seed = Vec::new();
        for (k, v) in *vars {
            let i = NAMES.iter().position(|n| n == k).expect("a variable the target knows");
            seed.extend_from_slice(&[i as u8, v.len() as u8]);
            seed.extend_from_slice(v.as_bytes());
        }
        write(dir, "env", name, &seed);
    }
}

fn main() {
    let dir: PathBuf = std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()).into();
    tcp_store(&dir);
    torch(&dir);
    redis(&dir);
    address(&dir);
    bootstrap(&dir);
    env(&dir);
}
