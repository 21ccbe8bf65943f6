//! The shm transport's communicator: the engine of `gloo-transport` over channels (and, for
//! ranks on other hosts, tcp streams).
#![forbid(unsafe_code)]

use std::time::Instant;

use gloo_transport::engine::{Engine, EngineComm, EngineConfig};
use gloo_transport::{Communicator, Error, Op, Rank, Result, Wait};

use crate::config::ShmConfig;
use crate::setup::ShmListener;
use crate::wire::{HostWire, NewLink, assemble};

/// How a communicator reaches one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkKind {
    /// Shared memory (the peer runs on this host).
    Shm,
    /// TCP (the peer runs on another host), or TLS over it.
    Tcp,
}

impl LinkKind {
    /// A short name: `"shm"` or `"tcp"`.
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Shm => "shm",
            LinkKind::Tcp => "tcp",
        }
    }
}

/// A connected group over shared memory, made by [`ShmListener::connect_all`], or over
/// shared memory within this host and tcp to the other hosts, made by
/// [`AutoListener::connect_all`](crate::auto::AutoListener::connect_all).
///
/// The protocol (matching, fingerprints, credit, rendezvous transfers, cancel, abort, the
/// error scopes and heartbeats) is the engine of `gloo-transport`, the same one tcp runs;
/// this transport only moves bytes and reports readiness (see the crate docs).
///
/// Dropping it says goodbye to every peer, stops its heartbeat thread and closes its
/// channels.
pub struct ShmComm {
    inner: EngineComm<HostWire>,
    kinds: Vec<Option<LinkKind>>,
}

impl std::fmt::Debug for ShmComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmComm")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .field("links", &self.kinds)
            .finish()
    }
}

impl ShmComm {
    /// Start a communicator for rank `me` of `size` over `links` (one per other rank).
    pub(crate) fn start(
        me: Rank,
        size: u32,
        cfg: EngineConfig,
        links: Vec<(Rank, NewLink)>,
    ) -> Result<ShmComm> {
        let mut kinds = vec![None; size as usize];
        for (r, l) in &links {
            kinds[r.index()] = Some(match l {
                NewLink::Shm(_) => LinkKind::Shm,
                #[cfg(feature = "tcp")]
                NewLink::Tcp(..) => LinkKind::Tcp,
            });
        }
        let mut engine = Engine::new(me, size, cfg);
        let (wire, sleeper, waker) = assemble(&mut engine, links)
            .map_err(|e| Error::io(None, "registering the links with a poller", e))?;
        let inner = EngineComm::start(engine, wire, sleeper, waker)?;
        Ok(ShmComm { inner, kinds })
    }

    /// How this rank reaches `peer`: shared memory or tcp (`None` for itself or a rank
    /// outside the group).
    pub fn link_kind(&self, peer: Rank) -> Option<LinkKind> {
        self.kinds.get(peer.index()).copied().flatten()
    }

    /// The ranks this rank has a live link to, in rank order.
    pub fn connected_peers(&self) -> Vec<Rank> {
        self.inner.connected_peers()
    }
}

impl Communicator for ShmComm {
    #[inline]
    fn rank(&self) -> Rank {
        self.inner.rank()
    }

    #[inline]
    fn size(&self) -> u32 {
        self.inner.size()
    }

    #[inline]
    fn progress(&self, ops: &mut [Op<'_>], wait: Wait, deadline: Instant) -> Result<()> {
        self.inner.progress(ops, wait, deadline)
    }

    #[inline]
    fn progress_at(
        &self,
        ops: &mut [Op<'_>],
        wait: Wait,
        deadline: Instant,
        now: Instant,
    ) -> Result<()> {
        self.inner.progress_at(ops, wait, deadline, now)
    }

    fn cancel(&self, ops: &mut [Op<'_>]) {
        self.inner.cancel(ops);
    }

    fn abort(&self, reason: &str) {
        self.inner.abort(reason);
    }

    fn poisoned(&self) -> Option<Error> {
        self.inner.poisoned()
    }
}

/// The engine's settings for channels configured by `cfg`: its busy-poll window (the spin
/// and yield phases) and its peer timeout.
pub(crate) fn engine_config(cfg: &ShmConfig) -> EngineConfig {
    // The busy-poll window is the spin then the yield phase; its head spins without giving
    // the CPU away (zero when ranks outnumber cores: see `ShmConfig::oversubscribed`).
    EngineConfig::default()
        .busy_poll(cfg.spin + cfg.yield_for)
        .spin(cfg.spin)
        .peer_timeout(Some(cfg.peer_timeout))
}

impl ShmListener {
    /// Connect to every other rank over shared memory (every rank must run on this host)
    /// and return the group: [`connect_channels`](ShmListener::connect_channels), then the
    /// engine over the channels. `addrs` holds every rank's address bytes, indexed by rank
    /// (this rank's own entry is ignored).
    pub fn connect_all(self, addrs: &[Vec<u8>], deadline: Instant) -> Result<ShmComm> {
        let cfg = self.config().for_local_ranks(self.config().size() as usize);
        let chans = self.connect_channels(addrs, deadline)?;
        let links = chans
            .into_iter()
            .enumerate()
            .filter_map(|(r, c)| c.map(|c| (Rank(r as u32), NewLink::Shm(c))))
            .collect();
        ShmComm::start(cfg.rank, cfg.size, engine_config(&cfg), links)
    }
}

impl gloo_transport::Listener for ShmListener {
    type Comm = ShmComm;

    fn address_bytes(&self) -> Vec<u8> {
        ShmListener::address_bytes(self)
    }

    fn connect_all(self, addrs: &[Vec<u8>], deadline: Instant) -> Result<ShmComm> {
        ShmListener::connect_all(self, addrs, deadline)
    }
}
