//! The names Rudder gives the resources every sidecar shares, so that the translator that
//! makes them and the tools and tests that look them up agree.

/// The outbound RouteConfiguration every Envoy sidecar's outbound listener uses.
pub const OUTBOUND_ROUTE: &str = "outbound";
/// `ROUTE/NAME`: a virtual host served apart from route table `ROUTE` over VHDS (the
/// name Envoy expects; the VirtualHost's own name is the same string).
pub fn vhds_name(route: &str, vhost: &str) -> String {
    format!("{route}/{vhost}")
}

/// The outbound listener.
pub const OUTBOUND_LISTENER: &str = "outbound";

/// `outbound|PORT||FQDN`: the Cluster (and its EDS name) of one service port.
pub fn outbound_cluster(fqdn: &str, port: u16) -> String {
    format!("outbound|{port}||{fqdn}")
}

/// `outbound|PORT|IP|FQDN`: the Cluster of one pod of a headless Service, called by its
/// own address on its own port.
pub fn pod_cluster(fqdn: &str, port: u16, ip: std::net::IpAddr) -> String {
    format!("outbound|{port}|{ip}|{fqdn}")
}

/// `inbound|PORT`: the inbound listener, route and cluster for one target port.
pub fn inbound(port: u16) -> String {
    format!("inbound|{port}")
}

/// SDS secret name of a sidecar's xDS client certificate, as its bootstrap names it (the
/// agent writes it to a file the proxy watches).
pub const XDS_CLIENT_SECRET: &str = "rudder-xds-client";
/// SDS secret name of the trust bundle a sidecar checks the control plane with.
pub const XDS_CA_SECRET: &str = "rudder-xds-ca";
