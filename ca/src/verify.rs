//! Checks on certificates and keys the CA did not just make: that a key belongs to its
//! certificate, and that a workload certificate read back from disk was issued by this CA
//! for the identity it claims.

use std::time::{Duration, SystemTime};

use rcgen::KeyPair;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::error::CaError;
use crate::spiffe::SpiffeId;

fn load(what: &'static str, message: impl ToString) -> CaError {
    CaError::Load {
        what,
        message: message.to_string(),
    }
}

/// The DER of every certificate in a PEM text.
pub(crate) fn ders(pem: &str) -> Result<Vec<Vec<u8>>, CaError> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| p.map(|p| p.contents).map_err(|e| load("certificate", e)))
        .collect()
}

/// Whether the private key in `key_pem` belongs to the first certificate in `cert_pem`.
pub(crate) fn key_matches(
    what: &'static str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), CaError> {
    let der = ders(cert_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| load(what, "no certificate"))?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| load(what, e))?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| load(what, e))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(load(
            what,
            "the private key does not belong to the certificate (an interrupted rotation, or mixed-up files)",
        ));
    }
    Ok(())
}

/// Verifies that `chain_pem` (leaf first) was issued under one of `anchors_pem`, is
/// valid at `at`, names `id` as its SPIFFE ID, and that `key_pem` is its key.
pub(crate) fn issued(
    anchors_pem: &[String],
    chain_pem: &str,
    key_pem: &str,
    id: &SpiffeId,
    at: SystemTime,
) -> Result<(), CaError> {
    let chain = ders(chain_pem)?;
    let leaf_der = chain
        .first()
        .ok_or_else(|| load("certificate", "empty chain"))?;
    let (_, leaf) = X509Certificate::from_der(leaf_der).map_err(|e| load("certificate", e))?;
    let uri = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
        });
    if uri.as_deref() != Some(id.to_string().as_str()) {
        return Err(load("certificate", format!("names {uri:?}, not {id}")));
    }
    key_matches("certificate", chain_pem, key_pem)?;
    let anchor_ders: Vec<Vec<u8>> = anchors_pem
        .iter()
        .map(|p| ders(p))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let anchor_certs: Vec<rustls_pki_types::CertificateDer<'_>> =
        anchor_ders.iter().map(|d| d.as_slice().into()).collect();
    let anchors: Vec<_> = anchor_certs
        .iter()
        .filter_map(|d| webpki::anchor_from_trusted_cert(d).ok())
        .collect();
    let leaf_cert: rustls_pki_types::CertificateDer<'_> = leaf_der.as_slice().into();
    let end = webpki::EndEntityCert::try_from(&leaf_cert)
        .map_err(|e| load("certificate", format!("{e:?}")))?;
    let inter: Vec<rustls_pki_types::CertificateDer<'_>> =
        chain[1..].iter().map(|d| d.as_slice().into()).collect();
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    end.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &inter,
        rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(secs)),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| load("certificate", format!("does not chain to this CA: {e:?}")))?;
    Ok(())
}
