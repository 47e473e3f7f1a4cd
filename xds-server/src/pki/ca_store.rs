//! Where the CA lives between restarts: a directory in manifest mode, a Kubernetes
//! Secret in cluster mode, or files the operator supplies (a root or an intermediate).
//! Every replica and every restart reuses it.

use std::path::Path;

use anyhow::Context;
use ca::{Authority, CaFiles};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::private_files::{private_dir, read_private, write_private, write_public};

pub(crate) use crate::pki::secret_rotation::CA_SECRET;

/// Loads the CA from `dir`; an error if it holds none (see [`open_or_create`]).
pub(crate) fn from_dir(dir: &Path, trust_domain: &str) -> anyhow::Result<Authority> {
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    match (cert.exists(), key.exists()) {
        (true, true) => {}
        (false, false) => anyhow::bail!(
            "{} holds no CA (ca.crt and ca.key): start the control plane once, or run `xds-server ca init --ca-dir {}`",
            dir.display(),
            dir.display()
        ),
        (true, false) => anyhow::bail!(
            "{} has ca.crt but no ca.key: refusing to start with a CA that cannot sign (and never making a new root over an existing one); restore ca.key or remove ca.crt",
            dir.display()
        ),
        (false, true) => {
            anyhow::bail!("{} has ca.key but no ca.crt; restore ca.crt", dir.display())
        }
    }
    check_dir(dir)?;
    let files = CaFiles {
        cert_pem: std::fs::read_to_string(&cert)
            .with_context(|| format!("reading {}", cert.display()))?,
        key_pem: read_private(&key)?,
        chain_pem: read_optional(&dir.join("ca-chain.crt"))?,
    };
    let previous = read_optional(&dir.join(PREVIOUS_ROOTS))?;
    for why in Authority::denied_roots(&previous) {
        tracing::error!(
            file = %dir.join(PREVIOUS_ROOTS).display(),
            why,
            "a kept root uses a published key and is no longer trusted; certificates it signed stop working until renewed: run `xds-server ca end-overlap`"
        );
    }
    tracing::info!(dir = %dir.display(), rotation_overlap = !previous.is_empty(), "using the existing CA");
    let hint = if dir.join("ca.crt.new").exists() {
        " (a rotation was interrupted: ca.crt.new holds the certificate of the new key; move it to ca.crt)"
    } else {
        ""
    };
    Ok(Authority::from_files(trust_domain, &files)
        .with_context(|| format!("loading the CA in {}{hint}", dir.display()))?
        .with_previous_roots(&previous))
}

/// Refuses a CA directory that others may write to, or that another user owns.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if meta.mode() & 0o022 != 0 {
        anyhow::bail!(
            "{} is writable by group or others (mode {:03o}); a CA directory must be 0700: chmod 700 {}",
            dir.display(),
            meta.mode() & 0o777,
            dir.display()
        );
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        anyhow::bail!(
            "{} is owned by uid {}, not this process (uid {me})",
            dir.display(),
            meta.uid()
        );
    }
    Ok(())
}

/// Loads the CA from `dir`, creating a new root on first start (an empty or missing
/// directory). A directory with half a CA is an error.
pub(crate) fn open_or_create(dir: &Path, trust_domain: &str) -> anyhow::Result<Authority> {
    if dir.join("ca.crt").exists() || dir.join("ca.key").exists() {
        return from_dir(dir, trust_domain);
    }
    init(dir, trust_domain)
}

/// Creates a new root CA in `dir` (0700), its key 0600; refused if a CA is there.
pub fn init(dir: &Path, trust_domain: &str) -> anyhow::Result<Authority> {
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert.exists() || key.exists() {
        anyhow::bail!("{} already holds a CA", dir.display());
    }
    let ca = Authority::generate_root(trust_domain, std::time::SystemTime::now())
        .context("creating the root CA")?;
    private_dir(dir)?;
    write_private(&key, ca.files().key_pem.as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    write_public(&cert, ca.files().cert_pem.as_bytes())
        .with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!(dir = %dir.display(), "created a new root CA");
    Ok(ca)
}

/// A file's text, or empty if it does not exist.
fn read_optional(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Roots kept in the trust bundle after a rotation, until the overlap ends.
pub(crate) const PREVIOUS_ROOTS: &str = "ca-previous.crt";
const PREVIOUS_SIGNER_CERT: &str = "ca-previous-signer.crt";
const PREVIOUS_SIGNER_KEY: &str = "ca-previous-signer.key";

/// What [`rotate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotated {
    /// A new root signs; the old one stays trusted until [`end_overlap`].
    WithOverlap,
    /// The old root's key was published: it was replaced outright and is not trusted
    /// any more (every sidecar needs new credentials).
    Replaced(&'static str),
}

/// Starts a root rotation in `dir`: a new root signs from now on, and the old one stays
/// trusted (in `ca-previous.crt`) so certificates it issued keep working until they are
/// renewed. Restart the control plane(s) to pick it up; run [`end_overlap`] once every
/// workload certificate has been renewed (after one certificate lifetime). A root whose
/// key was published is replaced without an overlap: keeping it trusted would keep
/// trusting anyone's certificates.
pub(crate) fn rotate(dir: &Path, trust_domain: &str) -> anyhow::Result<Rotated> {
    rotate_unless(dir, trust_domain, |cert_pem| {
        Authority::denied_roots(cert_pem).first().copied()
    })
}

/// [`rotate`], with `published` saying why a CA certificate's key must not be trusted.
fn rotate_unless(
    dir: &Path,
    trust_domain: &str,
    published: impl Fn(&str) -> Option<&'static str>,
) -> anyhow::Result<Rotated> {
    if dir.join("ca-chain.crt").exists() {
        anyhow::bail!(
            "{} holds an intermediate CA (ca-chain.crt): rotate it with the PKI that issued it",
            dir.display()
        );
    }
    let current = std::fs::read_to_string(dir.join("ca.crt")).unwrap_or_default();
    let new = Authority::generate_root(trust_domain, std::time::SystemTime::now())
        .context("creating the new root")?;
    let rotated = match published(&current) {
        Some(why) => {
            // Nothing of the old CA is kept: not as a trusted root, not as a signer.
            end_overlap(dir)?;
            Rotated::Replaced(why)
        }
        None => {
            let old = from_dir(dir, trust_domain)?;
            let mut previous =
                std::fs::read_to_string(dir.join(PREVIOUS_ROOTS)).unwrap_or_default();
            previous.push_str(&old.files().cert_pem);
            write_public(&dir.join(PREVIOUS_ROOTS), previous.as_bytes())?;
            // The previous signer keeps signing the control plane's own serving
            // certificate during the overlap, so sidecars bootstrapped before the
            // rotation still trust it.
            write_public(
                &dir.join(PREVIOUS_SIGNER_CERT),
                old.files().cert_pem.as_bytes(),
            )?;
            write_private(
                &dir.join(PREVIOUS_SIGNER_KEY),
                old.files().key_pem.as_bytes(),
            )?;
            Rotated::WithOverlap
        }
    };
    // Both halves are written in full first, then renamed; a crash between the renames
    // leaves a mismatched pair that the next start refuses, naming the `.new` file.
    let (key_new, crt_new) = (dir.join("ca.key.new"), dir.join("ca.crt.new"));
    write_private(&key_new, new.files().key_pem.as_bytes())?;
    write_public(&crt_new, new.files().cert_pem.as_bytes())?;
    std::fs::rename(&key_new, dir.join("ca.key"))?;
    std::fs::rename(&crt_new, dir.join("ca.crt"))?;
    Ok(rotated)
}

/// The CA that signs the control plane's serving certificate: the previous root during
/// a rotation overlap, else the current one.
pub(crate) fn serving_authority(
    dir: &Path,
    trust_domain: &str,
    current: &Authority,
) -> anyhow::Result<Option<Authority>> {
    let (cert, key) = (
        dir.join(PREVIOUS_SIGNER_CERT),
        dir.join(PREVIOUS_SIGNER_KEY),
    );
    if !(cert.exists() && key.exists()) {
        return Ok(None);
    }
    let files = CaFiles {
        cert_pem: std::fs::read_to_string(&cert)?,
        key_pem: read_private(&key)?,
        chain_pem: String::new(),
    };
    let prev = Authority::from_files(trust_domain, &files).context("loading the previous CA")?;
    Ok(Some(prev.with_previous_roots(&current.trust_bundle_pem())))
}

/// Ends a rotation overlap: roots from before the last rotation are no longer trusted.
pub(crate) fn end_overlap(dir: &Path) -> anyhow::Result<()> {
    for f in [PREVIOUS_ROOTS, PREVIOUS_SIGNER_CERT, PREVIOUS_SIGNER_KEY] {
        match std::fs::remove_file(dir.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Loads an operator-supplied CA (root, or intermediate with the chain above it).
pub(crate) fn from_files(
    cert: &Path,
    key: &Path,
    chain: Option<&Path>,
    trust_domain: &str,
) -> anyhow::Result<Authority> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let files = CaFiles {
        cert_pem: read(cert)?,
        key_pem: read_private(key)?,
        chain_pem: chain.map(read).transpose()?.unwrap_or_default(),
    };
    let ca = Authority::from_files(trust_domain, &files).context("loading the supplied CA")?;
    warn_if_shared_root(&files);
    Ok(ca)
}

/// A supplied intermediate chains to a root that may sign other meshes too. The xDS
/// port and the certificate endpoint accept only this intermediate's leaves, but
/// sidecars validate mesh mTLS against the whole root (Envoy has no partial-chain
/// anchor), so a workload certificate from another mesh under the same root, with a
/// SPIFFE ID in this trust domain, is accepted by them. Said once at start.
fn warn_if_shared_root(files: &CaFiles) {
    if files.chain_pem.trim().is_empty() {
        return;
    }
    tracing::warn!(
        "the supplied CA is an intermediate: sidecars trust every certificate under its root, so another mesh under the same root using the same trust domain could pose as this mesh's workloads; use a root (or an intermediate path) dedicated to this mesh, or a distinct --trust-domain per mesh"
    );
}

fn from_secret(secret: &Secret, trust_domain: &str) -> anyhow::Result<Authority> {
    let data = secret
        .data
        .as_ref()
        .context("Secret rudder-ca has no data")?;
    let get = |k: &str| -> anyhow::Result<String> {
        let v = data
            .get(k)
            .with_context(|| format!("Secret rudder-ca has no {k}"))?;
        String::from_utf8(v.0.clone()).with_context(|| format!("Secret rudder-ca: {k} is not text"))
    };
    let files = CaFiles {
        cert_pem: get("ca.crt")?,
        key_pem: get("ca.key")?,
        chain_pem: get("ca-chain.crt").unwrap_or_default(),
    };
    let text = crate::pki::secret_rotation::secret_text(secret);
    let extra = crate::pki::secret_rotation::extra_roots(&text);
    let ca = Authority::from_files(trust_domain, &files)
        .context("loading the CA from Secret rudder-ca")?
        .with_previous_roots(&extra);
    warn_if_shared_root(&files);
    if !extra.is_empty() {
        tracing::info!(
            prepared = text.contains_key(crate::pki::secret_rotation::NEXT_CERT),
            overlap = text.contains_key(crate::pki::secret_rotation::PREVIOUS_ROOTS),
            "a root rotation is under way: the trust bundle holds more than the signing root"
        );
    }
    Ok(ca)
}

/// Loads the CA from Secret `rudder-ca` in `namespace`, creating it on first start. When
/// two replicas race, the loser reads the winner's.
pub async fn from_kubernetes(
    client: Client,
    namespace: &str,
    trust_domain: &str,
) -> anyhow::Result<Authority> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    if let Some(s) = api
        .get_opt(CA_SECRET)
        .await
        .context("reading Secret rudder-ca")?
    {
        return from_secret(&s, trust_domain);
    }
    let ca = Authority::generate_root(trust_domain, std::time::SystemTime::now())
        .context("creating the root CA")?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(CA_SECRET.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        data: Some(
            [
                (
                    "ca.crt".to_string(),
                    ByteString(ca.files().cert_pem.clone().into_bytes()),
                ),
                (
                    "ca.key".to_string(),
                    ByteString(ca.files().key_pem.clone().into_bytes()),
                ),
            ]
            .into_iter()
            .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(ca),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let s = api
                .get(CA_SECRET)
                .await
                .context("reading Secret rudder-ca")?;
            from_secret(&s, trust_domain)
        }
        Err(e) => Err(e).context("creating Secret rudder-ca"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_old_root_trusted_until_the_overlap_ends() {
        let dir = tempfile::tempdir().expect("tmp");
        let td = "cluster.local";
        assert!(
            from_dir(dir.path(), td).is_err(),
            "an empty directory holds no CA"
        );
        let before = open_or_create(dir.path(), td).expect("create");
        let again = from_dir(dir.path(), td).expect("reuse");
        assert_eq!(
            before.trust_bundle_pem(),
            again.trust_bundle_pem(),
            "persisted root is reused"
        );
        assert_eq!(
            rotate(dir.path(), td).expect("rotate"),
            Rotated::WithOverlap
        );
        let during = from_dir(dir.path(), td).expect("load");
        let norm = |s: &str| s.replace("\r\n", "\n");
        let bundle = norm(&during.trust_bundle_pem());
        assert_ne!(
            during.files().cert_pem,
            before.files().cert_pem,
            "a new root signs"
        );
        assert!(
            bundle.contains(&norm(&before.files().cert_pem)),
            "the old root is still trusted"
        );
        assert!(bundle.starts_with(&norm(&during.files().cert_pem)));
        end_overlap(dir.path()).expect("end");
        let after = from_dir(dir.path(), td).expect("load");
        assert!(!norm(&after.trust_bundle_pem()).contains(&norm(&before.files().cert_pem)));
        let key = std::fs::metadata(dir.path().join("ca.key")).expect("key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            key.permissions().mode() & 0o777,
            0o600,
            "the CA key is private"
        );
    }

    #[test]
    fn a_root_with_a_published_key_is_replaced_without_an_overlap() {
        let dir = tempfile::tempdir().expect("tmp");
        let td = "cluster.local";
        let before = open_or_create(dir.path(), td).expect("create");
        // Its key counts as published: it must not stay trusted or sign anything.
        let published = before.files().cert_pem.clone();
        let why = rotate_unless(dir.path(), td, |pem| {
            (pem == published).then_some("published in a test")
        })
        .expect("rotate");
        assert_eq!(why, Rotated::Replaced("published in a test"));
        let after = from_dir(dir.path(), td).expect("load");
        assert_ne!(after.files().cert_pem, published);
        assert!(!after.trust_bundle_pem().contains(published.trim()));
        for f in [PREVIOUS_ROOTS, PREVIOUS_SIGNER_CERT, PREVIOUS_SIGNER_KEY] {
            assert!(!dir.path().join(f).exists(), "{f} kept");
        }
        assert!(
            serving_authority(dir.path(), td, &after)
                .expect("serving")
                .is_none()
        );
    }
}
