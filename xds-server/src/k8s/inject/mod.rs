//! The sidecar injector's pure core: an AdmissionReview request for a Pod in, an
//! AdmissionReview response with a JSONPatch out. [`webhook`] is the HTTPS shell around
//! it and [`iptables`] the interception rules its init container installs.
//!
//! An injected pod gets, ahead of its own init containers (so their traffic is meshed
//! too):
//! - `rudder-init` (init-container mode): installs the iptables rules (NET_ADMIN, runs
//!   once). In CNI mode there is none: the `rudder-cni` plugin on the node installs the
//!   rules the pod's `rudder.dev/interception` annotation names, `rudder-validate`
//!   (unprivileged) fails the pod if its traffic is not intercepted, and no injected
//!   container needs a capability (Pod Security `restricted` admits the pod);
//! - `rudder-agent`: a native sidecar (`restartPolicy: Always`) that obtains the
//!   workload's credentials with the pod's projected ServiceAccount token, writes the
//!   Envoy bootstrap (the same generator as `xds-server bootstrap`) and keeps both fresh;
//!   its startup probe holds the next containers until they exist;
//! - `rudder-proxy`: Envoy, also a native sidecar, started from that bootstrap;
//! - the shared credential volume (memory) and the projected token (audience `rudder`).
//!
//! Apps need no change. Opt-out (`rudder.dev/inject: "false"`, label or annotation),
//! host-network pods and already injected pods are left as they are.

pub mod iptables;
pub(crate) mod probes;
pub mod webhook;

pub(crate) use probes::rewrite_probes;

use base64::Engine;
use serde_json::{Value, json};

/// Annotation (and label) that opts a pod in (`"true"`/`"enabled"`) or out (`"false"`).
pub(crate) const INJECT_KEY: &str = "rudder.dev/inject";
/// Annotation the injector sets on what it injected.
pub(crate) const STATUS_ANNOTATION: &str = "rudder.dev/status";
/// Label the injector sets on what it injected (what a PodMonitor selects sidecars by).
pub const SIDECAR_LABEL: &str = "rudder.dev/sidecar";
/// The agent's named container port: its status port, with the proxy's stats.
pub const STATUS_PORT_NAME: &str = "rudder-status";
/// Annotation the injector sets (CNI mode): the interception the `rudder-cni` plugin
/// installs, as JSON ([`interception_annotation`]).
pub(crate) const INTERCEPTION_ANNOTATION: &str = "rudder.dev/interception";
/// Names of the injected containers and volumes.
pub(crate) const INIT: &str = "rudder-init";
/// See [`INIT`].
pub(crate) const VALIDATE: &str = "rudder-validate";
/// See [`INIT`].
pub(crate) const AGENT: &str = "rudder-agent";
/// See [`INIT`].
pub(crate) const PROXY: &str = "rudder-proxy";
/// See [`INIT`].
pub(crate) const CREDS_VOLUME: &str = "rudder-creds";
/// See [`INIT`].
pub(crate) const TOKEN_VOLUME: &str = "rudder-token";
/// Where the credential volume is mounted.
pub(crate) const CREDS_DIR: &str = "/var/run/rudder/creds";
/// Where the projected token is mounted.
pub(crate) const TOKEN_DIR: &str = "/var/run/rudder/token";

/// Everything the injection depends on (chart values, via `run` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectConfig {
    /// Envoy's image.
    pub proxy_image: String,
    /// The agent's image (the control plane's).
    pub agent_image: String,
    /// The init container's image (the control plane's binary with iptables).
    pub init_image: String,
    /// The control plane's xDS address, `HOST:PORT`.
    pub xds_address: String,
    /// Its certificate endpoint, `HOST:PORT`.
    pub ca_address: String,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// The trust bundle (PEM) the agent checks the control plane with.
    pub trust_bundle_pem: String,
    /// Delta ADS.
    pub delta: bool,
    /// The proxy's CPU and memory requests and limits.
    pub proxy_resources: Value,
    /// Envoy's drain time, seconds.
    pub drain_seconds: u32,
    /// Interception settings.
    pub interception: iptables::Interception,
    /// Log format of the agent.
    pub log_format: String,
    /// The namespaces the control plane watches (empty: all). A pod elsewhere is not
    /// injected: its sidecar would never be sent config, and the pod would never start.
    pub namespaces: Vec<String>,
    /// Who installs the interception rules.
    pub mode: InterceptionMode,
    /// The MutatingWebhookConfiguration whose caBundle the control plane keeps.
    pub webhook_name: String,
    /// Injected agents relay the proxy's stats on their status port (for a PodMonitor).
    pub proxy_stats: bool,
}

/// Who installs an injected pod's interception rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InterceptionMode {
    /// The injected `rudder-init` container (root, NET_ADMIN and NET_RAW).
    #[default]
    InitContainer,
    /// The `rudder-cni` plugin on the node, from the pod's interception annotation; the
    /// pod holds no privileged container.
    Cni,
}

/// The interception annotation's value (what `rudder-cni` reads back).
pub(crate) fn interception_annotation(i: &iptables::Interception) -> String {
    json!({
        "outboundPort": i.outbound_port,
        "inboundPort": i.inbound_port,
        "proxyUid": i.proxy_uid,
        "agentStatusPort": i.agent_status_port,
        "excludeOutboundPorts": i.exclude_outbound_ports,
        "excludeInboundPorts": i.exclude_inbound_ports,
        "excludeCidrs": i.exclude_cidrs.iter().map(|(ip, len)| format!("{ip}/{len}")).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Why a pod is not injected (for the log and a warning on the response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Opted out by label or annotation.
    OptedOut,
    /// Already carries the injected containers.
    AlreadyInjected,
    /// Host network: interception would capture the node's traffic.
    HostNetwork,
    /// This container of the pod's runs as the proxy's UID, whose traffic interception
    /// lets through: it would bypass the sidecar while the pod looks meshed.
    ProxyUid(String),
    /// The pod's namespace is not one the control plane watches.
    NotWatched(String),
}

/// The first of the pod's containers (init containers included) that runs as `uid`:
/// its own `securityContext.runAsUser`, else the pod's.
pub(crate) fn runs_as_uid(pod: &Value, uid: u32) -> Option<String> {
    let pod_uid = pod["spec"]["securityContext"]["runAsUser"].as_u64();
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod["spec"][*list].as_array().into_iter().flatten())
        .find(|c| {
            c["securityContext"]["runAsUser"]
                .as_u64()
                .or(pod_uid)
                .is_some_and(|u| u == u64::from(uid))
        })
        .map(|c| c["name"].as_str().unwrap_or("?").to_string())
}

fn meta_value<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod["metadata"]["annotations"][key]
        .as_str()
        .or_else(|| pod["metadata"]["labels"][key].as_str())
}

/// Whether `pod` gets the sidecar. The webhook is only called for pods in labelled
/// namespaces or carrying the opt-in label, so only the exclusions are decided here.
/// A pod with a container running as `proxy_uid` is not injected (and told so in a
/// warning) rather than rejected: it stays visibly outside the mesh (no sidecar, no
/// mesh identity, refused by STRICT peers) instead of looking meshed while that
/// container's traffic bypasses the proxy, and a workload that ran before still starts.
pub(crate) fn should_inject(pod: &Value, proxy_uid: u32) -> Result<(), Skip> {
    if matches!(meta_value(pod, INJECT_KEY), Some("false" | "disabled")) {
        return Err(Skip::OptedOut);
    }
    let has = |list: &str, name: &str| {
        pod["spec"][list]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == name))
    };
    if pod["metadata"]["annotations"][STATUS_ANNOTATION].is_string()
        || has("initContainers", PROXY)
        || has("containers", PROXY)
    {
        return Err(Skip::AlreadyInjected);
    }
    if pod["spec"]["hostNetwork"] == true {
        return Err(Skip::HostNetwork);
    }
    if let Some(name) = runs_as_uid(pod, proxy_uid) {
        return Err(Skip::ProxyUid(name));
    }
    Ok(())
}

/// A pod's drain token: 128 random bits, hex.
fn drain_token() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The containers injected ahead of the pod's own init containers, in order.
pub(crate) fn injected_init_containers(
    cfg: &InjectConfig,
    probes: &serde_json::Map<String, Value>,
) -> Vec<Value> {
    let i = &cfg.interception;
    let mut env: Vec<Value> = [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_IP", "status.podIP"),
        ("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ]
    .iter()
    .map(|(name, field)| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}}))
    .collect();
    env.push(json!({"name": "RUDDER_TRUST_DOMAIN", "value": cfg.trust_domain}));
    env.push(json!({"name": "RUDDER_TRUST_BUNDLE_PEM", "value": cfg.trust_bundle_pem}));
    env.push(json!({"name": "RUDDER_LOG_FORMAT", "value": cfg.log_format}));
    // The proxy's preStop hook asks the agent to drain it with this pod's own token (the
    // status port is reachable by every pod).
    let drain = drain_token();
    env.push(json!({"name": "RUDDER_DRAIN_TOKEN", "value": drain}));
    env.push(json!({"name": "RUDDER_DRAIN_SECONDS", "value": cfg.drain_seconds.to_string()}));
    if cfg.proxy_stats {
        env.push(json!({"name": "RUDDER_PROXY_STATS", "value": "true"}));
    }
    if !probes.is_empty() {
        env.push(json!({"name": "RUDDER_APP_PROBES", "value": Value::Object(probes.clone()).to_string()}));
    }
    let mounts = json!([
        {"name": CREDS_VOLUME, "mountPath": CREDS_DIR},
        {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true},
    ]);
    let mut agent_args = vec![
        "agent".to_string(),
        "--cert-dir".into(),
        CREDS_DIR.into(),
        "--ca-address".into(),
        cfg.ca_address.clone(),
        "--token-file".into(),
        format!("{TOKEN_DIR}/token"),
        "--status-address".into(),
        format!("0.0.0.0:{}", i.agent_status_port),
        "--bootstrap-out".into(),
        format!("{CREDS_DIR}/envoy.json"),
        "--xds-address".into(),
        cfg.xds_address.clone(),
        "--outbound-port".into(),
        i.outbound_port.to_string(),
        "--intercepted".into(),
        "--inbound-port".into(),
        i.inbound_port.to_string(),
    ];
    if cfg.delta {
        agent_args.push("--delta".into());
    }
    let probe = json!({"httpGet": {"path": "/ready", "port": i.agent_status_port},
                       "periodSeconds": 1, "failureThreshold": 600});
    let uid = i.proxy_uid;
    let restricted = json!({
        "runAsUser": uid, "runAsGroup": uid, "runAsNonRoot": true,
        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    });
    let init = json!({
        "name": INIT,
        "image": cfg.init_image,
        "args": iptables::init_args(i),
        "securityContext": {
            "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                      "limits": {"cpu": "100m", "memory": "64Mi"}},
    });
    let sidecars = [
        json!({
            "name": AGENT,
            "image": cfg.agent_image,
            "restartPolicy": "Always",
            "args": agent_args,
            "env": env,
            "volumeMounts": mounts,
            "ports": [{"name": STATUS_PORT_NAME, "containerPort": i.agent_status_port}],
            "startupProbe": probe,
            "readinessProbe": {"httpGet": {"path": "/ready", "port": i.agent_status_port}},
            "securityContext": restricted,
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                          "limits": {"cpu": "200m", "memory": "64Mi"}},
        }),
        json!({
            "name": PROXY,
            "image": cfg.proxy_image,
            "restartPolicy": "Always",
            // A draining chain's connections are all told at once (HTTP/1 `connection:
            // close` on the next response): Envoy's gradual default closes them one
            // response at a time at random, and a kept-alive connection to a peer whose
            // listener changed (a policy landing) failed a request now and then.
            "args": ["-c", format!("{CREDS_DIR}/envoy.json"), "--drain-time-s",
                     cfg.drain_seconds.to_string(), "--drain-strategy", "immediate",
                     "--concurrency", "2", "--disable-hot-restart"],
            "volumeMounts": [{"name": CREDS_VOLUME, "mountPath": CREDS_DIR, "readOnly": true}],
            "ports": [{"name": "rudder-outbound", "containerPort": i.outbound_port},
                      {"name": "rudder-inbound", "containerPort": i.inbound_port}],
            "startupProbe": {"tcpSocket": {"port": i.outbound_port},
                             "periodSeconds": 1, "failureThreshold": 600},
            "readinessProbe": {"httpGet": {"path": probes::PROXY_READY, "port": i.agent_status_port},
                               "periodSeconds": 2, "failureThreshold": 3},
            // proxy.drainTime: before the proxy is stopped, the agent drains its listeners
            // gracefully and waits that long (in-flight requests finish, keep-alive
            // clients are told to go elsewhere).
            "lifecycle": {"preStop": {"httpGet": {"path": probes::DRAIN_PATH, "port": i.agent_status_port,
                "httpHeaders": [{"name": probes::DRAIN_HEADER, "value": drain}]}}},
            "securityContext": restricted,
            "resources": cfg.proxy_resources,
        }),
    ];
    match cfg.mode {
        InterceptionMode::InitContainer => std::iter::once(init).chain(sidecars).collect(),
        InterceptionMode::Cni => std::iter::once(validate_container(cfg))
            .chain(sidecars)
            .collect(),
    }
}

/// CNI mode's first container: checks, unprivileged, that the node's plugin installed
/// the rules (its UID is not the proxy's, so its own traffic is intercepted).
fn validate_container(cfg: &InjectConfig) -> Value {
    let uid = cfg.interception.proxy_uid.wrapping_add(1).max(1);
    json!({
        "name": VALIDATE,
        "image": cfg.agent_image,
        "command": ["/usr/local/bin/rudder-cni"],
        "args": ["validate", "--outbound-port", cfg.interception.outbound_port.to_string()],
        "securityContext": {
            "runAsUser": uid, "runAsGroup": uid, "runAsNonRoot": true,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                      "limits": {"cpu": "100m", "memory": "32Mi"}},
    })
}

/// The JSONPatch that injects `pod` (ops in order; paths escaped per RFC 6901).
pub fn patch(pod: &Value, cfg: &InjectConfig) -> Vec<Value> {
    let mut ops = Vec::new();
    let mut annotations = vec![(STATUS_ANNOTATION, "injected".to_string())];
    if cfg.mode == InterceptionMode::Cni {
        // Replaces any value the pod came with: the plugin installs what the injector says.
        annotations.push((
            INTERCEPTION_ANNOTATION,
            interception_annotation(&cfg.interception),
        ));
    }
    if pod["metadata"]["annotations"].is_object() {
        for (key, value) in annotations {
            let path = format!(
                "/metadata/annotations/{}",
                key.replace('~', "~0").replace('/', "~1")
            );
            ops.push(json!({"op": "add", "path": path, "value": value}));
        }
    } else {
        let map: serde_json::Map<String, Value> = annotations
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": map}));
    }
    if pod["metadata"]["labels"].is_object() {
        ops.push(
            json!({"op": "add", "path": "/metadata/labels/rudder.dev~1sidecar",
                        "value": "injected"}),
        );
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/labels",
                        "value": {SIDECAR_LABEL: "injected"}}));
    }
    let volumes = [
        json!({"name": CREDS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}),
        json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": crate::pki::issuer::TOKEN_AUDIENCE,
            "expirationSeconds": 3600, "path": "token"}}]}}),
    ];
    if pod["spec"]["volumes"].is_array() {
        for v in volumes {
            ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": v}));
        }
    } else {
        ops.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes}));
    }
    let (probe_ops, probes) = rewrite_probes(pod, cfg.interception.agent_status_port);
    ops.extend(probe_ops);
    let inits = injected_init_containers(cfg, &probes);
    if pod["spec"]["initContainers"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        // Insert before the pod's own, keeping ours in order.
        for (i, c) in inits.into_iter().enumerate() {
            ops.push(json!({"op": "add", "path": format!("/spec/initContainers/{i}"), "value": c}));
        }
    } else {
        ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": inits}));
    }
    ops
}

/// The webhook's answer to one AdmissionReview (JSON in, JSON out). A review that is not
/// one is answered `allowed: false` with the reason; a pod that is skipped is allowed
/// unchanged, with a warning saying why.
pub fn review(body: &Value, cfg: &InjectConfig) -> Value {
    let api_version = body["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1");
    let request = &body["request"];
    let uid = request["uid"].as_str().unwrap_or_default();
    let respond = |response: Value| json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response});
    if body["kind"] != "AdmissionReview" || uid.is_empty() {
        return respond(json!({"uid": uid, "allowed": false,
            "status": {"code": 400, "message": "not an AdmissionReview request"}}));
    }
    let pod = &request["object"];
    if request["kind"]["kind"] != "Pod" || !pod.is_object() {
        return respond(json!({"uid": uid, "allowed": true,
            "warnings": ["rudder: only Pods are injected"]}));
    }
    let namespace = request["namespace"]
        .as_str()
        .or_else(|| pod["metadata"]["namespace"].as_str())
        .unwrap_or_default();
    let watched = cfg.namespaces.is_empty() || cfg.namespaces.iter().any(|n| n == namespace);
    let decision = match should_inject(pod, cfg.interception.proxy_uid) {
        Ok(()) if !watched => Err(Skip::NotWatched(namespace.to_string())),
        d => d,
    };
    match decision {
        Err(skip) => {
            let why = match skip {
                Skip::OptedOut => "opted out".to_string(),
                Skip::AlreadyInjected => "already injected".into(),
                Skip::HostNetwork => "host network pods are not injected".into(),
                Skip::ProxyUid(c) => format!(
                    "container {c:?} runs as UID {uid}, the proxy's, whose traffic is not intercepted: it would bypass the sidecar; run it as another user",
                    uid = cfg.interception.proxy_uid
                ),
                Skip::NotWatched(ns) => format!(
                    "namespace {ns:?} is not one this control plane watches (watchNamespaces), so its sidecar would never get config; add it to watchNamespaces"
                ),
            };
            respond(json!({"uid": uid, "allowed": true,
                "warnings": [format!("rudder: sidecar not injected: {why}")]}))
        }
        Ok(()) => {
            let ops = Value::Array(patch(pod, cfg));
            let encoded = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
            respond(
                json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                           "patch": encoded}),
            )
        }
    }
}
