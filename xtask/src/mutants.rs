//! `cargo xtask mutants [module]`: mutation testing, with cargo-mutants, of the modules whose
//! tests must prove what they claim ([`MODULES`]).
//!
//! cargo-mutants changes the code one small way at a time (a comparison flipped, a function
//! made to return a default, an arm deleted), rebuilds, and runs the module's tests: a mutant
//! the tests still pass on ("missed") is behaviour no test checks. Each module here names its
//! package, its files, and the test targets that are meant to check it, so a run rebuilds and
//! tests only those (a mutant costs one incremental build of one crate and a few seconds of
//! tests). Mutants that cannot change behaviour (equivalent ones) are excluded, each with the
//! reason, in `.cargo/mutants.toml`, which cargo-mutants reads by itself.
//!
//! Mutants run one at a time (`--jobs 1`: the machine is shared), in a copy of the workspace
//! that cargo-mutants makes, building into `<target>/mutants/build` so that the dependencies
//! are built once for every run and the main build is left alone. Each module's report
//! (`caught.txt`, `missed.txt`, ...) is in `<target>/mutants/<module>/mutants.out/`.
//!
//! Not part of the test matrix: a full run takes hours on two cores. It installs nothing;
//! without cargo-mutants it says how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::matrix::Context;
use crate::row::Target;

/// One module under mutation testing.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// The name `cargo xtask mutants <name>` takes.
    pub name: &'static str,
    /// What the module is, for `--list`.
    pub about: &'static str,
    /// The package the files belong to (mutated and tested).
    pub package: &'static str,
    /// The files to mutate, relative to the workspace root; a final `*.rs` means every `.rs`
    /// file of that directory (not below it).
    pub files: &'static [&'static str],
    /// Build without the package's default features (less to rebuild per mutant, when the
    /// module and its tests do not need them).
    pub no_default_features: bool,
    /// The test targets that check the module.
    pub targets: &'static [Target],
}

/// The modules `cargo xtask mutants` knows, run in this order by `all`.
#[rustfmt::skip]
pub const MODULES: &[Module] = &[
    Module {
        name: "proto",
        about: "the sans-io wire protocol: frames, handshake, per-peer checks, matching",
        package: "gloo-transport",
        files: &["crates/gloo-transport/src/proto/*.rs"],
        // The protocol and the engine that runs it need no sockets.
        no_default_features: true,
        targets: &[Target::Lib, Target::Test("proto_props")],
    },
    Module {
        name: "select",
        about: "the algorithm table and the GLOO_ALGORITHM_* overrides",
        package: "gloo-algorithms",
        files: &["crates/gloo-algorithms/src/select.rs"],
        no_default_features: false,
        targets: &[Target::Lib],
    },
    Module {
        name: "kernels",
        about: "the reduce kernels: element types, float rules, half conversions, exact averages, ops",
        package: "gloo-algorithms",
        files: &[
            "crates/gloo-algorithms/src/element.rs",
            "crates/gloo-algorithms/src/average.rs",
            "crates/gloo-algorithms/src/reduce_op.rs",
        ],
        no_default_features: false,
        targets: &[Target::Lib],
    },
    Module {
        name: "ring",
        about: "the shared-memory ring: indices checked against an untrusted peer, lends, sleep handshake",
        package: "gloo-shm",
        files: &["crates/gloo-shm/src/ring.rs"],
        no_default_features: false,
        targets: &[Target::Lib, Target::Test("ring")],
    },
];

/// The least time, in seconds, a mutant's tests may take before they count as hanging.
const MIN_TEST_TIMEOUT: u32 = 5;

/// How to install the tool, in the error when it is missing.
pub const INSTALL: &str = "cargo install --locked cargo-mutants";

/// What `cargo xtask mutants` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `--list`: print the modules and the command each runs.
    List,
    /// Run these modules, passing `extra` to cargo-mutants (after the module's own options).
    Run {
        /// The modules, in the order given.
        modules: Vec<&'static str>,
        /// Arguments for cargo-mutants itself (for example `--re`, `--shard 1/4`).
        extra: Vec<String>,
    },
}

/// Parse `[<module>... | all] [--list] [-- <cargo-mutants args>...]`; no module means all.
pub fn parse(args: &[String]) -> Result<Request, String> {
    let (ours, extra) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    let mut modules = Vec::new();
    for a in ours {
        match a.as_str() {
            "--list" => return Ok(Request::List),
            "all" => modules.extend(MODULES.iter().map(|m| m.name)),
            name => match MODULES.iter().find(|m| m.name == name) {
                Some(m) => modules.push(m.name),
                None => {
                    let known: Vec<&str> = MODULES.iter().map(|m| m.name).collect();
                    return Err(format!(
                        "unknown module or argument {name:?}; the modules are: {}",
                        known.join(", ")
                    ));
                }
            },
        }
    }
    if modules.is_empty() {
        modules = MODULES.iter().map(|m| m.name).collect();
    }
    Ok(Request::Run { modules, extra })
}

impl Module {
    /// Where this module's report goes (`mutants.out/` inside it).
    pub fn output_dir(&self, ctx: &Context) -> PathBuf {
        ctx.target_dir.join("mutants").join(self.name)
    }

    /// The arguments after `cargo` that run this module, with `extra` for cargo-mutants.
    pub fn cargo_args(&self, ctx: &Context, extra: &[String]) -> Vec<String> {
        let mut a: Vec<String> =
            ["mutants", "--package", self.package].iter().map(|s| s.to_string()).collect();
        // One mutant at a time (cargo-mutants refuses `--jobs` with `--in-place`, which is
        // sequential anyway).
        if !extra.iter().any(|e| e == "--in-place") {
            a.extend(["--jobs".to_string(), "1".to_string()]);
        }
        // Each module's tests take about a second, so a mutant that makes them hang (a
        // broken frame leaves a peer waiting for its deadline) is called a timeout after 5 s,
        // or 5 times the unmutated run if that is longer, not after cargo-mutants' 20 s floor.
        if !extra.iter().any(|e| e.starts_with("--timeout") || e.starts_with("--minimum-test")) {
            a.extend(["--minimum-test-timeout".to_string(), MIN_TEST_TIMEOUT.to_string()]);
        }
        for f in self.files {
            a.push("--file".into());
            a.push(f.to_string());
        }
        if self.no_default_features {
            a.push("--no-default-features".into());
        }
        a.push("--output".into());
        a.push(self.output_dir(ctx).display().to_string());
        // The module's test targets only, for the build and the test phase alike:
        // `--cargo-arg` reaches every cargo command, where `--cargo-test-arg` (and arguments
        // after `--`) reach only the test phase's `cargo test`, so each mutant's build
        // (`cargo test --no-run`) would compile and link every test target of the package.
        for t in self.targets {
            for arg in t.args() {
                a.push(format!("--cargo-arg={arg}"));
            }
        }
        a.extend(extra.iter().cloned());
        a
    }
}

/// Settings for every mutant's build, unless the caller set them: no debug information (a
/// mutant's build is never debugged; it links faster and takes a fraction of the disk).
const LEAN: [(&str, &str); 2] =
    [("CARGO_PROFILE_DEV_DEBUG", "0"), ("CARGO_PROFILE_TEST_DEBUG", "0")];

/// The build directory every run shares (dependencies built once; see the module docs).
fn build_dir(ctx: &Context) -> PathBuf {
    ctx.target_dir.join("mutants").join("build")
}

/// `--list`: each module and the command it runs.
pub fn list(ctx: &Context) -> String {
    let mut out = String::new();
    for m in MODULES {
        out.push_str(&format!("{:<8} {}\n", m.name, m.about));
        let env: Vec<String> = LEAN.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "         CARGO_TARGET_DIR={} {} cargo {}\n",
            build_dir(ctx).display(),
            env.join(" "),
            m.cargo_args(ctx, &[]).iter().map(|a| quoted(a)).collect::<Vec<_>>().join(" ")
        ));
    }
    out
}

/// `arg` as a shell reads it back (quoted when it holds a glob).
fn quoted(arg: &str) -> String {
    if arg.contains('*') { format!("'{arg}'") } else { arg.to_string() }
}

/// What one module's run found, counted from cargo-mutants' report files.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Score {
    /// Mutants some test failed on.
    pub caught: usize,
    /// Mutants every test passed on.
    pub missed: usize,
    /// Mutants that did not build (the compiler caught them).
    pub unviable: usize,
    /// Mutants whose tests ran past the time limit (a hang: caught, by the time limit).
    pub timeout: usize,
}

impl Score {
    /// Read the counts from a `mutants.out` directory.
    pub fn read(out: &Path) -> std::io::Result<Score> {
        let count = |name: &str| -> std::io::Result<usize> {
            match std::fs::read_to_string(out.join(name)) {
                Ok(text) => Ok(text.lines().filter(|l| !l.trim().is_empty()).count()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(e),
            }
        };
        Ok(Score {
            caught: count("caught.txt")?,
            missed: count("missed.txt")?,
            unviable: count("unviable.txt")?,
            timeout: count("timeout.txt")?,
        })
    }

    /// Caught (timeouts included) as a share of the mutants that built, in percent.
    pub fn percent(&self) -> f64 {
        let viable = self.caught + self.missed + self.timeout;
        if viable == 0 {
            100.0
        } else {
            100.0 * (self.caught + self.timeout) as f64 / viable as f64
        }
    }

    /// One line of the summary table.
    pub fn line(&self, name: &str) -> String {
        format!(
            "{name:<8} {:>6} caught {:>4} missed {:>4} unviable {:>4} timeout  {:>5.1}%",
            self.caught,
            self.missed,
            self.unviable,
            self.timeout,
            self.percent()
        )
    }
}

/// Whether cargo-mutants answers `--version`.
fn installed(ctx: &Context) -> bool {
    Command::new(&ctx.cargo)
        .args(["mutants", "--version"])
        .current_dir(&ctx.root)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run the modules of `req`; returns the exit code (0 when no module missed a mutant).
pub fn run(modules: &[&str], extra: &[String], ctx: &Context) -> i32 {
    if !installed(ctx) {
        eprintln!(
            "error: cargo-mutants is not installed (`cargo mutants --version` failed); install \
             it with `{INSTALL}` (a few minutes), then run this again"
        );
        return 1;
    }
    let mut summary = Vec::new();
    let mut failed = false;
    for name in modules {
        let Some(m) = MODULES.iter().find(|m| m.name == *name) else {
            eprintln!("error: no module named {name:?}");
            return 2;
        };
        let args = m.cargo_args(ctx, extra);
        let build = build_dir(ctx);
        // cargo-mutants makes `--output`'s last component but not its parents.
        if let Err(e) = std::fs::create_dir_all(m.output_dir(ctx)) {
            eprintln!("error: creating {}: {e}", m.output_dir(ctx).display());
            return 1;
        }
        eprintln!("==> {}: CARGO_TARGET_DIR={} cargo {}", m.name, build.display(), args.join(" "));
        let mut cmd = Command::new(&ctx.cargo);
        cmd.args(&args).env("CARGO_TARGET_DIR", &build).current_dir(&ctx.root);
        for (k, v) in LEAN {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        let status = cmd.status();
        let out = m.output_dir(ctx).join("mutants.out");
        match status {
            Ok(s) => {
                // cargo-mutants: 0 all caught, 2 some missed, 3 some timed out; anything else
                // means the run itself failed (the baseline tests, a usage error).
                if !matches!(s.code(), Some(0 | 2 | 3)) {
                    eprintln!("error: cargo-mutants failed for {} ({s})", m.name);
                    failed = true;
                    summary.push(format!("{:<8} FAILED ({s}); see {}", m.name, out.display()));
                    continue;
                }
            }
            Err(e) => {
                eprintln!("error: could not start {}: {e}", ctx.cargo);
                return 1;
            }
        }
        match Score::read(&out) {
            Ok(score) => {
                if score.missed > 0 {
                    failed = true;
                    if let Ok(missed) = std::fs::read_to_string(out.join("missed.txt")) {
                        eprintln!("==> {}: missed\n{missed}", m.name);
                    }
                }
                summary.push(score.line(m.name));
            }
            Err(e) => {
                failed = true;
                summary.push(format!("{:<8} no report in {}: {e}", m.name, out.display()));
            }
        }
    }
    eprintln!("\n==== mutants (reports in {}) ====", ctx.target_dir.join("mutants").display());
    for line in &summary {
        eprintln!("{line}");
    }
    i32::from(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn ctx() -> Context {
        Context {
            root: PathBuf::from("/ws"),
            target_dir: PathBuf::from("/ws/target"),
            cargo: "cargo".into(),
            rustflags: None,
        }
    }

    #[test]
    fn parse_takes_modules_all_list_and_extra_arguments() {
        let all: Vec<&str> = MODULES.iter().map(|m| m.name).collect();
        assert_eq!(parse(&[]).unwrap(), Request::Run { modules: all.clone(), extra: vec![] });
        assert_eq!(parse(&s(&["all"])).unwrap(), Request::Run { modules: all, extra: vec![] });
        assert_eq!(
            parse(&s(&["select", "ring", "--", "--re", "Producer"])).unwrap(),
            Request::Run { modules: vec!["select", "ring"], extra: s(&["--re", "Producer"]) }
        );
        assert_eq!(parse(&s(&["--list"])).unwrap(), Request::List);
        let e = parse(&s(&["nope"])).unwrap_err();
        assert!(e.contains("proto, select, kernels, ring"), "{e}");
    }

    #[test]
    fn a_module_runs_its_files_and_only_its_test_targets() {
        let proto = MODULES.iter().find(|m| m.name == "proto").unwrap();
        let args = proto.cargo_args(&ctx(), &s(&["--shard", "1/2"]));
        let line = args.join(" ");
        assert!(line.starts_with("mutants --package gloo-transport --jobs 1 "), "{line}");
        assert!(line.contains("--file crates/gloo-transport/src/proto/*.rs"), "{line}");
        assert!(line.contains("--no-default-features"), "{line}");
        assert!(
            line.contains(
                "--output /ws/target/mutants/proto --cargo-arg=--lib \
                 --cargo-arg=--test --cargo-arg=proto_props --shard 1/2"
            ),
            "{line}"
        );
        assert!(line.contains("--minimum-test-timeout 5"), "{line}");
        let line = proto.cargo_args(&ctx(), &s(&["--in-place"])).join(" ");
        assert!(!line.contains("--jobs"), "cargo-mutants refuses --jobs with --in-place: {line}");
        let line = proto.cargo_args(&ctx(), &s(&["--timeout", "60"])).join(" ");
        assert!(!line.contains("--minimum-test-timeout"), "the caller's timeout wins: {line}");
    }

    #[test]
    fn scores_are_counted_from_the_report_files() {
        let dir = std::env::temp_dir().join(format!("xtask-mutants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("caught.txt"), "a\nb\nc\n\n").unwrap();
        std::fs::write(dir.join("missed.txt"), "d\n").unwrap();
        std::fs::write(dir.join("timeout.txt"), "e\n").unwrap();
        let score = Score::read(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(score, Score { caught: 3, missed: 1, unviable: 0, timeout: 1 });
        assert_eq!(score.percent(), 80.0);
        assert!(score.line("x").contains("80.0%"), "{}", score.line("x"));
        assert_eq!(Score::default().percent(), 100.0);
    }

    /// The table stays true to the tree: every module's package, files and test targets
    /// exist (a module whose files moved would otherwise mutate nothing and pass).
    #[test]
    fn every_module_names_files_and_tests_that_exist() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for m in MODULES {
            let dir = root.join("crates").join(m.package);
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            assert!(manifest.contains(&format!("name = \"{}\"", m.package)), "{}", m.name);
            for f in m.files {
                assert!(f.starts_with(&format!("crates/{}/src/", m.package)), "{}: {f}", m.name);
                let found = match f.strip_suffix("*.rs") {
                    Some(d) => std::fs::read_dir(root.join(d)).is_ok_and(|mut e| {
                        e.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "rs")))
                    }),
                    None => root.join(f).is_file(),
                };
                assert!(found, "module {}: no file matches {f}", m.name);
            }
            assert!(!m.targets.is_empty(), "{}", m.name);
            for t in m.targets {
                if let Target::Test(name) = t {
                    assert!(dir.join("tests").join(format!("{name}.rs")).is_file(), "{name}");
                }
            }
        }
    }
}
