//! Rudder's mesh CRDs as Rust types: the SMI `TrafficSplit` (`split.smi-spec.io/v1alpha4`,
//! wire-compatible so Flagger and Argo Rollouts can drive it), `HTTPRouteGroup` and
//! `TCPRoute`, the SMI `TrafficTarget` (`access.smi-spec.io`, authorization) and Rudder's
//! own `RetryPolicy` (`policy.rudder.dev/v1alpha1`).
//!
//! The CRD YAML under `charts/rudder/files/crds/` and `charts/rudder-crds/files/crds/` is
//! generated from these types by
//! `cargo run -p crds --bin crdgen`; a test fails when it drifts. Validation that the
//! schema can express lives in the schema (required fields, ranges, patterns, CEL);
//! [`TrafficSplitSpec::validate`] and [`RetryPolicySpec::validate`] repeat it for sources
//! without an API server (the manifest directory) and return the field path.
//!
//! [`kinds`] is the one table of the object kinds the mesh reads (group, kind, plural,
//! versions, status, who provides the CRD, whether it is watched).

// The CustomResource derive generates items that trip `unreachable_pub`.
#[allow(unreachable_pub)]
mod access;
mod documents;
pub mod duration;
mod error;
#[allow(unreachable_pub)]
pub mod gateway;
pub mod gateway_validate;
pub mod kinds;
pub mod re2;
mod served;
pub mod text;
// The KubeSchema derive generates items that trip `unreachable_pub`.
#[allow(unreachable_pub)]
mod retry;
#[allow(unreachable_pub)]
mod route_group;
#[allow(unreachable_pub)]
mod split;
mod status;

pub use access::{
    ACCESS_GROUP, ACCESS_VERSIONS, DRY_RUN_ANNOTATION, IdentitySubject, RULE_HTTP, RULE_TCP,
    SERVICE_ACCOUNT, TCPMatch, TCPRoute, TCPRouteSpec, TrafficTarget, TrafficTargetRule,
    TrafficTargetShape, TrafficTargetSpec, port_of, traffic_target_crd,
};
pub use documents::{CHART_CRD_DIRS, SMI_VERSIONS, crd_documents, smi_multi_version};
pub use error::FieldError;
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
