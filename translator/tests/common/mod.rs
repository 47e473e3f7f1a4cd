//! Helpers the translator's integration tests share: manifests of a Service and its
//! EndpointSlice, and applying YAML to a model.

use std::collections::BTreeSet;

use translator::model::{Model, ObjectKey, parse_manifest};

/// A Service `ns/name` with one HTTP port (80 -> 8080).
pub(crate) fn svc_yaml(ns: &str, name: &str, extra_meta: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}{extra_meta}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

/// Its EndpointSlice with `ips` ready.
pub(crate) fn slice_yaml(ns: &str, name: &str, ips: &[&str]) -> String {
    let eps: Vec<String> = ips
        .iter()
        .map(|ip| format!("{{addresses: [\"{ip}\"]}}"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
        eps.join(", ")
    )
}

/// Applies every object of `yaml`; returns their keys.
pub(crate) fn apply(model: &mut Model, yaml: &str) -> BTreeSet<ObjectKey> {
    let mut keys = BTreeSet::new();
    for o in parse_manifest(yaml).expect("valid").objects {
        keys.insert(o.key());
        model.apply(&o).expect("apply");
    }
    keys
}
