//! Why a TLS configuration cannot be built (shared by the cache and the verifiers).

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
