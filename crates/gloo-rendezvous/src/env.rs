//! `env://` start-up: rank, world size and the store from the variables the launcher already
//! sets (torchrun, Slurm's srun, Open MPI's mpirun, PMI), so a job runs unchanged under each.
//!
//! # Rank and world size
//!
//! - **torchrun** (`RANK`, `WORLD_SIZE` with `TORCHELASTIC_RUN_ID`): torchrun's variables win,
//!   whatever else is set (torchrun under srun or mpirun is the inner launcher).
//! - **mpirun** (`OMPI_COMM_WORLD_RANK`/`_SIZE`), **PMI** (`PMI_RANK`/`PMI_SIZE`) and **srun**
//!   (`SLURM_PROCID`/`SLURM_NTASKS`), in that order (mpirun inside a Slurm allocation is the
//!   inner launcher). Two of them with the same world size and different ranks are an error
//!   naming both.
//! - `RANK` and `WORLD_SIZE` **set by hand** (no `TORCHELASTIC_RUN_ID`): used when no launcher
//!   sets a rank. Under a launcher they must agree with it: a stale `export RANK=0` must not
//!   make every process rank 0, so a disagreement is an error naming both sources.
//!
//! # The store
//!
//! 1. `TORCHELASTIC_USE_AGENT_STORE=True` (torchrun's static rendezvous, and its c10d
//!    rendezvous unless `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`): torchrun's agent already
//!    serves a PyTorch `TCPStore` at `MASTER_ADDR:MASTER_PORT`; every rank joins it as a
//!    [`TorchStore`] client, with its keys under `gloo/torchelastic/<TORCHELASTIC_RUN_ID>/<TORCHELASTIC_RESTART_COUNT>`,
//!    so workers restarted after a failure never read a dead attempt's addresses.
//! 2. `MASTER_ADDR` and `MASTER_PORT`: rank 0 hosts a [`TcpStoreServer`] there (with the job
//!    token when `GLOO_AUTH_TOKEN` is set, over mutual TLS when `GLOO_TLS_CA`, `GLOO_TLS_CERT`
//!    and `GLOO_TLS_KEY` are set) and every rank is a [`TcpStore`] client.
//! 3. srun without `MASTER_ADDR`: the store is on the step's first node (the first host of
//!    `SLURM_STEP_NODELIST`, else `SLURM_NODELIST` or `SLURM_JOB_NODELIST`; `127.0.0.1` when
//!    the step runs on one node), where rank 0 runs, at `MASTER_PORT` if set, else at port
//!    `20000 + (SLURM_JOB_ID mod 625) × 16 + (SLURM_STEP_ID mod 16)` (20000–29999, below
//!    Linux's ephemeral ports; distinct for 16 steps of 625 consecutive jobs). Keys are under
//!    `gloo/slurm/<job>.<step>`.
//! 4. mpirun with every rank on one host (`OMPI_COMM_WORLD_LOCAL_SIZE` equals the world size)
//!    and no `MASTER_ADDR`: a [`FileStore`] in a private per-job directory,
//!    `<temp dir>/gloo-<uid>/<job>` (mode `0700`; `<job>` is `PMIX_NAMESPACE`, else Open MPI's
//!    job id), which is refused if another user owns it or others may write to it.
//! 5. mpirun across hosts with `MASTER_ADDR` only: as 2, at the port derived from Open MPI's
//!    job id as in 3. Without `MASTER_ADDR` the error says to pass it with `mpirun -x
//!    MASTER_ADDR=<host of rank 0>`. A PMI launcher (MPICH, Intel MPI) needs `MASTER_ADDR` and
//!    `MASTER_PORT`.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use gloo_transport::{Listener, Rank};

use crate::error::{Error, Result};
use crate::file::FileStore;
use crate::prefix::PrefixStore;
use crate::store::Store;
use crate::tcp::{TcpStore, TcpStoreServer};
use crate::torch::TorchStore;

/// Which launcher's variables gave the rank and world size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Launcher {
    /// `RANK` / `WORLD_SIZE` set by torchrun (`TORCHELASTIC_RUN_ID` is set too).
    Torchrun,
    /// `RANK` / `WORLD_SIZE` set by hand (no launcher variables).
    Manual,
    /// `OMPI_COMM_WORLD_RANK` / `OMPI_COMM_WORLD_SIZE` (Open MPI's mpirun).
    OpenMpi,
    /// `PMI_RANK` / `PMI_SIZE` (MPICH, Intel MPI, Slurm's PMI).
    Pmi,
    /// `SLURM_PROCID` / `SLURM_NTASKS` (srun).
    Slurm,
}

impl Launcher {
    /// The launcher as a user would name it.
    pub fn name(self) -> &'static str {
        match self {
            Launcher::Torchrun => "torchrun",
            Launcher::Manual => "hand",
            Launcher::OpenMpi => "mpirun",
            Launcher::Pmi => "the PMI launcher",
            Launcher::Slurm => "srun",
        }
    }

    fn vars(self) -> (&'static str, &'static str) {
        match self {
            Launcher::Torchrun | Launcher::Manual => ("RANK", "WORLD_SIZE"),
            Launcher::OpenMpi => ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
            Launcher::Pmi => ("PMI_RANK", "PMI_SIZE"),
            Launcher::Slurm => ("SLURM_PROCID", "SLURM_NTASKS"),
        }
    }
}

/// What the environment says about this process's place in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvConfig {
    /// This process's rank.
    pub rank: u32,
    /// The number of ranks.
    pub size: u32,
    /// The rank within this host (`LOCAL_RANK`, `OMPI_COMM_WORLD_LOCAL_RANK`,
    /// `SLURM_LOCALID`), if the launcher says.
    pub local_rank: Option<u32>,
    /// The host and port of a networked store (`MASTER_ADDR` and `MASTER_PORT`, or derived
    /// from the launcher's variables); `None` for a file store.
    pub master: Option<(String, u16)>,
    /// The job token (`GLOO_AUTH_TOKEN`), if set.
    pub token: Option<Vec<u8>>,
    /// This process's TLS files (`GLOO_TLS_CA`, `GLOO_TLS_CERT`, `GLOO_TLS_KEY`), if set
    /// (feature `tls`): a hosted TCP store is then reached, and served, over mutual TLS
    /// (torchrun's agent store has no TLS; see [`EnvStore::start`]).
    #[cfg(feature = "tls")]
    pub tls: Option<gloo_tls::TlsFiles>,
    /// Whose variables gave the rank and size.
    pub launcher: Launcher,
    /// Where the ranks meet (see the [module docs](self) for the rules).
    pub store: StoreSpec,
    /// Whether every rank runs on this host (the launcher says so), so the ranks can meet and
    /// connect over loopback.
    pub single_host: bool,
}

/// Where the ranks of an `env://` job meet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreSpec {
    /// torchrun's agent store: a [`TorchStore`] client at `host:port`, keys under `prefix`.
    TorchAgent {
        /// `MASTER_ADDR`.
        host: String,
        /// `MASTER_PORT`.
        port: u16,
        /// Per job and restart: `gloo/torchelastic/<run id>/<restart count>`.
        prefix: String,
    },
    /// Rank 0 hosts a [`TcpStoreServer`] at `host:port`; keys under `prefix` (if not empty).
    Hosted {
        /// The host of rank 0.
        host: String,
        /// The port.
        port: u16,
        /// Per job (`gloo/slurm/<job>.<step>` under srun), or empty.
        prefix: String,
    },
    /// A [`FileStore`] in a private per-job directory (mpirun on one host).
    File {
        /// The directory.
        dir: PathBuf,
    },
}

impl EnvConfig {
    /// The store's endpoint as `host:port` (IPv6 literals bracketed), if the store is on the
    /// network.
    pub fn master_endpoint(&self) -> Option<String> {
        self.master.as_ref().map(|(host, port)| endpoint(host, *port))
    }
}

/// Read the start-up variables from a map (pure: tests pass their own; [`from_process_env`]
/// passes the process's). The rules are in the [module docs](self); every error names the
/// variables involved and what to do.
pub fn parse_env(vars: &HashMap<String, String>) -> Result<EnvConfig> {
    let bad = |detail: String| Error::Config { detail };
    let number = |name: &str| -> Result<Option<u32>> {
        match vars.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| bad(format!("{name}={v:?} is not a non-negative integer"))),
        }
    };
    let torchrun = vars.contains_key("TORCHELASTIC_RUN_ID");

    let mut found: Vec<(Launcher, u32, u32)> = Vec::new();
    let order = [
        if torchrun { Launcher::Torchrun } else { Launcher::Manual },
        Launcher::OpenMpi,
        Launcher::Pmi,
        Launcher::Slurm,
    ];
    for launcher in order {
        let (rank_var, size_var) = launcher.vars();
        match (number(rank_var)?, number(size_var)?) {
            (None, None) => {}
            (Some(_), None) => return Err(bad(format!("{rank_var} is set but {size_var} is not"))),
            (None, Some(_)) => return Err(bad(format!("{size_var} is set but {rank_var} is not"))),
            (Some(rank), Some(size)) => {
                if size == 0 {
                    return Err(bad(format!("{size_var}=0: a job needs at least one rank")));
                }
                if rank >= size {
                    return Err(bad(format!("{rank_var}={rank} is not below {size_var}={size}")));
                }
                found.push((launcher, rank, size));
            }
        }
    }
    let Some(&first) = found.first() else {
        return Err(bad(
            "no rank in the environment: set RANK and WORLD_SIZE (torchrun), or run under \
             srun (SLURM_PROCID, SLURM_NTASKS), mpirun (OMPI_COMM_WORLD_RANK, \
             OMPI_COMM_WORLD_SIZE) or a PMI launcher (PMI_RANK, PMI_SIZE)"
                .into(),
        ));
    };
    let (launcher, rank, size) = match first {
        // torchrun is the innermost launcher: its rank stands whatever else is set.
        (Launcher::Torchrun, ..) => first,
        (Launcher::Manual, r, n) => match found.get(1) {
            None => first,
            // RANK/WORLD_SIZE by hand under a launcher: they must say the same thing.
            Some(&(other, o_rank, o_size)) => {
                if (r, n) != (o_rank, o_size) {
                    let (or_var, os_var) = other.vars();
                    return Err(bad(format!(
                        "RANK={r} and WORLD_SIZE={n} (set in the environment, not by torchrun) \
                         contradict {or_var}={o_rank} and {os_var}={o_size} set by {}: unset \
                         RANK and WORLD_SIZE (a stale export?) or make them agree",
                        other.name()
                    )));
                }
                (other, o_rank, o_size)
            }
        },
        _ => first,
    };
    // Launchers that describe the same world must agree on who this process is. (Different
    // sizes mean nested launchers, e.g. mpirun inside a Slurm allocation, where the inner
    // one is right.)
    if launcher != Launcher::Torchrun {
        for &(other, other_rank, other_size) in &found {
            if other == launcher || other == Launcher::Manual {
                continue;
            }
            if other_size == size && other_rank != rank {
                let (a_rank, a_size) = launcher.vars();
                let (b_rank, b_size) = other.vars();
                return Err(bad(format!(
                    "contradictory ranks: {a_rank}={rank} but {b_rank}={other_rank} \
                     ({a_size} and {b_size} are both {size})"
                )));
            }
        }
    }

    let local_rank = match launcher {
        Launcher::Torchrun | Launcher::Manual => number("LOCAL_RANK")?,
        Launcher::OpenMpi => number("OMPI_COMM_WORLD_LOCAL_RANK")?,
        Launcher::Slurm => number("SLURM_LOCALID")?,
        Launcher::Pmi => None,
    };
    if let (Some(lr), Some(lws)) = (local_rank, number("LOCAL_WORLD_SIZE")?)
        && lr >= lws
    {
        return Err(bad(format!("LOCAL_RANK={lr} is not below LOCAL_WORLD_SIZE={lws}")));
    }
    let single_host = match launcher {
        Launcher::Torchrun | Launcher::Manual => number("LOCAL_WORLD_SIZE")? == Some(size),
        Launcher::OpenMpi => number("OMPI_COMM_WORLD_LOCAL_SIZE")? == Some(size),
        Launcher::Slurm => number("SLURM_STEP_NUM_NODES")?.or(number("SLURM_NNODES")?) == Some(1),
        Launcher::Pmi => number("MPI_LOCALNRANKS")? == Some(size),
    };

    let port_var = |port: &str| {
        port.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad(format!("MASTER_PORT={port:?} is not a port number (1-65535)")))
    };
    let addr_var = |addr: &str| -> Result<String> {
        let addr = addr.trim();
        if addr.is_empty() {
            return Err(bad("MASTER_ADDR is empty".into()));
        }
        let host = addr.trim_start_matches('[').trim_end_matches(']').trim();
        if host.is_empty() {
            return Err(bad(format!("MASTER_ADDR={addr:?} names no host")));
        }
        Ok(host.to_owned())
    };
    let master_addr = vars.get("MASTER_ADDR").map(|a| addr_var(a)).transpose()?;
    let master_port = vars.get("MASTER_PORT").map(|p| port_var(p)).transpose()?;

    let store = if vars.get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| is_true(v)) {
        let (Some(host), Some(port)) = (master_addr.clone(), master_port) else {
            return Err(bad(
                "TORCHELASTIC_USE_AGENT_STORE is set but MASTER_ADDR or MASTER_PORT is not \
                 (torchrun sets all three)"
                    .into(),
            ));
        };
        let run = vars.get("TORCHELASTIC_RUN_ID").map_or("none", String::as_str);
        let restart = vars.get("TORCHELASTIC_RESTART_COUNT").map_or("0", String::as_str);
        StoreSpec::TorchAgent { host, port, prefix: format!("gloo/torchelastic/{run}/{restart}") }
    } else {
        match launcher {
            Launcher::Slurm => slurm_store(vars, master_addr, master_port, single_host)?,
            Launcher::OpenMpi => ompi_store(vars, master_addr, master_port, single_host)?,
            _ => match (master_addr, master_port) {
                (Some(host), Some(port)) => StoreSpec::Hosted { host, port, prefix: String::new() },
                (Some(_), None) => {
                    return Err(bad("MASTER_ADDR is set but MASTER_PORT is not".into()));
                }
                (None, Some(_)) => {
                    return Err(bad("MASTER_PORT is set but MASTER_ADDR is not".into()));
                }
                (None, None) if launcher == Launcher::Pmi => {
                    return Err(bad(
                        "under a PMI launcher (MPICH, Intel MPI) env:// needs MASTER_ADDR (the \
                         host of rank 0) and MASTER_PORT (a free port there); pass both, e.g. \
                         `mpiexec -genv MASTER_ADDR <host> -genv MASTER_PORT 29500`"
                            .into(),
                    ));
                }
                (None, None) => {
                    return Err(bad(
                        "env:// start-up needs MASTER_ADDR and MASTER_PORT (where rank 0 hosts \
                         the store) with RANK and WORLD_SIZE set by hand"
                            .into(),
                    ));
                }
            },
        }
    };
    let master = match &store {
        StoreSpec::TorchAgent { host, port, .. } | StoreSpec::Hosted { host, port, .. } => {
            Some((host.clone(), *port))
        }
        StoreSpec::File { .. } => None,
    };
    let token =
        vars.get("GLOO_AUTH_TOKEN").filter(|t| !t.is_empty()).map(|t| t.clone().into_bytes());
    #[cfg(feature = "tls")]
    let tls = gloo_tls::TlsFiles::from_vars(|k| vars.get(k).cloned())
        .map_err(|e| bad(gloo_transport::ErrorChain(&e).to_string()))?;
    #[cfg(not(feature = "tls"))]
    if let Some(k) = TLS_VARS.iter().find(|k| vars.get(**k).is_some_and(|v| !v.is_empty())) {
        return Err(bad(format!(
            "{k} is set, but this program was built without TLS (gloo-rendezvous's `tls` \
             feature): it would reach the store in the clear"
        )));
    }
    Ok(EnvConfig {
        rank,
        size,
        local_rank,
        master,
        token,
        #[cfg(feature = "tls")]
        tls,
        launcher,
        store,
        single_host,
    })
}

fn is_true(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

/// A port in 20000–29999 from a job id and a step id (see the module docs).
fn derived_port(job: u64, step: u64) -> u16 {
    // Both terms are bounded (< 625 × 16 and < 16), so the sum fits a u16.
    20000 + ((job % 625) * 16 + step % 16) as u16
}

/// The store of a srun step (rule 3 of the module docs).
fn slurm_store(
    vars: &HashMap<String, String>,
    addr: Option<String>,
    port: Option<u16>,
    single_host: bool,
) -> Result<StoreSpec> {
    let bad = |detail: String| Error::Config { detail };
    let id = |name: &str| -> Result<Option<u64>> {
        vars.get(name)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| bad(format!("{name}={v:?} is not a number")))
            })
            .transpose()
    };
    let job = id("SLURM_JOB_ID")?.or(id("SLURM_JOBID")?);
    let step = id("SLURM_STEP_ID")?.or(id("SLURM_STEPID")?).unwrap_or(0);
    let host = match addr {
        Some(a) => a,
        None if single_host => "127.0.0.1".into(),
        None => ["SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NODELIST"]
            .iter()
            .find_map(|v| vars.get(*v).and_then(|l| first_host(l)))
            .ok_or_else(|| {
                bad("under srun without MASTER_ADDR, env:// needs SLURM_STEP_NODELIST (or \
                     SLURM_NODELIST) to find rank 0's node; set MASTER_ADDR to it"
                    .into())
            })?,
    };
    let port = match (port, job) {
        (Some(p), _) => p,
        (None, Some(job)) => derived_port(job, step),
        (None, None) => {
            return Err(bad(
                "under srun without MASTER_PORT, env:// derives the store's port from \
                 SLURM_JOB_ID, which is not set; set MASTER_PORT"
                    .into(),
            ));
        }
    };
    let prefix = match job {
        Some(job) => format!("gloo/slurm/{job}.{step}"),
        None => String::new(),
    };
    Ok(StoreSpec::Hosted { host, port, prefix })
}

/// The store of an mpirun job (rules 4 and 5 of the module docs).
fn ompi_store(
    vars: &HashMap<String, String>,
    addr: Option<String>,
    port: Option<u16>,
    single_host: bool,
) -> Result<StoreSpec> {
    let bad = |detail: String| Error::Config { detail };
    let job = ["PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "OMPI_MCA_orte_ess_jobid"]
        .iter()
        .find_map(|v| vars.get(*v).filter(|s| !s.trim().is_empty()))
        .map(|s| s.trim().to_owned());
    match (addr, port) {
        (Some(host), Some(port)) => Ok(StoreSpec::Hosted { host, port, prefix: String::new() }),
        (Some(host), None) => {
            let Some(job) = job else {
                return Err(bad("MASTER_ADDR is set but MASTER_PORT is not".into()));
            };
            Ok(StoreSpec::Hosted { host, port: derived_port(hash(&job), 0), prefix: String::new() })
        }
        (None, Some(_)) if !single_host => Err(bad(
            "MASTER_PORT is set but MASTER_ADDR is not: pass the host of rank 0 with `mpirun \
             -x MASTER_ADDR=<host of rank 0>`"
                .into(),
        )),
        (None, _) if single_host => {
            let Some(job) = job else {
                return Err(bad(
                    "mpirun set no job id (PMIX_NAMESPACE or OMPI_MCA_ess_base_jobid) to name a \
                     private store directory after; pass `mpirun -x MASTER_ADDR=127.0.0.1 -x \
                     MASTER_PORT=<free port>`"
                        .into(),
                ));
            };
            let name: String = job
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
                .collect();
            Ok(StoreSpec::File { dir: private_dir()?.join(name) })
        }
        (None, _) => Err(bad(
            "mpirun started the ranks on several hosts and env:// cannot tell where rank 0 \
             is: pass its address with `mpirun -x MASTER_ADDR=<host of rank 0>` (the port is \
             derived from the job id unless MASTER_PORT is passed too)"
                .into(),
        )),
    }
}

/// A stable 64-bit hash (FNV-1a) of a job name, for the derived port.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// `<temp dir>/gloo-<uid>`, created with mode `0700`, refused (naming it) when it is not a
/// directory of ours that only we may write to.
fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = std::fs::metadata("/proc/self")
        .map_err(|e| Error::io(None, "reading this process's user id from /proc/self", e))?
        .uid();
    let dir = std::env::temp_dir().join(format!("gloo-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::io(None, format!("creating {}", dir.display()), e));
        }
    }
    let meta = std::fs::symlink_metadata(&dir)
        .map_err(|e| Error::io(None, format!("inspecting {}", dir.display()), e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o022 != 0 {
        return Err(Error::Config {
            detail: format!(
                "{} is not a private directory of this user (a link, owned by another user, or \
                 writable by others); remove it or set TMPDIR elsewhere",
                dir.display()
            ),
        });
    }
    Ok(dir)
}

/// The variables that ask for TLS (refused by a build without it rather than ignored).
#[cfg(not(feature = "tls"))]
const TLS_VARS: [&str; 3] = ["GLOO_TLS_CA", "GLOO_TLS_CERT", "GLOO_TLS_KEY"];

/// The first host of a Slurm node list (`node[01-04,07],gpu5` gives `node01`).
fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let (head, bracket) = match list.find(['[', ',']) {
        Some(i) if list.as_bytes()[i] == b'[' => (&list[..i], Some(&list[i + 1..])),
        Some(i) => (&list[..i], None),
        None => (list, None),
    };
    let host = match bracket {
        None => head.to_owned(),
        Some(rest) => {
            let first = rest.split([',', '-', ']']).next()?;
            format!("{head}{first}")
        }
    };
    (!host.is_empty()).then_some(host)
}

/// [`parse_env`] over this process's environment.
pub fn from_process_env() -> Result<EnvConfig> {
    parse_env(&std::env::vars().collect())
}

/// The store of an `env://` job, as [`StoreSpec`] says: a client (already scoped to the job's
/// key prefix), and on rank 0 of a hosted store the server itself (kept alive as long as this
/// value lives).
pub struct EnvStore {
    /// The configuration it was made from.
    pub config: EnvConfig,
    /// The client every rank (rank 0 included) talks to the store through.
    pub store: Arc<dyn Store>,
    server: Option<TcpStoreServer>,
    #[cfg(feature = "tls")]
    tls: Option<gloo_tls::TlsConfig>,
}

impl std::fmt::Debug for EnvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvStore")
            .field("config", &self.config)
            .field("hosts_server", &self.server.is_some())
            .finish_non_exhaustive()
    }
}

impl EnvStore {
    /// Reach the store [`EnvConfig::store`] names, retrying until `deadline`: join torchrun's
    /// agent store, or (rank 0) bind the TCP store server and (every rank) connect to it, or
    /// open the per-job directory.
    ///
    /// With the `GLOO_TLS_*` files (feature `tls`), the hosted TCP store is served and
    /// reached over mutual TLS with this process's certificate. torchrun's agent store
    /// speaks PyTorch's protocol, which has no TLS: the files then secure the transport
    /// only, and the store's keys (addresses, ranks) cross in the clear, as with a token.
    pub fn start(config: EnvConfig, deadline: Instant) -> Result<EnvStore> {
        #[cfg(feature = "tls")]
        let tls = match &config.tls {
            Some(files) => Some(files.load().map_err(|e| Error::Config {
                detail: format!("TLS: {}", gloo_transport::ErrorChain(&e)),
            })?),
            None => None,
        };
        let scoped = |store: Arc<dyn Store>, prefix: &str| -> Arc<dyn Store> {
            if prefix.is_empty() { store } else { Arc::new(PrefixStore::new(store, prefix)) }
        };
        let (store, server): (Arc<dyn Store>, _) = match &config.store {
            StoreSpec::TorchAgent { host, port, prefix } => {
                let endpoint = endpoint(host, *port);
                let client = TorchStore::connect(endpoint.clone(), deadline).map_err(|e| {
                    context(
                        e,
                        &format!("torchrun's agent store at {endpoint} (MASTER_ADDR:MASTER_PORT)"),
                    )
                })?;
                (scoped(Arc::new(client), prefix), None)
            }
            StoreSpec::Hosted { host, port, prefix } => {
                let endpoint = endpoint(host, *port);
                let server = if config.rank == 0 {
                    let addr = resolve(&endpoint)?;
                    let cfg = crate::tcp::ServerConfig::with_token(config.token.as_deref());
                    #[cfg(feature = "tls")]
                    let cfg = crate::tcp::ServerConfig { tls: tls.clone(), ..cfg };
                    Some(TcpStoreServer::bind_with(addr, cfg).map_err(|e| {
                        context(e, &format!("rank 0 hosting the store at {endpoint}"))
                    })?)
                } else {
                    None
                };
                #[cfg(feature = "tls")]
                let client = TcpStore::connect_with(
                    endpoint.clone(),
                    config.token.as_deref(),
                    tls.as_ref(),
                    deadline,
                );
                #[cfg(not(feature = "tls"))]
                let client = TcpStore::connect(endpoint.clone(), config.token.as_deref(), deadline);
                let client = client.map_err(|e| {
                    context(
                        e,
                        &format!("the store rank 0 hosts at {endpoint} (is rank 0 running?)"),
                    )
                })?;
                (scoped(Arc::new(client), prefix), server)
            }
            StoreSpec::File { dir } => (Arc::new(FileStore::new(dir.clone())?), None),
        };
        Ok(EnvStore {
            config,
            store,
            server,
            #[cfg(feature = "tls")]
            tls,
        })
    }

    /// This process's TLS configuration, loaded from the `GLOO_TLS_*` files (feature `tls`):
    /// what the transport's layer is made from
    /// (`tls.layer(job, rank)` for `TcpConfig::stream_layer`).
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&gloo_tls::TlsConfig> {
        self.tls.as_ref()
    }

    /// Whether this process hosts the store server.
    pub fn hosts_server(&self) -> bool {
        self.server.is_some()
    }
}

/// Add what was being reached to an unreachable-store error.
fn context(e: Error, what: &str) -> Error {
    match e {
        Error::Unreachable { endpoint, detail, waited, source } => {
            Error::Unreachable { endpoint: format!("{endpoint}: {what}"), detail, waited, source }
        }
        other => other,
    }
}

fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

fn resolve(endpoint: &str) -> Result<SocketAddr> {
    endpoint
        .to_socket_addrs()
        .map_err(|e| Error::Config { detail: format!("the store's address {endpoint}: {e}") })?
        .next()
        .ok_or_else(|| Error::Config {
            detail: format!("the store's address {endpoint} resolves to no address"),
        })
}

/// A group started from the environment: its communicator and the store it met through.
#[derive(Debug)]
pub struct EnvGroup<C> {
    /// The connected communicator.
    pub comm: C,
    /// The store (rank 0 keeps serving it while this value lives).
    pub store: EnvStore,
}

/// `env://` start-up in one call: read the variables, start or reach the store, make this
/// rank's listener with `make_listener`, and [`connect`](crate::connect) the group.
pub fn connect_from_env<L: Listener>(
    vars: &HashMap<String, String>,
    make_listener: impl FnOnce(&EnvConfig) -> Result<L>,
    deadline: Instant,
) -> Result<EnvGroup<L::Comm>> {
    let config = parse_env(vars)?;
    let store = EnvStore::start(config, deadline)?;
    let listener = make_listener(&store.config)?;
    let comm = crate::bootstrap::connect(
        &*store.store,
        listener,
        Rank(store.config.rank),
        store.config.size,
        deadline,
    )?;
    Ok(EnvGroup { comm, store })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        parse_env(&vars(pairs)).unwrap_err().to_string()
    }

    const TORCHRUN: &[(&str, &str)] = &[
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "29500"),
        ("TORCHELASTIC_RUN_ID", "job7"),
        ("TORCHELASTIC_RESTART_COUNT", "2"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ("GLOO_AUTH_TOKEN", "t0123456789abcdef"),
    ];

    #[test]
    fn torchrun_joins_the_agent_store_with_keys_per_run_and_restart() {
        let c = parse_env(&vars(TORCHRUN)).unwrap();
        assert_eq!((c.rank, c.size, c.local_rank), (3, 8, Some(1)));
        assert_eq!(c.master_endpoint().unwrap(), "10.0.0.1:29500");
        assert_eq!(c.token.as_deref(), Some(&b"t0123456789abcdef"[..]));
        assert_eq!(c.launcher, Launcher::Torchrun);
        assert!(!c.single_host);
        assert_eq!(
            c.store,
            StoreSpec::TorchAgent {
                host: "10.0.0.1".into(),
                port: 29500,
                prefix: "gloo/torchelastic/job7/2".into()
            }
        );
        // Without the agent store (c10d rendezvous with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1),
        // rank 0 hosts ours.
        let mut v = vars(TORCHRUN);
        v.insert("TORCHELASTIC_USE_AGENT_STORE".into(), "False".into());
        let c = parse_env(&v).unwrap();
        assert!(matches!(c.store, StoreSpec::Hosted { port: 29500, .. }), "{:?}", c.store);
    }

    #[test]
    fn torchrun_under_srun_or_mpirun_is_the_inner_launcher() {
        let mut v = vars(TORCHRUN);
        v.extend(vars(&[("SLURM_PROCID", "1"), ("SLURM_NTASKS", "2")]));
        v.extend(vars(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "8")]));
        let c = parse_env(&v).unwrap();
        assert_eq!((c.rank, c.size, c.launcher), (3, 8, Launcher::Torchrun));
    }

    #[test]
    fn a_stale_rank_set_by_hand_does_not_override_the_launcher() {
        // Every mpirun process would have become rank 0.
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_RANK", "2"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
            ("PMIX_NAMESPACE", "prterun-x-1@1"),
        ]);
        assert!(e.contains("RANK=0") && e.contains("OMPI_COMM_WORLD_RANK=2"), "{e}");
        assert!(e.contains("mpirun") && e.contains("unset RANK"), "{e}");
        let e = err(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_ID", "5"),
        ]);
        assert!(e.contains("WORLD_SIZE=2") && e.contains("SLURM_NTASKS=4"), "{e}");
        // Agreeing values are fine, and the launcher's rules give the store.
        let c = parse_env(&vars(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_ID", "5"),
            ("SLURM_NNODES", "1"),
        ]))
        .unwrap();
        assert_eq!((c.rank, c.launcher), (1, Launcher::Slurm));
    }

    #[test]
    fn srun_derives_the_store_from_the_node_list_and_the_job_and_step_ids() {
        let base = [("SLURM_PROCID", "3"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "1")];
        let with = |extra: &[(&str, &str)]| {
            let mut v = vars(&base);
            v.extend(vars(extra));
            parse_env(&v)
        };
        let c = with(&[
            ("SLURM_JOB_ID", "4242"),
            ("SLURM_STEP_ID", "3"),
            ("SLURM_STEP_NUM_NODES", "4"),
            ("SLURM_STEP_NODELIST", "gpu[07-10]"),
            ("SLURM_NODELIST", "gpu[01-10],cpu1"),
        ])
        .unwrap();
        assert_eq!((c.rank, c.size, c.local_rank), (3, 8, Some(1)));
        let port = 20000 + (4242 % 625) * 16 + 3;
        assert_eq!(
            c.store,
            StoreSpec::Hosted { host: "gpu07".into(), port, prefix: "gloo/slurm/4242.3".into() }
        );
        // One node: loopback. MASTER_PORT and MASTER_ADDR, when set, win.
        let c = with(&[("SLURM_JOB_ID", "9"), ("SLURM_NNODES", "1")]).unwrap();
        assert!(c.single_host);
        assert_eq!(c.master_endpoint().unwrap(), format!("127.0.0.1:{}", 20000 + 9 * 16));
        let c =
            with(&[("SLURM_JOB_ID", "9"), ("SLURM_NODELIST", "n[1-2]"), ("MASTER_PORT", "1234")])
                .unwrap();
        assert_eq!(c.master_endpoint().unwrap(), "n1:1234");
        // No job id and no port: the error says which variable to set.
        let e = with(&[("SLURM_NODELIST", "n1")]).unwrap_err().to_string();
        assert!(e.contains("SLURM_JOB_ID") && e.contains("MASTER_PORT"), "{e}");
        assert_eq!(first_host("node1"), Some("node1".into()));
        assert_eq!(first_host("a,b"), Some("a".into()));
        assert_eq!(first_host("n[3]"), Some("n3".into()));
        assert_eq!(first_host(""), None);
    }

    #[test]
    fn mpirun_on_one_host_meets_in_a_private_per_job_directory() {
        let c = parse_env(&vars(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
            ("PMIX_NAMESPACE", "prterun-vm-123@1"),
        ]))
        .unwrap();
        assert_eq!((c.rank, c.size, c.local_rank, c.launcher), (1, 4, Some(1), Launcher::OpenMpi));
        let StoreSpec::File { dir } = &c.store else { panic!("{:?}", c.store) };
        assert!(dir.ends_with("prterun-vm-123_1"), "{}", dir.display());
        let parent = dir.parent().unwrap();
        assert!(parent.file_name().unwrap().to_string_lossy().starts_with("gloo-"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(parent).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn mpirun_across_hosts_says_which_variable_to_pass() {
        let base = [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            ("PMIX_NAMESPACE", "prterun-vm-123@1"),
        ];
        let e = err(&base);
        assert!(e.contains("-x MASTER_ADDR="), "{e}");
        let mut v = vars(&base);
        v.insert("MASTER_ADDR".into(), "node1".into());
        let c = parse_env(&v).unwrap();
        let StoreSpec::Hosted { host, port, .. } = &c.store else { panic!("{:?}", c.store) };
        assert_eq!(host, "node1");
        assert!((20000..30000).contains(port));
        // A PMI launcher needs both variables, and says how to pass them.
        let e = err(&[("PMI_RANK", "1"), ("PMI_SIZE", "4")]);
        assert!(e.contains("MASTER_ADDR") && e.contains("-genv"), "{e}");
    }

    #[test]
    fn missing_variables_are_named() {
        assert!(err(&[("RANK", "0")]).contains("RANK is set but WORLD_SIZE is not"));
        assert!(err(&[("WORLD_SIZE", "2")]).contains("WORLD_SIZE is set but RANK is not"));
        assert!(err(&[("SLURM_PROCID", "0")]).contains("SLURM_NTASKS"));
        assert!(err(&[]).contains("RANK and WORLD_SIZE"));
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]);
        assert!(e.contains("MASTER_PORT is not"), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")]);
        assert!(e.contains("MASTER_ADDR is not"), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "2")]);
        assert!(e.contains("MASTER_ADDR and MASTER_PORT"), "{e}");
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("TORCHELASTIC_RUN_ID", "x"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]);
        assert!(e.contains("TORCHELASTIC_USE_AGENT_STORE"), "{e}");
    }

    #[test]
    fn contradictory_or_malformed_variables_are_named() {
        let e = err(&[("RANK", "2"), ("WORLD_SIZE", "2")]);
        assert!(e.contains("RANK=2") && e.contains("WORLD_SIZE=2"), "{e}");
        let e = err(&[("RANK", "x"), ("WORLD_SIZE", "2")]);
        assert!(e.contains("RANK=\"x\""), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "0")]);
        assert!(e.contains("WORLD_SIZE=0"), "{e}");
        let e = err(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("PMI_RANK", "2"),
            ("PMI_SIZE", "4"),
        ]);
        assert!(e.contains("OMPI_COMM_WORLD_RANK=1") && e.contains("PMI_RANK=2"), "{e}");
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "2"),
            ("LOCAL_WORLD_SIZE", "2"),
        ]);
        assert!(e.contains("LOCAL_RANK=2"), "{e}");
        for port in ["0", "99999", "x"] {
            let e = err(&[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", port),
            ]);
            assert!(e.contains("MASTER_PORT"), "{e}");
        }
    }

    /// Found by the `env` fuzz target: `MASTER_ADDR` of only brackets (`[]`, `]`) was taken
    /// as an empty host, and the store was looked for at ":<port>".
    #[test]
    fn a_master_address_of_only_brackets_is_refused() {
        for addr in ["[]", "]", " [ ] ", "["] {
            let e = err(&[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", addr),
                ("MASTER_PORT", "29500"),
            ]);
            assert!(e.contains("MASTER_ADDR") && e.contains("no host"), "{addr:?}: {e}");
        }
    }

    #[test]
    fn tls_variables_come_in_threes_and_are_never_ignored() {
        let base = [
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "1"),
        ];
        let partial = [base[0], base[1], base[2], base[3], ("GLOO_TLS_CERT", "/c.pem")];
        let all = [
            base[0],
            base[1],
            base[2],
            base[3],
            ("GLOO_TLS_CA", "/ca.pem"),
            ("GLOO_TLS_CERT", "/c.pem"),
            ("GLOO_TLS_KEY", "/c.key"),
        ];
        #[cfg(feature = "tls")]
        {
            assert_eq!(parse_env(&vars(&base)).unwrap().tls, None);
            let e = err(&partial);
            assert!(e.contains("GLOO_TLS_CA and GLOO_TLS_KEY not set"), "{e}");
            let files = parse_env(&vars(&all)).unwrap().tls.unwrap();
            assert_eq!(files.key, std::path::PathBuf::from("/c.key"));
        }
        #[cfg(not(feature = "tls"))]
        for set in [&partial[..], &all[..]] {
            let e = err(set);
            assert!(e.contains("built without TLS"), "{e}");
        }
    }

    #[test]
    fn ipv6_master_is_bracketed() {
        for addr in ["::1", "[::1]"] {
            let c = parse_env(&vars(&[
                ("RANK", "0"),
                ("WORLD_SIZE", "1"),
                ("MASTER_ADDR", addr),
                ("MASTER_PORT", "29500"),
            ]))
            .unwrap();
            assert_eq!(c.master_endpoint().unwrap(), "[::1]:29500");
        }
    }
}
