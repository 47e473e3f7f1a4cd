//! HTTPRoutes and GRPCRoutes seen alike: their parents, and their rules with each
//! match in the routing model's terms and its precedence rank.

use crds::gateway::{GRPCRouteMatch, HTTPHeaderMatch, HTTPRouteMatch, ParentReference};
use crds::gateway_validate::{GrpcPath, grpc_method_path};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::Excluded;
use crate::model::{Kind, Model, NsName, ObjectKey};
use crate::routing::ir::{Match, PathMatch, StrMatch};

/// The precedence of a match within its route kind: higher sorts first. HTTPRoute:
/// (path kind: exact 3, regex 2, prefix 1; path length; method; headers; query
/// parameters). GRPCRoute: (service length; method length; headers; 0; 0). Routes of the
/// two kinds never share a port, so the two orders never mix.
pub(crate) type Rank = (usize, usize, usize, usize, usize);

/// A rule of either route kind.
pub(crate) struct RuleView<'a> {
    pub matches: Vec<(Match, Rank)>,
    pub filters: &'a [crds::gateway::HTTPRouteFilter],
    pub backends: &'a [crds::BackendRef],
    pub timeouts: Option<&'a crds::gateway::HTTPRouteTimeouts>,
    pub retry: Option<&'a crds::gateway::HTTPRouteRetry>,
}

/// A route of either kind.
pub(crate) struct RouteView<'a> {
    pub key: ObjectKey,
    pub meta: &'a ObjectMeta,
    pub parents: &'a [ParentReference],
    pub rules: Vec<RuleView<'a>>,
    /// A GRPCRoute.
    pub grpc: bool,
    /// The estimated size of one copy of what it renders (one per Service port).
    pub rendered: usize,
}

impl RouteView<'_> {
    /// The Services in other namespaces its parentRefs name: it is a consumer route of
    /// them (it routes the calls of its own namespace to them).
    pub(crate) fn foreign_parents(&self) -> Vec<NsName> {
        self.parents
            .iter()
            .filter(|p| p.is_service())
            .filter_map(|p| {
                let ns = p.namespace.as_deref()?;
                (ns != self.key.namespace).then(|| (ns.to_string(), p.name.clone()))
            })
            .collect()
    }
}

/// String conditions, keeping the first of equivalent names (headers: any case; query
/// parameters: exactly), as the spec says.
fn str_matches(ms: &[HTTPHeaderMatch], fold_case: bool) -> Vec<(String, StrMatch)> {
    let mut out: Vec<(String, StrMatch)> = Vec::new();
    for m in ms {
        let same = |n: &String| {
            if fold_case {
                n.eq_ignore_ascii_case(&m.name)
            } else {
                *n == m.name
            }
        };
        if out.iter().any(|(n, _)| same(n)) {
            continue;
        }
        let v = m.value.clone();
        let cond = match m.type_.as_deref() {
            Some("RegularExpression") => StrMatch::Regex(v),
            _ => StrMatch::Exact(v),
        };
        out.push((m.name.clone(), cond));
    }
    out
}

fn http_match(m: &HTTPRouteMatch) -> (Match, Rank) {
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
    let m = Match {
        path,
        headers: str_matches(&m.headers, true),
        query: str_matches(&m.query_params, false),
        methods: m.method.iter().cloned().collect(),
    };
    let (kind, len) = match &m.path {
        PathMatch::Exact(p) => (3, p.len()),
        PathMatch::Regex(p) => (2, p.len()),
        PathMatch::Segments(p) | PathMatch::Prefix(p) => (1, p.len()),
    };
    let rank = (
        kind,
        len,
        usize::from(!m.methods.is_empty()),
        m.headers.len(),
        m.query.len(),
    );
    (m, rank)
}

fn grpc_match(m: &GRPCRouteMatch) -> (Match, Rank) {
    let path = match m.method.as_ref().map(grpc_method_path) {
        None | Some(GrpcPath::Any) => PathMatch::Prefix("/".into()),
        Some(GrpcPath::Exact(p)) => PathMatch::Exact(p),
        Some(GrpcPath::Prefix(p)) => PathMatch::Prefix(p),
        Some(GrpcPath::Regex(p)) => PathMatch::Regex(p),
    };
    let len = |s: Option<&String>| s.map_or(0, String::len);
    let method = m.method.as_ref();
    let rank = (
        len(method.and_then(|x| x.service.as_ref())),
        len(method.and_then(|x| x.method.as_ref())),
        m.headers.len(),
        0,
        0,
    );
    let m = Match {
        path,
        headers: str_matches(&m.headers, true),
        query: Vec::new(),
        methods: Vec::new(),
    };
    (m, rank)
}

/// A rule without matches matches every request, ranked last.
fn every_request() -> Vec<(Match, Rank)> {
    vec![(
        Match {
            path: PathMatch::Prefix("/".into()),
            headers: Vec::new(),
            query: Vec::new(),
            methods: Vec::new(),
        },
        (1, 1, 0, 0, 0),
    )]
}

fn grpc_every_request() -> Vec<(Match, Rank)> {
    let mut v = every_request();
    v[0].1 = (0, 0, 0, 0, 0);
    v
}

pub(crate) fn ns_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// Every route not `excluded`, oldest first (creation time, then namespace/name): the
/// order that breaks precedence ties.
pub(crate) fn routes<'a>(model: &'a Model, excluded: &Excluded) -> Vec<RouteView<'a>> {
    let key = |kind, meta: &ObjectMeta| {
        ObjectKey::new(kind, ns_of(meta), meta.name.as_deref().unwrap_or_default())
    };
    let http = model.http_routes().map(|r| RouteView {
        key: key(Kind::HTTPRoute, &r.metadata),
        meta: &r.metadata,
        parents: &r.spec.parent_refs,
        grpc: false,
        rendered: r.spec.rendered_bytes(),
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
        grpc: true,
        rendered: r.spec.rendered_bytes(),
        rules: r
            .spec
            .rules
            .iter()
            .map(|rule| RuleView {
                matches: if rule.matches.is_empty() {
                    grpc_every_request()
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
    out.sort_by(|a, b| {
        let t = |r: &RouteView| r.meta.creation_timestamp.as_ref().map(|t| t.0);
        (t(a), &a.key.namespace, &a.key.name, a.key.kind).cmp(&(
            t(b),
            &b.key.namespace,
            &b.key.name,
            b.key.kind,
        ))
    });
    out
}
