//! Views: building a view's maps on first use, bringing them up to date after a build,
//! and the view-local parts of the Services whose policy objects a view leaves out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::changes::{Changes, Update, ViewMaps, apply, encode};
use super::state::{
    Builder, Names, NsName, Origin, Override, PolicyMemo, ServiceUpdate, Table, ViewState,
    policy_changes,
};
use crate::encoded::{Encoded, TypeMap};
use crate::envoy::address;
use crate::envoy::cluster;
use crate::envoy::route;
use crate::model::{Excluded, Model, ObjectKey, ViewKey};
use crate::names::{OUTBOUND_ROUTE, outbound_route};
use crate::policy::context::PolicyContext;
use crate::policy::port::port_routings_for;
use xds_types::XdsType;

impl Builder {
    /// The maps of a view, building it on first use.
    pub fn view(&mut self, model: &Model, key: &ViewKey) -> ViewMaps {
        if let Some(v) = self.views.get(key) {
            return v.maps.clone();
        }
        // A variant starts as a copy of its view (every part shared, nothing encoded);
        // the next update gives it its own parts for what it leaves out.
        if key.variant.is_some()
            && let Some(base) = self.views.get(&key.base())
        {
            let state = base.clone();
            let maps = state.maps.clone();
            if let Some(d) = self.diagnostics.get(&Origin::Route(key.base())).cloned() {
                self.diagnostics.insert(Origin::Route(key.clone()), d);
            }
            self.views.insert(key.clone(), state);
            return maps;
        }
        if key.grpc && !self.grpc {
            self.start_grpc(model);
        }
        let mut state = ViewState::default();
        let (mut clusters, mut endpoints) = (TypeMap::new(), TypeMap::new());
        let (mut routes, mut listeners) = (TypeMap::new(), TypeMap::new());
        for (k, parts) in &self.services {
            let Some(svc) = &parts.svc else { continue };
            if !key.sees(svc) {
                continue;
            }
            let mut names = Names::default();
            let (own_clusters, own_endpoints) = if key.grpc {
                parts.grpc_view(&key.namespace)
            } else {
                (parts.clusters.clone(), parts.endpoints.clone())
            };
            for c in &own_clusters {
                clusters.insert(c.name.clone(), c.clone());
                names.clusters.push(c.name.clone());
            }
            let own_routes = if key.grpc {
                parts.grpc_routes_for(&key.namespace)
            } else {
                parts.port_routes_for(&key.namespace)
            };
            for r in own_routes {
                routes.insert(r.name.clone(), r.clone());
                names.routes.push(r.name.clone());
            }
            for e in &own_endpoints {
                endpoints.insert(e.name.clone(), e.clone());
                names.endpoints.push(e.name.clone());
            }
            if key.grpc {
                for l in parts.grpc_listeners_for(&key.namespace) {
                    listeners.insert(l.name.clone(), l.clone());
                    names.listeners.push(l.name.clone());
                }
            }
            state.by_service.insert(k.clone(), names);
        }
        state.maps.clusters = Arc::new(clusters);
        state.maps.endpoints = Arc::new(endpoints);
        state.maps.listeners = Arc::new(listeners);
        let mut count = 0;
        if !key.grpc {
            let table = self.assemble(model, key, &state, (None, &TypeMap::new()), &mut count);
            routes.insert(table.route.name.clone(), table.route);
            state.maps.vhosts = table.vhosts;
        }
        state.maps.routes = Arc::new(routes);
        let maps = state.maps.clone();
        self.views.insert(key.clone(), state);
        maps
    }

    /// Forgets a view no proxy uses any more.
    pub fn drop_view(&mut self, key: &ViewKey) {
        self.views.remove(key);
        self.diagnostics.remove(&Origin::Route(key.clone()));
    }

    /// Forgets the view variants `keep` says are no longer used.
    pub fn retain_variants(&mut self, keep: impl Fn(&ViewKey) -> bool) {
        let gone: Vec<ViewKey> = self
            .views
            .keys()
            .filter(|k| k.variant.is_some() && !keep(k))
            .cloned()
            .collect();
        for k in gone {
            self.drop_view(&k);
        }
    }

    /// A view's outbound table; a variant takes the one another variant of its view that
    /// leaves out the same objects assembled in this build.
    fn variant_route(
        &mut self,
        model: &Model,
        key: &ViewKey,
        state: &ViewState,
        old: (Option<&Arc<Encoded>>, &TypeMap),
        memo: &mut PolicyMemo,
        count: &mut usize,
    ) -> Table {
        if key.variant.is_none() || state.excluded.is_empty() {
            return self.assemble(model, key, state, old, count);
        }
        let base = key.base();
        let found = memo
            .routes
            .iter()
            .find(|(v, e, _, _)| *v == base && *e == state.excluded)
            .map(|(_, _, by, t)| (by.clone(), t.clone()));
        match found {
            Some((by, table)) => {
                if let Some(d) = self.diagnostics.get(&Origin::Route(by)).cloned() {
                    self.diagnostics.insert(Origin::Route(key.clone()), d);
                }
                keep_held(table, old)
            }
            None => {
                let table = self.assemble(model, key, state, old, count);
                memo.routes
                    .push((base, state.excluded.clone(), key.clone(), table.clone()));
                table
            }
        }
    }

    /// The view's outbound table, whole or apart (`key.vhds`); what equals `old` (the
    /// table and virtual hosts held) keeps its `Arc`.
    fn assemble(
        &mut self,
        model: &Model,
        key: &ViewKey,
        state: &ViewState,
        old: (Option<&Arc<Encoded>>, &TypeMap),
        count: &mut usize,
    ) -> Table {
        let parts = self.services.iter().filter_map(|(k, p)| {
            p.svc.as_ref().filter(|s| key.sees(s))?;
            Some(match state.overrides.get(k) {
                Some(o) => o.vhosts.iter(),
                None => p.vhosts_for(&key.namespace).iter(),
            })
        });
        if key.vhds {
            let mut diagnostics = Vec::new();
            let claimed = route::claim(parts.flatten(), &key.namespace, &mut diagnostics);
            self.diagnostics
                .insert(Origin::Route(key.clone()), diagnostics);
            let vhosts = claimed
                .iter()
                .map(|c| {
                    let e = host_apart(model, c, old.1, count);
                    (e.name.clone(), e)
                })
                .collect();
            return Table {
                route: encode(model, &route::table_apart(), old.0, count),
                vhosts: Arc::new(vhosts),
            };
        }
        let out = route::assemble(parts.flatten(), &key.namespace);
        self.diagnostics
            .insert(Origin::Route(key.clone()), out.diagnostics);
        // Always exactly one route table.
        let route = match out.resources.first() {
            Some(r) => encode(model, r, old.0, count),
            None => Arc::new(Encoded::synthetic(XdsType::Route, OUTBOUND_ROUTE, "", &[])),
        };
        Table {
            route,
            vhosts: Arc::new(TypeMap::new()),
        }
    }

    /// The view-local parts of Service `key` under `policy`, if they differ from the
    /// shared ones. `current` is what the view holds now: a part equal to it keeps its
    /// `Arc` (the shared part changed under an object the view leaves out: nothing to
    /// send).
    fn override_of(
        &self,
        model: &Model,
        (policy, client): (&PolicyContext, &str),
        key: &NsName,
        (current, held_routes): (&TypeMap, &TypeMap),
        count: &mut usize,
    ) -> Option<Override> {
        let parts = self.services.get(key)?;
        let svc = parts.svc.as_ref()?;
        let routings = port_routings_for(model, policy, svc, Some(client));
        let vhosts = route::vhost_parts(model, svc, &routings);
        let port_routes: Vec<Arc<Encoded>> = address::port_routes(svc, &vhosts)
            .iter()
            .map(|r| {
                let old = parts.port_routes.iter().find(|c| *c.name == *r.name);
                let new = encode(model, r, old, count);
                match held_routes.get(&*r.name) {
                    Some(held) if held.same_as(&new) => held.clone(),
                    _ => new,
                }
            })
            .collect();
        let clusters: Vec<Arc<Encoded>> = svc
            .ports
            .iter()
            .map(|p| {
                let r = cluster::outbound(model, &self.mesh, policy, svc, p);
                let old = parts.clusters.iter().find(|c| *c.name == *r.name);
                let new = encode(model, &r, old, count);
                match current.get(&*r.name) {
                    Some(held) if held.same_as(&new) => held.clone(),
                    _ => new,
                }
            })
            .collect();
        let same_clusters = clusters.len() == parts.clusters.len()
            && clusters
                .iter()
                .zip(&parts.clusters)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        (vhosts != parts.vhosts_for(client) || !same_clusters).then_some(Override {
            clusters,
            vhosts,
            port_routes,
        })
    }

    /// A view's view-local parts after this build. Its policy (and which Services differ
    /// under it) is resolved again only when what it leaves out or some policy changed;
    /// otherwise only the differing Services rebuilt by this build are looked at again,
    /// so a view that leaves something out costs little more than one that does not.
    fn overrides(
        &self,
        model: &Model,
        view: &ViewKey,
        state: &mut ViewState,
        excl: &Excluded,
        (updated, policy_changed, memo): (
            &BTreeMap<&NsName, &ServiceUpdate>,
            bool,
            &mut PolicyMemo,
        ),
        count: &mut usize,
    ) -> BTreeMap<NsName, Override> {
        if excl.is_empty() {
            state.policy = None;
            state.differs = Arc::default();
            return BTreeMap::new();
        }
        let redo = policy_changed || state.policy.is_none() || *excl != state.excluded;
        if redo {
            let previous = state
                .policy
                .as_ref()
                .map(|p| &p.splits)
                .unwrap_or(&self.policy.splits);
            let found = memo
                .policies
                .iter()
                .find(|(e, prev, _, _)| e == excl && prev == previous)
                .map(|(_, _, p, d)| (p.clone(), d.clone()));
            let (policy, differs) = match found {
                Some(found) => found,
                None => {
                    let policy = Arc::new(PolicyContext::new(model, previous, excl));
                    let differs = Arc::new(policy_changes(&self.policy, &policy, &BTreeSet::new()));
                    memo.policies.push((
                        excl.clone(),
                        previous.clone(),
                        policy.clone(),
                        differs.clone(),
                    ));
                    (policy, differs)
                }
            };
            state.differs = differs;
            state.policy = Some(policy);
        }
        let Some(policy) = state.policy.as_ref() else {
            return BTreeMap::new();
        };
        let check: BTreeSet<NsName> = if redo {
            state
                .differs
                .iter()
                .chain(state.overrides.keys())
                .cloned()
                .collect()
        } else {
            updated
                .keys()
                .filter(|k| state.differs.contains(**k) || state.overrides.contains_key(**k))
                .map(|k| (*k).clone())
                .collect()
        };
        let mut out = state.overrides.clone();
        for key in check {
            let o = state
                .differs
                .contains(&key)
                .then(|| {
                    let held = (&*state.maps.clusters, &*state.maps.routes);
                    self.override_of(model, (policy, &view.namespace), &key, held, count)
                })
                .flatten();
            match o {
                Some(o) => out.insert(key, o),
                None => out.remove(&key),
            };
        }
        out
    }

    /// Brings one view up to date with the Services that changed and with what it
    /// leaves out; returns what changed in it.
    pub(super) fn update_view(
        &mut self,
        model: &Model,
        key: &ViewKey,
        state: &mut ViewState,
        (updated, policy_changed, memo): (
            &BTreeMap<&NsName, &ServiceUpdate>,
            bool,
            &mut PolicyMemo,
        ),
        excluded: &BTreeMap<ViewKey, Excluded>,
        count: &mut usize,
    ) -> Changes {
        let mut changes = Changes::default();
        // What the view leaves out, and the view-local parts that follow from it.
        // gRPC views share every part (containment of gRPC NACKs keeps the last good
        // version per stream, without view-local rebuilds).
        let excl = if key.grpc {
            Excluded::new()
        } else {
            excluded.get(key).cloned().unwrap_or_default()
        };
        let overrides = self.overrides(
            model,
            key,
            state,
            &excl,
            (updated, policy_changed, memo),
            count,
        );
        let (affected, overrides_changed) = affected(updated, &state.overrides, &overrides);
        state.overrides = overrides;
        state.excluded = excl;
        let mut route_dirty = false;
        for svc_key in &affected {
            let parts = self.services.get(svc_key);
            let svc = parts.and_then(|p| p.svc.as_ref());
            let sees = svc.is_some_and(|s| key.sees(s));
            let upd = updated.get(svc_key);
            let saw = match upd {
                Some(u) => u.old.as_ref().is_some_and(|s| key.sees(s)),
                None => sees,
            };
            let override_of = state.overrides.get(svc_key);
            type Parts<'a> = (&'a [Arc<Encoded>], &'a [Arc<Encoded>], &'a [Arc<Encoded>]);
            let listeners: &[Arc<Encoded>] = match (sees, parts) {
                (true, Some(p)) if key.grpc => p.grpc_listeners_for(&key.namespace),
                _ => &[],
            };
            let grpc_view = match (sees, parts) {
                (true, Some(p)) if key.grpc => Some(p.grpc_view(&key.namespace)),
                _ => None,
            };
            let (clusters, endpoints, routes): Parts = match (sees, parts, &grpc_view) {
                (true, Some(p), Some((c, e))) => (c, e, p.grpc_routes_for(&key.namespace)),
                (true, Some(p), None) => (
                    override_of
                        .map(|o| o.clusters.as_slice())
                        .unwrap_or(&p.clusters),
                    &p.endpoints,
                    override_of
                        .map(|o| o.port_routes.as_slice())
                        .unwrap_or(p.port_routes_for(&key.namespace)),
                ),
                _ => (&[], &[], &[]),
            };
            let old = state.by_service.remove(svc_key).unwrap_or_default();
            let mut names = Names::default();
            for (desired, map, was, now, out) in [
                (
                    clusters,
                    &state.maps.clusters,
                    &old.clusters,
                    &mut names.clusters,
                    &mut changes.clusters,
                ),
                (
                    endpoints,
                    &state.maps.endpoints,
                    &old.endpoints,
                    &mut names.endpoints,
                    &mut changes.endpoints,
                ),
                (
                    routes,
                    &state.maps.routes,
                    &old.routes,
                    &mut names.routes,
                    &mut changes.routes,
                ),
                (
                    listeners,
                    &state.maps.listeners,
                    &old.listeners,
                    &mut names.listeners,
                    &mut changes.listeners,
                ),
            ] {
                put_and_remove(desired, map, was, now, out);
            }
            if !names.clusters.is_empty()
                || !names.endpoints.is_empty()
                || !names.routes.is_empty()
                || !names.listeners.is_empty()
            {
                state.by_service.insert(svc_key.clone(), names);
            }
            let vhosts_changed = if overrides_changed.contains(svc_key) {
                true
            } else {
                upd.is_some_and(|u| u.vhosts_changed) && override_of.is_none()
            };
            route_dirty |= !key.grpc && (saw != sees || (sees && vhosts_changed));
        }
        apply(&mut state.maps.clusters, &changes.clusters);
        apply(&mut state.maps.endpoints, &changes.endpoints);
        if route_dirty {
            let old = state.maps.routes.get(outbound_route(key.vhds)).cloned();
            let held = (old.as_ref(), &*state.maps.vhosts);
            let table = self.variant_route(model, key, state, held, memo, count);
            if old.as_ref().is_none_or(|o| !Arc::ptr_eq(o, &table.route)) {
                changes.routes.push(Update::Put(table.route));
            }
            changes.vhosts = map_diff(&state.maps.vhosts, &table.vhosts);
            state.maps.vhosts = table.vhosts;
        }
        apply(&mut state.maps.routes, &changes.routes);
        apply(&mut state.maps.listeners, &changes.listeners);
        changes
    }
}

/// The Services a view looks at again: those rebuilt, and those whose view-local parts
/// changed (also returned alone).
fn affected(
    updated: &BTreeMap<&NsName, &ServiceUpdate>,
    old: &BTreeMap<NsName, Override>,
    new: &BTreeMap<NsName, Override>,
) -> (BTreeSet<NsName>, BTreeSet<NsName>) {
    let mut affected: BTreeSet<NsName> = updated.keys().map(|k| (*k).clone()).collect();
    for k in old.keys().chain(new.keys()) {
        if old.get(k) != new.get(k) {
            affected.insert(k.clone());
        }
    }
    let overrides_changed: BTreeSet<NsName> = affected
        .iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    (affected, overrides_changed)
}

/// The updates that take a view's map of one type from the names a Service had in it
/// (`was`) to the parts it should hold (`desired`); the names it now has go to `now`.
fn put_and_remove(
    desired: &[Arc<Encoded>],
    map: &TypeMap,
    was: &[Arc<str>],
    now: &mut Vec<Arc<str>>,
    out: &mut Vec<Update>,
) {
    for d in desired {
        if map.get(&d.name).is_none_or(|m| !Arc::ptr_eq(m, d)) {
            out.push(Update::Put(d.clone()));
        }
        now.push(d.name.clone());
    }
    for n in was.iter().filter(|n| !now.contains(n)) {
        out.push(Update::Remove(n.clone()));
    }
}

/// `table` with each part equal to one `old` holds taken from `old` (the same `Arc`:
/// nothing to send for it).
fn keep_held(table: Table, (route, vhosts): (Option<&Arc<Encoded>>, &TypeMap)) -> Table {
    let route = match route {
        Some(o) if o.same_as(&table.route) => o.clone(),
        _ => table.route,
    };
    let kept = table
        .vhosts
        .iter()
        .map(|(n, v)| match vhosts.get(n) {
            Some(o) if o.same_as(v) => (n.clone(), o.clone()),
            _ => (n.clone(), v.clone()),
        })
        .collect();
    Table {
        route,
        vhosts: Arc::new(kept),
    }
}

/// The updates that take map `old` to `new`: puts for what is new or another `Arc`,
/// removes for what `new` lacks.
fn map_diff(old: &TypeMap, new: &TypeMap) -> Vec<Update> {
    let mut out: Vec<Update> = new
        .iter()
        .filter(|(n, v)| old.get(*n).is_none_or(|o| !Arc::ptr_eq(o, v)))
        .map(|(_, v)| Update::Put(v.clone()))
        .collect();
    out.extend(
        old.keys()
            .filter(|n| !new.contains_key(*n))
            .map(|n| Update::Remove(n.clone())),
    );
    out
}

/// Claimed virtual host `c` apart, encoded: its part's memo when it kept the same names
/// from sources at the same revisions (no host built, nothing encoded), else encoded and
/// kept there; the `Arc` held in `old` when that is the same resource.
fn host_apart(model: &Model, c: &route::Claimed, old: &TypeMap, count: &mut usize) -> Arc<Encoded> {
    let rev = |k: &ObjectKey| model.rev(k).unwrap_or(0);
    let enc = match c.part.apart.get(&c.kept, rev) {
        Some(e) => e,
        None => {
            let r = route::host_apart(c);
            let e = encode(model, &r, old.get(r.name.as_str()), count);
            c.part.apart.set(&c.kept, &e);
            e
        }
    };
    match old.get(&*enc.name) {
        Some(o) if !Arc::ptr_eq(o, &enc) && o.same_as(&enc) => o.clone(),
        _ => enc,
    }
}
