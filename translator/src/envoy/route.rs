//! The outbound RouteConfiguration: one virtual host per HTTP service port, matched by
//! every name a Kubernetes client may use for it; in the table, or apart from it over
//! VHDS ([`table_apart`], [`host_apart`]) for the Envoys that take them so.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy as EnvoyRetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, Vhds,
    VirtualHost, WeightedCluster,
    retry_policy::RetryBackOff,
    route::Action,
    route_action::ClusterNotFoundResponseCode,
    route_action::ClusterSpecifier,
    route_action::{UpgradeConfig, upgrade_config::ConnectConfig},
    route_match::ConnectMatcher,
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};

use xds_types::XdsType;

use crate::encoded::Encoded;
use crate::model::{Kind, MeshService, Model, ObjectKey, Protocol, ServicePort};
use crate::names;
use crate::output::{Body, Diagnostic, Output, Resource};
use crate::render::endpoint::{PodAddress, pod_addresses};
use crate::render::protos;
use crate::render::route::{
    action, apply_rewrite, cluster_specifier, domains, redirect_action, route_match,
};
use crate::routing::ir::{Backend, Dest, HeaderEdits, PortRouting, Retry};

/// Header changes as Envoy's `*_headers_to_add` and `*_headers_to_remove`.
pub(crate) fn header_edits(e: &HeaderEdits) -> (Vec<HeaderValueOption>, Vec<String>) {
    let option = |(k, v): &(String, String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            // Envoy reads header values as format strings (`%REQ(...)%`, `%ENVIRONMENT(...)%`):
            // a value is literal text, so `%` is escaped.
            value: v.replace('%', "%%"),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    let add = e
        .set
        .iter()
        .map(|h| option(h, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .chain(
            e.add
                .iter()
                .map(|h| option(h, HeaderAppendAction::AppendIfExistsOrAdd)),
        )
        .collect();
    (add, e.remove.clone())
}

/// Per-backend header changes on the action's weighted clusters (a single cluster
/// becomes a weighted cluster of one).
fn backend_header_edits(a: &mut RouteAction, edits: &[(String, HeaderEdits, HeaderEdits)]) {
    if let Some(ClusterSpecifier::Cluster(c)) = &a.cluster_specifier {
        a.cluster_specifier = Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: vec![ClusterWeight {
                name: c.clone(),
                weight: Some(UInt32Value { value: 1 }),
                ..Default::default()
            }],
            ..Default::default()
        }));
    }
    if let Some(ClusterSpecifier::WeightedClusters(w)) = &mut a.cluster_specifier {
        for cw in &mut w.clusters {
            if let Some((_, req, resp)) = edits.iter().find(|(c, _, _)| *c == cw.name) {
                (cw.request_headers_to_add, cw.request_headers_to_remove) = header_edits(req);
                (cw.response_headers_to_add, cw.response_headers_to_remove) = header_edits(resp);
            }
        }
    }
}

/// Retries and the timeout for Envoy: the RetryPolicy in effect, else only what is safe
/// for every request (the request never reached the upstream); gRPC streams have no
/// timeout unless a policy sets one.
fn retry_and_timeout(
    retry: Option<&Retry>,
    timeout: Option<std::time::Duration>,
    protocol: Protocol,
) -> (EnvoyRetryPolicy, Option<Duration>) {
    let dur = protos::duration;
    let timeout = timeout
        .map(dur)
        .or_else(|| (protocol == Protocol::Grpc).then(|| protos::millis(0)));
    let Some(r) = retry else {
        return (
            EnvoyRetryPolicy {
                retry_on: "connect-failure,refused-stream,reset-before-request".into(),
                num_retries: Some(UInt32Value { value: 2 }),
                ..Default::default()
            },
            timeout,
        );
    };
    let mut on: Vec<&str> = r.on.iter().map(String::as_str).collect();
    if !r.codes.is_empty() {
        on.push("retriable-status-codes");
    }
    let retry = EnvoyRetryPolicy {
        retry_on: on.join(","),
        retriable_status_codes: r.codes.clone(),
        num_retries: Some(UInt32Value {
            value: r.num_retries,
        }),
        per_try_timeout: r.per_try_timeout.map(dur),
        retry_back_off: r.backoff.map(|(base, max)| RetryBackOff {
            base_interval: Some(dur(base)),
            max_interval: max.map(dur),
        }),
        ..Default::default()
    };
    (retry, timeout)
}

/// One Service port's virtual host, built once and shared by the route tables of every
/// client namespace that can see it; only its domains differ between namespaces.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VhostPart {
    /// The Service.
    pub service: ObjectKey,
    /// Its names, each with whether only the Service's own namespace may use it.
    pub domains: Vec<(String, bool)>,
    /// The virtual host, domains left empty.
    pub vhost: VirtualHost,
    /// Clusters it routes to.
    pub refs: Vec<String>,
    /// Objects it was made from.
    pub sources: Vec<ObjectKey>,
    /// One pod of a headless Service: another Service over the same pod claiming the
    /// same address reaches the same pod, so a taken name is no diagnostic.
    pub pod: bool,
    /// Its virtual host apart as last encoded ([`ApartMemo`]).
    pub apart: ApartMemo,
}

/// A part's virtual host apart as last encoded, with the names it kept then: an assembly
/// that keeps the same names, with the sources at the same revisions, takes it instead of
/// building and encoding the host again (a canary step or a new Service re-assembles
/// every host of a view). It is no part of the part's value: parts compare equal whatever
/// their memos hold, and a clone starts empty.
#[derive(Default)]
pub(crate) struct ApartMemo(parking_lot::Mutex<Option<(Vec<String>, Arc<Encoded>)>>);

impl ApartMemo {
    /// The encoding kept for `kept`, if the sources are still at its revisions.
    pub(crate) fn get(
        &self,
        kept: &[&str],
        rev: impl Fn(&ObjectKey) -> u64,
    ) -> Option<Arc<Encoded>> {
        let memo = self.0.lock();
        let (names, enc) = memo.as_ref()?;
        let same = names.len() == kept.len()
            && names.iter().zip(kept).all(|(a, b)| a == b)
            && enc.sources.iter().all(|s| rev(&s.key) == s.rev);
        same.then(|| enc.clone())
    }

    /// Keeps `enc` as the encoding for `kept`.
    pub(crate) fn set(&self, kept: &[&str], enc: &Arc<Encoded>) {
        *self.0.lock() = Some((kept.iter().map(|d| d.to_string()).collect(), enc.clone()));
    }
}

impl Clone for ApartMemo {
    fn clone(&self) -> Self {
        ApartMemo::default()
    }
}

impl PartialEq for ApartMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for ApartMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApartMemo")
    }
}

/// The virtual hosts of one Service's ports: HTTP ports route requests; TCP ports take
/// HTTP CONNECT to `NAME:PORT` and carry the tunnel as TCP. A headless Service also gets
/// one virtual host per pod and port, for clients that call the pod by its own address
/// or its StatefulSet name.
///
/// `routings` is the routing IR of each port of the Service, in order.
pub(crate) fn vhost_parts(
    model: &Model,
    svc: &MeshService,
    routings: &[PortRouting],
) -> Vec<VhostPart> {
    let key = ObjectKey::new(Kind::Service, &svc.namespace, &svc.name);
    let mut out = Vec::new();
    for (port, routing) in svc.ports.iter().zip(routings) {
        let mut vhost = virtual_host(routing, port.port);
        let (refs, sources) = (routing.refs.clone(), routing.sources.clone());
        let mut names = domains(svc, port.port);
        if port.protocol == Protocol::Tcp {
            // CONNECT always names the port.
            let suffix = format!(":{}", port.port);
            names.retain(|(d, _)| d.ends_with(&suffix));
            // Matches select requests, which have no meaning for a tunnel: the rule for
            // every other request carries it.
            vhost.routes = routing
                .rules
                .last()
                .and_then(|rule| cluster_specifier(&rule.dest))
                .map(connect_route)
                .into_iter()
                .collect();
        }
        out.push(VhostPart {
            service: key.clone(),
            domains: names,
            vhost,
            refs,
            sources,
            pod: false,
            apart: ApartMemo::default(),
        });
        if svc.headless && svc.external_name.is_none() {
            out.extend(pod_vhosts(model, svc, port, routing));
        }
    }
    out
}

/// Every request (`prefix: /`).
fn every_path() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".into())),
        ..Default::default()
    }
}

/// A request route to `dest` with the port's timeout and retry policy.
fn http_route(
    m: RouteMatch,
    dest: &Dest,
    timeout: Option<Duration>,
    retry_policy: &EnvoyRetryPolicy,
) -> Route {
    Route {
        r#match: Some(m),
        action: Some(action(
            dest,
            RouteAction {
                timeout,
                retry_policy: Some(retry_policy.clone()),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// A route that accepts HTTP CONNECT and carries the tunnel's bytes as TCP.
fn connect_route(dest: ClusterSpecifier) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::ConnectMatcher(ConnectMatcher {})),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(dest),
            // A tunnel lives as long as its connection.
            timeout: Some(protos::millis(0)),
            upgrade_configs: vec![UpgradeConfig {
                upgrade_type: "CONNECT".into(),
                connect_config: Some(ConnectConfig::default()),
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The names a client may use for one pod of a headless Service: its address and, with
/// a hostname, `HOST.SVC.NS.svc.cluster.local` and shorter forms, each with `:PORT`
/// and, on port 80, without.
fn pod_domains(svc: &MeshService, addr: &PodAddress) -> Vec<(String, bool)> {
    let mut hosts = vec![(
        match addr.ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        },
        false,
    )];
    if let Some(h) = &addr.hostname {
        let (s, ns) = (&svc.name, &svc.namespace);
        hosts.push((format!("{h}.{s}.{ns}.svc.cluster.local"), false));
        hosts.push((format!("{h}.{s}.{ns}.svc"), false));
        hosts.push((format!("{h}.{s}.{ns}"), false));
        hosts.push((format!("{h}.{s}"), true));
    }
    let mut out: Vec<(String, bool)> = hosts
        .iter()
        .map(|(h, local)| (format!("{h}:{}", addr.port), *local))
        .collect();
    if addr.port == 80 {
        out.extend(hosts);
    }
    out
}

/// One virtual host per ready pod of a headless Service on `port`, to that pod alone:
/// the port's RetryPolicy applies; a TrafficSplit does not (the client chose the pod).
fn pod_vhosts(
    model: &Model,
    svc: &MeshService,
    port: &ServicePort,
    routing: &PortRouting,
) -> Vec<VhostPart> {
    let (retry_policy, timeout) =
        retry_and_timeout(routing.retry.as_ref(), routing.timeout, port.protocol);
    let mut sources = vec![ObjectKey::new(Kind::Service, &svc.namespace, &svc.name)];
    sources.extend(
        model
            .slices_of(svc)
            .map(|sl| ObjectKey::new(Kind::EndpointSlice, &sl.namespace, &sl.name)),
    );
    if let Some(p) = &routing.retry {
        sources.push(ObjectKey::new(Kind::RetryPolicy, &svc.namespace, &p.name));
    }
    pod_addresses(model, svc, port)
        .into_iter()
        .map(|addr| {
            let cluster = names::pod_cluster(svc, addr.port, addr.ip);
            let dest = ClusterSpecifier::Cluster(cluster.clone());
            let route = if port.protocol == Protocol::Tcp {
                connect_route(dest)
            } else {
                http_route(
                    every_path(),
                    &Dest::Cluster(cluster.clone()),
                    timeout,
                    &retry_policy,
                )
            };
            VhostPart {
                service: ObjectKey::new(Kind::Service, &svc.namespace, &svc.name),
                domains: pod_domains(svc, &addr),
                vhost: VirtualHost {
                    name: cluster.clone(),
                    routes: vec![route],
                    ..Default::default()
                },
                refs: vec![cluster],
                sources: sources.clone(),
                pod: true,
                apart: ApartMemo::default(),
            }
        })
        .collect()
}

/// The Envoy virtual host of the routing of Service port `port` (domains left empty).
fn virtual_host(r: &PortRouting, port: u16) -> VirtualHost {
    let (retry_policy, timeout) = retry_and_timeout(r.retry.as_ref(), r.timeout, r.protocol);
    let routes = r
        .rules
        .iter()
        .map(|rule| {
            let m = rule
                .matches
                .as_ref()
                .map(route_match)
                .unwrap_or_else(every_path);
            let Some(extra) = rule.extra.as_deref() else {
                return http_route(m, &rule.dest, timeout, &retry_policy);
            };
            // A Gateway API rule: its own retry and timeouts win over the RetryPolicy's.
            let (mut retry, timeout) = retry_and_timeout(
                extra.retry.as_ref().or(r.retry.as_ref()),
                extra.timeout.or(r.timeout),
                r.protocol,
            );
            if let Some(t) = extra.backend_timeout {
                retry.per_try_timeout = Some(protos::duration(t));
            }
            let mut route = http_route(m, &rule.dest, timeout, &retry);
            // The share of a backend that did not resolve fails with the rule's status.
            let to_no_backend = match &rule.dest {
                Dest::NoBackend => true,
                Dest::Weighted(w) => w.iter().any(|(b, _)| *b == Backend::Missing),
                Dest::Cluster(_) | Dest::Status(_) => false,
            };
            if to_no_backend
                && extra.no_backend_status == 500
                && let Some(Action::Route(a)) = route.action.as_mut()
            {
                a.cluster_not_found_response_code =
                    ClusterNotFoundResponseCode::InternalServerError as i32;
            }
            (
                route.request_headers_to_add,
                route.request_headers_to_remove,
            ) = header_edits(&extra.request_headers);
            (
                route.response_headers_to_add,
                route.response_headers_to_remove,
            ) = header_edits(&extra.response_headers);
            if let Some(Action::Route(a)) = route.action.as_mut() {
                a.request_mirror_policies = extra
                    .mirrors
                    .iter()
                    .map(|(cluster, per_million)| RequestMirrorPolicy {
                        cluster: cluster.clone(),
                        runtime_fraction: Some(RuntimeFractionalPercent {
                            default_value: Some(FractionalPercent {
                                numerator: *per_million,
                                denominator: DenominatorType::Million as i32,
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect();
                if !extra.backend_headers.is_empty() {
                    backend_header_edits(a, &extra.backend_headers);
                }
            }
            redirect_and_rewrite(&mut route, rule.matches.as_ref(), extra, port);
            route
        })
        .collect();
    VirtualHost {
        name: r.name.clone(),
        routes,
        ..Default::default()
    }
}

/// A Gateway API rule's `RequestRedirect` (the route answers with it instead of
/// forwarding) or `URLRewrite` (on the route's action), on Service port `port`.
fn redirect_and_rewrite(
    route: &mut Route,
    m: Option<&crate::routing::ir::Match>,
    extra: &crate::routing::ir::RuleExtra,
    port: u16,
) {
    if let Some(r) = &extra.redirect {
        route.action = Some(Action::Redirect(redirect_action(r, m, port)));
    } else if let Some(rw) = &extra.rewrite
        && let Some(Action::Route(a)) = route.action.as_mut()
    {
        apply_rewrite(a, rw, m);
    }
}

/// A virtual host part as one table claims it: the names it keeps there.
pub(crate) struct Claimed<'a> {
    /// The part.
    pub part: &'a VhostPart,
    /// Its names no virtual host before it took (at least one).
    pub kept: Vec<&'a str>,
}

impl Claimed<'_> {
    /// The virtual host with the names it kept.
    fn vhost(&self) -> VirtualHost {
        VirtualHost {
            domains: self.kept.iter().map(|d| d.to_string()).collect(),
            ..self.part.vhost.clone()
        }
    }
}

/// The virtual hosts of the outbound table for clients in `client_ns`, in order: each
/// name goes to the first virtual host that claims it; a later claim is a diagnostic on
/// its Service.
pub(crate) fn claim<'a>(
    parts: impl IntoIterator<Item = &'a VhostPart>,
    client_ns: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Claimed<'a>> {
    // Sized once: every change re-claims a view's thousands of names.
    let parts: Vec<&VhostPart> = parts.into_iter().collect();
    let names = parts.iter().map(|p| p.domains.len()).sum();
    let mut owner: HashMap<&str, &str> = HashMap::with_capacity(names);
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let local = part.service.namespace == client_ns;
        let mut kept = Vec::new();
        for (d, local_only) in &part.domains {
            if *local_only && !local {
                continue;
            }
            match owner.get(d.as_str()) {
                Some(_) if part.pod => {}
                Some(first) => diagnostics.push(Diagnostic {
                    object: part.service.to_string(),
                    field: "spec.clusterIP".into(),
                    message: format!("host {d:?} is already served by {first}; not routed here"),
                }),
                None => {
                    owner.insert(d, &part.vhost.name);
                    kept.push(d.as_str());
                }
            }
        }
        // Envoy refuses a virtual host without domains (and with it the whole table):
        // one whose every name another claimed first is left out.
        if !kept.is_empty() {
            out.push(Claimed { part, kept });
        }
    }
    out
}

/// The outbound RouteConfiguration with `vhosts` in it, after them the pod-address
/// virtual host (`address`); `refs` and `sources` are those of the hosts in it. With
/// `vhds` it is the table that asks for its hosts apart, named so.
fn outbound_table(
    mut vhosts: Vec<VirtualHost>,
    mut refs: Vec<String>,
    mut sources: Vec<ObjectKey>,
    vhds: Option<Vhds>,
) -> Resource {
    vhosts.push(crate::envoy::pod_address::pod_address_vhost());
    refs.push(crate::envoy::pod_address::POD_ADDRESS_CLUSTER.into());
    refs.sort();
    refs.dedup();
    sources.sort();
    sources.dedup();
    let name = names::outbound_route(vhds.is_some());
    Resource {
        kind: XdsType::Route,
        name: name.into(),
        refs,
        sources,
        body: Body::Route(Box::new(RouteConfiguration {
            name: name.into(),
            virtual_hosts: vhosts,
            vhds,
            ..Default::default()
        })),
    }
}

/// The outbound RouteConfiguration for clients in `client_ns` from virtual hosts in
/// order ([`claim`]), every one in the table.
pub(crate) fn assemble<'a>(
    parts: impl IntoIterator<Item = &'a VhostPart>,
    client_ns: &str,
) -> Output {
    let mut out = Output::default();
    let (mut vhosts, mut refs, mut sources) = (Vec::new(), Vec::new(), Vec::new());
    for c in claim(parts, client_ns, &mut out.diagnostics) {
        vhosts.push(c.vhost());
        refs.extend(c.part.refs.iter().cloned());
        sources.extend(c.part.sources.iter().cloned());
    }
    out.resources
        .push(outbound_table(vhosts, refs, sources, None));
    out
}

/// The outbound table for an Envoy that takes virtual hosts apart (VHDS over delta ADS):
/// the RouteConfiguration ([`names::OUTBOUND_ROUTE_APART`]) keeps only the pod-address
/// host and asks for the others, which follow as their own resources ([`host_apart`] of
/// each [`claim`]ed part), so a change to one Service sends that Service's hosts alone.
pub(crate) fn table_apart() -> Resource {
    let vhds = Vhds {
        config_source: Some(protos::ads()),
    };
    outbound_table(Vec::new(), Vec::new(), Vec::new(), Some(vhds))
}

/// A claimed virtual host as its own resource (`outbound-vhds/NAME`, the VirtualHost
/// named the same).
pub(crate) fn host_apart(c: &Claimed) -> Resource {
    let mut vhost = c.vhost();
    let name = names::vhds_name(names::OUTBOUND_ROUTE_APART, &vhost.name);
    vhost.name.clone_from(&name);
    Resource {
        kind: XdsType::VirtualHost,
        name,
        refs: c.part.refs.clone(),
        sources: c.part.sources.clone(),
        body: Body::VirtualHost(Box::new(vhost)),
    }
}
