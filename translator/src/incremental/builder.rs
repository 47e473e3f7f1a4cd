//! The incremental builder's Service and proxy parts: a proxy's own resources through
//! its kind's profile, a Service's clusters, endpoints, virtual hosts and gRPC parts
//! rebuilt as far as what changed requires.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use xds_types::XdsType;

use super::changes::{Own, Update, diff, encode};
use super::state::{
    Builder, Dirty, GrpcTables, NsName, Origin, ProxyParts, profile_of, same_parts,
};
use crate::encoded::{Encoded, TypeMap};
use crate::envoy::address;
use crate::envoy::cluster;
use crate::envoy::profile::Envoy;
use crate::envoy::route::{self, VhostPart};
use crate::grpc;
use crate::grpc::profile::Grpc;
use crate::identity::ProxyIdentity;
use crate::mesh::MeshConfig;
use crate::model::{MeshService, Model, ViewKey};
use crate::output::{Diagnostic, Resource};
use crate::policy::context::PolicyContext;
use crate::policy::port::{port_routings, port_routings_for};
use crate::render::endpoint;
use crate::render::profile::Profile;
use crate::routing::ir::PortRouting;

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

    pub(super) fn own(
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
        let mut mine = TypeMap::new();
        for r in &out.resources {
            let (map, old_map) = match r.kind {
                XdsType::Listener => (&mut mine, old.map(|o| &*o.listeners)),
                _ => (&mut own.clusters, old.map(|o| &o.clusters)),
            };
            let prev = old_map.and_then(|m| m.get(r.name.as_str()));
            let enc = encode(model, r, prev, count);
            map.insert(enc.name.clone(), enc);
        }
        own.listeners = Arc::new(mine);
        own
    }

    /// Starts keeping gRPC parts: builds them for every Service.
    pub(super) fn start_grpc(&mut self, model: &Model) {
        self.grpc = true;
        let keys: Vec<NsName> = self.services.keys().cloned().collect();
        let mut count = 0;
        for key in keys {
            let routings = self
                .services
                .get(&key)
                .and_then(|p| p.svc.as_ref())
                .map(|svc| Routings::of(model, &self.policy, &key, svc));
            self.rebuild_grpc(model, &key, true, routings.as_ref(), &mut count);
        }
    }

    /// Rebuilds a Service's gRPC clusters and/or (from its routing models, one per port)
    /// routes; returns whether they changed.
    pub(super) fn rebuild_grpc(
        &mut self,
        model: &Model,
        key: &NsName,
        clusters: bool,
        routings: Option<&Routings>,
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
            let (local, remote) = client_listeners(model, svc, &parts.grpc_listeners, count);
            changed |= !same_parts(&parts.grpc_listeners, &local);
            parts.grpc_listeners = local;
            parts.grpc_remote_listeners = remote;
        }
        if let Some(routings) = routings {
            let mut diagnostics = Vec::new();
            let was = GrpcTables {
                routes: std::mem::take(&mut parts.grpc_routes),
                voids: std::mem::take(&mut parts.grpc_voids),
            };
            let shared = grpc_tables(
                model,
                svc,
                &routings.shared,
                &[&was],
                &mut diagnostics,
                count,
            );
            // A consumer namespace's table equal to the shared one keeps its `Arc`.
            let consumer: BTreeMap<String, GrpcTables> = routings
                .consumers
                .iter()
                .map(|(ns, r)| {
                    let mut olds = vec![&shared];
                    olds.extend(parts.consumer_grpc.get(ns));
                    let t = grpc_tables(model, svc, r, &olds, &mut diagnostics, count);
                    (ns.clone(), t)
                })
                .collect();
            changed |= !same_tables(&was, &shared);
            changed |= consumer.len() != parts.consumer_grpc.len()
                || consumer.iter().any(|(ns, t)| {
                    parts
                        .consumer_grpc
                        .get(ns)
                        .is_none_or(|w| !same_tables(w, t))
                });
            parts.grpc_routes = shared.routes;
            parts.grpc_voids = shared.voids;
            parts.consumer_grpc = consumer;
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
    pub(super) fn rebuild_service(
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
            let r = Routings::of(model, &self.policy, key, &svc);
            let vhosts = route::vhost_parts(model, &svc, &r.shared);
            // Namespaces with consumer routes of the Service get their own.
            let consumer: BTreeMap<String, Vec<VhostPart>> = r
                .consumers
                .iter()
                .map(|(ns, r)| (ns.clone(), route::vhost_parts(model, &svc, r)))
                .collect();
            vhost_changed = vhosts != parts.vhosts || consumer != parts.consumer_vhosts;
            parts.port_routes = address::port_routes(&svc, &vhosts)
                .iter()
                .map(|r| {
                    let old = parts.port_routes.iter().find(|c| *c.name == *r.name);
                    encode(model, r, old, count)
                })
                .collect();
            parts.consumer_port_routes = consumer
                .iter()
                .map(|(ns, v)| {
                    let was = parts.consumer_port_routes.get(ns);
                    let tables = address::port_routes(&svc, v)
                        .iter()
                        .map(|r| {
                            let old = was.and_then(|w| w.iter().find(|c| *c.name == *r.name));
                            encode(model, r, old, count)
                        })
                        .collect();
                    (ns.clone(), tables)
                })
                .collect();
            // Equal parts are kept, with what they remember of their encodings.
            if vhost_changed {
                parts.vhosts = vhosts;
                parts.consumer_vhosts = consumer;
            }
            routings = Some(r);
        }
        let grpc_clusters = full || what.clusters || pods_changed || outside_flipped;
        parts.svc = Some(svc);
        if self.grpc && self.rebuild_grpc(model, key, grpc_clusters, routings.as_ref(), count) {
            // gRPC views take it from the Service's update; Envoy views re-assemble
            // their table to the same result.
            vhost_changed = true;
        }
        (cu, eu, vhost_changed, old_svc)
    }
}

/// A Service's routing models, one per port: for callers without consumer routes of it,
/// and for each namespace with some.
pub(super) struct Routings {
    shared: Vec<PortRouting>,
    consumers: BTreeMap<String, Vec<PortRouting>>,
}

impl Routings {
    fn of(model: &Model, policy: &PolicyContext, key: &NsName, svc: &MeshService) -> Self {
        Routings {
            shared: port_routings(model, policy, svc),
            consumers: policy
                .consumer_namespaces(key)
                .into_iter()
                .map(|ns| {
                    let r = port_routings_for(model, policy, svc, Some(ns.as_str()));
                    (ns, r)
                })
                .collect(),
        }
    }
}

/// A Service's gRPC RouteConfigurations (one per offered port) and void parts rendered
/// from `routings`; a part equal to one of `olds` (searched in order) keeps its `Arc`.
fn grpc_tables(
    model: &Model,
    svc: &MeshService,
    routings: &[PortRouting],
    olds: &[&GrpcTables],
    diagnostics: &mut Vec<Diagnostic>,
    count: &mut usize,
) -> GrpcTables {
    let mut voids = Vec::new();
    let routes = svc
        .ports
        .iter()
        .zip(routings)
        .filter(|(p, _)| grpc::cluster::offered(svc, p))
        .map(|(_, routing)| {
            let (r, d) = grpc::route::route(routing, &svc.namespace);
            diagnostics.extend(d);
            for v in grpc::cluster::voids_of(&r) {
                let was = olds.iter().flat_map(|o| o.voids.iter());
                voids.push(encode_as_any(model, &v, was, count));
            }
            let was = olds.iter().flat_map(|o| o.routes.iter());
            encode_as_any(model, &r, was, count)
        })
        .collect();
    GrpcTables { routes, voids }
}

fn same_tables(a: &GrpcTables, b: &GrpcTables) -> bool {
    same_parts(&a.routes, &b.routes) && same_parts(&a.voids, &b.voids)
}

/// `r` encoded, or the first of `olds` equal to it (its `Arc` kept).
fn encode_as_any<'a>(
    model: &Model,
    r: &Resource,
    mut olds: impl Iterator<Item = &'a Arc<Encoded>>,
    count: &mut usize,
) -> Arc<Encoded> {
    let enc = Encoded::with_revs(r, |k| model.rev(k).unwrap_or(0));
    match olds.find(|o| o.kind == enc.kind && o.name == enc.name && o.same_as(&enc)) {
        Some(o) => o.clone(),
        None => {
            *count += 1;
            Arc::new(enc)
        }
    }
}

/// A Service's gRPC client Listeners: (for its own namespace's clients, for the others),
/// the second the same `Arc`s less the names only its own namespace may use. What equals
/// one of `old` keeps its `Arc`.
fn client_listeners(
    model: &Model,
    svc: &MeshService,
    old: &[Arc<Encoded>],
    count: &mut usize,
) -> (Vec<Arc<Encoded>>, Vec<Arc<Encoded>>) {
    let local: Vec<Arc<Encoded>> = Grpc
        .service_listeners(svc, &svc.namespace)
        .iter()
        .map(|r| {
            let prev = old.iter().find(|c| *c.name == *r.name);
            encode(model, r, prev, count)
        })
        .collect();
    // A namespace name is never empty: no client namespace is the Service's.
    let remote: Vec<Arc<Encoded>> = Grpc
        .service_listeners(svc, "")
        .iter()
        .filter_map(|r| local.iter().find(|l| *l.name == *r.name).cloned())
        .collect();
    (local, remote)
}
