//! Status conditions of the mesh policy objects, computed from the model alone:
//! `Accepted` (the spec is valid, supported and not overruled) and `ResolvedRefs`
//! (every Service it names exists). Messages name the field. Gateway API routes get
//! them per Service parent ([`PolicyStatus::parents`]), with the reasons the Gateway
//! API defines.

use std::collections::BTreeMap;

use crds::{ConditionReason, MeshCondition};

use crate::model::{Kind, Model, ObjectKey};

/// The conditions one object should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyStatus {
    /// `metadata.generation` they describe.
    pub generation: Option<i64>,
    /// `Accepted`, then `ResolvedRefs`. For a route: conditions for every Service parent
    /// (when it was refused as a whole), else empty.
    pub conditions: Vec<MeshCondition>,
    /// For a route: each Service parent, as the route names it, with its conditions.
    pub parents: Vec<(crds::ParentReference, Vec<MeshCondition>)>,
}

fn accepted(ok: Result<(), (ConditionReason, String)>) -> MeshCondition {
    match ok {
        Ok(()) => MeshCondition::new("Accepted", true, ConditionReason::Accepted, "accepted"),
        Err((reason, message)) => MeshCondition::new("Accepted", false, reason, message),
    }
}

fn resolved(missing: Vec<String>) -> MeshCondition {
    if missing.is_empty() {
        MeshCondition::new(
            "ResolvedRefs",
            true,
            ConditionReason::ResolvedRefs,
            "all references resolved",
        )
    } else {
        MeshCondition::new(
            "ResolvedRefs",
            false,
            ConditionReason::BackendNotFound,
            missing.join("; "),
        )
    }
}

/// Conditions for every TrafficSplit and RetryPolicy in the model.
pub fn policy_status(model: &Model) -> BTreeMap<ObjectKey, PolicyStatus> {
    let mut out = BTreeMap::new();
    let routes = crate::gamma::resolve::resolve(model, &Default::default());
    for (key, r) in crate::status::routes::route_status(model) {
        out.insert(
            key,
            PolicyStatus {
                generation: r.generation,
                conditions: Vec::new(),
                parents: r.parents,
            },
        );
    }
    let split_winners = crate::policy::split::split_winners(model, &Default::default());
    let nesting = crate::policy::split::nesting(&split_winners);
    for ts in model.traffic_splits() {
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
        let unsupported = ts.spec.unsupported_matches();
        // Gateway API routes take precedence on the ports they route; the split keeps the
        // others (TCP ports' tunnels included).
        let routed = routes.get(&apex).map(|r| (r.ports(), r.sources.first()));
        let all_ports: std::collections::BTreeSet<u16> = model
            .service(ns, &ts.spec.service)
            .map(|s| s.ports.iter().map(|p| p.port).collect())
            .unwrap_or_default();
        let mut partly = None;
        let acc = if let Some((ports, Some(route))) = &routed
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
        } else if let Some(e @ crate::policy::split::NestingError::NestedMatches { .. }) = nested {
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
        };
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
            Some(e @ crate::policy::split::NestingError::Cycle(_)) => MeshCondition::new(
                "ResolvedRefs",
                false,
                ConditionReason::RefCycle,
                format!("{e}; the last good routing stays in effect"),
            ),
            _ => resolved(missing),
        };
        out.insert(
            key(Kind::TrafficSplit, &ts.metadata),
            PolicyStatus {
                generation: ts.metadata.generation,
                conditions: vec![
                    match partly {
                        Some(m) => {
                            MeshCondition::new("Accepted", true, ConditionReason::Accepted, m)
                        }
                        None => accepted(acc),
                    },
                    refs,
                ],
                parents: Vec::new(),
            },
        );
    }
    // The oldest policy for a (namespace, service, port) wins; ties break by name.
    let winners = crate::policy::retry::retry_winners(model, &Default::default());
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
    out
}

fn key(kind: Kind, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
    }
}
