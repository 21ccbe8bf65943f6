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
    tls: bool,
}

impl RedisServer {
    /// Start a server (with `--requirepass` when `password` is given) and wait, bounded, until
    /// it answers. Panics if `redis-server` is not on `PATH` or never comes up.
    pub fn start(password: Option<&str>) -> RedisServer {
        Self::launch(password, None)
    }

    /// Like [`start`](Self::start), serving TLS only (`rediss://`) with the certificate and key
    /// in `tls` (see [`TlsFiles::generate`]).
    pub fn start_tls(password: Option<&str>, tls: &TlsFiles) -> RedisServer {
        Self::launch(password, Some(tls))
    }

    fn launch(password: Option<&str>, tls: Option<&TlsFiles>) -> RedisServer {
        let mut last = String::new();
        // The free port is found by binding port 0 and releasing it; another process could
        // take it in between, so a failed start is retried on a new port.
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            match tls {
                None => cmd.args(["--port", &port.to_string()]),
                Some(t) => cmd
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&t.cert)
                    .arg("--tls-key-file")
                    .arg(&t.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&t.ca)
                    .args(["--tls-auth-clients", "no"]),
            };
            cmd.args(["--bind", "127.0.0.1"])
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
            let mut server = RedisServer {
                child,
                port,
                password: password.map(str::to_owned),
                tls: tls.is_some(),
            };
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
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("{scheme}://127.0.0.1:{}/0", self.port),
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
                if self.tls {
                    // Speaking TLS here is the client's job; an accepted connection means the
                    // server is listening.
                    return Ok(());
                }
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

/// A test certificate authority and a server certificate it signed for `127.0.0.1` and
/// `localhost`, made with the `openssl` command-line tool.
#[derive(Debug)]
pub struct TlsFiles {
    /// The CA certificate (PEM): what a client trusts.
    pub ca: std::path::PathBuf,
    /// The server certificate (PEM).
    pub cert: std::path::PathBuf,
    /// The server's private key (PEM).
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    /// Generate the files in `dir`. Panics (saying how to install it) if `openssl` is missing
    /// or fails.
    pub fn generate(dir: &std::path::Path) -> TlsFiles {
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        let ca_key = dir.join("ca.key");
        let csr = dir.join("server.csr");
        let ext = dir.join("server.ext");
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
            .expect("writing the extension file");
        let run = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("openssl").args(args).output().unwrap_or_else(|e| {
                panic!("openssl not runnable ({e}): install it with `apt-get install -y openssl`")
            });
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        run(&[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("1"),
            os("-subj"),
            os("/CN=gloo-test-ca"),
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            files.ca.as_os_str(),
        ]);
        run(&[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=localhost"),
            os("-keyout"),
            files.key.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ]);
        run(&[
            os("x509"),
            os("-req"),
            os("-days"),
            os("1"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            files.ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            files.cert.as_os_str(),
        ]);
        files
    }
}
