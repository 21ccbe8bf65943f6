//! A real `redis-server` for tests: started on a free loopback port, stopped on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the panic says when the binary is missing, so the fix is one copy-paste away.
const MISSING: &str = "redis-server not found: install it with `apt-get install -y redis-server`";

/// A `redis-server` child process listening on `127.0.0.1` on a free port, with persistence
/// off (`--save '' --appendonly no`). Killed (and reaped) on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    password: Option<String>,
}

impl RedisServer {
    /// Start a server (with `--requirepass` when `password` is given) and wait, bounded, until
    /// it answers. Panics if `redis-server` is not on `PATH` or never comes up.
    pub fn start(password: Option<&str>) -> RedisServer {
        let mut last = String::new();
        // The free port is found by binding port 0 and releasing it; another process could
        // take it in between, so a failed start is retried on a new port.
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--dir", &std::env::temp_dir().to_string_lossy()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(pw) = password {
                cmd.args(["--requirepass", pw]);
            }
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
                Err(e) => panic!("starting redis-server: {e}"),
            };
            let mut server = RedisServer { child, port, password: password.map(str::to_owned) };
            match server.wait_ready(Instant::now() + Duration::from_secs(10)) {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not come up on a free port after 5 tries: {last}");
    }

    /// Whether `redis-server` can be started here (it is on `PATH`).
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's URL, with the password if one was set (`redis://:pw@127.0.0.1:port/0`).
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// The OS process id of the server (to kill it mid-test).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill the server now (also done on drop).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Poll, bounded by `deadline`, until the server answers a PING (with a password set, the
    /// "-NOAUTH" answer counts: the server is up).
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server exited with {status}"));
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut b = [0u8; 1];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut b).is_ok_and(|n| n == 1)
                    && (b[0] == b'+' || b[0] == b'-')
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("no answer on port {} within 10 s", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    // Port 0 is an ephemeral port the kernel just proved free; binding loopback cannot fail
    // on a machine that runs network tests at all.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}
