//! The proxyless gRPC emitter: the resource shapes gRPC clients and xDS-enabled gRPC
//! servers accept (gRFCs A27, A28, A29, A31, A36, A44), rendered from the same routing
//! model as Envoy's (`routing`).
//!
//! - Client Listeners by the names users put in `xds:///` targets (`NAME.NS.svc.cluster.local:PORT`,
//!   `NAME.NS.svc:PORT`, `NAME.NS:PORT`, `NAME:PORT` in the client's own namespace, and
//!   each without `:PORT` for the Service's default port), each an `api_listener` whose
//!   HTTP connection manager takes its routes over ADS from one RouteConfiguration per
//!   Service port (named `FQDN:PORT`, one virtual host for every authority).
//! - Clusters: EDS over ADS, round robin, mesh mTLS through the bootstrap's certificate
//!   provider [`CERT_PROVIDER`] (gRPC has no SDS), checking the backends' SPIFFE IDs.
//!   Endpoints are the ClusterLoadAssignments Envoy gets (IP literals, locality weights).
//! - Server Listeners (A36) named `grpc/server?xds.resource.listening_address=IP:PORT` for
//!   each port the pod serves, on its pod IP and the wildcard addresses, with a
//!   non-forwarding route and mTLS required.
//!
//! Never emitted for gRPC: SDS, static or DNS clusters (headless pods, ExternalName),
//! TCP ports, `transport_socket_matches`, route timeouts (`max_stream_duration` instead),
//! per-try timeouts and HTTP retry conditions (both ignored by gRPC: a diagnostic says so).

use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    NonForwardingAction, RetryPolicy as GrpcRetry, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost,
    retry_policy::RetryBackOff,
    route::Action,
    route_action::{ClusterSpecifier, MaxStreamDuration},
    route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use crate::identity::ProxyIdentity;
use crate::model::{Kind, MeshService, Model, ObjectKey, Protocol, ServicePort, UpstreamTls};
use crate::routing::{Dest, Match, NO_BACKEND, PathMatch, PortRouting};
use crate::{Body, Diagnostic, MeshConfig, Output, Resource, names, protos};
use xds_types::XdsType;

/// The bootstrap's `certificate_providers` key that clusters and server listeners name.
pub const CERT_PROVIDER: &str = "rudder";

/// The server listener name template gRPC servers fill in (A36).
pub const SERVER_LISTENER_TEMPLATE: &str = "grpc/server?xds.resource.listening_address=%s";

/// Retry conditions gRPC clients act on (A44).
const GRPC_RETRY_ON: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Whether gRPC clients are offered this Service port: HTTP ports of Services with
/// endpoints (not ExternalName).
pub(crate) fn offered(svc: &MeshService, port: &ServicePort) -> bool {
    svc.external_name.is_none() && port.protocol != Protocol::Tcp
}

fn provider() -> Option<CertificateProviderPluginInstance> {
    Some(CertificateProviderPluginInstance {
        instance_name: CERT_PROVIDER.into(),
        certificate_name: String::new(),
    })
}

/// The provider's certificate, and its CA checking the peer, with SAN matchers.
/// gRPC checks SANs only through the deprecated `match_subject_alt_names` (A29).
#[allow(deprecated)]
fn common(sans: Vec<StringMatcher>) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_provider_instance: provider(),
        validation_context_type: Some(ValidationContextType::ValidationContext(
            CertificateValidationContext {
                ca_certificate_provider_instance: provider(),
                match_subject_alt_names: sans,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn matcher(pattern: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

/// The gRPC Cluster of one Service port.
pub(crate) fn cluster(
    model: &Model,
    mesh: &MeshConfig,
    svc: &MeshService,
    port: &ServicePort,
) -> Resource {
    let name = names::outbound_cluster(svc, port.port);
    let mut cluster = Cluster {
        name: name.clone(),
        lb_policy: LbPolicy::RoundRobin as i32,
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(protos::ads()),
            service_name: name.clone(),
        }),
        ..Default::default()
    };
    // gRPC has no per-endpoint socket choice: mTLS unless the Service is forced plain.
    if svc.upstream_tls != UpstreamTls::Plain {
        let ids = crate::cluster::identities(model, mesh, svc);
        let sans = if ids.is_empty() {
            vec![matcher(MatchPattern::Prefix(format!(
                "spiffe://{}/",
                mesh.trust_domain
            )))]
        } else {
            ids.into_iter()
                .map(|id| matcher(MatchPattern::Exact(id)))
                .collect()
        };
        cluster.transport_socket = Some(crate::tls::socket(protos::any(&UpstreamTlsContext {
            common_tls_context: Some(common(sans)),
            ..Default::default()
        })));
    }
    Resource {
        kind: XdsType::Cluster,
        refs: vec![name.clone()],
        sources: vec![ObjectKey::new(Kind::Service, &svc.namespace, &svc.name)],
        name,
        body: Body::Cluster(Box::new(cluster)),
    }
}

/// The void cluster of a Service port's gRPC route (`FQDN:PORT`): an EDS cluster without
/// endpoints, so a share of calls that must fail (a Gateway API backend that does not
/// resolve) fails with UNAVAILABLE at once. A cluster name that never exists would do
/// the same only after a client's 15-second does-not-exist timer, holding back the
/// client's whole channel configuration until then.
pub(crate) fn void_name(route: &str) -> String {
    format!("{}|{route}", crate::routing::NO_BACKEND)
}

/// The void cluster `name` and its empty ClusterLoadAssignment (see [`void_name`]).
pub(crate) fn void_resources(name: &str, source: ObjectKey) -> [Resource; 2] {
    let cluster = Cluster {
        name: name.to_string(),
        lb_policy: LbPolicy::RoundRobin as i32,
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(protos::ads()),
            service_name: name.to_string(),
        }),
        ..Default::default()
    };
    [
        Resource {
            kind: XdsType::Cluster,
            name: name.to_string(),
            refs: vec![name.to_string()],
            sources: vec![source.clone()],
            body: Body::Cluster(Box::new(cluster)),
        },
        Resource {
            kind: XdsType::Endpoint,
            name: name.to_string(),
            refs: Vec::new(),
            sources: vec![source],
            body: Body::Endpoint(Box::new(ClusterLoadAssignment {
                cluster_name: name.to_string(),
                ..Default::default()
            })),
        },
    ]
}

/// The void cluster resources a gRPC route refers to, if any.
pub(crate) fn voids_of(route: &Resource) -> Vec<Resource> {
    let prefix = format!("{}|", crate::routing::NO_BACKEND);
    let source = route
        .sources
        .first()
        .cloned()
        .unwrap_or_else(|| ObjectKey::new(Kind::Service, "", ""));
    route
        .refs
        .iter()
        .filter(|r| r.starts_with(&prefix))
        .flat_map(|name| void_resources(name, source.clone()))
        .collect()
}

/// The gRPC rendering of a destination (as Envoy's), leaving out clusters gRPC clients
/// have no Cluster for (`not_grpc`); None when nothing is left.
fn specifier(dest: &Dest, not_grpc: &[String]) -> Option<ClusterSpecifier> {
    let offered = |c: &String| !not_grpc.contains(c);
    let kept = match dest {
        Dest::Cluster(c) if offered(c) => dest.clone(),
        Dest::Cluster(_) | Dest::Status(_) => return None,
        Dest::Weighted(w) => {
            let w: Vec<(String, u32)> = w.iter().filter(|(c, _)| offered(c)).cloned().collect();
            if w.is_empty() {
                return None;
            }
            Dest::Weighted(w)
        }
    };
    crate::route::cluster_specifier(&kept)
}

/// The RouteConfiguration of one Service port for gRPC clients, and what of the
/// routing model gRPC cannot honour.
pub(crate) fn route(r: &PortRouting, namespace: &str) -> (Resource, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let void = void_name(&r.name);
    let retry = r.retry.as_ref().and_then(|p| {
        let object = format!("RetryPolicy {namespace}/{}", p.name);
        let on: Vec<&str> = p
            .on
            .iter()
            .map(String::as_str)
            .filter(|c| GRPC_RETRY_ON.contains(c))
            .collect();
        let ignored: Vec<String> = p
            .on
            .iter()
            .filter(|c| !GRPC_RETRY_ON.contains(&c.as_str()))
            .cloned()
            .chain(p.codes.iter().map(u32::to_string))
            .collect();
        if !ignored.is_empty() {
            diagnostics.push(Diagnostic {
                object: object.clone(),
                field: "spec.retryOn".into(),
                message: format!(
                    "{} do not apply to proxyless gRPC clients of {} (they retry on gRPC status codes only)",
                    ignored.join(", "),
                    r.name
                ),
            });
        }
        if p.per_try_timeout.is_some() {
            diagnostics.push(Diagnostic {
                object: object.clone(),
                field: "spec.perTryTimeout".into(),
                message: format!("proxyless gRPC clients of {} have no per-try timeout", r.name),
            });
        }
        if p.budget {
            diagnostics.push(Diagnostic {
                object: object.clone(),
                field: "spec.budget".into(),
                message: format!("proxyless gRPC clients of {} have no retry budget", r.name),
            });
        }
        if p.num_retries > 4 {
            diagnostics.push(Diagnostic {
                object,
                field: "spec.numRetries".into(),
                message: format!(
                    "proxyless gRPC clients of {} make at most 5 attempts (4 retries)",
                    r.name
                ),
            });
        }
        // gRPC refuses a retry policy of zero retries: none is sent.
        (!on.is_empty() && p.num_retries > 0).then(|| GrpcRetry {
            retry_on: on.join(","),
            num_retries: Some(UInt32Value {
                value: p.num_retries,
            }),
            retry_back_off: p.backoff.map(|(base, max)| RetryBackOff {
                base_interval: Some(protos::duration(base)),
                max_interval: max.map(protos::duration),
            }),
            ..Default::default()
        })
    });
    let mut routes = Vec::new();
    for rule in &r.rules {
        let mut m = RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        };
        let extra = rule.extra.as_deref();
        let mut ignored = |field: &str, what: &str| {
            let Some(src) = extra.and_then(|e| e.source.as_ref()) else {
                return;
            };
            let d = Diagnostic {
                object: src.to_string(),
                field: field.into(),
                message: format!(
                    "{what} do not apply to proxyless gRPC clients of {}",
                    r.name
                ),
            };
            if !diagnostics.contains(&d) {
                diagnostics.push(d);
            }
        };
        if let Some(hm) = &rule.matches {
            // gRPC calls are POSTs: a match on other methods never selects one.
            if !hm.methods.is_empty() && !hm.methods.iter().any(|x| x.eq_ignore_ascii_case("POST"))
            {
                continue;
            }
            // gRPC clients never match a route on query parameters.
            if !hm.query.is_empty() {
                ignored(
                    "spec.rules.matches.queryParams",
                    "rules matching query parameters",
                );
                continue;
            }
            let mut g = Match {
                methods: Vec::new(),
                ..hm.clone()
            };
            // gRPC knows no separated prefix: the same as a regular expression.
            if let PathMatch::Segments(p) = &g.path {
                g.path = PathMatch::Regex(format!("{}(/.*)?", crate::gamma::regex_quote(p)));
            }
            m = crate::route::route_match(&g);
        }
        if let Some(e) = extra {
            if !e.request_headers.is_empty() || !e.response_headers.is_empty() {
                ignored("spec.rules.filters", "header modifier filters");
            }
            if e.backend_timeout.is_some() {
                ignored(
                    "spec.rules.timeouts.backendRequest",
                    "backend request timeouts",
                );
            }
            if e.retry.is_some() {
                ignored("spec.rules.retry", "HTTPRoute retries (HTTP status codes)");
            }
            if !e.mirrors.is_empty() {
                ignored("spec.rules.filters", "request mirrors");
            }
            if !e.backend_headers.is_empty() {
                ignored(
                    "spec.rules.backendRefs.filters",
                    "per-backend header filters",
                );
            }
        }
        let kept = if extra.is_some() {
            // A Gateway API rule: a share that must fail (a backend that did not resolve
            // or that gRPC clients are not offered) goes to this port's void cluster,
            // whose calls fail with UNAVAILABLE at once; direct_response is never sent
            // (grpc-java refuses it).
            let fails = |c: &String| c == NO_BACKEND || r.not_grpc.contains(c);
            match &rule.dest {
                Dest::Status(_) => Dest::Cluster(void.clone()),
                Dest::Cluster(c) if fails(c) => Dest::Cluster(void.clone()),
                Dest::Cluster(c) => Dest::Cluster(c.clone()),
                Dest::Weighted(w) => {
                    let mut out: Vec<(String, u32)> = Vec::new();
                    for (c, weight) in w {
                        let c = if fails(c) { void.clone() } else { c.clone() };
                        match out.iter_mut().find(|(o, _)| *o == c) {
                            Some((_, x)) => *x = x.saturating_add(*weight),
                            None => out.push((c, *weight)),
                        }
                    }
                    Dest::Weighted(out)
                }
            }
        } else {
            // SMI: backends gRPC clients are not offered are left out.
            match (&rule.dest, specifier(&rule.dest, &r.not_grpc)) {
                (_, None) => continue,
                (Dest::Weighted(w), Some(_)) => Dest::Weighted(
                    w.iter()
                        .filter(|(c, _)| !r.not_grpc.contains(c))
                        .cloned()
                        .collect(),
                ),
                (d, Some(_)) => d.clone(),
            }
        };
        let timeout = extra
            .and_then(|e| e.timeout)
            .or(r.timeout)
            .filter(|t| !t.is_zero());
        routes.push(Route {
            r#match: Some(m),
            action: Some(crate::route::action(
                &kept,
                RouteAction {
                    max_stream_duration: timeout.map(|t| MaxStreamDuration {
                        max_stream_duration: Some(protos::duration(t)),
                        ..Default::default()
                    }),
                    retry_policy: retry.clone(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        });
    }
    let uses_void = routes.iter().any(|route| {
        matches!(&route.action, Some(Action::Route(a)) if match &a.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => *c == void,
            Some(ClusterSpecifier::WeightedClusters(w)) => w.clusters.iter().any(|x| x.name == void),
            _ => false,
        })
    });
    let config = RouteConfiguration {
        name: r.name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: r.name.clone(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    };
    if !r.not_grpc.is_empty() {
        let route = r.sources.iter().find(|s| s.kind.is_route());
        let (object, field, outcome) = match route {
            Some(k) => (
                k.to_string(),
                "spec.rules.backendRefs",
                "their share of calls fails with UNAVAILABLE",
            ),
            None => (
                r.sources
                    .iter()
                    .find(|s| s.kind == Kind::TrafficSplit)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| format!("Service {namespace}")),
                "spec.backends",
                "their share goes to the other backends",
            ),
        };
        diagnostics.push(Diagnostic {
            object,
            field: field.into(),
            message: format!(
                "{} are not offered to proxyless gRPC clients of {} (ExternalName or TCP); {outcome}",
                r.not_grpc.join(", "),
                r.name
            ),
        });
    }
    let mut refs: Vec<String> = r
        .refs
        .iter()
        .filter(|c| !r.not_grpc.contains(c))
        .cloned()
        .collect();
    if uses_void {
        refs.push(void.clone());
    }
    refs.sort();
    refs.dedup();
    (
        Resource {
            kind: XdsType::Route,
            name: r.name.clone(),
            refs,
            sources: r.sources.clone(),
            body: Body::Route(Box::new(config)),
        },
        diagnostics,
    )
}

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
        for (name, local_only) in crate::route::domains(svc, port.port) {
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

/// The RBAC filter (A41) of a server listener: only peers whose certificate names a
/// SPIFFE ID of the trust domain (the CA file may be a root shared with other domains,
/// and gRPC servers do not match SANs themselves).
fn trust_domain_only(trust_domain: &str) -> HttpFilter {
    use envoy_types::pb::envoy::config::rbac::v3::{
        Permission, Policy, Principal, Rbac as Rules, permission, principal, rbac::Action,
    };
    use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
    let policy = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::Authenticated(
                principal::Authenticated {
                    principal_name: Some(matcher(MatchPattern::Prefix(format!(
                        "spiffe://{trust_domain}/"
                    )))),
                },
            )),
        }],
        ..Default::default()
    };
    let rbac = Rbac {
        rules: Some(Rules {
            action: Action::Allow as i32,
            // One key: a protobuf map's encoding follows HashMap order.
            policies: [("mesh".to_string(), policy)].into_iter().collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(protos::any(&rbac))),
        ..Default::default()
    }
}

/// One server Listener (A36) for `ip:port`: mTLS required with a certificate of the
/// trust domain, every RPC served.
fn server_listener(ip: IpAddr, port: u16, trust_domain: &str, sources: Vec<ObjectKey>) -> Resource {
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
        http_filters: vec![trust_domain_only(trust_domain), protos::router_filter()],
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
                transport_socket: Some(crate::tls::socket(protos::any(&tls))),
                ..Default::default()
            }],
            ..Default::default()
        })),
        name,
    }
}

/// A gRPC proxy's own resources: the client Listeners its namespace sees (passed in:
/// they are shared by every gRPC client of the view) and a server Listener per port its
/// pod serves, on the pod IP and on the wildcard addresses a server may bind.
/// Server listeners always require mTLS: gRPC cannot tell TLS from plain text on one
/// port, so a permissive mode is served as strict.
pub(crate) fn own(model: &Model, mesh: &MeshConfig, proxy: &ProxyIdentity) -> Output {
    let mut out = Output::default();
    let Some(pod) = model.pod(&proxy.namespace, &proxy.pod) else {
        return out;
    };
    let ports = crate::listener::served_ports(model, proxy, pod, &mut out.diagnostics);
    let pod_ip = proxy.pod_ip.or(pod.ip);
    for (port, (protocol, mut sources)) in ports {
        if protocol == Protocol::Tcp {
            continue;
        }
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
                sources.clone(),
            ));
        }
    }
    out
}
