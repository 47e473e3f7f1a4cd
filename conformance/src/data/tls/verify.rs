//! Certificate checks for both sides of Rudder's mutual TLS: the peer's chain must lead
//! to the trust bundle (rustls-webpki), and one of the leaf's URI SANs must match one of
//! the context's SAN matchers. DNS names are never checked: Rudder's workload
//! certificates carry a SPIFFE URI and no DNS name, so rustls's own server verifier
//! (which checks the server name) cannot be used.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::config::listener::StringMatch;

use super::error::TlsError;

/// What a peer certificate is checked against: anchors and URI SAN matchers.
#[derive(Debug)]
pub(crate) struct PeerCheck {
    anchors: Vec<TrustAnchor<'static>>,
    uri_sans: Vec<StringMatch>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerCheck {
    /// A check over the DER anchors of a bundle and the SAN matchers (none: any SAN).
    pub(crate) fn new(anchors: &[Vec<u8>], uri_sans: Vec<StringMatch>) -> Result<Self, TlsError> {
        let anchors = anchors
            .iter()
            .enumerate()
            .map(|(i, der)| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                    .map(|a| a.to_owned())
                    .map_err(|e| TlsError::Invalid(format!("trust bundle anchor {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if anchors.is_empty() {
            return Err(TlsError::Invalid("trust bundle holds no anchor".into()));
        }
        Ok(PeerCheck {
            anchors,
            uri_sans,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<(), rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        cert.verify_for_usage(
            self.algorithms.all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(webpki_error)?;
        let uris = uri_sans(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if san_matches(&self.uri_sans, &uris) {
            Ok(())
        } else {
            // The name of the rejection Envoy counts as `ssl.fail_verify_san`.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }
}

/// Whether one of `uris` matches one of `matchers` (no matcher: any certificate).
pub fn san_matches(matchers: &[StringMatch], uris: &[String]) -> bool {
    matchers.is_empty() || uris.iter().any(|u| matchers.iter().any(|m| m.matches(u)))
}

/// The URI SANs of a DER certificate.
pub(crate) fn uri_sans(der: &[u8]) -> Result<Vec<String>, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::Invalid(format!("certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::Invalid(format!("certificate subjectAltName: {e}")))?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

fn webpki_error(e: webpki::Error) -> rustls::Error {
    let ce = match e {
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::CertExpired { .. } => CertificateError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(ce)
}

/// Checks client certificates (server side of a chain).
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub(crate) check: PeerCheck,
    pub(crate) mandatory: bool,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check
            .check(
                end_entity,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
            )
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.check.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.check.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.check.algorithms.supported_schemes()
    }
}

/// Checks server certificates (client side of a cluster), ignoring the server name.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    pub(crate) check: Arc<PeerCheck>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check
            .check(
                end_entity,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
            )
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.check.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.check.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.check.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn san_matchers_exact_prefix_and_none() {
        let uris = vec!["spiffe://cluster.local/ns/shop/sa/web".to_string()];
        assert!(san_matches(&[], &uris), "no matcher accepts any SAN");
        assert!(san_matches(
            &[StringMatch::Exact(
                "spiffe://cluster.local/ns/shop/sa/web".into(),
                false
            )],
            &uris
        ));
        assert!(san_matches(
            &[StringMatch::Prefix("spiffe://cluster.local/".into(), false)],
            &uris
        ));
        assert!(!san_matches(
            &[StringMatch::Prefix("spiffe://other.domain/".into(), false)],
            &uris
        ));
        assert!(!san_matches(
            &[StringMatch::Exact(
                "spiffe://cluster.local/ns/shop/sa/db".into(),
                false
            )],
            &uris
        ));
        assert!(
            !san_matches(
                &[StringMatch::Prefix("spiffe://cluster.local/".into(), false)],
                &[]
            ),
            "a certificate without URI SAN matches no matcher"
        );
    }

    #[test]
    fn an_empty_bundle_or_garbage_anchor_is_refused() {
        assert!(PeerCheck::new(&[], vec![]).is_err());
        assert!(PeerCheck::new(&[vec![1, 2, 3]], vec![]).is_err());
    }
}
