//! The outbound RouteConfiguration: one virtual host per HTTP service port, matched by
//! every name a Kubernetes client may use for it.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};

use crate::model::{MeshService, Model, Protocol, ServicePort};
use crate::protos;
use crate::{Body, Diagnostic, Output, Resource, XdsType, names};

/// The names a client in `client_ns` may use for `svc` on `port`: the full and short
/// DNS forms (short only in the same namespace) and the cluster IP, each with `:PORT`,
/// and also without it for the service's default port.
pub(crate) fn domains(svc: &MeshService, port: u16, client_ns: &str) -> Vec<String> {
    let mut hosts = vec![
        svc.fqdn(),
        format!("{}.{}.svc", svc.name, svc.namespace),
        format!("{}.{}", svc.name, svc.namespace),
    ];
    if svc.namespace == client_ns {
        hosts.push(svc.name.clone());
    }
    let mut out: Vec<String> = hosts.iter().map(|h| format!("{h}:{port}")).collect();
    if let Some(ip) = svc.cluster_ip {
        out.push(match ip {
            std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
            std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        });
        hosts.push(ip.to_string());
    }
    if svc.default_port() == Some(port) {
        out.extend(hosts);
    }
    out
}

fn virtual_host(svc: &MeshService, port: &ServicePort, domains: Vec<String>) -> VirtualHost {
    let cluster = names::outbound_cluster(svc, port.port);
    let action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster)),
        // gRPC streams may live longer than any default request timeout.
        timeout: (port.protocol == Protocol::Grpc).then(|| protos::millis(0)),
        ..Default::default()
    };
    VirtualHost {
        name: format!("{}:{}", svc.fqdn(), port.port),
        domains,
        routes: vec![Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(Action::Route(action)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub(crate) fn outbound(model: &Model, client_ns: &str) -> Output {
    let mut out = Output::default();
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut vhosts = Vec::new();
    let mut refs = Vec::new();
    for svc in model.services() {
        for port in svc.ports.iter().filter(|p| p.protocol != Protocol::Tcp) {
            let vh_name = format!("{}:{}", svc.fqdn(), port.port);
            let mut kept = Vec::new();
            for d in domains(svc, port.port, client_ns) {
                match owner.get(&d) {
                    Some(first) => out.diagnostics.push(Diagnostic {
                        object: format!("Service {}/{}", svc.namespace, svc.name),
                        field: "spec.clusterIP".into(),
                        message: format!(
                            "host {d:?} is already served by {first}; not routed here"
                        ),
                    }),
                    None => {
                        owner.insert(d.clone(), vh_name.clone());
                        kept.push(d);
                    }
                }
            }
            refs.push(names::outbound_cluster(svc, port.port));
            vhosts.push(virtual_host(svc, port, kept));
        }
    }
    out.resources.push(Resource {
        kind: XdsType::Route,
        name: names::OUTBOUND_ROUTE.into(),
        refs,
        body: Body::Route(Box::new(RouteConfiguration {
            name: names::OUTBOUND_ROUTE.into(),
            virtual_hosts: vhosts,
            ..Default::default()
        })),
    });
    out
}
