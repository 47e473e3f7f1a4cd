//! The immutable set of everything the proxy holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::cluster::{Cluster, LoadAssignment};
use super::listener::Listener;
use super::route::RouteConfig;
use super::secret::Secret;

/// One resource type's entries by name, shared between snapshots until that type changes.
pub type TypeMap<T> = Arc<BTreeMap<String, Arc<T>>>;

/// Everything the proxy holds, by type. Cheap to clone (one `Arc` per type); a new
/// snapshot replaces only the maps of the types that changed.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Listeners (LDS) by name.
    pub listeners: TypeMap<Listener>,
    /// Route configurations (RDS) by name.
    pub routes: TypeMap<RouteConfig>,
    /// Clusters (CDS) by name.
    pub clusters: TypeMap<Cluster>,
    /// Endpoints (EDS) by cluster (service) name.
    pub endpoints: TypeMap<LoadAssignment>,
    /// Secrets (SDS: the trust bundle over ADS, the workload certificate from the agent)
    /// by name.
    pub secrets: TypeMap<Secret>,
}

impl Snapshot {
    /// The route configuration `name`, if held.
    pub fn route(&self, name: &str) -> Option<&Arc<RouteConfig>> {
        self.routes.get(name)
    }

    /// The cluster `name`, if held.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// The endpoints of `service_name` (an EDS cluster's service name), if held.
    pub fn endpoints(&self, service_name: &str) -> Option<&Arc<LoadAssignment>> {
        self.endpoints.get(service_name)
    }

    /// The secret `name`, if held.
    pub fn secret(&self, name: &str) -> Option<&Arc<Secret>> {
        self.secrets.get(name)
    }
}
