//! Minting a job's PKI (feature `mint`): a CA made for one job, and a certificate and key
//! per rank (and one for a standalone store), each naming its identity.
//!
//! Keys are ECDSA P-256. Every leaf certificate carries exactly one URI name (its
//! [`Identity`]), the key usage `digitalSignature` and both extended key usages (`serverAuth`
//! and `clientAuth`: a rank accepts connections and dials them). The CA is a self-signed
//! certificate constrained to sign leaves only (`pathLen 0`).
//!
//! [`write_job`] is what the `gloo-tls mint` command does: it writes `ca.pem`,
//! `rank-<r>.pem` / `rank-<r>.key` for every rank and `store.pem` / `store.key`, with every key
//! file created `0600` and none overwritten. The CA's own key is not written anywhere: the
//! job's PKI is closed once minted, so a stolen directory cannot mint more identities.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gloo_transport::Rank;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::error::{Error, Result};
use crate::identity::Identity;

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before this time.
    pub not_before: SystemTime,
    /// Not valid after this time.
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (for clocks a little behind) to `days` days from now.
    pub fn days(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

fn mint_err(what: &str, e: rcgen::Error) -> Error {
    Error::config(format!("minting {what}: {e}"))
}

/// Set `params`' validity from `v`.
fn set_validity(params: &mut CertificateParams, v: Validity) -> Result<()> {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_err(|_| Error::config("certificate times before 1970 are not supported"))
    };
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + secs(v.not_before)?;
    params.not_after = epoch + secs(v.not_after)?;
    Ok(())
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct Minted {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8). Keep it `0600`.
    pub key_pem: String,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// A CA made for one job, in memory: it issues the job's certificates.
pub struct JobCa {
    job: String,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for JobCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCa").field("job", &self.job).finish_non_exhaustive()
    }
}

impl JobCa {
    /// A fresh CA for job `job`, valid for `validity`.
    pub fn new(job: &str, validity: Validity) -> Result<JobCa> {
        if job.is_empty() {
            return Err(Error::config("a job id cannot be empty"));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, format!("gloo job CA {job}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, validity)?;
        let key = KeyPair::generate().map_err(|e| mint_err("the CA key", e))?;
        let cert = params.self_signed(&key).map_err(|e| mint_err("the CA certificate", e))?;
        Ok(JobCa { job: job.to_string(), issuer: Issuer::new(params, key), cert_pem: cert.pem() })
    }

    /// The job this CA was made for.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The CA certificate (what every rank pins: `GLOO_TLS_CA`).
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate and key for rank `rank` of this CA's job.
    pub fn rank(&self, rank: Rank, validity: Validity) -> Result<Minted> {
        self.issue(&Identity::rank(&self.job, rank), validity)
    }

    /// A certificate and key for a standalone store of this CA's job.
    pub fn store(&self, validity: Validity) -> Result<Minted> {
        self.issue(&Identity::store(&self.job), validity)
    }

    /// A certificate and key naming `id`, whatever its job (a CA shared by several jobs
    /// issues for each; the job in the name is what peers check).
    pub fn issue(&self, id: &Identity, validity: Validity) -> Result<Minted> {
        self.issue_uris(&[&id.uri()], validity)
    }

    /// A certificate and key whose only names are the URIs `uris`, exactly as given: for
    /// checking what peers make of a certificate that names no identity, two, or a
    /// misspelt one. A job needs [`issue`](Self::issue).
    pub fn issue_uris(&self, uris: &[&str], validity: Validity) -> Result<Minted> {
        let what = format!("the certificate for {uris:?}");
        let mut params = CertificateParams::default();
        if let Some(first) = uris.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        for uri in uris {
            let uri = rcgen::string::Ia5String::try_from(*uri)
                .map_err(|e| Error::config(format!("{what}: {e}")))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity)?;
        let key = KeyPair::generate().map_err(|e| mint_err(&what, e))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| mint_err(&what, e))?;
        Ok(Minted { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Create `path` with `contents`, mode `mode`, failing if it exists (never overwrite a key,
/// never write through a planted link).
fn create(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file_err = |e: std::io::Error| Error::file(path, "cannot create", e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(file_err)?;
    f.write_all(contents.as_bytes()).map_err(file_err)?;
    f.sync_all().map_err(file_err)
}

/// Mint a job's PKI into directory `dir` (created if missing): `ca.pem`, `rank-<r>.pem` and
/// `rank-<r>.key` for ranks `0..world_size`, and `store.pem` / `store.key`. Key files are
/// created `0600`, certificates `0644`; an existing file is an error (nothing is
/// overwritten). Returns the files written.
pub fn write_job(
    dir: &Path,
    job: &str,
    world_size: u32,
    validity: Validity,
) -> Result<Vec<PathBuf>> {
    if world_size == 0 {
        return Err(Error::config("a job needs at least one rank"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, "cannot create the directory", e))?;
    let ca = JobCa::new(job, validity)?;
    let mut written = Vec::new();
    let mut put = |name: String, contents: &str, mode: u32| -> Result<()> {
        let path = dir.join(name);
        create(&path, contents, mode)?;
        written.push(path);
        Ok(())
    };
    put("ca.pem".into(), ca.ca_pem(), 0o644)?;
    for r in 0..world_size {
        let m = ca.rank(Rank(r), validity)?;
        put(format!("rank-{r}.pem"), &m.cert_pem, 0o644)?;
        put(format!("rank-{r}.key"), &m.key_pem, 0o600)?;
    }
    let m = ca.store(validity)?;
    put("store.pem".into(), &m.cert_pem, 0o644)?;
    put("store.key".into(), &m.key_pem, 0o600)?;
    Ok(written)
}
