//! NOTES.txt works as written: every `kubectl` command names objects the chart renders
//! (in the namespace it renders them in), labels what the injector selects, and no step
//! copies the CA key out of the cluster; the `helm test` it points at runs
//! `xds-server credentials` and `xdsctl status` with the rendered arguments, here
//! against a running control plane (the Secret's mount and the Service's DNS name are
//! the only things swapped for local paths and the local address).
//!
//! What needs a real cluster: that the kubelet mounts the CA Secret as rendered and that
//! the Pod reaches rudder.rudder-system.svc.

mod chart_support;

use std::process::Command;

use chart_support::{chart, kind_name, of_kind, run_helm, try_render};
use serde_json::Value;
use testbed::procs::{ControlPlane, workspace_bin};

/// NOTES.txt and the objects as `helm install --dry-run=client` renders them.
fn install_dry_run(sets: &[&str]) -> (String, Vec<Value>) {
    let path = chart("rudder");
    let mut args = vec![
        "install",
        "rudder",
        path.to_str().expect("utf-8"),
        "-n",
        "rudder-system",
        "--dry-run=client",
    ];
    for s in sets {
        args.extend(["--set", *s]);
    }
    let (ok, out, err) = run_helm(&args);
    assert!(ok, "helm install --dry-run {sets:?}: {err}");
    let notes = out
        .split_once("\nNOTES:\n")
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| panic!("no NOTES in {out}"));
    let mut extra = Vec::new();
    for s in sets {
        extra.extend(["--set", *s]);
    }
    let (_, docs) = try_render(&path, "rudder-system", &extra).expect("renders");
    (notes, docs)
}

/// The kind a kubectl resource type names.
fn kind_of(resource: &str) -> &'static str {
    match resource {
        "deployment" | "deploy" | "deployments" => "Deployment",
        "service" | "svc" | "services" => "Service",
        "pod" | "pods" => "Pod",
        "secret" | "secrets" => "Secret",
        "configmap" | "cm" => "ConfigMap",
        other => panic!("NOTES names a resource type this test does not know: {other}"),
    }
}

fn check_notes(sets: &[&str]) {
    let (notes, docs) = install_dry_run(sets);
    for banned in ["ca.key", "tls.key", "get secret", "--ca-dir", "base64"] {
        assert!(
            !notes.contains(banned),
            "{sets:?}: NOTES mention {banned:?}:\n{notes}"
        );
    }
    let rendered: Vec<String> = docs.iter().map(kind_name).collect();
    let webhook = of_kind(&docs, "MutatingWebhookConfiguration");
    let mut commands = 0;
    for line in notes.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"kubectl") => commands += 1,
            Some(&"helm") => {
                commands += 1;
                assert_eq!(words[..4], ["helm", "test", "rudder", "-n"], "{line}");
                assert_eq!(words[4], "rudder-system", "{line}");
                let tests: Vec<&Value> = of_kind(&docs, "Pod")
                    .into_iter()
                    .filter(|p| p["metadata"]["annotations"]["helm.sh/hook"] == "test")
                    .collect();
                assert_eq!(tests.len(), 1, "`{line}` needs a test hook");
                continue;
            }
            _ => continue,
        }
        // -n: this release's namespace, or the user's NAMESPACE.
        if let Some(i) = words.iter().position(|w| *w == "-n") {
            assert!(
                ["rudder-system", "NAMESPACE"].contains(&words[i + 1]),
                "{line}"
            );
        }
        for w in words[1..]
            .iter()
            .filter(|w| !w.contains('=') && !w.starts_with('-'))
        {
            if let Some((resource, name)) = w.split_once('/') {
                let want = format!("{}/{name}", kind_of(resource));
                assert!(
                    rendered.contains(&want),
                    "`{line}` names {want}, which the chart does not create: {rendered:?}"
                );
                if let Some(i) = words.iter().position(|w| *w == "-n") {
                    assert_eq!(words[i + 1], "rudder-system", "{line}");
                }
            }
        }
        if words.get(1) == Some(&"port-forward") {
            let svc = docs
                .iter()
                .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "rudder-metrics")
                .expect("rudder-metrics");
            let (_, remote) = words
                .last()
                .and_then(|p| p.split_once(':'))
                .expect("LOCAL:REMOTE");
            assert!(
                svc["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["port"].as_u64().map(|n| n.to_string()).as_deref() == Some(remote)),
                "{line}"
            );
        }
        if words.get(1) == Some(&"label") {
            assert!(!webhook.is_empty(), "{line}: no injector in this release");
            let (key, value) = words[4].split_once('=').expect("KEY=VALUE");
            let selects =
                webhook[0]["webhooks"][0]["namespaceSelector"]["matchLabels"][key] == value;
            assert!(selects, "`{line}` is not what the injector selects");
        }
    }
    assert!(commands >= 3, "{notes}");
}

#[test]
fn every_command_in_the_notes_names_what_the_chart_creates() {
    check_notes(&[]);
    check_notes(&["injector.enabled=false"]);
    check_notes(&["crds.install=false", "xdsctlTest.enabled=false"]);
    check_notes(&[
        "ca.source=secret",
        "ca.secretName=corp-ca",
        "ca.secretHasChain=true",
        "ca.caBundle=Y29ycC1yb290",
    ]);
}

/// A container's args with the in-pod paths and the Service address replaced.
fn local_args(
    c: &Value,
    ca_dir: &std::path::Path,
    creds: &std::path::Path,
    server: &str,
) -> Vec<String> {
    c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let a = a.as_str().expect("string arg");
            if a.starts_with("--server=") {
                return format!("--server={server}");
            }
            a.replace("/ca/", &format!("{}/", ca_dir.display()))
                .replace("/creds/", &format!("{}/", creds.display()))
        })
        .collect()
}

#[tokio::test]
async fn the_helm_test_runs_xdsctl_status_with_the_rendered_arguments() -> anyhow::Result<()> {
    let (_, docs) =
        try_render(&chart("rudder"), "rudder-system", &[]).map_err(anyhow::Error::msg)?;
    let pod = of_kind(&docs, "Pod")
        .into_iter()
        .find(|p| p["metadata"]["name"] == "rudder-xdsctl-status")
        .expect("the test Pod")
        .clone();
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod.clone())?;
    let spec = &pod["spec"];
    assert_eq!(spec["volumes"][0]["secret"]["secretName"], "rudder-ca");
    assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 0o400);
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(pod["metadata"]["annotations"]["rudder.dev/inject"], "false");

    // The control plane's CA directory holds what the Secret rudder-ca holds (ca.crt,
    // ca.key).
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(&manifests)?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    let creds = work.path().join("creds");
    std::fs::create_dir_all(&creds)?;
    let init = &spec["initContainers"][0];
    let out = Command::new(workspace_bin("xds-server")?)
        .args(local_args(init, &cp.ca_dir(), &creds, ""))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the init container's command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let main = &spec["containers"][0];
    assert_eq!(
        main["command"],
        serde_json::json!(["/usr/local/bin/xdsctl"])
    );
    let out = Command::new(workspace_bin("xdsctl")?)
        .args(local_args(main, &cp.ca_dir(), &creds, &cp.xds.to_string()))
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "xdsctl status: {text}");
    assert!(text.contains("NODE"), "a status table: {text}");
    Ok(())
}
