//! TLS configurations from SDS secrets: the server side of a filter chain and the client
//! side of a cluster, with the SPIFFE URI SAN checks Rudder's contexts ask for.
//!
//! Built configurations are cached by the secrets' `Arc`s and the settings: a rotated
//! secret (a new `Arc` in a new snapshot) builds a new configuration that NEW
//! connections take, while open connections keep the one they were made with, so a
//! rotation drops nothing. The cache holds at most [`CACHE_LIMIT`] configurations per
//! side: when full, entries made from secrets the snapshot no longer holds go first,
//! then the oldest. An entry keeps its secrets alive, so a pointer in a key is never
//! reused while the entry lives.

mod error;
mod verify;

use std::sync::Arc;

use parking_lot::Mutex;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::Snapshot;
use crate::config::cluster::UpstreamTls;
use crate::config::listener::{DownstreamTls, SecretRef, Validation};
use crate::config::secret::{CertifiedKey, Secret, TrustBundle};

pub use error::TlsError;
pub use verify::san_matches;

/// Configurations kept per side before the oldest is dropped.
pub const CACHE_LIMIT: usize = 1024;

/// The verified peer certificate of a TLS connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Its URI SANs.
    pub uris: Vec<String>,
    /// Lowercase hex SHA-256 of its DER (`Hash=` of `x-forwarded-client-cert`).
    pub sha256_hex: String,
}

impl PeerInfo {
    /// The peer information of a verified leaf certificate (DER); none when it cannot
    /// be parsed (it was verified, so that does not happen).
    pub fn from_leaf(der: &[u8]) -> Option<PeerInfo> {
        let uris = verify::uri_sans(der).ok()?;
        let digest = Sha256::digest(der);
        let sha256_hex = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(PeerInfo { uris, sha256_hex })
    }
}

/// The stat counting TLS handshakes of cluster `name` (`cluster.NAME.ssl.handshake`),
/// for the upstream side that uses [`TlsCache::client_config`].
pub fn cluster_handshake_stat(name: &str) -> String {
    format!("cluster.{name}.ssl.handshake")
}

struct Entry<C> {
    secrets: Vec<(String, Arc<Secret>)>,
    settings: String,
    config: Arc<C>,
}

/// Built configurations, cached by the secrets and settings they were made from.
#[derive(Default)]
pub struct TlsCache {
    servers: Mutex<Vec<Entry<rustls::ServerConfig>>>,
    clients: Mutex<Vec<Entry<rustls::ClientConfig>>>,
}

impl std::fmt::Debug for TlsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCache")
            .field("servers", &self.servers.lock().len())
            .field("clients", &self.clients.lock().len())
            .finish()
    }
}

fn cached<C>(
    cache: &Mutex<Vec<Entry<C>>>,
    snapshot: &Snapshot,
    secrets: Vec<(String, Arc<Secret>)>,
    settings: String,
    build: impl FnOnce() -> Result<C, TlsError>,
) -> Result<Arc<C>, TlsError> {
    let same = |e: &Entry<C>| {
        e.settings == settings
            && e.secrets.len() == secrets.len()
            && e.secrets
                .iter()
                .zip(&secrets)
                .all(|(a, b)| Arc::ptr_eq(&a.1, &b.1))
    };
    if let Some(e) = cache.lock().iter().find(|e| same(e)) {
        return Ok(e.config.clone());
    }
    let config = Arc::new(build()?);
    let mut entries = cache.lock();
    if entries.len() >= CACHE_LIMIT {
        let current = |e: &Entry<C>| {
            e.secrets
                .iter()
                .all(|(name, s)| snapshot.secret(name).is_some_and(|c| Arc::ptr_eq(c, s)))
        };
        entries.retain(current);
    }
    if entries.len() >= CACHE_LIMIT {
        entries.remove(0);
    }
    entries.push(Entry {
        secrets,
        settings,
        config: config.clone(),
    });
    Ok(config)
}

fn secret(snapshot: &Snapshot, r: &SecretRef) -> Result<Arc<Secret>, TlsError> {
    snapshot
        .secret(&r.name)
        .cloned()
        .ok_or_else(|| TlsError::MissingSecret(r.name.clone()))
}

fn certified(s: &Secret, name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    match s {
        Secret::Certificate(c) => Ok(c.clone()),
        Secret::Bundle(_) => Err(TlsError::Invalid(format!(
            "secret {name} is a trust bundle, not a certificate"
        ))),
    }
}

fn bundle(s: &Secret, name: &str) -> Result<Arc<TrustBundle>, TlsError> {
    match s {
        Secret::Bundle(b) => Ok(b.clone()),
        Secret::Certificate(_) => Err(TlsError::Invalid(format!(
            "secret {name} is a certificate, not a trust bundle"
        ))),
    }
}

fn chain_and_key(
    c: &CertifiedKey,
    name: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = c
        .chain
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let key = PrivateKeyDer::try_from(c.key.clone())
        .map_err(|e| TlsError::Invalid(format!("secret {name}: private key: {e}")))?;
    Ok((chain, key))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn alpn(list: &[String]) -> Vec<Vec<u8>> {
    list.iter().map(|p| p.as_bytes().to_vec()).collect()
}

fn peer_check(
    snapshot: &Snapshot,
    v: &Validation,
) -> Result<(Arc<Secret>, verify::PeerCheck), TlsError> {
    let s = secret(snapshot, &v.trust)?;
    let b = bundle(&s, &v.trust.name)?;
    let check = verify::PeerCheck::new(&b.anchors, v.uri_sans.clone())?;
    Ok((s, check))
}

impl TlsCache {
    /// The server configuration of a chain.
    pub fn server_config(
        &self,
        snapshot: &Snapshot,
        tls: &DownstreamTls,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let cert_secret = secret(snapshot, &tls.certificate)?;
        let mut secrets = vec![(tls.certificate.name.clone(), cert_secret.clone())];
        let validation = match &tls.validation {
            Some(v) => {
                let (s, check) = peer_check(snapshot, v)?;
                secrets.push((v.trust.name.clone(), s));
                Some(check)
            }
            None => None,
        };
        let settings = format!(
            "require={} alpn={:?} sans={:?}",
            tls.require_client_certificate,
            tls.alpn,
            tls.validation.as_ref().map(|v| &v.uri_sans)
        );
        cached(&self.servers, snapshot, secrets, settings, || {
            let name = &tls.certificate.name;
            let (chain, key) = chain_and_key(&*certified(&cert_secret, name)?, name)?;
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Invalid(e.to_string()))?;
            let builder = match validation {
                Some(check) => {
                    builder.with_client_cert_verifier(Arc::new(verify::ClientVerifier {
                        check,
                        mandatory: tls.require_client_certificate,
                    }))
                }
                None => builder.with_no_client_auth(),
            };
            let mut config = builder
                .with_single_cert(chain, key)
                .map_err(|e| TlsError::Invalid(format!("secret {name}: {e}")))?;
            config.alpn_protocols = alpn(&tls.alpn);
            Ok(config)
        })
    }

    /// The client configuration of a cluster's transport. The server name is not
    /// checked (the caller sends `tls.sni` as SNI when set); the server certificate is
    /// verified against the bundle and the URI SAN matchers instead.
    pub fn client_config(
        &self,
        snapshot: &Snapshot,
        tls: &UpstreamTls,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let (bundle_secret, check) = peer_check(snapshot, &tls.validation)?;
        let mut secrets = vec![(tls.validation.trust.name.clone(), bundle_secret)];
        let cert = match &tls.certificate {
            Some(r) => {
                let s = secret(snapshot, r)?;
                secrets.push((r.name.clone(), s.clone()));
                Some((s, r.name.clone()))
            }
            None => None,
        };
        let settings = format!(
            "sni={:?} alpn={:?} sans={:?} cert={}",
            tls.sni,
            tls.alpn,
            tls.validation.uri_sans,
            cert.is_some()
        );
        cached(&self.clients, snapshot, secrets, settings, || {
            let builder = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Invalid(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::ServerVerifier {
                    check: Arc::new(check),
                }));
            let mut config = match cert {
                Some((s, name)) => {
                    let (chain, key) = chain_and_key(&*certified(&s, &name)?, &name)?;
                    builder
                        .with_client_auth_cert(chain, key)
                        .map_err(|e| TlsError::Invalid(format!("secret {name}: {e}")))?
                }
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = alpn(&tls.alpn);
            config.enable_sni = tls.sni.is_some();
            Ok(config)
        })
    }

    /// This proxy's own URI SAN on a chain (the first URI SAN of its certificate).
    pub fn own_uri(snapshot: &Snapshot, tls: &DownstreamTls) -> Option<String> {
        match snapshot.secret(&tls.certificate.name).map(|s| &**s) {
            Some(Secret::Certificate(c)) => c.uris.first().cloned(),
            _ => None,
        }
    }
}
