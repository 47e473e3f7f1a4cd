//! Where a route rule sends requests (its backendRefs) and what else it sets (filters,
//! timeouts, retries).

use crds::BackendRef;
use crds::ConditionReason;
use crds::gateway::HTTPHeaderFilter;

use super::view::RuleView;
use crate::model::{Model, ObjectKey, Protocol};
use crate::names;
use crate::routing::{Dest, HeaderEdits, NO_BACKEND, Retry, RuleExtra};

/// A rule's destination, the clusters in it gRPC clients are not offered, and what did
/// not resolve (reason, message naming the field).
pub(super) struct Resolved {
    pub dest: Dest,
    pub not_grpc: Vec<String>,
    pub issues: Vec<(ConditionReason, String)>,
}

/// Resolves `backends` of a rule of a route in `ns`. A backend that does not resolve
/// keeps its weight, pointed at [`NO_BACKEND`] (a cluster that never exists): its share of
/// requests fails (HTTPRoute: 500; GRPCRoute: UNAVAILABLE), as the spec requires. A
/// rule with no backend of weight above 0 fails every request: HTTPRoute with 500,
/// GRPCRoute with UNAVAILABLE.
pub(super) fn destination(
    model: &Model,
    ns: &str,
    field: &str,
    backends: &[BackendRef],
    grpc: bool,
) -> Resolved {
    let mut weighted: Vec<(String, u32)> = Vec::new();
    let mut not_grpc = Vec::new();
    let mut issues = Vec::new();
    let add = |weighted: &mut Vec<(String, u32)>, cluster: String, weight: u32| {
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
        let issue = if !b.is_service() {
            Some((
                ConditionReason::InvalidKind,
                format!(
                    "{f}: {}/{} is not supported; only Services",
                    b.group.as_deref().unwrap_or(""),
                    b.kind.as_deref().unwrap_or("Service")
                ),
            ))
        } else if b.namespace.as_deref().is_some_and(|n| n != ns) {
            Some((
                ConditionReason::RefNotPermitted,
                format!(
                    "{f}.namespace: Service {}/{} is in another namespace (ReferenceGrants are not supported)",
                    b.namespace.as_deref().unwrap_or_default(),
                    b.name
                ),
            ))
        } else {
            let port = b.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
            match model.service(ns, &b.name) {
                None => Some((
                    ConditionReason::BackendNotFound,
                    format!("{f}.name: Service {ns}/{} not found", b.name),
                )),
                Some(svc) => match svc.ports.iter().find(|sp| sp.port == port) {
                    None => Some((
                        ConditionReason::BackendNotFound,
                        format!("{f}.port: Service {ns}/{} has no port {port}", b.name),
                    )),
                    Some(sp) if sp.protocol == Protocol::Tcp => Some((
                        ConditionReason::UnsupportedProtocol,
                        format!("{f}.port: port {port} of Service {ns}/{} is TCP", b.name),
                    )),
                    Some(sp) => {
                        let cluster = names::outbound_cluster(svc, port);
                        if !crate::grpc::offered(svc, sp) && !not_grpc.contains(&cluster) {
                            not_grpc.push(cluster.clone());
                        }
                        add(&mut weighted, cluster, weight);
                        None
                    }
                },
            }
        };
        if let Some(issue) = issue {
            issues.push(issue);
            add(&mut weighted, NO_BACKEND.to_string(), weight);
        }
    }
    let none_left = weighted.iter().all(|(c, _)| c == NO_BACKEND);
    let dest = match (none_left, grpc) {
        (true, false) => Dest::Status(500),
        (true, true) => Dest::Cluster(NO_BACKEND.to_string()),
        (false, _) if weighted.len() == 1 => Dest::Cluster(weighted.remove(0).0),
        (false, _) => Dest::Weighted(weighted),
    };
    Resolved {
        dest,
        not_grpc,
        issues,
    }
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

/// What a rule sets besides its destination.
pub(super) fn extra(route: &ObjectKey, rule: &RuleView<'_>, grpc: bool) -> RuleExtra {
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
    }
}
