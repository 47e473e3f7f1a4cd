//! The Envoy sidecar as a client kind: its Clusters per Service port (and per pod of a
//! headless Service), its own Listeners and inbound Clusters, no Listeners shared per view.

use crate::envoy::{cluster, listener};
use crate::identity::ProxyIdentity;
use crate::mesh::MeshConfig;
use crate::model::{MeshService, Model};
use crate::output::{Output, Resource};
use crate::policy::context::PolicyContext;
use crate::render::profile::Profile;

/// The Envoy profile.
pub(crate) struct Envoy;

impl Profile for Envoy {
    fn service_clusters(
        &self,
        model: &Model,
        mesh: &MeshConfig,
        policy: &PolicyContext,
        svc: &MeshService,
    ) -> Vec<Resource> {
        svc.ports
            .iter()
            .map(|p| cluster::outbound(model, mesh, policy, svc, p))
            .chain(cluster::pod_clusters(model, mesh, svc))
            .collect()
    }

    fn own(&self, model: &Model, mesh: &MeshConfig, proxy: &ProxyIdentity) -> Output {
        listener::for_proxy(model, mesh, proxy)
    }

    fn service_listeners(&self, _svc: &MeshService, _client_ns: &str) -> Vec<Resource> {
        Vec::new()
    }

    fn own_lists_services(&self, proxy: &ProxyIdentity) -> bool {
        // An intercepted proxy's outbound listener matches the Services' addresses.
        proxy.intercepted
    }
}
