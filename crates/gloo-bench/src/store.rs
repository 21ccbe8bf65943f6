//! Where ranks meet: the `gloo-rendezvous` store a `--store` URL names, seen through the two
//! operations the bench needs (publish a value, wait for a key).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use gloo_rendezvous::env::StoreSpec as EnvSpec;
use gloo_rendezvous::{
    EnvConfig, EnvStore, FileStore, HashStore, PrefixStore, RedisOptions, RedisStore, Store,
    TcpStore, TcpStoreServer,
};

use gloo_rendezvous::tcp::ServerConfig;
use gloo_tls::TlsConfig;

use crate::cli::StoreUrl;
use crate::error::{Error, Result};

/// Every key the bench writes starts with this, so a shared store can hold other jobs too.
const PREFIX: &str = "gloo-bench/";

/// The two store operations the bench needs.
pub(crate) trait Kv: Send + Sync {
    /// Publish `value` under `key`.
    fn set(&self, key: &str, value: &[u8], deadline: Instant) -> Result<()>;
    /// Wait until `key` exists (or `deadline` passes) and return its value.
    fn get(&self, key: &str, deadline: Instant) -> Result<Vec<u8>>;
    /// The store itself, every key scoped under this run and then `sub`, for
    /// `gloo_rendezvous::connect` (which wants a store fresh for the job).
    fn scoped(&self, sub: &str) -> Box<dyn Store>;
}

/// A store client, and the server when this process hosts it.
pub(crate) struct Opened {
    store: Arc<dyn Store>,
    /// Kept alive for the whole run: dropping it stops the server.
    _server: Option<TcpStoreServer>,
    /// The `env://` store (on rank 0 it serves the others), kept alive for the whole run.
    _env: Option<EnvStore>,
    url: String,
    /// `gloo-bench/<run>/`, set by [`Opened::join`].
    prefix: String,
}

impl Opened {
    fn new(
        store: impl Store + 'static,
        server: Option<TcpStoreServer>,
        env: Option<EnvStore>,
        url: String,
    ) -> Opened {
        Opened { store: Arc::new(store), _server: server, _env: env, url, prefix: PREFIX.into() }
    }

    fn shared(store: Arc<dyn Store>, env: Option<EnvStore>, url: String) -> Opened {
        Opened { store, _server: None, _env: env, url, prefix: PREFIX.into() }
    }

    /// The store as the report names it (for `env://`, which store the launcher's variables
    /// chose).
    pub(crate) fn name(&self) -> &str {
        &self.url
    }

    /// Count this rank in and scope every later key to this run, so that a long-lived store
    /// (a `gloo-store` server, a shared directory) that still holds an earlier run's
    /// addresses is never read as this run's. The n-th group of `size` ranks to join is run n.
    pub(crate) fn join(&mut self, size: u32, deadline: Instant) -> Result<()> {
        let key = format!("{PREFIX}joined");
        let n = self.store.add(key.as_bytes(), 1, deadline).map_err(|e| Error::Store {
            doing: format!("counting this rank in at {key} in {}", self.url),
            source: e,
        })?;
        let run = (n.max(1) - 1) / i64::from(size.max(1));
        self.prefix = format!("{PREFIX}{run}/");
        Ok(())
    }
}

impl Kv for Opened {
    fn set(&self, key: &str, value: &[u8], deadline: Instant) -> Result<()> {
        let k = format!("{}{key}", self.prefix);
        self.store.set(k.as_bytes(), value, deadline).map_err(|e| Error::Store {
            doing: format!("publishing {k} in {}", self.url),
            source: e,
        })
    }

    fn get(&self, key: &str, deadline: Instant) -> Result<Vec<u8>> {
        let k = format!("{}{key}", self.prefix);
        self.store.get(k.as_bytes(), deadline).map_err(|e| Error::Store {
            doing: format!("waiting for {k} in {}", self.url),
            source: e,
        })
    }

    fn scoped(&self, sub: &str) -> Box<dyn Store> {
        Box::new(PrefixStore::new(self.store.clone(), format!("{}{sub}", self.prefix)))
    }
}

/// The job token, when `GLOO_AUTH_TOKEN` sets one (the TCP store and transport use it).
pub(crate) fn token() -> Option<Vec<u8>> {
    std::env::var_os("GLOO_AUTH_TOKEN").filter(|t| !t.is_empty()).map(|t| t.into_encoded_bytes())
}

/// Start a TCP store server on `addr` (port 0: a free one), for the local launcher; over TLS
/// with `tls`.
pub(crate) fn serve(addr: SocketAddr, tls: Option<TlsConfig>) -> Result<TcpStoreServer> {
    let mut cfg = ServerConfig::with_token(token().as_deref());
    cfg.tls = tls;
    TcpStoreServer::bind_with(addr, cfg)
        .map_err(|e| Error::Store { doing: format!("starting a TCP store on {addr}"), source: e })
}

/// Open the store a `--store` URL names. For `tcp://`, rank 0 hosts the server when the
/// address is free on this machine, as torchrun's rank 0 does; otherwise (a `gloo-store`
/// server, or the local launcher's, already listens there) every rank is a client.
pub(crate) fn open(url: &StoreUrl, rank: u32, deadline: Instant) -> Result<Opened> {
    let shown = url.to_string();
    match url {
        StoreUrl::File(dir) => {
            let store = FileStore::new(dir.clone())
                .map_err(|e| Error::Store { doing: format!("opening {shown}"), source: e })?;
            Ok(Opened::new(store, None, None, shown))
        }
        StoreUrl::Tcp(hp) => {
            let tls = crate::tls::from_env()?;
            let server = if rank == 0 { host(hp, tls.clone()) } else { None };
            let store =
                TcpStore::connect_with(hp.clone(), token().as_deref(), tls.as_ref(), deadline)
                    .map_err(|e| Error::Store {
                        doing: format!("connecting to {shown}"),
                        source: e,
                    })?;
            Ok(Opened::new(store, server, None, shown))
        }
        StoreUrl::Redis(rest) => {
            let opts = RedisOptions::with_prefix("gloo-bench");
            let store = RedisStore::connect(&format!("redis://{rest}"), opts, deadline)
                .map_err(|e| Error::Store { doing: format!("connecting to {shown}"), source: e })?;
            Ok(Opened::new(store, None, None, shown))
        }
        StoreUrl::Env => {
            let cfg = env_config()?;
            let shown = match &cfg.store {
                EnvSpec::TorchAgent { .. } => format!(
                    "env:// (torchrun's agent store at {})",
                    cfg.master_endpoint().unwrap_or_default()
                ),
                EnvSpec::Hosted { .. } => {
                    format!(
                        "env:// (rank 0 hosts tcp://{})",
                        cfg.master_endpoint().unwrap_or_default()
                    )
                }
                EnvSpec::File { dir } => format!("env:// (file://{})", dir.display()),
                _ => "env://".into(),
            };
            let launcher = cfg.launcher.name();
            // Every rank, rank 0 included, talks to the store through the EnvStore's client,
            // shared (Arc) with the bootstrap.
            let env = EnvStore::start(cfg, deadline).map_err(|e| Error::Store {
                doing: format!("starting {shown}, launched by {launcher}"),
                source: e,
            })?;
            Ok(Opened::shared(env.store.clone(), Some(env), shown))
        }
    }
}

/// A store shared by the threads of an in-process run.
pub(crate) fn in_process(store: Arc<HashStore>) -> Opened {
    Opened::new(store, None, None, "in-process".into())
}

/// The `host:port` of a networked store, so plain sockets and listeners bind the interface
/// that reaches it; `None` for a file store.
pub(crate) fn host_port(url: &StoreUrl) -> Option<String> {
    match url {
        StoreUrl::Tcp(hp) => Some(hp.clone()),
        StoreUrl::Redis(rest) => {
            let after_auth = rest.rsplit_once('@').map_or(rest.as_str(), |(_, h)| h);
            Some(after_auth.split_once('/').map_or(after_auth, |(h, _)| h).to_string())
        }
        // Ranks the launcher put on one host meet and connect over loopback.
        StoreUrl::Env => {
            env_config().ok().filter(|c| !c.single_host).and_then(|c| c.master_endpoint())
        }
        StoreUrl::File(_) => None,
    }
}

/// Rank, size and store from the launcher's variables (torchrun, Slurm, Open MPI, PMI).
pub(crate) fn env_config() -> Result<EnvConfig> {
    gloo_rendezvous::env::from_process_env().map_err(|e| Error::Store {
        doing: "reading the env:// start-up variables".into(),
        source: e,
    })
}

/// Rank 0's attempt to host the TCP store at `hp` (over TLS with `tls`).
fn host(hp: &str, tls: Option<TlsConfig>) -> Option<TcpStoreServer> {
    let addr = hp.to_socket_addrs().ok()?.next()?;
    let mut cfg = ServerConfig::with_token(token().as_deref());
    cfg.tls = tls;
    match TcpStoreServer::bind_with(addr, cfg) {
        Ok(s) => {
            say!("gloo-bench: rank 0 hosts the TCP store at {}", s.local_addr());
            Some(s)
        }
        // Someone already serves there (the local launcher, or a gloo-store): use it.
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::AddrInUse) => None,
        Err(e) => {
            let e = gloo_transport::ErrorChain(&e);
            say!("gloo-bench: rank 0 does not host the store at {addr} ({e}); connecting to it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_file_store_round_trips_and_a_missing_key_times_out_naming_it() {
        let dir = std::env::temp_dir().join(format!("gloo-bench-kv-test-{}", std::process::id()));
        let mut kv = open(&StoreUrl::File(dir.clone()), 0, gloo_testing::deadline(10)).unwrap();
        kv.join(1, gloo_testing::deadline(10)).unwrap();
        kv.set("a.b-1", b"hello", gloo_testing::deadline(10)).unwrap();
        assert_eq!(kv.get("a.b-1", gloo_testing::deadline(10)).unwrap(), b"hello");
        let err = kv.get("missing", Instant::now() + Duration::from_millis(20)).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rank_0_hosts_a_tcp_store_on_a_free_address_and_others_find_it() {
        let server = serve("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let url = StoreUrl::Tcp(server.local_addr().to_string());
        // The launcher's server holds the port, so rank 0 becomes a client too.
        let mut a = open(&url, 0, gloo_testing::deadline(10)).unwrap();
        let mut b = open(&url, 1, gloo_testing::deadline(10)).unwrap();
        a.join(2, gloo_testing::deadline(10)).unwrap();
        b.join(2, gloo_testing::deadline(10)).unwrap();
        a.set("k", b"v", gloo_testing::deadline(10)).unwrap();
        assert_eq!(b.get("k", gloo_testing::deadline(10)).unwrap(), b"v");
        // A second run against the same store gets keys of its own.
        let mut c = open(&url, 0, gloo_testing::deadline(10)).unwrap();
        c.join(2, gloo_testing::deadline(10)).unwrap();
        let err = c.get("k", Instant::now() + Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("gloo-bench/1/k"), "{err}");
    }
}
