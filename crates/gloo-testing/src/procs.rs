//! Multi-process tests: the test binary re-executes itself, once per rank.
//!
//! A test that wants real processes calls [`spawn_self`] with its own name; each child runs
//! the same test function with [`RANK_ENV`] and [`SIZE_ENV`] set, which [`child_rank`]
//! reads, so one function holds both sides:
//!
//! ```no_run
//! use gloo_testing::procs::{self, Board};
//!
//! #[test]
//! fn two_ranks() {
//!     if let Some((rank, size)) = procs::child_rank() {
//!         let board = Board::from_env().expect("the parent passes a board");
//!         board.put(rank, &rank.to_le_bytes()).unwrap();
//!         let all = board.get_all(size, gloo_testing::deadline(30)).unwrap();
//!         assert_eq!(all.len(), size as usize);
//!         return;
//!     }
//!     let board = Board::fresh("two-ranks").unwrap();
//!     let group = procs::spawn_self("two_ranks", 2, &[board.env()]);
//!     for outcome in group.wait(gloo_testing::deadline(60)) {
//!         outcome.assert_success();
//!     }
//! }
//! ```
//!
//! The parent can kill (`SIGKILL`), stop (`SIGSTOP`) and continue (`SIGCONT`) a rank to test
//! fault handling. [`Group::wait`] is bounded: at its deadline every child still running is
//! killed and reported as hung. Dropping a [`Group`] (for instance when the parent test
//! panics) kills every child that is still running, so no test leaves processes behind.
//!
//! [`Board`] lets processes exchange bytes (addresses, ports) through files, with no store.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The environment variable that holds a child's rank.
pub const RANK_ENV: &str = "GLOO_TEST_CHILD_RANK";

/// The environment variable that holds the number of ranks in a child's group.
pub const SIZE_ENV: &str = "GLOO_TEST_CHILD_SIZE";

/// The environment variable that holds the directory of a [`Board`].
pub const BOARD_ENV: &str = "GLOO_TEST_BOARD";

/// The exit code of a child whose parent went away (see [`child_rank`]).
pub const ORPHAN_EXIT: i32 = 97;

/// In a child started by [`spawn_self`]: its rank and the group's size. `None` in a test run
/// normally (the parent). A malformed value is a bug in the parent and panics, naming it.
///
/// The first call in a child also starts a thread that watches the pipe on its standard
/// input, whose write end only the parent holds: when the parent dies (even of `SIGKILL`, when
/// no destructor runs) the pipe reads end-of-file and the child exits with [`ORPHAN_EXIT`], so
/// a killed test run leaves no rank spinning behind it. (Without unsafe code there is no
/// `prctl(PR_SET_PDEATHSIG)`; the pipe gives the same guarantee portably.)
pub fn child_rank() -> Option<(u32, u32)> {
    let rank = std::env::var(RANK_ENV).ok()?;
    let size = std::env::var(SIZE_ENV).ok()?;
    let parse = |name: &str, v: &str| -> u32 {
        v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    };
    let (rank, size) = (parse(RANK_ENV, &rank), parse(SIZE_ENV, &size));
    assert!(rank < size, "{RANK_ENV}={rank} is not below {SIZE_ENV}={size}");
    static WATCH: std::sync::Once = std::sync::Once::new();
    WATCH.call_once(|| {
        std::thread::spawn(move || {
            // The parent never writes; anything read is ignored until end-of-file (or an
            // error, which means the same: the pipe is gone).
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            // Not `eprintln!`: stderr is a pipe to the dead parent, and a failed write there
            // would panic this thread instead of ending the process.
            let _ = writeln!(std::io::stderr(), "rank {rank}: the parent process is gone; exiting");
            std::process::exit(ORPHAN_EXIT);
        });
    });
    Some((rank, size))
}

/// Start `size` copies of the current test binary, each running only the test `test_name`
/// (as the test harness names it, e.g. `module::test_fn`) with `--nocapture`, with `env` and
/// its rank in [`RANK_ENV`] / [`SIZE_ENV`]. Output is captured per rank.
///
/// Panics if a child cannot be started (the children already started are killed).
pub fn spawn_self(test_name: &str, size: u32, env: &[(String, String)]) -> Group {
    spawn_self_with(test_name, size, |_| env.to_vec())
}

/// Like [`spawn_self`], with environment variables chosen per rank by `env_for(rank)`.
pub fn spawn_self_with(
    test_name: &str,
    size: u32,
    env_for: impl Fn(u32) -> Vec<(String, String)>,
) -> Group {
    spawn_self_in(test_name, size, |_| Vec::new(), env_for)
}

/// Like [`spawn_self_with`], each rank's command run through the command `prefix_for(rank)`
/// when that is not empty (for instance `ip netns exec <namespace>`, which execs the test
/// binary in place, keeping its process id).
pub fn spawn_self_in(
    test_name: &str,
    size: u32,
    prefix_for: impl Fn(u32) -> Vec<String>,
    env_for: impl Fn(u32) -> Vec<(String, String)>,
) -> Group {
    let exe = std::env::current_exe().expect("the path of the running test binary");
    let mut group = Group { test_name: test_name.to_string(), children: Vec::new() };
    for rank in 0..size {
        let prefix = prefix_for(rank);
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(["--exact", test_name, "--nocapture", "--test-threads=1"])
            .env(RANK_ENV, rank.to_string())
            .env(SIZE_ENV, size.to_string())
            .envs(env_for(rank))
            // The child watches this pipe to learn of the parent's death (see `child_rank`).
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child =
            cmd.spawn().unwrap_or_else(|e| panic!("cannot start rank {rank} of {test_name}: {e}"));
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        let stdin = child.stdin.take();
        group.children.push(Some(Proc { pid: child.id(), child, out, err, _stdin: stdin }));
    }
    group
}

/// Read a child's pipe to the end on a thread, so that a chatty child never blocks on a full
/// pipe while the parent waits for it.
fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<JoinHandle<Vec<u8>>> {
    let mut pipe = pipe?;
    Some(std::thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error ends the capture early; what was read is still reported.
        let _ = pipe.read_to_end(&mut buf);
        buf
    }))
}

struct Proc {
    pid: u32,
    child: Child,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    /// The write end of the child's stdin, held open (and never written) while the child may
    /// run: closing it, or the parent dying, tells the child to exit.
    _stdin: Option<std::process::ChildStdin>,
}

/// Whether process `pid` has ended: `/proc` has no such process, or shows it as a zombie
/// (ended, but not yet reaped by a parent that may not reap it soon, such as an orphan's).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// The running children of process `pid`, from the kernel's list of them.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Wait until process `pid` has ended (see [`process_gone`]) or `deadline` passes; whether it
/// ended.
pub fn wait_gone(pid: u32, deadline: Instant) -> bool {
    while !process_gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    process_gone(pid)
}

/// The running children of one [`spawn_self`] call. Dropping it kills those still running.
pub struct Group {
    test_name: String,
    children: Vec<Option<Proc>>,
}

/// How one child ended.
#[derive(Debug)]
pub struct Outcome {
    /// The child's rank.
    pub rank: u32,
    /// Its exit status (after a kill at the deadline, the status of that kill).
    pub status: Option<ExitStatus>,
    /// Whether it was still running at the deadline of [`Group::wait`] and was killed then.
    pub hung: bool,
    /// Whether the child's test harness ran exactly one test (it ran none when the name
    /// given to [`spawn_self`] matches no test, which must not pass as a success).
    pub ran_one_test: bool,
    /// What it wrote to stdout (the test harness's lines included).
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Outcome {
    /// Whether the child ran its test and exited on its own with status 0.
    pub fn success(&self) -> bool {
        !self.hung && self.ran_one_test && self.status.is_some_and(|s| s.success())
    }

    /// The signal that ended the child, if one did.
    pub fn signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.status.and_then(|s| s.signal())
    }

    /// Panic unless the child succeeded, printing its output.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(self.success(), "{}", self.report("did not succeed"));
    }

    /// A description of how the child ended with its captured output, for failure messages.
    pub fn report(&self, what: &str) -> String {
        format!(
            "rank {} {what} (status {:?}{}{}).\n--- stdout of rank {} ---\n{}\n--- stderr of rank {} ---\n{}",
            self.rank,
            self.status,
            if self.hung { ", hung and killed at the deadline" } else { "" },
            if self.ran_one_test {
                ""
            } else {
                ", did not run exactly one test: check the test name"
            },
            self.rank,
            self.stdout,
            self.rank,
            self.stderr
        )
    }
}

impl Group {
    /// The number of children started.
    pub fn size(&self) -> u32 {
        self.children.len() as u32
    }

    /// The process id of `rank`'s child.
    pub fn pid(&self, rank: u32) -> u32 {
        self.proc(rank).pid
    }

    fn proc(&self, rank: u32) -> &Proc {
        self.children
            .get(rank as usize)
            .and_then(Option::as_ref)
            .unwrap_or_else(|| panic!("{}: no running child for rank {rank}", self.test_name))
    }

    /// Kill `rank`'s child with `SIGKILL` (no-op if it already exited).
    pub fn kill(&mut self, rank: u32) {
        if let Some(Some(p)) = self.children.get_mut(rank as usize) {
            // An error here means the child already exited, which is what was wanted.
            let _ = p.child.kill();
        }
    }

    /// Freeze `rank`'s child with `SIGSTOP`.
    pub fn stop(&self, rank: u32) {
        self.signal(rank, "-STOP");
    }

    /// Resume `rank`'s child with `SIGCONT`.
    pub fn cont(&self, rank: u32) {
        self.signal(rank, "-CONT");
    }

    /// Send a signal with the `kill` utility: the crate forbids unsafe code, so no `libc`.
    fn signal(&self, rank: u32, sig: &str) {
        let pid = self.pid(rank).to_string();
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap_or_else(|e| panic!("cannot run `kill {sig} {pid}` for rank {rank}: {e}"));
        assert!(status.success(), "`kill {sig} {pid}` for rank {rank} failed: {status}");
    }

    /// Wait for every child until `deadline`; kill those still running then (reported as
    /// hung). Returns one outcome per rank, in rank order.
    pub fn wait(mut self, deadline: Instant) -> Vec<Outcome> {
        let mut statuses: Vec<Option<ExitStatus>> = vec![None; self.children.len()];
        loop {
            for (p, st) in self.children.iter_mut().zip(statuses.iter_mut()) {
                if st.is_none()
                    && let Some(p) = p
                {
                    *st = p.child.try_wait().ok().flatten();
                }
            }
            if statuses.iter().all(Option::is_some) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut outcomes = Vec::new();
        for (rank, (p, st)) in self.children.iter_mut().zip(statuses).enumerate() {
            let Some(mut p) = p.take() else { continue };
            let hung = st.is_none();
            let status = if hung {
                // A stopped child dies of SIGKILL too.
                let _ = p.child.kill();
                p.child.wait().ok()
            } else {
                st
            };
            let text = |h: Option<JoinHandle<Vec<u8>>>| {
                h.and_then(|h| h.join().ok())
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            let stdout = text(p.out.take());
            outcomes.push(Outcome {
                rank: rank as u32,
                status,
                hung,
                ran_one_test: stdout.lines().any(|l| l.trim() == "running 1 test"),
                stdout,
                stderr: text(p.err.take()),
            });
        }
        outcomes
    }

    /// [`wait`](Group::wait), then assert that every child succeeded.
    #[track_caller]
    pub fn wait_success(self, deadline: Instant) -> Vec<Outcome> {
        let outcomes = self.wait(deadline);
        for o in &outcomes {
            o.assert_success();
        }
        outcomes
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for p in self.children.iter_mut().flatten() {
            // Errors mean the child already exited; `wait` reaps it either way.
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// A directory through which processes exchange small byte strings, with no store.
///
/// Writers write a temporary file and rename it into place, so a reader sees a value whole
/// or not at all. Readers poll, bounded by a deadline.
#[derive(Debug)]
pub struct Board {
    dir: PathBuf,
    /// Whether this value created the directory (and removes it when dropped).
    owner: bool,
}

static FRESH: AtomicU64 = AtomicU64::new(0);

impl Board {
    /// A board in `dir`, created if missing. It is not removed on drop.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Board> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Board { dir, owner: false })
    }

    /// A board in a new, unique directory under the system's temporary directory, removed
    /// when this value is dropped.
    pub fn fresh(label: &str) -> io::Result<Board> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "gloo-board-{label}-{}-{}-{nanos}",
            std::process::id(),
            FRESH.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)?;
        Ok(Board { dir, owner: true })
    }

    /// The board named by [`BOARD_ENV`], in a child.
    pub fn from_env() -> Option<Board> {
        let dir = std::env::var_os(BOARD_ENV)?;
        Some(Board { dir: PathBuf::from(dir), owner: false })
    }

    /// The `(BOARD_ENV, directory)` pair to pass to [`spawn_self`].
    pub fn env(&self) -> (String, String) {
        (BOARD_ENV.to_string(), self.dir.to_string_lossy().into_owned())
    }

    /// The board's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Publish `bytes` as rank `rank`'s entry.
    pub fn put(&self, rank: u32, bytes: &[u8]) -> io::Result<()> {
        self.put_named(&format!("rank-{rank}"), bytes)
    }

    /// Publish `bytes` under `name` (letters, digits, `-` and `_`).
    pub fn put_named(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, self.dir.join(name))
    }

    /// Wait until the entry `name` exists and return it; `TimedOut` at the deadline.
    pub fn get_named(&self, name: &str, deadline: Instant) -> io::Result<Vec<u8>> {
        check_name(name)?;
        loop {
            match std::fs::read(self.dir.join(name)) {
                Ok(b) => return Ok(b),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{name:?} did not appear on the board {:?}", self.dir),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait until ranks `0..size` have all published and return their entries in rank
    /// order; `TimedOut` naming the missing ranks at the deadline.
    pub fn get_all(&self, size: u32, deadline: Instant) -> io::Result<Vec<Vec<u8>>> {
        let mut got: Vec<Option<Vec<u8>>> = vec![None; size as usize];
        loop {
            for (rank, slot) in got.iter_mut().enumerate() {
                if slot.is_none() {
                    match std::fs::read(self.dir.join(format!("rank-{rank}"))) {
                        Ok(b) => *slot = Some(b),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if got.iter().all(Option::is_some) {
                return Ok(got.into_iter().flatten().collect());
            }
            if Instant::now() >= deadline {
                let missing: Vec<usize> =
                    got.iter().enumerate().filter(|(_, g)| g.is_none()).map(|(r, _)| r).collect();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("ranks {missing:?} did not publish on the board {:?}", self.dir),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn check_name(name: &str) -> io::Result<()> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad board entry name {name:?}")))
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        if self.owner {
            // Best effort: a leftover directory in the temporary directory harms nothing.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
