//! The control plane's side of its CA: the trust bundle every proxy gets over SDS (the
//! only secret sent over ADS), certificates signed for workload requests (the
//! certificate endpoint; the key stays in the pod), and the control plane's own serving
//! certificate. No workload private key is made, kept or sent here. What was issued is
//! remembered only as (identity, expiry), for metrics, and forgotten once expired.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
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

    fn ca(&self) -> std::sync::RwLockReadGuard<'_, Authority> {
        self.ca.read().unwrap_or_else(|e| e.into_inner())
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
    pub fn root_secret(&self) -> Arc<Encoded> {
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
    pub fn sign_request(
        &self,
        request: &CheckedRequest,
        id: &SpiffeId,
        lifetime: Duration,
    ) -> Result<SignedCert, CaError> {
        let now = SystemTime::now();
        let signed = self.ca().sign_request(request, id, lifetime, now)?;
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.retain(|_, until| *until > now);
        issued.insert(id.clone(), signed.not_after);
        Ok(signed)
    }

    /// Expiry of the latest unexpired certificate signed for each identity.
    pub fn expiries(&self) -> Vec<(SpiffeId, SystemTime)> {
        let now = SystemTime::now();
        self.issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(id, t)| (id.clone(), *t))
            .collect()
    }
}

/// Removes the workload certificates and private keys that earlier versions kept under
/// the CA directory (`issued/`): the control plane no longer holds workload keys.
pub fn forget_kept_keys(dir: &Path) {
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

/// Writes a file readable only by its owner, atomically: a new temporary file (created
/// exclusively, never through a symlink, mode 0600) is written, synced and renamed over
/// `path`, and the directory is synced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// Like [`write_private`], for files that hold no secret (mode 0644).
pub fn write_public(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes, 0o644)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_writes_replace_a_symlink_instead_of_following_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "untouched").expect("write");
        let key = dir.path().join("ca.key");
        std::os::unix::fs::symlink(&target, &key).expect("link");
        write_private(&key, b"secret").expect("write");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "untouched");
        let meta = std::fs::symlink_metadata(&key).expect("meta");
        assert!(
            meta.file_type().is_file(),
            "the link was replaced by a file"
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&key).expect("read"), "secret");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
