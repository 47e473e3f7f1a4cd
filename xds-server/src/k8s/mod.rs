//! Kubernetes: the watchers that feed the model ([`watch`], each one's loop in
//! [`follow`]), the Lease that elects the
//! status writer ([`lease`]), the CRD status it writes ([`crd_status`]), the sidecar
//! injector ([`inject`]), and their start-up ([`start`]).

pub mod crd_status;
pub(crate) mod follow;
pub mod inject;
pub mod lease;
pub mod start;
pub mod watch;
