//! Kubernetes: the watchers that feed the model ([`watch`]), the Lease that elects the
//! status writer ([`lease`]), the CRD status it writes ([`status`]), the sidecar
//! injector ([`inject`]), and their start-up ([`start`]).

pub mod inject;
pub mod lease;
pub mod start;
pub mod status;
pub mod watch;
