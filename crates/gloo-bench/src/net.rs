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
    /// This rank's TLS configuration (for `--transport tls`).
    pub(crate) tls: Option<gloo_tls::TlsConfig>,
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
        TransportKind::Tcp | TransportKind::Tls => {
            // With TLS the transport's job is the one the certificates name; the store keys
            // stay scoped by this mesh's own name.
            let tls = match (cfg.kind, &cfg.tls) {
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
            let job = tls.map_or(cfg.job.as_str(), |t| t.job());
            let mut tcp = if cfg.ip.is_loopback() {
                TcpConfig::loopback(job, Rank(rank), size)
            } else {
                TcpConfig::new(job, Rank(rank), size).bind_addr(SocketAddr::new(cfg.ip, 0))
            };
            if let Some(t) = tls {
                let layer = t
                    .layer(job, Rank(rank))
                    .map_err(|e| Error::Invalid(format!("TLS: rank {rank}'s certificate: {e}")))?;
                tcp = tcp.stream_layer(layer);
            }
            if let Some(b) = cfg.busy_poll {
                tcp = tcp.busy_poll(b);
            }
            let name = cfg.kind.name();
            let listener = TcpListener::bind(tcp)
                .map_err(|e| Error::transport(format!("listening on {} for {name}", cfg.ip), e))?;
            let store = kv.scoped(&cfg.job);

            let comm =
                gloo_rendezvous::connect(store.as_ref(), listener, Rank(rank), size, deadline)
                    .map_err(|e| Error::Store {
                        doing: format!("connecting the {name} mesh"),
                        source: e,
                    })?;
            Ok(Box::new(comm))
        }
        TransportKind::Loopback => Err(Error::Invalid(
            "--transport loopback runs ranks as threads of one process: drop --rank/--store".into(),
        )),
    }
}
