//! The status both CRDs share: `observedGeneration` and conditions `Accepted` and
//! `ResolvedRefs` whose reason and message say exactly what is wrong.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Status of a mesh policy object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` and `ResolvedRefs`.
    #[serde(default)]
    pub conditions: Vec<MeshCondition>,
}

/// One condition, in the shape of `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshCondition {
    /// `Accepted` or `ResolvedRefs`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// What is wrong, naming the field.
    pub message: String,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339 time the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Reasons Rudder uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionReason {
    /// Everything is fine.
    Accepted,
    /// A spec field is invalid.
    Invalid,
    /// The object asks for something Rudder does not implement.
    Unsupported,
    /// Another object wins (e.g. an older policy for the same target).
    Conflicted,
    /// A proxy rejected config made from this object.
    Rejected,
    /// Every reference resolved.
    ResolvedRefs,
    /// A reference names an object that does not exist.
    BackendNotFound,
    /// References form a cycle (TrafficSplits nested in each other).
    RefCycle,
    /// A proxy rejected a resource this object contributes to, together with others;
    /// which one caused it is not known (yet).
    SharesRejectedResource,
    /// Gateway API: a field names something Rudder does not implement.
    UnsupportedValue,
    /// Gateway API: the parentRef names no Service, or no port of it.
    NoMatchingParent,
    /// Gateway API: a backendRef names a kind other than Service.
    InvalidKind,
    /// Gateway API: a backendRef in another namespace (no ReferenceGrant support).
    RefNotPermitted,
    /// Gateway API: a backendRef names a port that does not speak HTTP.
    UnsupportedProtocol,
}

impl ConditionReason {
    /// The reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionReason::Accepted => "Accepted",
            ConditionReason::Invalid => "Invalid",
            ConditionReason::Unsupported => "Unsupported",
            ConditionReason::Conflicted => "Conflicted",
            ConditionReason::Rejected => "Rejected",
            ConditionReason::ResolvedRefs => "ResolvedRefs",
            ConditionReason::BackendNotFound => "BackendNotFound",
            ConditionReason::RefCycle => "RefCycle",
            ConditionReason::SharesRejectedResource => "SharesRejectedResource",
            ConditionReason::UnsupportedValue => "UnsupportedValue",
            ConditionReason::NoMatchingParent => "NoMatchingParent",
            ConditionReason::InvalidKind => "InvalidKind",
            ConditionReason::RefNotPermitted => "RefNotPermitted",
            ConditionReason::UnsupportedProtocol => "UnsupportedProtocol",
        }
    }
}

/// Longest condition message kept, in characters.
pub(crate) const MESSAGE_MAX: usize = 8192;

impl MeshCondition {
    /// A condition of `type_`, true or false.
    pub fn new(type_: &str, ok: bool, reason: ConditionReason, message: impl Into<String>) -> Self {
        MeshCondition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: reason.as_str().into(),
            // A message can list many references (a route's 16 rules x 16 backends): it
            // stays well inside metav1.Condition's 32768-character limit, or the API server
            // would refuse the whole status.
            message: crate::text::clip(&message.into(), MESSAGE_MAX),
            observed_generation: None,
            last_transition_time: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_stay_inside_the_kubernetes_limit() {
        let c = MeshCondition::new(
            "ResolvedRefs",
            false,
            ConditionReason::BackendNotFound,
            "x".repeat(100_000),
        );
        assert!(
            c.message.chars().count() <= MESSAGE_MAX + 3,
            "{}",
            c.message.len()
        );
        assert!(c.message.ends_with("..."));
        let short = MeshCondition::new("Accepted", true, ConditionReason::Accepted, "accepted");
        assert_eq!(short.message, "accepted");
    }
}
