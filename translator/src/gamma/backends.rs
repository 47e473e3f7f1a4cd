//! Where a route rule sends requests (its backendRefs) and what else it sets (filters,
//! timeouts, retries).

use crds::BackendRef;
use crds::ConditionReason;
use crds::gateway::{HTTPHeaderFilter, HTTPPathModifier, HTTPRouteFilter};

use super::view::RuleView;
use crate::model::{Model, NsName, ObjectKey, Protocol};
use crate::names;
use crate::routing::ir::{
    Backend, BackendFacts, Dest, HeaderEdits, PathChange, Redirect, Retry, Rewrite, RuleExtra,
};

/// Why a reference did not resolve, naming the field.
pub(crate) type Issue = (ConditionReason, String);

/// A rule's destination, facts about its backends, per-backend header changes, and what
/// did not resolve (reason, message naming the field).
pub(crate) struct Resolved {
    pub dest: Dest,
    pub backends: Vec<BackendFacts>,
    pub backend_headers: Vec<(String, HeaderEdits, HeaderEdits)>,
    pub issues: Vec<(ConditionReason, String)>,
}

/// A backend reference of a route in `ns` as (cluster, whether it is an HTTP port with
/// endpoints), or why it does not resolve. A Service in another namespace resolves only
/// when it is among `parents`: a consumer route may send its callers on to the Service
/// it routes (they may call it anyway).
fn cluster_of(
    model: &Model,
    ns: &str,
    parents: &[NsName],
    f: &str,
    b: &BackendRef,
) -> Result<(String, bool), (ConditionReason, String)> {
    if !b.is_service() {
        return Err((
            ConditionReason::InvalidKind,
            format!(
                "{f}: {}/{} is not supported; only Services",
                b.group.as_deref().unwrap_or(""),
                b.kind.as_deref().unwrap_or("Service")
            ),
        ));
    }
    if let Some(other) = b.namespace.as_deref().filter(|n| *n != ns)
        && !parents.contains(&(other.to_string(), b.name.clone()))
    {
        return Err((
            ConditionReason::RefNotPermitted,
            format!(
                "{f}.namespace: Service {other}/{} is in another namespace and not a parent of the route (ReferenceGrants are not supported)",
                b.name
            ),
        ));
    }
    let ns = b.namespace.as_deref().unwrap_or(ns);
    let port = b.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
    let Some(svc) = model.service(ns, &b.name) else {
        return Err((
            ConditionReason::BackendNotFound,
            format!("{f}.name: Service {ns}/{} not found", b.name),
        ));
    };
    let Some(sp) = svc.ports.iter().find(|sp| sp.port == port) else {
        return Err((
            ConditionReason::BackendNotFound,
            format!("{f}.port: Service {ns}/{} has no port {port}", b.name),
        ));
    };
    if sp.protocol == Protocol::Tcp {
        return Err((
            ConditionReason::UnsupportedProtocol,
            format!("{f}.port: port {port} of Service {ns}/{} is TCP", b.name),
        ));
    }
    Ok((
        names::outbound_cluster(svc, port),
        svc.http_with_endpoints(sp),
    ))
}

/// Resolves `backends` of a rule of a route in `ns` with Service parents `parents` in
/// other namespaces. A backend that does not resolve
/// keeps its weight as [`Backend::Missing`]: its share of
/// requests fails (HTTPRoute: 500; GRPCRoute: UNAVAILABLE), as the spec requires. A
/// rule with no backend of weight above 0 fails every request: HTTPRoute with 500,
/// GRPCRoute with UNAVAILABLE.
pub(crate) fn destination(
    model: &Model,
    (ns, parents): (&str, &[NsName]),
    field: &str,
    backends: &[BackendRef],
    grpc: bool,
) -> Resolved {
    let mut weighted: Vec<(Backend, u32)> = Vec::new();
    let mut facts: Vec<BackendFacts> = Vec::new();
    let mut backend_headers = Vec::new();
    let mut issues = Vec::new();
    let add = |weighted: &mut Vec<(Backend, u32)>, cluster: Backend, weight: u32| {
        if weight == 0 {
            return;
        }
        match weighted.iter_mut().find(|(c, _)| *c == cluster) {
            Some((_, w)) => *w = w.saturating_add(weight),
            None => weighted.push((cluster, weight)),
        }
    };
    for (i, b) in backends.iter().enumerate() {
        let f = format!("{field}.backendRefs[{i}]");
        let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        match cluster_of(model, ns, parents, &f, b) {
            Ok((cluster, offered)) => {
                if !facts.iter().any(|f| f.cluster == cluster) {
                    facts.push(BackendFacts {
                        cluster: cluster.clone(),
                        http_with_endpoints: offered,
                    });
                }
                let filter = |t: &str| b.filters.iter().find(|x| x.type_ == t);
                let req = edits(
                    filter("RequestHeaderModifier")
                        .and_then(|x| x.request_header_modifier.as_ref()),
                );
                let resp = edits(
                    filter("ResponseHeaderModifier")
                        .and_then(|x| x.response_header_modifier.as_ref()),
                );
                if weight > 0
                    && (!req.is_empty() || !resp.is_empty())
                    && !backend_headers.iter().any(|(c, _, _)| *c == cluster)
                {
                    backend_headers.push((cluster.clone(), req, resp));
                }
                add(&mut weighted, Backend::Cluster(cluster), weight);
            }
            Err(issue) => {
                issues.push(issue);
                add(&mut weighted, Backend::Missing, weight);
            }
        }
    }
    let none_left = weighted.iter().all(|(b, _)| *b == Backend::Missing);
    let dest = match (none_left, grpc, weighted.as_slice()) {
        (true, false, _) => Dest::Status(500),
        (true, true, _) => Dest::NoBackend,
        (false, _, [(Backend::Cluster(c), _)]) => Dest::Cluster(c.clone()),
        (false, _, _) => Dest::Weighted(weighted),
    };
    Resolved {
        dest,
        backends: facts,
        backend_headers,
        issues,
    }
}

/// A rule's `RequestMirror` filters as (cluster, share in millionths); a mirror whose
/// backend does not resolve is left out and reported.
pub(crate) fn mirrors(
    model: &Model,
    (ns, parents): (&str, &[NsName]),
    field: &str,
    filters: &[HTTPRouteFilter],
) -> (Vec<(String, u32)>, Vec<Issue>) {
    let mut out = Vec::new();
    let mut issues = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let Some(m) = &f.request_mirror else {
            continue;
        };
        let at = format!("{field}.filters[{i}].requestMirror.backendRef");
        match cluster_of(model, ns, parents, &at, &m.backend_ref.as_backend()) {
            Ok((cluster, _)) => out.push((cluster, m.per_million())),
            Err(issue) => issues.push(issue),
        }
    }
    (out, issues)
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

/// What a rule (at `field`) sets besides its destination (`mirrors` and
/// `backend_headers` resolved by the caller).
pub(crate) fn extra(
    route: &ObjectKey,
    field: &str,
    rule: &RuleView<'_>,
    grpc: bool,
    mirrors: Vec<(String, u32)>,
    backend_headers: Vec<(String, HeaderEdits, HeaderEdits)>,
) -> RuleExtra {
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
        // What a request whose share goes to a backend that did not resolve gets.
        no_backend_status: if grpc { 503 } else { 500 },
        mirrors,
        backend_headers,
        redirect: rule.filters.iter().enumerate().find_map(|(i, f)| {
            let r = f.request_redirect.as_ref()?;
            Some(Redirect {
                field: format!("{field}.filters[{i}]"),
                scheme: r.scheme.clone(),
                host: r.hostname.clone(),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                path: r.path.as_ref().and_then(path_change),
                status: r
                    .status_code
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(302),
            })
        }),
        rewrite: rule.filters.iter().enumerate().find_map(|(i, f)| {
            let r = f.url_rewrite.as_ref()?;
            Some(Rewrite {
                field: format!("{field}.filters[{i}]"),
                host: r.hostname.clone(),
                path: r.path.as_ref().and_then(path_change),
            })
        }),
    }
}

/// A path modifier in routing-model terms (validation checked its type and value).
fn path_change(m: &HTTPPathModifier) -> Option<PathChange> {
    match m.type_.as_str() {
        "ReplaceFullPath" => m.replace_full_path.clone().map(PathChange::Full),
        "ReplacePrefixMatch" => m.replace_prefix_match.clone().map(PathChange::Prefix),
        _ => None,
    }
}
