//! Names of emitted resources, in one place so that references between them agree. The
//! spelling is the xDS vocabulary's ([`xds_types::names`]); this module applies it to
//! the model's Services.

use crate::model::MeshService;

pub(crate) use xds_types::names::vhds_name;
pub use xds_types::names::{
    OUTBOUND_LISTENER, OUTBOUND_ROUTE, OUTBOUND_ROUTE_APART, inbound, outbound_route,
};

/// `outbound|PORT||NAME.NS.svc.cluster.local`: the Cluster of one service port.
pub fn outbound_cluster(svc: &MeshService, port: u16) -> String {
    xds_types::names::outbound_cluster(&svc.fqdn(), port)
}

/// `NAME.NS:PORT`: the endpoints (EDS name) of one service port's Cluster.
pub(crate) fn outbound_endpoints(svc: &MeshService, port: u16) -> String {
    xds_types::names::outbound_endpoints(&svc.name, &svc.namespace, port)
}

/// `outbound|PORT|IP|NAME.NS.svc.cluster.local`: the Cluster of one pod of a headless
/// Service, called by its own address on its own port.
pub(crate) fn pod_cluster(svc: &MeshService, port: u16, ip: std::net::IpAddr) -> String {
    xds_types::names::pod_cluster(&svc.fqdn(), port, ip)
}
