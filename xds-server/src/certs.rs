//! Workload certificates for SDS: one per identity (namespace + service account),
//! issued on first use, renewed at half-life, shared (encoded once) by every proxy of
//! that identity. In manifest mode issued certificates are kept under the CA directory,
//! so a restarted control plane serves the same ones and reconnecting proxies are not
//! re-sent their secrets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ca::{Authority, CaError, SpiffeId, WorkloadCert};
use translator::tls;

use crate::snapshot::Encoded;

struct Issued {
    cert: WorkloadCert,
    secret: Arc<Encoded>,
}

/// Issues and renews workload certificates.
pub struct CertManager {
    ca: RwLock<Authority>,
    lifetime: Duration,
    dir: Option<PathBuf>,
    issued: Mutex<HashMap<SpiffeId, Issued>>,
    root: Mutex<Arc<Encoded>>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CertManager {
    /// A manager issuing from `ca` with `lifetime`; `dir` keeps issued certificates.
    pub fn new(ca: Authority, lifetime: Duration, dir: Option<PathBuf>) -> Self {
        let root = Arc::new(Encoded::new(&tls::root_secret(&ca.trust_bundle_pem())));
        let mgr = CertManager {
            ca: RwLock::new(ca),
            lifetime,
            dir,
            issued: Mutex::new(HashMap::new()),
            root: Mutex::new(root),
        };
        mgr.load_issued();
        mgr
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SpiffeId, Issued>> {
        self.issued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> String {
        self.ca
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .trust_domain()
            .to_string()
    }

    /// The trust bundle (PEM).
    pub fn bundle_pem(&self) -> String {
        self.ca
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .trust_bundle_pem()
    }

    /// Issues a certificate outside the SDS flow (the control plane's own, bootstrap
    /// client certificates).
    pub fn issue(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        lifetime: Duration,
    ) -> Result<WorkloadCert, CaError> {
        self.ca
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .issue_with(id, dns_names, lifetime, SystemTime::now())
    }

    /// The two secrets for `id` (its certificate, the trust bundle), issuing or renewing
    /// the certificate if it is missing or past half-life.
    pub fn secrets_for(
        &self,
        id: &SpiffeId,
        now: SystemTime,
    ) -> Result<[Arc<Encoded>; 2], CaError> {
        let root = self.root.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut issued = self.lock();
        if let Some(i) = issued.get(id)
            && i.cert.renew_at() > now
        {
            return Ok([i.secret.clone(), root]);
        }
        let cert =
            self.ca
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .issue(id, self.lifetime, now)?;
        tracing::info!(identity = %id, not_after = secs(cert.not_after), "issued workload certificate");
        self.save(&cert);
        let secret = Arc::new(Encoded::new(&tls::cert_secret(
            &cert.cert_chain_pem,
            cert.private_key_pem(),
        )));
        issued.insert(
            id.clone(),
            Issued {
                cert,
                secret: secret.clone(),
            },
        );
        Ok([secret, root])
    }

    /// The earliest renewal due among issued certificates.
    pub fn next_renewal(&self) -> Option<SystemTime> {
        self.lock().values().map(|i| i.cert.renew_at()).min()
    }

    /// Expiry of every issued certificate, for metrics and logs.
    pub fn expiries(&self) -> Vec<(SpiffeId, SystemTime)> {
        self.lock()
            .iter()
            .map(|(id, i)| (id.clone(), i.cert.not_after))
            .collect()
    }

    fn path(dir: &Path, id: &SpiffeId) -> PathBuf {
        dir.join(format!("{}.{}.json", id.namespace, id.service_account))
    }

    fn save(&self, cert: &WorkloadCert) {
        let Some(dir) = &self.dir else { return };
        let body = serde_json::json!({
            "id": cert.id.to_string(),
            "issuedAt": secs(cert.issued_at()),
            "notAfter": secs(cert.not_after),
            "chain": cert.cert_chain_pem,
            "key": cert.private_key_pem(),
        });
        let path = Self::path(dir, &cert.id);
        let result = std::fs::create_dir_all(dir)
            .and_then(|()| write_private(&path, body.to_string().as_bytes()));
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "could not keep the issued certificate");
        }
    }

    fn load_issued(&self) {
        let Some(dir) = &self.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut issued = self.lock();
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let Some(v) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            else {
                continue;
            };
            let (Some(id), Some(at), Some(until), Some(chain), Some(key)) = (
                v["id"].as_str().and_then(|s| s.parse::<SpiffeId>().ok()),
                v["issuedAt"].as_u64(),
                v["notAfter"].as_u64(),
                v["chain"].as_str(),
                v["key"].as_str(),
            ) else {
                continue;
            };
            let cert = WorkloadCert::restore(
                id.clone(),
                chain.into(),
                key.into(),
                UNIX_EPOCH + Duration::from_secs(at),
                UNIX_EPOCH + Duration::from_secs(until),
            );
            if cert.renew_at() <= now {
                continue;
            }
            let secret = Arc::new(Encoded::new(&tls::cert_secret(
                &cert.cert_chain_pem,
                cert.private_key_pem(),
            )));
            issued.insert(id, Issued { cert, secret });
        }
    }
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    std::fs::rename(tmp, path)
}
