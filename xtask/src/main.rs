//! `cargo xtask`: the Rust Gloo's developer commands (see the library's documentation).
#![forbid(unsafe_code)]

use std::process::ExitCode;
use xtask::matrix::{self, Context, Options};
use xtask::rows::{BENCHES, ROWS};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test-matrix [--list] [--only <glob>]... [--ci]
      Run every test-matrix row (xtask/src/rows.rs) in turn and print a pass/fail matrix.
      --list         print the rows and the exact command each runs; run nothing
      --only <glob>  run only rows whose name matches (`*` matches anything); repeatable
      --ci           a skipped row (something not installed) is a failure; also on when the
                     environment has CI or GLOO_CI set (to anything but 0 or false)
  bench [--list] <name> [--] [<args>...]
      Run one benchmark in release (xtask/src/rows.rs, BENCHES), passing <args> to it.
  fuzz [<target>... | all] [--time <seconds>]
      Build the fuzz targets (fuzz/) with libFuzzer and AddressSanitizer, replay the saved
      crash inputs (fuzz/regressions/), then fuzz each target (default: all, 60 s each).
  mutants [<module>... | all] [--list] [-- <cargo-mutants args>...]
      Mutation testing with cargo-mutants (not installed by this; `cargo install --locked
      cargo-mutants`) of each module's files against its own tests: proto, select, kernels,
      ring (default: all; hours on two cores). --list prints each module's command.
";

/// The whole usage text: the commands above, `peers`, and `help`.
fn usage() -> String {
    format!("{USAGE}{}  help\n      Print this.\n", xtask::peers::USAGE)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.split_first() {
        Some((cmd, rest)) if cmd == "test-matrix" => test_matrix(rest),
        Some((cmd, rest)) if cmd == "bench" => bench(rest),
        Some((cmd, rest)) if cmd == "fuzz" => fuzz(rest),
        Some((cmd, rest)) if cmd == "mutants" => mutants(rest),
        Some((cmd, rest)) if cmd == "peers" => peers(rest),
        Some((cmd, _)) if cmd == "help" || cmd == "--help" || cmd == "-h" => {
            print!("{}", usage());
            0
        }
        Some((cmd, _)) => usage_error(&format!("unknown command {cmd:?}")),
        None => usage_error("no command given"),
    };
    ExitCode::from(code)
}

fn usage_error(message: &str) -> u8 {
    eprintln!("error: {message}\n\n{}", usage());
    2
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn test_matrix(args: &[String]) -> u8 {
    let mut opts = Options { ci: env_flag("CI") || env_flag("GLOO_CI"), ..Options::default() };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => opts.list = true,
            "--ci" => opts.ci = true,
            "--only" => match args.next() {
                Some(glob) => opts.only.push(glob.clone()),
                None => return usage_error("--only needs a glob, e.g. --only 'transport/*'"),
            },
            "-h" | "--help" => {
                print!("{}", usage());
                return 0;
            }
            other => match other.strip_prefix("--only=") {
                Some(glob) => opts.only.push(glob.to_string()),
                None => return usage_error(&format!("test-matrix: unknown argument {other:?}")),
            },
        }
    }
    clamp(matrix::test_matrix(ROWS, &opts, &Context::from_env()))
}

fn bench(args: &[String]) -> u8 {
    match xtask::bench::parse(args) {
        Ok(xtask::bench::Request::List) => {
            print!("{}", xtask::bench::list(BENCHES));
            0
        }
        Ok(xtask::bench::Request::Run { name, extra }) => {
            clamp(xtask::bench::bench(BENCHES, name, extra, &Context::from_env()))
        }
        Err(e) => {
            if args.is_empty() {
                eprint!("{}", xtask::bench::list(BENCHES));
            }
            usage_error(&format!("bench: {e}"))
        }
    }
}

fn fuzz(args: &[String]) -> u8 {
    let ctx = Context::from_env();
    let known = match xtask::fuzz::targets(&ctx.root) {
        Ok(k) => k,
        Err(e) => return usage_error(&format!("fuzz: {e}")),
    };
    match xtask::fuzz::parse(args, &known) {
        Ok(req) => clamp(xtask::fuzz::run(&req, &ctx)),
        Err(e) => usage_error(&format!("fuzz: {e}")),
    }
}

fn mutants(args: &[String]) -> u8 {
    let ctx = Context::from_env();
    match xtask::mutants::parse(args) {
        Ok(xtask::mutants::Request::List) => {
            print!("{}", xtask::mutants::list(&ctx));
            0
        }
        Ok(xtask::mutants::Request::Run { modules, extra }) => {
            clamp(xtask::mutants::run(&modules, &extra, &ctx))
        }
        Err(e) => usage_error(&format!("mutants: {e}")),
    }
}

fn peers(args: &[String]) -> u8 {
    match xtask::peers::parse(args) {
        Ok(xtask::peers::Parsed::Help) => {
            print!("usage: cargo xtask\n{}", xtask::peers::USAGE);
            0
        }
        Ok(xtask::peers::Parsed::Run(req)) => clamp(xtask::peers::run(&req, &Context::from_env())),
        Err(e) => usage_error(&format!("peers: {e}")),
    }
}

/// Exit codes are 0..=255; anything outside (a signal's negative code) reads as failure.
fn clamp(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}
