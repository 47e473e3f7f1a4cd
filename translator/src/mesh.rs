//! Mesh-wide settings the translation depends on ([`MeshConfig`]), the inbound mTLS
//! mode ([`MtlsMode`]) a pod may override, and what a destination without a
//! TrafficTarget allows ([`InboundDefault`], per mesh, namespace and pod).

use std::collections::BTreeMap;

/// The namespace of the control plane: its identities are never denied.
pub const CONTROL_PLANE_NAMESPACE: &str = "rudder-system";

/// Pod annotation choosing what a destination without a TrafficTarget allows.
pub const DEFAULT_INBOUND_ANNOTATION: &str = "rudder.dev/default-inbound-policy";

/// Mesh-wide settings the translation depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshConfig {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// Inbound mTLS mode unless a pod overrides it (`rudder.dev/mtls-mode`).
    pub mtls: MtlsMode,
    /// What a destination without a TrafficTarget allows, unless its namespace or pod
    /// says otherwise.
    pub inbound_default: InboundDefault,
    /// Per-namespace choices of [`MeshConfig::inbound_default`].
    pub namespace_inbound: BTreeMap<String, InboundDefault>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: "cluster.local".into(),
            mtls: MtlsMode::Strict,
            inbound_default: InboundDefault::Allow,
            namespace_inbound: BTreeMap::new(),
        }
    }
}

impl MeshConfig {
    /// What a destination in `namespace` without a TrafficTarget allows, unless its pod
    /// says otherwise (`pod`: its annotation's choice).
    pub fn inbound_default_for(
        &self,
        namespace: &str,
        pod: Option<InboundDefault>,
    ) -> InboundDefault {
        pod.or_else(|| self.namespace_inbound.get(namespace).copied())
            .unwrap_or(self.inbound_default)
    }
}

/// What a destination without a TrafficTarget allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InboundDefault {
    /// Every caller (the default: turning authorization on breaks nothing).
    #[default]
    Allow,
    /// Only the control plane's identities.
    Deny,
}

impl InboundDefault {
    /// Parses `allow` / `deny`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(InboundDefault::Allow),
            "deny" => Some(InboundDefault::Deny),
            _ => None,
        }
    }

    /// `allow` / `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            InboundDefault::Allow => "allow",
            InboundDefault::Deny => "deny",
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
