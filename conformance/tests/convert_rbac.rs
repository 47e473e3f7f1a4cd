//! Listeners with RBAC filters, as the control plane emits them for SMI TrafficTarget
//! authorization: the HTTP filter before the router, the network filter before
//! `tcp_proxy`; and the placements and rules the proxy refuses, by path.

use std::collections::HashMap;

use conformance::config::listener::{
    HttpFilter, Listener as ProxyListener, NetworkFilter, Terminal,
};
use conformance::convert::{ConvertError, Converted, convert};
use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as Rules, permission, principal,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter as PbHttpFilter, http_connection_manager::RouteSpecifier,
    http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use xds_types::XdsType;

fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

/// ALLOW: `spiffe://TD/ns/shop/sa/web` may do anything.
fn rules(action: i32) -> Rules {
    let web = Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact("spiffe://TD/ns/shop/sa/web".into())),
                    ..Default::default()
                }),
            },
        )),
    };
    Rules {
        action,
        policies: HashMap::from([(
            "TrafficTarget shop/allow-web".to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals: vec![web],
                ..Default::default()
            },
        )]),
        ..Default::default()
    }
}

fn http_rbac(m: &HttpRbac) -> PbHttpFilter {
    PbHttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(m))),
        ..Default::default()
    }
}

fn router() -> PbHttpFilter {
    PbHttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    }
}

fn network(name: &str, typed: Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(typed)),
    }
}

fn hcm(http_filters: Vec<PbHttpFilter>) -> Filter {
    network(
        "envoy.filters.network.http_connection_manager",
        any(&HttpConnectionManager {
            stat_prefix: "inbound_8080".into(),
            route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
                name: "inbound".into(),
                ..Default::default()
            })),
            http_filters,
            ..Default::default()
        }),
    )
}

fn tcp_proxy() -> Filter {
    network(
        "envoy.filters.network.tcp_proxy",
        any(&TcpProxy {
            stat_prefix: "inbound_5432".into(),
            cluster_specifier: Some(ClusterSpecifier::Cluster("inbound|5432".into())),
            ..Default::default()
        }),
    )
}

fn network_rbac(m: &NetworkRbac) -> Filter {
    network("envoy.filters.network.rbac", any(m))
}

fn tcp_rbac() -> NetworkRbac {
    NetworkRbac {
        rules: Some(rules(0)),
        stat_prefix: "inbound_5432".into(),
        ..Default::default()
    }
}

fn listener(filters: Vec<Filter>) -> Any {
    any(&Listener {
        name: "inbound".into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".into(),
                port_specifier: Some(PortSpecifier::PortValue(15006)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters,
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn accepted(a: &Any) -> ProxyListener {
    match convert(XdsType::Listener, a) {
        Ok((_, Converted::Listener(l))) => l,
        Ok((_, other)) => panic!("not a listener: {other:?}"),
        Err(e) => panic!("refused: {e}"),
    }
}

fn refused(a: &Any) -> ConvertError {
    match convert(XdsType::Listener, a) {
        Ok((name, c)) => panic!("{name} was accepted: {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn an_http_rbac_filter_before_the_router_converts() {
    let enforced = HttpRbac {
        rules: Some(rules(0)),
        ..Default::default()
    };
    let dry_run = HttpRbac {
        shadow_rules: Some(rules(0)),
        ..Default::default()
    };
    let l = accepted(&listener(vec![hcm(vec![
        http_rbac(&enforced),
        http_rbac(&dry_run),
        router(),
    ])]));
    let Terminal::Http(m) = &l.chains[0].terminal else {
        panic!("not HTTP");
    };
    assert!(l.chains[0].filters.is_empty());
    assert!(
        matches!(&m.filters[0], HttpFilter::Rbac(r) if r.rules.is_some() && r.shadow.is_none())
    );
    assert!(
        matches!(&m.filters[1], HttpFilter::Rbac(r) if r.rules.is_none() && r.shadow.is_some())
    );
    assert!(matches!(&m.filters[2], HttpFilter::Router));
}

#[test]
fn an_http_rbac_filter_after_the_router_or_optional_or_logging_is_refused() {
    let enforced = HttpRbac {
        rules: Some(rules(0)),
        ..Default::default()
    };
    let e = refused(&listener(vec![hcm(vec![router(), http_rbac(&enforced)])]));
    assert_eq!(
        e.path,
        "filter_chains[0].filters[0].typed_config.http_filters[1]"
    );
    assert!(e.message.contains("after the router"), "{e}");

    let e = refused(&listener(vec![hcm(vec![http_rbac(&enforced)])]));
    assert_eq!(
        e.path,
        "filter_chains[0].filters[0].typed_config.http_filters"
    );

    let mut optional = http_rbac(&enforced);
    optional.is_optional = true;
    let e = refused(&listener(vec![hcm(vec![optional, router()])]));
    assert_eq!(
        e.path,
        "filter_chains[0].filters[0].typed_config.http_filters[0].is_optional"
    );

    let log = HttpRbac {
        rules: Some(rules(2)),
        ..Default::default()
    };
    let e = refused(&listener(vec![hcm(vec![http_rbac(&log), router()])]));
    assert_eq!(
        e.path,
        "filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.rules.action"
    );
    assert!(e.message.contains("LOG"), "{e}");
}

#[test]
fn a_network_rbac_filter_before_tcp_proxy_or_the_connection_manager_converts() {
    let l = accepted(&listener(vec![network_rbac(&tcp_rbac()), tcp_proxy()]));
    let chain = &l.chains[0];
    let [NetworkFilter::Rbac(r)] = chain.filters.as_slice() else {
        panic!("{:?}", chain.filters);
    };
    assert_eq!(r.stat_prefix, "inbound_5432");
    assert!(r.rbac.rules.is_some());
    assert!(matches!(&chain.terminal, Terminal::Tcp(t) if t.cluster == "inbound|5432"));

    let l = accepted(&listener(vec![
        network_rbac(&tcp_rbac()),
        hcm(vec![router()]),
    ]));
    assert_eq!(l.chains[0].filters.len(), 1);
    assert!(matches!(&l.chains[0].terminal, Terminal::Http(_)));
}

#[test]
fn a_network_rbac_filter_out_of_place_or_incomplete_is_refused() {
    let e = refused(&listener(vec![tcp_proxy(), network_rbac(&tcp_rbac())]));
    assert_eq!(e.path, "filter_chains[0].filters[0]");
    assert!(e.message.contains("terminal filter"), "{e}");

    let e = refused(&listener(vec![network_rbac(&tcp_rbac())]));
    assert_eq!(e.path, "filter_chains[0].filters[0]");
    assert!(e.message.contains("not a terminal filter"), "{e}");

    let e = refused(&listener(vec![]));
    assert_eq!(e.path, "filter_chains[0].filters");

    let mut unprefixed = tcp_rbac();
    unprefixed.stat_prefix.clear();
    let e = refused(&listener(vec![network_rbac(&unprefixed), tcp_proxy()]));
    assert_eq!(
        e.path,
        "filter_chains[0].filters[0].typed_config.stat_prefix"
    );

    let mut with_condition = tcp_rbac();
    if let Some(p) = with_condition
        .rules
        .as_mut()
        .and_then(|r| r.policies.values_mut().next())
    {
        p.condition = Some(Default::default());
    }
    let e = refused(&listener(vec![network_rbac(&with_condition), tcp_proxy()]));
    assert_eq!(
        e.path,
        "filter_chains[0].filters[0].typed_config.rules.policies[\"TrafficTarget shop/allow-web\"].condition"
    );
}

/// A destination `reviews` with a TrafficTarget from `frontend` (GET /api/.* only) and
/// a dry-run one, on top of the examples' pods and services.
const AUTHZ: &str = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: reviews-routes, namespace: default}\nspec:\n  matches:\n  - {name: api, pathRegex: \"/api/.*\", methods: [GET]}\n---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: allow-frontend, namespace: default}\nspec:\n  destination: {kind: ServiceAccount, name: reviews, namespace: default}\n  rules: [{kind: HTTPRouteGroup, name: reviews-routes, matches: [api]}]\n  sources: [{kind: ServiceAccount, name: frontend, namespace: default}]\n---\n";

#[test]
fn what_the_translator_emits_for_a_traffic_target_converts() {
    use translator::identity::{
        DEFAULT_INBOUND_PORT, DEFAULT_OUTBOUND_PORT, ProxyIdentity, ProxyKind,
    };
    use translator::model::{Model, parse_manifest};
    use translator::{MeshConfig, translate_proxy};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut text = String::new();
    for f in ["mesh.yaml", "pods.yaml", "endpointslices.yaml"] {
        text.push_str(&std::fs::read_to_string(root.join(f)).expect("read example"));
        text.push_str("\n---\n");
    }
    text.push_str(AUTHZ);
    let mut model = Model::new();
    for o in &parse_manifest(&text).expect("manifests").objects {
        model.apply(o).expect("valid object");
    }
    let mut rbac_filters = 0;
    for intercepted in [false, true] {
        let proxy = ProxyIdentity {
            vhds: false,
            node_id: "reviews-v1.default".into(),
            kind: ProxyKind::Envoy,
            namespace: "default".into(),
            pod: "reviews-v1".into(),
            service_account: "reviews".into(),
            pod_ip: None,
            outbound_port: DEFAULT_OUTBOUND_PORT,
            app_address: "127.0.0.1".parse().expect("ip"),
            intercepted,
            inbound_port: DEFAULT_INBOUND_PORT,
        };
        let out = translate_proxy(&model, &MeshConfig::default(), &proxy);
        for r in &out.resources {
            let (name, c) = convert(r.kind, &r.body.to_any())
                .unwrap_or_else(|e| panic!("intercepted={intercepted}: {e}"));
            let Converted::Listener(l) = c else { continue };
            for chain in l.chains.iter().chain(&l.default_chain) {
                rbac_filters += chain
                    .filters
                    .iter()
                    .filter(|f| matches!(f, NetworkFilter::Rbac(_)))
                    .count();
                if let Terminal::Http(m) = &chain.terminal {
                    rbac_filters += m
                        .filters
                        .iter()
                        .filter(|f| matches!(f, HttpFilter::Rbac(r) if r.rules.is_some()))
                        .count();
                }
            }
            assert!(!name.is_empty());
        }
    }
    assert!(
        rbac_filters > 0,
        "the TrafficTarget gave reviews' inbound listener no RBAC filter"
    );
}
