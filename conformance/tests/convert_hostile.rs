//! Resources the proxy must refuse, each with the field path and the reason.

use std::time::{Duration, SystemTime};

use conformance::config::route::{Action, AppendAction};
use conformance::convert::{ConvertError, Converted, convert};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{Address, DataSource, data_source::Specifier};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiConfigSource, ConfigSource, HeaderValue, HeaderValueOption,
    SocketAddress, address, config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::proxy_protocol::v3::ProxyProtocol;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use xds_types::XdsType;

fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

fn refused(ty: XdsType, a: &Any) -> ConvertError {
    match convert(ty, a) {
        Ok((name, c)) => panic!("{name} was accepted: {c:?}"),
        Err(e) => e,
    }
}

fn assert_refused(ty: XdsType, a: &Any, path: &str, message: &str) {
    let e = refused(ty, a);
    assert_eq!(e.path, path, "{e}");
    assert!(e.message.contains(message), "{e}: no {message:?}");
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: 2,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn filter_of(name: &str, typed: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(typed)),
        ..Default::default()
    }
}

fn listener(http_filters: Vec<HttpFilter>, listener_filters: Vec<ListenerFilter>) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: "outbound".into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: "outbound".into(),
        })),
        http_filters,
        ..Default::default()
    };
    Listener {
        name: "outbound".into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".into(),
                port_specifier: Some(PortSpecifier::PortValue(15001)),
                ..Default::default()
            })),
        }),
        listener_filters,
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn router() -> HttpFilter {
    filter_of("envoy.filters.http.router", any(&Router::default()))
}

fn routes(hosts: Vec<VirtualHost>) -> Any {
    any(&RouteConfiguration {
        name: "outbound".into(),
        virtual_hosts: hosts,
        ..Default::default()
    })
}

fn host(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn to_cluster(path: PathSpecifier) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("web".into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn prefix(p: &str) -> PathSpecifier {
    PathSpecifier::Prefix(p.into())
}

#[test]
fn a_listener_converts() {
    let l = listener(vec![router()], Vec::new());
    let (name, c) = convert(XdsType::Listener, &any(&l)).expect("converts");
    assert_eq!(name, "outbound");
    assert!(matches!(c, Converted::Listener(l) if l.chains.len() == 1 && !l.original_dst));
}

#[test]
fn wrong_type_url() {
    let l = any(&listener(vec![router()], Vec::new()));
    assert_refused(XdsType::Cluster, &l, "type_url", "must have type URL");
}

#[test]
fn undecodable_bytes() {
    let a = Any {
        type_url: XdsType::Listener.type_url().into(),
        value: vec![0xff; 7],
    };
    assert_refused(XdsType::Listener, &a, "", "does not decode");
}

#[test]
fn an_unknown_http_filter_is_named() {
    let fault = filter_of(
        "envoy.filters.http.fault",
        Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault".into(),
            value: Vec::new(),
        },
    );
    let l = any(&listener(vec![fault, router()], Vec::new()));
    let e = refused(XdsType::Listener, &l);
    assert_eq!(e.resource, "outbound");
    assert_eq!(
        e.path,
        "filter_chains[0].filters[0].typed_config.http_filters[0]"
    );
    assert_eq!(e.message, "unsupported filter envoy.filters.http.fault");
    // The router must be there.
    let l = any(&listener(Vec::new(), Vec::new()));
    assert_refused(
        XdsType::Listener,
        &l,
        "filter_chains[0].filters[0].typed_config.http_filters",
        "router filter is required",
    );
}

#[test]
fn an_unknown_listener_filter() {
    let pp = ListenerFilter {
        name: "envoy.filters.listener.proxy_protocol".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &ProxyProtocol::default(),
        ))),
        ..Default::default()
    };
    let l = any(&listener(vec![router()], vec![pp]));
    assert_refused(
        XdsType::Listener,
        &l,
        "listener_filters[0]",
        "unsupported listener filter \"envoy.filters.listener.proxy_protocol\"",
    );
}

#[test]
fn an_unknown_retry_condition() {
    let mut r = to_cluster(prefix("/"));
    if let Some(route::Action::Route(a)) = &mut r.action {
        a.retry_policy = Some(RetryPolicy {
            retry_on: "5xx,retriable-headers".into(),
            ..Default::default()
        });
    }
    let rc = routes(vec![host("web", &["web"], vec![r])]);
    assert_refused(
        XdsType::Route,
        &rc,
        "virtual_hosts[0].routes[0].route.retry_policy.retry_on",
        "unsupported retry condition \"retriable-headers\"",
    );
}

fn regex_route(pattern: &str) -> Any {
    let r = to_cluster(PathSpecifier::SafeRegex(RegexMatcher {
        regex: pattern.into(),
        ..Default::default()
    }));
    routes(vec![host("web", &["web"], vec![r])])
}

#[test]
fn regexes_within_and_over_the_limit() {
    // What Rudder's RE2 check admits compiles.
    for p in [
        "a{96}",
        "/api/.*",
        "[a-z0-9-]+\\.example\\.com",
        "/v[0-9]+/items/[^/]+",
    ] {
        crds::re2::check(p).expect("RE2 accepts");
        convert(XdsType::Route, &regex_route(p)).expect("compiles");
    }
    // Every repetition of a class that the RE2 check admits compiles here too.
    let mut admitted = 0;
    for base in [
        ".", "[^/]", "\\d", "[a-z0-9]", "(?i:ab)", "\\w", "\\pL", "(x|y|z)",
    ] {
        for n in [1, 2, 5, 10, 20, 30, 45, 60, 80, 96, 200] {
            let p = format!("/{base}{{{n}}}");
            if crds::re2::check(&p).is_ok() {
                admitted += 1;
                convert(XdsType::Route, &regex_route(&p))
                    .unwrap_or_else(|e| panic!("{p} admitted by the RE2 check: {e}"));
            }
        }
    }
    assert!(admitted > 20, "only {admitted} patterns admitted");
    let long = "a".repeat(1025);
    assert_refused(
        XdsType::Route,
        &regex_route(&long),
        "virtual_hosts[0].routes[0].match.safe_regex.regex",
        "regex of 1025 characters, at most 1024 accepted",
    );
    assert_refused(
        XdsType::Route,
        &regex_route("\\w{1000}\\w{1000}"),
        "virtual_hosts[0].routes[0].match.safe_regex.regex",
        "compiles to more than",
    );
    assert_refused(
        XdsType::Route,
        &regex_route("(unclosed"),
        "virtual_hosts[0].routes[0].match.safe_regex.regex",
        "invalid regex",
    );
}

#[test]
fn duplicate_domains() {
    let rc = routes(vec![
        host(
            "a",
            &["a.example", "b.example"],
            vec![to_cluster(prefix("/"))],
        ),
        host(
            "b",
            &["c.example", "A.example"],
            vec![to_cluster(prefix("/"))],
        ),
    ]);
    assert_refused(
        XdsType::Route,
        &rc,
        "virtual_hosts[1].domains[1]",
        "duplicate domain \"A.example\" (also in virtual_hosts[0])",
    );
}

fn with_header(key: &str) -> Any {
    let mut r = to_cluster(prefix("/"));
    r.request_headers_to_add = vec![HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: "1".into(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    routes(vec![host("web", &["web"], vec![r])])
}

#[test]
fn header_names_must_be_tokens_and_are_lowercased() {
    // Header names are case-insensitive: Envoy takes `X-Header-Set` (the Gateway API
    // conformance routes use it), and so does the proxy, as `x-header-set`.
    let (_, c) = convert(XdsType::Route, &with_header("X-Upper")).expect("converts");
    let Converted::Route(rc) = c else {
        panic!("not routes")
    };
    assert_eq!(
        rc.virtual_hosts[0].routes[0].headers.request_add[0]
            .name
            .as_str(),
        "x-upper"
    );
    for bad in ["x bad", "x\u{1}", "x:y"] {
        assert_refused(
            XdsType::Route,
            &with_header(bad),
            "virtual_hosts[0].routes[0].request_headers_to_add[0].header.key",
            "invalid header name",
        );
    }
    // As Envoy: host may not be modified.
    assert_refused(
        XdsType::Route,
        &with_header("host"),
        "virtual_hosts[0].routes[0].request_headers_to_add[0].header.key",
        "host headers may not be modified",
    );
    let (_, c) = convert(XdsType::Route, &with_header("x-ok")).expect("converts");
    let Converted::Route(rc) = c else {
        panic!("not routes")
    };
    let add = &rc.virtual_hosts[0].routes[0].headers.request_add[0];
    assert_eq!(add.name.as_str(), "x-ok");
    assert_eq!(add.append, AppendAction::AppendIfExistsOrAdd);
    assert!(
        matches!(rc.virtual_hosts[0].routes[0].action, Action::Route(ref a)
        if a.timeout == Some(Duration::from_secs(15)) && a.cluster_not_found_status == 503)
    );
}

fn tls_secret(chain: &str, key: &str) -> Any {
    let inline = |s: &str| DataSource {
        specifier: Some(Specifier::InlineString(s.into())),
        ..Default::default()
    };
    any(&Secret {
        name: "default".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain)),
            private_key: Some(inline(key)),
            ..Default::default()
        })),
    })
}

#[test]
fn a_key_that_is_not_the_certificates() {
    let now = SystemTime::now();
    let authority = ca::Authority::generate_root("cluster.local", now).expect("root");
    let id = ca::SpiffeId::new("cluster.local", "shop", "web").expect("id");
    let one = authority
        .issue(&id, Duration::from_secs(3600), now)
        .expect("issue");
    let other = authority
        .issue(&id, Duration::from_secs(3600), now)
        .expect("issue");
    let e = refused(
        XdsType::Secret,
        &tls_secret(&one.cert_chain_pem, other.private_key_pem()),
    );
    assert_eq!(e.path, "tls_certificate.private_key");
    assert!(e.message.contains("does not belong"), "{e}");
    // Key bytes never appear in the error.
    assert!(!e.to_string().contains("PRIVATE"), "{e}");
    convert(
        XdsType::Secret,
        &tls_secret(&one.cert_chain_pem, one.private_key_pem()),
    )
    .expect("its own key");
}

#[test]
fn a_bundle_without_a_certificate() {
    let s = any(&Secret {
        name: "ROOTCA".into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(Specifier::InlineString("no certificate here\n".into())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    });
    assert_refused(
        XdsType::Secret,
        &s,
        "validation_context.trusted_ca",
        "no PEM certificate",
    );
}

fn eds_cluster(source: ConfigSource) -> Cluster {
    Cluster {
        name: "outbound|80||web".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(source),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

#[test]
fn an_eds_cluster_not_over_ads() {
    let (_, c) = convert(XdsType::Cluster, &any(&eds_cluster(ads()))).expect("ADS converts");
    assert!(matches!(c, Converted::Cluster(c)
        if matches!(&c.discovery, conformance::config::cluster::Discovery::Eds { service_name } if service_name == "outbound|80||web")
        && c.connect_timeout == Duration::from_secs(5)));
    let other = ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
            api_type: 2,
            ..Default::default()
        })),
        ..Default::default()
    };
    assert_refused(
        XdsType::Cluster,
        &any(&eds_cluster(other)),
        "eds_cluster_config.eds_config.api_config_source",
        "only ADS",
    );
}

#[test]
fn an_unimplemented_field_is_named() {
    let mut c = eds_cluster(ads());
    c.outlier_detection = Some(Default::default());
    assert_refused(
        XdsType::Cluster,
        &any(&c),
        "outlier_detection",
        "unsupported field",
    );
}

#[test]
fn two_chains_with_the_same_match() {
    let mut l = listener(vec![router()], Vec::new());
    let chain = l.filter_chains[0].clone();
    l.filter_chains.push(chain);
    assert_refused(
        XdsType::Listener,
        &any(&l),
        "filter_chains[1].filter_chain_match",
        "the same match as filter_chains[0]",
    );
}
