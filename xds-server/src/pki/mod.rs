//! The control plane's PKI: where the CA lives ([`ca_store`]), the certificates it
//! issues ([`certs`]), the certificate endpoint the proxy agent renews from
//! ([`ca_service`], its rules in [`issuer`], the local token checks in `token`), and
//! their start-up ([`start`]); cluster-mode root rotation in steps ([`secret_rotation`]).

pub mod ca_service;
pub mod ca_store;
pub mod certs;
pub mod issuer;
pub mod secret_rotation;
pub mod start;
pub(crate) mod token;
