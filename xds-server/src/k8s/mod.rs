//! Kubernetes: the watchers that feed the model ([`watch`]), the Lease that elects the
//! status writer ([`lease`]), the CRD status it writes ([`status`]), and the sidecar
//! injector ([`inject`]).

pub mod inject;
pub mod lease;
pub mod start;
pub mod status;
pub mod watch;
