//! The gloo-bench binary. The tool itself is the library target (`src/lib.rs`), which the
//! tests of this binary also use.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    gloo_bench::run()
}
