//! Facts about the repository itself: no tracked file holds a private key. Keys are made
//! at run time, in temporary directories (tests, the demo) or on first start (the CA).

use std::process::Command;

/// Text that opens a PEM private key of any kind (PKCS#8, EC, RSA, OpenSSH, encrypted).
/// Spelled in pieces so that this file does not match itself.
fn opens_private_key(line: &str) -> bool {
    let begin = concat!("-----", "BEGIN ");
    line.contains(begin) && line.contains(concat!("PRIVATE", " KEY-----"))
}

#[test]
fn no_tracked_file_holds_a_private_key() {
    let root = testbed::procs::workspace_root();
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(&root)
        .output()
        .expect("git runs (this test needs a git checkout)");
    assert!(
        out.status.success(),
        "git ls-files failed in {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert!(files.len() > 10, "git ls-files listed only {files:?}");
    let mut offenders = Vec::new();
    for f in &files {
        let Ok(bytes) = std::fs::read(root.join(f)) else {
            continue; // deleted in the work tree but still in the index
        };
        let text = String::from_utf8_lossy(&bytes);
        if let Some((n, _)) = text.lines().enumerate().find(|(_, l)| opens_private_key(l)) {
            offenders.push(format!("{f}:{}", n + 1));
        }
    }
    assert!(
        offenders.is_empty(),
        "tracked files hold private keys (make them at run time instead): {offenders:?}"
    );
}

#[test]
fn the_check_recognises_every_kind_of_pem_private_key() {
    for kind in ["", "EC ", "RSA ", "OPENSSH ", "ENCRYPTED "] {
        let line = format!("-----BEGIN {kind}{}-----", concat!("PRIVATE", " KEY"));
        assert!(opens_private_key(&line), "{line}");
    }
    assert!(!opens_private_key("-----BEGIN CERTIFICATE-----"));
}
