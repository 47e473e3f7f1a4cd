//! Incremental translation: a model change recomputes only the resources that depend on
//! the objects that changed, and says per view what was added, changed and removed.
//!
//! ```text
//!   changed objects ──▶ dirty Services (clusters, endpoints, virtual hosts)
//!                  └──▶ dirty Pods (the listeners of proxies beside them)
//!   dirty Services ──▶ each view that sees them: cluster/endpoint updates, and its route
//!                      table re-assembled from cached virtual hosts if one changed
//! ```
//!
//! What depends on what:
//! - a Service's Cluster: the Service, the pods it selects (their SPIFFE IDs), the retry
//!   budget of its winning RetryPolicy;
//! - its ClusterLoadAssignment: the Service and its EndpointSlices;
//! - its virtual hosts: the Service, its TrafficSplit (with the HTTPRouteGroups and the
//!   backend Services it names) and its RetryPolicies;
//! - a view's route table: the virtual hosts of the Services it sees;
//! - a proxy's own listeners and inbound clusters: its pod and the Services selecting it.
//!
//! Policy objects are resolved into a [`PolicyContext`] on every build (it is small); every
//! Service a policy touches, before or after, is rebuilt, and an unchanged result keeps
//! its previous `Arc`, so nothing is sent for it.
//!
//! Views ([`ViewKey`]: client namespace and declared egress) group proxies that are sent
//! the same clusters, endpoints and routes; only listeners and inbound clusters are per
//! proxy.
//!
//! Each view may leave out its own set of policy objects (ones its proxies rejected, see
//! the server's containment): the Services those objects touch get view-local clusters
//! and virtual hosts, built with the view's own [`PolicyContext`]; every other part is
//! shared with the other views. The server leaves objects out only of a view's variants
//! ([`ViewKey::variant`], one per rejecting identity): a variant starts as a copy of its
//! view, so it costs one more view's update per build, and the proxies that did not
//! reject stay on the shared view with no extra work.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use xds_types::XdsType;

use crate::encoded::{Encoded, TypeMap};
use crate::envoy::cluster;
use crate::envoy::profile::Envoy;
use crate::envoy::route::{self, VhostPart};
use crate::grpc;
use crate::grpc::profile::Grpc;
use crate::identity::{ProxyIdentity, ProxyKind};
use crate::mesh::MeshConfig;
use crate::model::{MeshService, Model, ViewKey};
use crate::output::Diagnostic;
use crate::policy::context::PolicyContext;
use crate::policy::port::port_routings;
use crate::render::endpoint;
use crate::render::profile::Profile;
use crate::routing::ir::PortRouting;

mod changes;
mod select;
mod update;
mod view;

pub use changes::{BuildOutput, Changes, Own, Update, ViewMaps};
use changes::{diff, encode};
use view::ViewState;

type NsName = (String, String);

/// One Service's translated parts.
#[derive(Debug, Default)]
struct ServiceParts {
    svc: Option<MeshService>,
    clusters: Vec<Arc<Encoded>>,
    endpoints: Vec<Arc<Encoded>>,
    vhosts: Vec<VhostPart>,
    /// Pods it selected at the last build.
    pods: BTreeSet<NsName>,
    /// Whether it had an endpoint outside the mesh at the last build (its clusters'
    /// TLS depends on it).
    any_outside: bool,
    /// Its Clusters and RouteConfigurations for proxyless gRPC clients (kept while any
    /// gRPC view exists).
    grpc_clusters: Vec<Arc<Encoded>>,
    grpc_routes: Vec<Arc<Encoded>>,
    /// The void clusters its gRPC routes send failing shares to, and their empty
    /// ClusterLoadAssignments (`grpc::void_resources`).
    grpc_voids: Vec<Arc<Encoded>>,
}

impl ServiceParts {
    /// What a gRPC view holds of it: (clusters, endpoints).
    fn grpc_view(&self) -> (Vec<Arc<Encoded>>, Vec<Arc<Encoded>>) {
        let of = |k: XdsType| self.grpc_voids.iter().filter(move |e| e.kind == k).cloned();
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
struct ProxyParts {
    own: Arc<Own>,
    view: ViewKey,
}

/// Where a diagnostic came from, so it clears when its origin is rebuilt without it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    Service(NsName),
    Grpc(NsName),
    Route(ViewKey),
    Proxy(String, String, String),
}

/// The incremental builder: caches of every translated part and of each view's maps.
#[derive(Debug)]
pub struct Builder {
    mesh: MeshConfig,
    policy: PolicyContext,
    services: BTreeMap<NsName, ServiceParts>,
    /// EndpointSlice -> the Service it belonged to at the last build.
    slice_owner: HashMap<NsName, NsName>,
    /// Pod -> the Services selecting it at the last build.
    pod_services: HashMap<NsName, BTreeSet<NsName>>,
    /// Pod -> its IP at the last build: endpoints listed by address follow it.
    pod_ips: HashMap<NsName, std::net::IpAddr>,
    views: BTreeMap<ViewKey, ViewState>,
    proxies: HashMap<ProxyIdentity, ProxyParts>,
    diagnostics: BTreeMap<Origin, Vec<Diagnostic>>,
    built: bool,
    /// Whether gRPC parts are kept (a gRPC view was asked for).
    grpc: bool,
    /// The Listeners every proxy of a view shares (for kinds that have them, see
    /// [`Profile::view_listeners`]), and whether a Service changed since they were built
    /// (they are then rebuilt, keeping the `Arc` of every unchanged Listener).
    view_listeners: HashMap<ViewKey, (Arc<TypeMap>, bool)>,
}

/// The Services whose routing differs between two policy contexts: a split, routes or a
/// retry winner that changed, and the apexes of splits with a backend among
/// `changed_services` (a split's routes depend on its backends' ports, which its
/// resolved weights do not show). Only these are rebuilt: a canary step costs one
/// Service, not every one with a policy.
fn policy_changes(
    old: &PolicyContext,
    new: &PolicyContext,
    changed_services: &BTreeSet<NsName>,
) -> BTreeSet<NsName> {
    // Every part of the context, named, so a part added later cannot be missed here.
    let PolicyContext {
        splits,
        retry_winners,
        routes,
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
    out.extend(
        differing(&old.retry_winners, retry_winners).map(|(ns, svc, _)| (ns.clone(), svc.clone())),
    );
    out
}

/// The keys whose whole values differ between two maps (present in one only, or unequal).
fn differing<'a, K: Ord, V: PartialEq>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = &'a K> {
    old.keys()
        .chain(new.keys())
        .filter(move |k| old.get(*k) != new.get(*k))
}

impl Builder {
    /// An empty builder for `mesh`.
    pub fn new(mesh: MeshConfig) -> Self {
        Builder {
            mesh,
            policy: PolicyContext::default(),
            services: BTreeMap::new(),
            slice_owner: HashMap::new(),
            pod_services: HashMap::new(),
            pod_ips: HashMap::new(),
            views: BTreeMap::new(),
            proxies: HashMap::new(),
            diagnostics: BTreeMap::new(),
            built: false,
            grpc: false,
            view_listeners: HashMap::new(),
        }
    }

    /// The policy of the last build.
    pub fn policy(&self) -> &PolicyContext {
        &self.policy
    }

    /// Every diagnostic in effect.
    pub fn diagnostics(&self) -> BTreeSet<Diagnostic> {
        self.diagnostics.values().flatten().cloned().collect()
    }

    /// The view a proxy belongs to: its namespace and its pod's declared egress.
    pub fn view_key(model: &Model, proxy: &ProxyIdentity) -> ViewKey {
        crate::identity::view_key(model, proxy)
    }

    /// A proxy's own resources and view; it is kept up to date until [`Builder::drop_proxy`].
    pub fn proxy(&mut self, model: &Model, identity: &ProxyIdentity) -> (Arc<Own>, ViewKey) {
        if let Some(p) = self.proxies.get(identity) {
            return (p.own.clone(), p.view.clone());
        }
        let mut count = 0;
        let own = Arc::new(self.own(model, identity, None, &mut count));
        let view = Self::view_key(model, identity);
        self.proxies.insert(
            identity.clone(),
            ProxyParts {
                own: own.clone(),
                view: view.clone(),
            },
        );
        (own, view)
    }

    /// Forgets a proxy identity no stream uses any more.
    pub fn drop_proxy(&mut self, identity: &ProxyIdentity) {
        self.proxies.remove(identity);
        self.diagnostics.remove(&Origin::Proxy(
            identity.namespace.clone(),
            identity.pod.clone(),
            identity.node_id.clone(),
        ));
    }

    fn own(
        &mut self,
        model: &Model,
        identity: &ProxyIdentity,
        old: Option<&Own>,
        count: &mut usize,
    ) -> Own {
        let profile = profile_of(identity.kind);
        let out = profile.own(model, &self.mesh, identity);
        self.diagnostics.insert(
            Origin::Proxy(
                identity.namespace.clone(),
                identity.pod.clone(),
                identity.node_id.clone(),
            ),
            out.diagnostics,
        );
        let mut own = Own::default();
        for r in &out.resources {
            let (map, old_map) = match r.kind {
                XdsType::Listener => (&mut own.listeners, old.map(|o| &o.listeners)),
                _ => (&mut own.clusters, old.map(|o| &o.clusters)),
            };
            let prev = old_map.and_then(|m| m.get(r.name.as_str()));
            let enc = encode(model, r, prev, count);
            map.insert(enc.name.clone(), enc);
        }
        let view = Self::view_key(model, identity);
        if let Some(shared) = self.view_listeners(model, profile, &view, count) {
            // Both sorted: one merge, and the map is built in bulk.
            let mine = std::mem::take(&mut own.listeners);
            let mut all: Vec<(Arc<str>, Arc<Encoded>)> =
                Vec::with_capacity(shared.len() + mine.len());
            all.extend(shared.iter().map(|(k, v)| (k.clone(), v.clone())));
            all.extend(mine);
            own.listeners = all.into_iter().collect();
        }
        own
    }

    /// The Listeners every proxy of `view` holds (None for a kind without them), built
    /// once per view and Service change.
    fn view_listeners(
        &mut self,
        model: &Model,
        profile: &dyn Profile,
        view: &ViewKey,
        count: &mut usize,
    ) -> Option<Arc<TypeMap>> {
        let old = match self.view_listeners.get(view) {
            Some((m, false)) => return Some(m.clone()),
            Some((m, true)) => Some(m.clone()),
            None => None,
        };
        let map: TypeMap = profile
            .view_listeners(model, view)?
            .iter()
            .map(|r| {
                let prev = old.as_ref().and_then(|m| m.get(r.name.as_str()));
                let enc = encode(model, r, prev, count);
                (enc.name.clone(), enc)
            })
            .collect();
        let map = match old {
            Some(o) if same_map(&o, &map) => o,
            _ => Arc::new(map),
        };
        self.view_listeners
            .insert(view.clone(), (map.clone(), false));
        Some(map)
    }

    /// Starts keeping gRPC parts: builds them for every Service.
    fn start_grpc(&mut self, model: &Model) {
        self.grpc = true;
        let keys: Vec<NsName> = self.services.keys().cloned().collect();
        let mut count = 0;
        for key in keys {
            let routings = self
                .services
                .get(&key)
                .and_then(|p| p.svc.as_ref())
                .map(|svc| port_routings(model, &self.policy, svc));
            self.rebuild_grpc(model, &key, true, routings.as_deref(), &mut count);
        }
    }

    /// Rebuilds a Service's gRPC clusters and/or (from its routing model, one per port)
    /// routes; returns whether they changed.
    fn rebuild_grpc(
        &mut self,
        model: &Model,
        key: &NsName,
        clusters: bool,
        routings: Option<&[PortRouting]>,
        count: &mut usize,
    ) -> bool {
        let Some(parts) = self.services.get_mut(key) else {
            return false;
        };
        let Some(svc) = parts.svc.as_ref() else {
            return false;
        };
        let mut changed = false;
        if clusters {
            let new: Vec<Arc<Encoded>> = Grpc
                .service_clusters(model, &self.mesh, &self.policy, svc)
                .iter()
                .map(|r| {
                    let old = parts.grpc_clusters.iter().find(|c| *c.name == *r.name);
                    encode(model, r, old, count)
                })
                .collect();
            changed |= !same_parts(&parts.grpc_clusters, &new);
            parts.grpc_clusters = new;
        }
        if let Some(routings) = routings {
            let mut diagnostics = Vec::new();
            let mut voids = Vec::new();
            let new: Vec<Arc<Encoded>> = svc
                .ports
                .iter()
                .zip(routings)
                .filter(|(p, _)| grpc::cluster::offered(svc, p))
                .map(|(_, routing)| {
                    let (r, d) = grpc::route::route(routing, &svc.namespace);
                    diagnostics.extend(d);
                    for v in grpc::cluster::voids_of(&r) {
                        let old = parts
                            .grpc_voids
                            .iter()
                            .find(|c| c.kind == v.kind && *c.name == *v.name);
                        voids.push(encode(model, &v, old, count));
                    }
                    let old = parts.grpc_routes.iter().find(|c| *c.name == *r.name);
                    encode(model, &r, old, count)
                })
                .collect();
            changed |= !same_parts(&parts.grpc_routes, &new);
            changed |= !same_parts(&parts.grpc_voids, &voids);
            parts.grpc_routes = new;
            parts.grpc_voids = voids;
            if diagnostics.is_empty() {
                self.diagnostics.remove(&Origin::Grpc(key.clone()));
            } else {
                self.diagnostics
                    .insert(Origin::Grpc(key.clone()), diagnostics);
            }
        }
        changed
    }

    /// Rebuilds one Service's parts; returns (cluster, endpoint) updates and whether a
    /// virtual host changed.
    fn rebuild_service(
        &mut self,
        model: &Model,
        key: &NsName,
        what: Dirty,
        count: &mut usize,
    ) -> (Vec<Update>, Vec<Update>, bool, Option<MeshService>) {
        let svc = model.service(&key.0, &key.1).cloned();
        let parts = self.services.entry(key.clone()).or_default();
        let old_svc = parts.svc.clone();
        let (mut cu, mut eu) = (Vec::new(), Vec::new());
        match svc.as_ref().map(cluster::service_diagnostics) {
            Some(d) if !d.is_empty() => {
                self.diagnostics.insert(Origin::Service(key.clone()), d);
            }
            _ => {
                self.diagnostics.remove(&Origin::Service(key.clone()));
            }
        }
        let Some(svc) = svc else {
            diff(&parts.clusters, &[], &mut cu);
            diff(&parts.endpoints, &[], &mut eu);
            let had_vhosts = !parts.vhosts.is_empty() || !parts.grpc_routes.is_empty();
            self.services.remove(key);
            self.diagnostics.remove(&Origin::Grpc(key.clone()));
            return (cu, eu, had_vhosts, old_svc);
        };
        let full = what.all || old_svc.as_ref() != Some(&svc);
        // A headless Service's pods have clusters and virtual hosts of their own, and
        // whether any endpoint is outside the mesh shapes the clusters' TLS.
        let pods_changed = svc.headless && what.endpoints;
        let outside = if full || what.clusters || what.endpoints {
            cluster::any_outside(model, &svc)
        } else {
            parts.any_outside
        };
        let outside_flipped = outside != parts.any_outside;
        parts.any_outside = outside;
        if full || what.clusters || pods_changed || outside_flipped {
            let clusters: Vec<Arc<Encoded>> = Envoy
                .service_clusters(model, &self.mesh, &self.policy, &svc)
                .iter()
                .map(|r| {
                    let old = parts.clusters.iter().find(|c| *c.name == *r.name);
                    encode(model, r, old, count)
                })
                .collect();
            diff(&parts.clusters, &clusters, &mut cu);
            parts.clusters = clusters;
        }
        if full || what.endpoints {
            // An ExternalName Service's cluster resolves its endpoints by DNS.
            let endpoints: Vec<Arc<Encoded>> = svc
                .ports
                .iter()
                .filter(|_| svc.external_name.is_none())
                .map(|p| {
                    let r = endpoint::load_assignment(model, &svc, p);
                    let old = parts.endpoints.iter().find(|c| *c.name == *r.name);
                    encode(model, &r, old, count)
                })
                .collect();
            diff(&parts.endpoints, &endpoints, &mut eu);
            parts.endpoints = endpoints;
        }
        let mut vhost_changed = false;
        // The routing model, resolved once for both emitters.
        let mut routings = None;
        if full || what.vhosts || pods_changed {
            let r = port_routings(model, &self.policy, &svc);
            let vhosts = route::vhost_parts(model, &svc, &r);
            vhost_changed = vhosts != parts.vhosts;
            parts.vhosts = vhosts;
            routings = Some(r);
        }
        let grpc_clusters = full || what.clusters || pods_changed || outside_flipped;
        parts.svc = Some(svc);
        if self.grpc && self.rebuild_grpc(model, key, grpc_clusters, routings.as_deref(), count) {
            // gRPC views take it from the Service's update; Envoy views re-assemble
            // their table to the same result.
            vhost_changed = true;
        }
        (cu, eu, vhost_changed, old_svc)
    }
}

/// The profile of a client kind.
fn profile_of(kind: ProxyKind) -> &'static dyn Profile {
    match kind {
        ProxyKind::Envoy => &Envoy,
        ProxyKind::Grpc => &Grpc,
    }
}

/// Whether two maps hold the same `Arc`s under the same names (an unchanged resource
/// keeps its `Arc`: no content is compared).
fn same_map(a: &TypeMap, b: &TypeMap) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && Arc::ptr_eq(va, vb))
}

fn same_own(a: &Own, b: &Own) -> bool {
    same_map(&a.listeners, &b.listeners) && same_map(&a.clusters, &b.clusters)
}

fn same_parts(a: &[Arc<Encoded>], b: &[Arc<Encoded>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

/// What one Service's rebuild changed.
struct ServiceUpdate {
    key: NsName,
    vhosts_changed: bool,
    old: Option<MeshService>,
}

/// What of a Service must be rebuilt.
#[derive(Clone, Copy, Debug, Default)]
struct Dirty {
    all: bool,
    clusters: bool,
    endpoints: bool,
    vhosts: bool,
}
