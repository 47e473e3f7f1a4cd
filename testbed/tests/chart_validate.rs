//! Every object both charts render, checked strictly (unknown fields refused) against the
//! real Kubernetes schemas of every minor version from 1.29 to 1.37 with PyPI
//! `kubernetes-validate` (installed by scripts/setup.sh; missing, the test fails). Only
//! the Prometheus Operator's kinds have no schema there; they are checked structurally in
//! chart_monitoring.rs, and nothing else may go unchecked.

mod chart_support;

use std::process::Command;

use chart_support::{chart, try_render};
use testbed::procs::workspace_root;

/// Value sets that between them render every template.
const VALUE_SETS: [&[&str]; 5] = [
    &[],
    &[
        "cni.enabled=true",
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.podMonitor.enabled=true",
        "monitoring.dashboard.enabled=true",
        "replicas=3",
        "priorityClassName=system-cluster-critical",
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "image.pullSecrets[0].name=registry",
        "watchNamespaces={shop,web}",
    ],
    &[
        "ca.source=secret",
        "ca.secretName=corp-ca",
        "ca.secretHasChain=true",
        "replicas=1",
        "networkPolicy.enabled=false",
    ],
    &["injector.enabled=false", "crds.install=false"],
    &["revision=canary", "crds.install=false"],
];

/// Kinds kubernetes-validate has no schema for (CRDs of other projects).
const UNCHECKED: [&str; 2] = ["PodMonitor", "ServiceMonitor"];

fn validate(file: &std::path::Path, version: &str) -> (bool, String) {
    let bin = workspace_root().join(".venv/bin/kubernetes-validate");
    assert!(
        bin.exists(),
        "{} not found: run scripts/setup.sh",
        bin.display()
    );
    let out = Command::new(bin)
        .args(["--strict", "--quiet", "-k", version])
        .arg(file)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_rendered_object_is_valid_for_kubernetes_1_29_to_1_37() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut renders = Vec::new();
    for (i, sets) in VALUE_SETS.iter().enumerate() {
        let mut extra = Vec::new();
        for s in *sets {
            extra.extend(["--set", *s]);
        }
        let (text, docs) = try_render(&chart("rudder"), "rudder-system", &extra)
            .unwrap_or_else(|e| panic!("{sets:?}: {e}"));
        assert!(!docs.is_empty());
        renders.push((format!("rudder {sets:?}"), i, text));
    }
    let (text, _) = try_render(&chart("rudder-crds"), "rudder-system", &[]).expect("rudder-crds");
    renders.push(("rudder-crds".into(), VALUE_SETS.len(), text));
    let mut failures = Vec::new();
    for (name, i, text) in &renders {
        let file = dir.path().join(format!("render-{i}.yaml"));
        std::fs::write(&file, text).expect("write");
        for minor in 29..=37 {
            let version = format!("1.{minor}.0");
            let (ok, out) = validate(&file, &version);
            let unexpected: Vec<&str> = out
                .lines()
                .filter(|l| !l.trim().is_empty())
                .filter(|l| {
                    !(l.starts_with("WARN")
                        && l.contains("Couldn't find schema")
                        && UNCHECKED.iter().any(|k| l.contains(&format!("kind {k} "))))
                })
                .collect();
            if !ok || !unexpected.is_empty() {
                failures.push(format!("{name} on {version}:\n{}", unexpected.join("\n")));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_check_refuses_an_unknown_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndatta: {}\n",
    )
    .expect("write");
    let (ok, out) = validate(&file, "1.37.0");
    assert!(!ok, "{out}");
}
