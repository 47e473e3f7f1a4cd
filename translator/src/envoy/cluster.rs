//! Clusters: one EDS cluster per service port (shared by every sidecar), one static
//! cluster per pod and port of a headless Service (called by the pod's own address), and
//! one static inbound cluster per port a pod serves (the hop to the local app).
//!
//! Mesh mTLS is chosen per endpoint (`rudder.dev/upstream-tls: auto`, the default):
//! endpoints marked as outside the mesh in EDS get a plain connection through
//! `transport_socket_matches` (present only while the Service has such an endpoint),
//! every other endpoint mTLS.

use std::collections::HashMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster,
    circuit_breakers::{Thresholds, thresholds::RetryBudget},
    cluster::TransportSocketMatch,
    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::BindConfig;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};

use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::UInt32Value;
use xds_types::XdsType;

use crate::envoy::tls;
use crate::mesh::MeshConfig;
use crate::model::{Kind, MeshService, Model, ObjectKey, Protocol, ServicePort, UpstreamTls};
use crate::names;
use crate::output::{Body, Diagnostic, Resource};
use crate::policy::context::PolicyContext;
use crate::policy::retry::retry_for;
use crate::render::endpoint::{self, plain_marker};
use crate::render::protos;
use crate::serving::identities;

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

/// Whether `svc` (under `auto`) has an endpoint outside the mesh: its clusters then
/// carry the plain-text transport socket match.
pub(crate) fn any_outside(model: &Model, svc: &MeshService) -> bool {
    svc.upstream_tls == UpstreamTls::Auto
        && model.slices_of(svc).any(|sl| {
            sl.endpoints
                .iter()
                .any(|e| !model.endpoint_in_mesh(&sl.namespace, e))
        })
}

/// The Cluster of one Service port.
pub(crate) fn outbound(
    model: &Model,
    mesh: &MeshConfig,
    policy: &PolicyContext,
    svc: &MeshService,
    port: &ServicePort,
) -> Resource {
    let name = names::outbound_cluster(svc, port.port);
    let mut cluster = base(name.clone(), port.protocol);
    // A RetryPolicy's budget caps concurrent retries to a share of active requests.
    let retry = retry_for(
        model,
        &policy.retry_winners,
        &svc.namespace,
        &svc.name,
        port.port,
    );
    let budget = retry.and_then(|p| p.spec.budget.as_ref());
    cluster.circuit_breakers = budget.map(retry_budget);
    let refs = if let Some(host) = &svc.external_name {
        dns(&mut cluster, host, port.port);
        Vec::new()
    } else {
        vec![mesh_eds(&mut cluster, model, mesh, svc, port)]
    };
    Resource {
        kind: XdsType::Cluster,
        refs,
        sources: std::iter::once(ObjectKey::new(Kind::Service, &svc.namespace, &svc.name))
            .chain(budget.and(retry.map(|p| {
                ObjectKey::new(
                    Kind::RetryPolicy,
                    &svc.namespace,
                    p.metadata.name.as_deref().unwrap_or_default(),
                )
            })))
            .collect(),
        name,
        body: Body::Cluster(Box::new(cluster)),
    }
}

/// A RetryPolicy's retry budget as circuit breaker thresholds.
fn retry_budget(b: &crds::RetryBudget) -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![Thresholds {
            retry_budget: Some(RetryBudget {
                budget_percent: Some(Percent {
                    value: f64::from(b.retry_percent.unwrap_or(20)),
                }),
                min_retry_concurrency: Some(UInt32Value {
                    value: b.min_retry_concurrency.unwrap_or(3),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An ExternalName Service's cluster: resolved by DNS, plain connections (nothing there
/// presents a mesh certificate), no endpoints over EDS.
fn dns(cluster: &mut Cluster, host: &str, port: u16) {
    let name = cluster.name.clone();
    cluster.cluster_discovery_type =
        Some(ClusterDiscoveryType::Type(DiscoveryType::LogicalDns as i32));
    cluster.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
    cluster.load_assignment = Some(ClusterLoadAssignment {
        cluster_name: name.clone(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(protos::named_socket(host, port)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
}

/// A mesh Service's cluster: endpoints over EDS, mTLS checking the backends' SPIFFE
/// IDs (with a plain-text match for endpoints outside the mesh, or plain text when the
/// Service is forced so). Returns the endpoints' name, its one ref.
fn mesh_eds(
    cluster: &mut Cluster,
    model: &Model,
    mesh: &MeshConfig,
    svc: &MeshService,
    port: &ServicePort,
) -> String {
    let mtls = tls::upstream(
        &identities(model, mesh, svc),
        &mesh.trust_domain,
        &svc.fqdn(),
        port.protocol.is_http2(),
    );
    // Only a Service with an endpoint outside the mesh carries the plain-text match
    // (about 150 bytes a cluster, which every proxy would otherwise hold for nothing).
    let any_outside = any_outside(model, svc);
    match svc.upstream_tls {
        UpstreamTls::Auto if !any_outside => cluster.transport_socket = Some(mtls),
        // mTLS unless the endpoint is marked as outside the mesh (fail closed).
        UpstreamTls::Auto => {
            cluster.transport_socket = Some(mtls);
            cluster.transport_socket_matches = vec![TransportSocketMatch {
                name: "outside-mesh".into(),
                r#match: Some(plain_marker()),
                transport_socket: Some(tls::plain()),
            }];
        }
        UpstreamTls::Mesh => cluster.transport_socket = Some(mtls),
        UpstreamTls::Plain => {}
    }
    cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
    let endpoints = names::outbound_endpoints(svc, port.port);
    cluster.eds_cluster_config = Some(EdsClusterConfig {
        eds_config: Some(protos::ads()),
        service_name: endpoints.clone(),
    });
    endpoints
}

/// The static inbound cluster of `port`: to the app at `app`, bound to `source` when
/// given (an intercepted pod's sidecar, whose hop to the app the init container's rules
/// must tell from its other connections to its own pod).
pub(crate) fn inbound(
    port: u16,
    app: IpAddr,
    protocol: Protocol,
    source: Option<BindConfig>,
) -> Resource {
    let name = names::inbound(port);
    let mut cluster = base(name.clone(), protocol);
    cluster.upstream_bind_config = source;
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
        sources: Vec::new(),
        body: Body::Cluster(Box::new(cluster)),
    }
}

/// What a Service alone makes unroutable, for the log and `xdsctl`.
pub(crate) fn service_diagnostics(svc: &MeshService) -> Vec<Diagnostic> {
    if svc.external_name.is_some() && svc.ports.is_empty() {
        return vec![Diagnostic {
            object: format!("Service {}/{}", svc.namespace, svc.name),
            field: "spec.ports".into(),
            message: "an ExternalName Service is routed by port: list at least one TCP port".into(),
        }];
    }
    Vec::new()
}

/// One static cluster per pod of a headless Service and port, for clients that call a
/// pod by its own address (StatefulSet peers): mTLS checked against that pod's identity,
/// or plain for a pod outside the mesh.
pub(crate) fn pod_clusters(model: &Model, mesh: &MeshConfig, svc: &MeshService) -> Vec<Resource> {
    if !svc.headless || svc.external_name.is_some() {
        return Vec::new();
    }
    let sources: Vec<ObjectKey> =
        std::iter::once(ObjectKey::new(Kind::Service, &svc.namespace, &svc.name))
            .chain(
                model
                    .slices_of(svc)
                    .map(|sl| ObjectKey::new(Kind::EndpointSlice, &sl.namespace, &sl.name)),
            )
            .collect();
    let mut out: Vec<Resource> = Vec::new();
    for port in &svc.ports {
        for addr in endpoint::pod_addresses(model, svc, port) {
            let name = names::pod_cluster(svc, addr.port, addr.ip);
            // Two Service ports on one target port: one cluster.
            if out.iter().any(|r| r.name == name) {
                continue;
            }
            let mut cluster = base(name.clone(), port.protocol);
            cluster.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
            cluster.load_assignment = Some(ClusterLoadAssignment {
                cluster_name: name.clone(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![LbEndpoint {
                        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                            address: Some(protos::socket(addr.ip, addr.port)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            });
            if !addr.outside {
                let ids: Vec<String> = addr
                    .account
                    .iter()
                    .map(|(ns, sa)| format!("spiffe://{}/ns/{ns}/sa/{sa}", mesh.trust_domain))
                    .collect();
                cluster.transport_socket = Some(tls::upstream(
                    &ids,
                    &mesh.trust_domain,
                    &svc.fqdn(),
                    port.protocol.is_http2(),
                ));
            }
            out.push(Resource {
                kind: XdsType::Cluster,
                name,
                refs: Vec::new(),
                sources: sources.clone(),
                body: Body::Cluster(Box::new(cluster)),
            });
        }
    }
    out
}
