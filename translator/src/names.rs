//! Names of emitted resources, in one place so that references between them agree.

use crate::model::MeshService;

/// The outbound RouteConfiguration every Envoy sidecar's outbound listener uses.
pub const OUTBOUND_ROUTE: &str = "outbound";
/// The outbound listener.
pub const OUTBOUND_LISTENER: &str = "outbound";

/// `outbound|PORT||NAME.NS.svc.cluster.local`: the Cluster (and its EDS name) of one
/// service port.
pub fn outbound_cluster(svc: &MeshService, port: u16) -> String {
    format!("outbound|{port}||{}", svc.fqdn())
}

/// `outbound|PORT|IP|NAME.NS.svc.cluster.local`: the Cluster of one pod of a headless
/// Service, called by its own address on its own port.
pub(crate) fn pod_cluster(svc: &MeshService, port: u16, ip: std::net::IpAddr) -> String {
    format!("outbound|{port}|{ip}|{}", svc.fqdn())
}

/// `inbound|PORT`: the inbound listener, route and cluster for one target port.
pub fn inbound(port: u16) -> String {
    format!("inbound|{port}")
}
