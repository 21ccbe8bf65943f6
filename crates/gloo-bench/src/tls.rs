//! TLS for `--transport tls`: every rank's certificate comes from `GLOO_TLS_CA`,
//! `GLOO_TLS_CERT` and `GLOO_TLS_KEY`. The local launcher hands each rank its own: the
//! launcher's variables with `{rank}` replaced by the rank (`GLOO_TLS_CERT=pki/rank-{rank}.pem`
//! with the files of `gloo-tls mint`), or, when none is set, a throwaway CA for job
//! `gloo-bench` minted into the run's temporary directory. With TLS variables set the store is
//! reached (and the launcher's served) over TLS too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gloo_tls::mint::{Validity, write_job};
use gloo_tls::{CA_ENV, CERT_ENV, KEY_ENV, TlsConfig, TlsFiles};

use crate::cli::TransportKind;
use crate::error::{Error, Result};

/// The job of the throwaway CA (what the transport's `Hello` and every certificate name).
pub(crate) const JOB: &str = "gloo-bench";

fn tls_err(e: gloo_tls::Error) -> Error {
    Error::Invalid(format!("TLS: {}", gloo_transport::ErrorChain(&e)))
}

/// This process's TLS configuration, from the `GLOO_TLS_*` files (`None` when none is set).
pub(crate) fn from_env() -> Result<Option<TlsConfig>> {
    TlsConfig::from_env().map_err(tls_err)
}

/// The TLS files of the local launcher's ranks, and its store's configuration.
pub(crate) struct Launch {
    per_rank: Vec<TlsFiles>,
    /// What the launcher's embedded store presents (the throwaway CA's store certificate, or
    /// rank 0's).
    pub(crate) store: TlsConfig,
}

impl Launch {
    /// The variables that give rank `r` its files.
    pub(crate) fn vars(&self, r: u32) -> [(&'static str, &Path); 3] {
        let f = &self.per_rank[r as usize];
        [(CA_ENV, f.ca.as_path()), (CERT_ENV, f.cert.as_path()), (KEY_ENV, f.key.as_path())]
    }
}

fn expand(p: &Path, r: u32) -> PathBuf {
    PathBuf::from(p.to_string_lossy().replace("{rank}", &r.to_string()))
}

/// TLS for `n` local ranks: from this process's variables (with `{rank}` expanded), or, with
/// `--transport tls` and no variables, a throwaway CA minted into `dir`. `None`: no TLS.
pub(crate) fn for_launch(n: u32, transport: TransportKind, dir: &Path) -> Result<Option<Launch>> {
    if let Some(files) = TlsFiles::from_env().map_err(tls_err)? {
        let per_rank: Vec<TlsFiles> = (0..n)
            .map(|r| TlsFiles {
                ca: expand(&files.ca, r),
                cert: expand(&files.cert, r),
                key: expand(&files.key, r),
            })
            .collect();
        if n > 1 && per_rank[0].cert == per_rank[1].cert {
            return Err(Error::Invalid(format!(
                "{CERT_ENV} names one certificate for every rank; each rank needs its own: \
                 write {{rank}} where the rank goes (e.g. {CERT_ENV}=pki/rank-{{rank}}.pem)"
            )));
        }
        let store = per_rank[0].load().map_err(tls_err)?;
        return Ok(Some(Launch { per_rank, store }));
    }
    if transport != TransportKind::Tls {
        return Ok(None);
    }
    let pki = dir.join("tls");
    write_job(&pki, JOB, n, Validity::days(1)).map_err(tls_err)?;
    say!("gloo-bench: minted a throwaway CA for job {JOB} and {n} rank certificates");
    let per_rank = (0..n)
        .map(|r| TlsFiles {
            ca: pki.join("ca.pem"),
            cert: pki.join(format!("rank-{r}.pem")),
            key: pki.join(format!("rank-{r}.key")),
        })
        .collect();
    let store =
        TlsConfig::from_pem_files(pki.join("ca.pem"), pki.join("store.pem"), pki.join("store.key"))
            .map_err(tls_err)?;
    Ok(Some(Launch { per_rank, store }))
}

/// AES-128-GCM's own speed on this machine (ring, one core, sealing 16 KiB records: TLS
/// 1.3's largest, as bulk transfers use) for about `secs`, in GB/s: what bounds TLS's
/// throughput, since every byte is sealed once by the sender and opened once by the receiver.
pub(crate) fn cipher_gbps(secs: f64) -> f64 {
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &[7u8; 16]).expect("a 16-byte key is AES-128's length"),
    );
    let mut record = vec![0x5au8; 16 * 1024];
    let budget = Duration::from_secs_f64(secs.max(0.05));
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget || n < 16 {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([23u8, 3, 3, 0x40, 0x11]),
                &mut record,
            )
            .expect("sealing 16 KiB with AES-GCM cannot fail");
        std::hint::black_box(&tag);
        n += 1;
    }
    (n * record.len() as u64) as f64 / start.elapsed().as_secs_f64() / 1e9
}
