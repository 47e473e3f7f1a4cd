//! Gateway API routes for the mesh (GAMMA): HTTPRoutes and GRPCRoutes whose `parentRefs`
//! name a Service, resolved into the routing model of that Service's ports.
//!
//! - **Attachment.** A parentRef with `group: ""` (or `core`) and `kind: Service` in the
//!   route's own namespace attaches the route to that Service: to the port `port` or
//!   `sectionName` names, else to every HTTP port. Consumer routes (a parentRef to a
//!   Service in another namespace) are not supported; other parents belong to gateway
//!   controllers and are left alone.
//! - **Merging.** Every route attached to a Service port is merged into one table,
//!   ordered by the Gateway API's precedence: an exact path, then a regular expression
//!   (longest first), then the longest path prefix; then a method; then the most header
//!   matches; then the most query parameter matches; ties go to the oldest route
//!   (creation time, then namespace/name), then rule and match order. A request matching
//!   no rule gets 404.
//! - **Backends** are Service ports in the route's namespace, weighted (default 1). A
//!   backend that is missing, of another kind or namespace, or a TCP port is left out and
//!   reported (`ResolvedRefs=False`); a rule left with nothing (or with only weights of 0,
//!   or with no backendRefs) is answered with 500. A backend is its Service's endpoints:
//!   a TrafficSplit or route of the backend Service is not applied again.
//! - **Precedence.** A Service with an attached route is routed by its routes only; its
//!   TrafficSplit (if any) is `Conflicted`. A rule's `timeouts` and `retry` override the
//!   port's RetryPolicy for that rule; rules without them keep the RetryPolicy's.

use std::collections::{BTreeMap, BTreeSet};

use crds::gateway::{
    BackendRef, GRPCRouteMatch, HTTPHeaderFilter, HTTPHeaderMatch, HTTPRouteFilter, HTTPRouteMatch,
    HTTPRouteRetry, HTTPRouteTimeouts, ParentReference,
};
use crds::{ConditionReason, MeshCondition, RetryPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{Kind, MeshService, Model, NsName, ObjectKey, Protocol, ServicePort};
use crate::names;
use crate::policy::{Excluded, PolicyContext};
use crate::routing::{
    Dest, HeaderEdits, Match, PathMatch, PortRouting, Retry, Rule, RuleExtra, StrMatch,
};

/// One rule (one of its matches) attached to a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attached {
    /// The Service port it applies to (`None`: every HTTP port).
    pub port: Option<u16>,
    pub rule: Rule,
    /// Clusters among its destinations that proxyless gRPC clients are not offered.
    pub not_grpc: Vec<String>,
}

/// The routes attached to one Service, merged and in precedence order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServiceRoutes {
    /// The routes, oldest first.
    pub sources: Vec<ObjectKey>,
    pub rules: Vec<Attached>,
}

/// Routes by Service (namespace, name).
pub(crate) type RouteState = BTreeMap<NsName, ServiceRoutes>;

/// A rule of either route kind.
struct RuleView<'a> {
    matches: Vec<Match>,
    filters: &'a [HTTPRouteFilter],
    backends: &'a [BackendRef],
    timeouts: Option<&'a HTTPRouteTimeouts>,
    retry: Option<&'a HTTPRouteRetry>,
}

/// A route of either kind.
struct RouteView<'a> {
    key: ObjectKey,
    meta: &'a ObjectMeta,
    parents: &'a [ParentReference],
    rules: Vec<RuleView<'a>>,
}

fn str_match(m: &HTTPHeaderMatch) -> (String, StrMatch) {
    let v = m.value.clone();
    let cond = match m.type_.as_deref() {
        Some("RegularExpression") => StrMatch::Regex(v),
        _ => StrMatch::Exact(v),
    };
    (m.name.clone(), cond)
}

fn http_match(m: &HTTPRouteMatch) -> Match {
    let path = match &m.path {
        None => PathMatch::Prefix("/".into()),
        Some(p) => {
            let v = p.value.clone().unwrap_or_else(|| "/".into());
            match p.type_.as_deref() {
                Some("Exact") => PathMatch::Exact(v),
                Some("RegularExpression") => PathMatch::Regex(v),
                _ => {
                    let trimmed = v.trim_end_matches('/');
                    if trimmed.is_empty() {
                        PathMatch::Prefix("/".into())
                    } else {
                        PathMatch::Segments(trimmed.to_string())
                    }
                }
            }
        }
    };
    Match {
        path,
        headers: m.headers.iter().map(str_match).collect(),
        query: m.query_params.iter().map(str_match).collect(),
        methods: m.method.iter().cloned().collect(),
    }
}

/// A gRPC method match as a path: `/SERVICE/METHOD`.
pub(crate) fn grpc_path(regex: bool, service: Option<&str>, method: Option<&str>) -> PathMatch {
    if regex {
        return PathMatch::Regex(format!(
            "/{}/{}",
            service.unwrap_or("[^/]+"),
            method.unwrap_or("[^/]+")
        ));
    }
    match (service, method) {
        (Some(s), Some(m)) => PathMatch::Exact(format!("/{s}/{m}")),
        (Some(s), None) => PathMatch::Prefix(format!("/{s}/")),
        (None, Some(m)) => PathMatch::Regex(format!("/[^/]+/{}", regex_quote(m))),
        (None, None) => PathMatch::Prefix("/".into()),
    }
}

pub(crate) fn regex_quote(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

fn grpc_match(m: &GRPCRouteMatch) -> Match {
    let path = match &m.method {
        None => PathMatch::Prefix("/".into()),
        Some(mm) => grpc_path(
            mm.type_.as_deref() == Some("RegularExpression"),
            mm.service.as_deref(),
            mm.method.as_deref(),
        ),
    };
    Match {
        path,
        headers: m.headers.iter().map(str_match).collect(),
        query: Vec::new(),
        methods: Vec::new(),
    }
}

fn every_request() -> Vec<Match> {
    vec![Match {
        path: PathMatch::Prefix("/".into()),
        headers: Vec::new(),
        query: Vec::new(),
        methods: Vec::new(),
    }]
}

fn ns_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// Every route, oldest first (creation time, then namespace/name): the order that
/// breaks precedence ties.
fn routes<'a>(model: &'a Model, excluded: &Excluded) -> Vec<RouteView<'a>> {
    let key = |kind, meta: &ObjectMeta| {
        ObjectKey::new(kind, ns_of(meta), meta.name.as_deref().unwrap_or_default())
    };
    let http = model.http_routes().map(|r| RouteView {
        key: key(Kind::HTTPRoute, &r.metadata),
        meta: &r.metadata,
        parents: &r.spec.parent_refs,
        rules: r
            .spec
            .rules
            .iter()
            .map(|rule| RuleView {
                matches: if rule.matches.is_empty() {
                    every_request()
                } else {
                    rule.matches.iter().map(http_match).collect()
                },
                filters: &rule.filters,
                backends: &rule.backend_refs,
                timeouts: rule.timeouts.as_ref(),
                retry: rule.retry.as_ref(),
            })
            .collect(),
    });
    let grpc = model.grpc_routes().map(|r| RouteView {
        key: key(Kind::GRPCRoute, &r.metadata),
        meta: &r.metadata,
        parents: &r.spec.parent_refs,
        rules: r
            .spec
            .rules
            .iter()
            .map(|rule| RuleView {
                matches: if rule.matches.is_empty() {
                    every_request()
                } else {
                    rule.matches.iter().map(grpc_match).collect()
                },
                filters: &rule.filters,
                backends: &rule.backend_refs,
                timeouts: None,
                retry: None,
            })
            .collect(),
    });
    let mut out: Vec<RouteView> = http
        .chain(grpc)
        .filter(|r| !excluded.contains(&r.key))
        .collect();
    out.sort_by_key(|r| {
        (
            r.meta.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            r.key.namespace.clone(),
            r.key.name.clone(),
            r.key.kind,
        )
    });
    out
}

/// The Service and ports a Service parentRef of a route in `route_ns` attaches to, or
/// why it does not (reason, message naming the field).
fn attach(
    model: &Model,
    route_ns: &str,
    index: usize,
    p: &ParentReference,
) -> Result<(NsName, Option<u16>), (ConditionReason, String)> {
    let field = format!("spec.parentRefs[{index}]");
    let ns = p.namespace.as_deref().unwrap_or(route_ns);
    if ns != route_ns {
        return Err((
            ConditionReason::UnsupportedValue,
            format!(
                "{field}.namespace: consumer routes (a parentRef to a Service in another namespace, here {ns}) are not supported; put the route in namespace {ns}"
            ),
        ));
    }
    let Some(svc) = model.service(ns, &p.name) else {
        return Err((
            ConditionReason::NoMatchingParent,
            format!("{field}.name: Service {ns}/{} not found", p.name),
        ));
    };
    let http = |sp: &ServicePort| sp.protocol != Protocol::Tcp;
    let port = match (p.port, &p.section_name) {
        (Some(n), _) => {
            let Some(sp) = svc.ports.iter().find(|sp| i32::from(sp.port) == n) else {
                return Err((
                    ConditionReason::NoMatchingParent,
                    format!("{field}.port: Service {ns}/{} has no port {n}", p.name),
                ));
            };
            Some(sp)
        }
        (None, Some(section)) => {
            let Some(sp) = svc.ports.iter().find(|sp| sp.name == *section) else {
                return Err((
                    ConditionReason::NoMatchingParent,
                    format!(
                        "{field}.sectionName: Service {ns}/{} has no port named {}",
                        p.name,
                        crds::text::quote(section)
                    ),
                ));
            };
            Some(sp)
        }
        (None, None) => None,
    };
    match port {
        Some(sp) if !http(sp) => Err((
            ConditionReason::NoMatchingParent,
            format!(
                "{field}: port {} of Service {ns}/{} is TCP; routes apply to HTTP and gRPC ports",
                sp.port, p.name
            ),
        )),
        Some(sp) => Ok(((ns.to_string(), p.name.clone()), Some(sp.port))),
        None if !svc.ports.iter().any(http) => Err((
            ConditionReason::NoMatchingParent,
            format!("{field}: Service {ns}/{} has no HTTP or gRPC port", p.name),
        )),
        None => Ok(((ns.to_string(), p.name.clone()), None)),
    }
}

/// A rule's backends: the destination, its clusters, those gRPC clients are not
/// offered, and what did not resolve (reason, message naming the field).
fn destination(
    model: &Model,
    ns: &str,
    field: &str,
    backends: &[BackendRef],
) -> (Dest, Vec<String>, Vec<(ConditionReason, String)>) {
    let mut weighted = Vec::new();
    let mut not_grpc = Vec::new();
    let mut issues = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let f = format!("{field}.backendRefs[{i}]");
        if !b.is_service() {
            issues.push((
                ConditionReason::InvalidKind,
                format!(
                    "{f}: {}/{} is not supported; only Services",
                    b.group.as_deref().unwrap_or(""),
                    b.kind.as_deref().unwrap_or("Service")
                ),
            ));
            continue;
        }
        let bns = b.namespace.as_deref().unwrap_or(ns);
        if bns != ns {
            issues.push((
                ConditionReason::RefNotPermitted,
                format!(
                    "{f}.namespace: Service {bns}/{} is in another namespace (ReferenceGrants are not supported)",
                    b.name
                ),
            ));
            continue;
        }
        let Some(svc) = model.service(ns, &b.name) else {
            issues.push((
                ConditionReason::BackendNotFound,
                format!("{f}.name: Service {ns}/{} not found", b.name),
            ));
            continue;
        };
        let port = b.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
        let Some(sp) = svc.ports.iter().find(|sp| sp.port == port) else {
            issues.push((
                ConditionReason::BackendNotFound,
                format!("{f}.port: Service {ns}/{} has no port {port}", b.name),
            ));
            continue;
        };
        if sp.protocol == Protocol::Tcp {
            issues.push((
                ConditionReason::UnsupportedProtocol,
                format!("{f}.port: port {port} of Service {ns}/{} is TCP", b.name),
            ));
            continue;
        }
        let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        if weight == 0 {
            continue;
        }
        let cluster = names::outbound_cluster(svc, port);
        if !crate::grpc::offered(svc, sp) {
            not_grpc.push(cluster.clone());
        }
        weighted.push((cluster, weight));
    }
    let dest = match weighted.len() {
        0 => Dest::Status(500),
        1 => Dest::Cluster(weighted.remove(0).0),
        _ => Dest::Weighted(weighted),
    };
    (dest, not_grpc, issues)
}

fn edits(f: Option<&HTTPHeaderFilter>) -> HeaderEdits {
    let Some(f) = f else {
        return HeaderEdits::default();
    };
    let pairs = |v: &[crds::gateway::HTTPHeader]| {
        v.iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect()
    };
    HeaderEdits {
        set: pairs(&f.set),
        add: pairs(&f.add),
        remove: f.remove.clone(),
    }
}

fn extra(route: &ObjectKey, rule: &RuleView<'_>) -> RuleExtra {
    let filter = |t: &str| rule.filters.iter().find(|f| f.type_ == t);
    let dur = |s: Option<&String>| s.and_then(|d| crds::gateway_validate::duration(d, "").ok());
    RuleExtra {
        source: Some(route.clone()),
        request_headers: edits(
            filter("RequestHeaderModifier").and_then(|f| f.request_header_modifier.as_ref()),
        ),
        response_headers: edits(
            filter("ResponseHeaderModifier").and_then(|f| f.response_header_modifier.as_ref()),
        ),
        timeout: dur(rule.timeouts.and_then(|t| t.request.as_ref())),
        backend_timeout: dur(rule.timeouts.and_then(|t| t.backend_request.as_ref())),
        retry: rule.retry.map(|r| Retry {
            name: route.name.clone(),
            // Connection failures always; with 504 among the codes, also an attempt that
            // timed out (timeouts.backendRequest) or got no answer, which the proxy
            // answers with 504 itself.
            on: if r.codes.contains(&504) {
                vec![
                    "connect-failure".into(),
                    "refused-stream".into(),
                    "reset".into(),
                ]
            } else {
                vec!["connect-failure".into(), "refused-stream".into()]
            },
            codes: r
                .codes
                .iter()
                .filter_map(|c| u32::try_from(*c).ok())
                .collect(),
            num_retries: r.attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(1),
            per_try_timeout: None,
            backoff: dur(r.backoff.as_ref()).map(|b| (b, None)),
            budget: false,
        }),
    }
}

/// The precedence of a match (path kind, path length, method, headers, query
/// parameters): higher sorts first.
type Rank = (u8, usize, bool, usize, usize);

fn rank(m: &Match) -> Rank {
    let (kind, len) = match &m.path {
        PathMatch::Exact(p) => (3, p.len()),
        PathMatch::Regex(p) => (2, p.len()),
        PathMatch::Segments(p) | PathMatch::Prefix(p) => (1, p.len()),
    };
    (
        kind,
        len,
        !m.methods.is_empty(),
        m.headers.len(),
        m.query.len(),
    )
}

/// The routes attached to every Service, merged and ordered; routes in `excluded` (left
/// out by containment) count as absent.
pub(crate) fn resolve(model: &Model, excluded: &Excluded) -> RouteState {
    let mut out: BTreeMap<NsName, Vec<(ObjectKey, Attached, Rank)>> = BTreeMap::new();
    for route in routes(model, excluded) {
        let ns = route.key.namespace.as_str();
        let mut attachments: BTreeSet<(NsName, Option<u16>)> = BTreeSet::new();
        for (i, p) in route.parents.iter().enumerate() {
            if p.is_service()
                && let Ok(a) = attach(model, ns, i, p)
            {
                attachments.insert(a);
            }
        }
        // A parentRef to the whole Service covers those to its ports.
        let whole: BTreeSet<NsName> = attachments
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        attachments.retain(|(s, p)| p.is_none() || !whole.contains(s));
        if attachments.is_empty() {
            continue;
        }
        for (ri, rule) in route.rules.iter().enumerate() {
            let (dest, not_grpc, _) =
                destination(model, ns, &format!("spec.rules[{ri}]"), rule.backends);
            let extra = Box::new(extra(&route.key, rule));
            for m in &rule.matches {
                for (svc, port) in &attachments {
                    out.entry(svc.clone()).or_default().push((
                        route.key.clone(),
                        Attached {
                            port: *port,
                            rule: Rule {
                                matches: Some(m.clone()),
                                dest: dest.clone(),
                                extra: Some(extra.clone()),
                            },
                            not_grpc: not_grpc.clone(),
                        },
                        rank(m),
                    ));
                }
            }
        }
    }
    out.into_iter()
        .map(|(svc, mut rules)| {
            // Stable: equal ranks keep route (oldest first), rule and match order.
            rules.sort_by_key(|r| std::cmp::Reverse(r.2));
            let mut sources: Vec<ObjectKey> = Vec::new();
            for (k, _, _) in &rules {
                if !sources.contains(k) {
                    sources.push(k.clone());
                }
            }
            let rules = rules.into_iter().map(|(_, a, _)| a).collect();
            (svc, ServiceRoutes { sources, rules })
        })
        .collect()
}

/// The routing of one Service port from its attached routes, or `None` when no route
/// applies to it.
pub(crate) fn port_routing(
    policy: &PolicyContext,
    svc: &MeshService,
    port: &ServicePort,
    retry_obj: Option<&RetryPolicy>,
) -> Option<PortRouting> {
    if port.protocol == Protocol::Tcp {
        return None;
    }
    let attached = policy
        .routes
        .get(&(svc.namespace.clone(), svc.name.clone()))?;
    let applies: Vec<&Attached> = attached
        .rules
        .iter()
        .filter(|a| a.port.is_none_or(|p| p == port.port))
        .collect();
    if applies.is_empty() {
        return None;
    }
    let mut sources = vec![ObjectKey::new(Kind::Service, &svc.namespace, &svc.name)];
    let mut refs = Vec::new();
    let mut not_grpc: Vec<String> = Vec::new();
    for a in &applies {
        if let Some(src) = a.rule.extra.as_ref().and_then(|e| e.source.as_ref())
            && !sources.contains(src)
        {
            sources.push(src.clone());
        }
        match &a.rule.dest {
            Dest::Cluster(c) => refs.push(c.clone()),
            Dest::Weighted(w) => refs.extend(w.iter().map(|(c, _)| c.clone())),
            Dest::Status(_) => {}
        }
        for c in &a.not_grpc {
            if !not_grpc.contains(c) {
                not_grpc.push(c.clone());
            }
        }
    }
    if let Some(p) = retry_obj {
        sources.push(ObjectKey::new(
            Kind::RetryPolicy,
            &svc.namespace,
            p.metadata.name.as_deref().unwrap_or_default(),
        ));
    }
    Some(PortRouting {
        name: format!("{}:{}", svc.fqdn(), port.port),
        protocol: port.protocol,
        rules: applies.into_iter().map(|a| a.rule.clone()).collect(),
        retry: retry_obj.map(crate::routing::retry),
        timeout: retry_obj.and_then(|p| crate::routing::duration(p.spec.timeout.as_deref())),
        refs,
        sources,
        not_grpc,
    })
}

/// The status of one route: its generation and, for each Service parent, `Accepted`
/// and `ResolvedRefs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RouteParents {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// (parentRef, conditions), in spec order.
    pub parents: Vec<(ParentReference, Vec<MeshCondition>)>,
}

/// Conditions for every route with a Service parent.
pub(crate) fn route_status(model: &Model) -> BTreeMap<ObjectKey, RouteParents> {
    let mut out = BTreeMap::new();
    for route in routes(model, &Excluded::new()) {
        let ns = route.key.namespace.as_str();
        let mut issues = Vec::new();
        for (ri, rule) in route.rules.iter().enumerate() {
            issues.extend(destination(model, ns, &format!("spec.rules[{ri}]"), rule.backends).2);
        }
        let resolved = match issues.first() {
            None => MeshCondition::new(
                "ResolvedRefs",
                true,
                ConditionReason::ResolvedRefs,
                "all references resolved",
            ),
            Some((reason, _)) => MeshCondition::new(
                "ResolvedRefs",
                false,
                *reason,
                format!(
                    "{}; requests for them are shared among the other backends of the rule, or answered with 500 when none is left",
                    issues
                        .iter()
                        .map(|(_, m)| m.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
        };
        let parents: Vec<(ParentReference, Vec<MeshCondition>)> = route
            .parents
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_service())
            .map(|(i, p)| {
                let accepted = match attach(model, ns, i, p) {
                    Ok(_) => {
                        MeshCondition::new("Accepted", true, ConditionReason::Accepted, "accepted")
                    }
                    Err((reason, message)) => {
                        MeshCondition::new("Accepted", false, reason, message)
                    }
                };
                (p.clone(), vec![accepted, resolved.clone()])
            })
            .collect();
        if parents.is_empty() {
            continue;
        }
        out.insert(
            route.key.clone(),
            RouteParents {
                generation: route.meta.generation,
                parents,
            },
        );
    }
    out
}

#[cfg(test)]
#[path = "gamma_tests.rs"]
mod tests;
