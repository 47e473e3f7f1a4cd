//! The Kubernetes source: a kube-runtime watcher per watched row of the kind table
//! ([`crds::kinds`]: Services, EndpointSlices, Pods, TrafficSplits, HTTPRouteGroups,
//! RetryPolicies and the Gateway API's HTTPRoutes and GRPCRoutes), feeding the same model
//! as the manifest directory.
//!
//! This module owns which kinds are watched, with what Rust type and what is dropped of
//! them (managedFields, last-applied annotations, most of a Pod's spec), and the sync
//! state the control plane waits on. Each watcher's loop is [`crate::k8s::follow`]: the
//! initial list, re-lists after `410 Gone`, bookmarks and backoff (kube-runtime), and
//! every CRD kind (the chart's and the Gateway API's) read at an older served version
//! when its stored one is not served, or reported as unavailable while none is, so the
//! control plane serves everything else and installing the CRD later needs no restart.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use crds::kinds::Provider;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Client, Resource};
use tokio::sync::watch;
use translator::model::{
    GRPCRoute, HTTPRoute, HTTPRouteGroup, Kind, Object, PodObject, RetryPolicy, TCPRoute,
    TrafficSplit, TrafficTarget,
};

pub use crate::k8s::follow::Rejected;
use crate::k8s::follow::{self, Parts, Progress, Sink, Unavailable};
use crate::xds::store::Store;

/// What the source watches.
#[derive(Clone, Debug, Default)]
pub struct KubeScope {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
}

/// Tracks which watchers finished their first list, and which kinds are not served.
#[derive(Clone)]
pub struct SyncState {
    tx: Arc<watch::Sender<BTreeSet<String>>>,
    expected: usize,
    unavailable: Unavailable,
}

impl SyncState {
    /// The kinds the API server does not serve now (CRD missing, or without the version
    /// Rudder reads), e.g. `TrafficSplit`.
    pub fn unavailable(&self) -> BTreeSet<String> {
        self.unavailable
            .lock()
            .iter()
            .map(|w| w.split_once('/').map_or(w.as_str(), |(k, _)| k).to_string())
            .collect()
    }

    /// Whether every watcher has listed once.
    pub fn synced(&self) -> bool {
        self.tx.borrow().len() >= self.expected
    }

    /// Waits until every watcher has listed once.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let expected = self.expected;
        let _ = rx.wait_for(|s| s.len() >= expected).await;
    }
}

fn strip_meta<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The kinds the control plane watches: the kind table's watched rows.
pub fn watched_kinds() -> impl Iterator<Item = Kind> {
    Kind::ALL.into_iter().filter(|k| k.info().watched)
}

/// What a watcher says while its kind's CRD is not served: `None` for the built-in kinds,
/// which always are. Rudder's own CRDs may be left out of the chart (`crds.*=false`) and
/// the SMI ones may be someone else's, serving other versions.
fn missing_crd(kind: Kind) -> Option<String> {
    let info = kind.info();
    let api = match info.provider {
        Provider::BuiltIn => return None,
        Provider::UserInstalled if info.group == crds::gateway::GROUP => "the Gateway API CRD",
        Provider::UserInstalled | Provider::Shipped => "the CRD",
    };
    Some(format!(
        "{api} {}.{} ({})",
        info.plural, info.group, info.storage_version
    ))
}

/// A watcher's parts, ready to start with its Rust type.
struct Watcher(Parts);

impl Watcher {
    fn spawn<K: follow::Watched>(self, to_object: fn(K) -> Object, strip: fn(&mut K)) {
        follow::spawn(self.0, to_object, strip);
    }
}

/// Starts the watcher of `kind`. Exhaustive: a new kind says here how it is watched
/// (its Rust type and what is dropped of it), or that it is not.
fn start(kind: Kind, w: Watcher) -> bool {
    match kind {
        Kind::Service => w.spawn(|o| Object::Service(Box::new(o)), strip_meta::<Service>),
        Kind::EndpointSlice => w.spawn(
            |o| Object::EndpointSlice(Box::new(o)),
            strip_meta::<EndpointSlice>,
        ),
        // Only what the model reads of a Pod is kept (`PodObject`).
        Kind::Pod => w.spawn(
            |o| Object::Pod(Box::new(PodObject::from(o))),
            strip_meta::<Pod>,
        ),
        Kind::TrafficSplit => w.spawn(
            |o| Object::TrafficSplit(Box::new(o)),
            strip_meta::<TrafficSplit>,
        ),
        Kind::RetryPolicy => w.spawn(
            |o| Object::RetryPolicy(Box::new(o)),
            strip_meta::<RetryPolicy>,
        ),
        Kind::HTTPRouteGroup => w.spawn(
            |o| Object::HTTPRouteGroup(Box::new(o)),
            strip_meta::<HTTPRouteGroup>,
        ),
        Kind::HTTPRoute => w.spawn(|o| Object::HTTPRoute(Box::new(o)), strip_meta::<HTTPRoute>),
        Kind::GRPCRoute => w.spawn(|o| Object::GRPCRoute(Box::new(o)), strip_meta::<GRPCRoute>),
        Kind::TrafficTarget => w.spawn(
            |o| Object::TrafficTarget(Box::new(o)),
            strip_meta::<TrafficTarget>,
        ),
        Kind::TCPRoute => w.spawn(|o| Object::TCPRoute(Box::new(o)), strip_meta::<TCPRoute>),
    }
    true
}

/// Starts a watcher per watched kind (and namespace); returns the rejected-object record
/// and the sync state.
pub fn spawn(client: Client, cache: Arc<Store>, scope: &KubeScope) -> (Rejected, SyncState) {
    let rejected: Rejected = Arc::default();
    let (tx, _) = watch::channel(BTreeSet::new());
    let tx = Arc::new(tx);
    let unavailable = Unavailable::default();
    let namespaces: Vec<Option<String>> = if scope.namespaces.is_empty() {
        vec![None]
    } else {
        scope.namespaces.iter().cloned().map(Some).collect()
    };
    let mut expected = 0;
    for ns in &namespaces {
        for kind in watched_kinds() {
            let w = Watcher(Parts {
                client: client.clone(),
                namespace: ns.clone(),
                sink: Sink {
                    cache: cache.clone(),
                    rejected: rejected.clone(),
                    kind,
                    namespace: ns.clone(),
                },
                progress: Progress {
                    sync: tx.clone(),
                    unavailable: unavailable.clone(),
                    name: format!("{kind}/{}", ns.as_deref().unwrap_or("*")),
                },
                optional: missing_crd(kind),
            });
            if start(kind, w) {
                expected += 1;
            }
        }
    }
    (
        rejected,
        SyncState {
            tx,
            expected,
            unavailable,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every watched row of the kind table has a watcher, at its stored version, and
    /// nothing outside the table is watched: the requests a fake API server sees.
    #[tokio::test]
    async fn every_watched_row_of_the_kind_table_is_watched_and_nothing_else() {
        let fake = testbed::fake_kube::FakeKube::new();
        let cache = Store::new(
            crate::xds::store::StoreConfig::default(),
            Default::default(),
            None,
        );
        let scope = KubeScope {
            namespaces: vec!["a".into(), "b".into()],
        };
        let (_, sync) = spawn(fake.client(), cache, &scope);
        tokio::time::timeout(std::time::Duration::from_secs(30), sync.wait())
            .await
            .expect("every watcher lists");
        let watched: Vec<_> = crds::kinds::all().filter(|k| k.watched).collect();
        assert_eq!(sync.expected, 2 * watched.len());
        let mut seen = BTreeSet::new();
        for request in fake.requests() {
            let path = request
                .split_once(' ')
                .and_then(|(_, p)| p.split_once('?'))
                .map(|(p, _)| p)
                .unwrap_or_default();
            let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
            let (api_version, ns, plural) = match segs.as_slice() {
                ["api", v, "namespaces", ns, plural] => (v.to_string(), *ns, *plural),
                ["apis", g, v, "namespaces", ns, plural] => (format!("{g}/{v}"), *ns, *plural),
                _ => panic!("not a namespaced list or watch: {request}"),
            };
            let (group, _) = crds::kinds::split_api_version(&api_version);
            let row = crds::kinds::by_group_plural(group, plural)
                .unwrap_or_else(|| panic!("{request} is outside the kind table"));
            assert!(row.watched, "{request}: {} is not a watched kind", row.kind);
            assert_eq!(api_version, row.api_version(), "{request}");
            seen.insert((row.kind, ns.to_string()));
        }
        for row in watched {
            for ns in ["a", "b"] {
                assert!(
                    seen.contains(&(row.kind, ns.to_string())),
                    "{} in {ns} is not watched",
                    row.kind
                );
            }
        }
    }

    #[test]
    fn pods_keep_only_what_the_model_reads() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "managedFields": [{"manager": "kubelet"}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"}},
            "spec": {"serviceAccountName": "sa", "hostNetwork": true, "volumes": [{"name": "v"}],
                     "containers": [{"name": "app", "image": "x", "env": [{"name": "A", "value": "B"}],
                                     "ports": [{"name": "http", "containerPort": 8080, "hostPort": 80}]}]},
            "status": {"podIP": "10.0.0.1", "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("pod");
        strip_meta(&mut pod);
        let v = serde_json::to_value(PodObject::from(pod)).expect("json");
        assert!(v["metadata"].get("managedFields").is_none());
        assert_eq!(
            v["metadata"]["annotations"],
            serde_json::json!({"keep": "me"})
        );
        assert_eq!(
            v["spec"],
            serde_json::json!({"serviceAccountName": "sa", "hostNetwork": true, "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}),
            "a pod on the host's network is never in the mesh: the flag is kept"
        );
        assert_eq!(
            v["status"],
            serde_json::json!({"podIP": "10.0.0.1", "phase": "Running"}),
            "the phase says whether the pod still vouches for its identity"
        );
    }
}
