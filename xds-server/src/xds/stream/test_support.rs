//! Builders for state-machine tests: synthetic resources with chosen versions and refs,
//! and a harness that feeds a whole new desired state as the next view and own versions
//! (with the change set a real build would compute).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status;
use translator::encoded::{Encoded, TypeMap};
use translator::incremental::{Changes, Own, Update, ViewMaps};
use translator::model::{Egress, ViewKey};
use xds_types::XdsType;

use crate::xds::fanout::{Desired, OwnVersion, ViewVersion};
use crate::xds::stream::core::{Protocol, Step, Stream};

pub(crate) fn res(kind: XdsType, name: &str, version: &str, refs: &[&str]) -> Arc<Encoded> {
    Arc::new(Encoded::synthetic(kind, name, version, refs))
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

fn view_key() -> ViewKey {
    ViewKey {
        vhds: false,
        namespace: "default".into(),
        egress: Egress::All,
        grpc: false,
        variant: None,
    }
}

/// [`snap`] for a proxyless gRPC client's view.
pub(crate) fn snap_grpc(resources: &[Arc<Encoded>]) -> Desired {
    let mut d = snap(resources);
    let key = ViewKey {
        grpc: true,
        ..view_key()
    };
    d.view = Arc::new(ViewVersion::first(key.clone(), d.view.maps.clone()));
    d.own = Arc::new(OwnVersion {
        version: d.own.version,
        own: d.own.own.clone(),
        secrets: d.own.secrets.clone(),
        view: Some(key),
        changed_at: None,
        ended: None,
    });
    d
}

/// `d` with `listeners` served by its view, as a gRPC view serves its clients' Listeners
/// (the proxy's own stay its own).
pub(crate) fn with_view_listeners(mut d: Desired, listeners: &[Arc<Encoded>]) -> Desired {
    let mut maps = d.view.maps.clone();
    let m = Arc::make_mut(&mut maps.listeners);
    for l in listeners {
        m.insert(l.name.clone(), l.clone());
    }
    d.view = Arc::new(ViewVersion::first(d.view.key.clone(), maps));
    d
}

/// Cluster `a` (at `a_cluster`, its endpoints at `a_endpoints`), a new cluster `b` with
/// its endpoints, and route `r` at version 2 to both: a route that needs a new cluster.
pub(crate) fn route_to_new_b(a_cluster: &str, a_endpoints: &str) -> Desired {
    snap(&[
        cluster("a", a_cluster),
        cla("a", a_endpoints),
        cluster("b", "1"),
        cla("b", "1"),
        route("r", "2", &["a", "b"]),
    ])
}

/// A desired state holding `resources`: clusters, endpoints and routes in the view,
/// listeners and secrets as the proxy's own.
pub(crate) fn snap(resources: &[Arc<Encoded>]) -> Desired {
    let mut maps = ViewMaps::default();
    let mut own = Own::default();
    let mut secrets = TypeMap::new();
    for r in resources {
        let map = match r.kind {
            XdsType::Cluster => Arc::make_mut(&mut maps.clusters),
            XdsType::Endpoint => Arc::make_mut(&mut maps.endpoints),
            XdsType::Route => Arc::make_mut(&mut maps.routes),
            XdsType::VirtualHost => Arc::make_mut(&mut maps.vhosts),
            XdsType::Listener => Arc::make_mut(&mut own.listeners),
            XdsType::Secret => &mut secrets,
        };
        map.insert(r.name.clone(), r.clone());
    }
    Desired {
        view: Arc::new(ViewVersion::first(view_key(), maps)),
        own: Arc::new(OwnVersion {
            version: 1,
            own: Arc::new(own),
            secrets,
            view: Some(view_key()),
            changed_at: None,
            ended: None,
        }),
    }
}

fn diff(old: &TypeMap, new: &TypeMap) -> Vec<Update> {
    let names: BTreeSet<&Arc<str>> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter_map(|n| match (old.get(n), new.get(n)) {
            (_, Some(r)) if old.get(n).is_none_or(|o| o.version != r.version) => {
                Some(Update::Put(r.clone()))
            }
            (Some(_), None) => Some(Update::Remove(n.clone())),
            _ => None,
        })
        .collect()
}

/// The next versions after `current` that hold what `next` holds.
pub(crate) fn advance(current: &Desired, next: Desired) -> (Arc<ViewVersion>, Arc<OwnVersion>) {
    let (a, b) = (&current.view.maps, &next.view.maps);
    let changes = Changes {
        clusters: diff(&a.clusters, &b.clusters),
        endpoints: diff(&a.endpoints, &b.endpoints),
        listeners: diff(&a.listeners, &b.listeners),
        routes: diff(&a.routes, &b.routes),
        vhosts: diff(&a.vhosts, &b.vhosts),
    };
    let view = Arc::new(current.view.next(b.clone(), changes, None));
    let own = Arc::new(OwnVersion {
        version: current.own.version + 1,
        own: next.own.own.clone(),
        secrets: next.own.secrets.clone(),
        view: next.own.view.clone(),
        changed_at: None,
        ended: None,
    });
    (view, own)
}

/// Feeds a whole desired state to a stream as its next view and own versions.
pub(crate) trait Feed {
    type Step;
    fn on_snapshot(&mut self, next: Desired, now: Instant) -> Self::Step;
}

impl<P: Protocol> Feed for Stream<P> {
    type Step = Step<P::Response>;

    fn on_snapshot(&mut self, next: Desired, now: Instant) -> Self::Step {
        let (view, own) = advance(self.desired(), next);
        let mut step = self.on_view(view, now);
        step.extend(self.on_own(own, now));
        step
    }
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
