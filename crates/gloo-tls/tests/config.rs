//! Loading a TLS configuration: PEM files, the key file's permissions, a key that is not the
//! certificate's, a certificate the CA did not issue, and which rank a certificate is for.

use gloo_testing::tls::{Pki, valid};
use gloo_tls::{Error, Identity, TlsConfig, TlsFiles};
use gloo_transport::Rank;

#[test]
fn files_load_and_name_their_identity() {
    let pki = Pki::new("files", 3);
    let dir = tempfile::tempdir().unwrap();
    let f = pki.write_rank(dir.path(), 2, 0o600);
    let cfg = TlsConfig::from_pem_files(&f.ca, &f.cert, &f.key).unwrap();
    assert_eq!(cfg.identity(), &Identity::rank("files", Rank(2)));
    assert_eq!(cfg.job(), "files");
    cfg.check_rank("files", Rank(2)).unwrap();
    // Stricter than 0600 is fine too.
    let f = pki.write_rank(dir.path(), 1, 0o400);
    f.load().unwrap();
}

#[test]
fn a_key_file_others_can_read_is_refused_with_an_error_that_says_so() {
    let pki = Pki::new("perms", 1);
    for mode in [0o640, 0o604, 0o644, 0o660, 0o666] {
        let dir = tempfile::tempdir().unwrap();
        let f = pki.write_rank(dir.path(), 0, mode);
        let e = f.load().unwrap_err();
        assert_eq!(e, Error::KeyPermissions { path: f.key.clone(), mode }, "mode {mode:o}");
        let text = e.to_string();
        assert!(text.contains("readable by group or others"), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
    }
}

#[test]
fn a_missing_file_names_itself() {
    let pki = Pki::new("missing", 1);
    let dir = tempfile::tempdir().unwrap();
    let f = pki.write_rank(dir.path(), 0, 0o600);
    let gone = TlsFiles { ca: dir.path().join("nope.pem"), ..f };
    let e = gone.load().unwrap_err();
    match &e {
        Error::File { path, .. } => assert_eq!(path, &dir.path().join("nope.pem")),
        other => panic!("{other}"),
    }
    // The operating system's error is the source, as it was, and printed once.
    let os = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("an io::Error source");
    assert_eq!((os.kind(), os.raw_os_error()), (std::io::ErrorKind::NotFound, Some(2)));
    let chain = gloo_testing::errors::chain_printed_once(&e);
    assert_eq!(chain, vec![e.to_string(), os.to_string()]);
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let pki = Pki::new("keys", 2);
    let a = pki.ca().rank(Rank(0), valid()).unwrap();
    let b = pki.ca().rank(Rank(1), valid()).unwrap();
    let e =
        TlsConfig::from_pem(pki.ca_pem().as_bytes(), a.cert_pem.as_bytes(), b.key_pem.as_bytes())
            .unwrap_err();
    assert!(e.to_string().contains("does not belong to the certificate"), "{e}");
}

#[test]
fn a_certificate_the_pinned_ca_did_not_issue_is_refused_at_load() {
    let pki = Pki::new("pin", 1);
    let other = Pki::new("pin-other", 1);
    let m = other.ca().rank(Rank(0), valid()).unwrap();
    let e =
        TlsConfig::from_pem(pki.ca_pem().as_bytes(), m.cert_pem.as_bytes(), m.key_pem.as_bytes())
            .unwrap_err();
    assert!(e.to_string().contains("does not verify against the CA"), "{e}");
}

#[test]
fn garbage_pem_and_certificates_without_an_identity_are_refused() {
    let pki = Pki::new("garbage", 1);
    let m = pki.ca().rank(Rank(0), valid()).unwrap();
    let e =
        TlsConfig::from_pem(b"not pem", m.cert_pem.as_bytes(), m.key_pem.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
    let e = TlsConfig::from_pem(pki.ca_pem().as_bytes(), m.cert_pem.as_bytes(), b"").unwrap_err();
    assert!(e.to_string().contains("private key"), "{e}");
    let anonymous = pki.ca().issue_uris(&["https://example.invalid/"], valid()).unwrap();
    let e = TlsConfig::from_pem(
        pki.ca_pem().as_bytes(),
        anonymous.cert_pem.as_bytes(),
        anonymous.key_pem.as_bytes(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("names no identity"), "{e}");
}

#[test]
fn a_certificate_for_another_rank_or_job_does_not_make_this_rank() {
    let pki = Pki::new("which", 3);
    let cfg = pki.rank(1);
    let e = cfg.check_rank("which", Rank(2)).unwrap_err().to_string();
    assert!(e.contains("gloo://which/rank/2") && e.contains("gloo://which/rank/1"), "{e}");
    assert!(cfg.check_rank("other", Rank(1)).is_err());
    assert!(pki.store().check_rank("which", Rank(0)).is_err());
}
