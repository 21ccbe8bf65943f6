//! `env://` start-up variables (`parse_env`): any set of the variables torchrun, srun,
//! mpirun, PMI launchers and users set, with any values. No panic; a configuration accepted
//! has a rank inside its world and a store that can be named.
#![no_main]

use std::collections::HashMap;

use gloo_rendezvous::parse_env;
use libfuzzer_sys::fuzz_target;

/// Every variable `parse_env` reads.
const NAMES: &[&str] = &[
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GLOO_AUTH_TOKEN",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_USE_AGENT_STORE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "PMIX_NAMESPACE",
    "OMPI_MCA_ess_base_jobid",
    "OMPI_MCA_orte_ess_jobid",
    "PMI_RANK",
    "PMI_SIZE",
    "MPI_LOCALNRANKS",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_NNODES",
    "SLURM_STEP_NUM_NODES",
    "SLURM_JOB_ID",
    "SLURM_JOBID",
    "SLURM_STEP_ID",
    "SLURM_STEPID",
    "SLURM_NODELIST",
    "SLURM_STEP_NODELIST",
    "SLURM_JOB_NODELIST",
];

fuzz_target!(|data: &[u8]| {
    // Records of (name index, value length, value bytes).
    let mut vars = HashMap::new();
    let mut rest = data;
    while let [name, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let value = String::from_utf8_lossy(&tail[..take]).into_owned();
        vars.insert(NAMES[usize::from(*name) % NAMES.len()].to_string(), value);
        rest = &tail[take..];
    }
    if let Ok(cfg) = parse_env(&vars) {
        assert!(cfg.rank < cfg.size, "rank {} in a world of {}", cfg.rank, cfg.size);
        if let Some((host, port)) = &cfg.master {
            assert!(!host.is_empty() && *port != 0, "{host}:{port}");
            assert!(cfg.master_endpoint().is_some());
        }
        if let Some(lr) = cfg.local_rank {
            let _ = lr;
        }
    }
});
