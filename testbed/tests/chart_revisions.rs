//! Revisions: a second control plane (release) beside the default one, for a canary
//! upgrade of Rudder itself. Its objects never collide with the default release's, it
//! leaves the CRDs and the node agent to the default one, its injector points sidecars at
//! its own Services, and the two webhooks' selectors never both match a pod: each pod is
//! injected by the control plane its namespace's (or its own) labels pick, or none.

mod chart_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use chart_support::{kind_name, of_kind, one, render, render_error};
use serde_json::Value;
use testbed::procs::workspace_bin;

const CANARY: [&str; 2] = ["revision=canary", "crds.install=false"];

fn args(docs: &[Value]) -> Vec<String> {
    one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect()
}

/// Whether a Kubernetes label selector matches `labels`.
fn selects(selector: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k.as_str()).copied() == v.as_str());
    let by_expression = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let have = labels.get(key).copied();
            match e["operator"].as_str() {
                Some("In") => have.is_some_and(|v| values.contains(&v)),
                Some("NotIn") => have.is_none_or(|v| !values.contains(&v)),
                Some("Exists") => have.is_some(),
                Some("DoesNotExist") => have.is_none(),
                other => panic!("operator {other:?}"),
            }
        });
    by_label && by_expression
}

/// The webhooks (configuration name) that would be called for a pod.
fn callers(
    configs: &[&Value],
    namespace: &BTreeMap<&str, &str>,
    pod: &BTreeMap<&str, &str>,
) -> Vec<String> {
    configs
        .iter()
        .flat_map(|c| {
            let name = c["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            c["webhooks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| selects(&w["namespaceSelector"], namespace))
                .filter(|w| selects(&w["objectSelector"], pod))
                .map(move |_| name.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_revision_lives_beside_the_default_without_sharing_an_object() {
    let default = render(&[]);
    let canary = render(&CANARY);
    let names = |docs: &[Value]| -> BTreeSet<String> { docs.iter().map(kind_name).collect() };
    let (d, c) = (names(&default), names(&canary));
    let shared: Vec<&String> = d.intersection(&c).collect();
    assert!(shared.is_empty(), "both releases would own {shared:?}");
    assert!(
        of_kind(&canary, "CustomResourceDefinition").is_empty(),
        "the CRDs are the default release's"
    );
    let a = args(&canary);
    for want in [
        "--sidecar-xds-address=rudder-canary.rudder-system.svc:15010",
        "--sidecar-ca-address=rudder-canary.rudder-system.svc:15012",
        "--xds-dns-name=rudder-canary.rudder-system.svc",
        "--xds-dns-name=rudder-canary-webhook.rudder-system.svc",
        "--webhook-name=rudder-sidecar-injector-canary",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} in {a:?}");
    }
    // The webhook the control plane keeps the caBundle of is the one it may patch.
    let role = of_kind(&canary, "ClusterRole")[0];
    assert!(
        role["rules"]
            .to_string()
            .contains("\"rudder-sidecar-injector-canary\""),
        "{role}"
    );
    // The binary takes those arguments.
    let out = Command::new(workspace_bin("xds-server").expect("built"))
        .args(&a)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(2), "usage error: {err}");
    assert!(err.contains("Kubernetes"), "{err}");
}

#[test]
fn a_revision_leaves_the_crds_and_the_node_agent_to_the_default() {
    let err = render_error("rudder-system", &["revision=canary"]);
    assert!(err.contains("set crds.install=false"), "{err}");
    let err = render_error(
        "rudder-system",
        &["revision=canary", "crds.install=false", "cni.enabled=true"],
    );
    assert!(err.contains("cni.enabled must be false"), "{err}");
    let err = render_error(
        "rudder-system",
        &["revision=Canary_1", "crds.install=false"],
    );
    assert!(err.contains("/revision"), "{err}");
}

/// Namespace labels, pod labels, the webhook configurations that would be called.
type Case<'a> = (
    &'a [(&'a str, &'a str)],
    &'a [(&'a str, &'a str)],
    &'a [&'a str],
);

#[test]
fn each_pod_is_injected_by_the_revision_its_labels_pick_or_by_none() {
    let default = render(&[]);
    let canary = render(&CANARY);
    let configs = [
        one(&default, "MutatingWebhookConfiguration"),
        one(&canary, "MutatingWebhookConfiguration"),
    ];
    let (d, c) = ("rudder-sidecar-injector", "rudder-sidecar-injector-canary");
    let none: &[&str] = &[];
    let cases: [Case; 11] = [
        // A pod's own revision wins over its namespace's, and it is injected once.
        (
            &[("rudder.dev/rev", "canary")],
            &[("rudder.dev/rev", "canary")],
            &[c],
        ),
        (
            &[("rudder.dev/rev", "canary")],
            &[("rudder.dev/rev", "other")],
            none,
        ),
        (&[("rudder.dev/inject", "enabled")], &[], &[d]),
        (&[("rudder.dev/rev", "canary")], &[], &[c]),
        // A namespace moved to the canary keeps its old label: the canary wins.
        (
            &[
                ("rudder.dev/inject", "enabled"),
                ("rudder.dev/rev", "canary"),
            ],
            &[],
            &[c],
        ),
        (&[], &[("rudder.dev/inject", "enabled")], &[d]),
        (&[], &[("rudder.dev/rev", "canary")], &[c]),
        (
            &[("rudder.dev/inject", "enabled")],
            &[("rudder.dev/rev", "canary")],
            &[c],
        ),
        (
            &[("rudder.dev/rev", "canary")],
            &[("rudder.dev/inject", "false")],
            none,
        ),
        (
            &[("rudder.dev/inject", "enabled")],
            &[("rudder.dev/inject", "false")],
            none,
        ),
        (&[], &[], none),
    ];
    for (ns, pod, want) in cases {
        let mut ns_labels: BTreeMap<&str, &str> = ns.iter().copied().collect();
        ns_labels.insert("kubernetes.io/metadata.name", "shop");
        let pod_labels: BTreeMap<&str, &str> = pod.iter().copied().collect();
        assert_eq!(
            callers(&configs, &ns_labels, &pod_labels),
            want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "namespace {ns:?}, pod {pod:?}"
        );
    }
}
