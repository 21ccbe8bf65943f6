//! The shape of a test-matrix row and of a benchmark entry, with `const` builders so that each
//! entry of the tables in [`crate::rows`] fits on one line.

use std::time::Duration;

/// A test-matrix row: one cargo invocation, with its environment and what it needs installed.
///
/// Build one with [`Row::test`] or [`Row::cargo`] and the builder methods; every method is
/// `const`, so rows live in a `const` table.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// Unique name, `area/what` (for example `transport/loom`); `--only` globs match it.
    pub name: &'static str,
    /// Whether this row runs `cargo test` (and must run at least one test) or another cargo
    /// command.
    pub kind: Kind,
    /// The package under test (`-p`); unused by [`Kind::Cargo`] rows.
    pub package: &'static str,
    /// Features to enable (`--features a,b`).
    pub features: &'static [&'static str],
    /// Pass `--no-default-features`.
    pub no_default_features: bool,
    /// Which test targets to run; empty means every target cargo tests by default.
    pub targets: &'static [Target],
    /// Arguments for the test harness (after `--`), e.g. `--include-ignored` or a test filter.
    pub test_args: &'static [&'static str],
    /// The whole argument list after `cargo` for [`Kind::Cargo`] rows.
    pub cargo_args: &'static [&'static str],
    /// Extra environment variables for the cargo process and the tests it runs.
    pub env: &'static [(&'static str, &'static str)],
    /// Extra `RUSTFLAGS` (appended to any the caller set).
    pub rustflags: Option<&'static str>,
    /// Build in a subdirectory of the target directory (for example `loom` gives
    /// `target/loom`), so that rows with other `RUSTFLAGS` do not invalidate the main build.
    pub target_subdir: Option<&'static str>,
    /// Build and run in the release profile.
    pub release: bool,
    /// What must be installed for the row to run; a row whose need is missing is skipped
    /// (and counts as failed under `--ci`).
    pub needs: &'static [Need],
    /// The row is killed (with every process it started) after this long.
    pub timeout: Duration,
}

/// What a row runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `cargo test -p <package> ...`; the row fails if it ran no test at all.
    Test,
    /// `cargo <cargo_args>` (the lint rows); passes when cargo exits with status 0.
    Cargo,
}

/// A test target selector for `cargo test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `--lib`: the unit tests in the library.
    Lib,
    /// `--doc`: the documentation examples (cargo refuses to mix it with other targets).
    Doc,
    /// `--bins`: the unit tests in every binary.
    Bins,
    /// `--test <name>`: one integration test file, `tests/<name>.rs`.
    Test(&'static str),
}

impl Target {
    /// The cargo arguments selecting this target.
    pub fn args(self) -> Vec<&'static str> {
        match self {
            Target::Lib => vec!["--lib"],
            Target::Doc => vec!["--doc"],
            Target::Bins => vec!["--bins"],
            Target::Test(name) => vec!["--test", name],
        }
    }
}

/// Something a row needs on this machine, checked by running a probe command.
#[derive(Clone, Copy, Debug)]
pub struct Need {
    /// What is needed, as a person would name it (`redis-server`).
    pub what: &'static str,
    /// A command that succeeds exactly when it is present (`redis-server --version`).
    pub probe: &'static [&'static str],
    /// The command that installs it on this project's CI machine (Debian, root).
    pub install: &'static str,
}

/// The default time a row may take, build included, before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl Row {
    /// A `cargo test -p <package>` row running every test target, in the dev profile.
    pub const fn test(name: &'static str, package: &'static str) -> Row {
        Row {
            name,
            kind: Kind::Test,
            package,
            features: &[],
            no_default_features: false,
            targets: &[],
            test_args: &[],
            cargo_args: &[],
            env: &[],
            rustflags: None,
            target_subdir: None,
            release: false,
            needs: &[],
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A row running `cargo <args>` (lints, docs).
    pub const fn cargo(name: &'static str, args: &'static [&'static str]) -> Row {
        let mut row = Row::test(name, "");
        row.kind = Kind::Cargo;
        row.cargo_args = args;
        row
    }

    /// Enable these features.
    pub const fn features(mut self, features: &'static [&'static str]) -> Row {
        self.features = features;
        self
    }

    /// Turn the package's default features off.
    pub const fn no_default_features(mut self) -> Row {
        self.no_default_features = true;
        self
    }

    /// Run only these targets (`--lib`, `--test name`, ...).
    pub const fn targets(mut self, targets: &'static [Target]) -> Row {
        self.targets = targets;
        self
    }

    /// Run only the library's unit tests (`--lib`).
    pub const fn lib(self) -> Row {
        self.targets(&[Target::Lib])
    }

    /// Pass these arguments to the test harness (after `--`).
    pub const fn test_args(mut self, args: &'static [&'static str]) -> Row {
        self.test_args = args;
        self
    }

    /// Set these environment variables.
    pub const fn env(mut self, env: &'static [(&'static str, &'static str)]) -> Row {
        self.env = env;
        self
    }

    /// Append these `RUSTFLAGS`; use with [`Row::target_subdir`] so the main build survives.
    pub const fn rustflags(mut self, flags: &'static str) -> Row {
        self.rustflags = Some(flags);
        self
    }

    /// Build in `<target dir>/<subdir>`.
    pub const fn target_subdir(mut self, subdir: &'static str) -> Row {
        self.target_subdir = Some(subdir);
        self
    }

    /// Build and run in release.
    pub const fn release(mut self) -> Row {
        self.release = true;
        self
    }

    /// A loom row: `--cfg loom` and its own target directory `target/loom`. It builds in the
    /// test profile (opt-level 1 here), which runs the current models in milliseconds; a row
    /// whose models need more speed adds `.release()`, at the price of a release build of every
    /// dependency under `--cfg loom`.
    pub const fn loom(self) -> Row {
        self.rustflags("--cfg loom").target_subdir("loom")
    }

    /// Require these to be installed.
    pub const fn needs(mut self, needs: &'static [Need]) -> Row {
        self.needs = needs;
        self
    }

    /// Allow the row this long, build included (the default is [`DEFAULT_TIMEOUT`]).
    pub const fn timeout_secs(mut self, secs: u64) -> Row {
        self.timeout = Duration::from_secs(secs);
        self
    }
}

/// A benchmark that `cargo xtask bench <name>` runs in release.
#[derive(Clone, Copy, Debug)]
pub struct Bench {
    /// The name given on the command line (`transport`).
    pub name: &'static str,
    /// One line saying what it measures.
    pub about: &'static str,
    /// The package holding it.
    pub package: &'static str,
    /// Features to enable (`--features a,b`).
    pub features: &'static [&'static str],
    /// The binary or example that runs it.
    pub target: BenchTarget,
    /// Arguments always passed to it (the user's extra arguments follow).
    pub args: &'static [&'static str],
}

/// Where a benchmark's `main` lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTarget {
    /// `--bin <name>`.
    Bin(&'static str),
    /// `--example <name>`.
    Example(&'static str),
}

impl Bench {
    /// The arguments after `cargo` that run this benchmark, the user's `extra` arguments last.
    pub fn cargo_args(&self, extra: &[String]) -> Vec<String> {
        let (flag, target) = match self.target {
            BenchTarget::Bin(name) => ("--bin", name),
            BenchTarget::Example(name) => ("--example", name),
        };
        let mut args: Vec<String> =
            ["run", "--release", "-p", self.package].iter().map(|s| s.to_string()).collect();
        if !self.features.is_empty() {
            args.push("--features".to_string());
            args.push(self.features.join(","));
        }
        args.extend([flag, target, "--"].iter().map(|s| s.to_string()));
        args.extend(self.args.iter().map(|s| s.to_string()));
        args.extend(extra.iter().cloned());
        args
    }
}
