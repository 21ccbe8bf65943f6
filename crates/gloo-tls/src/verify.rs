//! The certificate checks of both sides: a chain to the job's pinned CA (never the system
//! roots), valid now, for the right use, naming this job and the expected role.
//!
//! rustls asks a client to check the server's certificate ([`ServerCertVerifier`]) and a
//! server to check the client's ([`ClientCertVerifier`]); one [`Verifier`] does both, with
//! what it expects of the peer fixed when the connection is made ([`Expect`]).

use std::fmt;
use std::sync::Arc;

use gloo_transport::Rank;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};

use crate::identity::{Identity, Role, SCHEME};

/// What the peer's certificate must name, besides this job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Exactly this rank (we dialled it).
    Rank(Rank),
    /// Some rank (it dialled us; the rank it claims in its `Hello` is checked against this
    /// one by the transport).
    AnyRank,
    /// Any identity of the job, rank or store (the TCP store's clients and server).
    AnyOfJob,
}

/// A certificate check that failed; its text is what the checking side reports.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(detail: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
        detail,
    )))))
}

/// The identity a certificate names: its one `gloo://` URI name. A certificate with none, or
/// with more than one (which would make it ambiguous), names nothing.
pub(crate) fn identity_of(cert: &webpki::EndEntityCert<'_>) -> Result<Identity, String> {
    let mut found: Option<Identity> = None;
    for uri in cert.valid_uri_names().filter(|u| u.starts_with(SCHEME)) {
        let Some(id) = Identity::parse(uri) else {
            return Err(format!("its name {uri:?} is not a canonical gloo:// identity"));
        };
        if let Some(first) = &found {
            return Err(format!("it names two identities, {first} and {id}"));
        }
        found = Some(id);
    }
    found.ok_or_else(|| {
        "it has no gloo:// URI name (subject alternative name gloo://<job>/rank/<r>)".to_string()
    })
}

/// The identity in a DER certificate, parsed without checking anything else.
pub(crate) fn identity_of_der(der: &CertificateDer<'_>) -> Result<Identity, String> {
    let cert =
        webpki::EndEntityCert::try_from(der).map_err(|e| format!("it cannot be parsed: {e}"))?;
    identity_of(&cert)
}

/// rustls's error for a webpki one, keeping the detail that helps (which time, which use).
fn pki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let c = match e {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        W::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        W::InvalidCertValidity => CertificateError::Expired,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        W::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        W::UnsupportedCriticalExtension => CertificateError::UnhandledCriticalExtension,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(c)
}

/// Checks the peer's certificate for one connection (or, on a server, for every client).
pub(crate) struct Verifier {
    roots: Arc<[TrustAnchor<'static>]>,
    algs: WebPkiSupportedAlgorithms,
    job: String,
    expect: Expect,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("job", &self.job)
            .field("expect", &self.expect)
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl Verifier {
    pub(crate) fn new(
        roots: Arc<[TrustAnchor<'static>]>,
        algs: WebPkiSupportedAlgorithms,
        job: &str,
        expect: Expect,
    ) -> Verifier {
        Verifier { roots, algs, job: job.to_string(), expect }
    }

    /// The whole check: chain to a pinned root, valid at `now`, allowed for `usage`, and
    /// naming this job and the expected role.
    pub(crate) fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<Identity, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        cert.verify_for_usage(self.algs.all, &self.roots, intermediates, now, usage, None, None)
            .map_err(pki_error)?;
        let id =
            identity_of(&cert).map_err(|why| refused(format!("certificate refused: {why}")))?;
        if id.job() != self.job {
            return Err(refused(format!(
                "certificate refused: it is for {id}, of another job (this job is {:?})",
                self.job
            )));
        }
        let fits = match (self.expect, id.role()) {
            (Expect::Rank(want), Role::Rank(r)) => want == r,
            (Expect::AnyRank, Role::Rank(_)) | (Expect::AnyOfJob, _) => true,
            (_, Role::Store) => false,
        };
        if !fits {
            let wanted = match self.expect {
                Expect::Rank(r) => format!("rank {r}"),
                Expect::AnyRank => "a rank".into(),
                Expect::AnyOfJob => "an identity of the job".into(),
            };
            return Err(refused(format!("certificate refused: it is for {id}, not {wanted}")));
        }
        Ok(id)
    }
}

/// Log a refused certificate with the identity it presents (unverified, but what tells an
/// operator which rank or job was knocking).
fn refusing<T>(
    r: Result<T, rustls::Error>,
    presented: &CertificateDer<'_>,
) -> Result<T, rustls::Error> {
    if let Err(e) = &r {
        let presented = identity_of_der(presented)
            .map_or_else(|why| format!("no identity: {why}"), |id| id.uri());
        tracing::warn!(%presented, error = %e, "refused a TLS certificate");
    }
    r
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self.check(end_entity, intermediates, now, webpki::KeyUsage::server_auth());
        refusing(r, end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Never reached: only TLS 1.3 is offered. Checked properly all the same.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for Verifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: they would only describe the CA, and every rank has one certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let r = self.check(end_entity, intermediates, now, webpki::KeyUsage::client_auth());
        refusing(r, end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}
