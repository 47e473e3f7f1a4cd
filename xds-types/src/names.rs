//! The names Rudder gives the resources every sidecar shares, so that the translator that
//! makes them and the tools and tests that look them up agree.

/// The outbound RouteConfiguration every Envoy sidecar's outbound listener uses, with
/// every virtual host in it.
pub const OUTBOUND_ROUTE: &str = "outbound";
/// The outbound RouteConfiguration of an Envoy that takes its virtual hosts apart (VHDS).
///
/// It is named apart from [`OUTBOUND_ROUTE`] so that a move between the two shapes is a
/// new table to Envoy: the listener that names it warms until the table and its first
/// virtual hosts have arrived, while the old listener keeps serving with the old table.
/// Under one name, Envoy would serve a table that asks for its hosts before it had them.
pub const OUTBOUND_ROUTE_APART: &str = "outbound-vhds";

/// Whether route table `name` is one that asks for its virtual hosts apart: the only
/// table whose hosts ([`vhds_name`]) Rudder serves.
pub fn asks_hosts_apart(name: &str) -> bool {
    name == OUTBOUND_ROUTE_APART
}

/// The outbound table of a sidecar that takes its virtual hosts apart (`apart`) or not.
pub fn outbound_route(apart: bool) -> &'static str {
    if apart {
        OUTBOUND_ROUTE_APART
    } else {
        OUTBOUND_ROUTE
    }
}

/// `ROUTE/NAME`: a virtual host served apart from route table `ROUTE` over VHDS (the
/// name Envoy expects; the VirtualHost's own name is the same string).
pub fn vhds_name(route: &str, vhost: &str) -> String {
    format!("{route}/{vhost}")
}

/// The route table a virtual host served apart belongs to ([`vhds_name`]'s `ROUTE`).
pub fn vhds_table(name: &str) -> &str {
    name.split_once('/').map_or(name, |(table, _)| table)
}

/// The outbound listener.
pub const OUTBOUND_LISTENER: &str = "outbound";

/// `outbound|PORT||FQDN`: the Cluster of one service port.
pub fn outbound_cluster(fqdn: &str, port: u16) -> String {
    format!("outbound|{port}||{fqdn}")
}

/// `NAME.NAMESPACE:PORT`: the endpoints (the EDS name, the Cluster's `service_name`) of
/// one service port. Short on purpose: a SotW proxy repeats every EDS name it holds in
/// each EDS request it sends. One-to-one with the Cluster: a Service's name and
/// namespace are DNS labels, without dots.
pub fn outbound_endpoints(name: &str, namespace: &str, port: u16) -> String {
    format!("{name}.{namespace}:{port}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_host_apart_names_its_table_and_the_shapes_differ() {
        let host = vhds_name(OUTBOUND_ROUTE_APART, "web.shop.svc.cluster.local:80");
        assert_eq!(host, "outbound-vhds/web.shop.svc.cluster.local:80");
        assert_eq!(vhds_table(&host), OUTBOUND_ROUTE_APART);
        assert_eq!(
            vhds_table(&vhds_name(OUTBOUND_ROUTE, "a:80")),
            OUTBOUND_ROUTE
        );
        assert_eq!(outbound_route(true), OUTBOUND_ROUTE_APART);
        assert_eq!(outbound_route(false), OUTBOUND_ROUTE);
        assert_ne!(OUTBOUND_ROUTE, OUTBOUND_ROUTE_APART);
        assert!(asks_hosts_apart(OUTBOUND_ROUTE_APART));
        assert!(!asks_hosts_apart(OUTBOUND_ROUTE) && !asks_hosts_apart("outbound|80||a"));
    }
}
