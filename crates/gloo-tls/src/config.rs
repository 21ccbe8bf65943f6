//! [`TlsConfig`]: the job's CA, this process's certificate and key, loaded from PEM.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gloo_transport::Rank;
use rustls::client::{ClientConfig, ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::verify::{Expect, Verifier, identity_of_der};

/// The environment variable naming the PEM file of the job's CA certificate(s).
pub const CA_ENV: &str = "GLOO_TLS_CA";
/// The environment variable naming the PEM file of this process's certificate (the leaf
/// first, then any intermediates).
pub const CERT_ENV: &str = "GLOO_TLS_CERT";
/// The environment variable naming the PEM file of this process's private key.
pub const KEY_ENV: &str = "GLOO_TLS_KEY";

/// Where the three PEM files are: from [`CA_ENV`], [`CERT_ENV`] and [`KEY_ENV`], or given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The job's CA certificate(s): the only roots trusted.
    pub ca: PathBuf,
    /// This process's certificate chain.
    pub cert: PathBuf,
    /// This process's private key (mode `0600` or stricter).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files the variables name, looked up with `var`: `Ok(None)` when none of the three
    /// is set (or all are empty), an error naming the missing ones when only some are.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<TlsFiles>> {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let (ca, cert, key) = (get(CA_ENV), get(CERT_ENV), get(KEY_ENV));
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => {
                Ok(Some(TlsFiles { ca: ca.into(), cert: cert.into(), key: key.into() }))
            }
            (ca, cert, key) => {
                let missing: Vec<&str> = [(CA_ENV, &ca), (CERT_ENV, &cert), (KEY_ENV, &key)]
                    .into_iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| k)
                    .collect();
                Err(Error::config(format!(
                    "TLS needs all of {CA_ENV}, {CERT_ENV} and {KEY_ENV}; {} not set",
                    missing.join(" and ")
                )))
            }
        }
    }

    /// [`from_vars`](Self::from_vars) over this process's environment.
    pub fn from_env() -> Result<Option<TlsFiles>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Read and check the files ([`TlsConfig::from_pem_files`]).
    pub fn load(&self) -> Result<TlsConfig> {
        TlsConfig::from_pem_files(&self.ca, &self.cert, &self.key)
    }
}

/// The job's trust and this process's identity: the CA certificate(s) the job pins (the only
/// roots trusted; never the system's), this process's certificate chain, and its private key.
///
/// The certificate must name exactly one identity ([`Identity`]): `gloo://<job>/rank/<r>`
/// for a rank, `gloo://<job>/store` for a standalone store. Cloning is cheap.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use gloo_tls::TlsConfig;
/// use gloo_transport::Rank;
/// use gloo_transport::tcp::TcpConfig;
///
/// let tls = TlsConfig::from_pem_files("ca.pem", "rank-3.pem", "rank-3.key")?;
/// let cfg = TcpConfig::new("job-42", Rank(3), 8).stream_layer(tls.layer("job-42", Rank(3))?);
/// # let _ = cfg; Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<CryptoProvider>,
    roots: Arc<[TrustAnchor<'static>]>,
    key: Arc<CertifiedKey>,
    me: Identity,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig")
            .field("identity", &self.inner.me.uri())
            .field("roots", &self.inner.roots.len())
            .finish()
    }
}

/// The one crypto provider: ring, with AES-128-GCM preferred (the fastest suite on CPUs
/// with AES instructions; AES-256-GCM and ChaCha20-Poly1305 stay allowed).
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::file(path, "cannot read", e))
}

/// Refuse a key file that anyone but its owner may read, before reading it.
fn check_key_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::file(path, "cannot read", e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyPermissions { path: path.to_path_buf(), mode });
    }
    Ok(())
}

impl TlsConfig {
    /// Load the job's CA certificate(s), this process's certificate chain and its private
    /// key from PEM files. A key file readable by group or others is refused
    /// ([`Error::KeyPermissions`]), as is a key that does not belong to the certificate, a
    /// certificate the CA did not issue, or one that names no `gloo://` identity.
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig> {
        let (ca, cert, key) = (ca.as_ref(), cert.as_ref(), key.as_ref());
        check_key_permissions(key)?;
        let named = |what: &str, path: &Path, e: Error| match e {
            Error::Config { detail } => {
                Error::config(format!("{what} {}: {detail}", path.display()))
            }
            other => other,
        };
        let ca_pem = read(ca)?;
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let roots = roots(&ca_pem).map_err(|e| named("the CA file", ca, e))?;
        let chain = chain(&cert_pem).map_err(|e| named("the certificate file", cert, e))?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            Error::config(format!(
                "the key file {} holds no usable private key: {e}",
                key.display()
            ))
        })?;
        Self::assemble(roots, chain, key_der)
            .map_err(|e| named(&format!("{} with {}:", cert.display(), key.display()), ca, e))
    }

    /// [`from_pem_files`](Self::from_pem_files) from PEM text in memory (no permission check:
    /// there is no file).
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<TlsConfig> {
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| Error::config(format!("no usable private key in the key PEM: {e}")))?;
        Self::assemble(roots(ca)?, chain(cert)?, key)
    }

    /// The files named by `GLOO_TLS_CA`, `GLOO_TLS_CERT` and `GLOO_TLS_KEY`, loaded; `Ok(None)`
    /// when none is set.
    pub fn from_env() -> Result<Option<TlsConfig>> {
        TlsFiles::from_env()?.map(|f| f.load()).transpose()
    }

    fn assemble(
        roots: Vec<(CertificateDer<'static>, TrustAnchor<'static>)>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsConfig> {
        let provider = provider();
        let signer = provider.key_provider.load_private_key(key).map_err(|e| {
            Error::config(format!("the private key is not a supported key type: {e}"))
        })?;
        let key = CertifiedKey::new(chain, signer);
        key.keys_match().map_err(|e| {
            Error::config(format!("the private key does not belong to the certificate ({e})"))
        })?;
        key.end_entity_cert().map_err(|e| Error::config(e.to_string()))?;
        let leaf = key.cert[0].clone();
        let intermediates = key.cert[1..].to_vec();
        let me = identity_of_der(&leaf)
            .map_err(|why| Error::config(format!("the certificate names no identity: {why}")))?;
        let anchors: Arc<[TrustAnchor<'static>]> = roots.into_iter().map(|(_, a)| a).collect();
        // The chain must lead to the pinned CA, for both uses; otherwise every peer would
        // refuse it, one connection at a time. A certificate outside its validity window is
        // only warned about: clocks differ, and the peers judge by their own.
        let inner = Inner { provider, roots: anchors, key: Arc::new(key), me };
        let cfg = TlsConfig { inner: Arc::new(inner) };
        let v = cfg.verifier(Expect::AnyOfJob);
        let now = UnixTime::now();
        for usage in [webpki::KeyUsage::server_auth(), webpki::KeyUsage::client_auth()] {
            match v.check(&leaf, &intermediates, now, usage) {
                Ok(_) => {}
                Err(rustls::Error::InvalidCertificate(
                    c @ (rustls::CertificateError::ExpiredContext { .. }
                    | rustls::CertificateError::NotValidYetContext { .. }
                    | rustls::CertificateError::Expired
                    | rustls::CertificateError::NotValidYet),
                )) => {
                    tracing::warn!(identity = %cfg.inner.me, "this process's certificate is not valid now, so peers will refuse it: {c:?}");
                    break;
                }
                Err(e) => {
                    return Err(Error::config(format!(
                        "the certificate for {} does not verify against the CA: {e}",
                        cfg.inner.me
                    )));
                }
            }
        }
        Ok(cfg)
    }

    /// The identity this process's certificate names.
    pub fn identity(&self) -> &Identity {
        &self.inner.me
    }

    /// The job id this process's certificate names.
    pub fn job(&self) -> &str {
        self.inner.me.job()
    }

    /// Fail unless this process's certificate is the one of rank `rank` of job `job`.
    pub fn check_rank(&self, job: &str, rank: Rank) -> Result<()> {
        let want = Identity::rank(job, rank);
        if self.inner.me != want {
            return Err(Error::config(format!(
                "this process is {want} but its certificate is for {}: give each rank its own \
                 certificate (GLOO_TLS_CERT and GLOO_TLS_KEY per rank)",
                self.inner.me
            )));
        }
        Ok(())
    }

    pub(crate) fn verifier(&self, expect: Expect) -> Verifier {
        Verifier::new(
            self.inner.roots.clone(),
            self.inner.provider.signature_verification_algorithms,
            self.inner.me.job(),
            expect,
        )
    }

    /// A rustls server configuration that presents this certificate and requires a client
    /// certificate meeting `expect`.
    pub(crate) fn server_config(&self, expect: Expect) -> Arc<ServerConfig> {
        let verifier = Arc::new(self.verifier(expect));
        let mut sc = ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Fixed(self.inner.key.clone())));
        // No session tickets and no resumption: every connection presents and checks a
        // certificate, and nothing unasked-for is sent after the handshake.
        sc.send_tls13_tickets = 0;
        sc.session_storage = Arc::new(NoServerSessionStorage {});
        sc.max_early_data_size = 0;
        Arc::new(sc)
    }

    /// A rustls client configuration that presents this certificate and requires a server
    /// certificate meeting `expect`.
    pub(crate) fn client_config(&self, expect: Expect) -> Arc<ClientConfig> {
        let verifier = Arc::new(self.verifier(expect));
        let mut cc = ClientConfig::builder_with_provider(self.inner.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(Fixed(self.inner.key.clone())));
        // No server name on the wire (it would be cleartext) and no resumption.
        cc.enable_sni = false;
        cc.resumption = Resumption::disabled();
        cc.enable_early_data = false;
        Arc::new(cc)
    }
}

/// The name a client gives rustls for the server. It is never sent (SNI is off) and never
/// checked (the verifier checks the `gloo://` identity instead).
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from("gloo.invalid").expect("a valid DNS name")
}

/// Every PEM certificate in `pem`, each as a trust anchor; at least one.
fn roots(pem: &[u8]) -> Result<Vec<(CertificateDer<'static>, TrustAnchor<'static>)>> {
    let mut out = Vec::new();
    for der in chain(pem)? {
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| Error::config(format!("a CA certificate cannot be parsed: {e}")))?
            .to_owned();
        out.push((der, anchor));
    }
    Ok(out)
}

/// Every PEM certificate in `pem`, in order; at least one.
fn chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::config(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::config("holds no PEM certificate"));
    }
    Ok(certs)
}

/// The one certificate this process presents, whatever the peer asks.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_variables_name_the_missing_ones() {
        let vars = |set: &'static [(&'static str, &'static str)]| {
            move |k: &str| set.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(TlsFiles::from_vars(vars(&[])).unwrap(), None);
        assert_eq!(TlsFiles::from_vars(vars(&[(CA_ENV, "")])).unwrap(), None);
        let e = TlsFiles::from_vars(vars(&[(CERT_ENV, "c.pem")])).unwrap_err().to_string();
        assert!(e.contains("GLOO_TLS_CA and GLOO_TLS_KEY not set"), "{e}");
        let all = TlsFiles::from_vars(vars(&[(CA_ENV, "a"), (CERT_ENV, "b"), (KEY_ENV, "c")]));
        assert_eq!(
            all.unwrap(),
            Some(TlsFiles { ca: "a".into(), cert: "b".into(), key: "c".into() })
        );
    }
}
