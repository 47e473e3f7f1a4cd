//! CA keys that must never be used again: keys that were published. A CA certificate
//! (or a certificate in its chain, or a root kept from before a rotation) whose public
//! key is listed here is refused when the CA is loaded, whatever the certificate around
//! the key says, since anyone can sign with a published key.

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// SHA-256 of the SubjectPublicKeyInfo (DER) of each published key, with where it was
/// published.
const DENIED: &[(&str, &str)] = &[(
    "541903d69a3fe778efcb9e3a037d71f5977594f7d1a977e91e73d411feb1377d",
    "the development CA key once committed to Rudder's repository (rudder-ca/ca.key)",
)];

/// Why `der` (a certificate) must not be trusted or used to sign, if it must not.
pub(crate) fn denied(der: &[u8]) -> Option<&'static str> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let digest = Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    DENIED
        .iter()
        .find(|(fingerprint, _)| *fingerprint == hex)
        .map(|(_, why)| *why)
}

/// The first certificate of `pem` that is denied, with why.
pub(crate) fn first_denied(pem: &str) -> Option<&'static str> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .find_map(|p| denied(&p.contents))
}
