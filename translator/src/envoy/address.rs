//! Routing by address: what a sidecar does with a connection or request addressed to a
//! Service's cluster IP or to a mesh pod's own IP, whatever its Host header says.
//!
//! - A Service's cluster IP (intercepted pods): the outbound listener has one filter
//!   chain per (cluster IP, HTTP port), whose connection manager takes its routes from
//!   that port's own RouteConfiguration, `outbound|PORT||FQDN` ([`port_routes`]): the
//!   port's virtual host with `*` as its only domain. A request to A's address carrying
//!   B's Host is routed by A's rules (Gateway API `MeshClusterIPMatching`). These tables
//!   are Service parts like the virtual hosts (built once, shared by every view that
//!   sees the Service, changed only when the port's routing changes); only proxies whose
//!   listener names them subscribe, so explicit-mode proxies never hold them. Cost: a
//!   second encoding of each HTTP port's virtual host on the server, and for an
//!   intercepted proxy one chain (about 250 bytes) per HTTP Service port in its
//!   listener, which changes only when a Service's addresses do.
//! - A mesh pod's own address (`IP:PORT` of a port some Service targets), in either
//!   mode, goes to that pod over mTLS with no Service rule applied, through one
//!   original-destination cluster every Envoy proxy holds ([`POD_ADDRESS_CLUSTER`](crate::envoy::pod_address::POD_ADDRESS_CLUSTER)):
//!   - explicit proxy: the outbound table's last virtual host (`pod_address::pod_address_vhost`,
//!     names starting with a digit or `[`, which no Service name does) sends a request
//!     whose authority is an address with a port to that address (the cluster reads the
//!     destination from `:authority`). Nothing in it lists pods, so pod churn changes
//!     neither the route table nor any listener. The price: the peer is checked as any
//!     workload of the trust domain, not as the pod's own identity, and an address that
//!     is not a mesh workload fails the handshake (503) instead of 404.
//!   - interception: the outbound listener must tell a mesh pod (mTLS) from anything
//!     else on the same port (passed through as it is), so it lists the ready in-mesh
//!     pods of the Services the view sees, one TCP chain per (pod IP, target port) to
//!     the same cluster by original destination ([`pod_targets`]). This is the one place
//!     pods are listed: an endpoint change re-sends the outbound listener to the
//!     view's intercepted proxies (about 150 bytes a pod address), and Envoy drains only
//!     the chains that changed (the connections to the pod that left). A pod of a
//!     headless Service keeps its own chain and cluster (`cluster::pod_clusters`),
//!     routed by Host with the port's retry policy.
//!
//!   An on-demand design (the listener asking for a destination's cluster when a
//!   connection arrives, as Linkerd resolves addresses) would take the pod list out of
//!   the listener; it needs the server to answer on-demand cluster requests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use xds_types::XdsType;

use crate::envoy::route::VhostPart;
use crate::model::{Kind, MeshService, Model, ObjectKey, Protocol, ServicePort};
use crate::names;
use crate::output::{Body, Resource};
use crate::render::endpoint;

/// Whether connections to `svc`'s cluster IP on `port` are routed by that port's own
/// table: an HTTP port of a Service with a cluster IP.
pub(crate) fn routed_by_address(svc: &MeshService, port: &ServicePort) -> bool {
    port.protocol != Protocol::Tcp
        && svc.cluster_ip.is_some()
        && !svc.headless
        && svc.external_name.is_none()
}

/// `outbound|PORT||FQDN`: the RouteConfiguration of one Service port, for connections to
/// its cluster IP (the same spelling as the port's Cluster; the types do not share names).
pub(crate) fn port_route_name(svc: &MeshService, port: u16) -> String {
    names::outbound_cluster(svc, port)
}

/// The RouteConfigurations of `svc`'s ports routed by address, from its virtual hosts
/// (`route::vhost_parts`, one Service part per port in order, then pod parts).
pub(crate) fn port_routes(svc: &MeshService, parts: &[VhostPart]) -> Vec<Resource> {
    svc.ports
        .iter()
        .zip(parts.iter().filter(|p| !p.pod))
        .filter(|(port, _)| routed_by_address(svc, port))
        .map(|(port, part)| {
            let name = port_route_name(svc, port.port);
            let mut refs = part.refs.clone();
            refs.sort();
            refs.dedup();
            let mut sources = part.sources.clone();
            sources.push(ObjectKey::new(Kind::Service, &svc.namespace, &svc.name));
            sources.sort();
            sources.dedup();
            Resource {
                kind: XdsType::Route,
                name: name.clone(),
                refs,
                sources,
                body: Body::Route(Box::new(RouteConfiguration {
                    name,
                    virtual_hosts: vec![VirtualHost {
                        domains: vec!["*".into()],
                        ..part.vhost.clone()
                    }],
                    ..Default::default()
                })),
            }
        })
        .collect()
}

/// The ready in-mesh pods of `svc` (not headless: those have clusters of their own) by
/// (address, target port), each with its chain name.
pub(crate) fn pod_targets(model: &Model, svc: &MeshService) -> BTreeMap<(IpAddr, u16), String> {
    let mut out = BTreeMap::new();
    if svc.headless || svc.external_name.is_some() {
        return out;
    }
    for port in &svc.ports {
        for addr in endpoint::pod_addresses(model, svc, port) {
            if addr.outside {
                continue;
            }
            let host = match addr.ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            out.entry((addr.ip, addr.port))
                .or_insert_with(|| format!("pod|{host}:{}", addr.port));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy::ClusterSpecifier as TcpCluster,
    };
    use prost::Message;

    use super::*;
    use crate::envoy::{intercept, route};
    use crate::identity::{DEFAULT_INBOUND_PORT, DEFAULT_OUTBOUND_PORT, ProxyIdentity, ProxyKind};
    use crate::model::parse_manifest;
    use crate::policy::context::PolicyContext;
    use crate::policy::port::port_routings;

    /// web (HTTP and TCP ports, a cluster IP) with a mesh pod and a pod outside the
    /// mesh, and a headless Service.
    const MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp-db, port: 5432}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: cache, namespace: shop}\nspec:\n  clusterIP: None\n  ports: [{name: http, port: 8081}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8080}, {name: tcp-db, port: 5432}]\nendpoints:\n  - addresses: [10.1.1.1]\n    targetRef: {kind: Pod, name: web-0, namespace: shop}\n  - addresses: [10.1.1.2]\n    targetRef: {kind: Pod, name: web-1, namespace: shop}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop, labels: {app: web}}\nspec: {containers: [{name: web}]}\nstatus: {podIP: 10.1.1.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop, labels: {app: web}, annotations: {rudder.dev/inject: \"false\"}}\nspec: {containers: [{name: web}]}\nstatus: {podIP: 10.1.1.2}\n";

    fn model() -> Model {
        let mut m = Model::new();
        for o in &parse_manifest(MESH).expect("manifest").objects {
            m.apply(o).expect("valid");
        }
        m
    }

    #[test]
    fn each_http_port_with_a_cluster_ip_gets_its_own_catch_all_table() {
        let m = model();
        let policy = PolicyContext::default();
        let web = m.service("shop", "web").expect("web");
        let parts = route::vhost_parts(&m, web, &port_routings(&m, &policy, web));
        let tables = port_routes(web, &parts);
        // The HTTP port only: the TCP port is a TCP chain by address already.
        assert_eq!(
            tables.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["outbound|80||web.shop.svc.cluster.local"]
        );
        let Body::Route(table) = &tables[0].body else {
            panic!("a route table");
        };
        assert_eq!(table.virtual_hosts.len(), 1);
        assert_eq!(table.virtual_hosts[0].domains, ["*"]);
        assert_eq!(table.virtual_hosts[0].routes, parts[0].vhost.routes);
        assert_eq!(tables[0].refs, ["outbound|80||web.shop.svc.cluster.local"]);
        // A headless Service has no cluster IP: nothing.
        let cache = m.service("shop", "cache").expect("cache");
        let parts = route::vhost_parts(&m, cache, &port_routings(&m, &policy, cache));
        assert!(port_routes(cache, &parts).is_empty());
    }

    fn proxy() -> ProxyIdentity {
        ProxyIdentity {
            vhds: false,
            node_id: "client".into(),
            kind: ProxyKind::Envoy,
            namespace: "shop".into(),
            pod: "client".into(),
            service_account: "client".into(),
            pod_ip: None,
            outbound_port: DEFAULT_OUTBOUND_PORT,
            app_address: IpAddr::from([127, 0, 0, 1]),
            intercepted: true,
            inbound_port: DEFAULT_INBOUND_PORT,
        }
    }

    /// (chain name, RDS table or TCP cluster) of every chain of the outbound listener.
    fn chains(m: &Model) -> Vec<(String, String)> {
        let resources = intercept::outbound(m, &proxy());
        let Body::Listener(l) = &resources[0].body else {
            panic!("the listener first");
        };
        let l: &Listener = l;
        l.filter_chains
            .iter()
            .map(|c| {
                let Some(ConfigType::TypedConfig(any)) = &c.filters[0].config_type else {
                    panic!("typed config");
                };
                let target = if let Ok(h) = HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(RouteSpecifier::Rds(rds)) = h.route_specifier
                {
                    format!("rds {}", rds.route_config_name)
                } else if let Ok(t) = TcpProxy::decode(any.value.as_slice())
                    && let Some(TcpCluster::Cluster(c)) = t.cluster_specifier
                {
                    format!("tcp {c}")
                } else {
                    panic!("neither HCM nor TCP proxy");
                };
                (c.name.clone(), target)
            })
            .collect()
    }

    #[test]
    fn an_intercepted_proxy_routes_a_cluster_ip_by_its_table_and_mesh_pods_by_address() {
        let m = model();
        let got = chains(&m);
        let has = |name: &str, target: &str| got.iter().any(|(n, t)| n == name && t == target);
        assert!(
            has(
                "web.shop.svc.cluster.local:80",
                "rds outbound|80||web.shop.svc.cluster.local"
            ),
            "{got:?}"
        );
        assert!(
            has(
                "web.shop.svc.cluster.local:5432",
                "tcp outbound|5432||web.shop.svc.cluster.local"
            ),
            "{got:?}"
        );
        // The mesh pod on both its ports; the pod outside the mesh passes through.
        assert!(has("pod|10.1.1.1:8080", "tcp pod-address"), "{got:?}");
        assert!(has("pod|10.1.1.1:5432", "tcp pod-address"), "{got:?}");
        assert!(!got.iter().any(|(n, _)| n.contains("10.1.1.2")), "{got:?}");
        // The Host router is left for the explicit port only: no Service's HTTP address
        // is routed by Host any more.
        assert!(
            got.iter()
                .filter(|(_, t)| t == "rds outbound")
                .all(|(n, _)| n == "explicit"),
            "{got:?}"
        );
    }
}
