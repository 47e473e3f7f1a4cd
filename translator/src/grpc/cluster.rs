//! gRPC Clusters: EDS over ADS, round robin, mesh mTLS through the bootstrap's
//! certificate provider checking the backends' SPIFFE IDs; and the void cluster of a
//! Service port's route, where a share of calls that must fail goes.

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use xds_types::XdsType;

use crate::grpc::tls::{common, matcher};
use crate::mesh::MeshConfig;
use crate::model::{Kind, MeshService, Model, ObjectKey, ServicePort, UpstreamTls};
use crate::names;
use crate::output::{Body, Resource};
use crate::render::protos;
use crate::render::route::NO_BACKEND_CLUSTER;
use crate::serving::identities;

/// Whether gRPC clients are offered this Service port: HTTP ports of Services with
/// endpoints (not ExternalName).
pub(crate) fn offered(svc: &MeshService, port: &ServicePort) -> bool {
    svc.http_with_endpoints(port)
}

/// The gRPC Cluster of one Service port.
pub(crate) fn cluster(
    model: &Model,
    mesh: &MeshConfig,
    svc: &MeshService,
    port: &ServicePort,
) -> Resource {
    let name = names::outbound_cluster(svc, port.port);
    let endpoints = names::outbound_endpoints(svc, port.port);
    let mut cluster = Cluster {
        name: name.clone(),
        lb_policy: LbPolicy::RoundRobin as i32,
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(protos::ads()),
            service_name: endpoints.clone(),
        }),
        ..Default::default()
    };
    // gRPC has no per-endpoint socket choice: mTLS unless the Service is forced plain.
    if svc.upstream_tls != UpstreamTls::Plain {
        let ids = identities(model, mesh, svc);
        let sans = if ids.is_empty() {
            vec![matcher(MatchPattern::Prefix(format!(
                "spiffe://{}/",
                mesh.trust_domain
            )))]
        } else {
            ids.into_iter()
                .map(|id| matcher(MatchPattern::Exact(id)))
                .collect()
        };
        cluster.transport_socket = Some(protos::tls_socket(protos::any(&UpstreamTlsContext {
            common_tls_context: Some(common(sans)),
            ..Default::default()
        })));
    }
    Resource {
        kind: XdsType::Cluster,
        refs: vec![endpoints],
        sources: vec![ObjectKey::new(Kind::Service, &svc.namespace, &svc.name)],
        name,
        body: Body::Cluster(Box::new(cluster)),
    }
}

/// The void cluster of a Service port's gRPC route (`FQDN:PORT`): an EDS cluster without
/// endpoints, so a share of calls that must fail (a Gateway API backend that does not
/// resolve) fails with UNAVAILABLE at once. A cluster name that never exists would do
/// the same only after a client's 15-second does-not-exist timer, holding back the
/// client's whole channel configuration until then.
pub(crate) fn void_name(route: &str) -> String {
    format!("{}|{route}", NO_BACKEND_CLUSTER)
}

/// The void cluster `name` and its empty ClusterLoadAssignment (see [`void_name`]).
pub(crate) fn void_resources(name: &str, source: ObjectKey) -> [Resource; 2] {
    let cluster = Cluster {
        name: name.to_string(),
        lb_policy: LbPolicy::RoundRobin as i32,
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(protos::ads()),
            service_name: name.to_string(),
        }),
        ..Default::default()
    };
    [
        Resource {
            kind: XdsType::Cluster,
            name: name.to_string(),
            refs: vec![name.to_string()],
            sources: vec![source.clone()],
            body: Body::Cluster(Box::new(cluster)),
        },
        Resource {
            kind: XdsType::Endpoint,
            name: name.to_string(),
            refs: Vec::new(),
            sources: vec![source],
            body: Body::Endpoint(Box::new(ClusterLoadAssignment {
                cluster_name: name.to_string(),
                ..Default::default()
            })),
        },
    ]
}

/// The void cluster resources a gRPC route refers to, if any.
pub(crate) fn voids_of(route: &Resource) -> Vec<Resource> {
    let prefix = format!("{}|", NO_BACKEND_CLUSTER);
    let source = route
        .sources
        .first()
        .cloned()
        .unwrap_or_else(|| ObjectKey::new(Kind::Service, "", ""));
    route
        .refs
        .iter()
        .filter(|r| r.starts_with(&prefix))
        .flat_map(|name| void_resources(name, source.clone()))
        .collect()
}
