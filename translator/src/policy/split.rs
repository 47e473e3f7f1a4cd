//! TrafficSplits resolved against the model: the effective backend weights of each apex
//! Service. One split per apex takes effect: the oldest (creation time, then name); the
//! others are `Conflicted`. A split with nothing routable (all weights 0, no backend
//! exists, an unsupported match) keeps the last good weights ([`SplitState`] is carried
//! from one build to the next). Nested splits are composed (see [`crate::policy`]).

use std::collections::BTreeMap;

use crds::{HTTPMatch, TrafficSplit};

use crate::model::{Excluded, Kind, Model, ObjectKey};
use crate::policy::oldest::oldest_first;

/// Total weight of a composed (nested) split's leaves.
pub const COMPOSED_TOTAL: u64 = 1_000_000_000;

/// Weights and matches in effect for one apex Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveSplit {
    /// The TrafficSplit in effect.
    pub source: String,
    /// Nested TrafficSplits composed into it (their shares are in `backends`).
    pub nested: Vec<String>,
    /// Backends with a weight above 0 that exist: (Service name, weight).
    pub backends: Vec<(String, u32)>,
    /// Only requests matching one of these are split (empty: all requests).
    pub matches: Vec<HTTPMatch>,
    /// The HTTPRouteGroups the matches came from.
    pub route_groups: Vec<String>,
}

/// Effective splits by apex (namespace, Service).
pub type SplitState = BTreeMap<(String, String), EffectiveSplit>;

type Apex = (String, String);

fn ns_of(ts: &TrafficSplit) -> &str {
    ts.metadata.namespace.as_deref().unwrap_or("default")
}

/// The TrafficSplit that takes effect for each apex: the oldest (creation time, then
/// name) of those not excluded.
pub fn split_winners<'a>(
    model: &'a Model,
    excluded: &Excluded,
) -> BTreeMap<Apex, &'a TrafficSplit> {
    let mut out = BTreeMap::new();
    for ts in oldest_first(model.traffic_splits(), Kind::TrafficSplit, excluded, |t| {
        &t.metadata
    }) {
        out.entry((ns_of(ts).to_string(), ts.spec.service.clone()))
            .or_insert(ts);
    }
    out
}

/// Why a split's backends cannot be composed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NestingError {
    /// The apexes of a reference cycle, first and last the same.
    Cycle(Vec<String>),
    /// Backend `index` is split by `split`, which has matches.
    NestedMatches {
        /// The backend's index in `spec.backends`.
        index: usize,
        /// The nested TrafficSplit.
        split: String,
    },
}

impl std::fmt::Display for NestingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NestingError::Cycle(chain) => write!(
                f,
                "spec.backends: the splits form a cycle: {}",
                chain.join(" -> ")
            ),
            NestingError::NestedMatches { index, split } => write!(
                f,
                "spec.backends[{index}].service is split by TrafficSplit {split}, which has matches; \
                 a nested split with matches is not supported"
            ),
        }
    }
}

/// For every apex with a winning split: the nested splits its backends lead to, or why
/// they cannot be composed. Structural (weights above 0 and winners only), so status and
/// translation agree.
pub fn nesting(
    winners: &BTreeMap<Apex, &TrafficSplit>,
) -> BTreeMap<Apex, Result<Vec<Apex>, NestingError>> {
    fn walk(
        winners: &BTreeMap<Apex, &TrafficSplit>,
        apex: &Apex,
        chain: &mut Vec<String>,
        found: &mut Vec<Apex>,
    ) -> Result<(), NestingError> {
        let Some(ts) = winners.get(apex) else {
            return Ok(());
        };
        let weights = ts.spec.weighted();
        for (i, b) in ts.spec.backends.iter().enumerate() {
            if weights.get(i).is_none_or(|(_, w)| *w == 0) || b.service == apex.1 {
                continue;
            }
            let inner = (apex.0.clone(), b.service.clone());
            let Some(nested) = winners.get(&inner) else {
                continue;
            };
            if chain.contains(&b.service) {
                let mut c = chain.clone();
                c.push(b.service.clone());
                return Err(NestingError::Cycle(c));
            }
            if !nested.spec.matches.is_empty() {
                return Err(NestingError::NestedMatches {
                    index: i,
                    split: format!(
                        "{}/{}",
                        apex.0,
                        nested.metadata.name.as_deref().unwrap_or_default()
                    ),
                });
            }
            found.push(inner.clone());
            chain.push(b.service.clone());
            walk(winners, &inner, chain, found)?;
            chain.pop();
        }
        Ok(())
    }
    winners
        .keys()
        .map(|apex| {
            let mut chain = vec![apex.1.clone()];
            let mut found = Vec::new();
            let r = walk(winners, apex, &mut chain, &mut found).map(|()| found);
            (apex.clone(), r)
        })
        .collect()
}

/// One split's own routable backends and matches, or None if it has nothing routable.
fn direct(model: &Model, ts: &TrafficSplit, excluded: &Excluded) -> Option<EffectiveSplit> {
    let ns = ns_of(ts);
    let groups: Vec<(String, &crds::HTTPRouteGroup)> = ts
        .spec
        .matches
        .iter()
        .map(|m| {
            let key = ObjectKey::new(Kind::HTTPRouteGroup, ns, &m.name);
            let g = model.route_group(ns, &m.name)?;
            (!excluded.contains(&key)).then(|| (m.name.clone(), g))
        })
        .collect::<Option<_>>()?;
    let backends: Vec<(String, u32)> = ts
        .spec
        .weighted()
        .into_iter()
        .filter(|(service, w)| *w > 0 && model.service(ns, service).is_some())
        .map(|(service, w)| (service.to_string(), u32::try_from(w).unwrap_or(u32::MAX)))
        .collect();
    if backends.is_empty() || !ts.spec.unsupported_matches().is_empty() {
        return None;
    }
    Some(EffectiveSplit {
        source: ts.metadata.name.clone().unwrap_or_default(),
        nested: Vec::new(),
        backends,
        matches: groups
            .iter()
            .flat_map(|(_, g)| g.spec.matches.iter().cloned())
            .collect(),
        route_groups: groups.into_iter().map(|(n, _)| n).collect(),
    })
}

/// The splits in effect now, given those in effect before.
pub fn resolve_splits(model: &Model, previous: &SplitState, excluded: &Excluded) -> SplitState {
    let winners = split_winners(model, excluded);
    let nests = nesting(&winners);
    // Each apex's own split, or its last good one.
    let own: SplitState = winners
        .iter()
        .filter_map(|(apex, ts)| {
            let s = direct(model, ts, excluded).or_else(|| previous.get(apex).cloned())?;
            Some((apex.clone(), s))
        })
        .collect();
    let mut out = SplitState::new();
    for (apex, s) in &own {
        match nests.get(apex) {
            // No nesting, or a last good split that was composed already.
            Some(Ok(inner)) if inner.is_empty() || !s.nested.is_empty() => {
                out.insert(apex.clone(), s.clone());
            }
            Some(Ok(_)) => {
                let mut leaves: BTreeMap<String, f64> = BTreeMap::new();
                let mut nested = Vec::new();
                compose(
                    &own,
                    apex,
                    1.0,
                    &mut vec![apex.clone()],
                    &mut leaves,
                    &mut nested,
                );
                let backends: Vec<(String, u32)> = leaves
                    .into_iter()
                    .filter_map(|(svc, share)| {
                        let w = (share * COMPOSED_TOTAL as f64).round() as u32;
                        (w > 0).then_some((svc, w))
                    })
                    .collect();
                if backends.is_empty() {
                    if let Some(p) = previous.get(apex) {
                        out.insert(apex.clone(), p.clone());
                    }
                    continue;
                }
                out.insert(
                    apex.clone(),
                    EffectiveSplit {
                        nested,
                        backends,
                        ..s.clone()
                    },
                );
            }
            // Refused: the last good weights stay.
            Some(Err(_)) | None => {
                if let Some(p) = previous.get(apex) {
                    out.insert(apex.clone(), p.clone());
                }
            }
        }
    }
    out
}

/// Adds `apex`'s backends, weighted by `share`, to `leaves`, following nested splits.
/// [`nesting`] refused cycles in the specs; `path` also stops one made of last good
/// weights, and an already composed split's backends are leaves.
fn compose(
    own: &SplitState,
    apex: &Apex,
    share: f64,
    path: &mut Vec<Apex>,
    leaves: &mut BTreeMap<String, f64>,
    nested: &mut Vec<String>,
) {
    let Some(s) = own.get(apex) else {
        *leaves.entry(apex.1.clone()).or_default() += share;
        return;
    };
    let total: f64 = s.backends.iter().map(|(_, w)| f64::from(*w)).sum();
    for (b, w) in &s.backends {
        let part = share * f64::from(*w) / total;
        let inner = (apex.0.clone(), b.clone());
        match own.get(&inner) {
            Some(n) if *b != apex.1 && !path.contains(&inner) && s.nested.is_empty() => {
                if !nested.contains(&n.source) {
                    nested.push(n.source.clone());
                }
                path.push(inner.clone());
                compose(own, &inner, part, path, leaves, nested);
                path.pop();
            }
            _ => *leaves.entry(b.clone()).or_default() += part,
        }
    }
}
