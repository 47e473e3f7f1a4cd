//! The CRDs outlive the control plane: every CRD either chart renders carries
//! `helm.sh/resource-policy: keep` and is otherwise the generated one; charts/rudder-crds
//! installs them as a release of their own; the main chart renders none with
//! `crds.install=false`; and the SMI CRDs, which other tools own too, are left alone
//! when the cluster has a copy that is not this release's.
//!
//! What needs a real cluster: `lookup` returns nothing under `helm template`, so the
//! charts' own call to it is not exercised here. The decision it feeds (`rudder.crds`
//! in templates/_crds.tpl) is: a scratch chart holding that very file renders it with
//! stand-ins for what `lookup` would find.

mod chart_support;

use std::collections::BTreeMap;

use chart_support::{chart, generated_crds, kinds, of_kind, try_render};
use serde_json::{Value, json};

const SMI: [&str; 4] = [
    "trafficsplits.split.smi-spec.io",
    "httproutegroups.specs.smi-spec.io",
    "tcproutes.specs.smi-spec.io",
    "traffictargets.access.smi-spec.io",
];
const RETRY: &str = "retrypolicies.policy.rudder.dev";

/// The CRDs of rendered documents by name, each checked to carry the keep policy and
/// returned without it.
fn kept_crds(docs: &[Value]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for d in of_kind(docs, "CustomResourceDefinition") {
        let name = d["metadata"]["name"].as_str().expect("name").to_string();
        assert_eq!(
            d["metadata"]["annotations"],
            json!({"helm.sh/resource-policy": "keep"}),
            "{name} must survive helm uninstall"
        );
        let mut bare = d.clone();
        if let Some(meta) = bare["metadata"].as_object_mut() {
            meta.remove("annotations");
        }
        out.insert(name, bare);
    }
    out
}

fn render_chart(name: &str, extra: &[&str]) -> Vec<Value> {
    match try_render(&chart(name), "rudder-system", extra) {
        Ok((_, docs)) => docs,
        Err(e) => panic!("charts/{name} {extra:?}: {e}"),
    }
}

#[test]
fn every_crd_of_both_charts_is_kept_on_uninstall_and_is_the_generated_one() {
    let generated: BTreeMap<String, Value> = generated_crds().into_iter().collect();
    for name in ["rudder", "rudder-crds"] {
        let crds = kept_crds(&render_chart(name, &[]));
        assert_eq!(
            crds, generated,
            "charts/{name} renders the generated CRDs (plus the keep policy)"
        );
    }
    // The files themselves are the generated text, in both charts (the CRD chart holds
    // copies: a chart cannot read files outside itself).
    for (file, yaml) in crds::crd_documents() {
        for name in ["rudder", "rudder-crds"] {
            let path = chart(name).join("files/crds").join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(
                text,
                yaml,
                "{} differs from the generated CRD: run `cargo run -p crds --bin crdgen`",
                path.display()
            );
        }
    }
    let helper = |name: &str| {
        std::fs::read_to_string(chart(name).join("templates/_crds.tpl")).expect("_crds.tpl")
    };
    assert_eq!(
        helper("rudder"),
        helper("rudder-crds"),
        "the two charts' templates/_crds.tpl must stay equal"
    );
}

#[test]
fn the_crd_chart_renders_only_crds_and_the_main_chart_none_when_told() {
    let docs = render_chart("rudder-crds", &[]);
    assert!(
        docs.iter().all(|d| d["kind"] == "CustomResourceDefinition"),
        "{:?}",
        kinds(&docs)
    );
    let docs = render_chart("rudder-crds", &["--set", "trafficSplit=false"]);
    assert_eq!(kinds(&docs), [format!("CustomResourceDefinition/{RETRY}")]);
    let (ok, out, err) =
        chart_support::run_helm(&["lint", chart("rudder-crds").to_str().expect("utf-8")]);
    assert!(ok, "helm lint charts/rudder-crds: {out}{err}");

    // The main chart: CRDs by default (an upgrade from a version that had them must not
    // drop them), none with crds.install=false, whatever else is set.
    let docs = render_chart("rudder", &[]);
    assert_eq!(
        of_kind(&docs, "CustomResourceDefinition").len(),
        SMI.len() + 1
    );
    let docs = render_chart(
        "rudder",
        &[
            "--set",
            "crds.install=false",
            "--set",
            "crds.trafficSplit=true",
        ],
    );
    assert!(
        of_kind(&docs, "CustomResourceDefinition").is_empty(),
        "{:?}",
        kinds(&docs)
    );
    assert!(
        !docs.is_empty(),
        "the control plane still renders without its CRDs"
    );
}

/// A scratch chart with charts/rudder's templates/_crds.tpl and files/crds whose one
/// template renders `rudder.crds` with `found` standing in for what `lookup` returns.
fn decide(found: Value) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("templates")).expect("mkdir");
    std::fs::write(
        root.join("Chart.yaml"),
        "apiVersion: v2\nname: crd-decision\nversion: 0.0.1\n",
    )
    .expect("write");
    std::fs::copy(
        chart("rudder").join("templates/_crds.tpl"),
        root.join("templates/_crds.tpl"),
    )
    .expect("copy helper");
    let files = root.join("files/crds");
    std::fs::create_dir_all(&files).expect("mkdir");
    for (file, yaml) in crds::crd_documents() {
        std::fs::write(files.join(file), yaml).expect("write CRD");
    }
    std::fs::write(
        root.join("templates/t.yaml"),
        r#"{{- include "rudder.crds" (dict "root" . "found" .Values.found "smi" true "retryPolicy" true) }}"#,
    )
    .expect("write template");
    let values = root.join("found.json");
    std::fs::write(&values, json!({ "found": found }).to_string()).expect("write values");
    let docs = match try_render(
        root,
        "rudder-system",
        &["-f", values.to_str().expect("utf-8")],
    ) {
        Ok((_, docs)) => docs,
        Err(e) => panic!("{e}"),
    };
    kept_crds(&docs).into_keys().collect()
}

fn owned_by(release: &str, namespace: &str) -> Value {
    json!({"metadata": {"annotations": {
        "meta.helm.sh/release-name": release,
        "meta.helm.sh/release-namespace": namespace,
    }}})
}

#[test]
fn smi_crds_present_and_not_this_releases_are_left_alone() {
    let all: Vec<String> = {
        let mut v: Vec<String> = SMI.iter().map(|s| s.to_string()).collect();
        v.push(RETRY.into());
        v.sort();
        v
    };
    // Absent: all of them (what `helm template` renders, as lookup finds nothing).
    assert_eq!(decide(json!({})), all);
    // Already this release's (an upgrade): kept in the release.
    let ours = owned_by("rudder", "rudder-system");
    assert_eq!(decide(json!({SMI[0]: ours, SMI[1]: ours})), all);
    // Installed by Flagger's release, by kubectl (no Helm annotations), or by a release
    // of the same name in another namespace: left alone. RetryPolicy is Rudder's own.
    for foreign in [
        owned_by("flagger", "flagger-system"),
        json!({"metadata": {"name": SMI[0], "labels": {"app": "flagger"}}}),
        owned_by("rudder", "other"),
    ] {
        assert_eq!(
            decide(json!({SMI[0]: foreign, SMI[1]: foreign, SMI[2]: foreign, SMI[3]: foreign})),
            [RETRY],
            "present and foreign: {foreign}"
        );
        let mut one_left: Vec<String> = all.iter().filter(|n| *n != SMI[0]).cloned().collect();
        one_left.sort();
        assert_eq!(decide(json!({SMI[0]: foreign})), one_left, "{foreign}");
    }
}
