//! Status conditions of the mesh policy objects, computed from the model alone:
//! `Accepted` (the spec is valid, supported and not overruled) and `ResolvedRefs`
//! (every Service it names exists). Messages name the field. Gateway API routes get
//! them per Service parent ([`PolicyStatus::parents`]), with the reasons the Gateway
//! API defines.

use std::collections::BTreeMap;

use crds::{ConditionReason, MeshCondition};

use super::conditions::{PolicyStatus, accepted, resolved};

use std::collections::BTreeSet;

use crds::TrafficSplit;

use crate::gamma::resolve::{RouteState, resolve as resolve_routes};
use crate::model::{Kind, Model, ObjectKey};
use crate::policy::retry::retry_winners;
use crate::policy::split::{NestingError, nesting, split_winners};
use crate::status::routes::route_status;

/// The nesting of every winning split ([`nesting`]).
type Nesting = BTreeMap<(String, String), Result<Vec<(String, String)>, NestingError>>;

/// Conditions for every TrafficSplit and RetryPolicy in the model.
pub fn policy_status(model: &Model) -> BTreeMap<ObjectKey, PolicyStatus> {
    let mut out = BTreeMap::new();
    for (key, r) in route_status(model) {
        out.insert(
            key,
            PolicyStatus {
                generation: r.generation,
                conditions: Vec::new(),
                parents: r.parents,
            },
        );
    }
    // Consumer routes apply to their own namespace's callers only: a split still routes
    // every other caller.
    let (routes, _) = resolve_routes(model, &Default::default());
    let split_winners = split_winners(model, &Default::default());
    let nesting = nesting(&split_winners);
    for ts in model.traffic_splits() {
        out.insert(
            key(Kind::TrafficSplit, &ts.metadata),
            split_status(model, ts, &routes, &split_winners, &nesting),
        );
    }
    retry_statuses(model, &mut out);
    for t in model.traffic_targets() {
        out.insert(
            key(Kind::TrafficTarget, &t.metadata),
            super::access::target_status(model, t),
        );
    }
    out
}

/// The status of every RetryPolicy.
fn retry_statuses(model: &Model, out: &mut BTreeMap<ObjectKey, PolicyStatus>) {
    // The oldest policy for a (namespace, service, port) wins; ties break by name.
    let winners = retry_winners(model, &Default::default());
    for rp in model.retry_policies() {
        let ns = rp
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default")
            .to_string();
        let name = rp.metadata.name.clone().unwrap_or_default();
        let target = &rp.spec.target_ref;
        let mut missing = Vec::new();
        match model.service(&ns, &target.name) {
            None => missing.push(format!(
                "spec.targetRef.name: Service {ns}/{} not found",
                target.name
            )),
            Some(svc) => {
                if let Some(port) = target.port
                    && !svc.ports.iter().any(|p| u32::from(p.port) == port)
                {
                    missing.push(format!(
                        "spec.targetRef.port: Service {ns}/{} has no port {port}",
                        target.name
                    ));
                }
            }
        }
        let slot = (ns.clone(), target.name.clone(), target.port);
        let acc = match winners.get(&slot) {
            Some(first) if *first != name => Err((
                ConditionReason::Conflicted,
                format!(
                    "RetryPolicy {ns}/{first} already targets Service {ns}/{} (the oldest policy wins)",
                    target.name
                ),
            )),
            _ => Ok(()),
        };
        out.insert(
            key(Kind::RetryPolicy, &rp.metadata),
            PolicyStatus {
                generation: rp.metadata.generation,
                conditions: vec![accepted(acc), resolved(missing)],
                parents: Vec::new(),
            },
        );
    }
}

/// The status of one TrafficSplit.
fn split_status(
    model: &Model,
    ts: &TrafficSplit,
    routes: &RouteState,
    split_winners: &BTreeMap<(String, String), &TrafficSplit>,
    nesting: &Nesting,
) -> PolicyStatus {
    let ns = ts.metadata.namespace.as_deref().unwrap_or("default");
    let name = ts.metadata.name.as_deref().unwrap_or_default();
    let apex = (ns.to_string(), ts.spec.service.clone());
    let winner = split_winners
        .get(&apex)
        .and_then(|w| w.metadata.name.as_deref())
        .filter(|w| *w != name);
    let nested = winner
        .is_none()
        .then(|| nesting.get(&apex).and_then(|r| r.as_ref().err()))
        .flatten();
    let missing = split_missing(model, ns, ts);
    // Gateway API routes take precedence on the ports they route; the split keeps the
    // others (TCP ports' tunnels included).
    let routed = routes.get(&apex).map(|r| (r.ports(), r.sources.first()));
    let mut partly = None;
    let acc = split_acceptance(model, ts, routed.as_ref(), winner, nested);
    if acc.is_ok()
        && let Some((ports, Some(route))) = &routed
    {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        partly = Some(format!(
            "accepted; on port(s) {} of Service {ns}/{} the routes of {route} take precedence",
            list.join(", "),
            ts.spec.service
        ));
    }
    let refs = match nested {
        Some(e @ NestingError::Cycle(_)) => MeshCondition::new(
            "ResolvedRefs",
            false,
            ConditionReason::RefCycle,
            format!("{e}; the last good routing stays in effect"),
        ),
        _ => resolved(missing),
    };
    PolicyStatus {
        generation: ts.metadata.generation,
        conditions: vec![
            match partly {
                Some(m) => MeshCondition::new("Accepted", true, ConditionReason::Accepted, m),
                None => accepted(acc),
            },
            refs,
        ],
        parents: Vec::new(),
    }
}

/// What a TrafficSplit names that does not exist, each naming the field.
fn split_missing(model: &Model, ns: &str, ts: &TrafficSplit) -> Vec<String> {
    let mut missing = Vec::new();
    if model.service(ns, &ts.spec.service).is_none() {
        missing.push(format!(
            "spec.service: Service {ns}/{} not found",
            ts.spec.service
        ));
    }
    for (i, b) in ts.spec.backends.iter().enumerate() {
        if model.service(ns, &b.service).is_none() {
            missing.push(format!(
                "spec.backends[{i}].service: Service {ns}/{} not found",
                b.service
            ));
        }
    }
    missing
}

/// Whether a TrafficSplit is accepted, or why not: routes that take its every port, an
/// older split, a nested split with matches, an unsupported match, nothing routable.
fn split_acceptance(
    model: &Model,
    ts: &TrafficSplit,
    routed: Option<&(BTreeSet<u16>, Option<&ObjectKey>)>,
    winner: Option<&str>,
    nested: Option<&NestingError>,
) -> Result<(), (ConditionReason, String)> {
    let ns = ts.metadata.namespace.as_deref().unwrap_or("default");
    let unsupported = ts.spec.unsupported_matches();
    let all_ports: BTreeSet<u16> = model
        .service(ns, &ts.spec.service)
        .map(|s| s.ports.iter().map(|p| p.port).collect())
        .unwrap_or_default();
    if let Some((ports, Some(route))) = routed
        && ports.is_superset(&all_ports)
    {
        Err((
            ConditionReason::Conflicted,
            format!(
                "{route} routes Service {ns}/{} (Gateway API routes take precedence over TrafficSplits)",
                ts.spec.service
            ),
        ))
    } else if let Some(w) = winner {
        Err((
            ConditionReason::Conflicted,
            format!(
                "TrafficSplit {ns}/{w} already splits Service {ns}/{} (the oldest split wins)",
                ts.spec.service
            ),
        ))
    } else if let Some(e @ NestingError::NestedMatches { .. }) = nested {
        Err((
            ConditionReason::Unsupported,
            format!("{e}; the last good routing stays in effect"),
        ))
    } else if let Some((i, kind)) = unsupported.first() {
        Err((
            ConditionReason::Unsupported,
            format!(
                "spec.matches[{i}].kind: {} is not supported; only HTTPRouteGroup",
                crds::text::quote(kind)
            ),
        ))
    } else if ts.spec.all_weights_zero() {
        Err((
            ConditionReason::Invalid,
            "spec.backends: every weight is 0; the last good routing stays in effect".into(),
        ))
    } else if ts
        .spec
        .weighted()
        .iter()
        .all(|(service, w)| *w == 0 || model.service(ns, service).is_none())
    {
        Err((
            ConditionReason::BackendNotFound,
            "spec.backends: no backend with a weight above 0 exists; the last good routing stays in effect".into(),
        ))
    } else {
        Ok(())
    }
}

fn key(kind: Kind, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
    }
}
