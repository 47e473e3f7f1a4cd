//! `TrafficSplit`, `split.smi-spec.io/v1alpha4`: requests for the apex `spec.service`
//! are shared among `spec.backends` by weight.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{FieldError, MeshStatus};

/// The only match kind Rudder implements.
pub const HTTP_ROUTE_GROUP: &str = "HTTPRouteGroup";

/// Most backends one TrafficSplit may list.
pub const MAX_BACKENDS: usize = 64;

/// Splits traffic for one Service among backend Services by weight.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha4",
    kind = "TrafficSplit",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "ts",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backends.map(b, b.weight).sum() <= 4294967295").message("the weights must sum to at most 4294967295 (Envoy's limit)"))]
pub struct TrafficSplitSpec {
    /// The apex Service clients call.
    #[schemars(length(min = 1))]
    pub service: String,
    /// The Services that share its traffic.
    #[schemars(length(min = 1, max = 64))]
    pub backends: Vec<TrafficSplitBackend>,
    /// Optional HTTPRouteGroup references: only matching requests are split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TrafficSplitMatch>,
}

/// One backend and its weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitBackend {
    /// A Service in the same namespace.
    #[schemars(length(min = 1))]
    pub service: String,
    /// Relative weight; 0 drains the backend.
    #[schemars(range(min = 0, max = 4294967295_i64))]
    pub weight: i64,
}

/// A typed reference to a match definition (SMI: `TypedLocalObjectReference`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitMatch {
    /// API group of the referenced object (`specs.smi-spec.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind of the referenced object.
    pub kind: String,
    /// Name of the referenced object.
    pub name: String,
}

impl TrafficSplitSpec {
    /// Checks what the schema checks, for sources without an API server.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.service.is_empty() {
            return Err(FieldError::new("spec.service", "is required"));
        }
        if self.backends.is_empty() {
            return Err(FieldError::new(
                "spec.backends",
                "needs at least one backend",
            ));
        }
        if self.backends.len() > MAX_BACKENDS {
            return Err(FieldError::new(
                "spec.backends",
                format!("{} backends; at most {MAX_BACKENDS}", self.backends.len()),
            ));
        }
        let mut sum: i64 = 0;
        for (i, b) in self.backends.iter().enumerate() {
            if b.service.is_empty() {
                return Err(FieldError::new(
                    format!("spec.backends[{i}].service"),
                    "is required",
                ));
            }
            if b.weight < 0 {
                return Err(FieldError::new(
                    format!("spec.backends[{i}].weight"),
                    format!("{} is negative", b.weight),
                ));
            }
            if b.weight > i64::from(u32::MAX) {
                return Err(FieldError::new(
                    format!("spec.backends[{i}].weight"),
                    format!("{} is above {} (Envoy's limit)", b.weight, u32::MAX),
                ));
            }
            sum += b.weight;
        }
        if sum > i64::from(u32::MAX) {
            return Err(FieldError::new(
                "spec.backends",
                format!(
                    "the weights sum to {sum}, above {} (Envoy's limit)",
                    u32::MAX
                ),
            ));
        }
        Ok(())
    }

    /// Whether every weight is 0: nothing to route to. The object is kept (so its
    /// status can say so) but the last good routing stays in effect.
    pub fn all_weights_zero(&self) -> bool {
        self.backends.iter().all(|b| b.weight == 0)
    }

    /// Match references of a kind Rudder does not implement: (index, kind).
    pub fn unsupported_matches(&self) -> Vec<(usize, String)> {
        self.matches
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind != HTTP_ROUTE_GROUP)
            .map(|(i, m)| (i, m.kind.clone()))
            .collect()
    }
}
