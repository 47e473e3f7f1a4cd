//! An inbound listener as the control plane emits it where an RBAC policy matches on
//! the URL path, converted from its xDS protobuf and served on a real socket: with
//! `path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD`, `normalize_path` and
//! `merge_slashes` the path is transformed before RBAC and routing, so
//! `/public/../admin`, `/public/%2e%2e/admin` and `/public%2F..%2Fadmin` no longer pass
//! a rule allowing `/public/.*` (403), `/public/x` and `/public//x` do, and the upstream
//! is sent the transformed path (the query as it came). Without the fields the same
//! rule is bypassed, as it is in Envoy. `UNESCAPE_AND_REDIRECT` answers 307.

mod net_support;

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use conformance::config::listener::Listener as ProxyListener;
use conformance::convert::{Converted, convert};
use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as Rules, permission, principal,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
    http_connection_manager::{PathWithEscapedSlashesAction, RouteSpecifier},
    http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, RegexMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use net_support::*;
use prost::{Message, Name};
use xds_types::XdsType;

const PREFIX: &str = "inbound_8080";

fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

/// ALLOW: any caller may request a path matching `/public/.*`; nothing else.
fn public_only() -> HttpRbac {
    let public = Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(StringMatcher {
                match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                    regex: "/public/.*".into(),
                    ..Default::default()
                })),
                ..Default::default()
            })),
        })),
    };
    HttpRbac {
        rules: Some(Rules {
            action: 0,
            policies: HashMap::from([(
                "public".to_string(),
                Policy {
                    permissions: vec![public],
                    principals: vec![Principal {
                        identifier: Some(principal::Identifier::Any(true)),
                    }],
                    ..Default::default()
                },
            )]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_filter<T: Message + Name>(name: &str, m: &T) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(m))),
        ..Default::default()
    }
}

/// The inbound listener at `addr`: RBAC [`public_only`], then the router to `web`;
/// `path` sets the three path fields (`escaped_slashes`, `normalize_path`,
/// `merge_slashes`) when given.
fn listener(addr: SocketAddr, path: Option<PathWithEscapedSlashesAction>) -> Any {
    let routes = RouteConfiguration {
        name: "inbound|8080".into(),
        virtual_hosts: vec![VirtualHost {
            name: "inbound|http|8080".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("web".into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: PREFIX.into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(routes)),
        http_filters: vec![
            http_filter("envoy.filters.http.rbac", &public_only()),
            http_filter("envoy.filters.http.router", &Router::default()),
        ],
        normalize_path: path.map(|_| BoolValue { value: true }),
        merge_slashes: path.is_some(),
        path_with_escaped_slashes_action: path.map_or(0, |a| a as i32),
        ..Default::default()
    };
    any(&Listener {
        name: "inbound".into(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(PortSpecifier::PortValue(u32::from(addr.port()))),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// The proxy serving the converted `listener`, `web` at an upstream that answers with
/// the request head it was sent.
async fn start(listener: &Any) -> Proxy {
    let l: ProxyListener = match convert(XdsType::Listener, listener) {
        Ok((_, Converted::Listener(l))) => l,
        Ok((_, other)) => panic!("not a listener: {other:?}"),
        Err(e) => panic!("refused: {e}"),
    };
    let proxy = Proxy::start();
    proxy.add_cluster(static_cluster("web", head_echo().await));
    proxy.set_listeners(vec![l]);
    proxy
}

/// A response as the client saw it.
struct Seen {
    status: u16,
    location: Option<String>,
    body: String,
}

/// `GET path` over HTTP/1.1, the path sent as written.
async fn get(addr: SocketAddr, path: &str) -> Seen {
    let io = connect_when_up(addr).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "shop")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Seen {
        status,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Asserts `path` is allowed and the upstream was sent `upstream`.
async fn allowed(addr: SocketAddr, path: &str, upstream: &str) {
    let seen = get(addr, path).await;
    assert_eq!(seen.status, 200, "{path}: {}", seen.body);
    let line = format!("GET {upstream} HTTP/1.1\r\n");
    assert!(seen.body.starts_with(&line), "{path}: {}", seen.body);
}

async fn denied(addr: SocketAddr, path: &str) {
    let seen = get(addr, path).await;
    assert_eq!(seen.status, 403, "{path}: {}", seen.body);
    assert_eq!(seen.body, "RBAC: access denied", "{path}");
}

#[tokio::test]
async fn normalized_paths_cannot_escape_a_url_path_rule() {
    let addr = free_addr();
    let proxy = start(&listener(
        addr,
        Some(PathWithEscapedSlashesAction::UnescapeAndForward),
    ))
    .await;

    allowed(addr, "/public/x", "/public/x").await;
    allowed(addr, "/public//x", "/public/x").await;
    allowed(
        addr,
        "/public/a/../b?next=/../admin//%2F",
        "/public/b?next=/../admin//%2F",
    )
    .await;
    allowed(addr, "/public%2Fy", "/public/y").await;
    allowed(addr, "/public/%7Ex/./y", "/public/~x/y").await;

    denied(addr, "/public/../admin").await;
    denied(addr, "/public/%2e%2e/admin").await;
    denied(addr, "/public/%2E./admin").await;
    denied(addr, "/public%2F..%2Fadmin").await;
    denied(addr, "/public%5C..%5Cadmin").await;
    denied(addr, "/public\\..\\admin").await;
    denied(addr, "/admin").await;

    // A path the canonicalizer refuses (an encoded NUL) is 400, before RBAC.
    let bad = get(addr, "/public/%00").await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    assert_eq!(proxy.counter(&format!("http.{PREFIX}.rbac.allowed")), 5);
    assert_eq!(proxy.counter(&format!("http.{PREFIX}.rbac.denied")), 7);
    assert_eq!(
        proxy.counter(&format!(
            "http.{PREFIX}.downstream_rq_failed_path_normalization"
        )),
        1
    );
    assert_eq!(
        proxy.counter(&format!("http.{PREFIX}.downstream_rq_4xx")),
        8
    );
    assert_eq!(
        proxy.counter("cluster.web.upstream_rq_total"),
        5,
        "only allowed requests go upstream"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn without_the_fields_the_same_rule_is_bypassed_as_in_envoy() {
    let addr = free_addr();
    let proxy = start(&listener(addr, None)).await;
    allowed(addr, "/public/../admin", "/public/../admin").await;
    allowed(addr, "/public/%2e%2e/admin", "/public/%2e%2e/admin").await;
    // `%2F` is no separator to the rule, so this one is denied either way.
    denied(addr, "/public%2F..%2Fadmin").await;
    proxy.stop().await;
}

#[tokio::test]
async fn unescape_and_redirect_answers_307_with_the_transformed_path() {
    let addr = free_addr();
    let proxy = start(&listener(
        addr,
        Some(PathWithEscapedSlashesAction::UnescapeAndRedirect),
    ))
    .await;
    let seen = get(addr, "/public%2Fa//b/../c?q=%2F").await;
    assert_eq!(seen.status, 307, "{}", seen.body);
    assert_eq!(seen.location.as_deref(), Some("/public/a/c?q=%2F"));
    assert_eq!(seen.body, "");
    // Without an escaped slash there is nothing to redirect for.
    allowed(addr, "/public/a//b/../c", "/public/a/c").await;
    assert_eq!(
        proxy.counter(&format!(
            "http.{PREFIX}.downstream_rq_redirected_with_normalized_path"
        )),
        1
    );
    assert_eq!(proxy.counter("cluster.web.upstream_rq_total"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn reject_request_answers_400_to_an_escaped_slash() {
    let addr = free_addr();
    let proxy = start(&listener(
        addr,
        Some(PathWithEscapedSlashesAction::RejectRequest),
    ))
    .await;
    assert_eq!(get(addr, "/public%2F..%2Fadmin").await.status, 400);
    assert_eq!(get(addr, "/public/a%5cb").await.status, 400);
    allowed(addr, "/public/a?b=%2F", "/public/a?b=%2F").await;
    assert_eq!(
        proxy.counter(&format!(
            "http.{PREFIX}.downstream_rq_failed_path_normalization"
        )),
        2
    );
    proxy.stop().await;
}
