//! The agent's Unix sockets (SDS for Envoy, the xDS bridge for a gRPC app) and the
//! private directory they are made in: `CERT_DIR/.agent`, created by the agent, owned
//! by its user, mode 0700, checked after creation (a directory someone else owns, a
//! symlink, or one group or others may enter is refused).
//!
//! A socket is bound under a temporary name inside that directory, made 0600 there
//! (nobody else can reach it yet: the directory is the agent's only), and renamed over
//! its final path in one step, so there is no moment when the socket exists at its
//! final path with a wider mode, and nothing follows a symlink. A file already at the
//! final path is replaced only when it is a socket (a stale one from an earlier run);
//! anything else is refused.
//!
//! The credential directory itself may be a volume others mount (an `emptyDir` is
//! 0777): whoever can write to it can rename entries in it, so the agent warns at
//! startup when it is group- or other-writable.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The agent's private directory inside the credential directory.
pub(crate) const PRIVATE_DIR: &str = ".agent";

/// The private directory of `cert_dir` (created 0700 if missing, then checked).
pub(crate) fn private_dir(cert_dir: &Path) -> anyhow::Result<PathBuf> {
    crate::private_files::private_dir(cert_dir)?;
    warn_if_shared(cert_dir);
    let dir = cert_dir.join(PRIVATE_DIR);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    check_private(&dir)?;
    Ok(dir)
}

/// Refuses `dir` unless it is a real directory (not a symlink), owned by this process's
/// user, that group and others cannot enter.
fn check_private(dir: &Path) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    anyhow::ensure!(
        meta.file_type().is_dir(),
        "{} is not a directory (a symlink or a file there is refused); remove it",
        dir.display()
    );
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    anyhow::ensure!(
        meta.uid() == me,
        "{} is owned by uid {}, not this process (uid {me}); another user may have made it to serve its own sockets: remove it",
        dir.display(),
        meta.uid()
    );
    let mode = meta.mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{} is open to group or others (mode {mode:03o}); it must be 0700: chmod 700 {}",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// Whether `dir` is writable by group or others (then a warning is logged).
pub(crate) fn warn_if_shared(dir: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    let mode = meta.permissions().mode() & 0o777;
    let shared = mode & 0o022 != 0;
    if shared {
        tracing::warn!(
            dir = %dir.display(),
            mode = %format!("{mode:03o}"),
            "the credential directory is writable by group or others: another user sharing the volume can rename entries in it; the agent's sockets live in its private {PRIVATE_DIR} directory, but only containers running as the agent's user should mount this volume"
        );
    }
    shared
}

/// Binds a Unix socket at `path` that only this user may connect to (mode 0600; see the
/// module docs), made in `private` (from [`private_dir`], on the same file system).
/// `what` names it in errors.
pub(crate) fn bind(
    private: &Path,
    path: &Path,
    what: &str,
) -> anyhow::Result<tokio::net::UnixListener> {
    // sockaddr_un holds 108 bytes with the terminating NUL.
    let tmp = private.join(format!(".{:08x}.sock.tmp", rand::random::<u32>()));
    for p in [path, tmp.as_path()] {
        anyhow::ensure!(
            p.as_os_str().len() < 108,
            "the {what} socket path {} is over 107 bytes; use a shorter --cert-dir",
            p.display()
        );
    }
    check_replaceable(path, what)?;
    let listener = tokio::net::UnixListener::bind(&tmp)
        .with_context(|| format!("binding the {what} socket {}", tmp.display()))?;
    let placed = (|| {
        // The temporary socket is in the agent's own directory: no symlink can be there.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", tmp.display()))?;
        check_replaceable(path, what)?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("moving the {what} socket to {}", path.display()))
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Nothing at `path`, or a socket (stale, from an earlier run); anything else is refused.
fn check_replaceable(path: &Path, what: &str) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => Ok(()),
        Ok(m) => anyhow::bail!(
            "{} is in the way of the {what} socket and is not a socket ({}); refusing to replace it",
            path.display(),
            kind(&m)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn kind(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).expect("meta").mode() & 0o777
    }

    #[tokio::test]
    async fn the_socket_is_made_in_a_checked_private_directory() {
        let d = tempfile::tempdir().expect("tempdir");
        let certs = d.path().join("certs");
        std::fs::create_dir(&certs).expect("mkdir");
        std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(
            warn_if_shared(&certs),
            "an emptyDir-like 0777 directory is flagged"
        );
        let private = private_dir(&certs).expect("private dir");
        assert_eq!(private, certs.join(PRIVATE_DIR));
        assert_eq!(mode(&private), 0o700);
        let path = private.join("x.sock");
        let _l = bind(&private, &path, "test").expect("bind");
        assert!(
            std::fs::symlink_metadata(&path)
                .expect("meta")
                .file_type()
                .is_socket()
        );
        assert_eq!(mode(&path), 0o600);
        let left: Vec<_> = std::fs::read_dir(&private)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary left: {left:?}");
        tokio::net::UnixStream::connect(&path)
            .await
            .expect("the renamed socket serves");
    }

    #[test]
    fn a_private_directory_open_to_others_or_a_symlink_is_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let certs = d.path().join("certs");
        std::fs::create_dir(&certs).expect("mkdir");
        let private = certs.join(PRIVATE_DIR);
        std::fs::create_dir(&private).expect("mkdir");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = format!("{:#}", private_dir(&certs).expect_err("0755 refused"));
        assert!(e.contains("open to group or others"), "{e}");
        std::fs::remove_dir(&private).expect("rmdir");
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::os::unix::fs::symlink(&elsewhere, &private).expect("link");
        let e = format!("{:#}", private_dir(&certs).expect_err("symlink refused"));
        assert!(e.contains("not a directory"), "{e}");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_anything_else_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let private = private_dir(d.path()).expect("private dir");
        let path = d.path().join("app.sock");
        // A stale socket (its listener gone): replaced, and the new one serves.
        drop(bind(&private, &path, "test").expect("first"));
        let ino = std::fs::symlink_metadata(&path).expect("meta").ino();
        let _l = bind(&private, &path, "test").expect("stale replaced");
        assert_ne!(std::fs::symlink_metadata(&path).expect("meta").ino(), ino);
        tokio::net::UnixStream::connect(&path)
            .await
            .expect("the new socket serves");
        // A regular file, a symlink (even to a socket): refused, left alone.
        let file = d.path().join("file.sock");
        std::fs::write(&file, "data").expect("write");
        let e = format!("{:#}", bind(&private, &file, "test").expect_err("file"));
        assert!(e.contains("not a socket (a regular file)"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "data");
        let link = d.path().join("link.sock");
        std::os::unix::fs::symlink(&path, &link).expect("link");
        let e = format!("{:#}", bind(&private, &link, "test").expect_err("symlink"));
        assert!(e.contains("not a socket (a symlink)"), "{e}");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("meta")
                .file_type()
                .is_symlink()
        );
        // Nothing temporary left behind by the refusals.
        let left = std::fs::read_dir(&private).expect("ls").count();
        assert_eq!(left, 0);
    }
}
