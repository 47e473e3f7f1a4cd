//! The control plane's side of its CA: the trust bundle every proxy gets over SDS (the
//! only secret sent over ADS), certificates signed for workload requests (the
//! certificate endpoint; the key stays in the pod), and the control plane's own serving
//! certificate. No workload private key is made, kept or sent here. What was issued is
//! remembered only as (identity, expiry), for metrics, and forgotten once expired.

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ca::csr::CheckedRequest;
use ca::{Authority, CaError, SignedCert, SpiffeId, WorkloadCert};
use translator::encoded::Encoded;
use translator::tls;

/// The CA as the control plane uses it.
pub struct CertManager {
    ca: RwLock<Authority>,
    issued: Mutex<HashMap<SpiffeId, SystemTime>>,
    root: Arc<Encoded>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager").finish_non_exhaustive()
    }
}

impl CertManager {
    /// A manager issuing from `ca`.
    pub fn new(ca: Authority) -> Self {
        let root = Arc::new(Encoded::new(&tls::root_secret(&ca.trust_bundle_pem())));
        CertManager {
            ca: RwLock::new(ca),
            issued: Mutex::new(HashMap::new()),
            root,
        }
    }

    fn ca(&self) -> parking_lot::RwLockReadGuard<'_, Authority> {
        self.ca.read()
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> String {
        self.ca().trust_domain().to_string()
    }

    /// The certificates a client certificate must chain to: the issuing CA, not the
    /// root above a supplied intermediate (PEM, one per entry).
    pub fn issuer_anchors(&self) -> Vec<String> {
        self.ca().issuer_anchors_pem()
    }

    /// The trust bundle (PEM).
    pub fn bundle_pem(&self) -> String {
        self.ca().trust_bundle_pem()
    }

    /// The trust bundle as the SDS secret every proxy is sent (`ROOTCA`), encoded once.
    pub(crate) fn root_secret(&self) -> Arc<Encoded> {
        self.root.clone()
    }

    /// The control plane's own serving certificate (server authentication only); its
    /// key is made here, where it is used.
    pub fn issue_server(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        lifetime: Duration,
    ) -> Result<WorkloadCert, CaError> {
        self.ca()
            .issue_server(id, dns_names, lifetime, SystemTime::now())
    }

    /// Signs a checked request for `id` (the identity the caller proved).
    pub(crate) fn sign_request(
        &self,
        request: &CheckedRequest,
        id: &SpiffeId,
        lifetime: Duration,
    ) -> Result<SignedCert, CaError> {
        let now = SystemTime::now();
        let signed = self.ca().sign_request(request, id, lifetime, now)?;
        let mut issued = self.issued.lock();
        issued.retain(|_, until| *until > now);
        issued.insert(id.clone(), signed.not_after);
        Ok(signed)
    }

    /// Expiry of the latest unexpired certificate signed for each identity.
    pub(crate) fn expiries(&self) -> Vec<(SpiffeId, SystemTime)> {
        let now = SystemTime::now();
        self.issued
            .lock()
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(id, t)| (id.clone(), *t))
            .collect()
    }
}

/// Removes the workload certificates and private keys that earlier versions kept under
/// the CA directory (`issued/`): the control plane no longer holds workload keys.
pub(crate) fn forget_kept_keys(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => tracing::warn!(
            dir = %dir.display(),
            "removed workload keys an earlier version kept; workloads now make their own keys"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!(
            dir = %dir.display(),
            error = %e,
            "could not remove workload keys an earlier version kept; remove them by hand"
        ),
    }
}
