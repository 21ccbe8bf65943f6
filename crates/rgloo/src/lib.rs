//! The Rust Gloo in one crate: collective communications (allreduce, broadcast, allgather,
//! reduce-scatter, alltoall, barrier, send/recv, ...) between processes on one or many
//! machines, started from the launcher's environment in one call.
//!
//! ```no_run
//! fn main() -> Result<(), rgloo::Error> {
//!     // Rank, world size and the store from torchrun, mpirun, srun or RANK/WORLD_SIZE/MASTER_*.
//!     let job = rgloo::init()?;
//!     let g = job.group();
//!     let mut v = vec![g.rank().0 as f32 + 1.0; 4];
//!     g.allreduce(&mut v, rgloo::ReduceOp::Sum, &rgloo::Options::new())?;
//!     let n = g.size() as f32;
//!     assert_eq!(v, vec![n * (n + 1.0) / 2.0; 4]);
//!     println!("rank {}: {v:?}", g.rank());
//!     Ok(())
//! }
//! ```
//!
//! Launch it with any of: `torchrun --nproc-per-node=4 --no-python target/release/app`,
//! `mpirun -np 4 target/release/app`, `srun --ntasks=4 target/release/app`, or by hand with
//! `RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT` set for each process (rank 0 hosts
//! the store at `MASTER_ADDR:MASTER_PORT`). Across machines, give every rank the same job
//! token in `GLOO_AUTH_TOKEN` (at least 16 bytes): without one, the library refuses to listen
//! on a routable address. The rules for each launcher are in [`rendezvous::env`].
//!
//! [`init_from`] takes the variables as a map and a timeout; this one runs as it stands (one
//! rank, which hosts its own store on loopback):
//!
//! ```
//! # fn main() -> Result<(), rgloo::Error> {
//! let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
//! let vars = [("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")]
//!     .map(|(k, v)| (k.to_string(), v.to_string()))
//!     .into_iter()
//!     .chain([("MASTER_PORT".to_string(), port.to_string())])
//!     .collect();
//! let job = rgloo::init_from(&vars, std::time::Duration::from_secs(30))?;
//! let mut v = [rgloo::half::f16::from_f32(1.5); 3];
//! job.group().allreduce(&mut v, rgloo::ReduceOp::Max, &rgloo::Options::new())?;
//! assert_eq!(v[0].to_f32(), 1.5);
//! # Ok(())
//! # }
//! ```
//!
//! # The layers
//!
//! Each layer is its own crate, re-exported here whole; a program that needs only some of them
//! can depend on those crates alone.
//!
//! - [`transport`] (`gloo-transport`): ranks, the [`Communicator`](transport::Communicator)
//!   trait, the in-process `loopback` transport and (feature `tcp`, on by default) the TCP
//!   transport.
//! - [`rendezvous`] (`gloo-rendezvous`): stores (in-process, file, TCP, PyTorch's `TCPStore`,
//!   Redis with feature `redis`), `env://` start-up, and the bootstrap that connects a group
//!   through a store.
//! - [`algorithms`] (`gloo-algorithms`): [`Group`] and its collectives; the most used names
//!   are re-exported at the top ([`Group`], [`Options`], [`ReduceOp`], [`Element`]).
//! - [`half`]: the `f16` and `bf16` element types.
//! - `shm` (feature `shm`): shared-memory byte channels between processes of one host;
//!   `tls` (feature `tls`): TLS between ranks (not built yet).
//!
//! # Tracing
//!
//! The library reports through [`tracing`](https://docs.rs/tracing): each collective runs in
//! a `debug` span `collective` with the rank, the collective's name, its tag and its call
//! number; connection set-up, lost peers and other failures are events. Install any
//! subscriber to see them, for example with `tracing-subscriber` (feature `env-filter`):
//! `tracing_subscriber::fmt().with_env_filter("gloo_algorithms=debug,gloo_transport=info")
//! .init()`, or `EnvFilter::from_default_env()` to follow `RUST_LOG`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

pub use gloo_algorithms as algorithms;
pub use gloo_algorithms::{Algorithm, Collective, DType, Element, Group, Options, ReduceOp};
pub use gloo_rendezvous as rendezvous;
#[cfg(feature = "shm")]
pub use gloo_shm as shm;
#[cfg(feature = "tls")]
pub use gloo_tls as tls;
pub use gloo_transport as transport;
pub use gloo_transport::Rank;
pub use half;

/// Any error of the layers, so that one `?` works on every call of a program.
///
/// It is transparent: `Display` is the layer's own message and
/// [`source`](std::error::Error::source) what lies under the layer's error (which is reached
/// by matching the variant). Each error of the chain says only its own part (a collective
/// that failed, then the transport's error naming the peer, then the operating system's
/// error), so print the whole chain to see the cause: `anyhow`'s `{:#}`, a loop over
/// `source()`, or [`transport::ErrorChain`], which prints each message once. `Debug` (what
/// `fn main() -> Result<..>` prints) shows the layer's error with everything under it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Start-up failed: the environment, the store, or connecting the group (a transport
    /// error while connecting is [`rendezvous::Error::Transport`]).
    Rendezvous(rendezvous::Error),
    /// A collective failed (it names the collective and the rank).
    Collective(algorithms::Error),
    /// A transport call made directly failed.
    Transport(transport::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Rendezvous(e) => e.fmt(f),
            Error::Collective(e) => e.fmt(f),
            Error::Transport(e) => e.fmt(f),
        }
    }
}

/// The layer's own `Debug` (which `fn main() -> Result<..>` prints), without a wrapper around
/// it.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Rendezvous(e) => fmt::Debug::fmt(e, f),
            Error::Collective(e) => fmt::Debug::fmt(e, f),
            Error::Transport(e) => fmt::Debug::fmt(e, f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Rendezvous(e) => std::error::Error::source(e),
            Error::Collective(e) => std::error::Error::source(e),
            Error::Transport(e) => std::error::Error::source(e),
        }
    }
}

impl From<rendezvous::Error> for Error {
    fn from(e: rendezvous::Error) -> Error {
        Error::Rendezvous(e)
    }
}

impl From<algorithms::Error> for Error {
    fn from(e: algorithms::Error) -> Error {
        Error::Collective(e)
    }
}

impl From<transport::Error> for Error {
    fn from(e: transport::Error) -> Error {
        Error::Transport(e)
    }
}

/// How long [`init`] waits for every rank to start and connect.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);

/// The communicator [`init`] connects: with feature `shm` (on by default) gloo-shm's `auto`
/// (shared memory between the ranks of one host, tcp to the others), else tcp alone.
#[cfg(all(feature = "tcp", feature = "shm"))]
pub type JobComm = gloo_shm::ShmComm;
/// The communicator [`init`] connects: with feature `shm` (on by default) gloo-shm's `auto`
/// (shared memory between the ranks of one host, tcp to the others), else tcp alone.
#[cfg(all(feature = "tcp", not(feature = "shm")))]
pub type JobComm = transport::tcp::TcpComm;

/// A started job: this rank's [`Group`] and the store the ranks met through (which rank 0
/// keeps serving while this value lives).
#[cfg(feature = "tcp")]
pub struct Job {
    group: Group<JobComm>,
    store: rendezvous::EnvStore,
}

#[cfg(feature = "tcp")]
impl Job {
    /// The group, on which every collective is a method.
    pub fn group(&self) -> &Group<JobComm> {
        &self.group
    }

    /// What the environment said: rank, size, launcher, where the ranks met.
    pub fn config(&self) -> &rendezvous::EnvConfig {
        &self.store.config
    }

    /// The store the ranks met through, for a program's own keys (already scoped to the job).
    pub fn store(&self) -> &dyn rendezvous::Store {
        &*self.store.store
    }

    /// The group and the store apart (keep the store alive on rank 0 while other ranks may
    /// still use it).
    pub fn into_parts(self) -> (Group<JobComm>, rendezvous::EnvStore) {
        (self.group, self.store)
    }
}

#[cfg(feature = "tcp")]
impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job").field("group", &self.group).field("store", &self.store).finish()
    }
}

/// Start this rank's group from the process's environment, waiting up to
/// [`DEFAULT_START_TIMEOUT`] for every rank; see [`init_from`].
#[cfg(feature = "tcp")]
pub fn init() -> Result<Job, Error> {
    init_from(&std::env::vars().collect(), DEFAULT_START_TIMEOUT)
}

/// Start this rank's group from the launcher's variables in `vars`, waiting up to `timeout`
/// for every rank.
///
/// Reads rank, world size and the store as [`rendezvous::env`] describes, reaches the store
/// (rank 0 hosts it where the launcher does not), and connects every pair of ranks: through
/// shared memory when both are on this host (feature `shm`, on by default; gloo-shm's host
/// identity decides, `GLOO_HOST_ID` overrides it), else over TCP: on loopback when the launcher says every rank is on this host or the store is on a
/// loopback address, else on the interface `GLOO_SOCKET_IFNAME` names, else the one the
/// transport picks from the process's environment (the one facing `MASTER_ADDR`; see
/// [`TcpConfig::new`](transport::tcp::TcpConfig::new)). A job token in
/// `GLOO_AUTH_TOKEN` (in `vars`) authenticates every connection; across machines one is
/// required. The algorithm choices of `GLOO_ALGORITHM_*` apply to the group.
///
/// Every failure names what failed: the variables involved, the store's endpoint, the ranks
/// that never started.
#[cfg(feature = "tcp")]
pub fn init_from(vars: &HashMap<String, String>, timeout: Duration) -> Result<Job, Error> {
    use transport::tcp::{Security, TcpConfig};

    let deadline = std::time::Instant::now() + timeout;
    let config = rendezvous::parse_env(vars)?;
    let store = rendezvous::EnvStore::start(config, deadline)?;
    let c = &store.config;
    // Every rank derives the same job name from where the ranks met, so the handshake keeps
    // two jobs that share hosts from joining each other's connections.
    let job = format!("env {:?}", c.store);
    let rank = Rank(c.rank);
    // The interface comes from `vars` where they say: every rank on this host or a store on
    // loopback means loopback, `GLOO_SOCKET_IFNAME` names one; otherwise the transport's own
    // choice (which reads the process's environment).
    let loopback_store = c.master.as_ref().is_some_and(|(host, _)| {
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    let mut tcp = if c.single_host || loopback_store {
        TcpConfig::loopback(&job, rank, c.size)
    } else {
        match vars.get("GLOO_SOCKET_IFNAME") {
            Some(name) if !name.is_empty() => TcpConfig::new(&job, rank, c.size).interface(name),
            _ => TcpConfig::new(&job, rank, c.size),
        }
    };
    if let Some(token) = &c.token {
        tcp = tcp.security(Security::Token(token.clone()));
    }
    #[cfg(feature = "shm")]
    let listener = {
        let auto =
            gloo_shm::auto::AutoConfig::with(gloo_shm::ShmConfig::new(&job, rank, c.size), tcp);
        gloo_shm::auto::AutoListener::bind(auto).map_err(rendezvous::Error::from)?
    };
    #[cfg(not(feature = "shm"))]
    let listener = transport::tcp::TcpListener::bind(tcp).map_err(rendezvous::Error::from)?;
    let comm = rendezvous::connect(&*store.store, listener, rank, c.size, deadline)?;
    let group = Group::new(comm)?;
    Ok(Job { group, store })
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The facade's error is the layer's, once: same `Display`, same `Debug`, and its source
    /// is what lies under the layer's error rather than the layer's error again.
    #[test]
    fn the_error_is_the_layers_error_printed_once() {
        let inner = rendezvous::Error::Config { detail: "RANK is not a number".into() };
        let e = Error::from(inner.clone());
        assert_eq!(e.to_string(), inner.to_string());
        assert_eq!(format!("{e:?}"), format!("{inner:?}"));
        assert!(e.source().is_none());
        let lost = transport::Error::PeerLost { peer: Rank(1), reason: "reset".into() };
        let wrapped = rendezvous::Error::from(lost.clone());
        let e = Error::from(wrapped);
        let mut chain = vec![e.to_string()];
        let mut next = e.source();
        while let Some(s) = next {
            chain.push(s.to_string());
            next = s.source();
        }
        assert_eq!(chain.join("\n").matches(&lost.to_string()).count(), 1, "{chain:?}");
    }

    /// A rank whose store is not there (a closed 127.0.0.1 port) fails by its deadline, and
    /// the chain under the facade's error goes down to the operating system's refusal, the
    /// `io::Error` it was, each message printed once; `Debug` shows it too.
    #[test]
    fn an_unreachable_store_keeps_the_os_error_down_the_chain() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let vars: HashMap<String, String> = [
            ("RANK", "1".to_string()),
            ("WORLD_SIZE", "2".to_string()),
            ("MASTER_ADDR", "127.0.0.1".to_string()),
            ("MASTER_PORT", port.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        let e = init_from(&vars, Duration::from_millis(800)).unwrap_err();
        assert!(matches!(e, Error::Rendezvous(rendezvous::Error::Unreachable { .. })), "{e:?}");
        let chain = gloo_testing::errors::chain_printed_once(&e);
        assert!(chain[0].contains(&format!("127.0.0.1:{port}")), "{chain:#?}");
        let os = gloo_testing::errors::deepest_io(&e).expect("the OS error is the deepest");
        assert_eq!(os.kind(), std::io::ErrorKind::ConnectionRefused, "{chain:#?}");
        assert_eq!(os.raw_os_error(), Some(111), "ECONNREFUSED: {chain:#?}");
        assert_eq!(chain.last(), Some(&os.to_string()));
        let debug = format!("{e:?}");
        assert!(
            debug.starts_with("Unreachable {") && debug.contains("ConnectionRefused"),
            "{debug}"
        );
    }

    /// Two ranks of one host meet through the store `init_from` hosts and connect through
    /// shared memory (the default feature `shm`), and an allreduce over them is right.
    #[cfg(feature = "shm")]
    #[test]
    fn ranks_of_one_host_connect_through_shared_memory() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let run = move |rank: u32| {
            let vars: HashMap<String, String> = [
                ("RANK", rank.to_string()),
                ("WORLD_SIZE", "2".to_string()),
                ("MASTER_ADDR", "127.0.0.1".to_string()),
                ("MASTER_PORT", port.to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .into();
            let job = init_from(&vars, Duration::from_secs(60)).unwrap();
            let g = job.group();
            let peer = Rank(1 - rank);
            assert_eq!(g.comm().link_kind(peer), Some(shm::LinkKind::Shm), "rank {rank}");
            let mut v = vec![rank as f32 + 1.0; 3];
            g.allreduce(&mut v, ReduceOp::Sum, &Options::new()).unwrap();
            v
        };
        let other = std::thread::spawn(move || run(1));
        let mine = run(0);
        assert_eq!(mine, vec![3.0; 3]);
        assert_eq!(other.join().unwrap(), vec![3.0; 3]);
    }

    /// A bad environment is the rendezvous layer's error naming the variable, not a panic.
    #[test]
    fn a_bad_environment_names_the_variable() {
        let vars: HashMap<String, String> =
            [("RANK", "x"), ("WORLD_SIZE", "2")].map(|(k, v)| (k.into(), v.into())).into();
        let e = init_from(&vars, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, Error::Rendezvous(_)), "{e:?}");
        assert!(e.to_string().contains("RANK"), "{e}");
    }
}
