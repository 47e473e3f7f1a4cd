//! Workload identity: where the CA lives ([`ca_store`]), the certificates it issues to
//! proxies over SDS ([`certs`]), and the certificate endpoint the proxy agent renews
//! from ([`ca_service`], its rules in [`issuer`], the local token checks in `token`).

pub mod ca_service;
pub mod ca_store;
pub mod certs;
pub mod issuer;
pub(crate) mod token;
