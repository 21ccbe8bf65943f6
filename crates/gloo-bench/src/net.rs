//! Connecting the transport under test through `gloo-rendezvous`'s bootstrap: each rank
//! claims its rank, publishes its listening address in the store, waits for everybody's and
//! connects the full mesh.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gloo_shm::auto::{AutoConfig, AutoListener};
use gloo_shm::{ShmConfig, ShmListener};
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
}

impl NetConfig {
    fn tcp(&self, rank: u32, size: u32) -> TcpConfig {
        let mut tcp = if self.ip.is_loopback() {
            TcpConfig::loopback(&self.job, Rank(rank), size)
        } else {
            TcpConfig::new(&self.job, Rank(rank), size).bind_addr(SocketAddr::new(self.ip, 0))
        };
        if let Some(b) = self.busy_poll {
            tcp = tcp.busy_poll(b);
        }
        tcp
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
) -> Result<Box<dyn Communicator>> {
    let store = kv.scoped(&cfg.job);
    let comm = gloo_rendezvous::connect(store.as_ref(), listener, Rank(rank), size, deadline)
        .map_err(|e| Error::Store {
            doing: format!("connecting the {} mesh", cfg.kind.name()),
            source: e,
        })?;
    Ok(Box::new(comm))
}

/// A connected communicator of `size` ranks.
pub(crate) fn connect(
    cfg: &NetConfig,
    rank: u32,
    size: u32,
    kv: &dyn Kv,
    deadline: Instant,
) -> Result<Box<dyn Communicator>> {
    let listening = |what: &str, e| Error::transport(format!("listening for {what}"), e);
    match cfg.kind {
        TransportKind::Tcp => {
            let listener = TcpListener::bind(cfg.tcp(rank, size))
                .map_err(|e| listening(&format!("tcp on {}", cfg.ip), e))?;
            bootstrap(listener, cfg, rank, size, kv, deadline)
        }
        TransportKind::Shm => {
            let listener = ShmListener::bind(cfg.shm(rank, size))
                .map_err(|e| listening("shared memory", e.into()))?;
            bootstrap(listener, cfg, rank, size, kv, deadline)
        }
        TransportKind::Auto => {
            let auto = AutoConfig::with(cfg.shm(rank, size), cfg.tcp(rank, size));
            let listener = AutoListener::bind(auto)
                .map_err(|e| listening(&format!("shared memory and tcp on {}", cfg.ip), e))?;
            bootstrap(listener, cfg, rank, size, kv, deadline)
        }
        TransportKind::Loopback => Err(Error::Invalid(
            "--transport loopback runs ranks as threads of one process: drop --rank/--store".into(),
        )),
    }
}
