//! `cargo xtask test-matrix`: run the rows of [`crate::rows::ROWS`] one after the other and
//! print a pass/fail/skip matrix.
//!
//! Rows run sequentially on purpose: the CI machine has two cores, and cargo already uses both
//! to build and test one row.

use crate::glob;
use crate::row::{Kind, Need, Row};
use crate::run::{self, Outcome};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The flags of `test-matrix`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// Print the selected rows and the command each runs, run nothing.
    pub list: bool,
    /// Run only rows matching one of these `*` globs (all rows when empty).
    pub only: Vec<String>,
    /// CI mode: a skipped row is a failure.
    pub ci: bool,
}

/// Where and with what the rows run.
#[derive(Debug, Clone)]
pub struct Context {
    /// The workspace root; every row runs there.
    pub root: PathBuf,
    /// The base target directory (`$CARGO_TARGET_DIR`, else `<root>/target`); rows with a
    /// target subdirectory build below it, and row logs go to `<it>/test-matrix/`.
    pub target_dir: PathBuf,
    /// The cargo to run (`$CARGO`, which `cargo xtask` sets, else `cargo` from `PATH`).
    pub cargo: String,
    /// `RUSTFLAGS` from the caller's environment, kept when a row adds its own.
    pub rustflags: Option<String>,
}

impl Context {
    /// The context of this process: its environment and the workspace this xtask lives in.
    pub fn from_env() -> Context {
        // xtask lives in `<root>/xtask`, so its manifest directory's parent is the root.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            // Cargo reads a relative CARGO_TARGET_DIR against its working directory, which is
            // ours; rows run in the root, so make it absolute first.
            Some(dir) => std::env::current_dir().unwrap_or_default().join(dir),
            None => root.join("target"),
        };
        Context {
            root,
            target_dir,
            cargo: std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()),
            rustflags: std::env::var("RUSTFLAGS").ok().filter(|f| !f.is_empty()),
        }
    }
}

/// A row's command: environment assignments and the arguments after `cargo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Variables set for this row only.
    pub env: Vec<(String, String)>,
    /// The arguments after `cargo`.
    pub args: Vec<String>,
}

/// The command `row` runs in `ctx`.
pub fn invocation(row: &Row, ctx: &Context) -> Invocation {
    let mut env: Vec<(String, String)> =
        row.env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if let Some(flags) = row.rustflags {
        let all = match &ctx.rustflags {
            Some(theirs) => format!("{theirs} {flags}"),
            None => flags.to_string(),
        };
        env.push(("RUSTFLAGS".to_string(), all));
    }
    if let Some(subdir) = row.target_subdir {
        let dir = ctx.target_dir.join(subdir);
        env.push(("CARGO_TARGET_DIR".to_string(), dir.to_string_lossy().into_owned()));
    }
    let args: Vec<String> = match row.kind {
        Kind::Cargo => row.cargo_args.iter().map(|s| s.to_string()).collect(),
        Kind::Test => {
            // --no-fail-fast: a matrix row reports every failing test binary, not the first.
            let mut args = vec!["test", "-p", row.package, "--no-fail-fast"];
            if row.release {
                args.push("--release");
            }
            if row.no_default_features {
                args.push("--no-default-features");
            }
            let features = row.features.join(",");
            if !features.is_empty() {
                args.push("--features");
                args.push(&features);
            }
            for target in row.targets {
                args.extend(target.args());
            }
            if !row.test_args.is_empty() {
                args.push("--");
                args.extend(row.test_args);
            }
            args.into_iter().map(str::to_string).collect()
        }
    };
    Invocation { env, args }
}

/// The invocation as one could paste it into a shell in the workspace root.
pub fn shell_line(inv: &Invocation, ctx: &Context) -> String {
    let mut line = String::new();
    for (key, value) in &inv.env {
        // Paths under the root are shown relative to it, as a reader would type them.
        let value = Path::new(value)
            .strip_prefix(&ctx.root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| value.clone());
        let _ = write!(line, "{key}={} ", quote(&value));
    }
    line.push_str("cargo");
    for arg in &inv.args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(s: &str) -> String {
    let plain =
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-./=:,@%+".contains(c));
    if plain { s.to_string() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// How a row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It ran and passed.
    Pass,
    /// It ran and failed, could not run, or (under `--ci`) was skipped.
    Fail,
    /// A need was missing and we are not in CI.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One line of the final matrix.
#[derive(Debug, Clone)]
pub struct RowResult {
    /// The row's name.
    pub name: &'static str,
    /// How it ended.
    pub status: Status,
    /// How long it took, build included.
    pub took: Duration,
    /// Why it failed or was skipped, or how many tests passed.
    pub note: String,
    /// The row's last output lines, shown again for failures.
    pub tail: Vec<String>,
    /// Where its full output is.
    pub log: Option<PathBuf>,
}

/// The rows `opts.only` selects, or an error naming the globs that match no row.
pub fn select<'a>(rows: &'a [Row], only: &[String]) -> Result<Vec<&'a Row>, String> {
    if only.is_empty() {
        return Ok(rows.iter().collect());
    }
    let unmatched: Vec<&String> =
        only.iter().filter(|pat| !rows.iter().any(|row| glob::matches(pat, row.name))).collect();
    if !unmatched.is_empty() {
        let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
        return Err(format!(
            "--only {unmatched:?} matches no row; the rows are: {}",
            names.join(", ")
        ));
    }
    Ok(rows.iter().filter(|row| only.iter().any(|pat| glob::matches(pat, row.name))).collect())
}

/// Run `test-matrix` over `rows`; returns the process exit code (0 all passed, 1 a row failed,
/// 2 bad usage).
pub fn test_matrix(rows: &[Row], opts: &Options, ctx: &Context) -> i32 {
    let selected = match select(rows, &opts.only) {
        Ok(selected) => selected,
        Err(message) => {
            eprintln!("error: {message}");
            return 2;
        }
    };
    if opts.list {
        print!("{}", list(&selected, ctx));
        return 0;
    }
    println!(
        "test-matrix: running {} of {} rows{}",
        selected.len(),
        rows.len(),
        if opts.ci { " in CI mode (a skipped row is a failure)" } else { "" }
    );
    let started = Instant::now();
    let mut probes = HashMap::new();
    let mut results = Vec::new();
    for (i, row) in selected.iter().enumerate() {
        let inv = invocation(row, ctx);
        println!();
        println!("==> [{}/{}] {}: {}", i + 1, selected.len(), row.name, shell_line(&inv, ctx));
        let result = run_row(row, &inv, opts, ctx, &mut probes);
        println!(
            "<== {} {} in {}{}",
            row.name,
            result.status.label(),
            human(result.took),
            if result.note.is_empty() { String::new() } else { format!(" ({})", result.note) }
        );
        results.push(result);
    }
    print!("{}", summary(&results, started.elapsed(), opts.ci));
    if results.iter().any(|r| r.status == Status::Fail) { 1 } else { 0 }
}

fn run_row(
    row: &Row,
    inv: &Invocation,
    opts: &Options,
    ctx: &Context,
    probes: &mut HashMap<&'static str, bool>,
) -> RowResult {
    let started = Instant::now();
    let missing: Vec<&Need> = row
        .needs
        .iter()
        .filter(|need| !*probes.entry(need.what).or_insert_with(|| probe(need, ctx)))
        .collect();
    if !missing.is_empty() {
        let status = if opts.ci { Status::Fail } else { Status::Skip };
        let verb = if opts.ci { "FAILED (CI mode: a skipped row is a failure)" } else { "SKIPPED" };
        let bar = "!".repeat(78);
        eprintln!("{bar}");
        for need in &missing {
            eprintln!("!! {} {verb}: `{}` is not installed", row.name, need.what);
            eprintln!("!!     install it with: {}", need.install);
        }
        eprintln!("{bar}");
        let note = missing
            .iter()
            .map(|n| format!("missing {} ({})", n.what, n.install))
            .collect::<Vec<_>>()
            .join("; ");
        return RowResult {
            name: row.name,
            status,
            took: started.elapsed(),
            note,
            tail: Vec::new(),
            log: None,
        };
    }

    let log_path =
        ctx.target_dir.join("test-matrix").join(format!("{}.log", row.name.replace('/', "__")));
    let log = std::fs::create_dir_all(log_path.parent().unwrap_or(&ctx.target_dir))
        .and_then(|()| std::fs::File::create(&log_path))
        .map_err(|e| {
            eprintln!("warning: no log file for {} at {}: {e}", row.name, log_path.display())
        })
        .ok();
    let mut cmd = Command::new(&ctx.cargo);
    cmd.args(&inv.args).current_dir(&ctx.root);
    for (key, value) in &inv.env {
        cmd.env(key, value);
    }
    // Output goes through a pipe, so cargo would turn colours off; keep them for a person
    // watching a terminal.
    if std::io::stderr().is_terminal() && std::env::var_os("CARGO_TERM_COLOR").is_none() {
        cmd.env("CARGO_TERM_COLOR", "always");
    }
    let outcome = run::run(cmd, row.timeout, log, true);
    let took = started.elapsed();
    let log = Some(log_path);
    match outcome {
        Err(e) => RowResult {
            name: row.name,
            status: Status::Fail,
            took,
            note: format!("could not start {}: {e}", ctx.cargo),
            tail: Vec::new(),
            log: None,
        },
        Ok(outcome) => {
            let (status, note) = judge(row, &outcome);
            RowResult { name: row.name, status, took, note, tail: outcome.tail, log }
        }
    }
}

/// Decide a row's status from what its command did.
pub fn judge(row: &Row, outcome: &Outcome) -> (Status, String) {
    let Some(status) = outcome.status else {
        return (
            Status::Fail,
            format!("killed after {} (the row's time limit)", human(row.timeout)),
        );
    };
    if let Some(missing) = &outcome.facts.missing_target {
        return (Status::Fail, format!("{missing} (add the test file or fix the row)"));
    }
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exit code {code}"),
            None => format!("{status}"),
        };
        return (Status::Fail, how);
    }
    if outcome.output_left_open {
        return (
            Status::Fail,
            "passed, but left a process running that still holds its output".to_string(),
        );
    }
    match row.kind {
        Kind::Cargo => (Status::Pass, String::new()),
        Kind::Test if outcome.facts.tests_passed == 0 => (
            Status::Fail,
            format!(
                "ran no tests ({} test runs, 0 passed): a row must test something",
                outcome.facts.test_runs
            ),
        ),
        Kind::Test => (Status::Pass, format!("{} tests passed", outcome.facts.tests_passed)),
    }
}

fn probe(need: &Need, ctx: &Context) -> bool {
    let Some((program, args)) = need.probe.split_first() else {
        return false;
    };
    Command::new(program)
        .args(args)
        .current_dir(&ctx.root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `--list` output: each row, what it needs, and the exact command it runs.
pub fn list(rows: &[&Row], ctx: &Context) -> String {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(3);
    let mut out = String::new();
    let _ = writeln!(out, "{:width$}  {:14}  COMMAND (run in the workspace root)", "ROW", "NEEDS");
    for row in rows {
        let needs: Vec<&str> = row.needs.iter().map(|n| n.what).collect();
        let needs = if needs.is_empty() { "-".to_string() } else { needs.join(",") };
        let line = shell_line(&invocation(row, ctx), ctx);
        let _ = writeln!(out, "{:width$}  {needs:14}  {line}", row.name);
    }
    out
}

/// The final matrix, preceded by the tail of every failed row's output.
pub fn summary(results: &[RowResult], took: Duration, ci: bool) -> String {
    let mut out = String::new();
    for r in results.iter().filter(|r| r.status == Status::Fail && !r.tail.is_empty()) {
        let log = r.log.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let _ = writeln!(out, "\n---- last lines of {} (full log: {log}) ----", r.name);
        for line in &r.tail {
            let _ = writeln!(out, "    {line}");
        }
    }
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0).max(3);
    let _ = writeln!(out, "\n==== test matrix{} ====", if ci { " (CI mode)" } else { "" });
    let _ = writeln!(out, "{:width$}  RESULT  {:>8}  NOTE", "ROW", "TIME");
    for r in results {
        let _ = writeln!(
            out,
            "{:width$}  {:6}  {:>8}  {}",
            r.name,
            r.status.label(),
            human(r.took),
            r.note
        );
    }
    let _ = writeln!(
        out,
        "{} passed, {} failed, {} skipped in {}",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip),
        human(took)
    );
    out
}

/// `4.2s`, `3m07s`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Target;
    use crate::run::Facts;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn ctx() -> Context {
        Context {
            root: PathBuf::from("/w"),
            target_dir: PathBuf::from("/w/target"),
            cargo: "cargo".to_string(),
            rustflags: None,
        }
    }

    #[test]
    fn a_loom_row_gets_its_own_target_dir_and_keeps_callers_rustflags() {
        let row = Row::test("t/loom", "gloo-transport").lib().loom();
        let mut c = ctx();
        c.rustflags = Some("-Ctarget-cpu=native".to_string());
        let inv = invocation(&row, &c);
        assert_eq!(
            inv.env,
            vec![
                ("RUSTFLAGS".to_string(), "-Ctarget-cpu=native --cfg loom".to_string()),
                ("CARGO_TARGET_DIR".to_string(), "/w/target/loom".to_string()),
            ]
        );
        assert_eq!(
            shell_line(&inv, &c),
            "RUSTFLAGS='-Ctarget-cpu=native --cfg loom' CARGO_TARGET_DIR=target/loom \
             cargo test -p gloo-transport --no-fail-fast --lib"
        );
    }

    #[test]
    fn a_test_row_spells_features_targets_and_harness_args() {
        let row = Row::test("r/redis", "gloo-rendezvous")
            .no_default_features()
            .features(&["redis", "tcp"])
            .targets(&[Target::Lib, Target::Test("redis")])
            .test_args(&["--include-ignored"]);
        let inv = invocation(&row, &ctx());
        assert_eq!(
            inv.args.join(" "),
            "test -p gloo-rendezvous --no-fail-fast --no-default-features --features redis,tcp \
             --lib --test redis -- --include-ignored"
        );
        assert!(inv.env.is_empty());
    }

    #[test]
    fn a_cargo_row_runs_its_arguments_verbatim() {
        let row = Row::cargo("lint/doc", &["doc", "--workspace", "--no-deps"])
            .env(&[("RUSTDOCFLAGS", "-Dwarnings")]);
        assert_eq!(
            shell_line(&invocation(&row, &ctx()), &ctx()),
            "RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps"
        );
    }

    #[test]
    fn only_selects_by_glob_and_rejects_globs_matching_nothing() {
        let rows = [
            Row::cargo("lint/fmt", &["fmt"]),
            Row::test("transport/unit", "p"),
            Row::test("transport/loom", "p"),
        ];
        let names = |sel: Vec<&Row>| sel.iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(names(select(&rows, &[]).unwrap()).len(), 3);
        assert_eq!(
            names(select(&rows, &["transport/*".to_string()]).unwrap()),
            ["transport/unit", "transport/loom"]
        );
        assert_eq!(
            names(select(&rows, &["*loom".to_string(), "lint/*".to_string()]).unwrap()),
            ["lint/fmt", "transport/loom"]
        );
        let err = select(&rows, &["tcp/*".to_string()]).unwrap_err();
        assert!(err.contains("tcp/*") && err.contains("transport/loom"), "{err}");
    }

    fn outcome(code: Option<i32>, facts: Facts) -> Outcome {
        Outcome {
            status: code.map(|c| ExitStatus::from_raw(c << 8)),
            facts,
            tail: Vec::new(),
            output_left_open: false,
        }
    }

    #[test]
    fn judging_never_lets_an_empty_or_missing_row_pass() {
        let row = Row::test("t", "p");
        let passed = |n| Facts { tests_passed: n, test_runs: 1, missing_target: None };
        assert_eq!(judge(&row, &outcome(Some(0), passed(3))).0, Status::Pass);
        assert_eq!(judge(&row, &outcome(Some(0), passed(0))).0, Status::Fail);
        assert_eq!(judge(&row, &outcome(Some(101), passed(3))).0, Status::Fail);
        assert_eq!(judge(&row, &outcome(None, passed(3))).0, Status::Fail);
        let missing =
            Facts { missing_target: Some("no test target named `x`".into()), ..passed(0) };
        let (status, note) = judge(&row, &outcome(Some(101), missing));
        assert_eq!(status, Status::Fail);
        assert!(note.contains("no test target named `x`"), "{note}");
        // A lint row has no tests to count.
        let lint = Row::cargo("lint/fmt", &["fmt"]);
        assert_eq!(judge(&lint, &outcome(Some(0), Facts::default())).0, Status::Pass);
        assert_eq!(judge(&lint, &outcome(Some(1), Facts::default())).0, Status::Fail);
    }

    #[test]
    fn a_missing_need_skips_and_fails_under_ci() {
        const NOTHING: Need = Need {
            what: "no-such-tool",
            probe: &["/nonexistent/no-such-tool", "--version"],
            install: "apt-get install -y no-such-tool",
        };
        let row = Row::test("t/needs", "p").needs(&[NOTHING]);
        let inv = invocation(&row, &ctx());
        let mut c = ctx();
        c.root = std::env::temp_dir();
        for (ci, want) in [(false, Status::Skip), (true, Status::Fail)] {
            let opts = Options { ci, ..Options::default() };
            let result = run_row(&row, &inv, &opts, &c, &mut HashMap::new());
            assert_eq!(result.status, want);
            assert!(result.note.contains("apt-get install -y no-such-tool"), "{}", result.note);
        }
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(human(Duration::from_millis(4200)), "4.2s");
        assert_eq!(human(Duration::from_secs(187)), "3m07s");
    }
}
