//! Everything policy-related a build needs, resolved once per build: splits, retry
//! winners and the Gateway API routes attached to Services.

use std::collections::BTreeMap;

use crate::gamma::resolve::{RouteState, resolve as resolve_routes};
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
    /// Gateway API routes attached to Services.
    pub(crate) routes: RouteState,
}

impl PolicyContext {
    /// Resolves policy against `model`; `previous` are the splits of the last build,
    /// `excluded` the objects left out.
    pub fn new(model: &Model, previous: &SplitState, excluded: &Excluded) -> Self {
        PolicyContext {
            splits: resolve_splits(model, previous, excluded),
            retry_winners: retry_winners(model, excluded),
            routes: resolve_routes(model, excluded),
        }
    }
}
