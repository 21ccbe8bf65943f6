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
//! Row::test("shm/ring", "gloo-shm").targets(&[Test("ring")]),                  // tests/ring.rs
//! Row::test("shm/loom", "gloo-shm").targets(&[Test("loom_ring")]).loom(),      // --cfg loom, target/loom
//! Row::test("tls/unit", "gloo-tls").lib(),                                     // --lib (also Doc, Bins)
//! Row::test("x/redis", "gloo-rendezvous").features(&["redis"]).needs(&[REDIS]), // skipped without it
//! Row::test("x/huge", "gloo-shm").targets(&[Test("huge")]).release().test_args(&["--include-ignored"]),
//! ```
//!
//! Other builders: `.no_default_features()`, `.env(&[("K", "v")])`, `.rustflags("...")`,
//! `.target_subdir("x")`, `.timeout_secs(n)` (default 15 min, build included). A test target
//! that does not exist fails the row (cargo's "no test target named" error), and so does a row
//! that ran no test at all: add the row in the same commit as its tests. The self-test
//! `every_test_target_in_the_workspace_has_a_row` (row `xtask/self`) fails when a `tests/*.rs`
//! file, a library's unit tests or its doc examples are in no row. A missing need skips the row loudly with the install
//! command, and fails it under `--ci`; `.ci/run` installs what CI needs.
//!
//! # Adding a benchmark
//!
//! Add one line to [`BENCHES`]; `cargo xtask bench <name> [-- args]` runs it in release:
//!
//! ```text
//! Bench { name: "kernels", about: "reduce kernels beside memcpy", package: "gloo-algorithms",
//!         features: &[], target: Example("kernels"), args: &[] },
//! ```

use crate::row::BenchTarget::{Bin, Example};
use crate::row::Target::{Doc, Lib, Test};
use crate::row::{Bench, Need, Row};

/// A Redis server on PATH (the rendezvous crate's tests start their own on a free port).
pub const REDIS: Need = Need {
    what: "redis-server",
    probe: &["redis-server", "--version"],
    install: "apt-get update && apt-get install -y redis-server",
};

/// `ip` from iproute2, for tests that create network namespaces (they also need root, which
/// they check themselves, failing with a message that says so).
pub const IPROUTE: Need = Need {
    what: "ip (iproute2)",
    probe: &["ip", "-V"],
    install: "apt-get update && apt-get install -y iproute2",
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

/// A real PyTorch (torchrun, `torch.distributed.TCPStore`) in the virtual environment
/// `.ci/torch-venv` installs (or `GLOO_TORCH_VENV`).
pub const TORCH: Need = Need {
    what: "PyTorch 2.5.1 (a virtual environment from .ci/torch-venv)",
    probe: &[
        "sh",
        "-c",
        "\"${GLOO_TORCH_VENV:-$HOME/.cache/gloo-rust-ci/torch-2.5.1}/bin/python\" -W ignore -c 'import torch.distributed'",
    ],
    install: "bash .ci/torch-venv",
};

/// Open MPI's `mpirun`.
pub const MPIRUN: Need = Need {
    what: "mpirun (Open MPI)",
    probe: &["mpirun", "--version"],
    install: "apt-get update && apt-get install -y openmpi-bin",
};

/// g++ (and gcc, which it depends on), for the peer programs of `peers/`.
pub const GXX: Need = Need {
    what: "g++",
    probe: &["g++", "--version"],
    install: "apt-get update && apt-get install -y g++",
};

/// Open MPI's compiler wrapper and headers, for `peers/mpi_coll_bench.c`.
pub const MPICC: Need = Need {
    what: "mpicc (Open MPI's headers and compiler wrapper)",
    probe: &["mpicc", "--showme:version"],
    install: "apt-get update && apt-get install -y libopenmpi-dev",
};

/// C++ Gloo's headers and library, from Debian's package, for `peers/gloo_bench.cc`.
pub const LIBGLOO: Need = Need {
    what: "C++ Gloo (libgloo-dev)",
    probe: &["test", "-e", "/usr/include/gloo/allreduce.h"],
    install: "apt-get update && apt-get install -y libgloo-dev",
};

/// Network namespaces: root and iproute2's `ip` and `tc` (the multi-host fault tests make two
/// namespaces joined by a veth pair).
pub const NETNS: Need = Need {
    what: "root and iproute2 (ip netns, tc)",
    probe: &[
        "sh",
        "-c",
        "tc -V >/dev/null && ip netns add gloo-probe-$$ && ip netns del gloo-probe-$$",
    ],
    install: "apt-get update && apt-get install -y iproute2 (and run as root)",
};

/// QEMU's user-mode emulator, to run tests on CPU models without this machine's instruction
/// sets (the dispatchers' other paths).
pub const QEMU: Need = Need {
    what: "qemu-x86_64 (QEMU user mode)",
    probe: &["qemu-x86_64", "--version"],
    install: "apt-get update && apt-get install -y qemu-user",
};

/// The test runner for an emulated CPU model (cargo runs each test binary through it).
const RUNNER: &str = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER";

/// Every test-matrix row, in the order they run: quick lints first, so a formatting slip
/// fails in seconds, then the tests crate by crate.
#[rustfmt::skip]
pub const ROWS: &[Row] = &[
    // Lints over the whole workspace; clippy with every feature on, so that feature-gated code
    // (the Redis store, the gloo-store binary) is linted too.
    Row::cargo("lint/fmt", &["fmt", "--all", "--", "--check"]).needs(&[RUSTFMT]),
    Row::cargo("lint/clippy", &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]).needs(&[CLIPPY]),
    Row::cargo("lint/doc", &["doc", "--workspace", "--no-deps"]).env(&[("RUSTDOCFLAGS", "-Dwarnings")]),
    // xtask checks its own tables (unique names, every test target has a row, ...) and runs the
    // README's example as a doc test.
    Row::test("xtask/self", "xtask"),
    // gloo-transport: the engine and the sans-io protocol (unit tests, proptests), the
    // conformance suite over loopback (plain and havoc) and over tcp, processes, faults, rogue
    // peers, loom models, and an example transport built from outside the crate.
    Row::test("transport/unit", "gloo-transport").lib(),
    Row::test("transport/doc", "gloo-transport").targets(&[Doc]),
    Row::test("transport/no-tcp", "gloo-transport").no_default_features().lib(),
    Row::test("transport/proto-props", "gloo-transport").targets(&[Test("proto_props")]),
    Row::test("transport/loopback", "gloo-transport").targets(&[Test("conformance_loopback")]),
    Row::test("transport/tcp", "gloo-transport").targets(&[Test("conformance_tcp")]),
    Row::test("transport/lazy", "gloo-transport").targets(&[Test("lazy_tcp")]),
    Row::test("transport/multiproc", "gloo-transport").targets(&[Test("multiproc_tcp")]),
    Row::test("transport/faults", "gloo-transport").targets(&[Test("faults_tcp")]),
    Row::test("transport/rogue", "gloo-transport").targets(&[Test("rogue_handshake"), Test("rogue_acceptor"), Test("rogue_data"), Test("rogue_leaks"), Test("flood_tcp"), Test("setup_errors_tcp")]),
    Row::test("transport/large", "gloo-transport").targets(&[Test("large_tcp")]),
    Row::test("transport/netfault", "gloo-transport").targets(&[Test("netfault_tcp")]),
    Row::test("transport/netns", "gloo-transport").targets(&[Test("netns_tcp")]).needs(&[NETNS]),
    // The integrity check's CRC32C on each path its dispatcher (crc-fast's) can take on x86-64,
    // against the bitwise definition: tables without PCLMULQDQ, PCLMULQDQ without AVX-512
    // (emulated CPUs), and VPCLMULQDQ with AVX-512 where this CPU has it (transport/unit).
    Row::test("transport/crc-qemu64", "gloo-transport").lib().test_args(&["crc32c"]).env(&[(RUNNER, "qemu-x86_64 -cpu qemu64"), ("GLOO_EXPECT_CRC_PATH", "software-fallback-tables")]).needs(&[QEMU]),
    Row::test("transport/crc-haswell", "gloo-transport").lib().test_args(&["crc32c"]).env(&[(RUNNER, "qemu-x86_64 -cpu Haswell"), ("GLOO_EXPECT_CRC_PATH", "x86-sse-pclmulqdq")]).needs(&[QEMU]),
    Row::test("transport/loom", "gloo-transport").targets(&[Test("loom_loopback")]).loom(),
    // A transport written only against the engine's public traits (Unix-domain socket pairs),
    // run through the public conformance suite (feature `conformance`) by its example's main.
    Row::cargo("transport/example-uds", &["run", "-p", "gloo-transport", "--features", "conformance", "--example", "uds_transport"]),
    // gloo-shm: sys wrappers, segment and handshake codec (unit), the ring against a VecDeque
    // model and hostile indices, channels between threads, rogue peers scribbling on the
    // segment, processes killed, stopped and oversubscribed, and loom models of the ring.
    Row::test("shm/unit", "gloo-shm").lib(),
    Row::test("shm/doc", "gloo-shm").targets(&[Doc]),
    Row::test("shm/ring", "gloo-shm").targets(&[Test("ring")]),
    Row::test("shm/channel", "gloo-shm").targets(&[Test("channel")]),
    Row::test("shm/procs", "gloo-shm").targets(&[Test("procs")]),
    Row::test("shm/rogue", "gloo-shm").features(&["rogue"]).targets(&[Test("rogue")]),
    // The transport conformance suite over shared memory (default and sleeping waits), and
    // over `auto` (ranks in pairs of hosts: shm within, tcp across, one communicator).
    Row::test("shm/conformance", "gloo-shm").targets(&[Test("conformance_shm")]),
    Row::test("shm/auto", "gloo-shm").targets(&[Test("auto")]),
    Row::test("shm/loom", "gloo-shm").targets(&[Test("loom_ring")]).loom(),
    // gloo-testing: its own helpers (multi-process ranks, ...).
    Row::test("testing/self", "gloo-testing"),
    // gloo-rendezvous: every store through the conformance suite, the gloo-store binary, the
    // bootstrap, then the same again with Redis (plain and TLS, one build), then the Redis store
    // built without TLS. `cli` on in the first rows so they share one build.
    Row::test("rendezvous/stores", "gloo-rendezvous").features(&["cli"]).targets(&[Lib, Test("conformance"), Test("file_store"), Test("tcp_store"), Test("gloo_store_bin")]),
    Row::test("rendezvous/bootstrap", "gloo-rendezvous").features(&["cli"]).targets(&[Test("bootstrap")]),
    Row::test("rendezvous/doc", "gloo-rendezvous").features(&["cli"]).targets(&[Doc]),
    // The TCP store over mutual TLS (and `env://` with GLOO_TLS_*), and the plain store's
    // tests again in a build with TLS compiled in.
    Row::test("rendezvous/tls", "gloo-rendezvous").features(&["cli", "tls"]).targets(&[Lib, Test("tcp_store"), Test("tcp_store_tls"), Test("gloo_store_bin")]),
    Row::test("rendezvous/redis", "gloo-rendezvous").features(&["redis", "redis-tls", "cli"]).targets(&[Lib, Test("redis_store"), Test("redis_tls"), Test("conformance"), Test("bootstrap")]).needs(&[REDIS]),
    Row::test("rendezvous/redis-no-tls", "gloo-rendezvous").features(&["redis"]).targets(&[Lib, Test("redis_store")]).needs(&[REDIS]),
    // TorchStore against a real PyTorch TCPStore server: the conformance suite, Python and Rust
    // exchanging keys, a group bootstrapped through it.
    Row::test("rendezvous/torch", "gloo-rendezvous").features(&["cli"]).targets(&[Test("torch_store")]).needs(&[TORCH]),
    // gloo-tls: identities and certificate checks, loading (key permissions), the session
    // over sockets (refusals, clean and cut ends). `cli` on so that the rows share one build.
    Row::test("tls/unit", "gloo-tls").features(&["cli"]).targets(&[Lib, Test("config"), Test("session")]),
    Row::test("tls/doc", "gloo-tls").features(&["cli"]).targets(&[Doc]),
    // The transport conformance suite over tls: full mesh, token on top, sleeping, lazy.
    Row::test("tls/conformance", "gloo-tls").features(&["cli"]).targets(&[Test("conformance_tls")]),
    // Rogues against a TLS job: foreign CA, another rank, job or time, a store certificate,
    // plaintext either way, a stalled ClientHello, a replayed handshake, and an insider's
    // forged records (garbage, truncated, close_notify and renegotiation mid-message).
    Row::test("tls/rogue", "gloo-tls").features(&["cli"]).targets(&[Test("rogue_tls")]),
    // Real jobs over TLS: the `gloo-tls mint` command's files running three processes, and
    // four processes on routable addresses in two network namespaces with no token.
    Row::test("tls/jobs", "gloo-tls").features(&["cli"]).targets(&[Test("mint_cli"), Test("netns_tls")]).needs(&[IPROUTE]),
    // gloo-algorithms: fixed cases, the oracle proptests over loopback with havoc, misuse and
    // mismatches, threads sharing a communicator, real processes over tcp, allocations.
    Row::test("algorithms/unit", "gloo-algorithms").lib(),
    // The reduce kernels again as users run them (release): each float kernel at every
    // instruction-set level this CPU has, against one reference (AVX-512 once differed).
    Row::test("algorithms/kernels-release", "gloo-algorithms").lib().release().test_args(&["element::"]),
    // The same kernel tests on emulated CPUs without AVX-512 (Haswell: AVX2 is the best level
    // detected) and without AVX2 (qemu64: the portable kernels only), so that the dispatch a
    // user's CPU gets is run as detected, not only as forced.
    Row::test("algorithms/kernels-haswell", "gloo-algorithms").lib().test_args(&["element::"]).env(&[(RUNNER, "qemu-x86_64 -cpu Haswell"), ("GLOO_EXPECT_ISA", "Avx2")]).needs(&[QEMU]),
    Row::test("algorithms/kernels-qemu64", "gloo-algorithms").lib().test_args(&["element::"]).env(&[(RUNNER, "qemu-x86_64 -cpu qemu64"), ("GLOO_EXPECT_ISA", "Portable")]).needs(&[QEMU]),
    Row::test("algorithms/doc", "gloo-algorithms").targets(&[Doc]),
    Row::test("algorithms/smoke", "gloo-algorithms").targets(&[Test("smoke")]),
    Row::test("algorithms/oracle", "gloo-algorithms").targets(&[Test("oracle")]),
    Row::test("algorithms/errors", "gloo-algorithms").targets(&[Test("errors")]),
    Row::test("algorithms/concurrency", "gloo-algorithms").targets(&[Test("concurrency")]),
    Row::test("algorithms/nonblocking", "gloo-algorithms").targets(&[Test("nonblocking")]),
    // Subgroups (split, listed ranks, nested): every collective against the oracle at 2-8
    // ranks over loopback and at 4-5 processes over tcp, subgroups at once from threads,
    // and the typed errors for non-members and disagreeing members.
    Row::test("algorithms/subgroup", "gloo-algorithms").targets(&[Test("subgroup")]),
    // The whole oracle suite again with every group an n-rank subgroup of an n+2-rank group
    // (ranks renumbered by a split, two outsiders busy on their own subgroup meanwhile).
    Row::test("algorithms/oracle-subgroups", "gloo-algorithms").targets(&[Test("oracle")]).env(&[("GLOO_TEST_ON_SUBGROUPS", "1")]),
    Row::test("algorithms/tcp", "gloo-algorithms").targets(&[Test("tcp")]),
    Row::test("algorithms/tls", "gloo-algorithms").targets(&[Test("tls")]),
    // A warm call of every collective allocates nothing in proportion to its message
    // (a counting global allocator, so a test binary of its own).
    Row::test("algorithms/alloc", "gloo-algorithms").targets(&[Test("alloc")]),
    // gloo-bench: a short checked run of the tool and its usage errors (never timings).
    Row::test("bench/smoke", "gloo-bench").targets(&[Lib, Test("cli")]),
    // gloo-bench launched unchanged by torchrun, mpirun and a srun-style environment, and the
    // start-up failures every rank must name.
    Row::test("bench/launchers", "gloo-bench").targets(&[Test("launchers")]).needs(&[TORCH, MPIRUN]),
    // rgloo, the facade: its unit tests and doc examples, and the README's program built (all
    // targets, so the example too) and run as three processes started the way the README says.
    Row::test("rgloo/all", "rgloo"),
    // The peer comparison end to end (`cargo xtask peers`): this machine's limits, Open MPI over
    // shared memory and TCP, and C++ Gloo, built from peers/ and run briefly (0.1 s per count);
    // the command fails unless every program printed a result line for every count.
    Row::cargo("peers/smoke", &["xtask", "peers", "all", "--ranks", "2", "--counts", "1,1024", "--seconds", "0.1", "--timeout", "120"]).needs(&[GXX, MPICC, MPIRUN, LIBGLOO]).timeout_secs(600),
    // Every decoder a peer or a store feeds, under libFuzzer and AddressSanitizer: the saved
    // crash inputs replayed, then a short run of each target (`cargo xtask fuzz`).
    Row::cargo("fuzz/short", &["xtask", "fuzz", "all", "--time", "10"]).timeout_secs(1800),
];

/// Every benchmark `cargo xtask bench <name>` can run, in release.
#[rustfmt::skip]
pub const BENCHES: &[Bench] = &[
    Bench { name: "sweep", about: "the main job: gloo-bench with your arguments (default: allreduce f32, 4 B to 64 MiB, 2 ranks)", package: "gloo-bench", features: &[], target: Bin("gloo-bench"), args: &[] },
    Bench { name: "overlap", about: "a compute loop beside a background allreduce (start_allreduce), 1 MiB to 64 MiB, beside the blocking figure", package: "gloo-bench", features: &[], target: Bin("gloo-bench"), args: &["--overlap", "--min-bytes", "1M", "--step-factor", "4"] },
    Bench { name: "transport", about: "ping-pong, one-way and full-duplex streams, receive memory, each beside plain sockets", package: "gloo-bench", features: &[], target: Bin("gloo-bench"), args: &["transport"] },
    Bench { name: "limits", about: "only this machine's limits: plain-socket ping-pong and streams, memcpy, f32 add", package: "gloo-bench", features: &[], target: Bin("gloo-bench"), args: &["limits"] },
    Bench { name: "shm", about: "shared-memory channel between two processes: 1 B ping-pong, 64 MiB one-way (ring, single copy) beside memcpy [--cores A,B]", package: "gloo-shm", features: &[], target: Example("shm_bench"), args: &[] },
    Bench { name: "kernels", about: "reduce kernels (every element type) beside memcpy [MiB, default 64]", package: "gloo-algorithms", features: &[], target: Example("kernels"), args: &[] },
    Bench { name: "rendezvous", about: "rendezvous + full-mesh connect of N local processes through a TcpStore [N...]", package: "gloo-rendezvous", features: &[], target: Example("rendezvous_bench"), args: &[] },
    Bench { name: "store", about: "TcpStore vs redis-server set/get ops/s from 64 clients (needs redis-server, redis-benchmark)", package: "gloo-rendezvous", features: &["redis"], target: Example("store_bench"), args: &[] },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Kind, Target};
    use std::collections::HashSet;
    use std::path::{Path, PathBuf};

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

    /// Every package directory of the workspace with its package name.
    fn packages(root: &Path) -> Vec<(String, PathBuf)> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|d| d.join("Cargo.toml").is_file())
            .collect();
        dirs.push(root.join("xtask"));
        dirs.into_iter()
            .map(|dir| {
                let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
                let name = manifest
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("name = \""))
                    .and_then(|rest| rest.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("no package name in {}", dir.display()))
                    .to_string();
                (name, dir)
            })
            .collect()
    }

    /// Whether any `.rs` file under `dir` (recursively, skipping `skip`) holds a test.
    fn has_tests(dir: &Path, skip: &[&str]) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else { return false };
        entries.map(|e| e.unwrap().path()).any(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if skip.contains(&name.as_str()) {
                false
            } else if path.is_dir() {
                has_tests(&path, skip)
            } else {
                name.ends_with(".rs")
                    && std::fs::read_to_string(&path)
                        .is_ok_and(|src| src.contains("#[test]") || src.contains("proptest!"))
            }
        })
    }

    /// Whether any `.rs` file under `dir` has a code block in its documentation (a doc test).
    fn has_doc_examples(dir: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else { return false };
        entries.map(|e| e.unwrap().path()).any(|path| {
            if path.is_dir() {
                has_doc_examples(&path)
            } else {
                path.extension().is_some_and(|e| e == "rs")
                    && std::fs::read_to_string(&path).is_ok_and(|src| opens_rust_fence(&src))
            }
        })
    }

    /// Whether `src` has a doc-comment code fence that rustdoc tests: an opening fence with no
    /// language or a `rust` one (closing fences are told apart by counting).
    fn opens_rust_fence(src: &str) -> bool {
        let mut inside = false;
        for line in src.lines() {
            let line = line.trim_start();
            let Some(rest) = ["//! ```", "/// ```"].iter().find_map(|d| line.strip_prefix(d))
            else {
                continue;
            };
            if inside {
                inside = false;
                continue;
            }
            let lang = rest.trim();
            if lang.is_empty() || lang.starts_with("rust") {
                return true;
            }
            inside = true;
        }
        false
    }

    /// A test file that no row runs would never run in CI: adding `tests/x.rs` without a row
    /// fails here, naming the file.
    #[test]
    fn every_test_target_in_the_workspace_has_a_row() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut uncovered = Vec::new();
        for (package, dir) in packages(&root) {
            let rows: Vec<&Row> =
                ROWS.iter().filter(|r| r.kind == Kind::Test && r.package == package).collect();
            let covers = |want: &dyn Fn(&Target) -> bool| {
                rows.iter().any(|r| r.targets.is_empty() || r.targets.iter().any(want))
            };
            if let Ok(entries) = std::fs::read_dir(dir.join("tests")) {
                for path in entries.map(|e| e.unwrap().path()) {
                    // Cargo's test targets: `tests/x.rs` and `tests/x/main.rs`.
                    let target = if path.extension().is_some_and(|e| e == "rs") {
                        path.file_stem().unwrap().to_string_lossy().into_owned()
                    } else if path.join("main.rs").is_file() {
                        path.file_name().unwrap().to_string_lossy().into_owned()
                    } else {
                        continue;
                    };
                    if !covers(&|t| matches!(t, Target::Test(name) if *name == target)) {
                        uncovered.push(format!("{package}: tests/{target}"));
                    }
                }
            }
            let lib_has_tests = dir.join("src/lib.rs").is_file()
                && has_tests(&dir.join("src"), &["main.rs", "bin"]);
            if lib_has_tests && !covers(&|t| *t == Target::Lib) {
                uncovered.push(format!("{package}: the library's unit tests (--lib)"));
            }
            let lib_has_examples =
                dir.join("src/lib.rs").is_file() && has_doc_examples(&dir.join("src"));
            if lib_has_examples && !covers(&|t| *t == Target::Doc) {
                uncovered.push(format!("{package}: the library's doc examples (--doc)"));
            }
            let bins_have_tests = std::fs::read_to_string(dir.join("src/main.rs"))
                .is_ok_and(|src| src.contains("#[test]"))
                || has_tests(&dir.join("src/bin"), &[]);
            if bins_have_tests && !covers(&|t| *t == Target::Bins) {
                uncovered.push(format!("{package}: the binaries' unit tests (--bins)"));
            }
        }
        assert!(
            uncovered.is_empty(),
            "tests that no test-matrix row runs (add a row to ROWS in xtask/src/rows.rs): {uncovered:#?}"
        );
    }

    #[test]
    fn only_rust_fences_count_as_doc_examples() {
        assert!(opens_rust_fence("//! ```\n//! let x = 1;\n//! ```\n"));
        assert!(opens_rust_fence("    /// ```rust,no_run\n    /// ```\n"));
        assert!(!opens_rust_fence("//! ```text\n//! cargo run\n//! ```\n"));
        assert!(!opens_rust_fence("// ```\nfn main() {}\n"));
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
