//! The pod-address cluster and the outbound table's virtual host for calls by a mesh
//! pod's own address (`IP:PORT`): what every Envoy proxy holds for them, in both modes.
//! Why and at what cost: see `address`.

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy, OriginalDstLbConfig},
};
use envoy_types::pb::envoy::config::core::v3::{Http1ProtocolOptions, Http2ProtocolOptions};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteMatch, VirtualHost,
    route::Action,
    route_action::{ClusterSpecifier, UpgradeConfig, upgrade_config::ConnectConfig},
    route_match::{ConnectMatcher, PathSpecifier},
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{UpstreamProtocolOptions, UseDownstreamHttpConfig},
};
use xds_types::XdsType;

use crate::envoy::tls;
use crate::output::{Body, Resource};
use crate::render::protos;

/// The original-destination cluster that carries calls to a mesh pod's own address,
/// over mTLS to any workload of the trust domain.
pub(crate) const POD_ADDRESS_CLUSTER: &str = "pod-address";

/// The name of the outbound table's last virtual host (pod addresses).
pub(crate) const POD_ADDRESS_VHOST: &str = "pod-address";

/// The names of the outbound table's last virtual host: every authority that starts
/// like an IP literal (a digit, or `[` for IPv6). No Service name does (Kubernetes
/// names start with a letter), and a cluster IP is an exact domain of its Service,
/// which Envoy prefers to a wildcard. Wildcards, not a regex: a proxy whose RE2 limit is
/// low would refuse the whole table.
fn ip_like_domains() -> Vec<String> {
    ('0'..='9')
        .map(|d| format!("{d}*"))
        .chain(std::iter::once("[*".to_string()))
        .collect()
}

/// The outbound table's last virtual host: a request (or HTTP CONNECT) whose authority
/// is an address with a port goes to that address over mTLS, with no Service's rules
/// (an authority without a port, or not an address, finds no upstream: 503); any other
/// unknown name finds no virtual host (404), as before.
pub(crate) fn pod_address_vhost() -> VirtualHost {
    let to_pod = |path: PathSpecifier, upgrade: bool| Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(path),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(POD_ADDRESS_CLUSTER.into())),
            // The protocol is the caller's (gRPC streams included): no request timeout.
            timeout: Some(protos::millis(0)),
            upgrade_configs: if upgrade {
                vec![UpgradeConfig {
                    upgrade_type: "CONNECT".into(),
                    connect_config: Some(ConnectConfig::default()),
                    ..Default::default()
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        })),
        ..Default::default()
    };
    VirtualHost {
        name: POD_ADDRESS_VHOST.into(),
        domains: ip_like_domains(),
        routes: vec![
            to_pod(PathSpecifier::ConnectMatcher(ConnectMatcher {}), true),
            to_pod(PathSpecifier::Prefix("/".into()), false),
        ],
        ..Default::default()
    }
}

/// [`POD_ADDRESS_CLUSTER`]: the destination is the request's `:authority` when it has
/// one (explicit proxy), else the connection's original destination (interception); the
/// upstream speaks the caller's HTTP version.
pub(crate) fn pod_address_cluster(trust_domain: &str) -> Resource {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let cluster = Cluster {
        name: POD_ADDRESS_CLUSTER.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        lb_config: Some(LbConfig::OriginalDstLbConfig(OriginalDstLbConfig {
            use_http_header: true,
            http_header_name: ":authority".into(),
            ..Default::default()
        })),
        connect_timeout: Some(protos::millis(1_000)),
        transport_socket: Some(tls::upstream_any_workload(trust_domain)),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            protos::any(&options),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    Resource {
        kind: XdsType::Cluster,
        name: POD_ADDRESS_CLUSTER.into(),
        refs: Vec::new(),
        sources: Vec::new(),
        body: Body::Cluster(Box::new(cluster)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_address_host_catches_addresses_and_no_service_name() {
        let v = pod_address_vhost();
        assert_eq!(v.domains.len(), 11);
        // Service names start with a letter; only an address starts with a digit or `[`.
        assert!(v.domains.iter().all(|d| {
            d.ends_with('*')
                && d.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit() || c == '[')
        }));
        // Matched by name alone, no regex: a proxy with a low RE2 limit takes the table.
        assert!(
            v.routes
                .iter()
                .all(|r| r.r#match.as_ref().is_some_and(|m| m.headers.is_empty()))
        );
    }
}
