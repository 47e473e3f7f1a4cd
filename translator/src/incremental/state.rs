//! The incremental builder's state: the [`Builder`] and the cached parts it keeps per
//! Service, proxy and view, with the small comparisons the build steps share. The steps
//! themselves are `impl Builder` blocks in [`super::builder`], [`super::update`] and
//! [`super::view`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use xds_types::XdsType;

use super::changes::{Own, ViewMaps};
use crate::encoded::{Encoded, TypeMap};
use crate::envoy::profile::Envoy;
use crate::envoy::route::VhostPart;
use crate::grpc::profile::Grpc;
use crate::identity::{ProxyIdentity, ProxyKind};
use crate::mesh::MeshConfig;
use crate::model::{Excluded, MeshService, ViewKey};
use crate::output::Diagnostic;
use crate::policy::context::PolicyContext;
use crate::policy::split::SplitState;
use crate::render::profile::Profile;

pub(super) type NsName = (String, String);

/// One Service's translated parts.
#[derive(Debug, Default)]
pub(super) struct ServiceParts {
    pub(super) svc: Option<MeshService>,
    pub(super) clusters: Vec<Arc<Encoded>>,
    pub(super) endpoints: Vec<Arc<Encoded>>,
    pub(super) vhosts: Vec<VhostPart>,
    /// Its virtual hosts for the callers of namespaces with consumer routes of it (views
    /// of other namespaces share `vhosts`).
    pub(super) consumer_vhosts: BTreeMap<String, Vec<VhostPart>>,
    /// The route tables of its HTTP ports for connections to its cluster IP
    /// (`envoy::address`), derived from `vhosts`.
    pub(super) port_routes: Vec<Arc<Encoded>>,
    /// The same for the callers of namespaces with consumer routes of it, derived from
    /// `consumer_vhosts`.
    pub(super) consumer_port_routes: BTreeMap<String, Vec<Arc<Encoded>>>,
    /// Pods it selected at the last build.
    pub(super) pods: BTreeSet<NsName>,
    /// Whether it had an endpoint outside the mesh at the last build (its clusters'
    /// TLS depends on it).
    pub(super) any_outside: bool,
    /// Its Clusters and RouteConfigurations for proxyless gRPC clients (kept while any
    /// gRPC view exists).
    pub(super) grpc_clusters: Vec<Arc<Encoded>>,
    pub(super) grpc_routes: Vec<Arc<Encoded>>,
    /// Its client Listeners for gRPC clients of its own namespace (every name), and the
    /// same `Arc`s less the names only they may use, for the others
    /// ([`Profile::service_listeners`]).
    pub(super) grpc_listeners: Vec<Arc<Encoded>>,
    pub(super) grpc_remote_listeners: Vec<Arc<Encoded>>,
    /// The void clusters its gRPC routes send failing shares to, and their empty
    /// ClusterLoadAssignments (`grpc::void_resources`).
    pub(super) grpc_voids: Vec<Arc<Encoded>>,
    /// Its gRPC RouteConfigurations and void parts for the clients of namespaces with
    /// consumer routes of it, under the same names (views of other namespaces share
    /// `grpc_routes` and `grpc_voids`).
    pub(super) consumer_grpc: BTreeMap<String, GrpcTables>,
}

/// A Service's gRPC RouteConfigurations (one per offered port) and the void parts they
/// send failing shares to.
#[derive(Debug, Default)]
pub(super) struct GrpcTables {
    pub(super) routes: Vec<Arc<Encoded>>,
    pub(super) voids: Vec<Arc<Encoded>>,
}

impl ServiceParts {
    /// The virtual hosts the callers in `namespace` get.
    pub(super) fn vhosts_for(&self, namespace: &str) -> &[VhostPart] {
        self.consumer_vhosts
            .get(namespace)
            .map_or(&self.vhosts, |v| v)
    }

    /// The per-port route tables the callers in `namespace` get.
    pub(super) fn port_routes_for(&self, namespace: &str) -> &[Arc<Encoded>] {
        self.consumer_port_routes
            .get(namespace)
            .map_or(&self.port_routes, |v| v)
    }

    /// The gRPC RouteConfigurations the clients in `namespace` get.
    pub(super) fn grpc_routes_for(&self, namespace: &str) -> &[Arc<Encoded>] {
        self.consumer_grpc
            .get(namespace)
            .map_or(&self.grpc_routes, |t| &t.routes)
    }

    /// The client Listeners a gRPC view of `namespace` holds of it.
    pub(super) fn grpc_listeners_for(&self, namespace: &str) -> &[Arc<Encoded>] {
        match &self.svc {
            Some(s) if s.namespace == namespace => &self.grpc_listeners,
            _ => &self.grpc_remote_listeners,
        }
    }

    /// What a gRPC view of `namespace` holds of it: (clusters, endpoints).
    pub(super) fn grpc_view(&self, namespace: &str) -> (Vec<Arc<Encoded>>, Vec<Arc<Encoded>>) {
        let voids = self
            .consumer_grpc
            .get(namespace)
            .map_or(&self.grpc_voids, |t| &t.voids);
        let of = |k: XdsType| voids.iter().filter(move |e| e.kind == k).cloned();
        (
            self.grpc_clusters
                .iter()
                .cloned()
                .chain(of(XdsType::Cluster))
                .collect(),
            self.endpoints
                .iter()
                .cloned()
                .chain(of(XdsType::Endpoint))
                .collect(),
        )
    }
}

#[derive(Debug)]
pub(super) struct ProxyParts {
    pub(super) own: Arc<Own>,
    pub(super) view: ViewKey,
}

/// Where a diagnostic came from, so it clears when its origin is rebuilt without it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Origin {
    Service(NsName),
    Grpc(NsName),
    Route(ViewKey),
    Proxy(String, String, String),
}

/// The incremental builder: caches of every translated part and of each view's maps.
#[derive(Debug)]
pub struct Builder {
    pub(super) mesh: MeshConfig,
    pub(super) policy: PolicyContext,
    pub(super) services: BTreeMap<NsName, ServiceParts>,
    /// EndpointSlice -> the Service it belonged to at the last build.
    pub(super) slice_owner: HashMap<NsName, NsName>,
    /// Pod -> the Services selecting it at the last build.
    pub(super) pod_services: HashMap<NsName, BTreeSet<NsName>>,
    /// Pod -> its IP at the last build: endpoints listed by address follow it.
    pub(super) pod_ips: HashMap<NsName, std::net::IpAddr>,
    pub(super) views: BTreeMap<ViewKey, ViewState>,
    pub(super) proxies: HashMap<ProxyIdentity, ProxyParts>,
    pub(super) diagnostics: BTreeMap<Origin, Vec<Diagnostic>>,
    pub(super) built: bool,
    /// Whether gRPC parts are kept (a gRPC view was asked for).
    pub(super) grpc: bool,
}

/// The Services whose routing differs between two policy contexts: a split, routes or a
/// retry winner that changed, and the apexes of splits with a backend among
/// `changed_services` (a split's routes depend on its backends' ports, which its
/// resolved weights do not show). Only these are rebuilt: a canary step costs one
/// Service, not every one with a policy.
pub(super) fn policy_changes(
    old: &PolicyContext,
    new: &PolicyContext,
    changed_services: &BTreeSet<NsName>,
) -> BTreeSet<NsName> {
    // Every part of the context, named, so a part added later cannot be missed here.
    let PolicyContext {
        splits,
        retry_winners,
        routes,
        consumers,
    } = new;
    let mut out = BTreeSet::new();
    out.extend(differing(&old.splits, splits).cloned());
    for p in [old, new] {
        for ((ns, apex), s) in &p.splits {
            if s.backends
                .iter()
                .any(|(b, _)| changed_services.contains(&(ns.clone(), b.clone())))
            {
                out.insert((ns.clone(), apex.clone()));
            }
        }
    }
    out.extend(differing(&old.routes, routes).cloned());
    out.extend(differing(&old.consumers, consumers).cloned());
    out.extend(
        differing(&old.retry_winners, retry_winners).map(|(ns, svc, _)| (ns.clone(), svc.clone())),
    );
    out
}

/// The keys whose whole values differ between two maps (present in one only, or unequal).
pub(super) fn differing<'a, K: Ord, V: PartialEq>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = &'a K> {
    old.keys()
        .chain(new.keys())
        .filter(move |k| old.get(*k) != new.get(*k))
}

/// The profile of a client kind.
pub(super) fn profile_of(kind: ProxyKind) -> &'static dyn Profile {
    match kind {
        ProxyKind::Envoy => &Envoy,
        ProxyKind::Grpc => &Grpc,
    }
}

/// Whether two maps hold the same `Arc`s under the same names (an unchanged resource
/// keeps its `Arc`: no content is compared).
pub(super) fn same_map(a: &TypeMap, b: &TypeMap) -> bool {
    std::ptr::eq(a, b)
        || a.len() == b.len()
            && a.iter()
                .zip(b.iter())
                .all(|((ka, va), (kb, vb))| ka == kb && Arc::ptr_eq(va, vb))
}

pub(super) fn same_own(a: &Own, b: &Own) -> bool {
    same_map(&a.listeners, &b.listeners) && same_map(&a.clusters, &b.clusters)
}

pub(super) fn same_parts(a: &[Arc<Encoded>], b: &[Arc<Encoded>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

/// What one Service's rebuild changed.
pub(super) struct ServiceUpdate {
    pub(super) key: NsName,
    pub(super) vhosts_changed: bool,
    pub(super) old: Option<MeshService>,
}

/// What of a Service must be rebuilt.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Dirty {
    pub(super) all: bool,
    pub(super) clusters: bool,
    pub(super) endpoints: bool,
    pub(super) vhosts: bool,
}

/// One view: its maps, which names in them belong to which Service, and what it leaves
/// out.
#[derive(Clone, Debug, Default)]
pub(super) struct ViewState {
    pub(super) maps: ViewMaps,
    pub(super) by_service: HashMap<NsName, Names>,
    pub(super) excluded: Excluded,
    /// The view's own policy, while it leaves something out.
    pub(super) policy: Option<Arc<PolicyContext>>,
    /// The Services whose routing differs under that policy from the shared one: the
    /// only ones that can have view-local parts.
    pub(super) differs: Arc<BTreeSet<NsName>>,
    /// View-local parts of the Services its left-out objects touch.
    pub(super) overrides: BTreeMap<NsName, Override>,
}

/// A policy a view that leaves something out resolved: (left out, the last good splits
/// it started from, the policy, the Services that differ under it).
pub(super) type Resolved = (
    Excluded,
    SplitState,
    Arc<PolicyContext>,
    Arc<BTreeSet<NsName>>,
);

/// What views that leave something out resolved in one build, shared by the variants of
/// one view that leave out the same objects (the proxies of many identities rejecting
/// one bad object cost one resolution and one route table, not one each): the policies,
/// and the route tables by (view, left out) with the variant that assembled each.
#[derive(Default)]
pub(super) struct PolicyMemo {
    pub(super) policies: Vec<Resolved>,
    pub(super) routes: Vec<(ViewKey, Excluded, ViewKey, Table)>,
}

/// A view's outbound table: the RouteConfiguration and, in a view whose proxies take
/// them apart (VHDS), its virtual hosts (empty otherwise).
#[derive(Clone, Debug)]
pub(super) struct Table {
    pub(super) route: Arc<Encoded>,
    pub(super) vhosts: Arc<TypeMap>,
}

/// A Service's parts as one view sees them, when they differ from the shared ones.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Override {
    pub(super) clusters: Vec<Arc<Encoded>>,
    pub(super) vhosts: Vec<VhostPart>,
    pub(super) port_routes: Vec<Arc<Encoded>>,
}

/// The names one Service has in a view.
#[derive(Clone, Debug, Default)]
pub(super) struct Names {
    pub(super) clusters: Vec<Arc<str>>,
    pub(super) endpoints: Vec<Arc<str>>,
    /// A gRPC view's RouteConfigurations (one per Service port).
    pub(super) routes: Vec<Arc<str>>,
    /// A gRPC view's client Listeners.
    pub(super) listeners: Vec<Arc<str>>,
}
