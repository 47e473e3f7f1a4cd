//! Proxyless gRPC as a client kind: a Cluster per offered Service port, server Listeners
//! per port its pod serves, and the client Listeners every gRPC proxy of a view shares.

use crate::grpc::{cluster, listener};
use crate::identity::ProxyIdentity;
use crate::mesh::MeshConfig;
use crate::model::{MeshService, Model};
use crate::output::{Output, Resource};
use crate::policy::context::PolicyContext;
use crate::render::profile::Profile;

/// The proxyless gRPC profile.
pub(crate) struct Grpc;

impl Profile for Grpc {
    fn service_clusters(
        &self,
        model: &Model,
        mesh: &MeshConfig,
        _policy: &PolicyContext,
        svc: &MeshService,
    ) -> Vec<Resource> {
        svc.ports
            .iter()
            .filter(|p| cluster::offered(svc, p))
            .map(|p| cluster::cluster(model, mesh, svc, p))
            .collect()
    }

    fn own(&self, model: &Model, mesh: &MeshConfig, proxy: &ProxyIdentity) -> Output {
        listener::own(model, mesh, proxy)
    }

    fn service_listeners(&self, svc: &MeshService, client_ns: &str) -> Vec<Resource> {
        listener::client_listeners(svc, client_ns)
    }

    fn own_lists_services(&self, _proxy: &ProxyIdentity) -> bool {
        // Its server listeners do not; the client Listeners are its view's.
        false
    }
}
