//! `gloo-bench --store env://` launched unchanged by torchrun (a real PyTorch), mpirun (Open MPI)
//! and a Slurm-style environment, and the start-up failures every rank must name: a wrong world
//! size on one rank, a missing rank, a duplicate rank, a stale `RANK` under mpirun. The README's
//! "Launching a job" section holds these same commands (checked here too).
//!
//! torchrun needs the PyTorch environment of `.ci/torch-venv` (`gloo_testing::torch`); mpirun
//! needs Debian's `openmpi-bin`. Correctness only: no timing is asserted; every run is killed if
//! it outlives its deadline.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use gloo_bench::Collective;

/// Short sweeps: the point is the launch and the checks, not the figures.
const SHORT: &[&str] = &["--max-bytes", "1K", "--iters", "3", "--warmup", "1", "--no-limits"];

const BENCH: &str = env!("CARGO_BIN_EXE_gloo-bench");

/// What a finished process printed.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Wait for `child` (stdout and stderr piped), killing it and failing the test at `deadline`.
fn finish(mut child: Child, what: &str, deadline: Instant) -> Out {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in time and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out { ok: status.success(), stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

fn piped(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A sweep's table passed its checks: rows, every one `ok`.
fn assert_checked_table(out: &Out, what: &str) {
    assert!(out.ok, "{what} failed:\n{}\n{}", out.stdout, out.stderr);
    let rows: Vec<&str> = out.stdout.lines().filter(|l| !l.starts_with('#')).skip(1).collect();
    assert!(!rows.is_empty(), "{what}: no table:\n{}\n{}", out.stdout, out.stderr);
    for row in rows {
        assert!(row.trim_end().ends_with("ok"), "{what}: a check failed: {row}");
    }
}

// ---------------------------------------------------------------------------------------------
// torchrun

/// `torchrun --nproc-per-node=N [extra] --no-python gloo-bench --store env:// ...`.
fn torchrun(n: u32, extra: &[&str], bench_args: &[&str]) -> Out {
    let mut cmd = Command::new(gloo_testing::torch::torchrun());
    cmd.arg(format!("--nproc-per-node={n}")).args(extra).arg("--no-python").arg(BENCH);
    cmd.args(["--store", "env://"]).args(bench_args).args(SHORT).current_dir(std::env::temp_dir());
    finish(piped(cmd), &format!("torchrun {n} ranks {bench_args:?}"), gloo_testing::deadline(120))
}

fn torchrun_every_collective(n: u32) {
    for c in Collective::value_variants() {
        let port = format!("--master-port={}", free_port());
        let out = torchrun(n, &[&port], &["--collective", c.name()]);
        assert_checked_table(&out, &format!("torchrun --nproc-per-node={n} {}", c.name()));
        // The ranks joined torchrun's agent store (no second server on MASTER_PORT).
        assert!(out.stdout.contains("torchrun's agent store"), "{}", out.stdout);
    }
}

#[test]
fn torchrun_2_ranks_every_collective() {
    torchrun_every_collective(2);
}

/// torchrun leaves its workers unbound; with `--bind core` (the default) each rank binds itself
/// to a core of its own when the host's ranks fit on the CPUs it may use, as the local launcher
/// does, and stays unbound when they do not.
#[test]
fn torchrun_ranks_bind_themselves_to_a_core_each_when_they_fit() {
    let allowed = gloo_shm::placement::allowed_cpus().unwrap().len();
    for n in [2, 4] {
        let port = format!("--master-port={}", free_port());
        let out = torchrun(n, &[&port], &["--collective", "allreduce"]);
        assert_checked_table(&out, &format!("torchrun --nproc-per-node={n}"));
        let line = out.stdout.lines().find(|l| l.starts_with("# placement:")).unwrap_or("");
        let cpus = line.split_once('[').and_then(|(_, r)| r.split_once(']')).map(|(c, _)| c);
        let cpus: Vec<&str> = cpus.unwrap_or("").split(',').filter(|c| !c.is_empty()).collect();
        if n as usize <= allowed {
            assert_eq!(cpus.len(), 1, "{n} ranks on {allowed} cpus: rank 0 is not bound: {line}");
        } else {
            assert_eq!(cpus.len(), allowed, "{n} ranks on {allowed} cpus: rank 0 is bound: {line}");
        }
    }
}

#[test]
fn torchrun_4_ranks_every_collective() {
    torchrun_every_collective(4);
}

#[test]
fn torchrun_with_the_c10d_rendezvous() {
    let endpoint = format!("--rdzv-endpoint=127.0.0.1:{}", free_port());
    let out = torchrun(4, &["--rdzv-backend=c10d", &endpoint], &["--collective", "allreduce"]);
    assert_checked_table(&out, "torchrun --rdzv-backend=c10d");
}

/// A restarted torchrun job (a rank fails once, torchrun restarts every worker) meets under
/// the new restart count and never reads the dead attempt's addresses.
#[test]
fn a_torchrun_restart_meets_under_a_fresh_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("failed-once");
    // Rank 1 fails before the rendezvous on the first attempt only.
    let script = format!(
        "if [ \"$RANK\" = 1 ] && [ ! -e {f} ]; then touch {f}; exit 3; fi; exec {BENCH} \"$@\"",
        f = flag.display()
    );
    let mut cmd = Command::new(gloo_testing::torch::torchrun());
    cmd.args(["--nproc-per-node=2", "--max-restarts=1"])
        .arg(format!("--master-port={}", free_port()))
        .args(["--no-python", "sh", "-c", &script, "sh", "--store", "env://"])
        .args(SHORT)
        .current_dir(dir.path());
    let out = finish(piped(cmd), "torchrun with a restart", gloo_testing::deadline(120));
    assert!(flag.exists(), "rank 1 never failed, so nothing was restarted");
    assert_checked_table(&out, "torchrun after a restart");
}

// ---------------------------------------------------------------------------------------------
// mpirun and srun

/// The flags root needs to run mpirun at all (Open MPI refuses root without them).
fn mpirun_root_flags() -> &'static [&'static str] {
    let root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root.unwrap_or(false) { &["--allow-run-as-root"] } else { &[] }
}

#[test]
fn mpirun_launches_the_job_unchanged() {
    for n in ["2", "4"] {
        let mut cmd = Command::new("mpirun");
        cmd.args(mpirun_root_flags()).args(["--oversubscribe", "-np", n, BENCH]);
        cmd.args(["--store", "env://"]).args(SHORT);
        let out = finish(piped(cmd), "mpirun", gloo_testing::deadline(120));
        assert_checked_table(&out, &format!("mpirun -np {n}"));
        // One host: the ranks met in mpirun's private per-job directory.
        assert!(out.stdout.contains("env:// (file://"), "{}", out.stdout);
    }
}

/// A stale `RANK`/`WORLD_SIZE` exported in the shell does not make every mpirun process rank
/// 0: every rank fails at once naming both sources.
#[test]
fn a_stale_rank_under_mpirun_is_an_error_naming_both_sources() {
    let mut cmd = Command::new("mpirun");
    cmd.args(mpirun_root_flags()).args(["--oversubscribe", "-np", "2", BENCH]);
    cmd.args(["--store", "env://"]).args(SHORT).env("RANK", "0").env("WORLD_SIZE", "2");
    let out = finish(piped(cmd), "mpirun with a stale RANK", gloo_testing::deadline(60));
    assert!(!out.ok);
    // Rank 1 of mpirun says RANK=0 contradicts OMPI_COMM_WORLD_RANK=1.
    assert!(
        out.stderr.contains("RANK=0") && out.stderr.contains("OMPI_COMM_WORLD_RANK=1"),
        "{}",
        out.stderr
    );
}

/// The variables srun sets for a 4-task step on one node, and nothing more.
fn srun_env(rank: u32, size: u32, job: u32) -> Vec<(String, String)> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    [
        ("SLURM_PROCID", rank.to_string()),
        ("SLURM_NTASKS", size.to_string()),
        ("SLURM_LOCALID", rank.to_string()),
        ("SLURM_NODEID", "0".into()),
        ("SLURM_NNODES", "1".into()),
        ("SLURM_STEP_NUM_NODES", "1".into()),
        ("SLURM_STEP_NUM_TASKS", size.to_string()),
        ("SLURM_JOB_ID", job.to_string()),
        ("SLURM_JOBID", job.to_string()),
        ("SLURM_STEP_ID", "0".into()),
        ("SLURM_NODELIST", host.clone()),
        ("SLURM_STEP_NODELIST", host.clone()),
        ("SLURM_JOB_NODELIST", host),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn a_slurm_step_launches_the_job_unchanged() {
    let size = 4;
    // A job id from the clock, so concurrent runs of this test derive different ports.
    let job = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos() % 100_000);
    let children: Vec<Child> = (0..size)
        .map(|r| {
            let mut cmd = Command::new(BENCH);
            cmd.args(["--store", "env://"]).args(SHORT).envs(srun_env(r, size, job));
            piped(cmd)
        })
        .collect();
    let outs: Vec<Out> = children
        .into_iter()
        .map(|c| finish(c, "a srun task", gloo_testing::deadline(120)))
        .collect();
    assert_checked_table(&outs[0], "srun-style rank 0");
    for (r, o) in outs.iter().enumerate() {
        assert!(o.ok, "rank {r}: {}", o.stderr);
    }
}

/// `--rank/--size/--store tcp://` by hand, without and with a job token.
#[test]
fn ranks_started_by_hand_meet_through_rank_0s_store() {
    for token in [None, Some("a-job-token-of-32-bytes-or-more!")] {
        let store = format!("tcp://127.0.0.1:{}", free_port());
        let children: Vec<Child> = (0..2)
            .map(|r| {
                let mut cmd = Command::new(BENCH);
                cmd.args(["--rank", &r.to_string(), "--size", "2", "--store", &store]).args(SHORT);
                if let Some(t) = token {
                    cmd.env("GLOO_AUTH_TOKEN", t);
                }
                piped(cmd)
            })
            .collect();
        let outs: Vec<Out> = children
            .into_iter()
            .map(|c| finish(c, "a rank", gloo_testing::deadline(120)))
            .collect();
        assert_checked_table(&outs[0], &format!("by hand, token {token:?}"));
        assert!(outs[1].ok, "{}", outs[1].stderr);
    }
}

// ---------------------------------------------------------------------------------------------
// Start-up failures: every rank names the cause.

/// Start ranks by hand (`RANK`, `WORLD_SIZE` per rank, one `MASTER_PORT`), wait for all, and
/// return each one's output.
fn by_hand(ranks: &[(u32, u32)], timeout_secs: u32) -> Vec<Out> {
    let port = free_port().to_string();
    let children: Vec<Child> = ranks
        .iter()
        .map(|(rank, size)| {
            let mut cmd = Command::new(BENCH);
            cmd.args(["--store", "env://", "--timeout", &timeout_secs.to_string()]).args(SHORT);
            cmd.env("RANK", rank.to_string()).env("WORLD_SIZE", size.to_string());
            cmd.env("MASTER_ADDR", "127.0.0.1").env("MASTER_PORT", &port);
            piped(cmd)
        })
        .collect();
    let end = gloo_testing::deadline(u64::from(timeout_secs) + 60);
    children.into_iter().map(|c| finish(c, "a rank", end)).collect()
}

#[test]
fn a_wrong_world_size_on_one_rank_is_named_on_every_rank() {
    // A long deadline: the failure must not need it.
    let outs = by_hand(&[(0, 3), (1, 3), (2, 4)], 120);
    for (r, o) in outs.iter().enumerate() {
        assert!(!o.ok, "rank {r} succeeded");
        assert!(
            o.stderr.contains("rank 2 was started with a world of 4 ranks but rank 0 with 3"),
            "rank {r}: {}",
            o.stderr
        );
    }
}

#[test]
fn a_missing_rank_is_named_on_every_rank() {
    let outs = by_hand(&[(0, 3), (1, 3)], 4);
    for (r, o) in outs.iter().enumerate() {
        assert!(!o.ok, "rank {r} succeeded");
        assert!(o.stderr.contains("ranks [2] did not publish"), "rank {r}: {}", o.stderr);
    }
}

#[test]
fn a_duplicate_rank_is_named_on_every_rank() {
    let outs = by_hand(&[(0, 3), (1, 3), (1, 3)], 120);
    for (r, o) in outs.iter().enumerate() {
        assert!(!o.ok, "process {r} succeeded");
        assert!(
            o.stderr.contains("rank 1 was claimed by more than one process"),
            "process {r}: {}",
            o.stderr
        );
    }
}

/// Rank 0 hosts the store; without it the others say so, naming MASTER_ADDR:MASTER_PORT.
#[test]
fn a_missing_rank_0_is_named_as_the_store_host() {
    let outs = by_hand(&[(1, 2)], 3);
    assert!(!outs[0].ok);
    assert!(outs[0].stderr.contains("is rank 0 running?"), "{}", outs[0].stderr);
}

// ---------------------------------------------------------------------------------------------
// The README shows the commands these tests run.

#[test]
fn the_readme_shows_the_commands_these_tests_run() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme
        .split("## Launching a job")
        .nth(1)
        .expect("README has a \"Launching a job\" section")
        .split("\n## ")
        .next()
        .unwrap();
    for command in [
        "torchrun --nproc-per-node=4 --no-python target/release/gloo-bench --store env://",
        "torchrun --nproc-per-node=4 --rdzv-backend=c10d --rdzv-endpoint=",
        "mpirun --oversubscribe -np 4 target/release/gloo-bench --store env://",
        "srun --ntasks=4 target/release/gloo-bench --store env://",
        "gloo-bench --rank 0 --size 2 --store tcp://",
        "GLOO_AUTH_TOKEN=",
    ] {
        assert!(section.contains(command), "the README's launching section lacks `{command}`");
    }
}
