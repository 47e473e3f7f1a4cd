//! The from-scratch translation: every resource computed anew from the model, with no
//! cache. It is the oracle the incremental builder ([`crate::incremental`]) is tested
//! against (its output must equal this one's for every model), and what the goldens and
//! benchmarks run.
//!
//! The control plane calls [`translate_mesh`] for what every Envoy shares (Clusters and
//! ClusterLoadAssignments), [`outbound_routes`] once per client namespace,
//! [`translate_proxy`] for each proxy's own Listeners and inbound Clusters, and
//! [`translate_grpc`] for what proxyless gRPC clients of a namespace get.

use crate::envoy::{address, cluster, listener, route};
use crate::grpc;
use crate::identity::{self, ProxyIdentity, view_key};
use crate::mesh::MeshConfig;
use crate::model::{Model, ViewKey};
use crate::output::{Output, Resource};
use crate::policy::context::PolicyContext;
use crate::policy::port::port_routings_for;
use crate::render::endpoint;

/// What every Envoy sidecar shares: one Cluster and one ClusterLoadAssignment per
/// service port.
pub fn translate_mesh(model: &Model, mesh: &MeshConfig, policy: &PolicyContext) -> Output {
    let mut out = Output::default();
    for svc in model.services() {
        out.diagnostics.extend(cluster::service_diagnostics(svc));
        for port in &svc.ports {
            out.resources
                .push(cluster::outbound(model, mesh, policy, svc, port));
            if svc.external_name.is_none() {
                out.resources
                    .push(endpoint::load_assignment(model, svc, port));
            }
        }
        out.resources
            .extend(cluster::pod_clusters(model, mesh, svc));
    }
    out
}

/// The outbound RouteConfiguration for sidecars in `namespace` (short service names
/// resolve in the client's own namespace, as Kubernetes DNS does; the namespace's
/// consumer routes take precedence over the Services' own).
///
/// Also the route tables of the Services' HTTP ports for connections to their cluster
/// IPs (`outbound|PORT||FQDN`, which intercepted proxies use; see `envoy::address`), with
/// the same consumer routes.
pub fn outbound_routes(model: &Model, policy: &PolicyContext, namespace: &str) -> Output {
    let mut port_routes = Vec::new();
    let parts: Vec<route::VhostPart> = model
        .services()
        .flat_map(|svc| {
            let routings = port_routings_for(model, policy, svc, Some(namespace));
            let parts = route::vhost_parts(model, svc, &routings);
            port_routes.extend(address::port_routes(svc, &parts));
            parts
        })
        .collect();
    let mut out = route::assemble(parts.iter(), namespace);
    out.resources.extend(port_routes);
    out
}

/// One proxy's own resources: its outbound listener, and an inbound listener and
/// cluster for each port its pod serves.
///
/// A proxyless gRPC client gets its namespace's client Listeners (see [`grpc`]) and a
/// server Listener per port its pod serves.
pub fn translate_proxy(model: &Model, mesh: &MeshConfig, proxy: &ProxyIdentity) -> Output {
    match proxy.kind {
        identity::ProxyKind::Envoy => listener::for_proxy(model, mesh, proxy),
        identity::ProxyKind::Grpc => {
            let view = view_key(model, proxy);
            let mut out = grpc::listener::own(model, mesh, proxy);
            out.resources.extend(grpc_client_listeners(model, &view));
            out
        }
    }
}

/// The client Listeners of every Service a gRPC view sees.
pub fn grpc_client_listeners(model: &Model, view: &ViewKey) -> Vec<Resource> {
    grpc::listener::view_client_listeners(model, view)
}

/// What proxyless gRPC clients in `namespace` get: per offered Service port a Cluster,
/// its ClusterLoadAssignment (the one Envoy gets) and a RouteConfiguration rendered from
/// the same routing IR as Envoy's, with the namespace's consumer routes taking precedence
/// over the Services' own (as [`outbound_routes`] does for sidecars). None: what clients
/// in namespaces without consumer routes share.
pub fn translate_grpc(
    model: &Model,
    mesh: &MeshConfig,
    policy: &PolicyContext,
    namespace: Option<&str>,
) -> Output {
    let mut out = Output::default();
    for svc in model.services() {
        if svc.external_name.is_some() {
            continue;
        }
        // Endpoints of every port, as Envoy's (shared); the rest for offered ports only.
        for port in &svc.ports {
            out.resources
                .push(endpoint::load_assignment(model, svc, port));
        }
        let routings = port_routings_for(model, policy, svc, namespace);
        for (port, routing) in svc.ports.iter().zip(&routings) {
            if !grpc::cluster::offered(svc, port) {
                continue;
            }
            out.resources
                .push(grpc::cluster::cluster(model, mesh, svc, port));
            let (r, d) = grpc::route::route(routing, &svc.namespace);
            out.resources.extend(grpc::cluster::voids_of(&r));
            out.resources.push(r);
            out.diagnostics.extend(d);
        }
    }
    out
}
