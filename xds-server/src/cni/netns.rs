//! Running a program inside a pod's network namespace: the child joins the namespace
//! (`setns` on the CNI_NETNS path) before it executes, so the node needs no `nsenter`,
//! only the iptables tools. Every run is bounded in time and killed past it.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Where a program named without a directory is looked for after PATH (a runtime may
/// run plugins with an empty environment).
const SYSTEM_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"];
/// The most output of a program kept for an error message.
const MAX_MESSAGE: usize = 2048;

/// `program` as a path: itself when it names a directory, else the first match on
/// `path` (PATH) or in the system directories.
pub(crate) fn resolve(program: &str, path: Option<&str>) -> Result<PathBuf, String> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    path.into_iter()
        .flat_map(|p| p.split(':'))
        .chain(SYSTEM_DIRS.iter().copied())
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{program} not found on PATH or in {}",
                SYSTEM_DIRS.join(":")
            )
        })
}

/// Runs `program args` inside the network namespace at `netns` with `input` on stdin;
/// its stdout on success.
pub(crate) async fn run_in(
    netns: &Path,
    program: &Path,
    args: &[&str],
    input: &str,
    timeout: Duration,
) -> Result<String, String> {
    let ns = std::fs::File::open(netns)
        .map_err(|e| format!("opening network namespace {}: {e}", netns.display()))?;
    let fd = ns.as_raw_fd();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: between fork and exec the child only makes the setns system call (async
    // signal safe) on a descriptor the parent keeps open until the child is done.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let name = program.display();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running {name} in {}: {e}", netns.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let run = async {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| format!("writing to {name}: {e}"))?;
        drop(stdin);
        child
            .wait_with_output()
            .await
            .map_err(|e| format!("waiting for {name}: {e}"))
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("{name} took longer than {timeout:?}"))??;
    drop(ns);
    if !out.status.success() {
        let mut err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if err.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !err.is_char_boundary(end) {
                end -= 1;
            }
            err.truncate(end);
        }
        return Err(format!("{name} failed ({}): {err}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a thread of its own that has joined the network namespace at `netns`
/// (the calling thread's namespace is untouched).
pub(crate) fn on_thread_in<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, String> {
    let ns = std::fs::File::open(netns)
        .map_err(|e| format!("opening network namespace {}: {e}", netns.display()))?;
    let shown = netns.display().to_string();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a descriptor it owns until it ends.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "joining network namespace {shown}: {}",
                std::io::Error::last_os_error()
            ));
        }
        f().map_err(|e| format!("{e:#}"))
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_then_in_system_dirs() {
        let dir = tempfile::tempdir().expect("dir");
        let prog = dir.path().join("my-restore");
        std::fs::write(&prog, "").expect("write");
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(resolve("my-restore", Some(&path)), Ok(prog));
        assert!(
            resolve("sh", None).is_ok(),
            "found in the system directories"
        );
        assert!(resolve("no-such-program-here", Some("")).is_err());
        assert_eq!(resolve("/x/y", None), Ok(PathBuf::from("/x/y")));
    }

    #[tokio::test]
    async fn a_path_that_is_no_network_namespace_fails() {
        let f = tempfile::NamedTempFile::new().expect("file");
        let e = run_in(
            f.path(),
            Path::new("/bin/true"),
            &[],
            "",
            Duration::from_secs(5),
        )
        .await
        .expect_err("not a namespace");
        assert!(e.contains("/bin/true"), "{e}");
        let e = run_in(
            Path::new("/nonexistent/ns"),
            Path::new("/bin/true"),
            &[],
            "",
            Duration::from_secs(5),
        )
        .await
        .expect_err("missing");
        assert!(e.contains("opening network namespace"), "{e}");
    }
}
