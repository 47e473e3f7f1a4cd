//! TLS on the xDS port (and the other ports behind the same front door): the serving
//! certificate, and the client-certificate verifier anchored on the issuing CA (never a
//! sibling under the same root) that logs and counts every certificate it refuses with
//! what the peer claimed. The SPIFFE ID of a verified leaf is the connection's identity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ca::SpiffeId;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::log_limit::RateLimited;
use crate::observability::metrics::Metrics;

/// Failed handshakes, logged at most once a second.
pub(super) static HANDSHAKE_LOG: RateLimited = RateLimited::new();

/// The control plane's serving credentials: what every port behind the front door
/// presents (one [`ServingKey`], renewed in place for all of them), and the anchors
/// client certificates must chain to.
#[derive(Clone)]
pub struct ServingTls {
    /// The serving certificate and key, shared by every port's setup.
    pub key: ServingKey,
    /// Client certificates must chain to one of these: the CA that issues workload
    /// certificates (and, during a rotation overlap, the previous roots).
    pub client_anchors: Vec<String>,
    /// Trust domain of client identities.
    pub trust_domain: String,
}

impl ServingTls {
    /// From PEM: the serving chain and key, the issuer anchors and the trust domain.
    pub fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        client_anchors: Vec<String>,
        trust_domain: String,
    ) -> anyhow::Result<Self> {
        Ok(ServingTls {
            key: ServingKey::new(certified_key(chain_pem, key_pem)?),
            client_anchors,
            trust_domain,
        })
    }

    /// The rustls setup of one port: it presents whatever [`ServingTls::key`] holds
    /// when a connection arrives.
    pub fn setup(&self) -> anyhow::Result<TlsSetup> {
        Ok(TlsSetup {
            certified_key: self.key.clone(),
            client_anchors: Arc::new(anchors(&self.client_anchors)?),
            client_cert_optional: false,
        })
    }
}

/// The serving certificate and key, replaced in place when renewed: connections after a
/// renewal get the new one, on every port, without a restart.
#[derive(Clone)]
pub struct ServingKey(Arc<parking_lot::RwLock<Arc<rustls::sign::CertifiedKey>>>);

impl std::fmt::Debug for ServingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingKey").finish_non_exhaustive()
    }
}

impl ServingKey {
    /// A slot holding `key`.
    pub fn new(key: rustls::sign::CertifiedKey) -> Self {
        ServingKey(Arc::new(parking_lot::RwLock::new(Arc::new(key))))
    }

    /// What is presented now.
    pub fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.0.read().clone()
    }

    /// Presents `chain_pem` with `key_pem` from now on.
    pub fn replace_pem(&self, chain_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        let key = certified_key(chain_pem, key_pem)?;
        *self.0.write() = Arc::new(key);
        Ok(())
    }

    /// When what is presented now expires.
    pub fn not_after(&self) -> Option<std::time::SystemTime> {
        self.current()
            .end_entity_cert()
            .ok()
            .and_then(|c| not_after(c))
    }
}

impl rustls::server::ResolvesServerCert for ServingKey {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

/// A chain and its key, as rustls presents them.
fn certified_key(chain_pem: &str, key_pem: &str) -> anyhow::Result<rustls::sign::CertifiedKey> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("the serving certificate chain")?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .context("the serving key")?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .context("loading the serving key")?;
    Ok(rustls::sign::CertifiedKey::new(chain, signing))
}

/// The issuer anchors, from PEM.
fn anchors(anchors_pem: &[String]) -> anyhow::Result<rustls::RootCertStore> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in anchors_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.context("an issuer certificate")?)
                .context("adding an issuer anchor")?;
        }
    }
    Ok(roots)
}

/// TLS for the xDS port.
pub struct TlsSetup {
    /// The serving certificate and key.
    pub certified_key: ServingKey,
    /// Client certificates must chain to one of these (the issuing CA, not its root).
    pub client_anchors: Arc<rustls::RootCertStore>,
    /// Whether a peer may connect without a certificate (the certificate endpoint, where
    /// a first request authenticates with a token). A certificate that is presented is
    /// verified all the same. The xDS port always requires one.
    pub client_cert_optional: bool,
}

impl TlsSetup {
    /// From PEM: the serving chain and key, and the issuer anchors.
    pub fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        anchors_pem: &[String],
    ) -> anyhow::Result<Self> {
        Ok(TlsSetup {
            certified_key: ServingKey::new(certified_key(chain_pem, key_pem)?),
            client_anchors: Arc::new(anchors(anchors_pem)?),
            client_cert_optional: false,
        })
    }

    /// The server config for one connection: its verifier knows the peer's address, so
    /// a refused certificate is logged with it.
    pub(super) fn config(
        &self,
        peer: SocketAddr,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.client_anchors.clone(),
            provider.clone(),
        )
        .build()?;
        let verifier = Arc::new(LoggingVerifier {
            mandatory: !self.client_cert_optional,
            inner,
            peer,
            metrics: metrics.clone(),
        });
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(self.certified_key.clone()));
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// The SPIFFE ID and expiry a certificate claims (unverified: for logs).
fn claimed(cert: &[u8]) -> (Option<String>, Option<String>) {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert) else {
        return (None, None);
    };
    let uri = c.subject_alternative_name().ok().flatten().and_then(|san| {
        san.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(crds::text::clip(u, 256)),
            _ => None,
        })
    });
    let not_after = c.validity().not_after.to_rfc2822().ok();
    (uri, not_after)
}

/// When a certificate expires.
pub(super) fn not_after(cert: &[u8]) -> Option<std::time::SystemTime> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let secs = u64::try_from(c.validity().not_after.timestamp()).ok()?;
    std::time::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// The SPIFFE ID of a verified leaf.
pub(super) fn verified_identity(cert: &[u8]) -> Option<SpiffeId> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = c.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => u.parse().ok(),
        _ => None,
    })
}

/// Delegates to webpki and records every refused client certificate.
struct LoggingVerifier {
    mandatory: bool,
    inner: Arc<dyn ClientCertVerifier>,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for LoggingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggingVerifier")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

fn reason_label(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "not_yet_valid"
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => "unknown_issuer",
        rustls::Error::InvalidCertificate(C::BadSignature) => "bad_signature",
        rustls::Error::InvalidCertificate(C::Revoked) => "revoked",
        _ => "invalid_certificate",
    }
}

impl ClientCertVerifier for LoggingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        match &result {
            Ok(_) if verified_identity(end_entity).is_none() => {
                self.refused(
                    "no_spiffe_id",
                    end_entity,
                    "the certificate carries no SPIFFE ID",
                );
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ));
            }
            Ok(_) => {}
            Err(e) => self.refused(reason_label(e), end_entity, &e.to_string()),
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl LoggingVerifier {
    fn refused(&self, reason: &'static str, cert: &[u8], error: &str) {
        self.metrics.handshake_failed(reason);
        if let Some(suppressed) = HANDSHAKE_LOG.allow() {
            let (identity, not_after) = claimed(cert);
            tracing::warn!(
                peer = %self.peer,
                claimed_identity = identity.as_deref().unwrap_or("none"),
                not_after = not_after.as_deref().unwrap_or("unknown"),
                reason,
                error,
                suppressed,
                "refused an xDS client certificate"
            );
        }
    }
}
