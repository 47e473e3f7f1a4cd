//! Manifests for scenarios: small YAML builders, and the demo's rendering of
//! `examples/` with port numbers replaced by ports that are free right now.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::procs::{PodPlacement, free_port};

/// A Service with one port selecting pods labelled `app: NAME`.
pub fn service(
    name: &str,
    port_name: &str,
    port: u16,
    target: u16,
    app_protocol: Option<&str>,
) -> String {
    let proto = app_protocol
        .map(|p| format!("      appProtocol: {p}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  selector:\n    app: {name}\n  ports:\n    - name: {port_name}\n      port: {port}\n      targetPort: {target}\n{proto}"
    )
}

/// A Pod labelled `app: APP` with its IP.
pub fn pod(name: &str, app: &str, ip: IpAddr, service_account: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app: {app}\nspec:\n  serviceAccountName: {service_account}\n  containers:\n    - name: app\nstatus:\n  podIP: {ip}\n"
    )
}

/// An EndpointSlice for `service` with the given ready endpoints.
pub fn slice(name: &str, service: &str, port_name: &str, port: u16, ips: &[IpAddr]) -> String {
    slice_in("default", name, service, port_name, port, ips)
}

/// [`slice()`] in `namespace`.
pub fn slice_in(
    namespace: &str,
    name: &str,
    service: &str,
    port_name: &str,
    port: u16,
    ips: &[IpAddr],
) -> String {
    let mut eps = String::new();
    for ip in ips {
        eps.push_str(&format!(
            "  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n"
        ));
    }
    if ips.is_empty() {
        eps.push_str("  []\n");
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\nports:\n  - name: {port_name}\n    port: {port}\nendpoints:\n{eps}"
    )
}

/// The app address of a pod on one machine: 127.0.0.N -> 127.0.1.N.
pub fn app_ip(pod_ip: IpAddr) -> IpAddr {
    match pod_ip {
        IpAddr::V4(v4) if v4.octets()[0] == 127 => {
            let o = v4.octets();
            IpAddr::V4(Ipv4Addr::new(127, o[1], o[2].wrapping_add(1), o[3]))
        }
        other => other,
    }
}

/// A pod of a rendered example mesh.
#[derive(Clone, Debug)]
pub struct ExamplePod {
    /// Where it runs.
    pub placement: PodPlacement,
    /// The ports its app listens on (after renumbering).
    pub app_ports: Vec<u16>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A service port of a rendered example mesh.
#[derive(Clone, Debug)]
pub struct ExampleService {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The service port clients call.
    pub port: u16,
    /// `appProtocol` or port name.
    pub protocol: String,
    /// The pod selector.
    pub selector: BTreeMap<String, String>,
}

/// What `render_examples` wrote.
#[derive(Clone, Debug, Default)]
pub struct ExampleMesh {
    /// Pods with their placement.
    pub pods: Vec<ExamplePod>,
    /// Service ports.
    pub services: Vec<ExampleService>,
}

fn renumber(v: &mut Value, map: &mut BTreeMap<u64, u16>) -> anyhow::Result<()> {
    if let Some(n) = v.as_u64() {
        let port = match map.get(&n) {
            Some(p) => *p,
            None => {
                let p = free_port()?;
                map.insert(n, p);
                p
            }
        };
        *v = Value::from(port);
    }
    Ok(())
}

/// Copies every manifest in `src` to `dst`, replacing pod-side port numbers (Service
/// `targetPort`, Pod `containerPort`, EndpointSlice `ports[].port`) with free ports,
/// the same number always mapping to the same port.
pub fn render_examples(src: &Path, dst: &Path) -> anyhow::Result<ExampleMesh> {
    let mut files: Vec<_> = std::fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut map = BTreeMap::new();
    let mut mesh = ExampleMesh::default();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let mut docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        for doc in &mut docs {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let labels = |v: &Value| -> BTreeMap<String, String> {
                v.as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            match kind.as_str() {
                "Service" => {
                    let selector = labels(&doc["spec"]["selector"]);
                    if let Some(ports) = doc["spec"]["ports"].as_array_mut() {
                        for p in ports {
                            renumber(&mut p["targetPort"], &mut map)?;
                            mesh.services.push(ExampleService {
                                namespace: ns.clone(),
                                name: name.clone(),
                                port: p["port"]
                                    .as_u64()
                                    .and_then(|n| u16::try_from(n).ok())
                                    .unwrap_or(80),
                                protocol: p["appProtocol"]
                                    .as_str()
                                    .or(p["name"].as_str())
                                    .unwrap_or("http")
                                    .to_string(),
                                selector: selector.clone(),
                            });
                        }
                    }
                }
                "EndpointSlice" => {
                    if let Some(ports) = doc["ports"].as_array_mut() {
                        for p in ports {
                            renumber(&mut p["port"], &mut map)?;
                        }
                    }
                }
                "Pod" => {
                    let pod_labels = labels(&doc["metadata"]["labels"]);
                    let mut app_ports = Vec::new();
                    if let Some(containers) = doc["spec"]["containers"].as_array_mut() {
                        for c in containers {
                            if let Some(ports) = c["ports"].as_array_mut() {
                                for p in ports {
                                    renumber(&mut p["containerPort"], &mut map)?;
                                    if let Some(n) = p["containerPort"].as_u64() {
                                        app_ports.push(u16::try_from(n)?);
                                    }
                                }
                            }
                        }
                    }
                    let ip: IpAddr = doc["status"]["podIP"]
                        .as_str()
                        .context("example pods need status.podIP")?
                        .parse()?;
                    mesh.pods.push(ExamplePod {
                        placement: PodPlacement {
                            namespace: ns,
                            pod: name,
                            service_account: doc["spec"]["serviceAccountName"]
                                .as_str()
                                .unwrap_or("default")
                                .to_string(),
                            ip,
                            app_ip: app_ip(ip),
                        },
                        app_ports,
                        labels: pod_labels,
                    });
                }
                _ => {}
            }
        }
        let out: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        let name = file.file_name().context("file name")?;
        std::fs::write(dst.join(name), out.join("\n---\n"))?;
    }
    Ok(mesh)
}
