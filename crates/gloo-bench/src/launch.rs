//! The local launcher: with no `--rank`, the tool starts the ranks itself as child processes
//! of its own binary, serves them a TCP store on loopback (embedded, in this process), waits
//! for them under
//! a deadline (killing whatever is left when it passes, so the launcher never hangs) and reads
//! rank 0's report.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{Bind, Cli, StoreUrl};
use crate::error::{Error, Result};
use crate::report::Report;
use crate::store;

/// How long the launcher lets the other ranks finish after one has failed. They normally
/// fail by themselves at once (the failed rank's sockets close) or within the transport's
/// peer timeout (5 s by default, for a frozen rank); this bounds a rank that would not.
const GRACE_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!("gloo-bench-{}-{nanos}", std::process::id()));
        // create_dir (not create_dir_all) fails if the path exists, so a directory planted
        // under the predictable name is never used.
        std::fs::create_dir(&p).map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Child processes killed on drop, so no error path leaves a rank running. The write ends of
/// their stdin pipes are held (never written) for as long as they may run: a child started
/// with `--exit-with-launcher` exits when its pipe closes, which happens even when this
/// process dies of `SIGKILL` and no destructor runs.
struct Children(Vec<(u32, Child, Option<ExitStatus>)>, Vec<std::process::ChildStdin>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c, st) in &mut self.0 {
            if st.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// What the ranks ended with: rank 0's report, if it wrote one, and each failed rank.
pub(crate) struct Launched {
    /// Rank 0's report.
    pub(crate) report: Option<Report>,
    /// `rank r exited with …` for every rank that did not succeed.
    pub(crate) failures: Vec<String>,
}

/// Starts `--ranks` ranks and waits for them.
pub(crate) fn run(cli: &Cli) -> Result<Launched> {
    let n = cli.launch.ranks;
    let dir = TempDir::new()?;
    // The embedded store lives until the ranks are done (this function's end).
    let tls = crate::tls::for_launch(n, cli.launch.transport, &dir.0)?;
    let (url, _server) = match &cli.launch.store {
        Some(u) => (u.clone(), None),
        None => {
            let addr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
            let server = store::serve(addr, tls.as_ref().map(|t| t.store.clone()))?;
            (StoreUrl::Tcp(server.local_addr().to_string()), Some(server))
        }
    };
    let report_path = dir.0.join("report.json");
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this program's path", e))?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut children = Children(Vec::new(), Vec::new());
    let (cpus, placement) = placement(cli.launch.bind, n);
    say!(
        "gloo-bench: starting {n} ranks as processes of {} (store {url}; {placement})",
        exe.display()
    );
    for r in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.args(&args).args(["--rank", &r.to_string(), "--size", &n.to_string()]);
        if let Some(cpus) = &cpus {
            cmd.arg("--cpu").arg(cpus[r as usize].to_string());
        }
        if cli.launch.store.is_none() {
            cmd.arg("--store").arg(url.to_string());
        }
        if r == 0 {
            cmd.arg("--child-report").arg(&report_path);
        }
        cmd.arg("--exit-with-launcher");
        if let Some(t) = &tls {
            for (k, v) in t.vars(r) {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting rank {r}"), e))?;
        children.1.extend(child.stdin.take());
        children.0.push((r, child, None));
    }

    let hard =
        Instant::now() + Duration::from_secs_f64(cli.launch.timeout) + Duration::from_secs(10);
    let mut first_failure: Option<Instant> = None;
    let mut failures = Vec::new();
    loop {
        let mut running = 0;
        for (r, c, st) in &mut children.0 {
            if st.is_some() {
                continue;
            }
            match c.try_wait() {
                Ok(Some(s)) => {
                    *st = Some(s);
                    if !s.success() {
                        failures.push(format!("rank {r} exited with {s}"));
                        first_failure.get_or_insert_with(Instant::now);
                    }
                }
                Ok(None) => running += 1,
                Err(e) => return Err(Error::io(format!("waiting for rank {r}"), e)),
            }
        }
        if running == 0 {
            break;
        }
        let now = Instant::now();
        let give_up = now >= hard || first_failure.is_some_and(|t| now >= t + GRACE_AFTER_FAILURE);
        if give_up {
            for (r, c, st) in &mut children.0 {
                if st.is_none() {
                    let _ = c.kill();
                    *st = c.wait().ok();
                    failures.push(format!("rank {r} did not finish in time and was killed"));
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = match std::fs::read(&report_path) {
        Ok(body) => Some(serde_json::from_slice::<Report>(&body).map_err(|e| Error::Peer {
            rank: 0,
            detail: format!("wrote an unreadable report: {e}"),
        })?),
        Err(_) => None,
    };
    // The user ran the launcher, not rank 0's command line with its added flags.
    // The header says both how the ranks were placed and where rank 0 found itself.
    let report = report.map(|r| Report {
        command: crate::report::command_line(),
        placement: format!("{placement}; {}", r.placement),
        ..r
    });
    Ok(Launched { report, failures })
}

/// Where the ranks go, and how the header says it: with `--bind core`, one CPU per rank on
/// distinct cores when there are enough (as mpirun binds), else none.
fn placement(bind: Bind, ranks: u32) -> (Option<Vec<usize>>, String) {
    let online = gloo_shm::placement::online_cpus();
    match bind {
        Bind::None => (None, format!("bind none: {ranks} ranks, {online} cpus")),
        Bind::Core => match gloo_shm::placement::cores_for(ranks as usize) {
            Ok(Some(cpus)) => {
                let list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
                let text = format!("bind core: rank r on cpu [{}][r]", list.join(","));
                (Some(cpus), text)
            }
            Ok(None) => {
                let allowed = gloo_shm::placement::allowed_cpus().map_or(online, |c| c.len());
                (None, format!("bind core: not bound, {ranks} ranks on {allowed} allowed cpus"))
            }
            Err(e) => (None, format!("bind core: not bound ({e})")),
        },
    }
}
