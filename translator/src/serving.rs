//! Facts about the model both emitters read: the ports a proxy's pod serves, and the
//! SPIFFE identities of the pods behind a Service.

use std::collections::BTreeMap;

use crate::identity::ProxyIdentity;
use crate::mesh::MeshConfig;
use crate::model::{Kind, MeshPod, MeshService, Model, ObjectKey, Protocol, TargetPort};
use crate::output::Diagnostic;

/// The SPIFFE IDs of the pods behind a Service (by its selector), sorted.
pub(crate) fn identities(model: &Model, mesh: &MeshConfig, svc: &MeshService) -> Vec<String> {
    let mut ids: Vec<String> = model
        .pods_selected_by(svc)
        .map(|p| {
            format!(
                "spiffe://{}/ns/{}/sa/{}",
                mesh.trust_domain, p.namespace, p.service_account
            )
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The ports a proxy's pod serves (target ports of the Services selecting it), each with
/// the protocol of the first Service port that uses it and the objects behind it.
pub(crate) fn served_ports(
    model: &Model,
    proxy: &ProxyIdentity,
    pod: &MeshPod,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<u16, (Protocol, Vec<ObjectKey>)> {
    let pod_obj = format!("Pod {}/{}", proxy.namespace, proxy.pod);
    // target port -> protocol of the first service port that uses it.
    let pod_key = ObjectKey::new(Kind::Pod, &proxy.namespace, &proxy.pod);
    let mut ports: BTreeMap<u16, (Protocol, Vec<ObjectKey>)> = BTreeMap::new();
    for svc in model.services_selecting(pod) {
        for (i, sp) in svc.ports.iter().enumerate() {
            let target = match &sp.target {
                TargetPort::Number(n) => *n,
                TargetPort::Named(n) => match pod.container_ports.get(n) {
                    Some(p) => *p,
                    None => {
                        diagnostics.push(Diagnostic {
                            object: format!("Service {}/{}", svc.namespace, svc.name),
                            field: format!("spec.ports[{i}].targetPort"),
                            message: format!("{pod_obj} has no container port named {n:?}"),
                        });
                        continue;
                    }
                },
            };
            if target == proxy.outbound_port {
                diagnostics.push(Diagnostic {
                    object: format!("Service {}/{}", svc.namespace, svc.name),
                    field: format!("spec.ports[{i}].targetPort"),
                    message: format!("port {target} is the sidecar's outbound port on {pod_obj}"),
                });
                continue;
            }
            ports
                .entry(target)
                .or_insert((sp.protocol, vec![pod_key.clone()]))
                .1
                .push(ObjectKey::new(Kind::Service, &svc.namespace, &svc.name));
        }
    }
    ports
}
