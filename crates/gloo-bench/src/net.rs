//! Connecting the transport under test through `gloo-rendezvous`'s bootstrap: each rank
//! claims its rank, publishes its listening address in the store, waits for everybody's and
//! connects the full mesh.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gloo_transport::tcp::{TcpConfig, TcpListener};
use gloo_transport::{Communicator, Rank};

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

/// A connected communicator of `size` ranks.
pub(crate) fn connect(
    cfg: &NetConfig,
    rank: u32,
    size: u32,
    kv: &dyn Kv,
    deadline: Instant,
) -> Result<Box<dyn Communicator>> {
    match cfg.kind {
        TransportKind::Tcp => {
            let mut tcp = if cfg.ip.is_loopback() {
                TcpConfig::loopback(&cfg.job, Rank(rank), size)
            } else {
                TcpConfig::new(&cfg.job, Rank(rank), size).bind_addr(SocketAddr::new(cfg.ip, 0))
            };
            if let Some(b) = cfg.busy_poll {
                tcp = tcp.busy_poll(b);
            }
            let listener = TcpListener::bind(tcp)
                .map_err(|e| Error::transport(format!("listening on {} for tcp", cfg.ip), e))?;
            let store = kv.scoped(&cfg.job);

            let comm =
                gloo_rendezvous::connect(store.as_ref(), listener, Rank(rank), size, deadline)
                    .map_err(|e| Error::Store {
                        doing: "connecting the tcp mesh".into(),
                        source: e,
                    })?;
            Ok(Box::new(comm))
        }
        TransportKind::Loopback => Err(Error::Invalid(
            "--transport loopback runs ranks as threads of one process: drop --rank/--store".into(),
        )),
    }
}
