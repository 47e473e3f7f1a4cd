//! Kubernetes: the watchers that feed the model ([`watch`]), the Lease that elects the
//! status writer ([`lease`]) and the CRD status it writes ([`status`]).

pub mod lease;
pub mod status;
pub mod watch;
