//! Status of Gateway API routes: for each Service parent, `Accepted` and `ResolvedRefs`
//! with the reasons the Gateway API defines.

use std::collections::BTreeMap;

use crds::gateway::ParentReference;
use crds::{ConditionReason, MeshCondition};

use crate::gamma::backends;
use crate::gamma::resolve::{Taken, attach, attachments, audience, too_large};
use crate::gamma::view::{self, RouteView};
use crate::model::{Excluded, Model, NsName, ObjectKey};

/// The status of one route: its generation and, for each Service parent, `Accepted`
/// and `ResolvedRefs`. A route without Service parents has none (and loses any entry
/// Rudder wrote before).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RouteParents {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// (parentRef, conditions), in spec order.
    pub parents: Vec<(ParentReference, Vec<MeshCondition>)>,
}

/// Conditions for every route.
pub(crate) fn route_status(model: &Model) -> BTreeMap<ObjectKey, RouteParents> {
    let mut out = BTreeMap::new();
    let routes = view::routes(model, &Excluded::new());
    let (_, grpc_taken) = attachments(model, &routes);
    for route in &routes {
        let ns = route.key.namespace.as_str();
        let resolved = resolved_refs(model, route);
        let ports = route
            .parents
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_service())
            .filter_map(|(i, p)| attach(model, ns, i, p).ok())
            .flat_map(|(svc, ports)| ports.into_iter().map(move |port| (svc.clone(), port)))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let oversize = too_large(route, ports);
        let parents: Vec<(ParentReference, Vec<MeshCondition>)> = route
            .parents
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_service())
            .map(|(i, p)| {
                let accepted = match attach(model, ns, i, p) {
                    Ok(_) if oversize.is_some() => MeshCondition::new(
                        "Accepted",
                        false,
                        ConditionReason::UnsupportedValue,
                        oversize.clone().unwrap_or_default(),
                    ),
                    Ok((svc, ports)) => accepted(route, i, &svc, &ports, &grpc_taken),
                    Err((reason, message)) => {
                        MeshCondition::new("Accepted", false, reason, message)
                    }
                };
                (p.clone(), vec![accepted, resolved.clone()])
            })
            .collect();
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

/// `ResolvedRefs` of a route: its backends and mirrors that do not resolve, and what
/// becomes of them.
fn resolved_refs(model: &Model, route: &RouteView<'_>) -> MeshCondition {
    let ns = route.key.namespace.as_str();
    let foreign = route.foreign_parents();
    let (mut backend_issues, mut mirror_issues) = (Vec::new(), Vec::new());
    for (ri, rule) in route.rules.iter().enumerate() {
        let field = format!("spec.rules[{ri}]");
        let r = backends::destination(model, (ns, &foreign), &field, rule.backends, route.grpc);
        backend_issues.extend(r.issues);
        mirror_issues.extend(backends::mirrors(model, (ns, &foreign), &field, rule.filters).1);
    }
    let failing = if route.grpc { "UNAVAILABLE" } else { "500" };
    let join = |v: &[backends::Issue]| {
        v.iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut said = Vec::new();
    if !backend_issues.is_empty() {
        said.push(format!(
            "{}; their share of requests fails with {failing}",
            join(&backend_issues)
        ));
    }
    if !mirror_issues.is_empty() {
        said.push(format!(
            "{}; those mirrors are left out",
            join(&mirror_issues)
        ));
    }
    match backend_issues.first().or(mirror_issues.first()) {
        None => MeshCondition::new(
            "ResolvedRefs",
            true,
            ConditionReason::ResolvedRefs,
            "all references resolved",
        ),
        Some((reason, _)) => MeshCondition::new("ResolvedRefs", false, *reason, said.join("; ")),
    }
}

/// `Accepted` of a route's Service parent `i` that attaches to `ports` of `svc`: an
/// HTTPRoute does not apply on ports a GRPCRoute of the same audience routes; a
/// consumer route (a Service in another namespace) applies to its own namespace's
/// callers.
fn accepted(
    route: &RouteView<'_>,
    i: usize,
    svc: &NsName,
    ports: &[u16],
    grpc_taken: &BTreeMap<Taken, ObjectKey>,
) -> MeshCondition {
    let who = audience(&route.key.namespace, svc);
    let taken: Vec<(u16, &ObjectKey)> = if route.grpc {
        Vec::new()
    } else {
        ports
            .iter()
            .filter_map(|port| {
                grpc_taken
                    .get(&(who.clone(), (svc.clone(), *port)))
                    .map(|k| (*port, k))
            })
            .collect()
    };
    let consumer = match &who {
        Some(ns) => format!(
            "; a consumer route of Service {}/{}: applies to callers in namespace {ns}, before the Service's own routes (to Envoy sidecars and proxyless gRPC clients)",
            svc.0, svc.1
        ),
        None => String::new(),
    };
    let list = |t: &[(u16, &ObjectKey)]| {
        t.iter()
            .map(|(port, k)| format!("port {port} by {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !taken.is_empty() && taken.len() == ports.len() {
        MeshCondition::new(
            "Accepted",
            false,
            ConditionReason::Conflicted,
            format!(
                "spec.parentRefs[{i}]: routed by GRPCRoutes ({}); on a port a GRPCRoute routes, HTTPRoutes do not apply",
                list(&taken)
            ),
        )
    } else if !taken.is_empty() {
        MeshCondition::new(
            "Accepted",
            true,
            ConditionReason::Accepted,
            format!(
                "accepted, except where GRPCRoutes route ({}){consumer}",
                list(&taken)
            ),
        )
    } else {
        MeshCondition::new(
            "Accepted",
            true,
            ConditionReason::Accepted,
            format!("accepted{consumer}"),
        )
    }
}
