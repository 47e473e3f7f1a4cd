//! What operators look at: every connected proxy's state ([`registry`]), served over CSDS
//! ([`csds`]) for `xdsctl`; the Prometheus metrics ([`metrics`], served by [`crate::admin`]); the
//! record of rejected config ([`nack`]); giving freed memory back after bursts
//! ([`memory`]), so RSS shows what is in use.

pub(crate) mod authz_check;
pub mod csds;
pub mod memory;
pub mod metrics;
pub mod nack;
pub mod registry;
