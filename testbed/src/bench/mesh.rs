//! The benchmark's mesh: S services in one namespace, each with one HTTP port and an
//! EndpointSlice of E endpoints, and one pod per simulated proxy (selected by one of the
//! services, so each proxy has an inbound listener of its own).

use std::fmt::Write as _;
use std::path::Path;

/// The namespace everything is in.
pub const NAMESPACE: &str = "bench";

/// Name of service `i`.
pub fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

/// The cluster name of service `i`.
pub fn cluster_name(i: usize) -> String {
    format!("outbound|80||svc-{i}.{NAMESPACE}.svc.cluster.local")
}

/// The endpoints (EDS) name of service `i`: its cluster's service name.
pub fn eds_name(i: usize) -> String {
    xds_types::names::outbound_endpoints(&service_name(i), NAMESPACE, 80)
}

/// The virtual host of service `i`'s port 80.
pub fn vhost_name(i: usize) -> String {
    format!("svc-{i}.{NAMESPACE}.svc.cluster.local:80")
}

/// Endpoint `j` of service `i` at generation `g` (a generation changes the address).
pub fn endpoint_ip(i: usize, j: usize, g: usize) -> String {
    let n = i * 131 + j * 7 + g * 1_000_003;
    format!(
        "10.{}.{}.{}",
        (n >> 16) % 250 + 1,
        (n >> 8) % 256,
        n % 250 + 1
    )
}

/// The EndpointSlice of service `i`, its endpoints at generations `gens[j]`.
pub fn slice(i: usize, endpoints: usize, gen_of: impl Fn(usize) -> usize) -> String {
    let mut eps = String::new();
    for j in 0..endpoints {
        let _ = write!(
            eps,
            "{{addresses: [\"{}\"]}}, ",
            endpoint_ip(i, j, gen_of(j))
        );
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-x, namespace: {NAMESPACE}, labels: {{kubernetes.io/service-name: svc-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
        eps.trim_end_matches(", ")
    )
}

/// Service `i`.
pub fn service(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {NAMESPACE}}}\nspec:\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

/// The pod of proxy `p`, selected by service `p % services`.
pub fn pod(p: usize, services: usize) -> String {
    let ip = format!("10.250.{}.{}", p / 250, p % 250 + 1);
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: proxy-{p}, namespace: {NAMESPACE}, labels: {{app: svc-{}}}}}\nspec:\n  serviceAccountName: bench\n  containers: [{{name: app, ports: [{{name: http, containerPort: 8080}}]}}]\nstatus: {{podIP: \"{ip}\"}}\n",
        p % services
    )
}

/// A TrafficSplit of service 0 over services 1 and 2 (a canary), its weights set by
/// `generation`: each generation is another canary step.
pub fn split(generation: usize) -> String {
    let canary = 10 + (generation % 9) * 10;
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: canary, namespace: {NAMESPACE}}}\nspec:\n  service: svc-0\n  backends:\n  - {{service: svc-1, weight: {}}}\n  - {{service: svc-2, weight: {canary}}}\n",
        100 - canary
    )
}

/// Writes the whole mesh into `dir`: one file per kind, slices one file per service
/// (so that a change rewrites one small file), and with three services or more the
/// canary split of [`split`].
pub fn write(dir: &Path, services: usize, endpoints: usize, proxies: usize) -> anyhow::Result<()> {
    let mut svcs = String::new();
    for i in 0..services {
        svcs.push_str(&service(i));
        svcs.push_str("---\n");
    }
    std::fs::write(dir.join("services.yaml"), svcs)?;
    for i in 0..services {
        std::fs::write(
            dir.join(format!("slice-{i}.yaml")),
            slice(i, endpoints, |_| 0),
        )?;
    }
    let mut pods = String::new();
    for p in 0..proxies {
        pods.push_str(&pod(p, services));
        pods.push_str("---\n");
    }
    std::fs::write(dir.join("pods.yaml"), pods)?;
    if services >= 3 {
        std::fs::write(dir.join("split.yaml"), split(0))?;
    }
    Ok(())
}

/// Replaces a file the way editors and ConfigMap updates do: write, then rename.
pub fn replace(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, dir.join(name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench subscribes and watches by these names: they are the translator's.
    #[test]
    fn the_cluster_and_eds_names_are_the_translators() {
        let text = format!("{}---\n{}", service(3), slice(3, 2, |_| 0));
        let mut model = translator::model::Model::new();
        for o in &translator::model::parse_manifest(&text)
            .expect("parses")
            .objects
        {
            model.apply(o).expect("valid");
        }
        let mesh = translator::MeshConfig::default();
        let out = translator::translate_mesh(&model, &mesh, &Default::default());
        let cluster = out
            .resources
            .iter()
            .find(|r| r.name == cluster_name(3))
            .expect("the cluster");
        assert_eq!(cluster.refs, [eds_name(3)]);
        assert!(out.resources.iter().any(|r| r.name == eds_name(3)));
    }
}
