//! Builders for state-machine tests: synthetic resources with chosen versions and refs.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use translator::XdsType;

use crate::xds::snapshot::{Encoded, Snapshot};

pub(crate) fn res(kind: XdsType, name: &str, version: &str, refs: &[&str]) -> Arc<Encoded> {
    Arc::new(Encoded {
        kind,
        name: name.into(),
        version: version.into(),
        any: Any {
            type_url: kind.type_url().into(),
            value: format!("{name}@{version}").into_bytes(),
        },
        refs: refs.iter().map(|s| s.to_string()).collect(),
        sources: Vec::new(),
    })
}

pub(crate) fn cluster(name: &str, version: &str) -> Arc<Encoded> {
    res(XdsType::Cluster, name, version, &[name])
}

pub(crate) fn cla(name: &str, version: &str) -> Arc<Encoded> {
    res(XdsType::Endpoint, name, version, &[])
}

pub(crate) fn route(name: &str, version: &str, clusters: &[&str]) -> Arc<Encoded> {
    res(XdsType::Route, name, version, clusters)
}

pub(crate) fn snap(resources: &[Arc<Encoded>]) -> Arc<Snapshot> {
    let mut s = Snapshot::default();
    for r in resources {
        s.insert(r.clone());
    }
    Arc::new(s)
}

pub(crate) fn sotw(kind: XdsType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: kind.type_url().into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

pub(crate) fn sotw_nack(
    kind: XdsType,
    names: &[&str],
    nonce: &str,
    error: &str,
) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(Status {
            code: 3,
            message: error.into(),
            details: Vec::new(),
        }),
        ..sotw(kind, names, "", nonce)
    }
}

pub(crate) fn delta(kind: XdsType, subscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: kind.type_url().into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

pub(crate) fn delta_nack(kind: XdsType, nonce: &str, error: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        error_detail: Some(Status {
            code: 3,
            message: error.into(),
            details: Vec::new(),
        }),
        ..delta(kind, &[], nonce)
    }
}
