//! The indexed mesh model: the one place every source (manifest directory, later the
//! Kubernetes watch) writes to, and the only thing the translator reads.
//!
//! ```text
//!   Service ──selects──▶ Pod (ip, labels, service account, container ports)
//!      │
//!      └──kubernetes.io/service-name◀── EndpointSlice (ready endpoints, zone)
//! ```
//!
//! Objects enter through [`Model::apply`], which validates them first: an invalid object
//! is refused with an error naming the object and field, and the previous (last good)
//! version of that object stays in the model. [`Model::delete`] removes an object.

mod convert;
mod index;
mod names;
mod objects;
mod parse;
mod pod;
mod scope;
mod store;
mod types;

pub(crate) use names::NameRule;
pub use objects::{Excluded, Kind, ModelError, NsName, Object, ObjectKey};
pub use parse::{MAX_MANIFEST_BYTES, ManifestError, ParsedManifest, parse_manifest};
pub use pod::{ContainerObject, ContainerPortObject, PodObject, PodObjectSpec, PodObjectStatus};
pub use scope::{EGRESS_ANNOTATION, EXPORT_ANNOTATION, Egress, Export, ViewKey};
pub use store::Model;
pub use types::{
    INJECT_ANNOTATION, MeshPod, MeshService, Protocol, ServicePort, Slice, SliceEndpoint,
    TargetPort, UPSTREAM_TLS_ANNOTATION, UpstreamTls,
};

pub use crds::{
    GRPCRoute, HTTPRoute, HTTPRouteGroup, RetryPolicy, TCPRoute, TrafficSplit, TrafficTarget,
};
pub use k8s_openapi::api::core::v1::Service;
pub use k8s_openapi::api::discovery::v1::EndpointSlice;

#[cfg(test)]
mod tests;
