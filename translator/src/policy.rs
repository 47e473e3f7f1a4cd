//! Traffic policy from the mesh CRDs, resolved against the model:
//! - TrafficSplits become the effective backend weights of an apex Service. A split with
//!   nothing routable (all weights 0, no backend exists, an unsupported match) keeps the
//!   last good weights ([`SplitState`] is carried from one build to the next).
//! - RetryPolicies: one per (Service, port), the oldest winning; a port-specific policy
//!   beats a whole-Service one on its port.
//!
//! Objects in the `excluded` set (ones a proxy rejected config from, see the server's
//! containment) count as absent: an excluded split contributes nothing (its apex routes
//! to itself), and an excluded RetryPolicy leaves its slot to the next oldest. A split
//! whose HTTPRouteGroup is missing keeps its last good weights.

use std::collections::{BTreeMap, BTreeSet};

use crds::{HTTPMatch, RetryPolicy};

use crate::model::{Kind, Model, ObjectKey};

/// Objects left out of translation.
pub type Excluded = BTreeSet<ObjectKey>;

/// Weights and matches in effect for one apex Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveSplit {
    /// The TrafficSplit in effect.
    pub source: String,
    /// Backends with a weight above 0 that exist: (Service name, weight).
    pub backends: Vec<(String, u32)>,
    /// Only requests matching one of these are split (empty: all requests).
    pub matches: Vec<HTTPMatch>,
    /// The HTTPRouteGroups the matches came from.
    pub route_groups: Vec<String>,
}

/// Effective splits by apex (namespace, Service).
pub type SplitState = BTreeMap<(String, String), EffectiveSplit>;

/// The splits in effect now, given those in effect before.
pub fn resolve_splits(model: &Model, previous: &SplitState, excluded: &Excluded) -> SplitState {
    let mut out = SplitState::new();
    for ts in model.traffic_splits() {
        let ns = ts
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let apex = (ns.clone(), ts.spec.service.clone());
        if out.contains_key(&apex) {
            continue; // one split per apex; the first by name wins
        }
        let name = ts.metadata.name.clone().unwrap_or_default();
        let groups: Option<Vec<(String, &crds::HTTPRouteGroup)>> = ts
            .spec
            .matches
            .iter()
            .map(|m| {
                let key = ObjectKey::new(Kind::HTTPRouteGroup, &ns, &m.name);
                let g = model.route_group(&ns, &m.name)?;
                (!excluded.contains(&key)).then(|| (m.name.clone(), g))
            })
            .collect();
        if excluded.contains(&ObjectKey::new(Kind::TrafficSplit, &ns, &name)) {
            // Left out: no contribution at all, not even the weights it last had (a
            // proxy may be rejecting exactly those).
            continue;
        }
        let backends: Vec<(String, u32)> = ts
            .spec
            .backends
            .iter()
            .filter(|b| b.weight > 0 && model.service(&ns, &b.service).is_some())
            .map(|b| {
                (
                    b.service.clone(),
                    u32::try_from(b.weight).unwrap_or(u32::MAX),
                )
            })
            .collect();
        let usable = !backends.is_empty() && ts.spec.unsupported_matches().is_empty();
        if let (true, Some(groups)) = (usable, groups) {
            let matches = groups
                .iter()
                .flat_map(|(_, g)| g.spec.matches.iter().cloned())
                .collect();
            out.insert(
                apex,
                EffectiveSplit {
                    source: name,
                    backends,
                    matches,
                    route_groups: groups.into_iter().map(|(n, _)| n).collect(),
                },
            );
        } else if let Some(last_good) = previous.get(&apex) {
            out.insert(apex, last_good.clone());
        }
    }
    out
}

/// (namespace, Service, port or None for every port) -> winning policy name.
pub fn retry_winners(
    model: &Model,
    excluded: &Excluded,
) -> BTreeMap<(String, String, Option<u32>), String> {
    let mut policies: Vec<&RetryPolicy> = model
        .retry_policies()
        .filter(|p| {
            !excluded.contains(&ObjectKey::new(
                Kind::RetryPolicy,
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or_default(),
            ))
        })
        .collect();
    policies.sort_by_key(|p| {
        (
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            p.metadata.name.clone(),
        )
    });
    let mut winners = BTreeMap::new();
    for p in policies {
        let ns = p
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let slot = (ns, p.spec.target_ref.name.clone(), p.spec.target_ref.port);
        winners
            .entry(slot)
            .or_insert_with(|| p.metadata.name.clone().unwrap_or_default());
    }
    winners
}

/// The policy in effect for calls to `svc` on `port`.
pub fn retry_for<'a>(
    model: &'a Model,
    winners: &BTreeMap<(String, String, Option<u32>), String>,
    ns: &str,
    svc: &str,
    port: u16,
) -> Option<&'a RetryPolicy> {
    let by = |p: Option<u32>| winners.get(&(ns.to_string(), svc.to_string(), p));
    let name = by(Some(u32::from(port))).or_else(|| by(None))?;
    model.retry_policy(ns, name)
}

/// Everything policy-related a build needs, computed once per build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyContext {
    /// Splits in effect.
    pub splits: SplitState,
    /// Winning retry policies.
    pub retry_winners: BTreeMap<(String, String, Option<u32>), String>,
}

impl PolicyContext {
    /// Resolves policy against `model`; `previous` are the splits of the last build,
    /// `excluded` the objects left out.
    pub fn new(model: &Model, previous: &SplitState, excluded: &Excluded) -> Self {
        PolicyContext {
            splits: resolve_splits(model, previous, excluded),
            retry_winners: retry_winners(model, excluded),
        }
    }
}
