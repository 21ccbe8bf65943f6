//! A real `redis-server` for tests: started on a free loopback port, stopped on drop; plain
//! TCP, or TLS with certificates made at test time.
//!
//! The certificates (a throw-away CA, a server certificate for `127.0.0.1` and `localhost`, a
//! client certificate) are generated in Rust with `rcgen`, so the tests need no `openssl`
//! command on the machine that runs them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// What the panic says when the binary is missing, so the fix is one copy-paste away.
const MISSING: &str = "redis-server not found: install it with `apt-get install -y redis-server`";

/// How a TLS server treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Clients connect without a certificate (`--tls-auth-clients no`).
    NotAsked,
    /// Every client must present a certificate signed by the test CA
    /// (`--tls-auth-clients yes`).
    Required,
}

/// A `redis-server` child process listening on `127.0.0.1` on a free port, with persistence
/// off (`--save '' --appendonly no`) and its working directory (and, for TLS, its
/// certificates) in a temporary directory of its own. Killed (and reaped) on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    password: Option<String>,
    tls: Option<TlsFiles>,
    /// Holds the server's working directory and certificates; removed on drop, after the
    /// server is killed (`Drop::drop` runs before the fields are dropped).
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start a server (with `--requirepass` when `password` is given) and wait, bounded, until
    /// it answers. Panics if `redis-server` is not on `PATH` or never comes up.
    pub fn start(password: Option<&str>) -> RedisServer {
        Self::launch(password, None)
    }

    /// Like [`start`](Self::start), but serving TLS only (`rediss://`; the plain port is off)
    /// with a fresh test CA and certificates (see [`TlsFiles`] and [`tls`](Self::tls)).
    pub fn start_tls(password: Option<&str>, clients: ClientCerts) -> RedisServer {
        Self::launch(password, Some(clients))
    }

    fn launch(password: Option<&str>, tls: Option<ClientCerts>) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("gloo-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory for redis-server: {e}"));
        let files = tls.map(|_| TlsFiles::generate(dir.path()));
        let mut last = String::new();
        // The free port is found by binding port 0 and releasing it; another process could
        // take it in between, so a failed start is retried on a new port.
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            match tls.zip(files.as_ref()) {
                Some((clients, t)) => {
                    let auth = if clients == ClientCerts::Required { "yes" } else { "no" };
                    cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                        .arg("--tls-cert-file")
                        .arg(&t.server_cert)
                        .arg("--tls-key-file")
                        .arg(&t.server_key)
                        .arg("--tls-ca-cert-file")
                        .arg(&t.ca)
                        .args(["--tls-auth-clients", auth])
                }
                None => cmd.args(["--port", &port.to_string()]),
            };
            cmd.args(["--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(pw) = password {
                cmd.args(["--requirepass", pw]);
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
                Err(e) => panic!("starting redis-server: {e}"),
            };
            let ready = wait_ready(&mut child, port, files.is_some(), Duration::from_secs(10));
            match ready {
                Ok(()) => {
                    return RedisServer {
                        child,
                        port,
                        password: password.map(str::to_owned),
                        tls: files,
                        _dir: dir,
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = e;
                }
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

    /// The port the server listens on (the TLS port for a TLS server).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's URL, with the password if one was set (`redis://:pw@127.0.0.1:port/0`;
    /// `rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        match &self.password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("{scheme}://127.0.0.1:{}/0", self.port),
        }
    }

    /// The certificates of a TLS server (`None` for a plain one).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
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
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll, bounded by `patience`, until the server on `port` answers a PING (with a password
/// set, the "-NOAUTH" answer counts: the server is up).
fn wait_ready(child: &mut Child, port: u16, tls: bool, patience: Duration) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited with {status}"));
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            if tls {
                // Speaking TLS here is the client's job. The server binds its port only after
                // loading the certificates, so an accepted connection means it is ready.
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
            return Err(format!("no answer on port {port} within {patience:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
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

/// A throw-away certificate authority and the certificates it signed, as PEM files: a server
/// certificate for `127.0.0.1` and `localhost`, and a client certificate. Keys are ECDSA
/// P-256, made fresh each time, so no secret is ever checked in.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate: what a client (and a server asking for client certificates)
    /// trusts.
    pub ca: PathBuf,
    /// The server certificate.
    pub server_cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub server_key: PathBuf,
    /// A client certificate signed by the same CA (for servers with
    /// [`ClientCerts::Required`]).
    pub client_cert: PathBuf,
    /// The client's private key (PKCS#8).
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Generate a CA and the certificates it signs into `dir`. Panics if `dir` cannot be
    /// written (a test set-up failure, not a case under test).
    pub fn generate(dir: &Path) -> TlsFiles {
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        };
        let certs = generate_pems().unwrap_or_else(|e| panic!("generating certificates: {e}"));
        for (path, pem) in [
            (&files.ca, &certs.ca),
            (&files.server_cert, &certs.server_cert),
            (&files.server_key, &certs.server_key),
            (&files.client_cert, &certs.client_cert),
            (&files.client_key, &certs.client_key),
        ] {
            std::fs::write(path, pem).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        files
    }

    /// The CA certificate (PEM bytes).
    pub fn ca_pem(&self) -> Vec<u8> {
        read(&self.ca)
    }

    /// The client certificate (PEM bytes).
    pub fn client_cert_pem(&self) -> Vec<u8> {
        read(&self.client_cert)
    }

    /// The client's private key (PEM bytes).
    pub fn client_key_pem(&self) -> Vec<u8> {
        read(&self.client_key)
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The PEM texts [`TlsFiles::generate`] writes.
struct Pems {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

/// A certificate for `sans`, named `cn`, for one purpose (`usage`), signed by `issuer`, and
/// its fresh key.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    sans: Vec<String>,
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(Certificate, KeyPair), rcgen::Error> {
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert, key))
}

fn generate_pems() -> Result<Pems, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "gloo test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    // `CertificateParams::new` makes "127.0.0.1" an IP-address SAN and "localhost" a DNS one.
    let sans = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let (server_cert, server_key) =
        leaf(&issuer, sans, "localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
    let (client_cert, client_key) =
        leaf(&issuer, Vec::new(), "gloo test client", ExtendedKeyUsagePurpose::ClientAuth)?;

    Ok(Pems {
        ca: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_pem_and_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsFiles::generate(dir.path());
        for (path, label) in [
            (&tls.ca, "CERTIFICATE"),
            (&tls.server_cert, "CERTIFICATE"),
            (&tls.server_key, "PRIVATE KEY"),
            (&tls.client_cert, "CERTIFICATE"),
            (&tls.client_key, "PRIVATE KEY"),
        ] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with(&format!("-----BEGIN {label}-----")), "{path:?}: {text}");
        }
        assert_ne!(tls.ca_pem(), std::fs::read(&tls.server_cert).unwrap());
        assert_ne!(tls.client_key_pem(), std::fs::read(&tls.server_key).unwrap());
        // A second generation makes a different CA: nothing is fixed or shared between runs.
        let other_dir = tempfile::tempdir().unwrap();
        let again = TlsFiles::generate(other_dir.path());
        assert_ne!(again.ca_pem(), tls.ca_pem());
    }
}
