//! The connected communicator: the [engine](crate::engine)'s communicator over tcp's wire.

use std::time::Instant;

use mio::Poll;

use super::config::TcpConfig;
use super::driver::{Lazy, TcpLink, TcpSleeper, TcpWaker, TcpWire};
use crate::engine::{Engine, EngineComm, EngineConfig};
use crate::{Communicator, Error, Op, Rank, Result, Wait};

/// A connected group of ranks over TCP, made by
/// [`TcpListener::connect_all`](super::TcpListener::connect_all) or
/// [`TcpListener::connect_lazy`](super::TcpListener::connect_lazy).
///
/// Dropping it says goodbye to every peer, stops its heartbeat thread and closes its sockets.
pub struct TcpComm {
    inner: EngineComm<TcpWire>,
}

impl std::fmt::Debug for TcpComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpComm").field("rank", &self.rank()).field("size", &self.size()).finish()
    }
}

/// The engine's settings from a tcp configuration.
pub(crate) fn engine_config(cfg: &TcpConfig) -> EngineConfig {
    EngineConfig::default()
        .busy_poll(cfg.busy_poll)
        .spin(cfg.spin)
        .peer_timeout(Some(cfg.peer_timeout))
        .integrity(cfg.integrity_on())
}

impl TcpComm {
    /// Start the communicator over `engine` (its links attached, or, for a lazy one, to be
    /// attached by `lazy`), sleeping in `poll` and woken by `waker`.
    pub(crate) fn start(
        engine: Engine<TcpLink>,
        poll: Poll,
        waker: mio::Waker,
        lazy: Option<Box<Lazy>>,
    ) -> Result<TcpComm> {
        let registry =
            poll.registry().try_clone().map_err(|e| Error::io(None, "cloning the registry", e))?;
        let wire = TcpWire::new(registry, lazy);
        let inner = EngineComm::start(engine, wire, TcpSleeper::new(poll), TcpWaker(waker))?;
        Ok(TcpComm { inner })
    }

    /// The ranks this rank has a live connection to, in rank order: every other rank after
    /// [`connect_all`](super::TcpListener::connect_all) (until one is lost); after
    /// [`connect_lazy`](super::TcpListener::connect_lazy), only those connected so far.
    pub fn connected_peers(&self) -> Vec<Rank> {
        self.inner.connected_peers()
    }
}

impl Communicator for TcpComm {
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

pub(crate) fn new_poll() -> Result<(Poll, mio::Events)> {
    let poll = Poll::new().map_err(|e| Error::io(None, "creating a poller", e))?;
    Ok((poll, mio::Events::with_capacity(256)))
}
