//! Small builders for proto messages that several resource kinds share.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{Address, TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, BindConfig, ConfigSource, ExtraSourceAddress,
    Http2ProtocolOptions, SocketAddress, address, config_source::ConfigSourceSpecifier,
    socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::{Message, Name};

pub(crate) fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

pub(crate) fn socket(ip: IpAddr, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// A cluster's `upstream_bind_config`: connections from one of `sources` (any port),
/// the one of the upstream address's family (Envoy's default local address selector).
pub(crate) fn bind(sources: &[IpAddr]) -> BindConfig {
    let socket = |ip: &IpAddr| SocketAddress {
        address: ip.to_string(),
        port_specifier: Some(PortSpecifier::PortValue(0)),
        ..Default::default()
    };
    BindConfig {
        source_address: sources.first().map(socket),
        extra_source_addresses: sources
            .iter()
            .skip(1)
            .map(|ip| ExtraSourceAddress {
                address: Some(socket(ip)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// `host:port` for a name Envoy resolves.
pub(crate) fn named_socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// Config delivered over the same ADS stream.
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// The router HTTP filter (last in every HTTP connection manager).
pub(crate) fn router_filter()
-> envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpFilter, http_filter,
    };
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(
            &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(),
        ))),
        ..Default::default()
    }
}

/// A `std` duration as a protobuf one, at millisecond precision.
pub(crate) fn duration(d: std::time::Duration) -> Duration {
    millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn millis(ms: u64) -> Duration {
    Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// `typed_extension_protocol_options` entry that makes a cluster speak HTTP/2.
pub(crate) fn http2_upstream() -> (String, Any) {
    let opts = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        any(&opts),
    )
}

/// A TLS transport socket with `any` (an Upstream- or DownstreamTlsContext).
pub(crate) fn tls_socket(any: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any)),
    }
}
