//! What makes a client kind, as the incremental builder and the oracle drive it: a
//! [`Profile`] each emitter implements (`envoy::profile`, `grpc::profile`). The builder
//! picks one by the proxy's kind and asks it for the kind's shared Clusters and
//! Listeners of a Service, and a proxy's own resources;
//! a third client kind is an emitter with its profile.
//!
//! Route tables are still assembled per kind by the builder: Envoy's one table per view
//! from virtual hosts, gRPC's one RouteConfiguration per Service port.

use crate::identity::ProxyIdentity;
use crate::mesh::MeshConfig;
use crate::model::{MeshService, Model};
use crate::output::{Output, Resource};
use crate::policy::context::PolicyContext;

/// One client kind's rendering.
pub(crate) trait Profile: Sync {
    /// The Clusters of one Service that every proxy of this kind in a view sharing it
    /// holds.
    fn service_clusters(
        &self,
        model: &Model,
        mesh: &MeshConfig,
        policy: &PolicyContext,
        svc: &MeshService,
    ) -> Vec<Resource>;

    /// A proxy's own resources (Listeners and Clusters no other proxy holds).
    fn own(&self, model: &Model, mesh: &MeshConfig, proxy: &ProxyIdentity) -> Output;

    /// The Listeners of one Service that every proxy of this kind in a view of
    /// `client_ns` that sees it holds besides its own (gRPC's client Listeners; none for
    /// Envoy).
    fn service_listeners(&self, svc: &MeshService, client_ns: &str) -> Vec<Resource>;

    /// Whether a proxy's own resources list the Services' addresses (and so are rebuilt
    /// when a Service changes, not only when its pod does).
    fn own_lists_services(&self, proxy: &ProxyIdentity) -> bool;
}
