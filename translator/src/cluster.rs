//! Clusters: one EDS cluster per service port (shared by every sidecar), and one static
//! inbound cluster per port a pod serves (the hop to the local app).

use std::collections::HashMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};

use crate::model::{MeshService, Protocol, ServicePort};
use crate::protos;
use crate::{Body, Resource, XdsType, names};

/// Connect timeout for every mesh cluster: long enough for a loaded node, short enough
/// that a dead endpoint fails fast.
const CONNECT_TIMEOUT_MS: u64 = 1_000;

fn base(name: String, protocol: Protocol) -> Cluster {
    let mut options = HashMap::new();
    if protocol.is_http2() {
        let (k, v) = protos::http2_upstream();
        options.insert(k, v);
    }
    Cluster {
        name,
        connect_timeout: Some(protos::millis(CONNECT_TIMEOUT_MS)),
        lb_policy: LbPolicy::RoundRobin as i32,
        typed_extension_protocol_options: options,
        ..Default::default()
    }
}

pub(crate) fn outbound(svc: &MeshService, port: &ServicePort) -> Resource {
    let name = names::outbound_cluster(svc, port.port);
    let mut cluster = base(name.clone(), port.protocol);
    cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
    cluster.eds_cluster_config = Some(EdsClusterConfig {
        eds_config: Some(protos::ads()),
        service_name: name.clone(),
    });
    Resource {
        kind: XdsType::Cluster,
        refs: vec![name.clone()],
        name,
        body: Body::Cluster(Box::new(cluster)),
    }
}

pub(crate) fn inbound(port: u16, app: IpAddr, protocol: Protocol) -> Resource {
    let name = names::inbound(port);
    let mut cluster = base(name.clone(), protocol);
    cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
    cluster.load_assignment = Some(ClusterLoadAssignment {
        cluster_name: name.clone(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(protos::socket(app, port)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    Resource {
        kind: XdsType::Cluster,
        name,
        refs: Vec::new(),
        body: Body::Cluster(Box::new(cluster)),
    }
}
