//! What a build produces: change sets per view, the maps a view's proxies share, a
//! proxy's own resources, and the helpers that turn re-encoded parts into updates.

use std::sync::Arc;

use crate::encoded::{Encoded, TypeMap};
use crate::identity::ProxyIdentity;
use crate::model::{Model, ViewKey};
use crate::output::{Diagnostic, Resource};
use xds_types::XdsType;

/// One change to a type's resources.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// Added or changed.
    Put(Arc<Encoded>),
    /// Removed.
    Remove(Arc<str>),
}

impl Update {
    /// The resource's name.
    pub fn name(&self) -> &Arc<str> {
        match self {
            Update::Put(r) => &r.name,
            Update::Remove(n) => n,
        }
    }
}

/// What changed in one view, per type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Clusters.
    pub clusters: Vec<Update>,
    /// ClusterLoadAssignments.
    pub endpoints: Vec<Update>,
    /// Listeners every proxy of the view holds (gRPC clients').
    pub listeners: Vec<Update>,
    /// RouteConfigurations.
    pub routes: Vec<Update>,
    /// VirtualHosts served apart (VHDS views only).
    pub vhosts: Vec<Update>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
            && self.endpoints.is_empty()
            && self.listeners.is_empty()
            && self.routes.is_empty()
            && self.vhosts.is_empty()
    }

    /// The updates of `kind`.
    pub fn of(&self, kind: XdsType) -> &[Update] {
        match kind {
            XdsType::Cluster => &self.clusters,
            XdsType::Endpoint => &self.endpoints,
            XdsType::Listener => &self.listeners,
            XdsType::Route => &self.routes,
            XdsType::VirtualHost => &self.vhosts,
            XdsType::Secret => &[],
        }
    }
}

/// Everything a view's proxies share.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewMaps {
    /// Clusters of the Services the view sees.
    pub clusters: Arc<TypeMap>,
    /// Their ClusterLoadAssignments.
    pub endpoints: Arc<TypeMap>,
    /// The Listeners every proxy of the view holds besides its own: a gRPC view's
    /// client Listeners (one per target name); empty for Envoy views.
    pub listeners: Arc<TypeMap>,
    /// The outbound route table (and the per-port tables of intercepted proxies).
    pub routes: Arc<TypeMap>,
    /// The outbound table's virtual hosts, in a view whose proxies take them apart
    /// (VHDS); empty otherwise.
    pub vhosts: Arc<TypeMap>,
}

impl ViewMaps {
    /// The types a view's proxies share, in push order ([`ViewMaps::shared`] has them).
    pub const SHARED: [XdsType; 5] = [
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
        XdsType::VirtualHost,
    ];

    /// The shared map of `kind`, if the view has that type.
    pub fn shared(&self, kind: XdsType) -> Option<&Arc<TypeMap>> {
        match kind {
            XdsType::Cluster => Some(&self.clusters),
            XdsType::Endpoint => Some(&self.endpoints),
            XdsType::Listener => Some(&self.listeners),
            XdsType::Route => Some(&self.routes),
            XdsType::VirtualHost => Some(&self.vhosts),
            XdsType::Secret => None,
        }
    }

    /// The resources of `kind`, if the view has that type.
    pub fn of(&self, kind: XdsType) -> Option<&TypeMap> {
        match kind {
            XdsType::Cluster => Some(&self.clusters),
            XdsType::Endpoint => Some(&self.endpoints),
            XdsType::Listener => Some(&self.listeners),
            XdsType::Route => Some(&self.routes),
            XdsType::VirtualHost => Some(&self.vhosts),
            XdsType::Secret => None,
        }
    }
}

/// One proxy's own resources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Own {
    /// Its listeners (outbound and inbound); the view's shared ones
    /// ([`ViewMaps::listeners`]) are not among them.
    pub listeners: Arc<TypeMap>,
    /// Its inbound clusters.
    pub clusters: TypeMap,
}

/// What one build changed.
#[derive(Debug, Default)]
pub struct BuildOutput {
    /// Views whose resources changed: what changed and the maps after.
    pub views: Vec<(ViewKey, Changes, ViewMaps)>,
    /// Registered proxies whose own resources or view changed.
    pub proxies: Vec<(ProxyIdentity, Arc<Own>, ViewKey)>,
    /// Diagnostics that appeared with this build.
    pub appeared: Vec<Diagnostic>,
    /// Diagnostics that cleared with this build.
    pub cleared: Vec<Diagnostic>,
    /// Resources encoded (new or changed content).
    pub encoded: usize,
}

pub(super) fn encode(
    model: &Model,
    r: &Resource,
    old: Option<&Arc<Encoded>>,
    count: &mut usize,
) -> Arc<Encoded> {
    let enc = Encoded::with_revs(r, |k| model.rev(k).unwrap_or(0));
    match old {
        Some(o) if o.same_as(&enc) => o.clone(),
        _ => {
            *count += 1;
            Arc::new(enc)
        }
    }
}

/// Puts for what is new or different in `new`, removes for what `old` had alone.
pub(super) fn diff(old: &[Arc<Encoded>], new: &[Arc<Encoded>], out: &mut Vec<Update>) {
    for n in new {
        if !old.iter().any(|o| Arc::ptr_eq(o, n)) {
            out.push(Update::Put(n.clone()));
        }
    }
    for o in old {
        if !new.iter().any(|n| n.name == o.name) {
            out.push(Update::Remove(o.name.clone()));
        }
    }
}

pub(super) fn apply(map: &mut Arc<TypeMap>, updates: &[Update]) {
    if updates.is_empty() {
        return;
    }
    let m = Arc::make_mut(map);
    for u in updates {
        match u {
            Update::Put(r) => {
                m.insert(r.name.clone(), r.clone());
            }
            Update::Remove(n) => {
                m.remove(n);
            }
        }
    }
}
