//! Certificate signing requests (PKCS#10), both sides. A workload creates its key where it
//! is used ([`KeyAndRequest::generate`]) and sends only the request; the CA checks the
//! request ([`check`]) and signs the public key in it for the identity the caller
//! authenticated as, never for anything the request itself asks. The private key never
//! leaves the workload.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use x509_parser::der_parser::oid;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension};

use crate::spiffe::SpiffeId;

/// Largest request accepted, PEM (a P-256 request with one URI is well under 1 KiB).
pub const MAX_REQUEST_PEM_BYTES: usize = 8 << 10;

/// Why a request was refused. Carries no key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Over [`MAX_REQUEST_PEM_BYTES`].
    #[error("the certificate request is over {MAX_REQUEST_PEM_BYTES} bytes")]
    TooLarge,
    /// Not a PEM `CERTIFICATE REQUEST` that parses.
    #[error("csr: not a PKCS#10 certificate request in PEM ({0})")]
    Malformed(String),
    /// The request is not signed by the key it carries.
    #[error("csr: the signature does not verify with the request's own public key")]
    BadSignature,
    /// Not an ECDSA P-256 key.
    #[error("csr: the public key must be ECDSA P-256 (got {0})")]
    KeyType(String),
    /// The request names other identities than the caller's.
    #[error(
        "csr: the request must ask for exactly {expected} as its only name, it asks for {asked}"
    )]
    Identity {
        /// The authenticated identity.
        expected: String,
        /// What the request asks for.
        asked: String,
    },
    /// The request asks to be a CA.
    #[error("csr: a workload request cannot ask to be a CA")]
    AsksForCa,
    /// Creating a request failed (workload side).
    #[error("creating the certificate request failed: {0}")]
    Create(String),
}

/// A fresh key and the request for it (workload side).
pub struct KeyAndRequest {
    /// The private key, PKCS#8 PEM. Stays with the workload.
    pub key_pem: String,
    /// The request, PEM: the only thing sent.
    pub csr_pem: String,
}

impl fmt::Debug for KeyAndRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAndRequest")
            .field("csr_pem", &self.csr_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl KeyAndRequest {
    /// Generates an ECDSA P-256 key and a request for `id` (its URI as the only name).
    pub fn generate(id: &SpiffeId) -> Result<Self, CsrError> {
        let create = |e: rcgen::Error| CsrError::Create(e.to_string());
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(create)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(create)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .subject_alt_names
            .push(SanType::URI(id.to_string().try_into().map_err(create)?));
        let csr = params.serialize_request(&key).map_err(create)?;
        Ok(KeyAndRequest {
            key_pem: key.serialize_pem(),
            csr_pem: csr.pem().map_err(create)?,
        })
    }
}

/// A request that passed [`check`]: its public key, ready to be signed.
#[derive(Debug)]
pub struct CheckedRequest(pub(crate) P256Key);

/// Checks a request against the identity the caller authenticated as: it parses, its
/// signature verifies with its own key (the caller holds that key), the key is ECDSA
/// P-256, it names `id` and nothing else, and it does not ask to be a CA. Everything
/// else the request asks for is ignored: the CA decides the certificate's contents.
pub fn check(csr_pem: &str, id: &SpiffeId) -> Result<CheckedRequest, CsrError> {
    if csr_pem.len() > MAX_REQUEST_PEM_BYTES {
        return Err(CsrError::TooLarge);
    }
    let pem = x509_parser::pem::Pem::iter_from_buffer(csr_pem.as_bytes())
        .next()
        .ok_or_else(|| CsrError::Malformed("no PEM block".into()))?
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(CsrError::Malformed(format!(
            "a {} block, not CERTIFICATE REQUEST",
            crate::error::clip(&pem.label, 64)
        )));
    }
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
    let spki = &req.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != oid!(1.2.840.10045.2.1)
        || curve != Some(oid!(1.2.840.10045.3.1.7))
        || spki.subject_public_key.data.len() != 65
    {
        return Err(CsrError::KeyType(format!(
            "algorithm {}{}",
            spki.algorithm.algorithm,
            curve.map(|c| format!(" curve {c}")).unwrap_or_default()
        )));
    }
    req.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let mut names = Vec::new();
    for ext in req.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                names.extend(san.general_names.iter().map(|n| match n {
                    GeneralName::URI(u) => (*u).to_string(),
                    other => format!("{other:?}"),
                }));
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(CsrError::AsksForCa),
            _ => {}
        }
    }
    let expected = id.to_string();
    if names != [expected.clone()] {
        let asked = names
            .iter()
            .map(|n| crate::error::clip(n, 256))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CsrError::Identity {
            expected,
            asked: if asked.is_empty() {
                "no name".into()
            } else {
                asked
            },
        });
    }
    Ok(CheckedRequest(P256Key(
        spki.subject_public_key.data.to_vec(),
    )))
}

/// An uncompressed ECDSA P-256 public key from a checked request.
#[derive(Debug)]
pub(crate) struct P256Key(Vec<u8>);

impl rcgen::PublicKeyData for P256Key {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}
