//! Kubernetes: the watchers that feed the model ([`watch`]), the Lease that elects the
//! status writer ([`lease`]), the CRD status it writes ([`crd_status`]), the sidecar
//! injector ([`inject`]), and their start-up ([`start`]).

pub mod crd_status;
pub mod inject;
pub mod lease;
pub mod start;
pub mod watch;
