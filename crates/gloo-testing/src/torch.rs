//! A real PyTorch for tests: the Python interpreter of a virtual environment that holds
//! `torch` (installed by `.ci/torch-venv`), a `torch.distributed.TCPStore` server run by it,
//! and the path of its `torchrun`.
//!
//! The environment is found through `GLOO_TORCH_VENV`, else the default that `.ci/torch-venv`
//! installs to (`$HOME/.cache/gloo-rust-ci/torch-<version>`). A missing one is a panic naming
//! the command that installs it (the test-matrix row that needs it is skipped, or failed in CI,
//! before any test runs).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

/// The PyTorch version `.ci/torch-venv` installs: the oldest release with every request this
/// project's client speaks (`PING` came in 2.5) and, from 2.4, the libuv server by default.
pub const TORCH_VERSION: &str = "2.5.1";

/// The virtual environment holding `torch`: `GLOO_TORCH_VENV`, else the default location.
pub fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("GLOO_TORCH_VENV").filter(|v| !v.is_empty()) {
        return PathBuf::from(v);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/gloo-rust-ci").join(format!("torch-{TORCH_VERSION}"))
}

/// The environment's Python; panics (naming the install command) when it is missing.
pub fn python() -> PathBuf {
    let p = venv().join("bin/python");
    assert!(
        p.is_file(),
        "no PyTorch environment at {}: install it with `bash .ci/torch-venv` (or point \
         GLOO_TORCH_VENV at a virtual environment holding torch)",
        venv().display()
    );
    p
}

/// The environment's `torchrun`.
pub fn torchrun() -> PathBuf {
    python();
    venv().join("bin/torchrun")
}

/// Run a Python snippet with the environment's interpreter and return its output, panicking
/// with its stderr when it fails.
pub fn run_python(code: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running python: {e}"));
    assert!(
        out.status.success(),
        "python failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Which server `torch.distributed.TCPStore` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The libuv server (the default from PyTorch 2.4).
    Libuv,
    /// The older thread-per-socket server (`use_libuv=False`).
    Legacy,
}

/// A `torch.distributed.TCPStore` server in a Python child process on `127.0.0.1` and a free
/// port; it exits when its standard input closes, and is killed on drop.
#[derive(Debug)]
pub struct TorchServer {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
}

const SERVER: &str = r#"
import sys, torch.distributed as d
store = d.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                   use_libuv=(sys.argv[1] == "libuv"))
print(store.port, flush=True)
sys.stdin.read()
"#;

impl TorchServer {
    /// Start a server and wait (bounded by Python's own start-up) until it prints its port.
    pub fn start(backend: Backend) -> TorchServer {
        let which = if backend == Backend::Libuv { "libuv" } else { "legacy" };
        let mut child = Command::new(python())
            .args(["-W", "ignore", "-c", SERVER, which])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the torch store server: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut line = String::new();
        // The child prints its port once the server listens, or exits (closing stdout).
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = match (read, line.trim().parse::<u16>()) {
            (Ok(_), Ok(p)) => p,
            _ => {
                let _ = child.kill();
                let status = child.wait();
                panic!("the torch store server did not start ({status:?}): {line:?}");
            }
        };
        TorchServer { child, stdin, port }
    }

    /// `127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freeze (`SIGSTOP`) or thaw (`SIGCONT`) the server process.
    pub fn signal(&self, sig: &str) {
        let _ =
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
    }
}

impl Drop for TorchServer {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
