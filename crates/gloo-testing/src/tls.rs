//! Certificates for TLS tests: a job's PKI minted in memory with `gloo_tls::mint`, and the
//! odd certificates the rogue tests need (another CA, another job, another rank, expired,
//! not yet valid).

use std::path::Path;
use std::time::{Duration, SystemTime};

use gloo_tls::mint::{JobCa, Minted, Validity};
use gloo_tls::{Identity, TlsConfig, TlsFiles};
use gloo_transport::Rank;

/// A job's CA and its ranks' certificates, made fresh (ECDSA P-256, valid for a day).
pub struct Pki {
    ca: JobCa,
    ranks: Vec<Minted>,
    store: Minted,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("job", &self.ca.job())
            .field("ranks", &self.ranks.len())
            .finish()
    }
}

/// Valid from an hour ago for a day.
pub fn valid() -> Validity {
    Validity::days(1)
}

/// Expired yesterday.
pub fn expired() -> Validity {
    let now = SystemTime::now();
    Validity {
        not_before: now - Duration::from_secs(3 * 86_400),
        not_after: now - Duration::from_secs(86_400),
    }
}

/// Valid only from tomorrow.
pub fn not_yet_valid() -> Validity {
    let now = SystemTime::now();
    Validity {
        not_before: now + Duration::from_secs(86_400),
        not_after: now + Duration::from_secs(3 * 86_400),
    }
}

impl Pki {
    /// A CA for `job` and certificates for ranks `0..size` and for a store.
    pub fn new(job: &str, size: u32) -> Pki {
        let ca = JobCa::new(job, valid()).expect("minting a test CA");
        let ranks = (0..size).map(|r| ca.rank(Rank(r), valid()).expect("minting")).collect();
        let store = ca.store(valid()).expect("minting");
        Pki { ca, ranks, store }
    }

    /// The job id.
    pub fn job(&self) -> &str {
        self.ca.job()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.ca_pem()
    }

    /// The CA itself, to issue odd certificates.
    pub fn ca(&self) -> &JobCa {
        &self.ca
    }

    /// Rank `r`'s configuration (this CA pinned).
    pub fn rank(&self, r: u32) -> TlsConfig {
        self.config(&self.ranks[r as usize])
    }

    /// The store's configuration.
    pub fn store(&self) -> TlsConfig {
        self.config(&self.store)
    }

    /// A configuration presenting `m`, with this CA pinned.
    pub fn config(&self, m: &Minted) -> TlsConfig {
        TlsConfig::from_pem(self.ca_pem().as_bytes(), m.cert_pem.as_bytes(), m.key_pem.as_bytes())
            .expect("a minted certificate loads")
    }

    /// A configuration presenting a certificate this CA issues for `id` with `validity`.
    pub fn issued(&self, id: &Identity, validity: Validity) -> TlsConfig {
        self.config(&self.ca.issue(id, validity).expect("minting"))
    }

    /// A configuration presenting `foreign`'s certificate for `id` (another CA), pinning both
    /// CAs so that it can check this job's peers: what an outsider with a CA of its own
    /// would use.
    pub fn foreign(&self, foreign: &Pki, id: &Identity) -> TlsConfig {
        let m = foreign.ca.issue(id, valid()).expect("minting");
        let both = format!("{}{}", foreign.ca_pem(), self.ca_pem());
        TlsConfig::from_pem(both.as_bytes(), m.cert_pem.as_bytes(), m.key_pem.as_bytes())
            .expect("a minted certificate loads")
    }

    /// Write rank `r`'s files into `dir` (`ca.pem`, `rank-<r>.pem`, `rank-<r>.key` with mode
    /// `key_mode`) and return where they are.
    pub fn write_rank(&self, dir: &Path, r: u32, key_mode: u32) -> TlsFiles {
        use std::os::unix::fs::PermissionsExt;
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("rank-{r}.pem")),
            key: dir.join(format!("rank-{r}.key")),
        };
        let m = &self.ranks[r as usize];
        std::fs::write(&files.ca, self.ca_pem()).expect("writing a test file");
        std::fs::write(&files.cert, &m.cert_pem).expect("writing a test file");
        std::fs::write(&files.key, &m.key_pem).expect("writing a test file");
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(key_mode))
            .expect("setting a test file's mode");
        files
    }
}

/// A server certificate check that accepts anything (signatures are still checked, so the
/// handshake itself completes properly).
#[derive(Debug)]
struct Reckless(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for Reckless {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A blocking TLS 1.3 client that presents `m` and checks nothing about the server: what an
/// attacker holding that certificate would run, so that a test sees the *server's* verdict
/// on it (a careful client of another job or CA would refuse the server first).
pub fn reckless_client(
    m: &Minted,
    sock: std::net::TcpStream,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(m.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("a minted certificate parses");
    let key = PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes()).expect("a minted key parses");
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(Reckless(algs)))
        .with_client_auth_cert(chain, key)
        .expect("a minted key matches its certificate");
    // A rogue may forge records with its own session's keys.
    cfg.enable_secret_extraction = true;
    let name = ServerName::try_from("gloo.invalid").expect("a valid name");
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).expect("a client connection");
    rustls::StreamOwned::new(conn, sock)
}

/// A socket that keeps a copy of everything written to it (to replay a captured handshake).
#[derive(Debug)]
pub struct Recorder {
    sock: std::net::TcpStream,
    /// Every byte written so far.
    pub written: Vec<u8>,
}

impl std::io::Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.sock.read(buf)
    }
}

impl std::io::Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.sock.write(buf)?;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

use std::io::{Read as _, Write as _};

/// A rank played by hand over TLS: a real TLS 1.3 client session (any certificate, checking
/// nothing about the server) over a blocking socket, through which the test runs the
/// transport's handshake and sends what it likes; then, with the session's keys extracted,
/// a [`Forger`] of raw records.
#[derive(Debug)]
pub struct TlsRogue {
    conn: rustls::ClientConnection,
    sock: Recorder,
}

impl TlsRogue {
    /// Connect to `addr` (retrying refusals until `deadline`) presenting `m`; the TLS
    /// handshake runs with the first write.
    pub fn connect(
        addr: std::net::SocketAddr,
        m: &Minted,
        deadline: std::time::Instant,
    ) -> std::io::Result<TlsRogue> {
        let stream = crate::rogue::Rogue::connect(addr, deadline)?;
        let sock = stream.stream().try_clone()?;
        drop(stream);
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut client = reckless_client(m, sock);
        client.conn.set_buffer_limit(None);
        let rustls::StreamOwned { conn, sock } = client;
        Ok(TlsRogue { conn, sock: Recorder { sock, written: Vec::new() } })
    }

    /// The raw socket (a clone of it: to watch for the victim closing, or to write bytes
    /// that bypass TLS).
    pub fn raw(&self) -> std::net::TcpStream {
        self.sock.sock.try_clone().expect("cloning a socket")
    }

    /// Every byte this rogue has written to the socket so far (its side of the handshakes).
    pub fn written(&self) -> &[u8] {
        &self.sock.written
    }

    fn stream(&mut self) -> rustls::Stream<'_, rustls::ClientConnection, Recorder> {
        rustls::Stream::new(&mut self.conn, &mut self.sock)
    }

    /// Send `bytes` inside the session.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut s = self.stream();
        s.write_all(bytes)?;
        s.flush()
    }

    /// Run the connector's side of the transport's handshake inside the session, as
    /// `cfg.me` towards `to` (the transport's own handshake code).
    pub fn handshake(
        &mut self,
        cfg: gloo_transport::proto::HandshakeConfig,
        to: Rank,
    ) -> std::io::Result<()> {
        let bad = |e: gloo_transport::Error| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
        };
        let nonce = gloo_transport::proto::fresh_nonce().map_err(bad)?;
        let mut hs = gloo_transport::proto::Handshake::connector(cfg, to, nonce);
        let mut buf = [0u8; 4096];
        loop {
            let out = hs.output().to_vec();
            if !out.is_empty() {
                self.send(&out)?;
                hs.consumed_output(out.len());
            }
            if hs.done().is_some() {
                return Ok(());
            }
            let n = self.stream().read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the victim closed the session during the handshake",
                ));
            }
            let used = hs.feed(&buf[..n]).map_err(bad)?;
            assert_eq!(used, n, "the victim sent bytes after its handshake before any request");
        }
    }

    /// Send the session's `ClientHello` and nothing more (a client that then stalls).
    pub fn client_hello_only(&mut self) -> std::io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    /// Send a TLS `close_notify` inside the session.
    pub fn close_notify(&mut self) -> std::io::Result<()> {
        self.conn.send_close_notify();
        self.stream().flush()
    }

    /// Ask for new keys (a TLS 1.3 `KeyUpdate`, which a peer may send at any time).
    pub fn key_update(&mut self) -> std::io::Result<()> {
        self.conn.refresh_traffic_keys().map_err(std::io::Error::other)?;
        self.stream().flush()
    }

    /// Take the session's sending keys, to write raw records from now on.
    pub fn into_forger(mut self) -> Forger {
        self.stream().flush().expect("flushing the rogue's session");
        let secrets = self.conn.dangerous_extract_secrets().expect("secret extraction is on");
        let (seq, tx) = secrets.tx;
        let (alg, key, iv) = match tx {
            rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                (&ring::aead::AES_128_GCM, key, iv)
            }
            rustls::ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                (&ring::aead::AES_256_GCM, key, iv)
            }
            rustls::ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&ring::aead::CHACHA20_POLY1305, key, iv)
            }
            _ => panic!("an AEAD this test does not know"),
        };
        let key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(alg, key.as_ref()).expect("a key of the suite's length"),
        );
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(iv.as_ref());
        Forger { sock: self.sock.sock, key, iv: nonce, seq }
    }
}

/// Writes TLS 1.3 records by hand, with a session's real sending keys: records the victim
/// will decrypt and then judge by their contents.
pub struct Forger {
    sock: std::net::TcpStream,
    key: ring::aead::LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl std::fmt::Debug for Forger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forger").field("seq", &self.seq).finish_non_exhaustive()
    }
}

/// TLS record content types.
pub const ALERT: u8 = 21;
/// The handshake content type.
pub const HANDSHAKE: u8 = 22;
/// The application data content type.
pub const APPLICATION_DATA: u8 = 23;

impl Forger {
    /// The bytes of one protected record carrying `payload` of inner type `content_type`.
    pub fn record(&mut self, content_type: u8, payload: &[u8]) -> Vec<u8> {
        let mut inner = payload.to_vec();
        inner.push(content_type);
        let len = u16::try_from(inner.len() + 16).expect("a record fits in 64 KiB");
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        self.key
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(header),
                &mut inner,
            )
            .expect("sealing a record");
        let mut out = header.to_vec();
        out.extend_from_slice(&inner);
        out
    }

    /// Write raw bytes to the socket.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Write one protected record.
    pub fn send_record(&mut self, content_type: u8, payload: &[u8]) -> std::io::Result<()> {
        let r = self.record(content_type, payload);
        self.send_raw(&r)
    }

    /// The raw socket (to close it, or watch it close).
    pub fn socket(&self) -> &std::net::TcpStream {
        &self.sock
    }
}
