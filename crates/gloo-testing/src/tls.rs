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
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(Reckless(algs)))
        .with_client_auth_cert(chain, key)
        .expect("a minted key matches its certificate");
    let name = ServerName::try_from("gloo.invalid").expect("a valid name");
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).expect("a client connection");
    rustls::StreamOwned::new(conn, sock)
}
