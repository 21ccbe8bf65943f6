//! Connecting the transport under test through `gloo-rendezvous`'s bootstrap: each rank
//! claims its rank, publishes its listening address in the store, waits for everybody's and
//! connects the full mesh.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gloo_shm::auto::{AutoConfig, AutoListener};
use gloo_shm::{ShmComm, ShmConfig, ShmListener};
use gloo_transport::tcp::{TcpConfig, TcpListener};
use gloo_transport::{Communicator, Listener, Rank};

use crate::cli::TransportKind;
use crate::error::{Error, Result};
use crate::store::Kv;

/// How to build the communicator.
#[derive(Debug, Clone)]
pub(crate) struct NetConfig {
    /// The transport.
    pub(crate) kind: TransportKind,
    /// The job name every rank of this mesh shares (two meshes in one run need two names).
    pub(crate) job: String,
    /// The address to listen on (port 0); loopback for a local run.
    pub(crate) ip: IpAddr,
    /// The spin window before a waiting call sleeps; `None`: the transport's default.
    pub(crate) busy_poll: Option<Duration>,
    /// Whether tcp spins through that window instead of yielding between tries: when this
    /// rank is bound to a core of its own (see [`TcpConfig::spin`]).
    pub(crate) tcp_spins: bool,
    /// This rank's TLS configuration (for `--transport tls`).
    pub(crate) tls: Option<gloo_tls::TlsConfig>,
}

impl NetConfig {
    /// This rank's tcp configuration; under `--transport tls` with its TLS layer, and named
    /// after the job the certificates name (the store keys stay scoped by this mesh's name).
    fn tcp(&self, rank: u32, size: u32) -> Result<TcpConfig> {
        let tls = match (self.kind, &self.tls) {
            (TransportKind::Tls, Some(t)) => Some(t),
            (TransportKind::Tls, None) => {
                return Err(Error::Invalid(
                    "--transport tls needs GLOO_TLS_CA, GLOO_TLS_CERT and GLOO_TLS_KEY \
                     (the local launcher makes a throwaway CA when none are set)"
                        .into(),
                ));
            }
            _ => None,
        };
        let job = tls.map_or(self.job.as_str(), |t| t.job());
        let mut tcp = if self.ip.is_loopback() {
            TcpConfig::loopback(job, Rank(rank), size)
        } else {
            TcpConfig::new(job, Rank(rank), size).bind_addr(SocketAddr::new(self.ip, 0))
        };
        if let Some(t) = tls {
            let layer = t.layer(job, Rank(rank)).map_err(|e| {
                Error::Invalid(format!(
                    "TLS: rank {rank}'s certificate: {}",
                    gloo_transport::ErrorChain(&e)
                ))
            })?;
            tcp = tcp.stream_layer(layer);
        }
        if let Some(b) = self.busy_poll {
            tcp = tcp.busy_poll(b);
        }
        if self.tcp_spins {
            // The spin is bounded by the window, so this spins through all of it.
            tcp = tcp.spin(Duration::MAX);
        }
        Ok(tcp)
    }

    fn shm(&self, rank: u32, size: u32) -> ShmConfig {
        let shm = ShmConfig::new(&self.job, Rank(rank), size);
        match self.busy_poll {
            // The whole window yields between looks (the transport's own waits spin first).
            Some(b) => shm.spin(Duration::ZERO, b),
            None => shm,
        }
    }
}

/// Connect `listener` through the store, scoped to the job.
fn bootstrap<L: Listener>(
    listener: L,
    cfg: &NetConfig,
    rank: u32,
    size: u32,
    kv: &dyn Kv,
    deadline: Instant,
) -> Result<L::Comm> {
    let store = kv.scoped(&cfg.job);
    gloo_rendezvous::connect(store.as_ref(), listener, Rank(rank), size, deadline).map_err(|e| {
        Error::Store { doing: format!("connecting the {} mesh", cfg.kind.name()), source: e }
    })
}

/// A connected communicator, and which transport reaches each peer.
pub(crate) struct Connected {
    /// The communicator.
    pub(crate) comm: Box<dyn Communicator>,
    /// `shm to ranks 1, 2; tcp to ranks 3` (the peers of this rank by the link to them).
    pub(crate) links: String,
}

impl Connected {
    /// Every peer of `rank` in a group of `size` over one transport named `kind`.
    pub(crate) fn uniform(comm: Box<dyn Communicator>, kind: &str, rank: u32, size: u32) -> Self {
        let peers: Vec<u32> = (0..size).filter(|r| *r != rank).collect();
        Connected { comm, links: describe(&[(kind, peers)]) }
    }

    fn shm(comm: ShmComm, rank: u32, size: u32) -> Self {
        // shm and tcp always named (a reader looks for both); any other kind as it comes.
        let mut kinds: Vec<(&str, Vec<u32>)> = vec![("shm", Vec::new()), ("tcp", Vec::new())];
        for r in (0..size).filter(|r| *r != rank) {
            let Some(kind) = comm.link_kind(Rank(r)) else { continue };
            let name = kind.name();
            match kinds.iter_mut().find(|(k, _)| *k == name) {
                Some((_, ranks)) => ranks.push(r),
                None => kinds.push((name, vec![r])),
            }
        }
        Connected { comm: Box::new(comm), links: describe(&kinds) }
    }
}

/// `shm to ranks 1, 2; tcp to no rank`.
fn describe(kinds: &[(&str, Vec<u32>)]) -> String {
    let one = |(kind, ranks): &(&str, Vec<u32>)| {
        if ranks.is_empty() {
            format!("{kind} to no rank")
        } else {
            let list: Vec<String> = ranks.iter().map(u32::to_string).collect();
            format!("{kind} to ranks {}", list.join(", "))
        }
    };
    kinds.iter().map(one).collect::<Vec<_>>().join("; ")
}

/// A connected communicator of `size` ranks.
pub(crate) fn connect(
    cfg: &NetConfig,
    rank: u32,
    size: u32,
    kv: &dyn Kv,
    deadline: Instant,
) -> Result<Connected> {
    let listening = |what: &str, e| Error::transport(format!("listening for {what}"), e);
    match cfg.kind {
        TransportKind::Tcp | TransportKind::Tls => {
            let name = cfg.kind.name();
            let listener = TcpListener::bind(cfg.tcp(rank, size)?)
                .map_err(|e| listening(&format!("{name} on {}", cfg.ip), e))?;
            let comm = bootstrap(listener, cfg, rank, size, kv, deadline)?;
            Ok(Connected::uniform(Box::new(comm), name, rank, size))
        }
        TransportKind::Shm => {
            let listener = ShmListener::bind(cfg.shm(rank, size))
                .map_err(|e| listening("shared memory", e.into()))?;
            let comm = bootstrap(listener, cfg, rank, size, kv, deadline)?;
            Ok(Connected::shm(comm, rank, size))
        }
        TransportKind::Auto => {
            let auto = AutoConfig::with(cfg.shm(rank, size), cfg.tcp(rank, size)?);
            let listener = AutoListener::bind(auto)
                .map_err(|e| listening(&format!("shared memory and tcp on {}", cfg.ip), e))?;
            let comm = bootstrap(listener, cfg, rank, size, kv, deadline)?;
            Ok(Connected::shm(comm, rank, size))
        }
        TransportKind::Loopback => Err(Error::Invalid(
            "--transport loopback runs ranks as threads of one process: drop --rank/--store".into(),
        )),
    }
}
