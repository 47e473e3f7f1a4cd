//! Facts about the repository itself: no tracked file holds a private key, and the images
//! are built on pinned bases. Keys are made at run time, in temporary directories (tests,
//! the demo) or on first start (the CA).

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

/// The images' bases: each runtime stage's base pinned by digest, the control plane's
/// distroless and non-root, and the init image (the only one with iptables) a separate
/// target the injector names on its own.
#[test]
fn images_are_pinned_and_the_control_plane_is_distroless() {
    let root = testbed::procs::workspace_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let args: std::collections::BTreeMap<&str, &str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ARG ")?.split_once('='))
        .collect();
    let stages: Vec<(&str, &str)> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .filter_map(|l| l.split_once(" AS "))
        .collect();
    let base = |stage: &str| {
        let (from, _) = stages
            .iter()
            .find(|(_, s)| *s == stage)
            .unwrap_or_else(|| panic!("no stage {stage}"));
        let arg = from.trim_start_matches("${").trim_end_matches('}');
        args.get(arg).copied().unwrap_or(from)
    };
    for stage in ["control-plane", "init"] {
        let image = base(stage);
        let digest = image.split_once("@sha256:").map(|(_, d)| d);
        assert!(
            digest.is_some_and(|d| d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit())),
            "{stage}: {image} is not pinned by digest"
        );
    }
    assert!(base("control-plane").starts_with("gcr.io/distroless/"));
    assert_eq!(
        stages.last().map(|(_, s)| *s),
        Some("control-plane"),
        "the default target is the control plane"
    );
    let control_plane = dockerfile
        .split("AS control-plane")
        .nth(1)
        .expect("control-plane stage");
    assert!(control_plane.contains("USER 65532:65532"));
    assert!(
        !control_plane.contains("RUN "),
        "nothing runs in a distroless stage"
    );
}
