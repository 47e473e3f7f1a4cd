//! The Kubernetes source: kube-runtime watchers for Services, EndpointSlices, Pods,
//! TrafficSplits, HTTPRouteGroups, RetryPolicies and the Gateway API's HTTPRoutes and
//! GRPCRoutes, feeding the same model as the manifest directory.
//!
//! The Gateway API CRDs are the user's to install: while they are not (the list answers
//! 404), their watchers count as synced with nothing, say so once in the log, and keep
//! retrying with backoff, so installing them later needs no restart.
//!
//! Each watcher does the initial list, re-lists after `410 Gone`, takes bookmarks and
//! backs off on errors (kube-runtime). A re-list replaces that kind's objects in its
//! scope, so deletions missed while disconnected are not lost. Fields Rudder does not
//! use (managedFields, last-applied annotations, most of a Pod's spec) are dropped
//! before anything is kept. Objects that fail validation are skipped with a log line
//! and remembered in [`Rejected`] so their status can say why.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use translator::model::{
    GRPCRoute, HTTPRoute, HTTPRouteGroup, Kind, Model, ModelError, Object, ObjectKey, RetryPolicy,
    TrafficSplit,
};

use crate::xds::store::Store;

/// Objects refused by validation: key -> (generation, error).
pub type Rejected = Arc<Mutex<BTreeMap<ObjectKey, (Option<i64>, ModelError)>>>;

/// What the source watches.
#[derive(Clone, Debug, Default)]
pub struct KubeScope {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
}

/// Tracks which watchers finished their first list.
#[derive(Clone)]
pub struct SyncState {
    tx: Arc<watch::Sender<BTreeSet<String>>>,
    expected: usize,
}

impl SyncState {
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

/// Keeps only what the model reads of a Pod.
fn strip_pod(pod: &mut Pod) {
    strip_meta(pod);
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            service_account_name: spec.service_account_name,
            containers: spec
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ports: c.ports.map(|ps| {
                        ps.into_iter()
                            .map(|p| ContainerPort {
                                name: p.name,
                                container_port: p.container_port,
                                ..Default::default()
                            })
                            .collect()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            pod_ip: status.pod_ip,
            phase: status.phase,
            ..Default::default()
        });
    }
}

struct Sink {
    cache: Arc<Store>,
    rejected: Rejected,
    kind: Kind,
    namespace: Option<String>,
}

impl Sink {
    fn in_scope(&self, key: &ObjectKey) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| *ns == key.namespace)
    }

    fn apply(&self, model: &mut Model, object: Object, generation: Option<i64>) {
        let key = object.key();
        match model.apply(&object) {
            Ok(()) => {
                self.lock_rejected().remove(&key);
            }
            Err(e) => {
                tracing::error!(object = %key, error = %e, "object rejected; its last good version (if any) stays");
                self.lock_rejected().insert(key, (generation, e));
            }
        }
    }

    fn lock_rejected(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<ObjectKey, (Option<i64>, ModelError)>> {
        self.rejected.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces every object of this kind in scope with `objects` (after a (re-)list).
    fn replace(&self, objects: Vec<(Object, Option<i64>)>) {
        let listed: BTreeSet<ObjectKey> = objects.iter().map(|(o, _)| o.key()).collect();
        self.cache.update(|model| {
            for key in model.keys(self.kind) {
                if self.in_scope(&key) && !listed.contains(&key) {
                    model.delete(&key);
                }
            }
            for (o, generation) in objects {
                self.apply(model, o, generation);
            }
        });
        self.lock_rejected()
            .retain(|k, _| k.kind != self.kind || !self.in_scope(k) || listed.contains(k));
    }
}

/// Whether a watch error says the resource is not served (its CRD is not installed).
fn not_installed(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}

async fn watch_kind<K>(
    api: Api<K>,
    sink: Sink,
    to_object: fn(K) -> Object,
    strip: fn(&mut K),
    sync: Arc<watch::Sender<BTreeSet<String>>>,
    name: String,
    optional: Option<&'static str>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .map_ok(move |e| e.modify(strip));
    futures::pin_mut!(stream);
    let mut buffer: Vec<(Object, Option<i64>)> = Vec::new();
    let mut said_missing = false;
    loop {
        match stream.try_next().await {
            Ok(Some(event)) => match event {
                watcher::Event::Init => buffer.clear(),
                watcher::Event::InitApply(o) => {
                    let generation = o.meta().generation;
                    buffer.push((to_object(o), generation));
                }
                watcher::Event::InitDone => {
                    // Listed: if the CRD goes away again, say so again.
                    said_missing = false;
                    let n = buffer.len();
                    sink.replace(std::mem::take(&mut buffer));
                    tracing::info!(watcher = %name, objects = n, "listed");
                    sync.send_modify(|s| {
                        s.insert(name.clone());
                    });
                }
                watcher::Event::Apply(o) => {
                    let generation = o.meta().generation;
                    let object = to_object(o);
                    sink.cache
                        .update(|model| sink.apply(model, object, generation));
                }
                watcher::Event::Delete(o) => {
                    let key = to_object(o).key();
                    sink.lock_rejected().remove(&key);
                    sink.cache.update(|model| model.delete(&key));
                }
            },
            Ok(None) => {
                tracing::warn!(watcher = %name, "watch stream ended");
                return;
            }
            Err(e) if optional.is_some() && not_installed(&e) => {
                if !said_missing {
                    said_missing = true;
                    tracing::info!(
                        watcher = %name,
                        "{} not installed; routes of this kind are ignored until it is (checked again with backoff)",
                        optional.unwrap_or_default()
                    );
                    sink.replace(Vec::new());
                    sync.send_modify(|s| {
                        s.insert(name.clone());
                    });
                }
            }
            Err(e) => {
                // The backoff is applied by the stream; keep going.
                tracing::warn!(watcher = %name, error = %e, "watch error; retrying");
            }
        }
    }
}

/// Starts every watcher; returns the rejected-object record and the sync state.
pub fn spawn(client: Client, cache: Arc<Store>, scope: &KubeScope) -> (Rejected, SyncState) {
    let rejected: Rejected = Arc::default();
    let (tx, _) = watch::channel(BTreeSet::new());
    let tx = Arc::new(tx);
    let namespaces: Vec<Option<String>> = if scope.namespaces.is_empty() {
        vec![None]
    } else {
        scope.namespaces.iter().cloned().map(Some).collect()
    };
    let mut expected = 0;
    for ns in &namespaces {
        let sink = |kind| Sink {
            cache: cache.clone(),
            rejected: rejected.clone(),
            kind,
            namespace: ns.clone(),
        };
        let label = |k: &str| format!("{k}/{}", ns.as_deref().unwrap_or("*"));
        macro_rules! start {
            ($ty:ty, $kind:expr, $to:expr, $strip:expr) => {
                start!($ty, $kind, $to, $strip, None)
            };
            ($ty:ty, $kind:expr, $to:expr, $strip:expr, $optional:expr) => {{
                let api: Api<$ty> = match ns {
                    Some(n) => Api::namespaced(client.clone(), n),
                    None => Api::all(client.clone()),
                };
                expected += 1;
                tokio::spawn(watch_kind(
                    api,
                    sink($kind),
                    $to,
                    $strip,
                    tx.clone(),
                    label(&$kind.to_string()),
                    $optional,
                ));
            }};
        }
        start!(
            Service,
            Kind::Service,
            |o| Object::Service(Box::new(o)),
            strip_meta::<Service>
        );
        start!(
            EndpointSlice,
            Kind::EndpointSlice,
            |o| Object::EndpointSlice(Box::new(o)),
            strip_meta::<EndpointSlice>
        );
        start!(Pod, Kind::Pod, |o| Object::Pod(Box::new(o)), strip_pod);
        start!(
            TrafficSplit,
            Kind::TrafficSplit,
            |o| Object::TrafficSplit(Box::new(o)),
            strip_meta::<TrafficSplit>
        );
        start!(
            RetryPolicy,
            Kind::RetryPolicy,
            |o| Object::RetryPolicy(Box::new(o)),
            strip_meta::<RetryPolicy>
        );
        start!(
            HTTPRouteGroup,
            Kind::HTTPRouteGroup,
            |o| Object::HTTPRouteGroup(Box::new(o)),
            strip_meta::<HTTPRouteGroup>
        );
        start!(
            HTTPRoute,
            Kind::HTTPRoute,
            |o| Object::HTTPRoute(Box::new(o)),
            strip_meta::<HTTPRoute>,
            Some("the Gateway API CRD httproutes.gateway.networking.k8s.io (v1)")
        );
        start!(
            GRPCRoute,
            Kind::GRPCRoute,
            |o| Object::GRPCRoute(Box::new(o)),
            strip_meta::<GRPCRoute>,
            Some("the Gateway API CRD grpcroutes.gateway.networking.k8s.io (v1)")
        );
    }
    (rejected, SyncState { tx, expected })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_keep_only_what_the_model_reads() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "managedFields": [{"manager": "kubelet"}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"}},
            "spec": {"serviceAccountName": "sa", "volumes": [{"name": "v"}],
                     "containers": [{"name": "app", "image": "x", "env": [{"name": "A", "value": "B"}],
                                     "ports": [{"name": "http", "containerPort": 8080, "hostPort": 80}]}]},
            "status": {"podIP": "10.0.0.1", "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("pod");
        strip_pod(&mut pod);
        let v = serde_json::to_value(&pod).expect("json");
        assert!(v["metadata"].get("managedFields").is_none());
        assert_eq!(
            v["metadata"]["annotations"],
            serde_json::json!({"keep": "me"})
        );
        assert_eq!(
            v["spec"],
            serde_json::json!({"serviceAccountName": "sa", "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]})
        );
        assert_eq!(
            v["status"],
            serde_json::json!({"podIP": "10.0.0.1", "phase": "Running"}),
            "the phase says whether the pod still vouches for its identity"
        );
    }
}
