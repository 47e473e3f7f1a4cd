//! Rudder's mesh CRDs as Rust types: the SMI `TrafficSplit` (`split.smi-spec.io/v1alpha4`,
//! wire-compatible so Flagger and Argo Rollouts can drive it) and Rudder's own
//! `RetryPolicy` (`policy.rudder.dev/v1alpha1`).
//!
//! The CRD YAML under `charts/rudder/files/crds/` is generated from these types by
//! `cargo run -p crds --bin crdgen`; a test fails when it drifts. Validation that the
//! schema can express lives in the schema (required fields, ranges, patterns, CEL);
//! [`TrafficSplitSpec::validate`] and [`RetryPolicySpec::validate`] repeat it for sources
//! without an API server (the manifest directory) and return the field path.
//!
//! [`kinds`] is the one table of the object kinds the mesh reads (group, kind, plural,
//! versions, status, who provides the CRD, whether it is watched).

pub mod duration;
#[allow(unreachable_pub)]
pub mod gateway;
pub mod gateway_validate;
pub mod kinds;
pub mod re2;
pub mod text;
// The KubeSchema derive generates items that trip `unreachable_pub`.
#[allow(unreachable_pub)]
mod retry;
#[allow(unreachable_pub)]
mod route_group;
#[allow(unreachable_pub)]
mod split;
mod status;

pub use gateway::{
    BackendRef, GRPCRoute, GRPCRouteSpec, HTTPRoute, HTTPRouteSpec, ParentReference, RouteStatus,
};
pub use retry::{
    Backoff, GRPC_RETRY_ON, HTTP_RETRY_ON, PolicyTargetRef, RetryBudget, RetryPolicy,
    RetryPolicySpec,
};
pub use route_group::{HTTPMatch, HTTPRouteGroup, HTTPRouteGroupSpec};
pub use split::{
    HTTP_ROUTE_GROUP, QUANTITY_PATTERN, SplitWeight, TrafficSplit, TrafficSplitBackend,
    TrafficSplitMatch, TrafficSplitSpec,
};
pub use status::{ConditionReason, MeshCondition, MeshStatus};

use kube::CustomResourceExt;

/// A spec field that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field path, e.g. `spec.backends[1].weight`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Whether the field is valid but asks for something Rudder does not implement
    /// (status reason `UnsupportedValue` rather than `Invalid`).
    pub unsupported: bool,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: text::bound(message),
            unsupported: false,
        }
    }

    /// A valid field Rudder does not implement.
    pub(crate) fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            unsupported: true,
            ..FieldError::new(field, message)
        }
    }
}

/// The SMI versions served: every one Flagger (`smi:v1alpha1` to `smi:v1alpha3`) and
/// Argo Rollouts write, and v1alpha4, which is stored.
pub const SMI_VERSIONS: [&str; 4] = ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"];

/// A CRD generated for v1alpha4 served at every SMI version with the same schema and
/// conversion `None`: the versions differ only in additive fields and in v1alpha1's
/// quantity weights, which the one schema accepts (an int-or-string) and Rudder reads
/// ([`TrafficSplitSpec::weights`]). No conversion webhook, so the API server never
/// depends on Rudder to serve these objects.
pub fn smi_multi_version(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceConversion;
    let mut crd = crd;
    let Some(template) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    crd.spec.versions = SMI_VERSIONS
        .iter()
        .map(|v| {
            let mut version = template.clone();
            version.name = v.to_string();
            version.storage = *v == "v1alpha4";
            version.served = true;
            version
        })
        .collect();
    crd.spec.conversion = Some(CustomResourceConversion {
        strategy: "None".into(),
        webhook: None,
    });
    crd
}

/// Every CRD Rudder serves, as `(file name, YAML)`, in a stable order.
pub fn crd_documents() -> Vec<(&'static str, String)> {
    let docs = [
        (
            "trafficsplits.split.smi-spec.io.yaml",
            serde_json::to_value(smi_multi_version(TrafficSplit::crd())),
        ),
        (
            "retrypolicies.policy.rudder.dev.yaml",
            serde_json::to_value(RetryPolicy::crd()),
        ),
        (
            "httproutegroups.specs.smi-spec.io.yaml",
            serde_json::to_value(smi_multi_version(HTTPRouteGroup::crd())),
        ),
    ];
    docs.into_iter()
        .map(|(name, value)| {
            let yaml = value
                .ok()
                .and_then(|v| serde_saphyr::to_string(&v).ok())
                .unwrap_or_default();
            (
                name,
                format!("# Generated by `cargo run -p crds --bin crdgen`. Do not edit.\n{yaml}"),
            )
        })
        .collect()
}
