//! ClusterLoadAssignments from EndpointSlices: only ready endpoints (terminating and
//! unready ones are drained), grouped by zone into localities.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use crate::model::{Kind, MeshService, Model, ObjectKey, ServicePort};
use crate::protos;
use crate::{Body, Resource, XdsType, names};

pub(crate) fn load_assignment(model: &Model, svc: &MeshService, port: &ServicePort) -> Resource {
    let name = names::outbound_cluster(svc, port.port);
    // zone -> unique (ip, port); ordered so the output is stable.
    let mut by_zone: BTreeMap<String, BTreeSet<(IpAddr, u16)>> = BTreeMap::new();
    for slice in model.slices_of(svc) {
        // A slice port belongs to the service port with the same name.
        let Some(&(_, target)) = slice.ports.iter().find(|(n, _)| *n == port.name) else {
            continue;
        };
        for ep in slice.endpoints.iter().filter(|e| e.ready && !e.terminating) {
            by_zone
                .entry(ep.zone.clone().unwrap_or_default())
                .or_default()
                .insert((ep.ip, target));
        }
    }
    let endpoints = by_zone
        .into_iter()
        .map(|(zone, addrs)| LocalityLbEndpoints {
            locality: Some(Locality {
                zone,
                ..Default::default()
            }),
            // proxyless gRPC drops localities without a weight.
            load_balancing_weight: Some(UInt32Value {
                value: u32::try_from(addrs.len()).unwrap_or(u32::MAX),
            }),
            lb_endpoints: addrs
                .into_iter()
                .map(|(ip, port)| LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(protos::socket(ip, port)),
                        ..Default::default()
                    })),
                    health_status: HealthStatus::Healthy as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    Resource {
        kind: XdsType::Endpoint,
        refs: Vec::new(),
        sources: std::iter::once(ObjectKey::new(Kind::Service, &svc.namespace, &svc.name))
            .chain(
                model
                    .slices_of(svc)
                    .map(|sl| ObjectKey::new(Kind::EndpointSlice, &sl.namespace, &sl.name)),
            )
            .collect(),
        body: Body::Endpoint(Box::new(ClusterLoadAssignment {
            cluster_name: name.clone(),
            endpoints,
            ..Default::default()
        })),
        name,
    }
}
