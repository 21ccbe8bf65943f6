//! Developer commands for the Rust Gloo, run as `cargo xtask <command>` from anywhere in the
//! workspace (the alias lives in `.cargo/config.toml`).
//!
//! What it does:
//! - `test-matrix` runs every row of the test table ([`rows::ROWS`]: package × transport ×
//!   feature set, plus the lints) one after the other, streams their output, and prints a
//!   pass/fail/skip matrix with durations. `--list`, `--only <glob>`, `--ci`.
//! - `bench <name>` runs one benchmark of [`rows::BENCHES`] in release.
//! - `fuzz [target] [--time S]` builds the cargo-fuzz targets of `fuzz/` and runs them
//!   ([`fuzz`]).
//! - `mutants [module]` runs cargo-mutants over the modules whose tests must prove what they
//!   claim, each with its own files and test targets ([`mutants`]).
//! - `peers <limits|mpi|gloo|all>` builds the reference programs of `peers/` against Debian's
//!   Open MPI and C++ Gloo and runs them on 127.0.0.1, for the README's comparison ([`peers`]).
//!
//! What it does not do: install anything (`.ci/run` installs what CI needs; the one exception is
//! `peers --install`, which runs apt-get when asked), run rows in
//! parallel (the machine has two cores and cargo uses both), or depend on any crate beyond the
//! standard library (it must build in seconds on a fresh machine, before anything else).
#![forbid(unsafe_code)]

pub mod bench;
pub mod fuzz;
pub mod glob;
pub mod matrix;
pub mod mutants;
pub mod peers;
pub mod row;
pub mod rows;
pub mod run;

#[cfg(test)]
mod invariants;

/// The README's code example, compiled and run as a doc test so that it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExample;
