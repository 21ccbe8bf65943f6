//! `env://` start-up: rank, world size and the store's address from the launcher's
//! environment variables (torchrun, Slurm, Open MPI, PMI).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use gloo_transport::{Listener, Rank};

use crate::error::{Error, Result};
use crate::tcp::{TcpStore, TcpStoreServer};

/// Which launcher's variables gave the rank and world size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Launcher {
    /// `RANK` / `WORLD_SIZE` (torchrun, or set by hand).
    Torchrun,
    /// `OMPI_COMM_WORLD_RANK` / `OMPI_COMM_WORLD_SIZE` (Open MPI's mpirun).
    OpenMpi,
    /// `PMI_RANK` / `PMI_SIZE` (MPICH, Intel MPI, Slurm's PMI).
    Pmi,
    /// `SLURM_PROCID` / `SLURM_NTASKS` (srun).
    Slurm,
}

impl Launcher {
    fn vars(self) -> (&'static str, &'static str) {
        match self {
            Launcher::Torchrun => ("RANK", "WORLD_SIZE"),
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
    /// `MASTER_ADDR` and `MASTER_PORT`: where rank 0 hosts the store.
    pub master: Option<(String, u16)>,
    /// The job token (`GLOO_AUTH_TOKEN`), if set.
    pub token: Option<Vec<u8>>,
    /// This process's TLS files (`GLOO_TLS_CA`, `GLOO_TLS_CERT`, `GLOO_TLS_KEY`), if set
    /// (feature `tls`): the store is then reached, and served, over mutual TLS.
    #[cfg(feature = "tls")]
    pub tls: Option<gloo_tls::TlsFiles>,
    /// Whose variables gave the rank and size.
    pub launcher: Launcher,
}

impl EnvConfig {
    /// The store's endpoint as `host:port` (IPv6 literals bracketed), if the master is set.
    pub fn master_endpoint(&self) -> Option<String> {
        self.master.as_ref().map(|(host, port)| {
            if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        })
    }
}

/// Read the start-up variables from a map (pure: tests pass their own; [`from_process_env`]
/// passes the process's).
///
/// Rank and size come from the most specific launcher present, in this order: `RANK` /
/// `WORLD_SIZE` (torchrun, which also runs under Slurm and mpirun and then legitimately
/// differs from their variables), `OMPI_COMM_WORLD_*`, `PMI_*`, `SLURM_*`. Errors name the
/// variables involved: one variable of a pair without the other, a value that is not a number,
/// a rank not below the size, a size of 0, `MASTER_ADDR` without `MASTER_PORT` (or the
/// reverse), a `LOCAL_RANK` not below `LOCAL_WORLD_SIZE`, and two launchers that describe the
/// same world size with different ranks for this process. Under Slurm with `MASTER_PORT` but
/// no `MASTER_ADDR`, the master is the first host of `SLURM_JOB_NODELIST` (or
/// `SLURM_NODELIST`).
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

    let mut found: Vec<(Launcher, u32, u32)> = Vec::new();
    for launcher in [Launcher::Torchrun, Launcher::OpenMpi, Launcher::Pmi, Launcher::Slurm] {
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
    let Some(&(launcher, rank, size)) = found.first() else {
        return Err(bad(
            "no rank in the environment: set RANK and WORLD_SIZE (torchrun), or run under \
             srun (SLURM_PROCID, SLURM_NTASKS), mpirun (OMPI_COMM_WORLD_RANK, \
             OMPI_COMM_WORLD_SIZE) or a PMI launcher (PMI_RANK, PMI_SIZE)"
                .into(),
        ));
    };
    // Launchers that describe the same world must agree on who this process is. (Different
    // sizes mean nested launchers, e.g. torchrun under srun, where the inner one is right.)
    for &(other, other_rank, other_size) in &found[1..] {
        if launcher != Launcher::Torchrun && other_size == size && other_rank != rank {
            let (a_rank, a_size) = launcher.vars();
            let (b_rank, b_size) = other.vars();
            return Err(bad(format!(
                "contradictory ranks: {a_rank}={rank} but {b_rank}={other_rank} \
                 ({a_size} and {b_size} are both {size})"
            )));
        }
    }

    let local_rank = match launcher {
        Launcher::Torchrun => number("LOCAL_RANK")?,
        Launcher::OpenMpi => number("OMPI_COMM_WORLD_LOCAL_RANK")?,
        Launcher::Slurm => number("SLURM_LOCALID")?,
        Launcher::Pmi => None,
    };
    if let (Some(lr), Some(lws)) = (local_rank, number("LOCAL_WORLD_SIZE")?)
        && lr >= lws
    {
        return Err(bad(format!("LOCAL_RANK={lr} is not below LOCAL_WORLD_SIZE={lws}")));
    }

    // Under srun without MASTER_ADDR, the store lives on the job's first node (where rank 0
    // runs with Slurm's block distribution).
    let slurm_first = || {
        vars.get("SLURM_JOB_NODELIST")
            .or_else(|| vars.get("SLURM_NODELIST"))
            .and_then(|list| first_host(list))
    };
    let master_addr = vars.get("MASTER_ADDR").cloned().or_else(|| {
        (launcher == Launcher::Slurm && vars.contains_key("MASTER_PORT"))
            .then(slurm_first)
            .flatten()
    });
    let master = match (master_addr.as_ref(), vars.get("MASTER_PORT")) {
        (None, None) => None,
        (Some(_), None) => return Err(bad("MASTER_ADDR is set but MASTER_PORT is not".into())),
        (None, Some(_)) => return Err(bad("MASTER_PORT is set but MASTER_ADDR is not".into())),
        (Some(addr), Some(port)) => {
            let addr = addr.trim();
            if addr.is_empty() {
                return Err(bad("MASTER_ADDR is empty".into()));
            }
            let port = port.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                bad(format!("MASTER_PORT={port:?} is not a port number (1-65535)"))
            })?;
            Some((addr.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
        }
    };
    let token =
        vars.get("GLOO_AUTH_TOKEN").filter(|t| !t.is_empty()).map(|t| t.clone().into_bytes());
    #[cfg(feature = "tls")]
    let tls =
        gloo_tls::TlsFiles::from_vars(|k| vars.get(k).cloned()).map_err(|e| bad(e.to_string()))?;
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
    })
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

/// The store of an `env://` job: a client of the TCP store at `MASTER_ADDR:MASTER_PORT`, and
/// on rank 0 the server itself (kept alive as long as this value lives).
#[derive(Debug)]
pub struct EnvStore {
    /// The configuration it was made from.
    pub config: EnvConfig,
    /// The client (every rank, rank 0 included, talks to the store through it).
    pub store: TcpStore,
    server: Option<TcpStoreServer>,
    #[cfg(feature = "tls")]
    tls: Option<gloo_tls::TlsConfig>,
}

impl EnvStore {
    /// Rank 0 binds the store server at `MASTER_ADDR:MASTER_PORT` (with the job token if
    /// `GLOO_AUTH_TOKEN` is set, and TLS with this process's certificate if the `GLOO_TLS_*`
    /// files are given); every rank then connects to it, retrying until `deadline`.
    pub fn start(config: EnvConfig, deadline: Instant) -> Result<EnvStore> {
        let endpoint = config.master_endpoint().ok_or_else(|| Error::Config {
            detail: "env:// start-up needs MASTER_ADDR and MASTER_PORT (where rank 0 hosts the \
                     store)"
                .into(),
        })?;
        #[cfg(feature = "tls")]
        let tls = match &config.tls {
            Some(files) => {
                Some(files.load().map_err(|e| Error::Config { detail: format!("TLS: {e}") })?)
            }
            None => None,
        };
        let server = if config.rank == 0 {
            let addr = resolve(&endpoint)?;
            let cfg = crate::tcp::ServerConfig::with_token(config.token.as_deref());
            #[cfg(feature = "tls")]
            let cfg = crate::tcp::ServerConfig { tls: tls.clone(), ..cfg };
            Some(TcpStoreServer::bind_with(addr, cfg)?)
        } else {
            None
        };
        #[cfg(feature = "tls")]
        let store =
            TcpStore::connect_with(endpoint, config.token.as_deref(), tls.as_ref(), deadline)?;
        #[cfg(not(feature = "tls"))]
        let store = TcpStore::connect(endpoint, config.token.as_deref(), deadline)?;
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

fn resolve(endpoint: &str) -> Result<SocketAddr> {
    endpoint
        .to_socket_addrs()
        .map_err(|e| Error::Config { detail: format!("MASTER_ADDR:MASTER_PORT {endpoint}: {e}") })?
        .next()
        .ok_or_else(|| Error::Config {
            detail: format!("MASTER_ADDR:MASTER_PORT {endpoint} resolves to no address"),
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
        &store.store,
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

    #[test]
    fn torchrun_variables() {
        let c = parse_env(&vars(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("GLOO_AUTH_TOKEN", "t"),
        ]))
        .unwrap();
        assert_eq!((c.rank, c.size, c.local_rank), (3, 8, Some(1)));
        assert_eq!(c.master, Some(("10.0.0.1".into(), 29500)));
        assert_eq!(c.master_endpoint().unwrap(), "10.0.0.1:29500");
        assert_eq!(c.token.as_deref(), Some(&b"t"[..]));
        assert_eq!(c.launcher, Launcher::Torchrun);
    }

    #[test]
    fn slurm_openmpi_and_pmi_variables() {
        let c = parse_env(&vars(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "6"),
            ("SLURM_LOCALID", "1"),
        ]))
        .unwrap();
        assert_eq!((c.rank, c.size, c.local_rank, c.launcher), (5, 6, Some(1), Launcher::Slurm));
        let c = parse_env(&vars(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")]))
            .unwrap();
        assert_eq!((c.rank, c.size, c.launcher), (0, 2, Launcher::OpenMpi));
        let c = parse_env(&vars(&[("PMI_RANK", "1"), ("PMI_SIZE", "4")])).unwrap();
        assert_eq!((c.rank, c.size, c.launcher), (1, 4, Launcher::Pmi));
        assert_eq!(c.master, None);
    }

    #[test]
    fn nested_launchers_take_the_inner_one() {
        // torchrun under srun: one Slurm task per node, several workers per task.
        let c = parse_env(&vars(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
        ]))
        .unwrap();
        assert_eq!((c.rank, c.size, c.launcher), (5, 8, Launcher::Torchrun));
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
        let e =
            err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "0")]);
        assert!(e.contains("MASTER_PORT"), "{e}");
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "99999"),
        ]);
        assert!(e.contains("MASTER_PORT"), "{e}");
    }

    #[test]
    fn slurm_node_list_gives_the_master_when_master_addr_is_unset() {
        let c = parse_env(&vars(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_JOB_NODELIST", "gpu[07-10,12],cpu1"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap();
        assert_eq!(c.master, Some(("gpu07".into(), 29500)));
        assert_eq!(first_host("node1"), Some("node1".into()));
        assert_eq!(first_host("a,b"), Some("a".into()));
        assert_eq!(first_host("n[3]"), Some("n3".into()));
        assert_eq!(first_host(""), None);
        // MASTER_ADDR, when set, wins; without MASTER_PORT the node list is not used.
        let c = parse_env(&vars(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_NODELIST", "n[1-2]"),
        ]))
        .unwrap();
        assert_eq!(c.master, None);
    }

    #[test]
    fn tls_variables_come_in_threes_and_are_never_ignored() {
        let base = [("RANK", "0"), ("WORLD_SIZE", "2")];
        let partial = [base[0], base[1], ("GLOO_TLS_CERT", "/c.pem")];
        let all = [
            base[0],
            base[1],
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
        let c = parse_env(&vars(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "::1"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap();
        assert_eq!(c.master_endpoint().unwrap(), "[::1]:29500");
        let c = parse_env(&vars(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "[::1]"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap();
        assert_eq!(c.master_endpoint().unwrap(), "[::1]:29500");
    }
}
