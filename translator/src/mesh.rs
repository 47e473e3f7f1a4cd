//! Mesh-wide settings the translation depends on ([`MeshConfig`]) and the inbound mTLS
//! mode ([`MtlsMode`]) a pod may override.

/// Mesh-wide settings the translation depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshConfig {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// Inbound mTLS mode unless a pod overrides it (`rudder.dev/mtls-mode`).
    pub mtls: MtlsMode,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: "cluster.local".into(),
            mtls: MtlsMode::Strict,
        }
    }
}

/// How inbound listeners treat plain text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MtlsMode {
    /// Only mutual TLS is accepted (the default).
    #[default]
    Strict,
    /// Mutual TLS and plain text are both accepted, for migration.
    Permissive,
}

impl MtlsMode {
    /// Parses `strict` / `permissive` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "strict" => Some(MtlsMode::Strict),
            "permissive" => Some(MtlsMode::Permissive),
            _ => None,
        }
    }
}
