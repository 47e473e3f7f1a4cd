//! `xds-server bootstrap` output is a bootstrap real Envoy accepts (`--mode validate`).

use std::process::Command;

fn bootstrap(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .args(["ca", "init", "--ca-dir"])
        .arg(dir.path().join("ca"))
        .output()
        .expect("run xds-server ca init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .arg("bootstrap")
        .args(args)
        .arg("--ca-dir")
        .arg(dir.path().join("ca"))
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .output()
        .expect("run xds-server bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bootstrap is JSON");
    // Keep the credential files for validation.
    std::mem::forget(dir);
    b
}

fn envoy_validates(bootstrap: &serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, bootstrap.to_string()).expect("write");
    let envoy = testbed::procs::envoy_binary().expect("Envoy is installed (scripts/setup.sh)");
    let out = Command::new(envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .expect("run envoy");
    assert!(
        out.status.success(),
        "Envoy rejected the bootstrap:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn delta_bootstrap_is_valid_for_envoy() {
    let b = bootstrap(&[
        "--namespace",
        "shop",
        "--pod",
        "api-0",
        "--service-account",
        "api",
        "--pod-ip",
        "127.0.0.9",
        "--outbound-port",
        "15001",
        "--app-address",
        "127.0.1.9",
        "--xds-address",
        "127.0.0.1:4242",
        "--delta",
    ]);
    assert_eq!(
        b["dynamic_resources"]["ads_config"]["api_type"],
        "DELTA_GRPC"
    );
    assert_eq!(b["node"]["id"], "api-0.shop");
    let tls = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"];
    assert_eq!(
        tls["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
            [0]["matcher"]["exact"],
        "spiffe://cluster.local/ns/rudder-system/sa/rudder"
    );
    // The certificate is read through file-based SDS watching the credential directory,
    // so the agent's renewals apply without a restart.
    let sds = &tls["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"];
    let dir = sds["watched_directory"]["path"]
        .as_str()
        .expect("watched dir");
    let secrets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sds["path"].as_str().expect("sds file")).expect("sds file"),
    )
    .expect("json");
    let file = secrets["resources"][0]["tls_certificate"]["certificate_chain"]["filename"]
        .as_str()
        .expect("file");
    assert!(file.starts_with(dir), "{file} is in {dir}");
    let cert = std::fs::read_to_string(file).expect("cert");
    assert!(cert.contains("BEGIN CERTIFICATE"));
    envoy_validates(&b);
}

#[test]
fn insecure_bootstrap_has_no_tls_but_still_the_agents_certificate() {
    let b = bootstrap(&["--pod", "web-0", "--insecure-xds"]);
    assert!(
        b["static_resources"]["clusters"][0]
            .get("transport_socket")
            .is_none()
    );
    // Mesh mTLS still works: the workload certificate comes from the agent's socket.
    let sds = &b["static_resources"]["clusters"][1];
    assert_eq!(sds["name"], translator::tls::AGENT_SDS_CLUSTER, "{b}");
    let socket = sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["pipe"]["path"]
        .as_str()
        .unwrap_or_default();
    assert!(
        socket.starts_with('/') && socket.ends_with("/certs/sds.sock"),
        "{socket}"
    );
    envoy_validates(&b);
}

#[test]
fn sotw_bootstrap_with_a_dns_control_plane_is_valid_for_envoy() {
    let b = bootstrap(&[
        "--pod",
        "web-0",
        "--xds-address",
        "rudder.rudder-system.svc:15010",
    ]);
    assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
    assert_eq!(b["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
    envoy_validates(&b);
}

#[test]
fn a_bad_xds_address_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_xds-server"))
        .args(["bootstrap", "--pod", "p", "--xds-address", "no-port"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--xds-address"));
}
