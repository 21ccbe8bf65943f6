//! `cargo xtask bench <name>`: run one benchmark of [`crate::rows::BENCHES`] in release.
//!
//! Benchmarks are never part of the test matrix: they measure speed, which tests never assert.

use crate::matrix::Context;
use crate::row::Bench;
use std::fmt::Write as _;
use std::process::Command;

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `--list`: print the benchmarks.
    List,
    /// Run a benchmark.
    Run {
        /// The benchmark's name, as `--list` prints it.
        name: &'a str,
        /// The arguments passed on to it.
        extra: &'a [String],
    },
}

/// Parse `bench`'s arguments: `--list`, or a benchmark's name followed by the benchmark's own
/// arguments. A `--` between the two is allowed (cargo users type it) and dropped, so
/// `bench rendezvous 32` and `bench rendezvous -- 32` are the same, as `--list` suggests.
pub fn parse(args: &[String]) -> Result<Request<'_>, String> {
    match args {
        [] => Err("name a benchmark".to_string()),
        [flag] if flag == "--list" => Ok(Request::List),
        [name, rest @ ..] if !name.starts_with('-') => {
            let extra = match rest.split_first() {
                Some((dashes, after)) if dashes == "--" => after,
                _ => rest,
            };
            Ok(Request::Run { name, extra })
        }
        _ => Err(format!("unexpected arguments {args:?}")),
    }
}

/// The benchmarks, one per line, for `bench --list` and for an unknown name.
pub fn list(benches: &[Bench]) -> String {
    if benches.is_empty() {
        return "no benchmarks are registered yet (add one to BENCHES in xtask/src/rows.rs)\n"
            .to_string();
    }
    let width = benches.iter().map(|b| b.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for bench in benches {
        let _ = writeln!(out, "{:width$}  {}", bench.name, bench.about);
    }
    out
}

/// Run the benchmark called `name` with the user's `extra` arguments; returns the exit code.
pub fn bench(benches: &[Bench], name: &str, extra: &[String], ctx: &Context) -> i32 {
    let Some(bench) = benches.iter().find(|b| b.name == name) else {
        eprintln!("error: no benchmark named {name:?}; the benchmarks are:");
        eprint!("{}", list(benches));
        return 2;
    };
    let args = bench.cargo_args(extra);
    eprintln!("==> cargo {}", args.join(" "));
    match Command::new(&ctx.cargo).args(&args).current_dir(&ctx.root).status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) => {
            eprintln!("error: could not start {}: {e}", ctx.cargo);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::BenchTarget;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bench_arguments_follow_the_name_with_or_without_dashes() {
        let plain = strings(&["rendezvous", "32", "128"]);
        let dashed = strings(&["rendezvous", "--", "32", "128"]);
        let want = strings(&["32", "128"]);
        for args in [&plain, &dashed] {
            assert_eq!(parse(args), Ok(Request::Run { name: "rendezvous", extra: &want }));
        }
        // Flags after the name are the benchmark's, not ours.
        let flags = strings(&["sweep", "--ranks", "4"]);
        let want = strings(&["--ranks", "4"]);
        assert_eq!(parse(&flags), Ok(Request::Run { name: "sweep", extra: &want }));
        // Only the first `--` is ours.
        let twice = strings(&["sweep", "--", "--", "x"]);
        let want = strings(&["--", "x"]);
        assert_eq!(parse(&twice), Ok(Request::Run { name: "sweep", extra: &want }));
        assert_eq!(parse(&strings(&["sweep"])), Ok(Request::Run { name: "sweep", extra: &[] }));
    }

    #[test]
    fn bench_list_and_bad_arguments() {
        assert_eq!(parse(&strings(&["--list"])), Ok(Request::List));
        assert!(parse(&[]).is_err());
        assert!(parse(&strings(&["--ranks", "4"])).is_err());
        assert!(parse(&strings(&["--list", "sweep"])).is_err());
    }

    const SAMPLE: Bench = Bench {
        name: "transport",
        about: "ping-pong and streams beside plain sockets",
        package: "gloo-transport",
        features: &["tcp"],
        target: BenchTarget::Example("transport_bench"),
        args: &["--quick"],
    };

    #[test]
    fn runs_the_target_in_release_with_fixed_then_user_arguments() {
        assert_eq!(
            SAMPLE.cargo_args(&["--size".to_string(), "64M".to_string()]).join(" "),
            "run --release -p gloo-transport --features tcp --example transport_bench -- --quick \
             --size 64M"
        );
        let bin =
            Bench { target: BenchTarget::Bin("gloo-bench"), args: &[], features: &[], ..SAMPLE };
        assert_eq!(
            bin.cargo_args(&[]).join(" "),
            "run --release -p gloo-transport --bin gloo-bench --"
        );
    }

    #[test]
    fn an_unknown_name_is_a_usage_error() {
        let ctx = Context {
            root: std::env::temp_dir(),
            target_dir: std::env::temp_dir(),
            cargo: "/nonexistent/cargo".to_string(),
            rustflags: None,
        };
        assert_eq!(bench(&[SAMPLE], "kernels", &[], &ctx), 2);
        assert!(list(&[SAMPLE]).contains("transport"));
        assert!(list(&[]).contains("no benchmarks"));
    }
}
