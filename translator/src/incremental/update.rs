//! One build of the incremental builder: which Services and pods a change makes dirty,
//! the policy resolved again, then Services, views and proxies rebuilt in that order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::changes::BuildOutput;
use super::select::{selected, selection};
use super::state::{
    Builder, Dirty, NsName, PolicyMemo, ProxyParts, ServiceUpdate, policy_changes, profile_of,
    same_own,
};
use crate::identity::ProxyIdentity;
use crate::model::{Excluded, Kind, Model, ObjectKey, ViewKey};
use crate::policy::context::PolicyContext;

/// What a change makes dirty, gathered before anything is rebuilt.
#[derive(Default)]
struct Pending {
    /// Services to rebuild, and what of each.
    dirty: BTreeMap<NsName, Dirty>,
    /// Pods whose proxies are rebuilt.
    dirty_pods: BTreeSet<NsName>,
    /// Services whose selected pods are recomputed (new or changed Services); pod
    /// changes adjust the others in place.
    pods_of: BTreeMap<NsName, BTreeSet<NsName>>,
    /// Whether the policy is resolved again.
    policy_changed: bool,
    /// Whether a Service's addresses or its ready pods changed: intercepted proxies'
    /// outbound listeners list them (gRPC client Listeners follow Service changes).
    addresses_changed: bool,
}

impl Builder {
    /// Applies a model change: `changed` names the objects that were applied or deleted
    /// since the last build, `excluded` the policy objects left out.
    pub fn update(
        &mut self,
        model: &Model,
        changed: &BTreeSet<ObjectKey>,
        excluded: &BTreeMap<ViewKey, Excluded>,
    ) -> BuildOutput {
        let before = self.diagnostics();
        let mut out = BuildOutput::default();
        let mut p = Pending {
            policy_changed: !self.built,
            ..Default::default()
        };
        if !self.built {
            self.first_build(model, &mut p);
        }
        for key in changed {
            let k = (key.namespace.clone(), key.name.clone());
            match key.kind {
                Kind::Service => self.service_changed(model, k, &mut p),
                Kind::EndpointSlice => self.slice_changed(model, k, &mut p),
                Kind::Pod => self.pod_changed(model, k, &mut p),
                Kind::TrafficSplit
                | Kind::RetryPolicy
                | Kind::HTTPRouteGroup
                | Kind::HTTPRoute
                | Kind::GRPCRoute => p.policy_changed = true,
                // Authorization is the destination pods' own: every pod of the
                // namespace gets its listeners rebuilt (unchanged ones send nothing).
                Kind::TrafficTarget | Kind::TCPRoute => self.namespace_pods(model, &k.0, &mut p),
            }
            if key.kind == Kind::HTTPRouteGroup {
                self.namespace_pods(model, &key.namespace, &mut p);
            }
        }
        if p.policy_changed {
            self.resolve_policy(model, changed, &mut p.dirty);
        }
        let svc_updates = self.rebuild_services(model, &mut p, &mut out);
        self.update_views(model, &svc_updates, p.policy_changed, excluded, &mut out);
        self.update_proxies(model, &p, &mut out);
        self.built = true;
        let after = self.diagnostics();
        out.appeared = after.difference(&before).cloned().collect();
        out.cleared = before.difference(&after).cloned().collect();
        out
    }

    /// The first build: every Service is dirty, every pod's proxies too, and the slice,
    /// pod and IP indexes are filled.
    fn first_build(&mut self, model: &Model, p: &mut Pending) {
        for svc in model.services() {
            p.dirty
                .entry((svc.namespace.clone(), svc.name.clone()))
                .or_default()
                .all = true;
        }
        for slice in model.slices() {
            self.slice_owner.insert(
                (slice.namespace.clone(), slice.name.clone()),
                (slice.namespace.clone(), slice.service.clone()),
            );
        }
        for svc in model.services() {
            p.pods_of
                .insert((svc.namespace.clone(), svc.name.clone()), BTreeSet::new());
        }
        for (pod, svcs) in selection(model) {
            for s in &svcs {
                p.pods_of.entry(s.clone()).or_default().insert(pod.clone());
            }
            self.pod_services.insert(pod.clone(), svcs);
            p.dirty_pods.insert(pod);
        }
        for pod in model.pods() {
            if let Some(ip) = pod.ip {
                self.pod_ips
                    .insert((pod.namespace.clone(), pod.name.clone()), ip);
            }
        }
    }

    /// Every pod of `ns`: its proxies are rebuilt.
    fn namespace_pods(&self, model: &Model, ns: &str, p: &mut Pending) {
        p.dirty_pods.extend(
            model
                .pods_in(ns)
                .map(|pod| (pod.namespace.clone(), pod.name.clone())),
        );
    }

    /// A Service applied or deleted: it is rebuilt whole, the pods it selects (before
    /// and now) get their proxies rebuilt, and the policy is resolved again (splits
    /// depend on which Services exist).
    fn service_changed(&mut self, model: &Model, k: NsName, p: &mut Pending) {
        p.addresses_changed = true;
        p.dirty.entry(k.clone()).or_default().all = true;
        p.policy_changed = true;
        let before = self
            .services
            .get(&k)
            .map(|parts| parts.pods.clone())
            .unwrap_or_default();
        p.dirty_pods.extend(before);
        let now = model
            .service(&k.0, &k.1)
            .map(|svc| selected(model, svc))
            .unwrap_or_default();
        p.dirty_pods.extend(now.iter().cloned());
        p.pods_of.insert(k, now);
    }

    /// An EndpointSlice applied or deleted: the endpoints of the Service it belongs to
    /// (before and now) are rebuilt.
    fn slice_changed(&mut self, model: &Model, k: NsName, p: &mut Pending) {
        // Intercepted proxies' outbound listeners list ready mesh pods by address
        // (`envoy::address`).
        p.addresses_changed = true;
        if let Some(owner) = self.slice_owner.remove(&k) {
            p.dirty.entry(owner).or_default().endpoints = true;
        }
        if let Some(owner) = model.slice_service(&k.0, &k.1) {
            self.slice_owner
                .insert(k.clone(), (k.0.clone(), owner.clone()));
            p.dirty.entry((k.0, owner)).or_default().endpoints = true;
        }
    }

    /// A Pod applied or deleted: its proxies, the endpoints that are this pod, and the
    /// clusters of the Services selecting it (before and now) are rebuilt.
    fn pod_changed(&mut self, model: &Model, k: NsName, p: &mut Pending) {
        p.dirty_pods.insert(k.clone());
        // Endpoints that are this pod (by name, old or new address) choose mTLS by
        // whether it runs a sidecar.
        let old_ip = self.pod_ips.remove(&k);
        let new_ip = model.pod(&k.0, &k.1).and_then(|pod| pod.ip);
        if let Some(ip) = new_ip {
            self.pod_ips.insert(k.clone(), ip);
        }
        let mut users = model.services_with_endpoint(&k.0, &k.1, new_ip);
        if old_ip != new_ip && old_ip.is_some() {
            users.extend(model.services_with_endpoint(&k.0, &k.1, old_ip));
        }
        // Whether an endpoint is in the mesh decides whether intercepted proxies list it.
        p.addresses_changed |= !users.is_empty();
        for s in users {
            p.dirty.entry(s).or_default().endpoints = true;
        }
        let mut svcs = self.pod_services.remove(&k).unwrap_or_default();
        for s in &svcs {
            if let Some(parts) = self.services.get_mut(s) {
                parts.pods.remove(&k);
            }
        }
        if let Some(pod) = model.pod(&k.0, &k.1) {
            let now: BTreeSet<NsName> = model
                .services_selecting(pod)
                .map(|s| (s.namespace.clone(), s.name.clone()))
                .collect();
            for s in &now {
                if let Some(parts) = self.services.get_mut(s) {
                    parts.pods.insert(k.clone());
                }
            }
            svcs.extend(now.iter().cloned());
            self.pod_services.insert(k, now);
        }
        for s in svcs {
            p.dirty.entry(s).or_default().clusters = true;
        }
    }

    /// Resolves the policy again; the Services whose routing it changed are dirty.
    /// Every Service a removed RetryPolicy targeted is among them (the old winners).
    fn resolve_policy(
        &mut self,
        model: &Model,
        changed: &BTreeSet<ObjectKey>,
        dirty: &mut BTreeMap<NsName, Dirty>,
    ) {
        let old = std::mem::take(&mut self.policy);
        let new = PolicyContext::new(model, &old.splits, &Excluded::new());
        let changed_services: BTreeSet<NsName> = changed
            .iter()
            .filter(|k| k.kind == Kind::Service)
            .map(|k| (k.namespace.clone(), k.name.clone()))
            .collect();
        let touched = policy_changes(&old, &new, &changed_services);
        // Retry policies that changed without changing a winner are caught by
        // rebuilding every Service they target.
        for k in changed.iter().filter(|k| k.kind == Kind::RetryPolicy) {
            if let Some(p) = model.retry_policy(&k.namespace, &k.name) {
                let d = dirty
                    .entry((k.namespace.clone(), p.spec.target_ref.name.clone()))
                    .or_default();
                d.clusters = true;
                d.vhosts = true;
            }
        }
        for s in touched {
            let d = dirty.entry(s).or_default();
            d.clusters = true;
            d.vhosts = true;
        }
        self.policy = new;
    }

    /// Rebuilds the dirty Services; returns those whose parts changed.
    fn rebuild_services(
        &mut self,
        model: &Model,
        p: &mut Pending,
        out: &mut BuildOutput,
    ) -> Vec<ServiceUpdate> {
        let mut svc_updates: Vec<ServiceUpdate> = Vec::new();
        for (key, what) in std::mem::take(&mut p.dirty) {
            let (cu, eu, vh, old_svc) = self.rebuild_service(model, &key, what, &mut out.encoded);
            let new_svc = self.services.get(&key).and_then(|parts| parts.svc.clone());
            if let Some(pods) = p.pods_of.remove(&key)
                && let Some(parts) = self.services.get_mut(&key)
            {
                parts.pods = pods;
            }
            if !cu.is_empty() || !eu.is_empty() || vh || old_svc != new_svc {
                svc_updates.push(ServiceUpdate {
                    key,
                    vhosts_changed: vh,
                    old: old_svc,
                });
            }
        }
        svc_updates
    }

    /// Brings every view up to date with the rebuilt Services.
    fn update_views(
        &mut self,
        model: &Model,
        svc_updates: &[ServiceUpdate],
        policy_changed: bool,
        excluded: &BTreeMap<ViewKey, Excluded>,
        out: &mut BuildOutput,
    ) {
        let updated: BTreeMap<&NsName, &ServiceUpdate> =
            svc_updates.iter().map(|u| (&u.key, u)).collect();
        let keys: Vec<ViewKey> = self.views.keys().cloned().collect();
        let mut memo = PolicyMemo::default();
        for key in keys {
            let Some(mut state) = self.views.remove(&key) else {
                continue;
            };
            let changes = self.update_view(
                model,
                &key,
                &mut state,
                (&updated, policy_changed, &mut memo),
                excluded,
                &mut out.encoded,
            );
            if !changes.is_empty() {
                out.views.push((key.clone(), changes, state.maps.clone()));
            }
            self.views.insert(key, state);
        }
    }

    /// Rebuilds the own resources of proxies beside dirty pods (every proxy on the first
    /// build, and those whose own resources list Services when an address changed).
    fn update_proxies(&mut self, model: &Model, p: &Pending, out: &mut BuildOutput) {
        let ids: Vec<ProxyIdentity> = self
            .proxies
            .keys()
            .filter(|id| {
                !self.built
                    || p.dirty_pods
                        .contains(&(id.namespace.clone(), id.pod.clone()))
                    || (p.addresses_changed && profile_of(id.kind).own_lists_services(id))
            })
            .cloned()
            .collect();
        for id in ids {
            let old = self
                .proxies
                .get(&id)
                .map(|parts| (parts.own.clone(), parts.view.clone()));
            let own = self.own(
                model,
                &id,
                old.as_ref().map(|(o, _)| o.as_ref()),
                &mut out.encoded,
            );
            let view = Self::view_key(model, &id);
            let same = old
                .as_ref()
                .is_some_and(|(o, v)| same_own(o, &own) && *v == view);
            if !same {
                let own = Arc::new(own);
                self.proxies.insert(
                    id.clone(),
                    ProxyParts {
                        own: own.clone(),
                        view: view.clone(),
                    },
                );
                out.proxies.push((id, own, view));
            }
        }
    }
}
