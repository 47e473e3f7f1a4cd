//! The proxy-neutral routing model: what requests to one Service port do, resolved once
//! from the Service, its TrafficSplit (with HTTPRouteGroups and nested splits) and its
//! RetryPolicy, or from the Gateway API routes attached to it ([`crate::gamma`], which
//! take precedence over a TrafficSplit). Semantics live here; emitters render it for each
//! client kind: `route` for Envoy sidecars, `grpc` for proxyless gRPC clients.

use crds::{HTTPMatch, RetryPolicy};

use crate::model::{Kind, MeshService, Model, ObjectKey, Protocol, ServicePort};
use crate::names;
use crate::policy::{self, EffectiveSplit, PolicyContext};

/// A cluster name that never exists: a share of requests sent there fails (a Gateway API
/// backend that did not resolve). Envoy answers it with the rule's
/// [`RuleExtra::no_backend_status`], gRPC clients with UNAVAILABLE.
pub(crate) const NO_BACKEND: &str = "rudder-no-backend";

/// Where matching requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// One cluster.
    Cluster(String),
    /// Clusters with weights (each > 0, sum within u32: the policy checked).
    Weighted(Vec<(String, u32)>),
    /// No backend: answered by the proxy with this HTTP status (a Gateway API rule
    /// whose backends are all missing or weighted 0 gets 500).
    Status(u32),
}

/// A path condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathMatch {
    /// Starts with these characters (`/` is every path).
    Prefix(String),
    /// Starts with these whole segments (Gateway API `PathPrefix`: `/foo` matches `/foo`
    /// and `/foo/bar`, not `/foobar`).
    Segments(String),
    /// Exactly this path.
    Exact(String),
    /// A full-match RE2 expression.
    Regex(String),
}

/// A string condition (header, query parameter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StrMatch {
    /// Exactly this value.
    Exact(String),
    /// A full-match RE2 expression.
    Regex(String),
}

/// What a request must look like; every condition must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Match {
    pub path: PathMatch,
    /// (name, condition), in order.
    pub headers: Vec<(String, StrMatch)>,
    pub query: Vec<(String, StrMatch)>,
    /// Any of these methods (empty: any method).
    pub methods: Vec<String>,
}

impl Match {
    /// An SMI HTTPRouteGroup match: a path regex, header regexes and methods (`*` is
    /// any method).
    pub(crate) fn smi(m: &HTTPMatch) -> Self {
        Match {
            path: match &m.path_regex {
                Some(re) => PathMatch::Regex(re.clone()),
                None => PathMatch::Prefix("/".into()),
            },
            headers: m
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), StrMatch::Regex(v.clone())))
                .collect(),
            query: Vec::new(),
            methods: if m.methods.iter().any(|x| x == "*") {
                Vec::new()
            } else {
                m.methods.clone()
            },
        }
    }
}

/// Header changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeaderEdits {
    /// Replace (or add).
    pub set: Vec<(String, String)>,
    /// Append.
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// What a Gateway API rule sets beyond where requests go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RuleExtra {
    /// The route that set it (for diagnostics).
    pub source: Option<ObjectKey>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    /// `timeouts.request` (zero: none); overrides a RetryPolicy's timeout.
    pub timeout: Option<std::time::Duration>,
    /// `timeouts.backendRequest`: each attempt.
    pub backend_timeout: Option<std::time::Duration>,
    /// `retry`; overrides the RetryPolicy.
    pub retry: Option<Retry>,
    /// The HTTP status of requests sent to [`NO_BACKEND`]: 500 (HTTPRoute) or 503
    /// (GRPCRoute: read as UNAVAILABLE).
    pub no_backend_status: u32,
    /// `RequestMirror` filters: (cluster, share of requests in millionths).
    pub mirrors: Vec<(String, u32)>,
    /// Per-backend header filters: (cluster, request changes, response changes).
    pub backend_headers: Vec<(String, HeaderEdits, HeaderEdits)>,
}

/// One rule: requests matching `matches` (all requests when `None`) go to `dest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub matches: Option<Match>,
    pub dest: Dest,
    /// Set by Gateway API routes only.
    pub extra: Option<Box<RuleExtra>>,
}

/// The RetryPolicy in effect, as values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Retry {
    /// The policy's name (for diagnostics).
    pub name: String,
    /// Named conditions (`5xx`, `unavailable`, ...).
    pub on: Vec<String>,
    /// HTTP status codes.
    pub codes: Vec<u32>,
    pub num_retries: u32,
    pub per_try_timeout: Option<std::time::Duration>,
    /// (base, max) backoff intervals.
    pub backoff: Option<(std::time::Duration, Option<std::time::Duration>)>,
    /// Whether it sets a retry budget.
    pub budget: bool,
}

/// What requests to one Service port do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortRouting {
    /// `FQDN:PORT`.
    pub name: String,
    pub protocol: Protocol,
    /// In order; the last matches every request.
    pub rules: Vec<Rule>,
    /// The RetryPolicy in effect, if any.
    pub retry: Option<Retry>,
    /// The overall request timeout a RetryPolicy sets, if any.
    pub timeout: Option<std::time::Duration>,
    /// Clusters it routes to.
    pub refs: Vec<String>,
    /// Objects it was made from.
    pub sources: Vec<ObjectKey>,
    /// Clusters among `refs` that proxyless gRPC clients are not offered (a backend that
    /// is an ExternalName Service, or whose port of that number is TCP).
    pub not_grpc: Vec<String>,
}

pub(crate) fn duration(s: Option<&str>) -> Option<std::time::Duration> {
    s.and_then(|d| crds::duration::parse(d).ok())
}

/// The RetryPolicy in effect on a Service port.
pub(crate) fn retry_policy<'a>(
    model: &'a Model,
    policy: &PolicyContext,
    svc: &MeshService,
    port: u16,
) -> Option<&'a RetryPolicy> {
    policy::retry_for(
        model,
        &policy.retry_winners,
        &svc.namespace,
        &svc.name,
        port,
    )
}

/// A RetryPolicy as values.
pub(crate) fn retry(p: &RetryPolicy) -> Retry {
    let spec = &p.spec;
    let mut on = Vec::new();
    let mut codes = Vec::new();
    for c in &spec.retry_on {
        match c.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => on.push(c.clone()),
        }
    }
    Retry {
        name: p.metadata.name.clone().unwrap_or_default(),
        on,
        codes,
        num_retries: spec.num_retries.unwrap_or(1),
        per_try_timeout: duration(spec.per_try_timeout.as_deref()),
        backoff: spec.backoff.as_ref().and_then(|b| {
            Some((
                duration(Some(&b.base_interval))?,
                duration(b.max_interval.as_deref()),
            ))
        }),
        budget: spec.budget.is_some(),
    }
}

/// Where requests go: the split's backends on this port, or the service itself.
pub(crate) fn destination(
    model: &Model,
    svc: &MeshService,
    port: u16,
    split: Option<&EffectiveSplit>,
    refs: &mut Vec<String>,
) -> Dest {
    let weighted: Vec<(String, u32)> = split
        .into_iter()
        .flat_map(|s| s.backends.iter())
        .filter_map(|(backend, weight)| {
            let b = model.service(&svc.namespace, backend)?;
            b.ports.iter().any(|p| p.port == port).then(|| {
                let name = names::outbound_cluster(b, port);
                refs.push(name.clone());
                (name, *weight)
            })
        })
        .collect();
    if weighted.is_empty() {
        let name = names::outbound_cluster(svc, port);
        refs.push(name.clone());
        Dest::Cluster(name)
    } else {
        Dest::Weighted(weighted)
    }
}

/// Resolves every port of a Service, in order.
pub(crate) fn port_routings(
    model: &Model,
    policy: &PolicyContext,
    svc: &MeshService,
) -> Vec<PortRouting> {
    svc.ports
        .iter()
        .map(|p| port_routing(model, policy, svc, p))
        .collect()
}

/// Resolves one Service port.
pub(crate) fn port_routing(
    model: &Model,
    policy: &PolicyContext,
    svc: &MeshService,
    port: &ServicePort,
) -> PortRouting {
    let retry_obj = retry_policy(model, policy, svc, port.port);
    if let Some(routed) = crate::gamma::port_routing(policy, svc, port, retry_obj) {
        return routed;
    }
    let split = policy
        .splits
        .get(&(svc.namespace.clone(), svc.name.clone()));
    let mut sources = vec![ObjectKey::new(Kind::Service, &svc.namespace, &svc.name)];
    if let Some(s) = split {
        sources.push(ObjectKey::new(
            Kind::TrafficSplit,
            &svc.namespace,
            &s.source,
        ));
        sources.extend(
            s.route_groups
                .iter()
                .map(|g| ObjectKey::new(Kind::HTTPRouteGroup, &svc.namespace, g)),
        );
        sources.extend(
            s.nested
                .iter()
                .map(|n| ObjectKey::new(Kind::TrafficSplit, &svc.namespace, n)),
        );
    }
    if let Some(p) = retry_obj {
        sources.push(ObjectKey::new(
            Kind::RetryPolicy,
            &svc.namespace,
            p.metadata.name.as_deref().unwrap_or_default(),
        ));
    }
    let mut refs = Vec::new();
    let mut rules = Vec::new();
    match split {
        Some(s) if !s.matches.is_empty() => {
            for m in &s.matches {
                rules.push(Rule {
                    matches: Some(Match::smi(m)),
                    dest: destination(model, svc, port.port, Some(s), &mut refs),
                    extra: None,
                });
            }
            rules.push(Rule {
                matches: None,
                dest: destination(model, svc, port.port, None, &mut refs),
                extra: None,
            });
        }
        other => rules.push(Rule {
            matches: None,
            dest: destination(model, svc, port.port, other, &mut refs),
            extra: None,
        }),
    }
    // Which of those clusters gRPC clients have no Cluster for.
    let mut not_grpc: Vec<String> = Vec::new();
    let unoffered = |b: &MeshService| {
        !b.ports
            .iter()
            .any(|p| p.port == port.port && crate::grpc::offered(b, p))
    };
    if unoffered(svc) {
        not_grpc.push(names::outbound_cluster(svc, port.port));
    }
    for backend in split.into_iter().flat_map(|s| s.backends.iter()) {
        if let Some(b) = model.service(&svc.namespace, &backend.0)
            && unoffered(b)
        {
            not_grpc.push(names::outbound_cluster(b, port.port));
        }
    }
    PortRouting {
        not_grpc,
        name: format!("{}:{}", svc.fqdn(), port.port),
        protocol: port.protocol,
        rules,
        retry: retry_obj.map(retry),
        timeout: retry_obj.and_then(|p| duration(p.spec.timeout.as_deref())),
        refs,
        sources,
    }
}
