//! What the `xds-server` binary refuses at start: unsafe flags, half or exposed CAs,
//! absurd operator input. Each is a clear error and a non-zero exit, never a panic.
#![allow(
    clippy::disallowed_methods,
    reason = "the PATH of the processes it starts, and short polls of a child process"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// Runs xds-server; a refusal must come at once: one that starts serving instead is
/// killed after a few seconds and the test fails.
fn xds_server(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .args(args)
        .env("RUDDER_LOG_FORMAT", "text")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run xds-server");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "xds-server {args:?} did not exit: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn refused(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {stderr}");
    assert_ne!(out.status.code(), Some(101), "panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(want), "expected {want:?} in: {stderr}");
}

fn run_args<'a>(manifests: &'a str, ca_dir: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--manifests",
        manifests,
        "--ca-dir",
        ca_dir,
        "--xds-address",
        "127.0.0.1:0",
        "--admin-address",
        "127.0.0.1:0",
        "--ca-address",
        "127.0.0.1:0",
    ]
}

fn dirs() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).expect("mkdir");
    let ca = dir.path().join("ca");
    (dir, m.display().to_string(), ca.display().to_string())
}

fn init(ca: &str) {
    let out = xds_server(&["ca", "init", "--ca-dir", ca]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn insecure_xds_is_refused_off_loopback() {
    let (_d, m, ca) = dirs();
    let mut args = run_args(&m, &ca);
    args.extend(["--insecure-xds"]);
    args[6] = "0.0.0.0:0";
    refused(&xds_server(&args), "allowed on a loopback address only");
    let help = String::from_utf8_lossy(&xds_server(&["run", "--help"]).stdout).into_owned();
    assert!(help.contains("may then claim any identity"), "{help}");
}

#[test]
fn absurd_certificate_lifetimes_are_refused() {
    let (_d, m, ca) = dirs();
    for bad in ["100000d", "1e400h", "5s", "400000h"] {
        let mut args = run_args(&m, &ca);
        args.extend(["--cert-lifetime", bad]);
        let out = xds_server(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--cert-lifetime"), "{bad}: {stderr}");
    }
}

#[test]
fn bootstrap_and_credentials_need_an_existing_ca() {
    let (d, _m, ca) = dirs();
    let certs = d.path().join("certs").display().to_string();
    refused(
        &xds_server(&[
            "bootstrap",
            "--pod",
            "p",
            "--ca-dir",
            &ca,
            "--cert-dir",
            &certs,
        ]),
        "holds no CA",
    );
    refused(
        &xds_server(&["credentials", "--ca-dir", &ca, "--cert-dir", &certs]),
        "xds-server ca init",
    );
    assert!(!Path::new(&ca).exists(), "nothing was created");
    init(&ca);
    refused(
        &xds_server(&["ca", "init", "--ca-dir", &ca]),
        "already holds a CA",
    );
    let out = xds_server(&["credentials", "--ca-dir", &ca, "--cert-dir", &certs]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::metadata(Path::new(&certs).join("xds-client.key")).expect("key");
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(&ca).expect("ca dir");
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
}

#[test]
fn half_a_ca_is_an_error_never_a_new_root() {
    let (_d, m, ca) = dirs();
    init(&ca);
    let cert_before = std::fs::read(Path::new(&ca).join("ca.crt")).expect("crt");
    std::fs::remove_file(Path::new(&ca).join("ca.key")).expect("rm key");
    refused(&xds_server(&run_args(&m, &ca)), "has ca.crt but no ca.key");
    assert_eq!(
        std::fs::read(Path::new(&ca).join("ca.crt")).expect("crt"),
        cert_before,
        "the certificate was not replaced"
    );
}

#[test]
fn a_key_readable_by_others_is_refused() {
    let (_d, m, ca) = dirs();
    init(&ca);
    let key = Path::new(&ca).join("ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    refused(
        &xds_server(&run_args(&m, &ca)),
        "readable by group or others",
    );
}

#[test]
fn workload_keys_kept_by_an_earlier_version_are_removed_at_start() {
    let (_d, m, ca) = dirs();
    init(&ca);
    let issued = Path::new(&ca).join("issued");
    std::fs::create_dir(&issued).expect("mkdir");
    let file = issued.join("default.web.json");
    std::fs::write(
        &file,
        r#"{"key":"(a workload key an earlier version kept)"}"#,
    )
    .expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let ready = Path::new(&m).join("..").join("ready.json");
    let mut args = run_args(&m, &ca);
    let ready_arg = ready.display().to_string();
    args.extend(["--ready-file", ready_arg.as_str()]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run xds-server");
    let start = std::time::Instant::now();
    while !ready.exists() && start.elapsed() < std::time::Duration::from_secs(20) {
        assert!(child.try_wait().expect("wait").is_none(), "exited");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready.exists(), "the control plane never became ready");
    assert!(!issued.exists(), "the kept keys are gone");
}

/// Runs `xds-server iptables --apply` with stand-ins for the restore tools on PATH:
/// iptables-restore succeeds, ip6tables-restore exits 1.
fn apply_with_broken_ip6tables(extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, script) in [
        ("iptables-restore", "#!/bin/sh\ncat >/dev/null\nexit 0\n"),
        (
            "ip6tables-restore",
            "#!/bin/sh\ncat >/dev/null\necho 'ip6tables-restore: no nat table' >&2\nexit 1\n",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, script).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .args(["iptables", "--apply"])
        .args(extra)
        .env("PATH", path)
        .env("RUDDER_LOG_FORMAT", "text")
        .output()
        .expect("run xds-server")
}

#[test]
fn iptables_apply_fails_when_the_ipv6_rules_cannot_be_installed() {
    // IPv6 in use (an IPv6 exclusion): the IPv6 rules must go in, or the command fails.
    let out = apply_with_broken_ip6tables(&["--exclude-cidr", "fd00::/8"]);
    refused(&out, "IPv6");
    refused(&out, "ip6tables-restore failed");
}
