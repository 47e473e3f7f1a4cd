//! Rudder's certificate authority: a root (self-made or supplied) that issues SPIFFE
//! workload certificates, `spiffe://TRUST_DOMAIN/ns/NS/sa/SA` as the URI SAN, ECDSA
//! P-256, short-lived and renewed at half-life. No I/O and no async: callers persist the
//! PEM it hands out and decide when to call it.
//!
//! The CA's private key is never formatted: [`Authority`] and [`WorkloadCert`] print
//! without key material, and errors carry no key bytes.

//!
//! Modules, bottom up: [`spiffe`] (identities), `error`, `verify` and `deny` (checks
//! on PEM input), `certs` (what is handed out), [`csr`] (requests), `authority` (the
//! root that signs). This file only names them.

mod authority;
mod certs;
pub mod csr;
mod deny;
mod error;
pub mod spiffe;
mod verify;

pub use authority::{Authority, CaFiles};
pub use certs::{
    BACKDATE, DEFAULT_LIFETIME, ROOT_LIFETIME, SignedCert, WorkloadCert, key_belongs_to,
};
pub use error::CaError;
pub use spiffe::{SpiffeError, SpiffeId};

#[cfg(test)]
mod csr_tests;
