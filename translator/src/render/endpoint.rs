//! ClusterLoadAssignments from EndpointSlices (the same for Envoy and proxyless gRPC): only ready endpoints (terminating and
//! unready ones are drained), grouped by zone into localities, endpoints outside the mesh
//! marked for a plain connection. Also the pods of a headless Service, by address.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use xds_types::XdsType;

use crate::model::{Kind, MeshService, Model, ObjectKey, ServicePort, UpstreamTls};
use crate::names;
use crate::output::{Body, Resource};
use crate::render::protos;

pub(crate) fn load_assignment(model: &Model, svc: &MeshService, port: &ServicePort) -> Resource {
    let name = names::outbound_endpoints(svc, port.port);
    // unique (ip, port) -> (zone, outside the mesh): an address listed twice (two slices,
    // even in two zones) is one endpoint, as proxyless gRPC requires ("duplicate
    // endpoint address"); a named zone beats none and the lowest name wins, so the output is stable.
    let mut addrs: BTreeMap<(IpAddr, u16), (String, bool)> = BTreeMap::new();
    let auto = svc.upstream_tls == UpstreamTls::Auto;
    for slice in model.slices_of(svc) {
        // A slice port belongs to the service port with the same name.
        let Some(&(_, target)) = slice.ports.iter().find(|(n, _)| *n == port.name) else {
            continue;
        };
        for ep in slice.endpoints.iter().filter(|e| e.ready && !e.terminating) {
            let outside = auto && !model.endpoint_in_mesh(&slice.namespace, ep);
            let zone = ep.zone.clone().unwrap_or_default();
            let entry = addrs
                .entry((ep.ip, target))
                .or_insert((zone.clone(), outside));
            // Listed twice: plain only if every listing says so.
            entry.1 &= outside;
            // A zone beats none; between zones, the lowest.
            if !zone.is_empty() && (entry.0.is_empty() || zone < entry.0) {
                entry.0 = zone;
            }
        }
    }
    let mut by_zone: BTreeMap<String, BTreeMap<(IpAddr, u16), bool>> = BTreeMap::new();
    for (addr, (zone, outside)) in addrs {
        by_zone.entry(zone).or_default().insert(addr, outside);
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
                .map(|((ip, port), outside)| LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(protos::socket(ip, port)),
                        ..Default::default()
                    })),
                    health_status: HealthStatus::Healthy as i32,
                    // One key only: the encoding of a protobuf map follows HashMap order.
                    metadata: outside.then(|| Metadata {
                        filter_metadata: [(SOCKET_MATCH_FILTER.to_string(), plain_marker())]
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    }),
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

/// One pod of a headless Service as its clients call it directly.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PodAddress {
    /// Its IP.
    pub ip: IpAddr,
    /// Its port (the slice's port for this Service port).
    pub port: u16,
    /// Its DNS label under the Service, if the slice gives one.
    pub hostname: Option<String>,
    /// Reached without mesh mTLS.
    pub outside: bool,
    /// Its pod's (namespace, service account), when the pod is known.
    pub account: Option<(String, String)>,
}

/// The ready pods of a headless Service on `port`, each once, by address.
pub(crate) fn pod_addresses(
    model: &Model,
    svc: &MeshService,
    port: &ServicePort,
) -> Vec<PodAddress> {
    let mut out: BTreeMap<(IpAddr, u16), PodAddress> = BTreeMap::new();
    for slice in model.slices_of(svc) {
        let Some(&(_, target)) = slice.ports.iter().find(|(n, _)| *n == port.name) else {
            continue;
        };
        for ep in slice.endpoints.iter().filter(|e| e.ready && !e.terminating) {
            let outside = match svc.upstream_tls {
                UpstreamTls::Auto => !model.endpoint_in_mesh(&slice.namespace, ep),
                UpstreamTls::Mesh => false,
                UpstreamTls::Plain => true,
            };
            let account = model
                .endpoint_pod(&slice.namespace, ep)
                .map(|p| (p.namespace.clone(), p.service_account.clone()));
            out.entry((ep.ip, target)).or_insert(PodAddress {
                ip: ep.ip,
                port: target,
                hostname: ep.hostname.clone(),
                outside,
                account,
            });
        }
    }
    out.into_values().collect()
}

/// Endpoint metadata filter Envoy matches `transport_socket_matches` against.
pub(crate) const SOCKET_MATCH_FILTER: &str = "envoy.transport_socket_match";
/// The key, and value, that mark an endpoint outside the mesh.
pub(crate) const PLAIN_KEY: &str = "rudder.dev/tls";
pub(crate) const PLAIN_VALUE: &str = "plain";

/// `{PLAIN_KEY: PLAIN_VALUE}`: the endpoint metadata, and the cluster's match, for plain
/// connections.
pub(crate) fn plain_marker() -> envoy_types::pb::google::protobuf::Struct {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    Struct {
        fields: [(
            PLAIN_KEY.to_string(),
            Value {
                kind: Some(Kind::StringValue(PLAIN_VALUE.into())),
            },
        )]
        .into_iter()
        .collect(),
    }
}
