//! TLS to the control plane: a client configuration built from the files at each
//! connect (the agent renews them in place by swapping `..data`), the server chained
//! to the bundle file and named by its exact URI SAN (as Envoy's
//! `match_typed_subject_alt_names` checks it: no host name check), ALPN h2.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::bootstrap::XdsTls;

/// The largest credential file read.
const MAX_PEM: u64 = 256 << 10;

/// A client configuration from the files installed now; a renewal that swaps the
/// files between two reads is retried.
pub(crate) async fn client_config(files: &XdsTls) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut last = String::new();
    for _ in 0..3 {
        match build(files) {
            Ok(c) => return Ok(Arc::new(c)),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_PEM {
        return Err(format!("{}: larger than {MAX_PEM} bytes", path.display()));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn build(files: &XdsTls) -> Result<rustls::ClientConfig, String> {
    let chain_pem = read(&files.cert_file)?;
    let key_pem = read(&files.key_file)?;
    let bundle_pem = read(&files.ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bundle_pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", files.ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", files.ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", files.ca_file.display()));
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", files.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: {e}", files.key_file.display()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SanVerifier {
            webpki,
            uri: files.server_id.clone(),
        }))
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the client certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The bundle's chain and validity checks, then the exact URI SAN; the name dialled is
/// not checked (Envoy's SAN matcher replaces it).
#[derive(Debug)]
struct SanVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    uri: String,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError as E;
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // The chain was checked before the name: only the name is wrong.
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                E::NotValidForName | E::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        if has_uri(end_entity, &self.uri) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the xDS server's certificate does not name {}",
                self.uri
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Whether the certificate `der` carries `uri` among its URI SANs.
fn has_uri(der: &[u8], uri: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(u) if *u == uri))
        })
}
