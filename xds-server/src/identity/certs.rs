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

use translator::encoded::Encoded;

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
    /// Fails on an issued-certificate file that is unreadable or holds absurd values.
    pub fn new(ca: Authority, lifetime: Duration, dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let root = Arc::new(Encoded::new(&tls::root_secret(&ca.trust_bundle_pem())));
        let mgr = CertManager {
            ca: RwLock::new(ca),
            lifetime,
            dir,
            issued: Mutex::new(HashMap::new()),
            root: Mutex::new(root),
        };
        mgr.load_issued()?;
        Ok(mgr)
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

    /// The certificates a client certificate must chain to: the issuing CA, not the
    /// root above a supplied intermediate (PEM, one per entry).
    pub fn issuer_anchors(&self) -> Vec<String> {
        self.ca
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .issuer_anchors_pem()
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
        let result = crate::identity::ca_store::private_dir(dir)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
            .and_then(|()| write_private(&path, body.to_string().as_bytes()));
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "could not keep the issued certificate");
        }
    }

    fn load_issued(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        let Some(dir) = &self.dir else { return Ok(()) };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let now = SystemTime::now();
        let mut issued = self.lock();
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let cert = restore(&path).with_context(|| {
                format!(
                    "{}: not a certificate this control plane issued; remove it to have it issued again",
                    path.display()
                )
            })?;
            if cert.renew_at() <= now {
                continue;
            }
            let trusted = self
                .ca
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .verify_issued(&cert, now);
            if let Err(e) = trusted {
                tracing::info!(file = %path.display(), reason = %e, "a kept certificate is not from the current CA; it will be issued again");
                continue;
            }
            let id = cert.id.clone();
            let secret = Arc::new(Encoded::new(&tls::cert_secret(
                &cert.cert_chain_pem,
                cert.private_key_pem(),
            )));
            issued.insert(id, Issued { cert, secret });
        }
        Ok(())
    }
}

/// Times an issued certificate may carry: from 2000 to 2200 (seconds since the epoch).
const SANE_TIMES: std::ops::RangeInclusive<u64> = 946_684_800..=7_258_118_400;

/// Reads one kept certificate, checking every value before use.
fn restore(path: &Path) -> anyhow::Result<WorkloadCert> {
    use anyhow::{Context, bail};
    let text = crate::identity::ca_store::read_private(path)?;
    let v: serde_json::Value = serde_json::from_str(&text).context("not JSON")?;
    let field = |k: &str| v.get(k).with_context(|| format!("{k} is missing"));
    let id: SpiffeId = field("id")?
        .as_str()
        .context("id is not text")?
        .parse()
        .context("id")?;
    let time = |k: &str| -> anyhow::Result<SystemTime> {
        let secs = field(k)?
            .as_u64()
            .with_context(|| format!("{k} is not a number of seconds"))?;
        if !SANE_TIMES.contains(&secs) {
            bail!("{k} {secs} is not a time between 2000 and 2200");
        }
        UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .with_context(|| format!("{k} {secs} is out of range"))
    };
    let (at, until) = (time("issuedAt")?, time("notAfter")?);
    if until <= at {
        bail!("notAfter is not after issuedAt");
    }
    let chain = field("chain")?.as_str().context("chain is not text")?;
    let key = field("key")?.as_str().context("key is not text")?;
    Ok(WorkloadCert::restore(
        id,
        chain.into(),
        key.into(),
        at,
        until,
    ))
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
