//! Rudder's translator: a pure, synchronous function from the mesh [`model::Model`] and a
//! proxy's [`identity::ProxyIdentity`] to the xDS resources that proxy should hold.
//!
//! It knows nothing of tokio, tonic or the Kubernetes client. The control plane calls
//! [`translate_mesh`] once per model change for what every Envoy shares (Clusters and
//! ClusterLoadAssignments), [`outbound_routes`] once per client namespace, and
//! [`translate_proxy`] for each proxy's own Listeners and inbound Clusters.
//!
//! Every emitted resource carries `refs`: the names of resources of the stage before it
//! that it points at (route -> clusters, listener -> clusters, cluster -> EDS name). The
//! server uses them to order pushes make-before-break.

pub mod encoded;
pub mod identity;
pub mod incremental;
pub mod json;
pub mod model;

mod cluster;
mod endpoint;
mod gamma;
pub mod grpc;
pub mod intercept;
mod listener;
mod names;
pub mod policy;
mod protos;
mod route;
mod routing;
pub mod tls;

use std::fmt;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

pub use names::{OUTBOUND_LISTENER, OUTBOUND_ROUTE, inbound as inbound_name, outbound_cluster};
use xds_types::XdsType;

use identity::ProxyIdentity;
use model::Model;

/// The message of one emitted resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// A Cluster.
    Cluster(Box<Cluster>),
    /// A ClusterLoadAssignment.
    Endpoint(Box<ClusterLoadAssignment>),
    /// A Listener.
    Listener(Box<Listener>),
    /// A RouteConfiguration.
    Route(Box<RouteConfiguration>),
    /// An SDS Secret.
    Secret(Box<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret>),
}

impl Body {
    /// Encodes the message as an `Any`.
    pub fn to_any(&self) -> Any {
        fn pack<T: Message + Name>(m: &T) -> Any {
            Any {
                type_url: T::type_url(),
                value: m.encode_to_vec(),
            }
        }
        match self {
            Body::Cluster(m) => pack(m.as_ref()),
            Body::Endpoint(m) => pack(m.as_ref()),
            Body::Listener(m) => pack(m.as_ref()),
            Body::Route(m) => pack(m.as_ref()),
            Body::Secret(m) => pack(m.as_ref()),
        }
    }
}

/// One emitted resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Its type.
    pub kind: XdsType,
    /// Its name.
    pub name: String,
    /// Names of the resources (of type `kind.refers_to()`) it points at.
    pub refs: Vec<String>,
    /// The objects it was made from (`Service default/web`, `TrafficSplit ...`), sorted,
    /// so a proxy's rejection can be traced back to them.
    pub sources: Vec<model::ObjectKey>,
    /// The message.
    pub body: Body,
}

/// Something the translator skipped or worked around, naming the object and field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The object, e.g. `Service default/reviews`.
    pub object: String,
    /// The field path.
    pub field: String,
    /// What happened.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

/// Resources plus what the translator had to say about the input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Emitted resources.
    pub resources: Vec<Resource>,
    /// Diagnostics, in a stable order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Mesh-wide settings the translation depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeshConfig {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// Inbound mTLS mode unless a pod overrides it (`rudder.dev/mtls-mode`).
    pub mtls: tls::MtlsMode,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: "cluster.local".into(),
            mtls: tls::MtlsMode::Strict,
        }
    }
}

/// What every Envoy sidecar shares: one Cluster and one ClusterLoadAssignment per
/// service port.
pub fn translate_mesh(model: &Model, mesh: &MeshConfig, policy: &policy::PolicyContext) -> Output {
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
/// resolve in the client's own namespace, as Kubernetes DNS does).
pub fn outbound_routes(model: &Model, policy: &policy::PolicyContext, namespace: &str) -> Output {
    route::outbound(model, policy, namespace)
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
            let view = incremental::Builder::view_key(model, proxy);
            let mut out = grpc::own(model, mesh, proxy);
            out.resources.extend(grpc_client_listeners(model, &view));
            out
        }
    }
}

/// The client Listeners of every Service a gRPC view sees.
pub fn grpc_client_listeners(model: &Model, view: &model::ViewKey) -> Vec<Resource> {
    model
        .services()
        .filter(|s| view.sees(s))
        .flat_map(|s| grpc::client_listeners(s, &view.namespace))
        .collect()
}

/// What proxyless gRPC clients share: per offered Service port a Cluster, its
/// ClusterLoadAssignment (the one Envoy gets) and a RouteConfiguration rendered from the
/// same routing model as Envoy's.
pub fn translate_grpc(model: &Model, mesh: &MeshConfig, policy: &policy::PolicyContext) -> Output {
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
        let routings = routing::port_routings(model, policy, svc);
        for (port, routing) in svc.ports.iter().zip(&routings) {
            if !grpc::offered(svc, port) {
                continue;
            }
            out.resources.push(grpc::cluster(model, mesh, svc, port));
            let (r, d) = grpc::route(routing, &svc.namespace);
            out.resources.extend(grpc::voids_of(&r));
            out.resources.push(r);
            out.diagnostics.extend(d);
        }
    }
    out
}
