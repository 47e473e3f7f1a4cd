//! The app's kubelet probes, moved to the agent's status port. Once inbound traffic needs
//! mesh mTLS the kubelet can no longer reach the app with an HTTP or gRPC probe, and a TCP
//! probe would pass on the sidecar's listener whatever the app does; so each HTTP
//! (`scheme: HTTP`), gRPC and TCP probe becomes an HTTP GET to the agent, which checks the
//! app as the kubelet would have (`crate::agent::app_probe`). HTTPS and exec probes are
//! left alone.

use serde_json::{Map, Value, json};

/// The proxy container's readiness path on the agent's status port: the agent's own
/// readiness and the proxy's admin `/ready`.
pub(crate) const PROXY_READY: &str = "/proxy-ready";
/// The proxy container's preStop path on the agent's status port: drain, then return.
pub(crate) const DRAIN_PATH: &str = "/drain";
/// The header carrying the pod's drain token on [`DRAIN_PATH`].
pub(crate) const DRAIN_HEADER: &str = "x-rudder-drain";

/// The agent's path for one app probe: `/app-health/CONTAINER/KIND`.
pub(crate) fn probe_path(container: &str, kind: &str) -> String {
    format!("/app-health/{container}/{kind}")
}

/// A probe's port: a number, or a container port's name.
fn resolve_port(container: &Value, port: &Value) -> Option<u64> {
    let port = match port {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok().or_else(|| {
            container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == s.as_str())
                .and_then(|p| p["containerPort"].as_u64())
        }),
        _ => None,
    };
    port.filter(|p| (1..=65535).contains(p))
}

/// What the agent runs for `probe`, and the handler field it replaces: `None` for probes
/// left alone (HTTPS, exec, unresolvable ports).
fn agent_probe(container: &Value, probe: &Value) -> Option<(&'static str, Value)> {
    let get = &probe["httpGet"];
    if get.is_object() {
        if get["scheme"].as_str().is_some_and(|s| s != "HTTP") {
            return None;
        }
        let port = resolve_port(container, &get["port"])?;
        // The kubelet sends `/` for an empty path and adds the leading slash.
        let path = match get["path"].as_str().unwrap_or_default() {
            "" => "/".to_string(),
            p if p.starts_with('/') => p.to_string(),
            p => format!("/{p}"),
        };
        return Some((
            "httpGet",
            json!({"port": port, "path": path, "headers": get["httpHeaders"].clone()}),
        ));
    }
    let grpc = &probe["grpc"];
    if grpc.is_object() {
        let port = resolve_port(container, &grpc["port"])?;
        return Some((
            "grpc",
            json!({"kind": "grpc", "port": port, "service": grpc["service"].clone()}),
        ));
    }
    let tcp = &probe["tcpSocket"];
    if tcp.is_object() {
        let port = resolve_port(container, &tcp["port"])?;
        return Some(("tcpSocket", json!({"kind": "tcp", "port": port})));
    }
    None
}

/// The patch ops that move the pod's probes to the agent on `status_port`, and the
/// agent's map (path -> what it checks).
pub(crate) fn rewrite_probes(pod: &Value, status_port: u16) -> (Vec<Value>, Map<String, Value>) {
    let mut ops = Vec::new();
    let mut map = Map::new();
    // The app's containers, and its native sidecars (init containers that keep running,
    // the only ones with probes).
    let lists = ["containers", "initContainers"].map(|list| {
        let all = pod["spec"][list].as_array().cloned().unwrap_or_default();
        (list, all)
    });
    for (list, containers) in &lists {
        for (i, c) in containers.iter().enumerate() {
            if *list == "initContainers" && c["restartPolicy"] != "Always" {
                continue;
            }
            let name = c["name"].as_str().unwrap_or_default();
            for (field, kind) in [
                ("readinessProbe", "readyz"),
                ("livenessProbe", "livez"),
                ("startupProbe", "startupz"),
            ] {
                let Some((handler, mut check)) = agent_probe(c, &c[field]) else {
                    continue;
                };
                // The kubelet's timeout (default 1 s) bounds the agent's check too.
                if let Some(t) = c[field]["timeoutSeconds"].as_u64() {
                    check["timeoutSeconds"] = json!(t);
                }
                let path = probe_path(name, kind);
                map.insert(path.clone(), check);
                let probe = format!("/spec/{list}/{i}/{field}");
                let get = json!({"path": path, "port": status_port, "scheme": "HTTP"});
                if handler == "httpGet" {
                    ops.push(
                        json!({"op": "replace", "path": format!("{probe}/httpGet"), "value": get}),
                    );
                } else {
                    ops.push(json!({"op": "remove", "path": format!("{probe}/{handler}")}));
                    ops.push(
                        json!({"op": "add", "path": format!("{probe}/httpGet"), "value": get}),
                    );
                }
            }
        }
    }
    (ops, map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_grpc_and_tcp_probes_move_to_the_agent_and_https_and_exec_stay() {
        let pod = json!({"spec": {"initContainers": [
            {"name": "setup", "livenessProbe": {"tcpSocket": {"port": 1}}},
            {"name": "log-shipper", "restartPolicy": "Always",
             "readinessProbe": {"tcpSocket": {"port": 9880}, "timeoutSeconds": 3}},
        ], "containers": [{
            "name": "web",
            "ports": [{"name": "grpc", "containerPort": 9090}, {"name": "db", "containerPort": 5432}],
            "readinessProbe": {"grpc": {"port": 9090, "service": "web.v1"}, "periodSeconds": 3},
            "livenessProbe": {"tcpSocket": {"port": "db"}},
            "startupProbe": {"httpGet": {"port": 8080, "path": "healthz"}},
        }, {
            "name": "side",
            "readinessProbe": {"httpGet": {"port": 8443, "scheme": "HTTPS"}},
            "livenessProbe": {"exec": {"command": ["true"]}},
            "startupProbe": {"grpc": {"port": "nope"}},
        }]}});
        let (ops, map) = rewrite_probes(&pod, 15021);
        assert_eq!(
            Value::Object(map),
            json!({
                "/app-health/web/readyz": {"kind": "grpc", "port": 9090, "service": "web.v1"},
                "/app-health/web/livez": {"kind": "tcp", "port": 5432},
                "/app-health/web/startupz": {"port": 8080, "path": "/healthz", "headers": null},
                "/app-health/log-shipper/readyz": {"kind": "tcp", "port": 9880, "timeoutSeconds": 3},
            })
        );
        let get = |p: &str| json!({"path": p, "port": 15021, "scheme": "HTTP"});
        assert_eq!(
            ops,
            vec![
                json!({"op": "remove", "path": "/spec/containers/0/readinessProbe/grpc"}),
                json!({"op": "add", "path": "/spec/containers/0/readinessProbe/httpGet",
                       "value": get("/app-health/web/readyz")}),
                json!({"op": "remove", "path": "/spec/containers/0/livenessProbe/tcpSocket"}),
                json!({"op": "add", "path": "/spec/containers/0/livenessProbe/httpGet",
                       "value": get("/app-health/web/livez")}),
                json!({"op": "replace", "path": "/spec/containers/0/startupProbe/httpGet",
                       "value": get("/app-health/web/startupz")}),
                // A native sidecar's probe moves too; a plain init container has none.
                json!({"op": "remove", "path": "/spec/initContainers/1/readinessProbe/tcpSocket"}),
                json!({"op": "add", "path": "/spec/initContainers/1/readinessProbe/httpGet",
                       "value": get("/app-health/log-shipper/readyz")}),
            ]
        );
    }
}
