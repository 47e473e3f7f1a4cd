//! Injector golden tests: real Pod specs in `tests/inject/*.yaml` go through the
//! injector as AdmissionReviews; the returned JSONPatch is applied to the Pod and the
//! result compared with `tests/inject/*.golden.yaml` (`UPDATE_GOLDEN=1` rewrites them;
//! review the diff). Injecting the result again changes nothing, every rendered Pod
//! deserializes as a k8s-openapi Pod, and skipped pods say why.
#![allow(clippy::disallowed_methods, reason = "the golden update switch")]

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};
use xds_server::k8s::inject::{InjectConfig, InterceptionMode, iptables::Interception, review};

fn config() -> InjectConfig {
    InjectConfig {
        proxy_image: "envoyproxy/envoy:v1.40.0".into(),
        agent_image: "ghcr.io/rudder-mesh/rudder:0.1.0".into(),
        init_image: "ghcr.io/rudder-mesh/rudder-init:0.1.0".into(),
        xds_address: "rudder.rudder-system.svc:15010".into(),
        ca_address: "rudder.rudder-system.svc:15012".into(),
        trust_domain: "cluster.local".into(),
        trust_bundle_pem: "-----BEGIN CERTIFICATE-----\nTESTBUNDLE\n-----END CERTIFICATE-----\n"
            .into(),
        delta: true,
        proxy_resources: json!({"requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"cpu": "1", "memory": "256Mi"}}),
        drain_seconds: 5,
        interception: Interception {
            exclude_outbound_ports: vec![5432],
            ..Default::default()
        },
        log_format: "json".into(),
        namespaces: Vec::new(),
        webhook_name: "rudder-sidecar-injector".into(),
        proxy_stats: false,
        mode: InterceptionMode::InitContainer,
    }
}

fn admission(pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "object": pod,
        }
    })
}

/// The pod after the injector's answer: (pod, warning).
fn inject(pod: &Value) -> (Value, Option<String>) {
    inject_with(pod, &config())
}

/// [`inject`] with `cfg`.
fn inject_with(pod: &Value, cfg: &InjectConfig) -> (Value, Option<String>) {
    let out = review(&admission(pod), cfg);
    let resp = &out["response"];
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(resp["allowed"], true, "{out}");
    let warning = resp["warnings"][0].as_str().map(String::from);
    let Some(patch) = resp["patch"].as_str() else {
        assert!(warning.is_some(), "no patch and no reason: {out}");
        return (pod.clone(), warning);
    };
    assert_eq!(resp["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("base64");
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSONPatch");
    let mut doc = pod.clone();
    json_patch::patch(&mut doc, &ops).expect("the patch applies to the pod");
    (doc, warning)
}

/// The names of a pod's init containers, in order.
fn init_names(pod: &Value) -> Vec<&str> {
    pod["spec"]["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// The injected agent's drain token.
fn drain_token(pod: &Value) -> String {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["env"].as_array().into_iter().flatten())
        .find(|e| e["name"] == "RUDDER_DRAIN_TOKEN")
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && !p.to_string_lossy().ends_with(".golden.yaml")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn injected_pods_match_their_goldens() {
    let mut failures = Vec::new();
    for input in cases() {
        let pod: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&input).expect("read")).expect("yaml");
        let (out, warning) = inject(&pod);
        // What the API server would store must still be a Pod.
        let _: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(out.clone()).expect("the result is a valid Pod");
        let mut text = String::new();
        if let Some(w) = &warning {
            text.push_str(&format!("# {w}\n"));
        }
        text.push_str(&serde_saphyr::to_string(&out).expect("yaml"));
        // The drain token is random per pod: the agent's and the preStop hook's are the
        // same; the golden says where it goes.
        let token = drain_token(&out);
        let text = if warning.is_some() {
            text // Not injected.
        } else {
            assert!(
                token.len() == 32 && token.chars().all(|c| c.is_ascii_hexdigit()),
                "{}: {token:?}",
                input.display()
            );
            assert_eq!(
                text.matches(token.as_str()).count(),
                2,
                "{}",
                input.display()
            );
            text.replace(token.as_str(), "DRAIN-TOKEN")
        };
        let golden = input.with_extension("golden.yaml");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &text).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != text {
            failures.push(format!(
                "{}: differs from {} (UPDATE_GOLDEN=1 rewrites it; review the diff)",
                input.display(),
                golden.display()
            ));
        }
        // Idempotent: the injected pod is left as it is.
        let (again, w) = inject(&out);
        assert_eq!(again, out, "{}", input.display());
        assert!(w.is_some(), "{}", input.display());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn what_is_skipped_says_why_and_what_is_injected_gets_everything() {
    let load = |f: &str| -> Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/inject")
            .join(f);
        serde_saphyr::from_str(&std::fs::read_to_string(p).expect("read")).expect("yaml")
    };
    for (file, why) in [
        ("opted-out.yaml", "opted out"),
        ("already-injected.yaml", "already injected"),
        ("host-network.yaml", "host network"),
        // An app container as the proxy's UID would bypass interception.
        ("proxy-uid.yaml", "container \"exfil\" runs as UID 1337"),
        // The pod's runAsUser counts for a container without its own.
        (
            "proxy-uid-pod-level.yaml",
            "container \"sidekick\" runs as UID 1337",
        ),
    ] {
        let (out, w) = inject(&load(file));
        assert_eq!(out, load(file), "{file} is unchanged");
        assert!(
            w.as_deref().is_some_and(|w| w.contains(why)),
            "{file}: {w:?}"
        );
    }
    // A pod-level 1337 that every container overrides is injected.
    let mut overridden = load("proxy-uid-pod-level.yaml");
    overridden["spec"]["containers"][1]["securityContext"] = json!({"runAsUser": 1000});
    let (_, w) = inject(&overridden);
    assert!(w.is_none(), "{w:?}");
    let (pod, w) = inject(&load("user-init-container.yaml"));
    assert!(w.is_none());
    let inits = init_names(&pod);
    // Ours first, so the user's init container is meshed too.
    assert_eq!(
        inits,
        ["rudder-init", "rudder-agent", "rudder-proxy", "migrate"]
    );
    let agent = &pod["spec"]["initContainers"][1];
    assert_eq!(agent["restartPolicy"], "Always");
    assert_eq!(agent["securityContext"]["runAsUser"], 1337);
    let args: Vec<&str> = agent["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--token-file", "/var/run/rudder/token/token"])
    );
    let token = pod["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "rudder-token")
        .expect("token volume");
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "rudder"
    );
    // An HTTP probe on a named port moves to the agent, which forwards it on loopback:
    // the kubelet's plain-text probe would not pass a STRICT sidecar.
    let (pod, _) = inject(&load("named-ports.yaml"));
    let probe = &pod["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    assert_eq!(probe["port"], 15021);
    assert_eq!(probe["path"], "/app-health/api/readyz");
    let env = pod["spec"]["initContainers"][1]["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "RUDDER_APP_PROBES")
        .expect("probe map");
    let map = xds_server::agent::probe_port::parse_app_probes(env["value"].as_str().expect("json"))
        .expect("the agent reads it");
    let moved = &map["/app-health/api/readyz"];
    assert_eq!((moved.port, moved.path.as_str()), (8080, "/healthz"));
    // The init container installs exactly the rules `xds-server iptables` prints for
    // these settings.
    let init_args = pod["spec"]["initContainers"][0]["args"].clone();
    assert_eq!(init_args[0], "iptables");
    assert!(
        init_args
            .to_string()
            .contains("\"--exclude-outbound-port\",\"5432\"")
    );
}

#[test]
fn a_request_that_is_not_an_admission_review_is_refused() {
    let out = review(&json!({"kind": "Pod"}), &config());
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(out["response"]["status"]["code"], 400);
}

#[test]
fn pods_outside_the_watched_namespaces_are_not_injected_and_told_why() {
    let cfg = InjectConfig {
        namespaces: vec!["shop".into()],
        ..config()
    };
    let pod = |ns: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "namespace": ns},
               "spec": {"containers": [{"name": "app", "image": "app"}]}})
    };
    let out = review(&admission(&pod("default")), &cfg);
    assert!(out["response"]["patch"].is_null(), "{out}");
    let warning = out["response"]["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("\"default\" is not one this control plane watches"),
        "{warning}"
    );
    let out = review(&admission(&pod("shop")), &cfg);
    assert!(out["response"]["patch"].is_string(), "{out}");
    // Without a list every namespace is watched.
    let out = review(&admission(&pod("default")), &config());
    assert!(out["response"]["patch"].is_string(), "{out}");
}

/// CNI mode: the pod holds no privileged container at all (Pod Security `restricted`
/// admits it); the interception it needs is in its annotation for the node's plugin.
#[test]
fn in_cni_mode_no_container_is_privileged_and_the_annotation_says_what_to_install() {
    let cfg = InjectConfig {
        mode: InterceptionMode::Cni,
        interception: Interception {
            exclude_outbound_ports: vec![5432],
            exclude_inbound_ports: vec![9090],
            exclude_cidrs: vec![("169.254.169.254".parse().expect("ip"), 32)],
            ..Default::default()
        },
        ..config()
    };
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject/user-init-container.yaml");
    let mut pod: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(p).expect("read")).expect("yaml");
    // A value the pod came with does not survive: the plugin installs what the
    // injector says.
    pod["metadata"]["annotations"] = json!({"rudder.dev/interception": "{}"});
    let (out, w) = inject_with(&pod, &cfg);
    assert!(w.is_none(), "{w:?}");
    let _: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(out.clone()).expect("the result is a valid Pod");
    let names = init_names(&out);
    assert_eq!(
        names,
        ["rudder-validate", "rudder-agent", "rudder-proxy", "migrate"]
    );
    // The check that the node's plugin installed the rules runs first, as a UID whose
    // traffic is intercepted.
    let validate = &out["spec"]["initContainers"][0];
    assert_eq!(
        validate["args"],
        json!(["validate", "--outbound-port", "15001"])
    );
    assert_eq!(validate["securityContext"]["runAsUser"], 1338);
    for list in ["initContainers", "containers"] {
        for c in out["spec"][list].as_array().into_iter().flatten() {
            let sc = &c["securityContext"];
            let name = &c["name"];
            assert!(
                sc["capabilities"]["add"].is_null(),
                "{name} adds capabilities"
            );
            assert_ne!(sc["runAsUser"], 0, "{name} runs as root");
            assert_ne!(sc["privileged"], true, "{name} is privileged");
        }
    }
    // What Pod Security `restricted` asks of each container, for those injected.
    for c in out["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if c["name"] == "migrate" {
            continue;
        }
        let sc = &c["securityContext"];
        let name = &c["name"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
    }
    let annotations = &out["metadata"]["annotations"];
    assert_eq!(annotations["rudder.dev/status"], "injected");
    let asked: Value = serde_json::from_str(
        annotations["rudder.dev/interception"]
            .as_str()
            .expect("the interception annotation"),
    )
    .expect("JSON");
    assert_eq!(
        asked,
        json!({"outboundPort": 15001, "inboundPort": 15006, "proxyUid": 1337,
               "agentStatusPort": 15021, "excludeOutboundPorts": [5432],
               "excludeInboundPorts": [9090], "excludeCidrs": ["169.254.169.254/32"]})
    );
    // A pod without annotations gets both in one map.
    pod["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    let (out, _) = inject_with(&pod, &cfg);
    assert_eq!(
        out["metadata"]["annotations"]["rudder.dev/interception"],
        annotations["rudder.dev/interception"]
    );
    // Idempotent, as in init-container mode.
    let (again, w) = inject_with(&out, &cfg);
    assert_eq!(again, out);
    assert!(w.is_some());
}
