//! `cargo xtask fuzz`: build the cargo-fuzz targets in `fuzz/` with libFuzzer's coverage
//! instrumentation and AddressSanitizer, replay every saved crash, and fuzz each target for a
//! while.
//!
//! It does what `cargo fuzz run` does without needing `cargo-fuzz` installed: the same
//! `RUSTFLAGS`, with `RUSTC_BOOTSTRAP=1` for the one unstable flag (`-Zsanitizer=address`)
//! on the stable toolchain. The targets' own crate (`fuzz/Cargo.toml`) lists them.
//!
//! Directories: `fuzz/corpus/<target>/` holds the seeds kept in the repo (read only here;
//! new inputs go to a scratch corpus under the target directory, so a run never dirties the
//! repo), `fuzz/regressions/<target>/` every input that once crashed a target (each replayed
//! before fuzzing, and the run fails if any still does), and a crash found now is written to
//! `<target dir>/fuzz/artifacts/<target>/` and named in the failure, to be copied into
//! `fuzz/regressions/<target>/` with the fix.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::matrix::Context;

/// What `cargo xtask fuzz` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// The targets to run (every target when the command named none, or `all`).
    pub targets: Vec<String>,
    /// Seconds of fuzzing per target.
    pub seconds: u64,
}

/// Seconds per target when `--time` is not given.
pub const DEFAULT_SECONDS: u64 = 60;

/// Parse `[target|all] [--time S]`; `known` is every target's name.
pub fn parse(args: &[String], known: &[String]) -> Result<Request, String> {
    let mut targets = Vec::new();
    let mut seconds = DEFAULT_SECONDS;
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--time" => {
                let v = args.next().ok_or("--time needs a number of seconds")?;
                seconds = v.parse().map_err(|_| format!("--time: {v:?} is not a number"))?;
            }
            "all" => targets.extend(known.iter().cloned()),
            name if known.iter().any(|k| k == name) => targets.push(name.to_string()),
            other => {
                return Err(format!(
                    "unknown target or argument {other:?}; the targets are: {}",
                    known.join(", ")
                ));
            }
        }
    }
    if targets.is_empty() {
        targets = known.to_vec();
    }
    Ok(Request { targets, seconds })
}

/// The targets `fuzz/Cargo.toml` declares (`[[bin]] name = "..."`), in file order.
pub fn targets(root: &Path) -> Result<Vec<String>, String> {
    let manifest = root.join("fuzz/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(rest) = line.strip_prefix("name = \"") {
            out.push(rest.trim_end_matches('"').to_string());
        }
    }
    Ok(out)
}

/// The flags `cargo fuzz` builds with (libFuzzer's coverage counters and comparison tracing,
/// AddressSanitizer, debug assertions), after the caller's own.
fn rustflags(ctx: &Context) -> String {
    let mut flags = ctx.rustflags.clone().unwrap_or_default();
    for f in [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Zsanitizer=address",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ] {
        if !flags.is_empty() {
            flags.push(' ');
        }
        flags.push_str(f);
    }
    flags
}

/// The host's target triple (the sanitizer needs an explicit `--target`, so that build
/// scripts and proc macros are built without it).
fn host(ctx: &Context) -> Result<String, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = Command::new(rustc).arg("-vV").current_dir(&ctx.root).output();
    let out = out.map_err(|e| format!("running rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| "rustc -vV printed no host line".to_string())
}

/// Build, replay and fuzz; returns the process exit code (0 when every target is clean).
pub fn run(req: &Request, ctx: &Context) -> i32 {
    let host = match host(ctx) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let target_dir = ctx.target_dir.join("fuzz");
    eprintln!("==> building the fuzz targets ({}) with libFuzzer and AddressSanitizer", host);
    let built = Command::new(&ctx.cargo)
        .args(["build", "--release", "--bins", "--manifest-path", "fuzz/Cargo.toml", "--target"])
        .arg(&host)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", rustflags(ctx))
        .current_dir(&ctx.root)
        .status();
    match built {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("error: building the fuzz targets failed ({s})");
            return s.code().unwrap_or(1);
        }
        Err(e) => {
            eprintln!("error: could not start {}: {e}", ctx.cargo);
            return 1;
        }
    }
    let bin_dir = target_dir.join(&host).join("release");
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for t in &req.targets {
        match run_target(ctx, &bin_dir, &target_dir, t, req.seconds) {
            Ok(execs) => summary.push(format!("{t:<16} ok      {execs:>12} executions")),
            Err(e) => {
                summary.push(format!("{t:<16} FAILED  {e}"));
                failed.push(t.clone());
            }
        }
    }
    eprintln!("\n==== fuzz ({} s per target) ====", req.seconds);
    for line in &summary {
        eprintln!("{line}");
    }
    if failed.is_empty() { 0 } else { 1 }
}

/// Replay `fuzz/regressions/<t>/`, then fuzz `t` for `seconds`; the number of executions.
fn run_target(
    ctx: &Context,
    bin_dir: &Path,
    target_dir: &Path,
    t: &str,
    seconds: u64,
) -> Result<u64, String> {
    let bin = bin_dir.join(t);
    let regressions = ctx.root.join("fuzz/regressions").join(t);
    let saved: Vec<PathBuf> = match std::fs::read_dir(&regressions) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    if !saved.is_empty() {
        eprintln!("==> {t}: replaying {} saved crash inputs", saved.len());
        let status = Command::new(&bin).args(&saved).status();
        if !status.is_ok_and(|s| s.success()) {
            return Err(format!("a saved crash input in {} fails again", regressions.display()));
        }
    }
    let scratch = target_dir.join("corpus").join(t);
    let artifacts = target_dir.join("artifacts").join(t);
    for d in [&scratch, &artifacts] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let seeds = ctx.root.join("fuzz/corpus").join(t);
    eprintln!("==> {t}: fuzzing for {seconds} s");
    let out = Command::new(&bin)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&scratch)
        .arg(&seeds)
        .output()
        .map_err(|e| format!("could not start {}: {e}", bin.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let execs = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
        return Err(format!(
            "crashed after {execs} executions; the input is in {} (copy it into {} with the fix)",
            artifacts.display(),
            regressions.display()
        ));
    }
    Ok(execs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parse_defaults_to_every_target_for_a_minute() {
        let known = s(&["frame", "handshake"]);
        let r = parse(&[], &known).unwrap();
        assert_eq!(r, Request { targets: known.clone(), seconds: DEFAULT_SECONDS });
        let r = parse(&s(&["handshake", "--time", "5"]), &known).unwrap();
        assert_eq!(r, Request { targets: s(&["handshake"]), seconds: 5 });
        assert!(parse(&s(&["nope"]), &known).unwrap_err().contains("frame, handshake"));
        assert!(parse(&s(&["--time", "x"]), &known).is_err());
    }

    #[test]
    fn the_targets_are_read_from_the_fuzz_manifest() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let t = targets(&root).unwrap();
        assert!(t.contains(&"frame".to_string()) && t.contains(&"handshake".to_string()), "{t:?}");
        for name in &t {
            assert!(root.join("fuzz/fuzz_targets").join(format!("{name}.rs")).is_file(), "{name}");
            assert!(root.join("fuzz/corpus").join(name).is_dir(), "no seed corpus for {name}");
        }
    }
}
