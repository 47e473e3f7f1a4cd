//! The credential directory the agent shares with its proxy, in the layout Kubernetes
//! uses for Secret volumes so a renewal is one atomic step:
//!
//! ```text
//! DIR/..creds-1795799030.123456789/{xds-client.crt, xds-client.key, xds-ca.crt}
//! DIR/..data -> ..creds-1795799030.123456789         (swapped by one rename)
//! DIR/xds-client.crt -> ..data/xds-client.crt        (and the key, the bundle)
//! DIR/xds-client-sds.json, DIR/xds-ca-sds.json        (file-based SDS for Envoy)
//! DIR/sds.sock                                        (the agent's SDS server)
//! DIR/.agent/                   (the agent's own, 0700: see [`crate::agent::sockets`])
//! DIR/.agent/xds.sock           (the agent's xDS bridge for gRPC apps, with --xds-proxy)
//! ```
//!
//! The key is made by the agent in the pod. Envoy reads its xDS client certificate and
//! trust bundle through the two SDS files,
//! with `watched_directory` on DIR: the `..data` swap is one move in DIR, after which
//! Envoy reads the new certificate and key together. Readers that want plain files
//! (xdsctl, a gRPC app) open the top-level names.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;
use xds_types::names::{XDS_CA_SECRET, XDS_CLIENT_SECRET};

/// The certificate chain (leaf first).
pub(crate) const CERT: &str = "xds-client.crt";
/// Its key.
pub const KEY: &str = "xds-client.key";
/// The trust bundle.
pub(crate) const BUNDLE: &str = "xds-ca.crt";
/// Envoy's SDS file for the certificate (secret [`XDS_CLIENT_SECRET`]).
pub(crate) const CERT_SDS: &str = "xds-client-sds.json";
/// Envoy's SDS file for the trust bundle (secret [`XDS_CA_SECRET`]).
pub(crate) const BUNDLE_SDS: &str = "xds-ca-sds.json";
/// The Unix socket the agent serves the workload certificate on (SDS), for the proxy.
pub(crate) const SDS_SOCKET: &str = "sds.sock";
/// The Unix socket the agent serves plain-text xDS on for a gRPC app that cannot
/// authenticate to the control plane itself ([`crate::agent::xds_proxy`]), in the
/// agent's private directory ([`crate::agent::sockets::PRIVATE_DIR`]).
pub(crate) const XDS_SOCKET: &str = "xds.sock";
const DATA: &str = "..data";
/// Each installed set is a directory `..creds-SECS.NANOS`.
const SET_PREFIX: &str = "..creds-";

/// Credentials to install.
pub struct Credentials<'a> {
    /// Certificate chain, PEM.
    pub chain_pem: &'a str,
    /// Private key, PEM.
    pub key_pem: &'a str,
    /// Trust bundle, PEM.
    pub bundle_pem: &'a str,
}

/// Installs `creds` in `dir` atomically (readers see the old set or the new one, never a
/// mix), creating the layout and the SDS files on first use, and removes older sets.
pub fn install(dir: &Path, creds: &Credentials<'_>) -> anyhow::Result<()> {
    crate::private_files::private_dir(dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "{SET_PREFIX}{}.{:09}",
        stamp.as_secs(),
        stamp.subsec_nanos()
    );
    let fresh = dir.join(&name);
    crate::private_files::private_dir(&fresh)?;
    let write = |f: &str, pem: &str, private: bool| -> anyhow::Result<()> {
        let path = fresh.join(f);
        if private {
            crate::private_files::write_private(&path, pem.as_bytes())
        } else {
            crate::private_files::write_public(&path, pem.as_bytes())
        }
        .with_context(|| format!("writing {}", path.display()))
    };
    write(CERT, creds.chain_pem, false)?;
    write(KEY, creds.key_pem, true)?;
    write(BUNDLE, creds.bundle_pem, false)?;
    // The swap: a new symlink renamed over ..data.
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&name, &tmp)
        .with_context(|| format!("linking {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(DATA))
        .with_context(|| format!("swapping {}", dir.join(DATA).display()))?;
    for f in [CERT, KEY, BUNDLE] {
        let link = dir.join(f);
        if std::fs::read_link(&link).is_err() {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new(DATA).join(f), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    write_sds(dir)?;
    // Older sets: nobody reads them once ..data moved on.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(SET_PREFIX) && n != name && e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

fn write_sds(dir: &Path) -> anyhow::Result<()> {
    let path = |f: &str| dir.join(f).display().to_string();
    let watched = json!({"path": dir.display().to_string()});
    let files = [
        (
            CERT_SDS,
            json!({"resources": [{
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": XDS_CLIENT_SECRET,
                "tls_certificate": {
                    "certificate_chain": {"filename": path(CERT)},
                    "private_key": {"filename": path(KEY)},
                    "watched_directory": watched,
                }
            }]}),
        ),
        (
            BUNDLE_SDS,
            json!({"resources": [{
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": XDS_CA_SECRET,
                "validation_context": {
                    "trusted_ca": {"filename": path(BUNDLE)},
                    "watched_directory": watched,
                }
            }]}),
        ),
    ];
    for (name, body) in files {
        let target = dir.join(name);
        let text = serde_json::to_string_pretty(&body)?;
        if std::fs::read_to_string(&target).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        let tmp = dir.join(format!("{name}.tmp"));
        crate::private_files::write_public(&tmp, text.as_bytes())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &target).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

/// The SDS config source Envoy uses for one of the files in `dir`.
pub(crate) fn sds_source(dir: &Path, file: &str) -> serde_json::Value {
    json!({
        "path_config_source": {
            "path": dir.join(file).display().to_string(),
            "watched_directory": {"path": dir.display().to_string()},
        },
        "resource_api_version": "V3",
    })
}

/// The installed credentials, if any: (chain, key, bundle) PEM.
pub fn read(dir: &Path) -> Option<(String, String, String)> {
    let r = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    Some((r(CERT)?, r(KEY)?, r(BUNDLE)?))
}

/// How often [`read_settled`] tries.
const READ_TRIES: u32 = 5;
/// Its pause between tries.
const READ_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// [`read`], tried a few times with a short pause when a file is missing: a renewal
/// swapping `..data` and removing the old set can make one read fall between the two.
pub(crate) async fn read_settled(dir: &Path) -> Option<(String, String, String)> {
    for _ in 1..READ_TRIES {
        if let Some(found) = read(dir) {
            return Some(found);
        }
        tokio::time::sleep(READ_PAUSE).await;
    }
    read(dir)
}

/// The top-level path of one credential file.
pub fn path(dir: &Path, file: &str) -> PathBuf {
    dir.join(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds<'a>(c: &'a str, k: &'a str, b: &'a str) -> Credentials<'a> {
        Credentials {
            chain_pem: c,
            key_pem: k,
            bundle_pem: b,
        }
    }

    #[test]
    fn a_renewal_swaps_every_file_at_once_and_cleans_up() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("creds");
        install(&dir, &creds("c1", "k1", "b1")).expect("first");
        assert_eq!(read(&dir), Some(("c1".into(), "k1".into(), "b1".into())));
        let sds = std::fs::read_to_string(dir.join(CERT_SDS)).expect("sds");
        assert!(
            sds.contains(XDS_CLIENT_SECRET) && sds.contains("watched_directory"),
            "{sds}"
        );
        install(&dir, &creds("c2", "k2", "b2")).expect("second");
        assert_eq!(read(&dir), Some(("c2".into(), "k2".into(), "b2".into())));
        // One set left, the key private.
        let sets: Vec<_> = std::fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(SET_PREFIX))
            .collect();
        assert_eq!(sets.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(KEY))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key mode {mode:o}");
        // The top-level names are links through ..data.
        assert_eq!(
            std::fs::read_link(dir.join(CERT)).expect("link"),
            Path::new("..data").join(CERT)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_between_the_swap_and_the_new_set_is_tried_again() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("creds");
        install(&dir, &creds("c1", "k1", "b1")).expect("install");
        // Mid-renewal: ..data names nothing for a moment.
        let away = dir.join("..data_away");
        std::fs::rename(dir.join(DATA), &away).expect("move");
        assert_eq!(read(&dir), None);
        let (back, data) = (away.clone(), dir.join(DATA));
        let swap = tokio::spawn(async move {
            tokio::time::sleep(READ_PAUSE * 2).await;
            std::fs::rename(&back, &data).expect("back");
        });
        assert_eq!(
            read_settled(&dir).await,
            Some(("c1".into(), "k1".into(), "b1".into()))
        );
        swap.await.expect("swap");
        // Never there: None after the tries.
        assert_eq!(read_settled(&d.path().join("none")).await, None);
    }
}
