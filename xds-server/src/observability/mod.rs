//! What operators look at: every connected proxy's state ([`registry`]), served over CSDS
//! ([`csds`]) for `xdsctl`; Prometheus metrics and the admin endpoint ([`metrics`]); the
//! record of rejected config ([`nack`]).

pub mod csds;
pub mod metrics;
pub mod nack;
pub mod registry;
