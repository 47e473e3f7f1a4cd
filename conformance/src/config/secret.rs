//! Secrets: a workload certificate with its key, or a trust bundle.

use std::sync::Arc;

/// An SDS secret, parsed and checked (the key matches the certificate; the bundle
/// holds at least one certificate).
#[derive(Clone, Debug)]
pub enum Secret {
    /// A certificate chain and its private key (the workload's `default`).
    Certificate(Arc<CertifiedKey>),
    /// Trust anchors (`ROOTCA`).
    Bundle(Arc<TrustBundle>),
}

/// A certificate chain (leaf first) and its private key, DER encoded.
#[derive(Clone)]
pub struct CertifiedKey {
    /// Leaf first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 (or SEC1 / PKCS#1) DER.
    pub key: Vec<u8>,
    /// The leaf's URI SANs (the SPIFFE ID).
    pub uris: Vec<String>,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("chain_len", &self.chain.len())
            .field("uris", &self.uris)
            .finish_non_exhaustive()
    }
}

/// Trust anchors, DER encoded.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    /// Each anchor's DER.
    pub anchors: Vec<Vec<u8>>,
}
