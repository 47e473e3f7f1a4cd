//! The proxy's xDS side: the bootstrap it starts from (`bootstrap`), the ADS client as
//! pure machines for state of the world (`sotw`) and delta (`delta`) over a shared core
//! (`core`: apply, refuse, follow references; `refs`: what listeners and clusters
//! name), the accepted resources and their publication (`held`), the tonic shell that
//! connects with mTLS from files re-read at each connect (`client`, `tls`), and the
//! agent's SDS client (`agent_sds`).

mod agent_sds;
pub mod bootstrap;
mod client;
mod core;
mod delta;
mod held;
mod refs;
mod sotw;
mod tls;

pub use agent_sds::AgentSdsClient;
pub use client::AdsClient;
pub use core::ConvertFn;
#[cfg(test)]
pub(crate) use held::{Change, Held};
pub use held::{Dump, Publisher, RawEntry};

#[cfg(test)]
mod delta_tests;
#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod sotw_tests;
