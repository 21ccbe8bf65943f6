//! The bootstrap over every store, in one process: ranks are threads, and the transport is a
//! stand-in `Listener` whose "address" is `fake:<rank>` and whose communicators are the
//! in-process loopback transport's. (The same scenarios over real TCP between processes are
//! in `multiprocess.rs`.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gloo_rendezvous::{
    Error, FileStore, HashStore, PrefixStore, Store, TcpStore, TcpStoreServer, connect,
};
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
    let server = TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), Some(b"tok")).unwrap();
    let addr = server.local_addr().to_string();
    rendezvous(
        (0..8)
            .map(|_| {
                Box::new(TcpStore::connect(addr.clone(), Some(b"tok"), deadline(10)).unwrap())
                    as Box<dyn Store>
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
        store.wait(&[b"gloo/bootstrap/abort"], deadline(20)).unwrap();
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
    store.set(b"gloo/bootstrap/claim/2", b"x", deadline(5)).unwrap();
    store.set(b"gloo/bootstrap/addr/2", b"\xff\x00garbage", deadline(5)).unwrap();
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
    store.set(b"gloo/bootstrap/claim/2", b"x", deadline(5)).unwrap();
    store.set(b"gloo/bootstrap/addr/2", &entry, deadline(5)).unwrap();
    // Rank 1 published a good one.
    let mut good = b"GBS1".to_vec();
    good.extend_from_slice(&3u32.to_le_bytes());
    good.extend_from_slice(b"fake:1");
    store.set(b"gloo/bootstrap/claim/1", b"y", deadline(5)).unwrap();
    store.set(b"gloo/bootstrap/addr/1", &good, deadline(5)).unwrap();
    let l = listeners(3).into_iter().next().unwrap();
    let e = connect(&store, l, Rank(0), 3, deadline(20)).unwrap_err();
    match &e {
        Error::Transport(t) => assert_eq!(t.peer(), Some(Rank(2)), "{e}"),
        other => panic!("expected a transport error naming rank 2, got {other}"),
    }
    assert!(e.to_string().contains("rank 2"), "{e}");
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
    assert!(matches!(errors[0], Error::BadAddress { rank: 1, .. }), "{}", errors[0]);
    // Rank 1 of a world of 3 sees rank 0's entry with the wrong size, or rank 2 missing.
    assert!(
        matches!(errors[1], Error::BadAddress { rank: 0, .. } | Error::MissingRanks { .. }),
        "{}",
        errors[1]
    );
}

#[test]
fn a_rank_outside_the_world_is_refused() {
    let store = HashStore::new();
    let l = listeners(2).into_iter().next().unwrap();
    let e = connect(&store, l, Rank(2), 2, deadline(5)).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}
