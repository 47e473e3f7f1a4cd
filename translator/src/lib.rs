//! Rudder's translator: a pure, synchronous function from the mesh [`model::Model`] and a
//! proxy's [`identity::ProxyIdentity`] to the xDS resources that proxy should hold.
//!
//! It knows nothing of tokio, tonic or the Kubernetes client. The control plane keeps an
//! [`incremental::Builder`]; the from-scratch functions ([`translate_mesh`],
//! [`outbound_routes`], [`translate_proxy`], [`translate_grpc`]) are the oracle it is
//! tested against.
//!
//! Every emitted resource carries `refs`: the names of resources of the stage before it
//! that it points at (route -> clusters, listener -> clusters, cluster -> EDS name). The
//! server uses them to order pushes make-before-break.
//!
//! Layers, bottom up; a module imports only from its own layer or lower ones:
//! 1. types and the model: [`output`], [`mesh`], [`model`], [`identity`], `names`,
//!    `serving`, [`encoded`], [`json`];
//! 2. the proxy-neutral routing IR: `routing`;
//! 3. resolvers, model to IR: [`policy`], `gamma`;
//! 4. rendering both emitters share: `render`;
//! 5. emitters, one per client kind: `envoy` (re-exported as [`tls`], [`intercept`]),
//!    [`grpc`]; and [`status`] of the mesh's objects;
//! 6. the [`incremental`] builder and the from-scratch `oracle`.

pub mod encoded;
pub mod identity;
pub mod json;
pub mod mesh;
pub mod model;
mod names;
pub mod output;
mod serving;

mod routing;

mod gamma;
pub mod policy;

mod render;

mod envoy;
pub mod grpc;
pub mod status;

pub mod incremental;
mod oracle;

pub use envoy::{intercept, tls};
pub use mesh::MeshConfig;
pub use names::{
    OUTBOUND_LISTENER, OUTBOUND_ROUTE, OUTBOUND_ROUTE_APART, inbound as inbound_name,
    outbound_cluster, outbound_route,
};
pub use oracle::{
    grpc_client_listeners, outbound_routes, translate_grpc, translate_mesh, translate_proxy,
};
pub use output::{Body, Diagnostic, Output, Resource};
pub use routing::authz;
