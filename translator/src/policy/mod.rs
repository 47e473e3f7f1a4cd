//! Traffic policy from the mesh CRDs, resolved against the model:
//! - TrafficSplits become the effective backend weights of an apex Service. One split per
//!   apex takes effect: the oldest (creation time, then name); the others are
//!   `Conflicted`. A split with nothing routable (all weights 0, no backend exists, an
//!   unsupported match) keeps the last good weights ([`SplitState`] is carried from one
//!   build to the next).
//! - Nested splits are composed: a backend that is itself the apex of a split stands for
//!   that split's backends, with the shares multiplied down to leaf Services (the Flagger
//!   layout, apex -> primary/canary where primary is split again, routes as written). A
//!   backend naming its own apex is that Service's own endpoints. A cycle (A -> B -> A)
//!   and a nested split with matches (its matches would have to apply inside another
//!   split's share) are refused: the apex keeps its last good weights, and the status
//!   names the chain or the nested split ([`nesting`]).
//! - RetryPolicies: one per (Service, port), the oldest winning; a port-specific policy
//!   beats a whole-Service one on its port.
//! - Gateway API routes ([`crate::gamma`]) take precedence over TrafficSplits on the
//!   ports they route ([`port::port_routing`] asks them first).
//!
//! - TrafficTargets ([`authz`]): what each inbound port of a pod allows.
//!
//! Objects in the `excluded` set (ones a proxy rejected config from, see the server's
//! containment) count as absent: an excluded split contributes nothing (its apex routes
//! to itself), and an excluded RetryPolicy leaves its slot to the next oldest. A split
//! whose HTTPRouteGroup is missing keeps its last good weights.

pub mod authz;
pub(crate) mod context;
pub(crate) mod oldest;
pub(crate) mod port;
pub(crate) mod retry;
pub(crate) mod split;

pub use crate::model::Excluded;
pub use context::PolicyContext;
pub use retry::{retry_for, retry_winners};
pub use split::{
    COMPOSED_TOTAL, EffectiveSplit, NestingError, SplitState, nesting, resolve_splits,
    split_winners,
};

#[cfg(test)]
mod authz_tests;
#[cfg(test)]
mod tests;
