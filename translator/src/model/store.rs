//! The indexed model itself: [`Model`], which validates and stores the objects, keeps
//! each one's revision and the set changed since the last build, and answers the
//! translator's look-ups (a Service's slices and selected pods, an endpoint's pod).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crds::{
    GRPCRoute, HTTPRoute, HTTPRouteGroup, RetryPolicy, TCPRoute, TrafficSplit, TrafficTarget,
};

use super::objects::{Kind, ModelError, NsName, Object, ObjectKey};
use super::types::{MeshPod, MeshService, Slice, SliceEndpoint};
use super::{convert, index};

/// The indexed model. Ordered maps keep translation output deterministic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    services: BTreeMap<NsName, MeshService>,
    slices: BTreeMap<NsName, Slice>,
    pods: BTreeMap<NsName, MeshPod>,
    splits: BTreeMap<NsName, TrafficSplit>,
    retry_policies: BTreeMap<NsName, RetryPolicy>,
    route_groups: BTreeMap<NsName, HTTPRouteGroup>,
    http_routes: BTreeMap<NsName, HTTPRoute>,
    grpc_routes: BTreeMap<NsName, GRPCRoute>,
    traffic_targets: BTreeMap<NsName, TrafficTarget>,
    tcp_routes: BTreeMap<NsName, TCPRoute>,
    /// Slices by Service, pods by label.
    pub(super) index: index::Indexes,
    /// Revision of each object: a number that changes whenever its contents do.
    revs: BTreeMap<ObjectKey, u64>,
    last_rev: u64,
    /// Objects whose revision changed or that were deleted since the last
    /// [`Model::take_changes`].
    changed: BTreeSet<ObjectKey>,
}

/// Revision bookkeeping shared by every kind.
struct Revs<'a> {
    revs: &'a mut BTreeMap<ObjectKey, u64>,
    last: &'a mut u64,
    changed: &'a mut BTreeSet<ObjectKey>,
}

impl Revs<'_> {
    fn bump(&mut self, key: ObjectKey) {
        *self.last += 1;
        self.revs.insert(key.clone(), *self.last);
        self.changed.insert(key);
    }
}

/// Stores `value` under `key`, and gives the object a new revision if it changed.
fn store<T: PartialEq>(
    map: &mut BTreeMap<NsName, T>,
    key: NsName,
    value: T,
    kind: Kind,
    revs: &mut Revs<'_>,
) {
    if map.get(&key) == Some(&value) {
        return;
    }
    revs.bump(ObjectKey::new(kind, &key.0, &key.1));
    map.insert(key, value);
}

impl Model {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates `object` and puts it into the model, replacing an older version.
    /// On error the model is unchanged: the last good version keeps serving. One
    /// exception: an invalid TrafficTarget the model has no version of closes its
    /// destination (see `convert::closed_target`), as authorization fails closed.
    pub fn apply(&mut self, object: &Object) -> Result<(), ModelError> {
        let mut revs = Revs {
            revs: &mut self.revs,
            last: &mut self.last_rev,
            changed: &mut self.changed,
        };
        let revs = &mut revs;
        match object {
            Object::Service(s) => {
                let svc = convert::service(s)?;
                let key = (svc.namespace.clone(), svc.name.clone());
                if let Some(old) = self.services.get(&key) {
                    self.index.remove_service(old);
                }
                self.index.add_service(&svc);
                store(&mut self.services, key, svc, Kind::Service, revs);
            }
            Object::EndpointSlice(s) => {
                let slice = convert::slice(s)?;
                let key = (slice.namespace.clone(), slice.name.clone());
                if let Some(old) = self.slices.get(&key) {
                    self.index.remove_slice(old);
                }
                self.index.add_slice(&slice);
                store(&mut self.slices, key, slice, Kind::EndpointSlice, revs);
            }
            Object::Pod(p) => {
                let pod = convert::pod(p)?;
                let key = (pod.namespace.clone(), pod.name.clone());
                if let Some(old) = self.pods.get(&key) {
                    self.index.remove_pod(old);
                }
                self.index.add_pod(&pod);
                store(&mut self.pods, key, pod, Kind::Pod, revs);
            }
            Object::TrafficSplit(t) => {
                let key = convert::traffic_split(t)?;
                let value = t.as_ref().clone();
                store(&mut self.splits, key, value, Kind::TrafficSplit, revs);
            }
            Object::RetryPolicy(r) => {
                let key = convert::retry_policy(r)?;
                let value = r.as_ref().clone();
                store(
                    &mut self.retry_policies,
                    key,
                    value,
                    Kind::RetryPolicy,
                    revs,
                );
            }
            Object::HTTPRouteGroup(g) => {
                let key = convert::route_group(g)?;
                let value = g.as_ref().clone();
                let changed = self.route_groups.get(&key) != Some(&value);
                store(
                    &mut self.route_groups,
                    key.clone(),
                    value,
                    Kind::HTTPRouteGroup,
                    revs,
                );
                if changed {
                    self.touch_splits_using(&key);
                }
            }
            Object::HTTPRoute(r) => {
                let key = convert::http_route(r)?;
                let value = r.as_ref().clone();
                store(&mut self.http_routes, key, value, Kind::HTTPRoute, revs);
            }
            Object::GRPCRoute(r) => {
                let key = convert::grpc_route(r)?;
                let value = r.as_ref().clone();
                store(&mut self.grpc_routes, key, value, Kind::GRPCRoute, revs);
            }
            Object::TrafficTarget(t) => {
                let key = match convert::traffic_target(t) {
                    Ok(key) => key,
                    Err(e) => {
                        // Never seen valid: it closes its destination (allowing nothing)
                        // rather than leave it open. An update keeps the last good one.
                        if let Some((key, closed)) = convert::closed_target(t)
                            && !self.traffic_targets.contains_key(&key)
                        {
                            store(
                                &mut self.traffic_targets,
                                key,
                                closed,
                                Kind::TrafficTarget,
                                revs,
                            );
                        }
                        return Err(e);
                    }
                };
                let value = t.as_ref().clone();
                store(
                    &mut self.traffic_targets,
                    key,
                    value,
                    Kind::TrafficTarget,
                    revs,
                );
            }
            Object::TCPRoute(r) => {
                let key = convert::tcp_route(r)?;
                let value = r.as_ref().clone();
                store(&mut self.tcp_routes, key, value, Kind::TCPRoute, revs);
            }
        }
        Ok(())
    }

    /// A split's revision covers the HTTPRouteGroups it uses: a change to one is a
    /// change to every split that references it.
    fn touch_splits_using(&mut self, (ns, group): &NsName) {
        let users: Vec<NsName> = self
            .splits
            .iter()
            .filter(|((sns, _), ts)| sns == ns && ts.spec.matches.iter().any(|m| m.name == *group))
            .map(|(k, _)| k.clone())
            .collect();
        for (sns, name) in users {
            self.last_rev += 1;
            self.revs.insert(
                ObjectKey::new(Kind::TrafficSplit, &sns, &name),
                self.last_rev,
            );
        }
    }

    /// The objects that changed (or were deleted) since the last call, for an
    /// incremental build.
    pub fn take_changes(&mut self) -> BTreeSet<ObjectKey> {
        std::mem::take(&mut self.changed)
    }

    /// The object's revision: it changes whenever the object's contents do.
    pub fn rev(&self, key: &ObjectKey) -> Option<u64> {
        self.revs.get(key).copied()
    }

    /// Checks `object` without changing the model.
    pub fn validate(object: &Object) -> Result<(), ModelError> {
        match object {
            Object::Service(s) => convert::service(s).map(drop),
            Object::EndpointSlice(s) => convert::slice(s).map(drop),
            Object::Pod(p) => convert::pod(p).map(drop),
            Object::TrafficSplit(t) => convert::traffic_split(t).map(drop),
            Object::RetryPolicy(r) => convert::retry_policy(r).map(drop),
            Object::HTTPRouteGroup(g) => convert::route_group(g).map(drop),
            Object::HTTPRoute(r) => convert::http_route(r).map(drop),
            Object::GRPCRoute(r) => convert::grpc_route(r).map(drop),
            Object::TrafficTarget(t) => convert::traffic_target(t).map(drop),
            Object::TCPRoute(r) => convert::tcp_route(r).map(drop),
        }
    }

    /// Removes an object; returns whether it was there.
    pub fn delete(&mut self, key: &ObjectKey) -> bool {
        if self.revs.remove(key).is_some() {
            self.changed.insert(key.clone());
        }
        let k = (key.namespace.clone(), key.name.clone());
        if key.kind == Kind::HTTPRouteGroup && self.route_groups.contains_key(&k) {
            self.touch_splits_using(&k);
        }
        match key.kind {
            Kind::Service => self
                .services
                .remove(&k)
                .inspect(|old| self.index.remove_service(old))
                .is_some(),
            Kind::EndpointSlice => self
                .slices
                .remove(&k)
                .inspect(|old| self.index.remove_slice(old))
                .is_some(),
            Kind::Pod => self
                .pods
                .remove(&k)
                .inspect(|old| self.index.remove_pod(old))
                .is_some(),
            Kind::TrafficSplit => self.splits.remove(&k).is_some(),
            Kind::RetryPolicy => self.retry_policies.remove(&k).is_some(),
            Kind::HTTPRouteGroup => self.route_groups.remove(&k).is_some(),
            Kind::HTTPRoute => self.http_routes.remove(&k).is_some(),
            Kind::GRPCRoute => self.grpc_routes.remove(&k).is_some(),
            Kind::TrafficTarget => self.traffic_targets.remove(&k).is_some(),
            Kind::TCPRoute => self.tcp_routes.remove(&k).is_some(),
        }
    }

    /// Keys of every object of `kind`, ordered.
    pub fn keys(&self, kind: Kind) -> Vec<ObjectKey> {
        let key = |(ns, name): &NsName| ObjectKey {
            kind,
            namespace: ns.clone(),
            name: name.clone(),
        };
        match kind {
            Kind::Service => self.services.keys().map(key).collect(),
            Kind::EndpointSlice => self.slices.keys().map(key).collect(),
            Kind::Pod => self.pods.keys().map(key).collect(),
            Kind::TrafficSplit => self.splits.keys().map(key).collect(),
            Kind::RetryPolicy => self.retry_policies.keys().map(key).collect(),
            Kind::HTTPRouteGroup => self.route_groups.keys().map(key).collect(),
            Kind::HTTPRoute => self.http_routes.keys().map(key).collect(),
            Kind::GRPCRoute => self.grpc_routes.keys().map(key).collect(),
            Kind::TrafficTarget => self.traffic_targets.keys().map(key).collect(),
            Kind::TCPRoute => self.tcp_routes.keys().map(key).collect(),
        }
    }

    /// One service.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&MeshService> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Every TrafficSplit, ordered by namespace and name.
    pub fn traffic_splits(&self) -> impl Iterator<Item = &TrafficSplit> {
        self.splits.values()
    }

    /// One HTTPRouteGroup.
    pub fn route_group(&self, namespace: &str, name: &str) -> Option<&HTTPRouteGroup> {
        self.route_groups
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Every HTTPRoute, ordered by namespace and name.
    pub fn http_routes(&self) -> impl Iterator<Item = &HTTPRoute> {
        self.http_routes.values()
    }

    /// Every GRPCRoute, ordered by namespace and name.
    pub fn grpc_routes(&self) -> impl Iterator<Item = &GRPCRoute> {
        self.grpc_routes.values()
    }

    /// The TrafficTargets of one namespace, ordered by name.
    pub fn traffic_targets_in(&self, namespace: &str) -> impl Iterator<Item = &TrafficTarget> {
        let namespace = namespace.to_string();
        self.traffic_targets
            .range((namespace.clone(), String::new())..)
            .take_while(move |((ns, _), _)| *ns == namespace)
            .map(|(_, t)| t)
    }

    /// Every TrafficTarget, ordered by namespace and name.
    pub fn traffic_targets(&self) -> impl Iterator<Item = &TrafficTarget> {
        self.traffic_targets.values()
    }

    /// One TCPRoute.
    pub fn tcp_route(&self, namespace: &str, name: &str) -> Option<&TCPRoute> {
        self.tcp_routes
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// One RetryPolicy.
    pub fn retry_policy(&self, namespace: &str, name: &str) -> Option<&RetryPolicy> {
        self.retry_policies
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Every RetryPolicy, ordered by namespace and name.
    pub fn retry_policies(&self) -> impl Iterator<Item = &RetryPolicy> {
        self.retry_policies.values()
    }

    /// Every service, ordered by namespace and name.
    pub fn services(&self) -> impl Iterator<Item = &MeshService> {
        self.services.values()
    }

    /// The services of one namespace, ordered by name.
    pub fn services_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a MeshService> {
        self.services
            .range((namespace.to_string(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, s)| s)
    }

    /// Every pod, ordered by namespace and name.
    pub fn pods(&self) -> impl Iterator<Item = &MeshPod> {
        self.pods.values()
    }

    /// The pods of one namespace, ordered by name.
    pub fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a MeshPod> {
        self.pods
            .range((namespace.to_string(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, p)| p)
    }

    /// Every EndpointSlice, ordered by namespace and name.
    pub fn slices(&self) -> impl Iterator<Item = &Slice> {
        self.slices.values()
    }

    /// The Service an EndpointSlice belongs to.
    pub fn slice_service(&self, namespace: &str, name: &str) -> Option<String> {
        self.slices
            .get(&(namespace.to_string(), name.to_string()))
            .map(|s| s.service.clone())
    }

    /// One pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&MeshPod> {
        self.pods.get(&(namespace.to_string(), name.to_string()))
    }

    /// The slices of one service, ordered by slice name.
    pub fn slices_of<'a>(&'a self, svc: &'a MeshService) -> impl Iterator<Item = &'a Slice> {
        self.index
            .slices_of(&svc.namespace, &svc.name)
            .into_iter()
            .flatten()
            .filter_map(move |name| self.slices.get(&(svc.namespace.clone(), name.clone())))
    }

    /// The pods `svc` selects, ordered by name (none without a selector or with an empty
    /// one).
    pub fn pods_selected_by<'a>(
        &'a self,
        svc: &'a MeshService,
    ) -> impl Iterator<Item = &'a MeshPod> {
        self.index
            .candidates(svc)
            .into_iter()
            .flatten()
            .filter_map(move |name| self.pods.get(&(svc.namespace.clone(), name.clone())))
            .filter(move |p| {
                svc.selector
                    .as_ref()
                    .is_some_and(|sel| sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            })
    }

    /// Whether connections to `ep` (an endpoint of a slice in `namespace`) get mesh
    /// mTLS under [`UpstreamTls::Auto`](super::types::UpstreamTls::Auto): yes for a pod
    /// with a sidecar, and for a pod the slice names that is not known yet (fail
    /// closed); no for an address that is no known pod's, or a pod without a sidecar.
    pub fn endpoint_in_mesh(&self, namespace: &str, ep: &SliceEndpoint) -> bool {
        match &ep.pod {
            Some(name) => self.pod(namespace, name).is_none_or(|p| p.in_mesh),
            None => self
                .index
                .pods_at(ep.ip)
                .any(|(ns, name)| self.pod(ns, name).is_some_and(|p| p.in_mesh)),
        }
    }

    /// The pod behind `ep` (an endpoint of a slice in `namespace`): the one it names, or
    /// the one at its address.
    pub fn endpoint_pod(&self, namespace: &str, ep: &SliceEndpoint) -> Option<&MeshPod> {
        match &ep.pod {
            Some(name) => self.pod(namespace, name),
            None => self
                .index
                .pods_at(ep.ip)
                .find_map(|(ns, name)| self.pod(ns, name)),
        }
    }

    /// The Services with an endpoint that is `namespace/pod` by name or by `ip`: their
    /// endpoints' mTLS choice depends on the pod.
    pub fn services_with_endpoint(
        &self,
        namespace: &str,
        pod: &str,
        ip: Option<IpAddr>,
    ) -> BTreeSet<NsName> {
        self.index
            .slices_naming(namespace, pod, ip)
            .filter_map(|(ns, slice)| {
                self.slices
                    .get(&(ns.to_string(), slice.to_string()))
                    .map(|s| (s.namespace.clone(), s.service.clone()))
            })
            .collect()
    }

    /// The services whose selector matches `pod`, ordered by name (looked up by the pod's
    /// labels, not by a scan of its namespace).
    pub fn services_selecting<'a>(
        &'a self,
        pod: &'a MeshPod,
    ) -> impl Iterator<Item = &'a MeshService> {
        self.index
            .may_select(&pod.namespace, &pod.labels)
            .into_iter()
            .filter_map(|name| self.service(&pod.namespace, name))
            .filter(move |s| selects(s, pod))
    }
}

/// Whether `s`'s selector matches `pod`: same namespace, a selector with at least one
/// label, and every one of them on the pod.
fn selects(s: &MeshService, pod: &MeshPod) -> bool {
    s.namespace == pod.namespace
        && s.selector.as_ref().is_some_and(|sel| {
            !sel.is_empty() && sel.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
        })
}
