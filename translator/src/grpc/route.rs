//! gRPC RouteConfigurations: one per offered Service port (`FQDN:PORT`, one virtual host
//! for every authority), rendered from the routing IR as Envoy's are, leaving out or
//! failing what gRPC clients cannot reach, and saying what of the IR gRPC cannot honour.

use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy as GrpcRetry, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    retry_policy::RetryBackOff,
    route::Action,
    route_action::{ClusterSpecifier, MaxStreamDuration},
    route_match::PathSpecifier,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use xds_types::XdsType;

use crate::grpc::cluster::void_name;
use crate::model::Kind;
use crate::output::{Body, Diagnostic, Resource};
use crate::render::protos;
use crate::render::route::{action, cluster_specifier, route_match};
use crate::routing::ir::{
    Backend, Dest, Match, PathMatch, PortRouting, Retry, Rule, RuleExtra, regex_quote,
};

/// Retry conditions gRPC clients act on (A44).
const GRPC_RETRY_ON: &[&str] = &[
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The clusters among a port's backends that gRPC clients have no Cluster for (an
/// ExternalName Service, or a TCP port), in the order the IR names them.
fn not_offered(r: &PortRouting) -> Vec<String> {
    r.backends
        .iter()
        .filter(|b| !b.http_with_endpoints)
        .map(|b| b.cluster.clone())
        .collect()
}

/// The gRPC rendering of a destination (as Envoy's), leaving out clusters gRPC clients
/// have no Cluster for (`not_grpc`); None when nothing is left.
fn specifier(dest: &Dest, not_grpc: &[String]) -> Option<ClusterSpecifier> {
    let offered = |b: &Backend| matches!(b, Backend::Cluster(c) if !not_grpc.contains(c));
    let kept = match dest {
        Dest::Cluster(c) if !not_grpc.contains(c) => dest.clone(),
        Dest::Cluster(_) | Dest::NoBackend | Dest::Status(_) => return None,
        Dest::Weighted(w) => {
            let w: Vec<(Backend, u32)> = w.iter().filter(|(b, _)| offered(b)).cloned().collect();
            if w.is_empty() {
                return None;
            }
            Dest::Weighted(w)
        }
    };
    cluster_specifier(&kept)
}

/// The RetryPolicy in effect as gRPC's retry policy (None when gRPC would retry on
/// nothing), with what of it gRPC ignores.
fn retry_policy(
    p: &Retry,
    namespace: &str,
    route: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<GrpcRetry> {
    let object = format!("RetryPolicy {namespace}/{}", p.name);
    let on: Vec<&str> =
        p.on.iter()
            .map(String::as_str)
            .filter(|c| GRPC_RETRY_ON.contains(c))
            .collect();
    let ignored: Vec<String> =
        p.on.iter()
            .filter(|c| !GRPC_RETRY_ON.contains(&c.as_str()))
            .cloned()
            .chain(p.codes.iter().map(u32::to_string))
            .collect();
    let mut say = |field: &str, message: String| {
        diagnostics.push(Diagnostic {
            object: object.clone(),
            field: field.into(),
            message,
        })
    };
    if !ignored.is_empty() {
        say(
            "spec.retryOn",
            format!(
                "{} do not apply to proxyless gRPC clients of {route} (they retry on gRPC status codes only)",
                ignored.join(", "),
            ),
        );
    }
    if p.per_try_timeout.is_some() {
        say(
            "spec.perTryTimeout",
            format!("proxyless gRPC clients of {route} have no per-try timeout"),
        );
    }
    if p.budget {
        say(
            "spec.budget",
            format!("proxyless gRPC clients of {route} have no retry budget"),
        );
    }
    if p.num_retries > 4 {
        say(
            "spec.numRetries",
            format!("proxyless gRPC clients of {route} make at most 5 attempts (4 retries)"),
        );
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
}

/// Records once that a Gateway API rule sets `what`, which gRPC clients of `route`
/// ignore.
fn ignored(
    extra: Option<&RuleExtra>,
    route: &str,
    diagnostics: &mut Vec<Diagnostic>,
    field: &str,
    what: &str,
) {
    let Some(src) = extra.and_then(|e| e.source.as_ref()) else {
        return;
    };
    let d = Diagnostic {
        object: src.to_string(),
        field: field.into(),
        message: format!("{what} do not apply to proxyless gRPC clients of {route}"),
    };
    if !diagnostics.contains(&d) {
        diagnostics.push(d);
    }
}

/// The gRPC route match of a rule, or None when the rule never selects a gRPC call.
fn rule_match(rule: &Rule, route: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<RouteMatch> {
    let Some(hm) = &rule.matches else {
        return Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        });
    };
    // gRPC calls are POSTs: a match on other methods never selects one.
    if !hm.methods.is_empty() && !hm.methods.iter().any(|x| x.eq_ignore_ascii_case("POST")) {
        return None;
    }
    // gRPC clients never match a route on query parameters.
    if !hm.query.is_empty() {
        ignored(
            rule.extra.as_deref(),
            route,
            diagnostics,
            "spec.rules.matches.queryParams",
            "rules matching query parameters",
        );
        return None;
    }
    let mut g = Match {
        methods: Vec::new(),
        ..hm.clone()
    };
    // gRPC knows no separated prefix: the same as a regular expression.
    if let PathMatch::Segments(p) = &g.path {
        g.path = PathMatch::Regex(format!("{}(/.*)?", regex_quote(p)));
    }
    Some(route_match(&g))
}

/// Says which of a Gateway API rule's settings gRPC clients ignore.
fn ignored_extras(extra: &RuleExtra, route: &str, diagnostics: &mut Vec<Diagnostic>) {
    let mut say = |field: &str, what: &str| ignored(Some(extra), route, diagnostics, field, what);
    if !extra.request_headers.is_empty() || !extra.response_headers.is_empty() {
        say("spec.rules.filters", "header modifier filters");
    }
    if extra.backend_timeout.is_some() {
        say(
            "spec.rules.timeouts.backendRequest",
            "backend request timeouts",
        );
    }
    if extra.retry.is_some() {
        say("spec.rules.retry", "HTTPRoute retries (HTTP status codes)");
    }
    if !extra.mirrors.is_empty() {
        say("spec.rules.filters", "request mirrors");
    }
    if !extra.backend_headers.is_empty() {
        say(
            "spec.rules.backendRefs.filters",
            "per-backend header filters",
        );
    }
    // gRPC fails calls on a redirect route and ignores rewrites: neither is sent. A
    // redirect rule's calls go to the void cluster (UNAVAILABLE at once); a rewrite
    // rule's calls go to its backends unchanged.
    let refused = match (&extra.redirect, &extra.rewrite) {
        (Some(r), _) => Some((
            r.field.as_str(),
            "RequestRedirect",
            "its calls fail with UNAVAILABLE",
        )),
        (None, Some(r)) => Some((
            r.field.as_str(),
            "URLRewrite",
            "its calls go to its backends with their host and path unchanged",
        )),
        (None, None) => None,
    };
    if let (Some((field, what, outcome)), Some(src)) = (refused, extra.source.as_ref()) {
        let d = Diagnostic {
            object: src.to_string(),
            field: format!("{field}.type"),
            message: format!(
                "{what} is not supported by proxyless gRPC clients of {route}; for them {outcome}"
            ),
        };
        if !diagnostics.contains(&d) {
            diagnostics.push(d);
        }
    }
}

/// A Gateway API rule's destination for gRPC: a share that must fail (a backend that did
/// not resolve or that gRPC clients are not offered) goes to the port's void cluster,
/// whose calls fail with UNAVAILABLE at once; direct_response is never sent (grpc-java
/// refuses it).
fn route_dest(dest: &Dest, not_grpc: &[String], void: &str) -> Dest {
    let kept = |b: &Backend| match b {
        Backend::Cluster(c) if !not_grpc.contains(c) => c.clone(),
        Backend::Cluster(_) | Backend::Missing => void.to_string(),
    };
    match dest {
        Dest::Status(_) | Dest::NoBackend => Dest::Cluster(void.to_string()),
        Dest::Cluster(c) => Dest::Cluster(kept(&Backend::Cluster(c.clone()))),
        Dest::Weighted(w) => {
            let mut out: Vec<(Backend, u32)> = Vec::new();
            for (b, weight) in w {
                let c = Backend::Cluster(kept(b));
                match out.iter_mut().find(|(o, _)| *o == c) {
                    Some((_, x)) => *x = x.saturating_add(*weight),
                    None => out.push((c, *weight)),
                }
            }
            Dest::Weighted(out)
        }
    }
}

/// An SMI rule's destination for gRPC: backends gRPC clients are not offered are left
/// out; None when none is left.
fn split_dest(dest: &Dest, not_grpc: &[String]) -> Option<Dest> {
    specifier(dest, not_grpc)?;
    Some(match dest {
        Dest::Weighted(w) => Dest::Weighted(
            w.iter()
                .filter(|(b, _)| !matches!(b, Backend::Cluster(c) if not_grpc.contains(c)))
                .cloned()
                .collect(),
        ),
        d => d.clone(),
    })
}

/// The diagnostic for backends of a port gRPC clients are not offered.
fn not_offered_diagnostic(r: &PortRouting, namespace: &str, not_grpc: &[String]) -> Diagnostic {
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
    Diagnostic {
        object,
        field: field.into(),
        message: format!(
            "{} are not offered to proxyless gRPC clients of {} (ExternalName or TCP); {outcome}",
            not_grpc.join(", "),
            r.name
        ),
    }
}

/// The routes of a port's rules for gRPC clients.
fn routes(
    r: &PortRouting,
    retry: Option<GrpcRetry>,
    not_grpc: &[String],
    void: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Route> {
    let mut routes = Vec::new();
    for rule in &r.rules {
        let Some(m) = rule_match(rule, &r.name, diagnostics) else {
            continue;
        };
        let extra = rule.extra.as_deref();
        if let Some(e) = extra {
            ignored_extras(e, &r.name, diagnostics);
        }
        let kept = if extra.is_some() {
            route_dest(&rule.dest, not_grpc, void)
        } else {
            match split_dest(&rule.dest, not_grpc) {
                Some(d) => d,
                None => continue,
            }
        };
        let timeout = extra
            .and_then(|e| e.timeout)
            .or(r.timeout)
            .filter(|t| !t.is_zero());
        routes.push(Route {
            r#match: Some(m),
            action: Some(action(
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
    routes
}

/// The RouteConfiguration of one Service port for gRPC clients, and what of the
/// routing IR gRPC cannot honour.
pub(crate) fn route(r: &PortRouting, namespace: &str) -> (Resource, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let void = void_name(&r.name);
    let not_grpc = not_offered(r);
    let retry = r
        .retry
        .as_ref()
        .and_then(|p| retry_policy(p, namespace, &r.name, &mut diagnostics));
    let routes = routes(r, retry, &not_grpc, &void, &mut diagnostics);
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
    if !not_grpc.is_empty() {
        diagnostics.push(not_offered_diagnostic(r, namespace, &not_grpc));
    }
    let mut refs: Vec<String> = r
        .refs
        .iter()
        .filter(|c| !not_grpc.contains(c))
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
