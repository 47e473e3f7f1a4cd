//! Per-proxy listeners. Outbound: one HTTP listener on the pod IP that routes by
//! authority, so it serves apps using it as an explicit HTTP proxy (HTTP CONNECT for
//! TCP ports) and (later) transparently intercepted traffic alike. Inbound: one listener per port the pod
//! serves, forwarding to the local app over a static cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds,
    http_connection_manager::{
        CodecType, ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails,
        UpgradeConfig,
    },
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier as TcpCluster,
};

use crate::identity::ProxyIdentity;
use crate::model::{Kind, Model, ObjectKey, Protocol, TargetPort};
use crate::protos;
use crate::tls::{self, MtlsMode};
use crate::{Body, Diagnostic, MeshConfig, Output, Resource, cluster, names};
use xds_types::XdsType;

pub(crate) fn hcm(stat_prefix: String, routes: RouteSpecifier, inbound: bool) -> Filter {
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
        http_filters: vec![protos::router_filter()],
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(protos::any(&manager))),
    }
}

fn listener(name: String, ip: IpAddr, port: u16, filter: Filter) -> Listener {
    Listener {
        name,
        address: Some(protos::socket(ip, port)),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An inbound listener: mTLS only (STRICT), or mTLS and plain text told apart by the
/// TLS inspector (PERMISSIVE).
fn secure_listener(
    name: String,
    ip: IpAddr,
    port: u16,
    filter: Filter,
    trust_domain: &str,
    mode: MtlsMode,
) -> Listener {
    let mtls = FilterChain {
        filter_chain_match: (mode == MtlsMode::Permissive).then(|| FilterChainMatch {
            transport_protocol: "tls".into(),
            ..Default::default()
        }),
        filters: vec![filter.clone()],
        transport_socket: Some(tls::downstream(trust_domain)),
        name: "mtls".into(),
        ..Default::default()
    };
    let mut l = Listener {
        name,
        address: Some(protos::socket(ip, port)),
        filter_chains: vec![mtls],
        ..Default::default()
    };
    if mode == MtlsMode::Permissive {
        l.listener_filters = vec![tls_inspector()];
        l.default_filter_chain = Some(FilterChain {
            filters: vec![filter],
            name: "plaintext".into(),
            ..Default::default()
        });
    }
    l
}

/// The outbound HTTP connection manager: routes from RDS, by authority.
pub(crate) fn outbound_hcm() -> Filter {
    let rds = RouteSpecifier::Rds(Rds {
        config_source: Some(protos::ads()),
        route_config_name: names::OUTBOUND_ROUTE.into(),
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

fn outbound(ip: IpAddr, port: u16) -> Resource {
    Resource {
        kind: XdsType::Listener,
        name: names::OUTBOUND_LISTENER.into(),
        refs: Vec::new(),
        sources: Vec::new(),
        body: Body::Listener(Box::new(listener(
            names::OUTBOUND_LISTENER.into(),
            ip,
            port,
            outbound_hcm(),
        ))),
    }
}

/// What serves one inbound port: a TCP proxy, or an HTTP connection manager, to the
/// local app's cluster `inbound|PORT`.
pub(crate) fn inbound_filter(port: u16, protocol: Protocol) -> Filter {
    let name = names::inbound(port);
    if protocol == Protocol::Tcp {
        tcp_proxy(name.clone(), name)
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
        hcm(
            format!("inbound_{port}"),
            RouteSpecifier::RouteConfig(route),
            true,
        )
    }
}

fn inbound(
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    trust_domain: &str,
    mode: MtlsMode,
) -> Resource {
    let name = names::inbound(port);
    let filter = inbound_filter(port, protocol);
    Resource {
        kind: XdsType::Listener,
        refs: vec![name.clone()],
        sources: Vec::new(),
        body: Body::Listener(Box::new(secure_listener(
            name.clone(),
            ip,
            port,
            filter,
            trust_domain,
            mode,
        ))),
        name,
    }
}

pub(crate) fn for_proxy(model: &Model, mesh: &MeshConfig, proxy: &ProxyIdentity) -> Output {
    let mut out = Output::default();
    let pod = model.pod(&proxy.namespace, &proxy.pod);
    let ip = proxy
        .pod_ip
        .or(pod.and_then(|p| p.ip))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if proxy.intercepted {
        out.resources
            .extend(crate::intercept::outbound(model, proxy));
    } else {
        out.resources.push(outbound(ip, proxy.outbound_port));
    }

    let Some(pod) = pod else {
        return out;
    };
    let ports = served_ports(model, proxy, pod, &mut out.diagnostics);
    let mode = pod.mtls_mode.unwrap_or(mesh.mtls);
    let mut served = Vec::new();
    for (port, (protocol, mut sources)) in ports {
        sources.sort();
        sources.dedup();
        let mut cluster = cluster::inbound(port, proxy.app_address, protocol);
        cluster.sources = sources.clone();
        out.resources.push(cluster);
        if proxy.intercepted {
            served.push((port, protocol, sources));
            continue;
        }
        let mut listener = inbound(ip, port, protocol, &mesh.trust_domain, mode);
        listener.sources = sources;
        out.resources.push(listener);
    }
    if proxy.intercepted {
        out.resources.extend(crate::intercept::inbound(
            proxy,
            &served,
            &mesh.trust_domain,
            mode,
        ));
    }
    out
}

/// The ports a proxy's pod serves (target ports of the Services selecting it), each with
/// the protocol of the first Service port that uses it and the objects behind it.
pub(crate) fn served_ports(
    model: &Model,
    proxy: &ProxyIdentity,
    pod: &crate::model::MeshPod,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<u16, (Protocol, Vec<ObjectKey>)> {
    let pod_obj = format!("Pod {}/{}", proxy.namespace, proxy.pod);
    // target port -> protocol of the first service port that uses it.
    let pod_key = ObjectKey::new(Kind::Pod, &proxy.namespace, &proxy.pod);
    let mut ports: BTreeMap<u16, (Protocol, Vec<ObjectKey>)> = BTreeMap::new();
    for svc in model.services_selecting(pod) {
        for (i, sp) in svc.ports.iter().enumerate() {
            let target = match &sp.target {
                TargetPort::Number(n) => *n,
                TargetPort::Named(n) => match pod.container_ports.get(n) {
                    Some(p) => *p,
                    None => {
                        diagnostics.push(Diagnostic {
                            object: format!("Service {}/{}", svc.namespace, svc.name),
                            field: format!("spec.ports[{i}].targetPort"),
                            message: format!("{pod_obj} has no container port named {n:?}"),
                        });
                        continue;
                    }
                },
            };
            if target == proxy.outbound_port {
                diagnostics.push(Diagnostic {
                    object: format!("Service {}/{}", svc.namespace, svc.name),
                    field: format!("spec.ports[{i}].targetPort"),
                    message: format!("port {target} is the sidecar's outbound port on {pod_obj}"),
                });
                continue;
            }
            ports
                .entry(target)
                .or_insert((sp.protocol, vec![pod_key.clone()]))
                .1
                .push(ObjectKey::new(Kind::Service, &svc.namespace, &svc.name));
        }
    }
    ports
}
