//! Workload identity: where the CA lives ([`ca_store`]) and the certificates it issues
//! to proxies over SDS ([`certs`]).

pub mod ca_store;
pub mod certs;
