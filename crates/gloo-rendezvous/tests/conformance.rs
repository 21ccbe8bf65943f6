//! The store conformance suite (`common/store_suite.rs`) over every store of this crate.

use gloo_rendezvous::{FileStore, HashStore, PrefixStore, Store};
use gloo_testing::deadline;
use std::sync::Arc;

#[macro_use]
#[path = "common/store_suite.rs"]
mod store_suite;
use store_suite::{Fixture, suite};

struct Hash(Arc<HashStore>);
impl Fixture for Hash {
    fn client(&self) -> Box<dyn Store> {
        Box::new(self.0.clone())
    }
}

/// A prefix view over a shared in-process store that also holds another job's keys under
/// the same names, so any leak across prefixes shows.
struct Prefix(Arc<HashStore>);
impl Fixture for Prefix {
    fn client(&self) -> Box<dyn Store> {
        Box::new(PrefixStore::new(self.0.clone(), "job-a"))
    }
}
fn prefix_fixture() -> Prefix {
    let inner = Arc::new(HashStore::new());
    let other = PrefixStore::new(inner.clone(), "job-b");
    for k in [&b"k"[..], b"a", b"b", b"counter", b"cas"] {
        other.set(k, b"other job", deadline(5)).unwrap();
    }
    Prefix(inner)
}

struct File(tempfile::TempDir);
impl Fixture for File {
    fn client(&self) -> Box<dyn Store> {
        Box::new(FileStore::new(self.0.path().join("store")).unwrap())
    }
}
fn file_fixture() -> File {
    File(tempfile::tempdir().unwrap())
}

conformance!(hash_store, Hash(Arc::new(HashStore::new())));
conformance!(prefix_store, prefix_fixture());
conformance!(file_store, file_fixture());

struct Tcp(gloo_rendezvous::TcpStoreServer, Option<Vec<u8>>);
impl Fixture for Tcp {
    fn client(&self) -> Box<dyn Store> {
        let addr = self.0.local_addr().to_string();
        Box::new(gloo_rendezvous::TcpStore::connect(addr, self.1.as_deref(), deadline(10)).unwrap())
    }
}
fn tcp_fixture(token: Option<&[u8]>) -> Tcp {
    let server =
        gloo_rendezvous::TcpStoreServer::bind("127.0.0.1:0".parse().unwrap(), token).unwrap();
    Tcp(server, token.map(<[u8]>::to_vec))
}

conformance!(tcp_store, tcp_fixture(None));
conformance!(tcp_store_with_token, tcp_fixture(Some(b"conformance-job-token")));

#[cfg(feature = "redis")]
struct Redis(gloo_testing::redis::RedisServer);
#[cfg(feature = "redis")]
impl Fixture for Redis {
    fn client(&self) -> Box<dyn Store> {
        let opts = gloo_rendezvous::RedisOptions::with_prefix("conformance");
        Box::new(gloo_rendezvous::RedisStore::connect(&self.0.url(), opts, deadline(10)).unwrap())
    }
}

#[cfg(feature = "redis")]
conformance!(redis_store, Redis(gloo_testing::redis::RedisServer::start(None)));
#[cfg(feature = "redis")]
conformance!(redis_store_with_password, Redis(gloo_testing::redis::RedisServer::start(Some("pw"))));

/// The suite over `rediss://`, the client trusting the server's test CA.
#[cfg(feature = "redis-tls")]
struct RedisTls(gloo_testing::redis::RedisServer);
#[cfg(feature = "redis-tls")]
impl Fixture for RedisTls {
    fn client(&self) -> Box<dyn Store> {
        let mut opts = gloo_rendezvous::RedisOptions::with_prefix("conformance");
        opts.tls_root_cert = self.0.tls().map(gloo_testing::redis::TlsFiles::ca_pem);
        Box::new(gloo_rendezvous::RedisStore::connect(&self.0.url(), opts, deadline(10)).unwrap())
    }
}
#[cfg(feature = "redis-tls")]
conformance!(
    redis_store_over_tls,
    RedisTls(gloo_testing::redis::RedisServer::start_tls(
        Some("pw"),
        gloo_testing::redis::ClientCerts::NotAsked
    ))
);
