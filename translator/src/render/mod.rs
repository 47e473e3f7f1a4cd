//! Rendering both emitters share (Envoy and proxyless gRPC take the same xDS messages):
//! proto builders ([`protos`]), ClusterLoadAssignments ([`endpoint`]) and route matches,
//! names and destinations ([`route`]), and RBAC from the authorization rules ([`rbac`]).

pub(crate) mod endpoint;
pub(crate) mod profile;
pub(crate) mod protos;
pub(crate) mod rbac;
pub(crate) mod route;
