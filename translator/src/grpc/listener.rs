//! gRPC Listeners: client Listeners by the names users put in `xds:///` targets, each an
//! `api_listener` taking its routes over ADS from its Service port's RouteConfiguration;
//! and server Listeners (A36) for each port the pod serves, mTLS required.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    NonForwardingAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use envoy_types::pb::google::protobuf::BoolValue;
use xds_types::XdsType;

use crate::grpc::cluster::offered;
use crate::grpc::tls::common;
use crate::identity::ProxyIdentity;
use crate::mesh::MeshConfig;
use crate::model::{Kind, MeshService, Model, ObjectKey, Protocol, ViewKey};
use crate::output::Diagnostic;
use crate::output::{Body, Output, Resource};
use crate::policy::authz::{self, Destination};
use crate::render::route::domains;
use crate::render::{protos, rbac};
use crate::routing::authz::{AllowPolicy, Callers, InboundAuthz, Ports, Requests, Rules};
use crate::serving::served_ports;

/// The server listener name template gRPC servers fill in (A36).
pub const SERVER_LISTENER_TEMPLATE: &str = "grpc/server?xds.resource.listening_address=%s";

/// A client Listener: the `xds:///NAME` target `name`, routed by `route`.
fn client_listener(name: String, route: &str, source: ObjectKey) -> Resource {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(protos::ads()),
            route_config_name: route.to_string(),
        })),
        http_filters: vec![protos::router_filter()],
        ..Default::default()
    };
    Resource {
        kind: XdsType::Listener,
        refs: Vec::new(),
        sources: vec![source],
        body: Body::Listener(Box::new(Listener {
            name: name.clone(),
            api_listener: Some(ApiListener {
                api_listener: Some(protos::any(&hcm)),
            }),
            ..Default::default()
        })),
        name,
    }
}

/// The client Listeners of one Service for clients in `client_ns`.
pub(crate) fn client_listeners(svc: &MeshService, client_ns: &str) -> Vec<Resource> {
    let key = ObjectKey::new(Kind::Service, &svc.namespace, &svc.name);
    let mut out = Vec::new();
    for port in svc.ports.iter().filter(|p| offered(svc, p)) {
        let route = format!("{}:{}", svc.fqdn(), port.port);
        for (name, local_only) in domains(svc, port.port) {
            // Targets name Services by DNS; the cluster IP forms are for sidecars.
            let host = name.rsplit_once(':').map_or(name.as_str(), |(h, _)| h);
            if host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
                continue;
            }
            if local_only && svc.namespace != client_ns {
                continue;
            }
            out.push(client_listener(name, &route, key.clone()));
        }
    }
    out
}

/// An address as gRPC writes it in a server listener name.
fn host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// The RBAC filter (A41) of a server listener: the port's enforced authorization, or,
/// when nothing is enforced, only peers whose certificate names a SPIFFE ID of the trust
/// domain (the CA file may be a root shared with other domains, and gRPC servers do not
/// match SANs themselves). gRPC ignores shadow rules, so dry runs are not sent.
fn server_rbac(trust_domain: &str, authz: &InboundAuthz) -> HttpFilter {
    let mesh_only = Rules {
        policies: vec![AllowPolicy {
            name: "mesh".into(),
            source: None,
            callers: Callers::IdentityPrefix(format!("spiffe://{trust_domain}/")),
            ports: Ports::All,
            requests: Requests::Any,
        }],
    };
    rbac::http_filter(Some(authz.enforced.as_ref().unwrap_or(&mesh_only)), None)
}

/// Drops the request matches gRPC cannot enforce: a header matcher on a `grpc-` name is
/// refused by gRPC servers (A41), which would keep their previous Listener. The match
/// allows nothing instead (fail closed) and a diagnostic names its target.
fn without_grpc_headers(rules: &mut Rules, diagnostics: &mut Vec<Diagnostic>) {
    for p in &mut rules.policies {
        let Requests::Http(ms) = &mut p.requests else {
            continue;
        };
        ms.retain(|m| {
            let Some((name, _)) = m.headers.iter().find(|(n, _)| n.starts_with("grpc-")) else {
                return true;
            };
            let d = Diagnostic {
                object: p.name.clone(),
                field: "rules".into(),
                message: format!(
                    "a match on header {name:?} cannot be enforced by proxyless gRPC servers (gRFC A41 refuses grpc- header matchers): it allows nothing there"
                ),
            };
            if !diagnostics.contains(&d) {
                diagnostics.push(d);
            }
            false
        });
    }
}

/// One server Listener (A36) for `ip:port`: mTLS required with a certificate of the
/// trust domain, the RPCs the port's authorization allows served.
fn server_listener(
    ip: IpAddr,
    port: u16,
    trust_domain: &str,
    authz: &InboundAuthz,
    sources: Vec<ObjectKey>,
) -> Resource {
    let name = SERVER_LISTENER_TEMPLATE.replace("%s", &host_port(ip, port));
    let hcm = HttpConnectionManager {
        stat_prefix: format!("inbound_{port}"),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: format!("inbound|{port}"),
            virtual_hosts: vec![VirtualHost {
                name: format!("inbound|{port}"),
                domains: vec!["*".into()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(Action::NonForwardingAction(NonForwardingAction {})),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })),
        http_filters: vec![server_rbac(trust_domain, authz), protos::router_filter()],
        ..Default::default()
    };
    let tls = DownstreamTlsContext {
        common_tls_context: Some(common(Vec::new())),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    Resource {
        kind: XdsType::Listener,
        refs: Vec::new(),
        sources,
        body: Body::Listener(Box::new(Listener {
            name: name.clone(),
            address: Some(protos::socket(ip, port)),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(
                        envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
                            protos::any(&hcm),
                        ),
                    ),
                }],
                transport_socket: Some(protos::tls_socket(protos::any(&tls))),
                ..Default::default()
            }],
            ..Default::default()
        })),
        name,
    }
}

/// A gRPC proxy's own resources: a server Listener per port its pod serves, on the pod
/// IP and on the wildcard addresses a server may bind (its client Listeners are its
/// view's, [`client_listeners`] per Service).
/// Server listeners always require mTLS: gRPC cannot tell TLS from plain text on one
/// port, so a permissive mode is served as strict.
pub(crate) fn own(model: &Model, mesh: &MeshConfig, proxy: &ProxyIdentity) -> Output {
    let mut out = Output::default();
    let Some(pod) = model.pod(&proxy.namespace, &proxy.pod) else {
        return out;
    };
    let ports = served_ports(model, proxy, pod, &mut out.diagnostics);
    let pod_ip = proxy.pod_ip.or(pod.ip);
    for (port, (protocol, mut sources)) in ports {
        if protocol == Protocol::Tcp {
            continue;
        }
        let mut authz = authz::inbound(model, mesh, &Destination::of(pod, port, protocol));
        if let Some(rules) = authz.enforced.as_mut() {
            without_grpc_headers(rules, &mut out.diagnostics);
        }
        sources.extend(authz.sources());
        sources.sort();
        sources.dedup();
        let mut ips: Vec<IpAddr> = vec![
            IpAddr::from([0, 0, 0, 0]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 0]),
        ];
        ips.extend(pod_ip);
        ips.dedup();
        for ip in ips {
            out.resources.push(server_listener(
                ip,
                port,
                &mesh.trust_domain,
                &authz,
                sources.clone(),
            ));
        }
    }
    out
}

/// The client Listeners of every Service a gRPC view sees.
pub(crate) fn view_client_listeners(model: &Model, view: &ViewKey) -> Vec<Resource> {
    model
        .services()
        .filter(|s| view.sees(s))
        .flat_map(|s| client_listeners(s, &view.namespace))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::authz::RequestMatch;

    #[test]
    fn grpc_header_matches_allow_nothing_and_are_named() {
        let m = |header: &str| RequestMatch {
            methods: Vec::new(),
            path_regex: Some("/pkg.Svc/.*".into()),
            headers: vec![(header.into(), ".*".into())],
        };
        let mut rules = Rules {
            policies: vec![AllowPolicy {
                name: "TrafficTarget shop/t".into(),
                source: None,
                callers: Callers::Identities(vec!["spiffe://td/ns/shop/sa/web".into()]),
                ports: Ports::All,
                requests: Requests::Http(vec![m("grpc-timeout"), m("x-env")]),
            }],
        };
        let mut diagnostics = Vec::new();
        without_grpc_headers(&mut rules, &mut diagnostics);
        assert_eq!(
            rules.policies[0].requests,
            Requests::Http(vec![m("x-env")]),
            "the grpc- match is gone, the other stays"
        );
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].object, "TrafficTarget shop/t");
        assert!(diagnostics[0].message.contains("grpc-timeout"));
    }
}
