//! What makes a client kind, as the incremental builder and the oracle drive it: a
//! [`Profile`] each emitter implements (`envoy::profile`, `grpc::profile`). The builder
//! picks one by the proxy's kind and asks it for the kind's shared Clusters of a
//! Service, a proxy's own resources, and the Listeners every proxy of a view shares;
//! a third client kind is an emitter with its profile.
//!
//! Route tables are still assembled per kind by the builder: Envoy's one table per view
//! from virtual hosts, gRPC's one RouteConfiguration per Service port.

use crate::identity::ProxyIdentity;
use crate::mesh::MeshConfig;
use crate::model::{MeshService, Model, ViewKey};
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

    /// The Listeners every proxy of `view` holds besides its own, or None when this
    /// kind has none.
    fn view_listeners(&self, model: &Model, view: &ViewKey) -> Option<Vec<Resource>>;

    /// Whether a proxy's own resources list the Services' addresses (and so are rebuilt
    /// when a Service changes, not only when its pod does).
    fn own_lists_services(&self, proxy: &ProxyIdentity) -> bool;
}
