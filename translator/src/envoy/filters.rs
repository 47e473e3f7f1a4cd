//! The Envoy network and listener filters the per-proxy listeners share: the HTTP
//! connection manager (outbound by RDS, inbound to the local app, behind the port's
//! authorization), the TCP proxy and the TLS inspector.

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
    http_connection_manager::{
        CodecType, ForwardClientCertDetails, PathWithEscapedSlashesAction, RouteSpecifier,
        SetCurrentClientCertDetails, UpgradeConfig,
    },
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, UpstreamConnectMode, tcp_proxy::ClusterSpecifier as TcpCluster,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use crate::identity::ProxyIdentity;
use crate::model::Protocol;
use crate::names;
use crate::render::{protos, rbac};
use crate::routing::authz::InboundAuthz;

/// An HTTP connection manager with routes `routes`; `inbound` for one that serves the
/// local app.
pub(crate) fn hcm(stat_prefix: String, routes: RouteSpecifier, inbound: bool) -> Filter {
    hcm_with(stat_prefix, routes, inbound, None, false)
}

/// [`hcm`] with an HTTP filter (authorization) before the router; `normalize_paths`
/// when it matches on the path: escaped slashes unescaped, dot segments removed and
/// slashes merged before it decides, so the app is sent the path that was allowed
/// (`/public/%2e%2e/admin` is decided, and forwarded, as `/admin`).
fn hcm_with(
    stat_prefix: String,
    routes: RouteSpecifier,
    inbound: bool,
    before_router: Option<HttpFilter>,
    normalize_paths: bool,
) -> Filter {
    let manager = HttpConnectionManager {
        // Inbound: tell the app who called, from the verified client certificate.
        forward_client_cert_details: if inbound {
            ForwardClientCertDetails::SanitizeSet as i32
        } else {
            ForwardClientCertDetails::Sanitize as i32
        },
        set_current_client_cert_details: inbound.then(|| SetCurrentClientCertDetails {
            uri: true,
            ..Default::default()
        }),
        stat_prefix,
        // AUTO accepts HTTP/1.1 and HTTP/2 prior knowledge (h2c, gRPC) from the client.
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(routes),
        // Outbound: HTTP CONNECT opens a TCP tunnel to a Service's TCP port.
        upgrade_configs: if inbound {
            Vec::new()
        } else {
            vec![UpgradeConfig {
                upgrade_type: "CONNECT".into(),
                ..Default::default()
            }]
        },
        http_filters: before_router
            .into_iter()
            .chain([protos::router_filter()])
            .collect(),
        normalize_path: normalize_paths.then_some(BoolValue { value: true }),
        merge_slashes: normalize_paths,
        path_with_escaped_slashes_action: if normalize_paths {
            PathWithEscapedSlashesAction::UnescapeAndForward as i32
        } else {
            PathWithEscapedSlashesAction::ImplementationSpecificDefault as i32
        },
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(protos::any(&manager))),
    }
}

/// The outbound HTTP connection manager of `proxy`: routes from RDS, by authority, in
/// the table of its shape ([`ProxyIdentity::outbound_route`]).
pub(crate) fn outbound_hcm(proxy: &ProxyIdentity) -> Filter {
    outbound_hcm_with(proxy.outbound_route())
}

/// An outbound HTTP connection manager with the routes of RDS table `route` (one
/// Service port's, for connections to its cluster IP). Its statistics are the outbound
/// manager's.
pub(crate) fn outbound_hcm_with(route: &str) -> Filter {
    let rds = RouteSpecifier::Rds(Rds {
        config_source: Some(protos::ads()),
        route_config_name: route.into(),
    });
    hcm("outbound".into(), rds, false)
}

/// The TLS inspector (tells mTLS from plain text on a PERMISSIVE port).
pub(crate) fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(protos::any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// A TCP proxy to `cluster`.
pub(crate) fn tcp_proxy(stat_prefix: String, cluster: String) -> Filter {
    let tcp = TcpProxy {
        stat_prefix,
        cluster_specifier: Some(TcpCluster::Cluster(cluster)),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(protos::any(&tcp))),
    }
}

/// A TCP proxy to the local app's `cluster` that connects it only once the caller's TLS
/// handshake is done (plain text: at once). Envoy otherwise connects the app as the
/// connection is accepted, so a caller the handshake refuses still made the app accept
/// a connection (and, before the guard, read its greeting).
pub(crate) fn inbound_tcp_proxy(stat_prefix: String, cluster: String) -> Filter {
    let tcp = TcpProxy {
        stat_prefix,
        cluster_specifier: Some(TcpCluster::Cluster(cluster)),
        upstream_connect_mode: UpstreamConnectMode::OnDownstreamTlsHandshake as i32,
        // What the caller sends before the app is connected is held, up to this much.
        max_early_data_bytes: Some(UInt32Value { value: 65_536 }),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(protos::any(&tcp))),
    }
}

/// What serves one inbound port: a TCP proxy, or an HTTP connection manager, to the
/// local app's cluster `inbound|PORT`, behind the port's authorization (a network RBAC
/// filter before the TCP proxy, an HTTP one before the router) unless it is open.
pub(crate) fn inbound_filters(port: u16, protocol: Protocol, authz: &InboundAuthz) -> Vec<Filter> {
    let name = names::inbound(port);
    if protocol == Protocol::Tcp {
        rbac::inbound_network_filter(authz, &name)
            .into_iter()
            .chain([inbound_tcp_proxy(name.clone(), name)])
            .collect()
    } else {
        let route = RouteConfiguration {
            name: name.clone(),
            virtual_hosts: vec![VirtualHost {
                name: "inbound".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::Cluster(name.clone())),
                        // The calling side owns request timeouts.
                        timeout: Some(protos::millis(0)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        vec![hcm_with(
            format!("inbound_{port}"),
            RouteSpecifier::RouteConfig(route),
            true,
            rbac::inbound_http_filter(authz),
            authz.matches_paths(),
        )]
    }
}
