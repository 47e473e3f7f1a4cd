//! Everything policy-related a build needs, resolved once per build: splits, retry
//! winners and the Gateway API routes attached to Services.

use std::collections::BTreeMap;

use crate::gamma::resolve::{ConsumerState, RouteState, resolve as resolve_routes};
use crate::model::{Excluded, Model};
use crate::policy::retry::retry_winners;
use crate::policy::split::{SplitState, resolve_splits};

/// Everything policy-related a build needs, computed once per build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyContext {
    /// Splits in effect.
    pub splits: SplitState,
    /// Winning retry policies.
    pub retry_winners: BTreeMap<(String, String, Option<u32>), String>,
    /// Gateway API producer routes attached to Services.
    pub(crate) routes: RouteState,
    /// Gateway API consumer routes attached to Services, per callers' namespace.
    pub(crate) consumers: ConsumerState,
}

impl PolicyContext {
    /// Resolves policy against `model`; `previous` are the splits of the last build,
    /// `excluded` the objects left out.
    pub fn new(model: &Model, previous: &SplitState, excluded: &Excluded) -> Self {
        let (routes, consumers) = resolve_routes(model, excluded);
        PolicyContext {
            splits: resolve_splits(model, previous, excluded),
            retry_winners: retry_winners(model, excluded),
            routes,
            consumers,
        }
    }

    /// The namespaces whose callers have consumer routes of Service `svc`.
    pub(crate) fn consumer_namespaces(&self, svc: &(String, String)) -> Vec<String> {
        self.consumers
            .get(svc)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}
