//! `helm upgrade` from the previous chart (charts/rudder at PREVIOUS, the commit before
//! the chart was reworked for real clusters) to this one: rendered with the same
//! values, no CRD disappears (Helm deletes what leaves a release, and the old CRDs
//! carry no keep policy: their removal would delete every user's TrafficSplit and
//! RetryPolicy), the Deployment's immutable selector is unchanged, and the previous
//! chart's default values pass this chart's schema. The object diff is printed.

mod chart_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use chart_support::{chart, kinds, one, try_render};
use serde_json::Value;
use testbed::procs::workspace_root;

/// The last commit before this chart's rework.
const PREVIOUS: &str = "810dafc";

/// charts/rudder as of `rev`, unpacked under `dir`.
fn chart_at(rev: &str, dir: &Path) -> std::path::PathBuf {
    let archive = Command::new("git")
        .current_dir(workspace_root())
        .args(["archive", "--format=tar", rev, "charts/rudder"])
        .output()
        .expect("git runs");
    assert!(
        archive.status.success(),
        "git archive {rev}: {}",
        String::from_utf8_lossy(&archive.stderr)
    );
    let mut tar = Command::new("tar")
        .current_dir(dir)
        .arg("-x")
        .stdin(Stdio::piped())
        .spawn()
        .expect("tar runs");
    tar.stdin
        .take()
        .expect("tar's input")
        .write_all(&archive.stdout)
        .expect("feeding tar");
    let status = tar.wait().expect("tar ends");
    assert!(status.success(), "unpacking charts/rudder at {rev}");
    let path = dir.join("charts/rudder");
    assert!(path.join("Chart.yaml").exists(), "no chart at {rev}");
    path
}

fn render(path: &Path, extra: &[&str]) -> Vec<Value> {
    match try_render(path, "rudder-system", extra) {
        Ok((_, docs)) => docs,
        Err(e) => panic!("{} {extra:?}: {e}", path.display()),
    }
}

#[test]
fn an_upgrade_from_the_previous_chart_drops_no_crd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = chart_at(PREVIOUS, dir.path());
    for values in [
        vec![],
        vec![
            "--set",
            "crds.trafficSplit=false",
            "--set",
            "injector.enabled=false",
        ],
        vec!["--set", "replicas=1", "--set", "mtlsMode=PERMISSIVE"],
    ] {
        let (before, after) = (render(&old, &values), render(&chart("rudder"), &values));
        // Hooks (the `helm test` Pod) are not part of the release's objects.
        let objects = |docs: &[Value]| -> BTreeSet<String> {
            let kept: Vec<Value> = docs
                .iter()
                .filter(|d| d["metadata"]["annotations"]["helm.sh/hook"].is_null())
                .cloned()
                .collect();
            kinds(&kept).into_iter().collect()
        };
        let (b, a) = (objects(&before), objects(&after));
        let removed: Vec<&String> = b.difference(&a).collect();
        let added: Vec<&String> = a.difference(&b).collect();
        eprintln!(
            "upgrade {PREVIOUS} -> this chart with {values:?}:\n  removed: {removed:?}\n  added:   {added:?}"
        );
        let crds_removed: Vec<&&String> = removed
            .iter()
            .filter(|k| k.starts_with("CustomResourceDefinition/"))
            .collect();
        assert!(
            crds_removed.is_empty(),
            "the upgrade would delete {crds_removed:?}"
        );
        assert_eq!(
            one(&before, "Deployment")["spec"]["selector"],
            one(&after, "Deployment")["spec"]["selector"],
            "a Deployment's selector is immutable: the upgrade would fail"
        );
    }
    // A values file written for the previous chart still passes the schema.
    let old_values = old.join("values.yaml");
    render(
        &chart("rudder"),
        &["-f", old_values.to_str().expect("utf-8")],
    );
}

/// `helm upgrade --reuse-values` drops the new chart's defaults and renders its
/// templates with the previous release's values only: this chart's templates with the
/// previous chart's values.yaml in place of its own.
#[test]
fn an_upgrade_with_reuse_values_keeps_the_crds_and_renders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = chart_at(PREVIOUS, dir.path());
    let new = dir.path().join("new");
    let copy = Command::new("cp")
        .arg("-r")
        .arg(chart("rudder"))
        .arg(&new)
        .status()
        .expect("cp runs");
    assert!(copy.success());
    std::fs::copy(old.join("values.yaml"), new.join("values.yaml")).expect("old values");
    let (before, after) = (render(&old, &[]), render(&new, &[]));
    let crds = |docs: &[Value]| -> Vec<String> {
        kinds(docs)
            .into_iter()
            .filter(|k| k.starts_with("CustomResourceDefinition/"))
            .collect()
    };
    let (before, after_crds) = (crds(&before), crds(&after));
    assert!(
        before.iter().all(|c| after_crds.contains(c)),
        "--reuse-values must keep every CRD: {before:?} -> {after_crds:?}"
    );
    // And the kinds the previous chart lacked (TrafficTarget, TCPRoute) join them.
    assert_eq!(after_crds.len(), 5, "{after_crds:?}");
    // What the previous chart did not have can be switched on the same way.
    let docs = render(
        &new,
        &[
            "--set",
            "monitoring.serviceMonitor.enabled=true",
            "--set",
            "monitoring.dashboard.enabled=true",
        ],
    );
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "30s");
    assert_eq!(
        one(&docs, "ConfigMap")["metadata"]["labels"]["grafana_dashboard"],
        "1"
    );
}
