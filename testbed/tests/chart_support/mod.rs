//! What the chart tests share: the real helm 4 binary (`scripts/setup.sh` puts it in
//! `.tools/helm`) run with scratch homes, rendered documents and their kind/name.

#![allow(dead_code)] // Each test crate uses part of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use testbed::procs::workspace_root;

pub(crate) fn helm() -> PathBuf {
    let h = workspace_root().join(".tools/helm");
    assert!(
        h.exists(),
        "{} is missing: run scripts/setup.sh (the chart tests need helm)",
        h.display()
    );
    h
}

/// charts/NAME in the workspace.
pub(crate) fn chart(name: &str) -> PathBuf {
    workspace_root().join("charts").join(name)
}

/// `helm ARGS` with scratch cache/config/data homes: (success, stdout, stderr).
pub(crate) fn run_helm(args: &[&str]) -> (bool, String, String) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = Command::new(helm())
        .args(args)
        .env("HELM_CACHE_HOME", scratch.path().join("cache"))
        .env("HELM_CONFIG_HOME", scratch.path().join("config"))
        .env("HELM_DATA_HOME", scratch.path().join("data"))
        .output()
        .expect("helm runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template rudder CHART -n NAMESPACE EXTRA...`: the raw text and its documents,
/// or helm's error text.
pub(crate) fn try_render(
    chart: &Path,
    namespace: &str,
    extra: &[&str],
) -> Result<(String, Vec<Value>), String> {
    let path = chart.to_str().expect("utf-8 path");
    let mut args = vec!["template", "rudder", path, "-n", namespace];
    args.extend(extra);
    let (ok, out, err) = run_helm(&args);
    if !ok {
        return Err(err);
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).expect("rendered YAML parses");
    Ok((out, docs.into_iter().filter(|d| !d.is_null()).collect()))
}

/// charts/rudder in rudder-system with `--set` values; panics when it does not render.
pub(crate) fn render(sets: &[&str]) -> Vec<Value> {
    let mut extra = Vec::new();
    for s in sets {
        extra.extend(["--set", *s]);
    }
    match try_render(&chart("rudder"), "rudder-system", &extra) {
        Ok((_, docs)) => docs,
        Err(e) => panic!("helm template {sets:?} failed: {e}"),
    }
}

/// charts/rudder with `--set` values that must not render: helm's error text.
pub(crate) fn render_error(namespace: &str, sets: &[&str]) -> String {
    let mut extra = Vec::new();
    for s in sets {
        extra.extend(["--set", *s]);
    }
    match try_render(&chart("rudder"), namespace, &extra) {
        Ok(_) => panic!("{sets:?} in {namespace} rendered; expected an error"),
        Err(e) => e,
    }
}

/// "Kind/name" of a document.
pub(crate) fn kind_name(d: &Value) -> String {
    format!(
        "{}/{}",
        d["kind"].as_str().unwrap_or("?"),
        d["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Sorted "Kind/name" of every document.
pub(crate) fn kinds(docs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = docs.iter().map(kind_name).collect();
    k.sort();
    k
}

/// The documents of one kind.
pub(crate) fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one document of `kind`.
pub(crate) fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "one {kind} in {:?}", kinds(docs));
    found[0]
}

/// The generated CRDs (crds::crd_documents) as (metadata.name, parsed document).
pub(crate) fn generated_crds() -> Vec<(String, Value)> {
    crds::crd_documents()
        .into_iter()
        .map(|(_, yaml)| {
            let v: Value = serde_saphyr::from_str(&yaml).expect("generated CRD parses");
            let name = v["metadata"]["name"]
                .as_str()
                .expect("CRD name")
                .to_string();
            (name, v)
        })
        .collect()
}
