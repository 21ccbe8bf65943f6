//! The tables: every test-matrix row, and every benchmark `cargo xtask bench` knows.
//!
//! # Adding a test-matrix row
//!
//! Add ONE line to [`ROWS`] (rows run in table order; `cargo xtask test-matrix --list` shows
//! the exact command each row runs). A row names itself `area/what` and starts from
//! `Row::test(name, package)` — every test target of the package — narrowed and configured by
//! the builder methods of [`Row`]:
//!
//! ```text
//! Row::test("transport/conformance", "gloo-transport").targets(&[Test("conformance")]),
//! Row::test("transport/loom", "gloo-transport").lib().loom(),        // --cfg loom, target/loom, release
//! Row::test("rendezvous/redis", "gloo-rendezvous").features(&["redis"]).targets(&[Test("redis")]).needs(&[REDIS]),
//! Row::test("transport/large", "gloo-transport").targets(&[Test("large")]).release().test_args(&["--include-ignored"]),
//! ```
//!
//! Other builders: `.no_default_features()`, `.env(&[("K", "v")])`, `.rustflags("...")`,
//! `.target_subdir("x")`, `.timeout_secs(n)`. A test target that does not exist fails the row
//! (cargo's "no test target named" error), and so does a row that ran no test at all: add the
//! row in the same commit as its tests. A missing need skips the row loudly with the install
//! command, and fails it under `--ci`; `.ci/run` installs what CI needs.
//!
//! # Adding a benchmark
//!
//! Add one line to [`BENCHES`]; `cargo xtask bench <name> [-- args]` runs it in release:
//!
//! ```text
//! Bench { name: "kernels", about: "reduce kernels beside memcpy", package: "gloo-algorithms",
//!         target: Example("kernels"), args: &[] },
//! ```

use crate::row::BenchTarget::Bin;
use crate::row::Target::{Lib, Test};
use crate::row::{Bench, Need, Row};

/// A Redis server on PATH (the rendezvous crate's tests start their own on a free port).
pub const REDIS: Need = Need {
    what: "redis-server",
    probe: &["redis-server", "--version"],
    install: "apt-get update && apt-get install -y redis-server",
};

/// rustfmt, for `lint/fmt`.
pub const RUSTFMT: Need = Need {
    what: "rustfmt",
    probe: &["rustfmt", "--version"],
    install: "rustup component add rustfmt",
};

/// clippy, for `lint/clippy`.
pub const CLIPPY: Need = Need {
    what: "clippy",
    probe: &["cargo", "clippy", "--version"],
    install: "rustup component add clippy",
};

/// Every test-matrix row, in the order they run: quick lints first, so a formatting slip
/// fails in seconds, then the tests crate by crate.
#[rustfmt::skip]
pub const ROWS: &[Row] = &[
    // Lints over the whole workspace; clippy with every feature on, so that feature-gated code
    // (the Redis store, the gloo-store binary) is linted too.
    Row::cargo("lint/fmt", &["fmt", "--all", "--", "--check"]).needs(&[RUSTFMT]),
    Row::cargo("lint/clippy", &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]).needs(&[CLIPPY]),
    Row::cargo("lint/doc", &["doc", "--workspace", "--no-deps"]).env(&[("RUSTDOCFLAGS", "-Dwarnings")]),
    // xtask checks its own tables (unique names, existing packages, ...).
    Row::test("xtask/self", "xtask").lib(),
    // Every crate's documentation examples (README's example mirrors gloo-transport's).
    Row::cargo("doc/examples", &["test", "--workspace", "--no-fail-fast", "--doc"]),
    // gloo-transport: the sans-io protocol (unit tests, proptests), the conformance suite over
    // loopback (plain and havoc) and over tcp, rogue peers.
    Row::test("transport/unit", "gloo-transport").lib(),
    Row::test("transport/no-tcp", "gloo-transport").no_default_features().lib(),
    Row::test("transport/proto-props", "gloo-transport").targets(&[Test("proto_props")]),
    Row::test("transport/loopback", "gloo-transport").targets(&[Test("conformance_loopback")]),
    Row::test("transport/tcp", "gloo-transport").targets(&[Test("conformance_tcp")]),
    Row::test("transport/rogue", "gloo-transport").targets(&[Test("rogue_handshake")]),
    // gloo-testing: its own helpers (multi-process ranks, ...).
    Row::test("testing/self", "gloo-testing"),
    // gloo-rendezvous: every store through the conformance suite, the bootstrap, and Redis.
    Row::test("rendezvous/stores", "gloo-rendezvous").targets(&[Lib, Test("conformance"), Test("file_store"), Test("tcp_store")]),
    Row::test("rendezvous/bootstrap", "gloo-rendezvous").targets(&[Test("bootstrap")]),
    Row::test("rendezvous/redis", "gloo-rendezvous").features(&["redis", "cli"]).needs(&[REDIS]),
    // gloo-bench: a short checked run of the tool and its usage errors (never timings).
    Row::test("bench/smoke", "gloo-bench"),
];

/// Every benchmark `cargo xtask bench <name>` can run, in release.
#[rustfmt::skip]
pub const BENCHES: &[Bench] = &[
    Bench { name: "sweep", about: "the main job: gloo-bench with its arguments (default: allreduce f32, 4 B to 64 MiB, 2 ranks)", package: "gloo-bench", target: Bin("gloo-bench"), args: &[] },
    Bench { name: "transport", about: "ping-pong, one-way and full-duplex streams, receive memory, each beside plain sockets", package: "gloo-bench", target: Bin("gloo-bench"), args: &["transport"] },
    Bench { name: "limits", about: "only this machine's limits: plain-socket ping-pong and streams, memcpy, f32 add", package: "gloo-bench", target: Bin("gloo-bench"), args: &["limits"] },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Kind, Target};
    use std::collections::HashSet;
    use std::path::Path;

    #[test]
    fn row_names_are_unique_and_glob_friendly() {
        let mut seen = HashSet::new();
        for row in ROWS {
            assert!(seen.insert(row.name), "two rows are named {}", row.name);
            assert!(
                !row.name.is_empty()
                    && row
                        .name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "/-_".contains(c)),
                "row name {:?} must be lowercase ascii, digits, '/', '-', '_'",
                row.name
            );
        }
    }

    #[test]
    fn test_rows_name_a_workspace_package() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for row in ROWS.iter().filter(|r| r.kind == Kind::Test) {
            let dir = if row.package == "xtask" {
                root.join("xtask")
            } else {
                root.join("crates").join(row.package)
            };
            assert!(
                dir.join("Cargo.toml").is_file(),
                "row {} tests package {}, which has no {}",
                row.name,
                row.package,
                dir.display()
            );
        }
    }

    #[test]
    fn doc_targets_stand_alone() {
        for row in ROWS {
            if row.targets.contains(&Target::Doc) {
                assert_eq!(row.targets.len(), 1, "row {}: cargo cannot mix --doc", row.name);
            }
        }
    }

    #[test]
    fn rows_with_rustflags_build_in_their_own_target_dir() {
        for row in ROWS {
            if row.rustflags.is_some() {
                assert!(
                    row.target_subdir.is_some(),
                    "row {} changes RUSTFLAGS but shares the main target dir",
                    row.name
                );
            }
        }
    }

    #[test]
    fn cargo_rows_have_a_command_and_test_rows_a_package() {
        for row in ROWS {
            match row.kind {
                Kind::Cargo => assert!(!row.cargo_args.is_empty(), "row {}", row.name),
                Kind::Test => assert!(!row.package.is_empty(), "row {}", row.name),
            }
        }
    }

    #[test]
    fn bench_names_are_unique() {
        let mut seen = HashSet::new();
        for bench in BENCHES {
            assert!(seen.insert(bench.name), "two benchmarks are named {}", bench.name);
        }
    }

    #[test]
    fn needs_name_an_install_command() {
        for row in ROWS {
            for need in row.needs {
                assert!(!need.probe.is_empty() && !need.install.is_empty(), "{}", need.what);
            }
        }
        assert!(REDIS.install.contains("apt-get install -y redis-server"));
    }
}
