//! The bootstrap over every store, in one process: ranks are threads, and the transport is a
//! stand-in `Listener` whose "address" is `fake:<rank>` and whose communicators are the
//! in-process loopback transport's. (The same scenarios over real TCP between processes are
//! in `multiprocess.rs`.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gloo_rendezvous::{
    Error, FileStore, HashStore, PrefixStore, Store, TcpStore, TcpStoreServer, connect,
};
use gloo_testing::bootstrap_keys::{FAILURE_RECORD, RUN_MARKER, planted_run, run_prefix};
use gloo_testing::deadline;
use gloo_transport::loopback::{LoopbackComm, LoopbackConfig, group};
use gloo_transport::{Communicator, Listener, Rank, Slot};

/// Hands rank `r` its loopback communicator once it has checked every other rank's address.
struct FakeListener {
    rank: u32,
    comms: Arc<Mutex<Vec<Option<LoopbackComm>>>>,
}

impl Listener for FakeListener {
    type Comm = LoopbackComm;

    fn address_bytes(&self) -> Vec<u8> {
        format!("fake:{}", self.rank).into_bytes()
    }

    fn connect_all(
        self,
        addrs: &[Vec<u8>],
        _deadline: Instant,
    ) -> gloo_transport::Result<LoopbackComm> {
        for (r, a) in addrs.iter().enumerate() {
            if r as u32 != self.rank && *a != format!("fake:{r}").into_bytes() {
                return Err(gloo_transport::Error::Protocol {
                    peer: Some(Rank(r as u32)),
                    detail: format!("rank {r} published an address that does not parse"),
                });
            }
        }
        let comm = self.comms.lock().unwrap()[self.rank as usize].take();
        comm.ok_or_else(|| gloo_transport::Error::invalid("rank connected twice"))
    }
}

/// An error and its sources as one line: each error's `Display` says only its own part, so
/// what a test looks for may be further down the chain (checked to be printed once).
fn chain(e: &Error) -> String {
    gloo_testing::errors::chain_printed_once(e).join(": ")
}

fn listeners(size: u32) -> Vec<FakeListener> {
    let comms = Arc::new(Mutex::new(
        group(size, LoopbackConfig::default()).into_iter().map(Some).collect(),
    ));
    (0..size).map(|rank| FakeListener { rank, comms: comms.clone() }).collect()
}

/// Every rank sends its rank number to every other rank and checks what it receives.
fn all_to_all(comm: &dyn Communicator) {
    let me = comm.rank();
    let d = deadline(30);
    for peer in (0..comm.size()).map(Rank).filter(|p| *p != me) {
        comm.send(peer, Slot::new(1, 0), &me.0.to_le_bytes(), d).unwrap();
    }
    for peer in (0..comm.size()).map(Rank).filter(|p| *p != me) {
        let mut buf = [0u8; 4];
        assert_eq!(comm.recv(peer, Slot::new(1, 0), &mut buf, d).unwrap(), 4);
        assert_eq!(u32::from_le_bytes(buf), peer.0);
    }
}

fn rendezvous(stores: Vec<Box<dyn Store>>) {
    let size = stores.len() as u32;
    std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .into_iter()
            .zip(listeners(size))
            .enumerate()
            .map(|(r, (store, l))| {
                s.spawn(move || {
                    let comm = connect(&*store, l, Rank(r as u32), size, deadline(30)).unwrap();
                    assert_eq!((comm.rank(), comm.size()), (Rank(r as u32), size));
                    all_to_all(&comm);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn eight_ranks_over_a_hash_store() {
    let store = Arc::new(HashStore::new());
    rendezvous((0..8).map(|_| Box::new(store.clone()) as Box<dyn Store>).collect());
}

#[test]
fn the_last_rank_deletes_the_bootstrap_keys_so_the_store_serves_the_next_run() {
    let store = Arc::new(HashStore::new());
    for run in 0..3 {
        rendezvous((0..4).map(|_| Box::new(store.clone()) as Box<dyn Store>).collect());
        // Claims, entries, result, counters and the run marker: nothing is left.
        assert_eq!(store.len(), 0, "run {run} left keys in the store");
    }
}

#[test]
fn eight_ranks_over_a_prefix_store_shared_with_another_job() {
    let store = Arc::new(HashStore::new());
    // Another job's bootstrap keys under a different prefix change nothing.
    let other = PrefixStore::new(store.clone(), "other-job");
    other.set(b"gloo/bootstrap/claim/0", b"someone else", deadline(5)).unwrap();
    rendezvous(
        (0..8)
            .map(|_| Box::new(PrefixStore::new(store.clone(), "job")) as Box<dyn Store>)
            .collect(),
    );
}

#[test]
fn eight_ranks_over_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    rendezvous(
        (0..8).map(|_| Box::new(FileStore::new(dir.path()).unwrap()) as Box<dyn Store>).collect(),
    );
}

#[test]
fn eight_ranks_over_a_tcp_store() {
    let server =
        TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), Some(b"bootstrap-test-token"))
            .unwrap();
    let addr = server.local_addr().to_string();
    rendezvous(
        (0..8)
            .map(|_| {
                Box::new(
                    TcpStore::connect(addr.clone(), Some(b"bootstrap-test-token"), deadline(10))
                        .unwrap(),
                ) as Box<dyn Store>
            })
            .collect(),
    );
}

#[test]
fn ranks_that_never_publish_are_named() {
    let store = Arc::new(HashStore::new());
    let size = 8;
    let errors: Vec<Error> = std::thread::scope(|s| {
        let handles: Vec<_> = listeners(size)
            .into_iter()
            .filter(|l| l.rank != 3 && l.rank != 7)
            .map(|l| {
                let store = store.clone();
                s.spawn(move || {
                    let r = Rank(l.rank);
                    connect(&store, l, r, size, Instant::now() + Duration::from_millis(800))
                        .unwrap_err()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(errors.len(), 6);
    for e in errors {
        assert!(matches!(&e, Error::MissingRanks { ranks, .. } if *ranks == vec![3, 7]), "{e}");
        assert!(e.to_string().starts_with("ranks [3, 7] did not publish within"), "{e}");
    }
}

#[test]
fn two_processes_claiming_one_rank_both_fail() {
    let store = Arc::new(HashStore::new());
    let size = 3;
    let mut ls = listeners(size);
    // A second listener for rank 2, as if a launcher started rank 2 twice.
    let dup = FakeListener { rank: 2, comms: ls[2].comms.clone() };
    let errors: Vec<Error> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for l in [ls.pop().unwrap(), dup] {
            let store = store.clone();
            handles.push(
                s.spawn(move || connect(&store, l, Rank(2), size, deadline(20)).unwrap_err()),
            );
        }
        // Start the other ranks once the conflict is on record, so the order is fixed.
        store.wait(&[RUN_MARKER], deadline(20)).unwrap();
        let run = run_prefix(&store.get(RUN_MARKER, deadline(20)).unwrap()).unwrap();
        store.wait(&[format!("{run}/result").as_bytes()], deadline(20)).unwrap();
        for l in ls {
            let store = store.clone();
            let r = Rank(l.rank);
            handles.push(s.spawn(move || connect(&store, l, r, size, deadline(20)).unwrap_err()));
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(errors.len(), 4);
    for e in errors {
        assert!(matches!(e, Error::RankConflict { rank: 2, .. }), "{e}");
    }
}

#[test]
fn a_malformed_entry_names_its_rank() {
    let store = Arc::new(HashStore::new());
    // Something other than a bootstrap entry sits where rank 2's address belongs.
    // Rank 0 joins the run planted here, whose other ranks published these entries.
    let (marker, run) = planted_run([7; 16]);
    store.set(RUN_MARKER, &marker, deadline(5)).unwrap();
    store.set(format!("{run}/claim/2").as_bytes(), b"x", deadline(5)).unwrap();
    store.set(format!("{run}/addr/2").as_bytes(), b"\xff\x00garbage", deadline(5)).unwrap();
    let size = 3;
    let errors: Vec<Error> = std::thread::scope(|s| {
        let handles: Vec<_> = listeners(size)
            .into_iter()
            .take(2)
            .map(|l| {
                let store = store.clone();
                let r = Rank(l.rank);
                s.spawn(move || connect(&store, l, r, size, deadline(20)).unwrap_err())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in errors {
        assert!(matches!(e, Error::BadAddress { rank: 2, .. }), "{e}");
    }
}

#[test]
fn an_address_the_transport_rejects_names_its_rank() {
    let store = Arc::new(HashStore::new());
    // A well-formed entry (tag, world size) around address bytes the transport cannot parse.
    let mut entry = b"GBS1".to_vec();
    entry.extend_from_slice(&3u32.to_le_bytes());
    entry.extend_from_slice(b"not-an-address");
    // Rank 0 joins the run planted here, whose other ranks published these entries.
    let (marker, run) = planted_run([7; 16]);
    store.set(RUN_MARKER, &marker, deadline(5)).unwrap();
    store.set(format!("{run}/claim/2").as_bytes(), b"x", deadline(5)).unwrap();
    store.set(format!("{run}/addr/2").as_bytes(), &entry, deadline(5)).unwrap();
    // Rank 1 published a good one.
    let mut good = b"GBS1".to_vec();
    good.extend_from_slice(&3u32.to_le_bytes());
    good.extend_from_slice(b"fake:1");
    store.set(format!("{run}/claim/1").as_bytes(), b"y", deadline(5)).unwrap();
    store.set(format!("{run}/addr/1").as_bytes(), &good, deadline(5)).unwrap();
    let l = listeners(3).into_iter().next().unwrap();
    let e = connect(&store, l, Rank(0), 3, deadline(20)).unwrap_err();
    match &e {
        Error::Transport(t) => assert_eq!(t.peer(), Some(Rank(2)), "{e}"),
        other => panic!("expected a transport error naming rank 2, got {other}"),
    }
    assert!(chain(&e).contains("rank 2"), "{e}");
}

#[test]
fn the_tcp_transport_rejects_a_malformed_address_naming_the_rank() {
    use gloo_transport::tcp::{TcpConfig, TcpListener};
    let store = HashStore::new();
    // Rank 1's entry is well formed for the bootstrap, but its address bytes are not a TCP
    // address (a store can hold anything).
    let mut entry = b"GBS1".to_vec();
    entry.extend_from_slice(&2u32.to_le_bytes());
    entry.extend_from_slice(b"GTCP\x01\x04garbage");
    // Rank 0 joins the run planted here, whose other ranks published these entries.
    let (marker, run) = planted_run([7; 16]);
    store.set(RUN_MARKER, &marker, deadline(5)).unwrap();
    store.set(format!("{run}/claim/1").as_bytes(), b"x", deadline(5)).unwrap();
    store.set(format!("{run}/addr/1").as_bytes(), &entry, deadline(5)).unwrap();
    let l = TcpListener::bind(TcpConfig::loopback("bad-addr", Rank(0), 2)).unwrap();
    let e = connect(&store, l, Rank(0), 2, deadline(10)).unwrap_err();
    match &e {
        Error::Transport(t) => assert_eq!(t.peer(), Some(Rank(1)), "{e}"),
        other => panic!("expected a transport error naming rank 1, got {other}"),
    }
    assert!(chain(&e).contains("rank 1"), "{e}");
}

#[test]
fn ranks_started_with_different_world_sizes_fail() {
    let store = Arc::new(HashStore::new());
    let errors: Vec<Error> = std::thread::scope(|s| {
        let a = listeners(2).into_iter().next().unwrap();
        let b = listeners(3).into_iter().nth(1).unwrap();
        let (s1, s2) = (store.clone(), store.clone());
        let h1 = s.spawn(move || {
            connect(&s1, a, Rank(0), 2, Instant::now() + Duration::from_secs(3)).unwrap_err()
        });
        let h2 = s.spawn(move || {
            connect(&s2, b, Rank(1), 3, Instant::now() + Duration::from_secs(3)).unwrap_err()
        });
        vec![h1.join().unwrap(), h2.join().unwrap()]
    });
    // Both ranks, the misconfigured one included, name rank 1 and both sizes, at once.
    for e in &errors {
        assert_eq!(*e, Error::WorldSizeMismatch { rank: 1, size: 3, expected: 2 }, "{e}");
        assert!(e.to_string().contains("world of 3 ranks but rank 0 with 2"), "{e}");
    }
}

#[test]
fn a_world_of_one() {
    let store = HashStore::new();
    let l = listeners(1).into_iter().next().unwrap();
    let comm = connect(&store, l, Rank(0), 1, deadline(5)).unwrap();
    assert_eq!((comm.rank(), comm.size()), (Rank(0), 1));
}

#[test]
fn a_rank_outside_the_world_is_refused() {
    let store = HashStore::new();
    let l = listeners(2).into_iter().next().unwrap();
    let e = connect(&store, l, Rank(2), 2, deadline(5)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Lazy connection (`connect_lazy`): the same rendezvous, then each pair connects on first use.

/// `stores.len()` ranks meet through `stores` in lazy mode over TCP; rank 0 and the last rank
/// exchange one message each way and nobody else talks. Every rank then checks that only
/// that pair was connected.
fn lazy_rendezvous(job: &str, stores: Vec<Box<dyn Store>>) {
    use gloo_transport::tcp::{TcpConfig, TcpListener};
    let size = stores.len() as u32;
    let last = Rank(size - 1);
    let barrier = std::sync::Barrier::new(size as usize);
    std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .into_iter()
            .enumerate()
            .map(|(r, store)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let me = Rank(r as u32);
                    let d = deadline(30);
                    let l = TcpListener::bind(TcpConfig::loopback(job, me, size)).unwrap();
                    let comm = gloo_rendezvous::connect_lazy(&*store, l, me, size, d).unwrap();
                    assert_eq!((comm.rank(), comm.size()), (me, size));
                    assert_eq!(comm.connected_peers(), Vec::<Rank>::new(), "rank {r} at start");
                    let slot = Slot::new(3, 0);
                    let mut buf = [0u8; 4];
                    if me == Rank(0) || me == last {
                        let peer = if me == Rank(0) { last } else { Rank(0) };
                        comm.send(peer, slot, &me.0.to_le_bytes(), d).unwrap();
                        assert_eq!(comm.recv(peer, slot, &mut buf, d).unwrap(), 4);
                        assert_eq!(u32::from_le_bytes(buf), peer.0);
                    }
                    // Everybody has finished talking before anybody looks (and drops).
                    barrier.wait();
                    let want = if me == Rank(0) {
                        vec![last]
                    } else if me == last {
                        vec![Rank(0)]
                    } else {
                        Vec::new()
                    };
                    assert_eq!(comm.connected_peers(), want, "rank {r}");
                    barrier.wait();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn lazy_ranks_over_a_hash_store_connect_only_the_pair_that_talks() {
    let store = Arc::new(HashStore::new());
    lazy_rendezvous(
        "lazy-hash",
        (0..5).map(|_| Box::new(store.clone()) as Box<dyn Store>).collect(),
    );
}

#[test]
fn lazy_ranks_over_a_tcp_store_connect_only_the_pair_that_talks() {
    let server =
        TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), Some(b"bootstrap-test-token"))
            .unwrap();
    let addr = server.local_addr().to_string();
    lazy_rendezvous(
        "lazy-tcp-store",
        (0..4)
            .map(|_| {
                Box::new(
                    TcpStore::connect(addr.clone(), Some(b"bootstrap-test-token"), deadline(10))
                        .unwrap(),
                ) as Box<dyn Store>
            })
            .collect(),
    );
}

#[test]
fn lazy_connect_still_names_ranks_that_never_publish() {
    use gloo_transport::tcp::{TcpConfig, TcpListener};
    let store = HashStore::new();
    let l = TcpListener::bind(TcpConfig::loopback("lazy-missing", Rank(0), 3)).unwrap();
    let e = gloo_rendezvous::connect_lazy(
        &store,
        l,
        Rank(0),
        3,
        Instant::now() + Duration::from_secs(1),
    )
    .unwrap_err();
    match &e {
        Error::MissingRanks { ranks, .. } => assert_eq!(ranks, &vec![1, 2], "{e}"),
        other => panic!("expected MissingRanks, got {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Multi-process: the test binary re-executes itself as ranks, which meet through a real store
// and connect over the TCP transport on loopback.

mod multiprocess {
    use super::*;
    use gloo_testing::procs;
    use gloo_transport::tcp::{TcpConfig, TcpListener};

    const STORE_ENV: &str = "GLOO_TEST_STORE";
    const TOKEN: &[u8] = b"multiprocess-test-token";

    /// What the parent keeps alive while its children run.
    #[allow(dead_code)] // The fields are held for their Drop only.
    enum Guard {
        Dir(tempfile::TempDir),
        Tcp(TcpStoreServer),
        #[cfg(feature = "redis")]
        Redis(gloo_testing::redis::RedisServer),
    }

    #[derive(Clone, Copy)]
    enum Kind {
        File,
        Tcp,
        #[cfg(feature = "redis")]
        Redis,
    }

    /// Start the store for a group; returns the environment telling children how to reach it.
    fn start(kind: Kind) -> (Vec<(String, String)>, Guard) {
        gloo_testing::init_tracing();
        match kind {
            Kind::File => {
                let dir = tempfile::tempdir().unwrap();
                let spec = format!("file:{}", dir.path().display());
                (vec![(STORE_ENV.into(), spec)], Guard::Dir(dir))
            }
            Kind::Tcp => {
                let server =
                    TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), Some(TOKEN)).unwrap();
                let spec = format!("tcp:{}", server.local_addr());
                (vec![(STORE_ENV.into(), spec)], Guard::Tcp(server))
            }
            #[cfg(feature = "redis")]
            Kind::Redis => {
                let server = gloo_testing::redis::RedisServer::start(Some("pw"));
                let spec = format!("redis:{}", server.url());
                (vec![(STORE_ENV.into(), spec)], Guard::Redis(server))
            }
        }
    }

    /// In a child: the store the parent set up.
    fn child_store(deadline: Instant) -> gloo_rendezvous::Result<Box<dyn Store>> {
        let spec = std::env::var(STORE_ENV).expect("the parent names the store");
        if let Some(dir) = spec.strip_prefix("file:") {
            return Ok(Box::new(FileStore::new(dir)?));
        }
        if let Some(addr) = spec.strip_prefix("tcp:") {
            return Ok(Box::new(TcpStore::connect(addr, Some(TOKEN), deadline)?));
        }
        #[cfg(feature = "redis")]
        if let Some(url) = spec.strip_prefix("redis:") {
            let opts = gloo_rendezvous::RedisOptions::with_prefix("mp-job");
            return Ok(Box::new(gloo_rendezvous::RedisStore::connect(url, opts, deadline)?));
        }
        panic!("unknown store spec {spec:?}");
    }

    /// A child's rendezvous over TCP, then a message from every rank to every other.
    fn child_rendezvous(rank: u32, size: u32) {
        let d = deadline(90);
        let store = child_store(d).unwrap();
        let listener = TcpListener::bind(TcpConfig::loopback("mp-job", Rank(rank), size)).unwrap();
        let comm = connect(&*store, listener, Rank(rank), size, d).unwrap();
        all_to_all(&comm);
    }

    fn rendezvous(test_name: &str, kind: Kind, size: u32) {
        if let Some((rank, size)) = procs::child_rank() {
            child_rendezvous(rank, size);
            return;
        }
        let (env, _guard) = start(kind);
        let group = procs::spawn_self(test_name, size, &env);
        for outcome in group.wait(deadline(180)) {
            outcome.assert_success();
        }
    }

    macro_rules! rendezvous_tests {
        ($($name:ident: $kind:expr, $size:expr;)*) => {$(
            #[test]
            fn $name() {
                rendezvous(concat!("multiprocess::", stringify!($name)), $kind, $size);
            }
        )*};
    }

    rendezvous_tests! {
        file_store_2: Kind::File, 2;
        file_store_8: Kind::File, 8;
        file_store_32: Kind::File, 32;
        tcp_store_2: Kind::Tcp, 2;
        tcp_store_8: Kind::Tcp, 8;
        tcp_store_32: Kind::Tcp, 32;
    }

    #[cfg(feature = "redis")]
    rendezvous_tests! {
        redis_store_2: Kind::Redis, 2;
        redis_store_8: Kind::Redis, 8;
        redis_store_32: Kind::Redis, 32;
    }

    /// Lazy mode across processes: 6 ranks meet through a TCP store with `connect_lazy`
    /// (with a job token); only ranks 0 and 5 talk, and every rank checks that only that
    /// pair connected.
    #[test]
    fn lazy_tcp_store_6() {
        if let Some((rank, size)) = procs::child_rank() {
            let d = deadline(90);
            let store = child_store(d).unwrap();
            let me = Rank(rank);
            let cfg = TcpConfig::loopback("mp-lazy", me, size)
                .security(gloo_transport::tcp::Security::Token(TOKEN.to_vec()));
            let comm = gloo_rendezvous::connect_lazy(
                &*store,
                TcpListener::bind(cfg).unwrap(),
                me,
                size,
                d,
            )
            .unwrap();
            let last = Rank(size - 1);
            let slot = Slot::new(4, 0);
            let mut buf = [0u8; 4];
            if me == Rank(0) {
                comm.send(last, slot, &rank.to_le_bytes(), d).unwrap();
                assert_eq!(comm.recv(last, slot, &mut buf, d).unwrap(), 4);
                assert_eq!(u32::from_le_bytes(buf), last.0);
                assert_eq!(comm.connected_peers(), vec![last]);
                // Only now may the last rank leave (it waits for this), so it is still
                // connected when looked at above.
                comm.send(last, slot, b"done", d).unwrap();
            } else if me == last {
                assert_eq!(comm.recv(Rank(0), slot, &mut buf, d).unwrap(), 4);
                assert_eq!(u32::from_le_bytes(buf), 0);
                comm.send(Rank(0), slot, &rank.to_le_bytes(), d).unwrap();
                assert_eq!(comm.connected_peers(), vec![Rank(0)]);
                assert_eq!(comm.recv(Rank(0), slot, &mut buf, d).unwrap(), 4);
                assert_eq!(&buf, b"done");
            } else {
                assert_eq!(comm.connected_peers(), Vec::<Rank>::new(), "rank {rank}");
            }
            return;
        }
        let (env, _guard) = start(Kind::Tcp);
        let group = procs::spawn_self("multiprocess::lazy_tcp_store_6", 6, &env);
        for outcome in group.wait(deadline(180)) {
            outcome.assert_success();
        }
    }

    /// `env://` start-up as torchrun launches it: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    /// MASTER_PORT (and the job token); rank 0 hosts the store.
    #[test]
    fn env_start_up_of_4_processes() {
        if procs::child_rank().is_some() {
            let vars = std::env::vars().collect();
            let group = gloo_rendezvous::connect_from_env(
                &vars,
                |cfg| {
                    TcpListener::bind(TcpConfig::loopback("env-job", Rank(cfg.rank), cfg.size))
                        .map_err(gloo_rendezvous::Error::from)
                },
                deadline(60),
            )
            .unwrap();
            assert_eq!(group.store.hosts_server(), group.comm.rank() == Rank(0));
            all_to_all(&group.comm);
            // Rank 0 keeps serving until every rank has said it is done with the store.
            group.store.store.add(b"done", 1, deadline(30)).unwrap();
            if group.comm.rank() == Rank(0) {
                let end = deadline(30);
                while group.store.store.add(b"done", 0, deadline(30)).unwrap() < 4 {
                    assert!(Instant::now() < end, "ranks never finished");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let group =
            procs::spawn_self_with("multiprocess::env_start_up_of_4_processes", 4, |rank| {
                [
                    ("RANK", rank.to_string()),
                    ("WORLD_SIZE", "4".to_string()),
                    ("LOCAL_RANK", rank.to_string()),
                    ("LOCAL_WORLD_SIZE", "4".to_string()),
                    ("MASTER_ADDR", "127.0.0.1".to_string()),
                    ("MASTER_PORT", port.to_string()),
                    ("GLOO_AUTH_TOKEN", "env-job-token-0123456789".to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
            });
        for outcome in group.wait(deadline(120)) {
            outcome.assert_success();
        }
    }

    /// The store dies while ranks wait for a rank that never comes: every rank returns a
    /// clear error (the store is unreachable) within its deadline; none hangs.
    fn store_killed(test_name: &str, kind: Kind) {
        if let Some((rank, size)) = procs::child_rank() {
            let d = Instant::now() + Duration::from_secs(12);
            let store = child_store(d).unwrap();
            let listener =
                TcpListener::bind(TcpConfig::loopback("killed", Rank(rank), size + 1)).unwrap();
            // A world one larger than the ranks started: the rendezvous cannot finish.
            let err = connect(&*store, listener, Rank(rank), size + 1, d).unwrap_err();
            println!("rank {rank}: {err}");
            assert!(matches!(err, Error::Unreachable { .. }), "rank {rank}: {err}");
            // That it came by the deadline is checked by the parent's bounded wait.
            return;
        }
        let (env, guard) = start(kind);
        let size = 4;
        let group = procs::spawn_self(test_name, size, &env);
        // Kill the store once every rank has claimed its rank (is inside the rendezvous).
        let probe: Box<dyn Store> = match &guard {
            Guard::Tcp(s) => Box::new(
                TcpStore::connect(s.local_addr().to_string(), Some(TOKEN), deadline(10)).unwrap(),
            ),
            #[cfg(feature = "redis")]
            Guard::Redis(s) => Box::new(
                gloo_rendezvous::RedisStore::connect(
                    &s.url(),
                    gloo_rendezvous::RedisOptions::with_prefix("mp-job"),
                    deadline(10),
                )
                .unwrap(),
            ),
            Guard::Dir(_) => unreachable!("only network stores can be killed"),
        };
        probe.wait(&[RUN_MARKER], deadline(60)).unwrap();
        let run = run_prefix(&probe.get(RUN_MARKER, deadline(60)).unwrap()).unwrap();
        let claims: Vec<Vec<u8>> =
            (0..size).map(|r| format!("{run}/addr/{r}").into_bytes()).collect();
        let refs: Vec<&[u8]> = claims.iter().map(Vec::as_slice).collect();
        probe.wait(&refs, deadline(60)).unwrap();
        drop(probe);
        drop(guard);
        for outcome in group.wait(deadline(60)) {
            outcome.assert_success();
        }
    }

    #[test]
    fn tcp_store_killed_mid_rendezvous() {
        store_killed("multiprocess::tcp_store_killed_mid_rendezvous", Kind::Tcp);
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_store_killed_mid_rendezvous() {
        store_killed("multiprocess::redis_store_killed_mid_rendezvous", Kind::Redis);
    }
}

/// An address in the store that is multicast, broadcast or unspecified (also as an
/// IPv4-mapped IPv6 address) is refused at once as a corrupt entry naming the rank, never
/// dialled until the deadline (it used to be).
#[test]
fn the_tcp_transport_refuses_undialable_addresses_at_once_naming_the_rank() {
    use gloo_transport::tcp::{TcpConfig, TcpListener};
    let v4 = |ip: [u8; 4]| {
        let mut a = b"GTCP\x01\x04".to_vec();
        a.extend_from_slice(&29500u16.to_le_bytes());
        a.extend_from_slice(&ip);
        a
    };
    let v6 = |ip: std::net::Ipv6Addr| {
        let mut a = b"GTCP\x01\x06".to_vec();
        a.extend_from_slice(&29500u16.to_le_bytes());
        a.extend_from_slice(&ip.octets());
        a.extend_from_slice(&[0u8; 8]);
        a
    };
    for (what, addr) in [
        ("224.0.0.1", v4([224, 0, 0, 1])),
        ("255.255.255.255", v4([255, 255, 255, 255])),
        ("0.0.0.0", v4([0, 0, 0, 0])),
        ("::ffff:0.0.0.0", v6("::ffff:0.0.0.0".parse().unwrap())),
        ("::ffff:224.0.0.1", v6("::ffff:224.0.0.1".parse().unwrap())),
        ("ff02::1", v6("ff02::1".parse().unwrap())),
    ] {
        let store = HashStore::new();
        let mut entry = b"GBS1".to_vec();
        entry.extend_from_slice(&2u32.to_le_bytes());
        entry.extend_from_slice(&addr);
        // Rank 0 joins the run planted here, whose other ranks published these entries.
        let (marker, run) = planted_run([7; 16]);
        store.set(RUN_MARKER, &marker, deadline(5)).unwrap();
        store.set(format!("{run}/claim/1").as_bytes(), b"x", deadline(5)).unwrap();
        store.set(format!("{run}/addr/1").as_bytes(), &entry, deadline(5)).unwrap();
        let l = TcpListener::bind(TcpConfig::loopback("undialable", Rank(0), 2)).unwrap();
        let e = connect(&store, l, Rank(0), 2, deadline(60)).unwrap_err();
        match &e {
            Error::Transport(t) => assert_eq!(t.peer(), Some(Rank(1)), "{what}: {e}"),
            other => panic!("{what}: expected a transport error naming rank 1, got {other}"),
        }
        assert!(chain(&e).contains("cannot be dialled"), "{what}: {e}");
    }
}

/// A failed start-up (here a rank with the wrong world size) does not block the next job on
/// the same file store directory: rank 0 deletes the failed run's keys once the others have
/// read the failure. (The next job used to fail with a rank conflict until someone cleaned
/// the directory.)
#[test]
fn a_failed_start_up_leaves_nothing_that_blocks_the_next_job_on_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let run = |sizes: &[u32]| -> Vec<gloo_rendezvous::Result<()>> {
        std::thread::scope(|s| {
            let handles: Vec<_> = sizes
                .iter()
                .enumerate()
                .map(|(r, &size)| {
                    let store = FileStore::new(dir.path()).unwrap();
                    let l = listeners(size.max(sizes.len() as u32)).into_iter().nth(r).unwrap();
                    s.spawn(move || {
                        connect(&store, l, Rank(r as u32), size, deadline(30)).map(drop)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let failed = run(&[3, 3, 4]);
    for r in &failed {
        assert!(matches!(r, Err(Error::WorldSizeMismatch { rank: 2, .. })), "{r:?}");
    }
    for r in run(&[3, 3, 3]) {
        r.unwrap();
    }
}

/// A rank's store that goes dead (every call fails, nothing more is written) from the first
/// call of one kind on: the rank's process died at that point of the rendezvous, leaving in
/// the store whatever it had written.
struct DiesAt {
    inner: FileStore,
    at: &'static str,
    dead: std::sync::atomic::AtomicBool,
}

impl DiesAt {
    fn new(dir: &std::path::Path, at: &'static str) -> DiesAt {
        DiesAt { inner: FileStore::new(dir).unwrap(), at, dead: Default::default() }
    }

    fn call(&self, what: &str) -> gloo_rendezvous::Result<()> {
        use std::sync::atomic::Ordering;
        if what == self.at {
            self.dead.store(true, Ordering::SeqCst);
        }
        if self.dead.load(Ordering::SeqCst) {
            return Err(Error::Unreachable {
                endpoint: "a dead process".into(),
                detail: format!("killed at its first {what}"),
                waited: Duration::ZERO,
                source: None,
            });
        }
        Ok(())
    }
}

impl Store for DiesAt {
    fn set(&self, key: &[u8], value: &[u8], d: Instant) -> gloo_rendezvous::Result<()> {
        self.call("set")?;
        self.inner.set(key, value, d)
    }
    fn try_get(&self, key: &[u8], d: Instant) -> gloo_rendezvous::Result<Option<Vec<u8>>> {
        self.call("try_get")?;
        self.inner.try_get(key, d)
    }
    fn wait(&self, keys: &[&[u8]], d: Instant) -> gloo_rendezvous::Result<()> {
        self.call("wait")?;
        self.inner.wait(keys, d)
    }
    fn add(&self, key: &[u8], delta: i64, d: Instant) -> gloo_rendezvous::Result<i64> {
        self.call("add")?;
        self.inner.add(key, delta, d)
    }
    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        d: Instant,
    ) -> gloo_rendezvous::Result<gloo_rendezvous::CompareSet> {
        self.call("compare_set")?;
        self.inner.compare_set(key, expected, new, d)
    }
    fn multi_get(&self, keys: &[&[u8]], d: Instant) -> gloo_rendezvous::Result<Vec<Vec<u8>>> {
        self.call("multi_get")?;
        self.inner.multi_get(keys, d)
    }
    fn multi_set(&self, pairs: &[(&[u8], &[u8])], d: Instant) -> gloo_rendezvous::Result<()> {
        self.call("multi_set")?;
        self.inner.multi_set(pairs, d)
    }
    fn append(&self, key: &[u8], value: &[u8], d: Instant) -> gloo_rendezvous::Result<()> {
        self.call("append")?;
        self.inner.append(key, value, d)
    }
    fn delete(&self, key: &[u8], d: Instant) -> gloo_rendezvous::Result<bool> {
        self.call("delete")?;
        self.inner.delete(key, d)
    }
}

/// Every rank's outcome of one run of `exchange_addresses` (rank r publishes `<tag>:<r>`).
fn exchange(
    stores: Vec<Box<dyn Store>>,
    tag: &str,
    until: Instant,
) -> Vec<gloo_rendezvous::Result<Vec<Vec<u8>>>> {
    let size = stores.len() as u32;
    std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .into_iter()
            .enumerate()
            .map(|(r, store)| {
                let addr = format!("{tag}:{r}").into_bytes();
                s.spawn(move || {
                    gloo_rendezvous::exchange_addresses(&*store, Rank(r as u32), size, &addr, until)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn file_stores(dir: &std::path::Path, n: usize) -> Vec<Box<dyn Store>> {
    (0..n).map(|_| Box::new(FileStore::new(dir).unwrap()) as Box<dyn Store>).collect()
}

/// A run of 2 ranks over a file store in `dir` whose rank `dies` dies at its first `at`.
fn dead_run(dir: &std::path::Path, dies: usize, at: &'static str) {
    let mut stores = file_stores(dir, 2);
    stores[dies] = Box::new(DiesAt::new(dir, at));
    // Short: the survivor gives up soon (a follower left alone names the missing rank).
    let outcomes = exchange(stores, "old", Instant::now() + Duration::from_secs(2));
    assert!(outcomes[dies].is_err() || at == "delete", "{:?}", outcomes[dies]);
}

/// Set the time the run in `dir`'s marker is over by (ms since the Unix epoch).
fn set_marker_end(dir: &std::path::Path, over_by_ms: u64) -> String {
    let store = FileStore::new(dir).unwrap();
    let mut marker = store.get(RUN_MARKER, deadline(5)).unwrap();
    let run = run_prefix(&marker).expect("the dead run left its marker");
    let n = marker.len();
    marker[n - 8..].copy_from_slice(&over_by_ms.to_le_bytes());
    store.set(RUN_MARKER, &marker, deadline(5)).unwrap();
    run
}

/// Issue 14 §2: a job whose rank died in its rendezvous left its keys in the store (here a
/// file store directory: nothing expires there). The job restarted on the same store with the
/// same prefix must never read the dead run's entries or result as its own (it would connect
/// to stale addresses, or wait for ranks that are gone). While the dead run is not over by its
/// marker, every restarted rank fails at once with `RankConflict` (not at its deadline); once
/// it is over, the restarted job starts a new run and gets the new addresses.
#[test]
fn a_job_restarted_after_a_rank_died_never_takes_the_dead_runs_keys_for_its_own() {
    // Rank 0 dies as it starts gathering; rank 1 dies after reading the addresses, before it
    // cleaned up (the dead run's result, with its addresses, stays in the store).
    for (dies, at) in [(0, "multi_get"), (1, "delete")] {
        let dir = tempfile::tempdir().unwrap();
        dead_run(dir.path(), dies, at);
        // Not over for a long while yet (the test does not wait for clocks).
        set_marker_end(dir.path(), u64::MAX / 2);
        for (r, outcome) in
            exchange(file_stores(dir.path(), 2), "new", deadline(60)).into_iter().enumerate()
        {
            match outcome {
                Err(Error::RankConflict { rank, .. }) => assert_eq!(rank as usize, r),
                other => panic!("rank {dies} died at {at}: restarted rank {r} got {other:?}"),
            }
        }
        // Over (as if its deadline and the slack for clocks had passed).
        let dead = set_marker_end(dir.path(), 0);
        for outcome in exchange(file_stores(dir.path(), 2), "new", deadline(60)) {
            assert_eq!(
                outcome.unwrap(),
                vec![b"new:0".to_vec(), b"new:1".to_vec()],
                "rank {dies} died at {at}"
            );
        }
        // The new run did not touch the dead one's keys (they are litter in a file store).
        let store = FileStore::new(dir.path()).unwrap();
        assert!(
            store.try_get(format!("{dead}/claim/1").as_bytes(), deadline(5)).unwrap().is_some()
        );
    }
}

/// Anything in the run marker's place that is not a marker is replaced by a new run.
#[test]
fn a_run_marker_that_is_not_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path()).unwrap();
    for junk in [&b"garbage"[..], b"", b"GBN1", &[0u8; 28]] {
        store.set(RUN_MARKER, junk, deadline(5)).unwrap();
        for outcome in exchange(file_stores(dir.path(), 2), "new", deadline(60)) {
            assert_eq!(outcome.unwrap(), vec![b"new:0".to_vec(), b"new:1".to_vec()]);
        }
    }
}

/// Each kind of store the late-rank tests run over: a fresh store, and a way to open another
/// client of it (one per rank, as separate processes would).
fn each_store(test: impl Fn(&dyn Fn() -> Box<dyn Store>)) {
    let hash = Arc::new(HashStore::new());
    test(&|| Box::new(hash.clone()));
    let dir = tempfile::tempdir().unwrap();
    test(&|| Box::new(FileStore::new(dir.path()).unwrap()));
    let server = TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let addr = server.local_addr().to_string();
    test(&|| Box::new(TcpStore::connect(addr.clone(), None, deadline(10)).unwrap()));
}

/// Ranks `0..` of one run with their world sizes and deadlines, each through its own client;
/// every rank's outcome once all have returned (rank 0 returns after it cleaned up).
fn failed_run(
    open: &dyn Fn() -> Box<dyn Store>,
    ranks: &[(u32, u32, Instant)],
) -> Vec<gloo_rendezvous::Result<Vec<Vec<u8>>>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ranks
            .iter()
            .map(|&(rank, size, until)| {
                let store = open();
                s.spawn(move || {
                    let addr = format!("old:{rank}").into_bytes();
                    gloo_rendezvous::exchange_addresses(&*store, Rank(rank), size, &addr, until)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Issue 14 §2 / issue 11 §3: a rank that arrives after rank 0 reported a failed start-up and
/// deleted the run's keys used to start a run of its own and wait out its whole deadline
/// (60 s here) for ranks that had long gone, then report them as missing. It now finds the
/// failed run's record and fails within seconds with `RunFailed` carrying the run's cause
/// (a world-size mismatch here, missing ranks below); the record is the only key left.
#[test]
fn a_rank_that_arrives_after_a_failed_run_ended_gets_its_cause_long_before_its_deadline() {
    each_store(|open| {
        // Rank 1 was started with a world of 2: both ranks there fail at once.
        let early = failed_run(open, &[(0, 3, deadline(60)), (1, 2, deadline(60))]);
        let cause = Error::WorldSizeMismatch { rank: 1, size: 2, expected: 3 };
        for r in &early {
            assert_eq!(r.as_ref().unwrap_err(), &cause);
        }
        let store = open();
        assert!(store.try_get(FAILURE_RECORD, deadline(5)).unwrap().is_some());
        assert_eq!(store.try_get(RUN_MARKER, deadline(5)).unwrap(), None);
        // Rank 2 arrives late, with a deadline a minute away.
        let e = gloo_rendezvous::exchange_addresses(&*open(), Rank(2), 3, b"late:2", deadline(60))
            .unwrap_err();
        match &e {
            Error::RunFailed { cause: c, run, .. } => {
                assert_eq!(**c, cause, "{e}");
                assert_eq!(run.len(), 32, "{e}");
            }
            other => panic!("the late rank got {other:?}"),
        }
        assert!(chain(&e).contains("world of 2 ranks but rank 0 with 3"), "{e}");
        assert_eq!(store.try_get(RUN_MARKER, deadline(5)).unwrap(), None, "no run started");
    });
}

/// The same with a rank that never came: rank 0 gives up at its (short) deadline and names
/// rank 2 as missing; rank 2, arriving after, is told that its run failed without it.
#[test]
fn a_rank_that_arrives_after_its_run_gave_up_on_it_is_told_so() {
    each_store(|open| {
        let short = Instant::now() + Duration::from_millis(1500);
        let early = failed_run(open, &[(0, 3, short), (1, 3, deadline(60))]);
        for r in &early {
            assert!(
                matches!(r, Err(Error::MissingRanks { ranks, .. }) if *ranks == vec![2]),
                "{r:?}"
            );
        }
        let e = gloo_rendezvous::exchange_addresses(&*open(), Rank(2), 3, b"late:2", deadline(60))
            .unwrap_err();
        match &e {
            Error::RunFailed { cause, .. } => {
                assert!(matches!(&**cause, Error::MissingRanks { ranks, .. } if *ranks == vec![2]))
            }
            other => panic!("the late rank got {other:?}"),
        }
        assert!(chain(&e).contains("ranks [2] did not publish"), "{e}");
    });
}

/// The record holds only until the failed run's own end, and a new job is never blocked by
/// it: once it has expired, a lone rank 1 of a new job joins a new run and waits for its
/// rank 0 as usual (with the record live it would have failed within seconds instead); the
/// new rank 0 deletes the record, so the store ends empty. (A new job that restarts while
/// the record is live is `a_failed_start_up_leaves_nothing_that_blocks_the_next_job...`.)
#[test]
fn an_expired_failure_record_does_not_stop_a_new_job_and_a_new_rank_0_deletes_it() {
    use gloo_testing::bootstrap_keys::with_record_expiry;
    each_store(|open| {
        let early = failed_run(open, &[(0, 3, deadline(60)), (1, 2, deadline(60))]);
        assert!(early.iter().all(|r| r.is_err()));
        let store = open();
        let record = store.get(FAILURE_RECORD, deadline(5)).unwrap();
        store.set(FAILURE_RECORD, &with_record_expiry(&record, 0), deadline(5)).unwrap();
        let outcomes = std::thread::scope(|s| {
            let (s1, s0) = (open(), open());
            let r1 = s.spawn(move || {
                gloo_rendezvous::exchange_addresses(&*s1, Rank(1), 2, b"new:1", deadline(60))
            });
            // Rank 0 starts only once rank 1 has claimed its rank in a new run.
            gloo_testing::wait_for(
                "rank 1's claim in a new run",
                30,
                || {
                    let marker = store.try_get(RUN_MARKER, deadline(5)).unwrap();
                    let run = marker.as_deref().and_then(run_prefix)?;
                    store.try_get(format!("{run}/claim/1").as_bytes(), deadline(5)).unwrap()
                },
                Option::is_some,
            );
            let r0 = gloo_rendezvous::exchange_addresses(&*s0, Rank(0), 2, b"new:0", deadline(60));
            [r0, r1.join().unwrap()]
        });
        for r in outcomes {
            assert_eq!(r.unwrap(), vec![b"new:0".to_vec(), b"new:1".to_vec()]);
        }
        assert_eq!(store.try_get(FAILURE_RECORD, deadline(5)).unwrap(), None);
        assert_eq!(store.try_get(RUN_MARKER, deadline(5)).unwrap(), None);
    });
}

/// A rank that joined a run just as rank 0 was cleaning it up (the failure's result already
/// deleted, the marker not yet) finds the run's failure record while it waits, and fails
/// with the cause within about a second instead of at its deadline, deleting what it wrote
/// into the dead run. Staged: a run whose rank 0 published its entry and nothing else; rank
/// 1 joins it; then the record appears, as rank 0's clean-up leaves it.
#[test]
fn a_rank_that_joined_a_run_being_cleaned_up_finds_its_failure_record() {
    use gloo_testing::bootstrap_keys::world_size_failure_record;
    each_store(|open| {
        let store = open();
        let id = [9; 16];
        let (marker, run) = planted_run(id);
        store.set(RUN_MARKER, &marker, deadline(5)).unwrap();
        store.set(format!("{run}/claim/0").as_bytes(), b"x", deadline(5)).unwrap();
        let e = std::thread::scope(|s| {
            let s1 = open();
            let r1 = s.spawn(move || {
                gloo_rendezvous::exchange_addresses(&*s1, Rank(1), 2, b"late:1", deadline(60))
            });
            let addr1 = format!("{run}/addr/1");
            gloo_testing::wait_for(
                "rank 1's entry",
                30,
                || store.try_get(addr1.as_bytes(), deadline(5)).unwrap().is_some(),
                |there| *there,
            );
            let record = world_size_failure_record(id, u64::MAX, (2, 4, 2));
            store.set(FAILURE_RECORD, &record, deadline(5)).unwrap();
            r1.join().unwrap().unwrap_err()
        });
        match &e {
            Error::RunFailed { cause, run: r, .. } => {
                assert_eq!(**cause, Error::WorldSizeMismatch { rank: 2, size: 4, expected: 2 });
                assert_eq!(*r, "09".repeat(16));
            }
            other => panic!("rank 1 got {other:?}"),
        }
        for key in ["addr/1", "claim/1", "joined"] {
            let key = format!("{run}/{key}");
            assert_eq!(store.try_get(key.as_bytes(), deadline(5)).unwrap(), None, "{key}");
        }
        store.delete(RUN_MARKER, deadline(5)).unwrap();
        store.delete(FAILURE_RECORD, deadline(5)).unwrap();
        store.delete(format!("{run}/claim/0").as_bytes(), deadline(5)).unwrap();
    });
}
