//! TLS configurations from SDS secrets: the server side of a filter chain and the client
//! side of a cluster, with the SPIFFE URI SAN checks Rudder's contexts ask for.

use std::sync::Arc;

use crate::config::Snapshot;
use crate::config::cluster::UpstreamTls;
use crate::config::listener::DownstreamTls;

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A secret it needs is not held (yet).
    #[error("secret {0} is not available")]
    MissingSecret(String),
    /// A secret or setting is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// The verified peer certificate of a TLS connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Its URI SANs.
    pub uris: Vec<String>,
    /// Lowercase hex SHA-256 of its DER (`Hash=` of `x-forwarded-client-cert`).
    pub sha256_hex: String,
}

/// Built configurations, cached by the secrets and settings they were made from.
#[derive(Debug, Default)]
pub struct TlsCache {}

impl TlsCache {
    /// The server configuration of a chain.
    pub fn server_config(
        &self,
        _snapshot: &Snapshot,
        _tls: &DownstreamTls,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        Err(TlsError::Invalid("not built yet".into()))
    }

    /// The client configuration of a cluster's transport.
    pub fn client_config(
        &self,
        _snapshot: &Snapshot,
        _tls: &UpstreamTls,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        Err(TlsError::Invalid("not built yet".into()))
    }
}
