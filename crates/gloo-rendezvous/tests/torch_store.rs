//! `TorchStore` against a real PyTorch `torch.distributed.TCPStore` server (libuv and legacy
//! backends): the store conformance suite, a key exchange between a Python client and this
//! client, waits that end at our deadline through `CANCEL_WAIT`, a group bootstrapped through
//! it, and a server that is not a torch store.
//!
//! Needs the PyTorch environment `.ci/torch-venv` installs (see `gloo_testing::torch`).

use std::time::{Duration, Instant};

use gloo_rendezvous::{Error, Store, TorchOptions, TorchStore, connect};
use gloo_testing::deadline;
use gloo_testing::torch::{Backend, TorchServer, run_python};
use gloo_transport::tcp::{TcpConfig, TcpListener};
use gloo_transport::{Communicator, Rank, Slot};

#[macro_use]
#[path = "common/store_suite.rs"]
mod store_suite;
use store_suite::{Fixture, suite};

struct Torch(TorchServer);
impl Fixture for Torch {
    fn client(&self) -> Box<dyn Store> {
        Box::new(TorchStore::connect(self.0.endpoint(), deadline(10)).unwrap())
    }
    fn refuses_overflow(&self) -> bool {
        false
    }
}

conformance!(torch_libuv, Torch(TorchServer::start(Backend::Libuv)));
conformance!(torch_legacy, Torch(TorchServer::start(Backend::Legacy)));

/// Python's `TCPStore` client and ours see the same keys: each sets, waits for and reads the
/// other's keys, both add to one counter, and Python reads a value Rust set with every byte.
fn python_and_rust_exchange_keys(backend: Backend) {
    gloo_testing::init_tracing();
    let server = TorchServer::start(backend);
    let rust = TorchStore::connect(server.endpoint(), deadline(10)).unwrap();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    rust.set(b"from-rust/bytes", &all_bytes, deadline(10)).unwrap();
    rust.multi_set(&[(b"from-rust/a", b"1"), (b"from-rust/b", b"2")], deadline(10)).unwrap();
    assert_eq!(rust.add(b"shared/counter", 5, deadline(10)).unwrap(), 5);
    let py = std::thread::spawn({
        let port = server.port().to_string();
        move || {
            run_python(
                r#"
import sys, datetime, torch.distributed as d
s = d.TCPStore("127.0.0.1", int(sys.argv[1]), is_master=False, timeout=datetime.timedelta(seconds=30))
assert s.get("from-rust/bytes") == bytes(range(256)), s.get("from-rust/bytes")
assert s.multi_get(["from-rust/a", "from-rust/b"]) == [b"1", b"2"]
assert s.add("shared/counter", 10) == 15
s.set("from-python/k", b"py\x00value")
s.wait(["from-rust/late"])
assert s.get("from-rust/late") == b"late"
assert s.compare_set("from-python/cas", "", "first") == b"first"
s.append("from-python/log", "ab")
s.append("from-python/log", "cd")
print("python ok", flush=True)
"#,
                &[&port],
            )
        }
    });
    assert_eq!(rust.get(b"from-python/k", deadline(30)).unwrap(), b"py\x00value");
    rust.set(b"from-rust/late", b"late", deadline(10)).unwrap();
    let out = py.join().unwrap();
    assert!(out.contains("python ok"), "{out}");
    assert_eq!(rust.add(b"shared/counter", 0, deadline(10)).unwrap(), 15);
    assert_eq!(rust.get(b"from-python/cas", deadline(10)).unwrap(), b"first");
    assert_eq!(rust.get(b"from-python/log", deadline(10)).unwrap(), b"abcd");
    // Python sees the keys under "/" as we do: our delete removes its key.
    assert!(rust.delete(b"from-python/k", deadline(10)).unwrap());
    let out = run_python(
        r#"
import sys, datetime, torch.distributed as d
s = d.TCPStore("127.0.0.1", int(sys.argv[1]), is_master=False, timeout=datetime.timedelta(seconds=10))
print(s.check(["from-python/k"]), s.check(["from-rust/a"]))
"#,
        &[&server.port().to_string()],
    );
    assert_eq!(out.trim(), "False True");
}

#[test]
fn python_and_rust_exchange_keys_libuv() {
    python_and_rust_exchange_keys(Backend::Libuv);
}

#[test]
fn python_and_rust_exchange_keys_legacy() {
    python_and_rust_exchange_keys(Backend::Legacy);
}

/// A wait that times out ends at our deadline with `CANCEL_WAIT`, and the same connection
/// then serves the next call (no late `STOP_WAITING` byte is taken for its answer).
#[test]
fn a_timed_out_wait_is_cancelled_and_the_connection_stays_usable() {
    let server = TorchServer::start(Backend::Libuv);
    let s = TorchStore::connect(server.endpoint(), deadline(10)).unwrap();
    for round in 0..20 {
        let key = format!("race/{round}");
        let writer = std::thread::spawn({
            let endpoint = server.endpoint();
            let key = key.clone();
            move || {
                let w = TorchStore::connect(endpoint, deadline(10)).unwrap();
                // Set the key around the waiter's deadline, so some rounds race the cancel.
                std::thread::sleep(Duration::from_millis(45 + round % 10));
                w.set(key.as_bytes(), b"v", deadline(10)).unwrap();
            }
        });
        let r = s.get(key.as_bytes(), Instant::now() + Duration::from_millis(50));
        match r {
            Ok(v) => assert_eq!(v, b"v"),
            Err(Error::Timeout { keys, .. }) => assert_eq!(keys, vec![key.clone().into_bytes()]),
            Err(e) => panic!("round {round}: {e}"),
        }
        writer.join().unwrap();
        // The connection is in step: a value written now is read back exactly.
        s.set(b"after", round.to_string().as_bytes(), deadline(10)).unwrap();
        assert_eq!(s.get(b"after", deadline(10)).unwrap(), round.to_string().as_bytes());
    }
}

#[test]
fn ping_confirms_a_connection_to_a_2_5_server() {
    let server = TorchServer::start(Backend::Libuv);
    let mut opts = TorchOptions::default();
    opts.ping = true;
    let s = TorchStore::connect_with(server.endpoint(), opts, deadline(10)).unwrap();
    s.set(b"k", b"v", deadline(10)).unwrap();
    assert_eq!(s.get(b"k", deadline(10)).unwrap(), b"v");
    assert!(s.num_keys(deadline(10)).unwrap() >= 1);
}

/// Values over the libuv server's 8 MiB limit are refused here, naming the key, instead of
/// the server dropping the connection.
#[test]
fn a_value_over_the_torch_limit_is_refused_naming_the_key() {
    let server = TorchServer::start(Backend::Libuv);
    let s = TorchStore::connect(server.endpoint(), deadline(10)).unwrap();
    let e = s.set(b"too-big", &vec![0u8; (8 << 20) + 1], deadline(10)).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument { key: Some(k), .. } if k == b"too-big"), "{e}");
    s.set(b"fits", &vec![1u8; 8 << 20], deadline(20)).unwrap();
    assert_eq!(s.get(b"fits", deadline(20)).unwrap().len(), 8 << 20);
}

/// A frozen server: every call returns by its deadline (plus the cancel grace), naming its key.
#[test]
fn a_frozen_server_fails_calls_by_their_deadline_naming_the_key() {
    let server = TorchServer::start(Backend::Libuv);
    let s = TorchStore::connect(server.endpoint(), deadline(10)).unwrap();
    server.signal("STOP");
    let start = Instant::now();
    let e = s.get(b"frozen/key", Instant::now() + Duration::from_millis(500)).unwrap_err();
    let took = start.elapsed();
    server.signal("CONT");
    assert!(e.to_string().contains("frozen/key"), "{e}");
    // Bounded, not timed: the call came back (a hang would fail the row's time limit).
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// Ranks meet through the torch store (as under torchrun) and connect over TCP.
#[test]
fn four_ranks_bootstrap_through_a_torch_store() {
    let server = TorchServer::start(Backend::Libuv);
    let size = 4;
    std::thread::scope(|sc| {
        for r in 0..size {
            let endpoint = server.endpoint();
            sc.spawn(move || {
                let d = deadline(60);
                let store = TorchStore::connect(endpoint, d).unwrap();
                let l =
                    TcpListener::bind(TcpConfig::loopback("torch-boot", Rank(r), size)).unwrap();
                let comm = connect(&store, l, Rank(r), size, d).unwrap();
                let peer = Rank((r + 1) % size);
                let from = Rank((r + size - 1) % size);
                comm.send(peer, Slot::new(1, 0), &r.to_le_bytes(), d).unwrap();
                let mut buf = [0u8; 4];
                comm.recv(from, Slot::new(1, 0), &mut buf, d).unwrap();
                assert_eq!(u32::from_le_bytes(buf), from.0);
            });
        }
    });
}

/// A server that is not a 2.2+ torch store (here our own TCP store) is named as such at
/// once, not retried until the deadline.
#[test]
fn a_server_that_is_not_a_torch_store_is_named() {
    let ours = gloo_rendezvous::TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let e = TorchStore::connect(ours.local_addr().to_string(), deadline(5)).unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    assert!(e.to_string().contains("not a PyTorch TCPStore"), "{e}");
}
