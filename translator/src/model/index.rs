//! Secondary indexes of the model, kept beside its maps so that "the slices of a Service",
//! "the pods a selector matches" and "the Services selecting a pod" are lookups, not
//! scans of the namespace: a build over S Services and P pods stays linear, and a
//! proxy's own resources do not look at every Service of its namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::objects::NsName;
use super::types::{MeshPod, MeshService, Slice};

/// (namespace, label key, label value).
type Label = (String, String, String);

/// What the model indexes besides its primary maps.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Indexes {
    /// (namespace, Service) -> names of its EndpointSlices.
    slices: BTreeMap<NsName, BTreeSet<String>>,
    /// (namespace, key, value) -> names of the pods carrying that label.
    labels: BTreeMap<Label, BTreeSet<String>>,
    /// (namespace, key, value) -> names of the Services whose selector's first label
    /// it is (a Service with no selector, or an empty one, selects nothing).
    selectors: BTreeMap<Label, BTreeSet<String>>,
    /// Pod IP -> the pods that have it (two only while an address moves).
    pod_ips: BTreeMap<IpAddr, BTreeSet<NsName>>,
    /// (namespace, pod) -> names of the slices whose endpoints name it.
    slice_pods: BTreeMap<NsName, BTreeSet<String>>,
    /// Endpoint IP -> the slices that list it, as (namespace, slice).
    slice_ips: BTreeMap<IpAddr, BTreeSet<NsName>>,
}

fn drop_from<K: Ord>(map: &mut BTreeMap<K, BTreeSet<String>>, key: K, name: &str) {
    if let Some(set) = map.get_mut(&key) {
        set.remove(name);
        if set.is_empty() {
            map.remove(&key);
        }
    }
}

impl Indexes {
    pub(super) fn add_slice(&mut self, s: &Slice) {
        self.slices
            .entry((s.namespace.clone(), s.service.clone()))
            .or_default()
            .insert(s.name.clone());
        for ep in &s.endpoints {
            if let Some(pod) = &ep.pod {
                self.slice_pods
                    .entry((s.namespace.clone(), pod.clone()))
                    .or_default()
                    .insert(s.name.clone());
            }
            self.slice_ips
                .entry(ep.ip)
                .or_default()
                .insert((s.namespace.clone(), s.name.clone()));
        }
    }

    pub(super) fn remove_slice(&mut self, s: &Slice) {
        drop_from(
            &mut self.slices,
            (s.namespace.clone(), s.service.clone()),
            &s.name,
        );
        for ep in &s.endpoints {
            if let Some(pod) = &ep.pod {
                drop_from(
                    &mut self.slice_pods,
                    (s.namespace.clone(), pod.clone()),
                    &s.name,
                );
            }
            if let Some(set) = self.slice_ips.get_mut(&ep.ip) {
                set.remove(&(s.namespace.clone(), s.name.clone()));
                if set.is_empty() {
                    self.slice_ips.remove(&ep.ip);
                }
            }
        }
    }

    /// The label a Service is indexed under: its selector's first.
    fn selector_label(s: &MeshService) -> Option<Label> {
        let (k, v) = s.selector.as_ref()?.iter().next()?;
        Some((s.namespace.clone(), k.clone(), v.clone()))
    }

    pub(super) fn add_service(&mut self, s: &MeshService) {
        if let Some(label) = Self::selector_label(s) {
            self.selectors
                .entry(label)
                .or_default()
                .insert(s.name.clone());
        }
    }

    pub(super) fn remove_service(&mut self, s: &MeshService) {
        if let Some(label) = Self::selector_label(s) {
            drop_from(&mut self.selectors, label, &s.name);
        }
    }

    /// Names of the Services of `namespace` that may select a pod with `labels`: those
    /// indexed under one of its labels (each at most once), for the caller to check
    /// against the whole selector.
    pub(super) fn may_select<'a>(
        &'a self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<&'a str> {
        let mut names: Vec<&str> = labels
            .iter()
            .filter_map(|(k, v)| {
                self.selectors
                    .get(&(namespace.to_string(), k.clone(), v.clone()))
            })
            .flatten()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    pub(super) fn add_pod(&mut self, p: &MeshPod) {
        if let Some(ip) = p.ip {
            self.pod_ips
                .entry(ip)
                .or_default()
                .insert((p.namespace.clone(), p.name.clone()));
        }
        for (k, v) in &p.labels {
            self.labels
                .entry((p.namespace.clone(), k.clone(), v.clone()))
                .or_default()
                .insert(p.name.clone());
        }
    }

    pub(super) fn remove_pod(&mut self, p: &MeshPod) {
        if let Some(ip) = p.ip
            && let Some(set) = self.pod_ips.get_mut(&ip)
        {
            set.remove(&(p.namespace.clone(), p.name.clone()));
            if set.is_empty() {
                self.pod_ips.remove(&ip);
            }
        }
        for (k, v) in &p.labels {
            drop_from(
                &mut self.labels,
                (p.namespace.clone(), k.clone(), v.clone()),
                &p.name,
            );
        }
    }

    /// Names of the EndpointSlices of `namespace/service`.
    pub(super) fn slices_of(&self, namespace: &str, service: &str) -> Option<&BTreeSet<String>> {
        self.slices
            .get(&(namespace.to_string(), service.to_string()))
    }

    /// The pods whose IP is `ip`, as (namespace, name).
    pub(super) fn pods_at(&self, ip: IpAddr) -> impl Iterator<Item = (&str, &str)> {
        self.pod_ips
            .get(&ip)
            .into_iter()
            .flatten()
            .map(|(ns, n)| (ns.as_str(), n.as_str()))
    }

    /// The slices, as (namespace, slice), with an endpoint naming `namespace/pod` or at
    /// `ip`.
    pub(super) fn slices_naming<'a>(
        &'a self,
        namespace: &'a str,
        pod: &str,
        ip: Option<IpAddr>,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        let by_name = self
            .slice_pods
            .get(&(namespace.to_string(), pod.to_string()))
            .into_iter()
            .flatten()
            .map(move |s| (namespace, s.as_str()));
        let by_ip = ip
            .and_then(|ip| self.slice_ips.get(&ip))
            .into_iter()
            .flatten()
            .map(|(ns, s)| (ns.as_str(), s.as_str()));
        by_name.chain(by_ip)
    }

    /// Names of the pods that carry the first label of `svc`'s selector (a superset of the
    /// pods it selects); `None` when it has no selector or an empty one.
    pub(super) fn candidates(&self, svc: &MeshService) -> Option<&BTreeSet<String>> {
        let (k, v) = svc.selector.as_ref()?.iter().next()?;
        self.labels
            .get(&(svc.namespace.clone(), k.clone(), v.clone()))
    }
}
