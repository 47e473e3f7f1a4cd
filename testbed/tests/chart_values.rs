//! What charts/rudder does with its values before anything reaches a cluster: the
//! schema (values.schema.json) refuses wrong types, unknown enum values, out-of-range
//! numbers and misspelt keys with a message naming the value; the install namespace is
//! checked; the PodDisruptionBudget exists only where it can be met; scheduling values
//! render when set.

mod chart_support;

use chart_support::{kinds, of_kind, one, render, render_error};
use serde_json::{Value, json};

fn pod_spec(docs: &[Value]) -> Value {
    let dep = one(docs, "Deployment");
    serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(dep.clone())
        .expect("a valid Deployment");
    dep["spec"]["template"]["spec"].clone()
}

#[test]
fn wrong_values_fail_to_render_naming_the_value() {
    for (set, want) in [
        (
            "mtlsMode=strictt",
            "at '/mtlsMode': value must be one of 'STRICT', 'PERMISSIVE'",
        ),
        (
            "ca.source=vault",
            "at '/ca/source': value must be one of 'selfSigned', 'secret'",
        ),
        ("logFormat=yaml", "at '/logFormat'"),
        ("replicas=0", "at '/replicas': minimum"),
        (
            "injector.timeoutSeconds=31",
            "at '/injector/timeoutSeconds': maximum",
        ),
        (
            "injector.failurePolicy=Warn",
            "at '/injector/failurePolicy'",
        ),
        (
            "injector.interception.excludeOutboundPorts={70000}",
            "at '/injector/interception/excludeOutboundPorts/0'",
        ),
        (
            "injector.interception.excludeCIDRs={10.0.0.0}",
            "at '/injector/interception/excludeCIDRs/0'",
        ),
        ("ca.certLifetime=1d", "at '/ca/certLifetime'"),
        ("drainTime=5", "at '/drainTime': got number, want string"),
        (
            "crds.install=yes",
            "at '/crds/install': got string, want boolean",
        ),
        (
            "mtlsmode=STRICT",
            "additional properties 'mtlsmode' not allowed",
        ),
        (
            "injector.enable=false",
            "additional properties 'enable' not allowed",
        ),
    ] {
        let err = render_error("rudder-system", &[set]);
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(want),
            "--set {set}: want {want:?} in: {err}"
        );
    }
}

#[test]
fn the_defaults_and_every_documented_value_render() {
    let docs = render(&[]);
    assert!(!docs.is_empty());
    // Lower case modes are what the server's flag takes; both spellings pass.
    for set in [
        "mtlsMode=PERMISSIVE",
        "mtlsMode=strict",
        "ca.certLifetime=1h30m",
        "podDisruptionBudget.minAvailable=50%",
        "injector.interception.excludeCIDRs={169.254.169.254/32,fd00::/8}",
        "cni.enabled=true",
    ] {
        render(&[set]);
    }
}

#[test]
fn another_namespace_is_refused_saying_why() {
    let err = render_error("mesh", &[]);
    assert!(
        err.contains("install the rudder chart into namespace rudder-system, not \"mesh\"")
            && err.contains("spiffe://cluster.local/ns/rudder-system/sa/rudder"),
        "{err}"
    );
    // In rudder-system every namespaced object lands there and every address the
    // control plane hands out names it.
    let docs = render(&[]);
    for d in &docs {
        if let Some(ns) = d["metadata"]["namespace"].as_str() {
            assert_eq!(ns, "rudder-system", "{}", chart_support::kind_name(d));
        }
    }
    let args = pod_spec(&docs)["containers"][0]["args"].to_string();
    assert!(
        args.contains("--sidecar-xds-address=rudder.rudder-system.svc:15010"),
        "{args}"
    );
}

#[test]
fn the_disruption_budget_exists_only_where_it_can_be_met() {
    let pdbs = |sets: &[&str]| -> Vec<Value> {
        of_kind(&render(sets), "PodDisruptionBudget")
            .into_iter()
            .cloned()
            .collect()
    };
    assert!(pdbs(&["replicas=1"]).is_empty(), "one replica: no budget");
    let default = pdbs(&[]);
    assert_eq!(default.len(), 1);
    assert_eq!(default[0]["spec"]["minAvailable"], 1);
    serde_json::from_value::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(default[0].clone())
        .expect("a valid PodDisruptionBudget");
    let pct = pdbs(&["replicas=3", "podDisruptionBudget.minAvailable=50%"]);
    assert_eq!(pct[0]["spec"]["minAvailable"], "50%");
    let err = render_error(
        "rudder-system",
        &["replicas=3", "podDisruptionBudget.minAvailable=3"],
    );
    assert!(
        err.contains("podDisruptionBudget.minAvailable (3) must be below replicas (3)"),
        "{err}"
    );
}

#[test]
fn priority_class_and_topology_spread_render_when_set() {
    let spec = pod_spec(&render(&[]));
    assert!(spec.get("priorityClassName").is_none(), "{spec}");
    assert!(spec.get("topologySpreadConstraints").is_none(), "{spec}");
    let docs = render(&[
        "priorityClassName=system-cluster-critical",
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "topologySpreadConstraints[1].maxSkew=2",
        "topologySpreadConstraints[1].topologyKey=kubernetes.io/hostname",
        "topologySpreadConstraints[1].whenUnsatisfiable=DoNotSchedule",
        "topologySpreadConstraints[1].labelSelector.matchLabels.tier=cp",
    ]);
    let spec = pod_spec(&docs);
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    let pods = one(&docs, "Deployment")["spec"]["selector"].clone();
    assert_eq!(
        spec["topologySpreadConstraints"],
        json!([
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": pods},
            {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"tier": "cp"}}},
        ]),
        "a constraint without labelSelector selects the control plane's pods; {:?}",
        kinds(&docs)
    );
    let err = render_error("rudder-system", &["topologySpreadConstraints[0].maxSkew=1"]);
    assert!(err.contains("at '/topologySpreadConstraints/0'"), "{err}");
}

/// The images: the init container's own (with iptables), pull secrets for a private
/// registry; and the webhook limited to the watched namespaces.
#[test]
fn images_pull_secrets_and_watched_namespaces_render() {
    let args = |docs: &[Value]| -> Vec<String> {
        pod_spec(docs)["containers"][0]["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect()
    };
    let docs = render(&[]);
    let a = args(&docs);
    assert!(
        a.iter()
            .any(|x| x == "--init-image=ghcr.io/rudder-mesh/rudder-init:0.1.0"),
        "{a:?}"
    );
    assert!(pod_spec(&docs).get("imagePullSecrets").is_none());
    let selector_in = |docs: &[Value]| -> Vec<Value> {
        one(docs, "MutatingWebhookConfiguration")["webhooks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                w["namespaceSelector"]["matchExpressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["operator"] == "In")
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect()
    };
    assert!(
        selector_in(&docs).iter().all(Value::is_null),
        "all namespaces by default"
    );
    let docs = render(&[
        "image.repository=registry.example/mesh/rudder",
        "image.initRepository=registry.example/mesh/rudder-init",
        "image.tag=1.2.3",
        "image.pullSecrets[0].name=registry-creds",
        "watchNamespaces={shop,web}",
    ]);
    let a = args(&docs);
    assert!(
        a.iter()
            .any(|x| x == "--init-image=registry.example/mesh/rudder-init:1.2.3"),
        "{a:?}"
    );
    assert!(
        a.iter()
            .any(|x| x == "--agent-image=registry.example/mesh/rudder:1.2.3"),
        "{a:?}"
    );
    assert_eq!(
        pod_spec(&docs)["imagePullSecrets"],
        json!([{"name": "registry-creds"}])
    );
    let want =
        json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop", "web"]});
    assert_eq!(selector_in(&docs), vec![want.clone(), want]);
}

/// With `ca.source=secret` the kubelet mounts the Secret's files owned by root; the
/// init container's script (run here as root, as in the pod, on copies of the mounts)
/// must leave a key the control plane's UID 65532 can read and xds-server accepts as
/// private. Needs root, as the pod's init container does.
#[test]
fn a_supplied_ca_reaches_the_control_plane_readable_and_private() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let docs = render(&[
        "ca.source=secret",
        "ca.secretName=corp-ca",
        "ca.caBundle=Y29ycC1yb290",
    ]);
    let spec = pod_spec(&docs);
    let init = &spec["initContainers"][0];
    assert_eq!(
        init["securityContext"]["capabilities"],
        json!({"drop": ["ALL"], "add": ["CHOWN"]})
    );
    let secret_volume = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"] == "corp-ca")
        .expect("the Secret's volume");
    assert_eq!(secret_volume["secret"]["defaultMode"], 0o400);
    let args = spec["containers"][0]["args"].to_string();
    assert!(args.contains("--ca-key=/etc/rudder/ca/tls.key"), "{args}");
    let mounts = spec["containers"][0]["volumeMounts"].to_string();
    assert!(
        mounts.contains("/etc/rudder/ca\"") && !mounts.contains("ca-secret"),
        "{mounts}"
    );

    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs the init script as root, as the pod does"
    );
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (mount, copy) = (work.path().join("ca-secret"), work.path().join("ca"));
    let made = work.path().join("made");
    let xds_server = testbed::procs::workspace_bin("xds-server").expect("built");
    let out = std::process::Command::new(&xds_server)
        .args(["ca", "init", "--ca-dir"])
        .arg(&made)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(&mount).expect("mkdir");
    std::fs::create_dir_all(&copy).expect("mkdir");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    for (from, to) in [("ca.crt", "tls.crt"), ("ca.key", "tls.key")] {
        std::fs::copy(made.join(from), mount.join(to)).expect("copy");
        std::fs::set_permissions(mount.join(to), std::fs::Permissions::from_mode(0o400))
            .expect("chmod");
    }
    let script = init["args"][0]
        .as_str()
        .expect("script")
        .replace("/etc/rudder/ca-secret", mount.to_str().expect("utf-8"))
        .replace("/etc/rudder/ca/", &format!("{}/", copy.display()));
    let out = std::process::Command::new("/bin/sh")
        .args(["-ec", &script])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::metadata(copy.join("tls.key")).expect("the copied key");
    assert_eq!((key.uid(), key.mode() & 0o777), (65532, 0o400));
    // The control plane's UID loads the copy as its CA.
    let creds = work.path().join("creds");
    std::fs::create_dir_all(&creds).expect("mkdir");
    std::os::unix::fs::chown(&creds, Some(65532), Some(65532)).expect("chown");
    let out = std::process::Command::new(&xds_server)
        .arg("credentials")
        .arg(format!("--ca-cert={}/tls.crt", copy.display()))
        .arg(format!("--ca-key={}/tls.key", copy.display()))
        .arg(format!("--cert-dir={}/out", creds.display()))
        .uid(65532)
        .gid(65532)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "UID 65532 could not use the copied CA: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CNI mode: the node agent's DaemonSet with the host's CNI directories, a ClusterRole
/// that may only read pods, and the injector told to leave the privileged init container
/// out.
#[test]
fn cni_mode_renders_the_node_agent_and_tells_the_injector() {
    let docs = render(&[]);
    assert!(of_kind(&docs, "DaemonSet").is_empty(), "off by default");
    let docs = render(&[
        "cni.enabled=true",
        "cni.binDir=/var/lib/cni/bin",
        "nodeSelector.role=infra",
    ]);
    let ds = one(&docs, "DaemonSet");
    let typed: k8s_openapi::api::apps::v1::DaemonSet =
        serde_json::from_value(ds.clone()).expect("a valid DaemonSet");
    let spec = typed.spec.template.spec.expect("pod spec");
    assert_eq!(spec.host_network, Some(true));
    assert!(
        spec.node_selector.is_none(),
        "every node, not the control plane's nodes"
    );
    let paths: Vec<String> = spec
        .volumes
        .into_iter()
        .flatten()
        .filter_map(|v| v.host_path.map(|h| h.path))
        .collect();
    assert_eq!(paths, ["/var/lib/cni/bin", "/etc/cni/net.d"]);
    let role = of_kind(&docs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "rudder-cni")
        .expect("the CNI agent's role");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    );
    let args = pod_spec(&docs)["containers"][0]["args"].clone();
    assert!(
        args.as_array()
            .is_some_and(|a| a.iter().any(|x| x == "--sidecar-cni")),
        "{args}"
    );
    let err = render_error("rudder-system", &["cni.binDir=opt/cni/bin"]);
    assert!(err.contains("/cni/binDir"), "{err}");
}
