//! Per-peer transport choice: shared memory to the ranks on this host, tcp (or TLS over it)
//! to the ranks on other hosts, in one communicator.
//!
//! Every rank binds both listeners and publishes one address: its [`HostId`], its
//! shared-memory address and its tcp address. After the exchange each rank compares host
//! identities: equal ones connect through shared memory, the others through tcp, each pair
//! with the same rule on both sides. The links of both kinds go into one engine (the same
//! one every transport runs), so matching, fingerprints, credit, cancel, abort and liveness
//! behave the same whichever way a peer is reached; [`ShmComm::link_kind`] tells which way
//! each peer is.
//!
//! ```
//! use gloo_shm::auto::{AutoConfig, AutoListener};
//! use gloo_shm::LinkKind;
//! use gloo_transport::{Communicator, Rank, Slot};
//! use std::time::{Duration, Instant};
//!
//! let deadline = Instant::now() + Duration::from_secs(10);
//! let ls: Vec<AutoListener> = (0..2)
//!     .map(|r| AutoListener::bind(AutoConfig::loopback("doc", Rank(r), 2)).unwrap())
//!     .collect();
//! let addrs: Vec<Vec<u8>> = ls.iter().map(|l| l.address_bytes()).collect();
//! let comms: Vec<_> = ls
//!     .into_iter()
//!     .map(|l| {
//!         let addrs = addrs.clone();
//!         std::thread::spawn(move || l.connect_all(&addrs, deadline).unwrap())
//!     })
//!     .collect::<Vec<_>>()
//!     .into_iter()
//!     .map(|t| t.join().unwrap())
//!     .collect();
//! // Both ranks run on this host: the pair is shared memory.
//! assert_eq!(comms[0].link_kind(Rank(1)), Some(LinkKind::Shm));
//! comms[1].send(Rank(0), Slot::new(1, 0), b"hi", deadline)?;
//! let mut buf = [0u8; 2];
//! comms[0].recv(Rank(1), Slot::new(1, 0), &mut buf, deadline)?;
//! # Ok::<(), gloo_transport::Error>(())
//! ```
#![forbid(unsafe_code)]

use std::time::Instant;

use gloo_transport::tcp::{TcpConfig, TcpListener};
use gloo_transport::{Error, Rank, Result};

use crate::comm::{ShmComm, engine_config};
use crate::config::ShmConfig;
use crate::setup::ShmListener;
use crate::wire::NewLink;

/// The environment variable that overrides this process's [`HostId`] (for tests that play
/// several hosts on one machine, or to force tcp between two ranks of one host).
pub const HOST_ID_ENV: &str = "GLOO_HOST_ID";

/// The prefix of an auto listener's address bytes.
const ADDR_PREFIX: &[u8] = b"gloo-auto/1:";
/// The longest host identity accepted.
const MAX_HOST_ID: usize = 512;

/// Which host a rank runs on, as far as shared memory is concerned: ranks with equal
/// identities connect through shared memory.
///
/// By default it is this machine's boot id (random per boot, so two machines never share
/// it), its host name, its network namespace (abstract unix sockets, which set up a pair,
/// are per network namespace) and this process's user id (another user's ranks are refused
/// shared memory, so they are reached over tcp instead). [`HOST_ID_ENV`] overrides it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostId(String);

impl HostId {
    /// This process's identity: [`HOST_ID_ENV`] if set (and not empty), else
    /// [`this_host`](HostId::this_host).
    pub fn from_env() -> HostId {
        match std::env::var(HOST_ID_ENV) {
            Ok(v) if !v.is_empty() => HostId::named(&v),
            _ => HostId::this_host(),
        }
    }

    /// This machine's boot id, host name and network namespace, and this process's user id.
    pub fn this_host() -> HostId {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
        let boot = read("/proc/sys/kernel/random/boot_id").unwrap_or_else(|_| "?".into());
        let name = read("/proc/sys/kernel/hostname").unwrap_or_else(|_| "?".into());
        let net = std::fs::read_link("/proc/self/ns/net")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "?".into());
        HostId::named(&format!("boot={boot} host={name} {net} uid={}", crate::sys::euid()))
    }

    /// An identity given by name (at most 512 bytes; longer names are cut).
    pub fn named(name: &str) -> HostId {
        let mut cut = name.len().min(MAX_HOST_ID);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        HostId(name[..cut].to_string())
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How an [`AutoListener`] binds: the shared-memory settings for ranks on this host, the
/// tcp settings for the others, and this rank's host identity.
#[derive(Clone, Debug)]
pub struct AutoConfig {
    shm: ShmConfig,
    tcp: TcpConfig,
    host: HostId,
}

impl AutoConfig {
    /// Rank `rank` of a group of `size` in job `job`: shared memory with its defaults, tcp
    /// on an automatically chosen interface ([`TcpConfig::new`]), the host identity from
    /// [`HostId::from_env`].
    pub fn new(job: &str, rank: Rank, size: u32) -> AutoConfig {
        AutoConfig::with(ShmConfig::new(job, rank, size), TcpConfig::new(job, rank, size))
    }

    /// Like [`new`](AutoConfig::new) with tcp on loopback ([`TcpConfig::loopback`]).
    pub fn loopback(job: &str, rank: Rank, size: u32) -> AutoConfig {
        AutoConfig::with(ShmConfig::new(job, rank, size), TcpConfig::loopback(job, rank, size))
    }

    /// From a shared-memory and a tcp configuration of the same rank and group size (the
    /// job names are each transport's own), with the host identity from
    /// [`HostId::from_env`].
    pub fn with(shm: ShmConfig, tcp: TcpConfig) -> AutoConfig {
        AutoConfig { shm, tcp, host: HostId::from_env() }
    }

    /// This rank's host identity.
    pub fn host_id(mut self, host: HostId) -> AutoConfig {
        self.host = host;
        self
    }

    /// Change the shared-memory settings.
    pub fn shm(mut self, f: impl FnOnce(ShmConfig) -> ShmConfig) -> AutoConfig {
        self.shm = f(self.shm);
        self
    }

    /// Change the tcp settings (address, security, a TLS stream layer, timers).
    pub fn tcp(mut self, f: impl FnOnce(TcpConfig) -> TcpConfig) -> AutoConfig {
        self.tcp = f(self.tcp);
        self
    }
}

/// Both listeners of one rank, and its host identity: bind, publish
/// [`address_bytes`](AutoListener::address_bytes), collect every rank's, then
/// [`connect_all`](AutoListener::connect_all).
#[derive(Debug)]
pub struct AutoListener {
    shm: ShmListener,
    tcp: TcpListener,
    host: HostId,
}

/// One rank's published address, parsed.
struct Parsed<'a> {
    host: &'a [u8],
    shm: &'a [u8],
    tcp: &'a [u8],
}

fn parse(rank: Rank, bytes: &[u8]) -> Result<Parsed<'_>> {
    let bad = |why: &str| Error::Protocol {
        peer: Some(rank),
        detail: format!("its published address is not a gloo-auto address: {why}"),
    };
    let mut rest = bytes.strip_prefix(ADDR_PREFIX).ok_or_else(|| bad("wrong prefix"))?;
    let mut field = || -> Result<&[u8]> {
        let (len, tail) = rest.split_first_chunk::<2>().ok_or_else(|| bad("truncated"))?;
        let len = u16::from_le_bytes(*len) as usize;
        let (f, tail) = tail.split_at_checked(len).ok_or_else(|| bad("truncated"))?;
        rest = tail;
        Ok(f)
    };
    let (host, shm, tcp) = (field()?, field()?, field()?);
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    if host.len() > MAX_HOST_ID {
        return Err(bad("host identity too long"));
    }
    Ok(Parsed { host, shm, tcp })
}

impl AutoListener {
    /// Bind both listeners.
    pub fn bind(cfg: AutoConfig) -> Result<AutoListener> {
        let (r, n) = (cfg.shm.rank(), cfg.shm.size());
        if (cfg.tcp.rank(), cfg.tcp.size()) != (r, n) {
            return Err(Error::invalid(format!(
                "the shared-memory settings are for rank {r} of {n}, the tcp ones for rank {} of {}",
                cfg.tcp.rank(),
                cfg.tcp.size()
            )));
        }
        let shm = ShmListener::bind(cfg.shm)?;
        let tcp = TcpListener::bind(cfg.tcp)?;
        Ok(AutoListener { shm, tcp, host: cfg.host })
    }

    /// This rank's host identity.
    pub fn host_id(&self) -> &HostId {
        &self.host
    }

    /// The bytes to publish: `gloo-auto/1:`, then the host identity, the shared-memory
    /// address and the tcp address, each with its length (u16, little-endian) in front.
    pub fn address_bytes(&self) -> Vec<u8> {
        let mut out = ADDR_PREFIX.to_vec();
        for f in [self.host.0.as_bytes(), &self.shm.address_bytes(), &self.tcp.address_bytes()] {
            // Every field is far below 64 KiB: the host id is cut at 512 bytes, and both
            // listeners' addresses are a few dozen bytes.
            out.extend_from_slice(&(f.len() as u16).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    /// Connect to every other rank: shared memory to those with this rank's host identity,
    /// tcp to the others (both at once), then one communicator over all the links. `addrs`
    /// holds every rank's address bytes, indexed by rank (this rank's own entry is ignored);
    /// a malformed one fails here, naming its rank, before anything is dialled.
    pub fn connect_all(self, addrs: &[Vec<u8>], deadline: Instant) -> Result<ShmComm> {
        let cfg = self.shm.config().clone();
        let (me, size) = (cfg.rank(), cfg.size());
        if addrs.len() != size as usize {
            return Err(Error::invalid(format!(
                "connect_all needs {size} addresses, one per rank; got {}",
                addrs.len()
            )));
        }
        let mut local = vec![false; size as usize];
        let mut shm_addrs = vec![Vec::new(); size as usize];
        let mut tcp_addrs = vec![Vec::new(); size as usize];
        let mut remote = Vec::new();
        for (r, a) in addrs.iter().enumerate() {
            let rank = Rank(r as u32);
            if rank == me {
                continue;
            }
            let p = parse(rank, a)?;
            if p.host == self.host.0.as_bytes() {
                local[r] = true;
                shm_addrs[r] = p.shm.to_vec();
            } else {
                remote.push(rank);
                tcp_addrs[r] = p.tcp.to_vec();
            }
        }
        tracing::debug!(
            rank = %me,
            local = local.iter().filter(|l| **l).count(),
            remote = remote.len(),
            "auto: shared memory within the host, tcp across"
        );
        let on_host = 1 + local.iter().filter(|l| **l).count();
        let mut engine_cfg = engine_config(&cfg.for_local_ranks(on_host));
        let tcp_engine = self.tcp.engine_config();
        if local.iter().all(|l| !l) {
            engine_cfg =
                engine_cfg.busy_poll(tcp_engine.busy_poll_value()).spin(tcp_engine.spin_value());
        }
        if let (Some(a), Some(b)) =
            (engine_cfg.peer_timeout_value(), tcp_engine.peer_timeout_value())
        {
            // A peer across the network gets the tcp transport's patience.
            engine_cfg = engine_cfg.peer_timeout(Some(a.max(b)));
        }
        let AutoListener { shm, tcp, .. } = self;
        let (chans, streams) = std::thread::scope(|s| {
            let t = (!remote.is_empty()).then(|| {
                let (tcp_addrs, remote) = (&tcp_addrs, &remote);
                s.spawn(move || tcp.connect_peers(tcp_addrs, remote, deadline))
            });
            let chans = shm.connect_some(&shm_addrs, &local, deadline).map_err(Error::from);
            let streams = match t {
                Some(t) => t
                    .join()
                    .unwrap_or_else(|_| Err(Error::invalid("the tcp connecting thread panicked"))),
                None => Ok(Vec::new()),
            };
            (chans, streams)
        });
        let (chans, streams) = (chans?, streams?);
        let mut links = Vec::new();
        for (r, c) in chans.into_iter().enumerate() {
            if let Some(c) = c {
                links.push((Rank(r as u32), NewLink::Shm(c)));
            }
        }
        for p in streams {
            links.push((p.rank, NewLink::Tcp(p.stream, p.early)));
        }
        ShmComm::start(me, size, engine_cfg, links)
    }
}

impl gloo_transport::Listener for AutoListener {
    type Comm = ShmComm;

    fn address_bytes(&self) -> Vec<u8> {
        AutoListener::address_bytes(self)
    }

    fn connect_all(self, addrs: &[Vec<u8>], deadline: Instant) -> Result<ShmComm> {
        AutoListener::connect_all(self, addrs, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_names_boot_host_namespace_and_user() {
        let h = HostId::this_host();
        for part in ["boot=", "host=", "net:[", "uid="] {
            assert!(h.as_str().contains(part), "{h:?} has no {part}");
        }
        assert_eq!(h, HostId::this_host());
        assert_ne!(h, HostId::named("elsewhere"));
    }

    #[test]
    fn malformed_addresses_are_protocol_errors_naming_the_rank() {
        let l = AutoListener::bind(AutoConfig::loopback("parse", Rank(0), 2)).unwrap();
        let good = l.address_bytes();
        assert!(parse(Rank(1), &good).is_ok());
        let mut long = good.clone();
        long.push(0);
        let cut = &good[..good.len() - 1];
        let mut lying = good.clone();
        lying[ADDR_PREFIX.len()] = 0xff;
        for bad in [&b"nonsense"[..], cut, &long, &lying, ADDR_PREFIX] {
            let e = parse(Rank(1), bad).err().unwrap();
            assert!(matches!(e, Error::Protocol { peer: Some(Rank(1)), .. }), "{e}");
        }
    }

    #[test]
    fn a_long_host_name_is_cut_on_a_character_boundary() {
        let h = HostId::named(&"é".repeat(400));
        assert!(h.as_str().len() <= MAX_HOST_ID);
        assert!(h.as_str().chars().all(|c| c == 'é'));
    }
}
