//! The Envoy emitter on small routing IRs: a share with no backend fails with the rule's
//! status, and a TCP port is a CONNECT tunnel to where its last rule goes. An
//! intercepted IPv6 pod's inbound side. The outbound listeners name the table of the
//! proxy's shape.

use envoy_types::pb::envoy::config::route::v3::{
    route::Action,
    route_action::{ClusterNotFoundResponseCode, ClusterSpecifier},
};

use crate::envoy::route::vhost_parts;
use crate::model::{Kind, Model, ObjectKey, parse_manifest};
use crate::render::route::NO_BACKEND_CLUSTER;
use crate::routing::ir::{Backend, Dest, PortRouting, Rule, RuleExtra};

const WEB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  ports: [{name: http, port: 80}, {name: db, port: 5432, appProtocol: tcp}]\n";

fn model() -> Model {
    let mut m = Model::new();
    for o in &parse_manifest(WEB).expect("manifest").objects {
        m.apply(o).expect("valid");
    }
    m
}

fn routing(m: &Model, port: usize, rules: Vec<Rule>) -> PortRouting {
    let svc = m.service("shop", "web").expect("web");
    PortRouting {
        name: format!("{}:{}", svc.fqdn(), svc.ports[port].port),
        protocol: svc.ports[port].protocol,
        rules,
        retry: None,
        timeout: None,
        refs: Vec::new(),
        sources: vec![ObjectKey::new(Kind::Service, "shop", "web")],
        backends: Vec::new(),
    }
}

#[test]
fn a_share_with_no_backend_fails_with_the_rules_status() {
    let m = model();
    let svc = m.service("shop", "web").expect("web");
    let rule = Rule {
        matches: None,
        dest: Dest::Weighted(vec![
            (Backend::Cluster("a".into()), 1),
            (Backend::Missing, 1),
        ]),
        extra: Some(Box::new(RuleExtra {
            no_backend_status: 500,
            ..Default::default()
        })),
    };
    let tcp = Rule {
        matches: None,
        dest: Dest::Cluster("db".into()),
        extra: None,
    };
    let parts = vhost_parts(
        &m,
        svc,
        &[routing(&m, 0, vec![rule]), routing(&m, 1, vec![tcp])],
    );
    let Some(Action::Route(a)) = &parts[0].vhost.routes[0].action else {
        panic!("{:?}", parts[0].vhost)
    };
    assert_eq!(
        a.cluster_not_found_response_code,
        ClusterNotFoundResponseCode::InternalServerError as i32
    );
    let Some(ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else {
        panic!("{a:?}")
    };
    let names: Vec<&str> = w.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["a", NO_BACKEND_CLUSTER]);
}

#[test]
fn a_tcp_port_tunnels_to_where_its_last_rule_goes() {
    let m = model();
    let svc = m.service("shop", "web").expect("web");
    let http = Rule {
        matches: None,
        dest: Dest::Cluster("web".into()),
        extra: None,
    };
    let rules = vec![
        Rule {
            matches: Some(crate::routing::ir::Match {
                path: crate::routing::ir::PathMatch::Prefix("/x".into()),
                headers: Vec::new(),
                query: Vec::new(),
                methods: Vec::new(),
            }),
            dest: Dest::Cluster("canary".into()),
            extra: None,
        },
        Rule {
            matches: None,
            dest: Dest::Cluster("primary".into()),
            extra: None,
        },
    ];
    let parts = vhost_parts(
        &m,
        svc,
        &[routing(&m, 0, vec![http]), routing(&m, 1, rules)],
    );
    let tunnel = &parts[1].vhost.routes;
    assert_eq!(tunnel.len(), 1);
    let Some(Action::Route(a)) = &tunnel[0].action else {
        panic!("{tunnel:?}")
    };
    assert_eq!(
        a.cluster_specifier,
        Some(ClusterSpecifier::Cluster("primary".into()))
    );
    assert!(parts[1].domains.iter().all(|(d, _)| d.ends_with(":5432")));
}

/// An intercepted pod with an IPv6 address: its inbound listener takes IPv6 (the rules
/// redirect to `[::1]`), and it hands connections to the app at the pod's address from
/// `::6` (listed beside 127.0.0.6: Envoy picks by the upstream's family).
#[test]
fn an_intercepted_ipv6_pod_listens_and_reaches_its_app_on_ipv6() {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};

    use crate::identity::{DEFAULT_INBOUND_PORT, DEFAULT_OUTBOUND_PORT, POD_ADDRESS};
    use crate::identity::{ProxyIdentity, ProxyKind};
    use crate::output::Body;

    let manifest = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  clusterIP: fd00:96::10\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop, labels: {app: web}}\nspec: {serviceAccountName: web, containers: [{name: web}]}\nstatus: {podIP: \"fd00:1::1\"}\n";
    let mut m = Model::new();
    for o in &parse_manifest(manifest).expect("manifest").objects {
        m.apply(o).expect("valid");
    }
    let proxy = ProxyIdentity {
        vhds: false,
        node_id: "web-0.shop".into(),
        kind: ProxyKind::Envoy,
        namespace: "shop".into(),
        pod: "web-0".into(),
        service_account: "web".into(),
        pod_ip: None,
        outbound_port: DEFAULT_OUTBOUND_PORT,
        app_address: POD_ADDRESS,
        intercepted: true,
        inbound_port: DEFAULT_INBOUND_PORT,
    };
    let out = crate::envoy::listener::for_proxy(&m, &Default::default(), &proxy);
    let socket = |a: &Option<envoy_types::pb::envoy::config::core::v3::Address>| match a
        .as_ref()
        .and_then(|a| a.address.as_ref())
    {
        Some(address::Address::SocketAddress(s)) => match s.port_specifier {
            Some(PortSpecifier::PortValue(p)) => format!("{}:{p}", s.address),
            _ => panic!("a port"),
        },
        _ => panic!("a socket address"),
    };
    let find = |name: &str| {
        out.resources
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} in {:?}", out.resources))
    };
    let Body::Listener(l) = &find("inbound").body else {
        panic!("a listener");
    };
    assert_eq!(socket(&l.address), ":::15006");
    let Body::Cluster(c) = &find("inbound|8080").body else {
        panic!("a cluster");
    };
    let la = c.load_assignment.as_ref().expect("endpoints");
    let ep = &la.endpoints[0].lb_endpoints[0];
    let Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
        e,
    )) = &ep.host_identifier
    else {
        panic!("an endpoint");
    };
    assert_eq!(socket(&e.address), "fd00:1::1:8080");
    let bind = c.upstream_bind_config.as_ref().expect("a source address");
    let sources: Vec<&str> = bind
        .source_address
        .iter()
        .chain(
            bind.extra_source_addresses
                .iter()
                .filter_map(|x| x.address.as_ref()),
        )
        .map(|s| s.address.as_str())
        .collect();
    assert_eq!(sources, ["127.0.0.6", "::6"]);
}

/// Every outbound HTTP connection manager names the table of the proxy's shape: whole
/// (`outbound`) or apart (`outbound-vhds`), the one its view builds; per-port tables
/// (`outbound|PORT||FQDN`) are the same in both. Explicit and intercepted alike.
#[test]
fn the_outbound_listeners_name_the_table_of_the_proxys_shape() {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    use prost::Message;

    use crate::identity::{
        DEFAULT_INBOUND_PORT, DEFAULT_OUTBOUND_PORT, POD_ADDRESS, ProxyIdentity, ProxyKind,
        view_key,
    };
    use crate::output::Body;

    let mut m = model();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: c-0, namespace: shop}\nspec: {serviceAccountName: c, containers: [{name: c}]}\nstatus: {podIP: 10.0.0.7}\n";
    for o in &parse_manifest(pod).expect("manifest").objects {
        m.apply(o).expect("valid");
    }
    for (intercepted, vhds) in [(false, false), (false, true), (true, false), (true, true)] {
        let proxy = ProxyIdentity {
            vhds,
            intercepted,
            kind: ProxyKind::Envoy,
            namespace: "shop".into(),
            pod: "c-0".into(),
            node_id: "c-0.shop".into(),
            service_account: "c".into(),
            pod_ip: None,
            outbound_port: DEFAULT_OUTBOUND_PORT,
            app_address: POD_ADDRESS,
            inbound_port: DEFAULT_INBOUND_PORT,
        };
        assert_eq!(view_key(&m, &proxy).vhds, vhds);
        let out = crate::envoy::listener::for_proxy(&m, &Default::default(), &proxy);
        let mut tables = std::collections::BTreeSet::new();
        for r in &out.resources {
            let Body::Listener(l) = &r.body else { continue };
            for f in l.filter_chains.iter().flat_map(|c| &c.filters) {
                let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if !any.type_url.ends_with("HttpConnectionManager") {
                    continue;
                }
                let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
                if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                    tables.insert(rds.route_config_name);
                }
            }
        }
        tables.retain(|t| !t.contains('|'));
        let want = if vhds { "outbound-vhds" } else { "outbound" };
        assert_eq!(
            tables.into_iter().collect::<Vec<_>>(),
            [want],
            "intercepted {intercepted}, vhds {vhds}"
        );
        assert_eq!(proxy.outbound_route(), want);
    }
}
