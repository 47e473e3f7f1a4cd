//! Status of every kind Rudder writes status for, computed from the model: the mesh
//! policy objects ([`policies`]: TrafficSplit, RetryPolicy, HTTPRouteGroup), the
//! TrafficTargets ([`access`]) and the Gateway API routes attached to Services
//! ([`routes`]: HTTPRoute, GRPCRoute, per parent).

pub(crate) mod access;
pub(crate) mod conditions;
pub(crate) mod policies;
pub(crate) mod routes;

pub use conditions::PolicyStatus;
pub use policies::policy_status;
