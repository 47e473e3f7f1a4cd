//! [`PodObject`]: what the model reads of a `v1/Pod`, the form both sources hand it in.
//!
//! A k8s-openapi `Pod` holds every field of its spec and of each container inline: one
//! with a single container is 4.8 KB before any of its strings. The manifest source keeps
//! what it parsed (to tell a real change from a rewrite), so at 20,000 pods those structs
//! alone were about 200 MB. This type keeps only what [`super::convert`] reads; a field
//! the model starts to read is added here, once, and both sources carry it (the
//! Kubernetes watch converts with [`From`], the manifest parser deserializes it directly).
//! Unknown and unread fields are ignored, as the API server has validated them already.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A `v1/Pod`, as much of it as the model reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodObject {
    /// The Pod's metadata: name, namespace, labels and annotations.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the model reads of `spec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodObjectSpec>,
    /// What the model reads of `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodObjectStatus>,
}

/// `spec` of a [`PodObject`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodObjectSpec {
    /// `spec.serviceAccountName`: the workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// `spec.hostNetwork`: a pod on the node's network is never in the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    /// `spec.containers`, their ports only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerObject>>,
}

/// One of `spec.containers`: its ports.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerObject {
    /// `ports`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPortObject>>,
}

/// One of a container's `ports`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPortObject {
    /// `name`, which a Service's named `targetPort` refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `containerPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i32>,
}

/// `status` of a [`PodObject`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodObjectStatus {
    /// `status.podIP`.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// `status.phase`: a finished pod serves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl From<Pod> for PodObject {
    fn from(pod: Pod) -> Self {
        PodObject {
            metadata: pod.metadata,
            spec: pod.spec.map(|s| PodObjectSpec {
                service_account_name: s.service_account_name,
                host_network: s.host_network,
                containers: Some(
                    s.containers
                        .into_iter()
                        .map(|c| ContainerObject {
                            ports: c.ports.map(|ps| {
                                ps.into_iter()
                                    .map(|p| ContainerPortObject {
                                        name: p.name,
                                        container_port: Some(p.container_port),
                                    })
                                    .collect()
                            }),
                        })
                        .collect(),
                ),
            }),
            status: pod.status.map(|s| PodObjectStatus {
                pod_ip: s.pod_ip,
                phase: s.phase,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_pod() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop", "labels": {"app": "web"},
                         "annotations": {"rudder.dev/inject": "true"}},
            "spec": {"serviceAccountName": "sa", "hostNetwork": true, "volumes": [{"name": "v"}],
                     "containers": [{"name": "app", "image": "x", "env": [{"name": "A", "value": "B"}],
                                     "ports": [{"name": "http", "containerPort": 8080, "hostPort": 80}]},
                                    {"name": "side"}]},
            "status": {"podIP": "10.0.0.1", "phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        })
    }

    fn read_fields() -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "p", "namespace": "shop", "labels": {"app": "web"},
                         "annotations": {"rudder.dev/inject": "true"}},
            "spec": {"serviceAccountName": "sa", "hostNetwork": true,
                     "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}, {}]},
            "status": {"podIP": "10.0.0.1", "phase": "Running"}
        })
    }

    #[test]
    fn parsed_and_converted_pods_keep_the_same_fields() {
        let parsed: PodObject = serde_json::from_value(full_pod()).expect("parse");
        let k8s: Pod = serde_json::from_value(full_pod()).expect("k8s pod");
        let converted = PodObject::from(k8s);
        assert_eq!(serde_json::to_value(&parsed).expect("json"), read_fields());
        assert_eq!(converted, parsed);
    }
}
