//! Running one command for a row: its output streamed to ours line by line and kept (a log
//! file, the last lines for the summary, the facts the matrix needs), under a time limit that
//! kills the command and every process it started.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How many of the last output lines are kept to be shown again when a row fails.
pub const TAIL_LINES: usize = 40;

/// How long to wait for the output pipes to close after the command exited: a process it left
/// running may hold them open, and the matrix must not hang on it.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// What a command did.
#[derive(Debug)]
pub struct Outcome {
    /// How it exited; `None` when it was killed for running past its time limit.
    pub status: Option<ExitStatus>,
    /// The facts read from its output.
    pub facts: Facts,
    /// Its last [`TAIL_LINES`] lines of output (stdout and stderr as they arrived).
    pub tail: Vec<String>,
    /// Whether its output pipes were still open (held by a left-behind process) when we gave up
    /// waiting for them.
    pub output_left_open: bool,
}

/// What the matrix reads from a row's output.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Sum of `N passed` over every libtest summary line.
    pub tests_passed: u64,
    /// How many libtest summary lines were seen (one per test binary and doc-test run).
    pub test_runs: u64,
    /// Cargo's "no test target named ..." (or bin/example) error, when it said so.
    pub missing_target: Option<String>,
}

impl Facts {
    /// Read one line of output.
    pub fn observe(&mut self, line: &str) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("test result: ") {
            self.test_runs += 1;
            // "ok. 12 passed; 0 failed; 1 ignored; ..." or "FAILED. 3 passed; 1 failed; ..."
            if let Some(passed) = rest
                .split(['.', ';'])
                .map(str::trim)
                .find_map(|part| part.strip_suffix(" passed"))
                .and_then(|n| n.trim().parse::<u64>().ok())
            {
                self.tests_passed += passed;
            }
        } else if line.starts_with("error: no ") && line.contains(" target named ") {
            self.missing_target
                .get_or_insert_with(|| line.trim_start_matches("error: ").to_string());
        }
    }
}

/// Everything the two output readers share.
struct Shared {
    facts: Facts,
    tail: VecDeque<String>,
    log: Option<File>,
}

/// Run `cmd` to completion or until `timeout`, streaming its output to `log` and, when `echo`,
/// to ours.
pub fn run(
    mut cmd: Command,
    timeout: Duration,
    log: Option<File>,
    echo: bool,
) -> io::Result<Outcome> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn()?;
    let shared = Arc::new(Mutex::new(Shared {
        facts: Facts::default(),
        tail: VecDeque::with_capacity(TAIL_LINES),
        log,
    }));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    // `spawn` with both pipes requested always yields both handles.
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let (out, err) = if echo { (Echo::Stdout, Echo::Stderr) } else { (Echo::No, Echo::No) };
    spawn_reader(stdout, out, Arc::clone(&shared), done_tx.clone());
    spawn_reader(stderr, err, Arc::clone(&shared), done_tx);

    let status = wait_with_timeout(&mut child, timeout)?;

    // Both readers finish at end of file; give left-behind holders of the pipes a grace period.
    let drain_deadline = Instant::now() + DRAIN_GRACE;
    let mut output_left_open = false;
    for _ in 0..2 {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            output_left_open = true;
            break;
        }
    }
    let shared = lock(&shared);
    Ok(Outcome {
        status,
        facts: shared.facts.clone(),
        tail: shared.tail.iter().cloned().collect(),
        output_left_open,
    })
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A reader that panicked mid-line leaves consistent data behind (counters and a queue of
    // whole lines), so a poisoned lock is still safe to read.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a reader repeats the lines it reads.
#[derive(Clone, Copy)]
enum Echo {
    Stdout,
    Stderr,
    No,
}

fn spawn_reader(
    pipe: impl Read + Send + 'static,
    echo: Echo,
    shared: Arc<Mutex<Shared>>,
    done: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // Our own stdout/stderr going away (a closed pager) must not stop the row; the
            // write errors are ignored on purpose.
            match echo {
                Echo::Stderr => {
                    let mut err = io::stderr().lock();
                    let _ = err.write_all(&line);
                    let _ = err.flush();
                }
                Echo::Stdout => {
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(&line);
                    let _ = out.flush();
                }
                Echo::No => {}
            }
            let text = strip_ansi(&String::from_utf8_lossy(&line));
            let text = text.trim_end_matches(['\n', '\r']);
            let mut shared = lock(&shared);
            shared.facts.observe(text);
            if shared.tail.len() == TAIL_LINES {
                shared.tail.pop_front();
            }
            shared.tail.push_back(text.to_string());
            if let Some(log) = shared.log.as_mut() {
                let _ = writeln!(log, "{text}");
            }
        }
        let _ = done.send(());
    });
}

/// `text` without terminal colour codes (`ESC [ ... letter` and `ESC ( B`), so that logs and
/// the summary read cleanly and the summary lines are recognised whatever the colour setting.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters and intermediates, then one final byte in '@'..='~'.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // Character-set selection takes one more character.
            Some('(' | ')') => {
                chars.next();
            }
            _ => {}
        }
    }
    out
}

/// Wait for `child`; past `timeout`, kill it and all its descendants and return `None`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill_tree(child);
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Kill `child` and every process below it (cargo's test binaries, the ranks they spawned).
///
/// The whole tree is collected first and killed in one go, so no process is reparented away
/// between our reading of `/proc` and the kill.
pub(crate) fn kill_tree(child: &mut Child) {
    let mut pids = descendants(child.id());
    pids.push(child.id());
    let status = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        // `kill` may be missing or some process already gone: at least stop the direct child.
        let _ = child.kill();
    }
}

/// Every descendant of `root`, read from `/proc/<pid>/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| parent_pid(&stat))
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &kid in children.get(&pid).into_iter().flatten() {
            found.push(kid);
            stack.push(kid);
        }
    }
    found
}

/// The parent pid in a `/proc/<pid>/stat` line: `pid (comm) state ppid ...`, where `comm` may
/// itself hold spaces and parentheses, so parsing starts after the last `)`.
fn parent_pid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_passed_tests_over_every_summary_line() {
        let mut facts = Facts::default();
        facts.observe("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        facts.observe(
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        facts.observe("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        facts.observe("test passed_thing ... ok");
        assert_eq!(facts.tests_passed, 15);
        assert_eq!(facts.test_runs, 3);
        assert_eq!(facts.missing_target, None);
    }

    #[test]
    fn notices_a_missing_test_target() {
        let mut facts = Facts::default();
        facts.observe("error: no test target named `conformance` in `gloo-transport` package");
        facts.observe("error: no bin target named `x` in `y` package");
        assert_eq!(
            facts.missing_target.as_deref(),
            Some("no test target named `conformance` in `gloo-transport` package")
        );
    }

    #[test]
    fn strips_colour_codes() {
        assert_eq!(strip_ansi("\x1b[31m-    x\x1b(B\x1b[m y"), "-    x y");
        assert_eq!(strip_ansi("\x1b[0m\x1b[1m\x1b[32mtest result: ok.\x1b[0m"), "test result: ok.");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn parses_parent_pid_even_with_odd_command_names() {
        assert_eq!(parent_pid("42 (cargo) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_pid("43 (a) b) (c) R 9 43 43 0"), Some(9));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn streams_and_reads_a_real_command() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("echo 'test result: ok. 2 passed; 0 failed'; echo oops >&2; exit 3");
        let outcome = run(cmd, Duration::from_secs(60), None, false).unwrap();
        assert_eq!(outcome.status.and_then(|s| s.code()), Some(3));
        assert_eq!(outcome.facts.tests_passed, 2);
        assert!(outcome.tail.iter().any(|l| l == "oops"), "{:?}", outcome.tail);
        assert!(!outcome.output_left_open);
    }

    #[test]
    fn kills_a_command_and_its_children_past_the_limit() {
        let mut cmd = Command::new("sh");
        // The child shell starts a grandchild that would hold the pipes for 300 s.
        cmd.arg("-c").arg("sleep 300 & sleep 300; wait");
        let outcome = run(cmd, Duration::from_millis(300), None, false).unwrap();
        assert!(outcome.status.is_none(), "the command should have been killed");
        assert!(
            !outcome.output_left_open,
            "the grandchild should have been killed too, closing the pipes"
        );
    }
}
