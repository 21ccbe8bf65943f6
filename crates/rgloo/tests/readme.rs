//! The README's "a program of your own" section shows `examples/allreduce.rs` verbatim, and
//! that program runs as a job of three processes started as the README says (RANK,
//! WORLD_SIZE, MASTER_ADDR and MASTER_PORT set by hand), each printing the sum.
//!
//! The example binary is the one `cargo test -p rgloo` builds beside this test (it builds
//! every example of the package before running the tests).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PROGRAM: &str = include_str!("../examples/allreduce.rs");
const README: &str = include_str!("../../../README.md");

/// The program as the README shows it: from `fn main` on (the file's header comment is for
/// readers of the repository).
fn program_body() -> &'static str {
    let at = PROGRAM.find("fn main").expect("the example has a main function");
    PROGRAM[at..].trim_end()
}

#[test]
fn the_readme_shows_the_example_program() {
    assert!(
        README.contains(program_body()),
        "README.md does not show crates/rgloo/examples/allreduce.rs verbatim:\n{}",
        program_body()
    );
}

fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this test binary");
    // target/<profile>/deps/readme-<hash> -> target/<profile>/examples/allreduce
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps");
    let bin = profile_dir.join("examples").join("allreduce");
    assert!(
        bin.exists(),
        "{} was not built: run this test with `cargo test -p rgloo` (which builds the examples), \
         not with `--test readme` alone",
        bin.display()
    );
    bin
}

/// Kills every rank still running when dropped, so a failed assertion leaves nothing behind.
struct Ranks(Vec<Child>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn the_example_program_runs_as_three_processes() {
    let bin = example_binary();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let size = 3;
    let mut ranks = Ranks(Vec::new());
    for rank in 0..size {
        let mut cmd = Command::new(&bin);
        // Only the variables the README sets: none of the launcher variables this test may
        // itself run under.
        cmd.env_clear()
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", size.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(tmp) = std::env::var_os("TMPDIR") {
            cmd.env("TMPDIR", tmp);
        }
        ranks.0.push(cmd.spawn().unwrap_or_else(|e| panic!("starting rank {rank}: {e}")));
    }
    // Bounded: every rank must finish before the deadline, or the test fails (and `Ranks`
    // kills what is left).
    let deadline = gloo_testing::deadline(120);
    let mut done = vec![false; size];
    while !done.iter().all(|&d| d) {
        for (c, d) in ranks.0.iter_mut().zip(done.iter_mut()) {
            *d = *d || c.try_wait().expect("polling a rank").is_some();
        }
        assert!(std::time::Instant::now() < deadline, "ranks still running: {done:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let children = std::mem::take(&mut ranks.0);
    for (rank, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().expect("the output of a finished rank");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rank {rank}: {}\n{stdout}\n{stderr}", out.status);
        // 1 + 2 + 3 on every rank.
        let want = format!("rank {rank} of {size}: [6.0, 6.0, 6.0, 6.0]");
        assert_eq!(stdout.trim(), want, "rank {rank}; stderr:\n{stderr}");
    }
}
