//! Secrets: a certificate chain with its private key (the key must belong to the leaf;
//! the leaf's URI SANs are collected), or a trust bundle of at least one certificate.
//! Key bytes never reach an error message or a log.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret as PbSecret, secret};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::check::{Path, R, must_be_default};
use super::limits::MAX_LIST;
use crate::config::secret::{CertifiedKey, Secret, TrustBundle};

/// The largest PEM accepted (a chain or a bundle), in bytes.
const MAX_PEM: usize = 1 << 20;

/// A `Secret` resource.
pub(crate) fn secret(s: &PbSecret) -> R<Secret> {
    let p = Path::root();
    match &s.r#type {
        Some(secret::Type::TlsCertificate(t)) => {
            let tp = p.f("tls_certificate");
            must_be_default!(
                tp,
                t,
                pkcs12,
                watched_directory,
                private_key_provider,
                password,
                ocsp_staple,
                signed_certificate_timestamp,
                tls_params,
            );
            let cp = tp.f("certificate_chain");
            let chain_pem = inline(&cp, t.certificate_chain.as_ref())?;
            let chain = certificates(&cp, &chain_pem)?;
            let kp = tp.f("private_key");
            let key_pem = inline(&kp, t.private_key.as_ref())?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|_| kp.err("no PEM private key (PKCS#8, SEC1 or PKCS#1)"))?;
            let leaf = chain.first().ok_or_else(|| cp.err("no certificate"))?;
            let (_, cert) = X509Certificate::from_der(leaf)
                .map_err(|e| cp.i(0).err(format!("not an X.509 certificate: {e}")))?;
            let signer = rustls::crypto::ring::sign::any_supported_type(&key)
                .map_err(|_| kp.err("an unsupported or malformed private key"))?;
            let public = signer
                .public_key()
                .ok_or_else(|| kp.err("the key's public half is unknown"))?;
            if public.as_ref() != cert.tbs_certificate.subject_pki.raw {
                return Err(kp.err("the private key does not belong to the leaf certificate"));
            }
            let uris = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            GeneralName::URI(u) => Some(u.to_string()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Secret::Certificate(Arc::new(CertifiedKey {
                chain,
                key: key.secret_der().to_vec(),
                uris,
            })))
        }
        Some(secret::Type::ValidationContext(v)) => {
            let vp = p.f("validation_context");
            must_be_default!(
                vp,
                v,
                ca_certificate_provider_instance,
                system_root_certs,
                watched_directory,
                verify_certificate_spki,
                verify_certificate_hash,
                match_typed_subject_alt_names,
                match_subject_alt_names,
                require_signed_certificate_timestamp,
                crl,
                allow_expired_certificate,
                trust_chain_verification,
                custom_validator_config,
                only_verify_leaf_cert_crl,
                max_verify_depth,
                suppress_client_ca_list,
            );
            let cp = vp.f("trusted_ca");
            let pem = inline(&cp, v.trusted_ca.as_ref())?;
            let anchors = certificates(&cp, &pem)?;
            for (i, a) in anchors.iter().enumerate() {
                X509Certificate::from_der(a)
                    .map_err(|e| cp.i(i).err(format!("not an X.509 certificate: {e}")))?;
            }
            Ok(Secret::Bundle(Arc::new(TrustBundle { anchors })))
        }
        Some(secret::Type::SessionTicketKeys(_)) => Err(p.f("session_ticket_keys").unsupported()),
        Some(secret::Type::GenericSecret(_)) => Err(p.f("generic_secret").unsupported()),
        None => Err(p.err("tls_certificate or validation_context is required")),
    }
}

/// An inline PEM (`inline_bytes` or `inline_string`).
fn inline(path: &Path, d: Option<&DataSource>) -> R<Vec<u8>> {
    let d = d.ok_or_else(|| path.err("required"))?;
    must_be_default!(path, d, watched_directory);
    let bytes = match &d.specifier {
        Some(Specifier::InlineBytes(b)) => b.clone(),
        Some(Specifier::InlineString(s)) => s.clone().into_bytes(),
        Some(_) => return Err(path.err("only inline_bytes or inline_string")),
        None => return Err(path.err("required")),
    };
    if bytes.len() > MAX_PEM {
        return Err(path.err(format!("longer than {MAX_PEM} bytes")));
    }
    Ok(bytes)
}

/// The certificates of a PEM: at least one, at most [`MAX_LIST`].
fn certificates(path: &Path, pem: &[u8]) -> R<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem) {
        let c = c.map_err(|e| path.err(format!("malformed PEM: {e}")))?;
        if out.len() == MAX_LIST {
            return Err(path.err(format!("more than {MAX_LIST} certificates")));
        }
        out.push(c.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(path.err("no PEM certificate"));
    }
    Ok(out)
}
