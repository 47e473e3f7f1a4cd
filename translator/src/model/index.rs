//! Secondary indexes of the model, kept beside its maps so that "the slices of a Service"
//! and "the pods a selector matches" are lookups, not scans of the namespace: a build
//! over S Services and P pods stays linear.

use std::collections::{BTreeMap, BTreeSet};

use super::{MeshPod, MeshService, NsName, Slice};

/// (namespace, label key, label value).
type Label = (String, String, String);

/// What the model indexes besides its primary maps.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Indexes {
    /// (namespace, Service) -> names of its EndpointSlices.
    slices: BTreeMap<NsName, BTreeSet<String>>,
    /// (namespace, key, value) -> names of the pods carrying that label.
    labels: BTreeMap<Label, BTreeSet<String>>,
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
    }

    pub(super) fn remove_slice(&mut self, s: &Slice) {
        drop_from(
            &mut self.slices,
            (s.namespace.clone(), s.service.clone()),
            &s.name,
        );
    }

    pub(super) fn add_pod(&mut self, p: &MeshPod) {
        for (k, v) in &p.labels {
            self.labels
                .entry((p.namespace.clone(), k.clone(), v.clone()))
                .or_default()
                .insert(p.name.clone());
        }
    }

    pub(super) fn remove_pod(&mut self, p: &MeshPod) {
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

    /// Names of the pods that carry the first label of `svc`'s selector (a superset of the
    /// pods it selects); `None` when it has no selector or an empty one.
    pub(super) fn candidates(&self, svc: &MeshService) -> Option<&BTreeSet<String>> {
        let (k, v) = svc.selector.as_ref()?.iter().next()?;
        self.labels
            .get(&(svc.namespace.clone(), k.clone(), v.clone()))
    }
}
