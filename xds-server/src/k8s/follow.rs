//! One watcher's loop: the list and watch of one kind (in one namespace, or all) into the
//! store, at a version the API server serves.
//!
//! It reads the kind's stored version (what its Rust type is). When the API server does
//! not serve that (404: the CRD is missing, or is someone else's that serves only older
//! versions, as SMI CRDs installed by other meshes do), it reads the newest older version
//! the kind accepts that is served: those share the Rust type's schema, so objects are
//! read the same. While no version is served the kind is reported (once in the log, in
//! `rudder_kube_kind_unavailable` and in [`Progress`]) and counts as listed with nothing,
//! so the control plane serves everything else; it is checked again with backoff, so
//! installing the CRD later needs no restart.
//!
//! Each list replaces the kind's objects in scope, so deletions missed while disconnected
//! are not lost; objects that fail validation are skipped with a log line and kept in
//! [`Rejected`] so their status can say why.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use translator::model::{Kind, Model, ModelError, Object, ObjectKey};

use crate::observability::metrics::KindLabel;
use crate::xds::store::Store;

/// Objects refused by validation: key -> (generation, error).
pub type Rejected = Arc<Mutex<BTreeMap<ObjectKey, (Option<i64>, ModelError)>>>;

/// The watchers (`KIND/NAMESPACE`) whose kind the API server does not serve.
pub(crate) type Unavailable = Arc<Mutex<BTreeSet<String>>>;

/// Longest wait between checks of a kind that is not served.
const MAX_RECHECK: Duration = Duration::from_secs(30);

/// Where one watcher's objects go: the store, for one kind in one namespace (or all).
pub(crate) struct Sink {
    pub(crate) cache: Arc<Store>,
    pub(crate) rejected: Rejected,
    pub(crate) kind: Kind,
    pub(crate) namespace: Option<String>,
}

impl Sink {
    fn in_scope(&self, key: &ObjectKey) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| *ns == key.namespace)
    }

    pub(crate) fn apply(&self, model: &mut Model, object: Object, generation: Option<i64>) {
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

    pub(crate) fn lock_rejected(
        &self,
    ) -> parking_lot::MutexGuard<'_, BTreeMap<ObjectKey, (Option<i64>, ModelError)>> {
        self.rejected.lock()
    }

    /// Replaces every object of this kind in scope with `objects` (after a (re-)list).
    pub(crate) fn replace(&self, objects: Vec<(Object, Option<i64>)>) {
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

/// Where a watcher reports that it listed, or that its kind is not served.
pub(crate) struct Progress {
    pub(crate) sync: Arc<watch::Sender<BTreeSet<String>>>,
    pub(crate) unavailable: Unavailable,
    /// `KIND/NAMESPACE` (`*` for all).
    pub(crate) name: String,
}

impl Progress {
    fn listed(&self) {
        self.sync.send_modify(|s| {
            s.insert(self.name.clone());
        });
    }

    /// Records whether the kind is served, in the set and in the metric.
    fn served(&self, sink: &Sink, served: bool) {
        let changed = {
            let mut u = self.unavailable.lock();
            if served {
                u.remove(&self.name)
            } else {
                u.insert(self.name.clone())
            }
        };
        if let (true, Some(m)) = (changed, sink.cache.metrics()) {
            m.kube_kind_unavailable
                .get_or_create(&KindLabel {
                    kind: sink.kind.to_string(),
                })
                .set(i64::from(!served));
        }
    }
}

/// One watcher's parts that do not depend on its Rust type.
pub(crate) struct Parts {
    pub(crate) client: Client,
    pub(crate) namespace: Option<String>,
    pub(crate) sink: Sink,
    pub(crate) progress: Progress,
    /// What to say while the kind is not served; `None` for built-in kinds, which always
    /// are (a 404 there is an error like any other).
    pub(crate) optional: Option<String>,
}

/// What the loop sees, whatever version it reads.
enum Ev {
    Init,
    InitItem(Object, Option<i64>),
    InitDone,
    Apply(Object, Option<i64>),
    Delete(ObjectKey),
}

/// Why following a stream stopped.
enum Ended {
    /// The version read is not served (404).
    NotServed,
    /// The stream ended.
    Closed,
}

/// Whether a watch error says the resource is not served (its CRD is not installed, or
/// not at that version).
fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}

fn event<K: Resource>(e: watcher::Event<K>, to_object: fn(K) -> Object) -> Ev {
    let gen_of = |o: &K| o.meta().generation;
    match e {
        watcher::Event::Init => Ev::Init,
        watcher::Event::InitApply(o) => {
            let g = gen_of(&o);
            Ev::InitItem(to_object(o), g)
        }
        watcher::Event::InitDone => Ev::InitDone,
        watcher::Event::Apply(o) => {
            let g = gen_of(&o);
            Ev::Apply(to_object(o), g)
        }
        watcher::Event::Delete(o) => Ev::Delete(to_object(o).key()),
    }
}

/// What a watched kind's Rust type (at its stored version) is.
pub(crate) trait Watched:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType: Default>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType: Default>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Starts the watcher of one kind, `K` being its Rust type at the stored version.
pub(crate) fn spawn<K: Watched>(parts: Parts, to_object: fn(K) -> Object, strip: fn(&mut K)) {
    tokio::spawn(run(parts, to_object, strip));
}

async fn run<K: Watched>(parts: Parts, to_object: fn(K) -> Object, strip: fn(&mut K)) {
    let Parts {
        client,
        namespace,
        sink,
        progress,
        optional,
    } = parts;
    let info = sink.kind.info();
    let stored_api = || -> Api<K> {
        match &namespace {
            Some(n) => Api::namespaced(client.clone(), n),
            None => Api::all(client.clone()),
        }
    };
    let mut said_missing = false;
    let mut delay = Duration::from_secs(1);
    'stored: loop {
        let stored = watcher(stored_api(), watcher::Config::default().any_semantic())
            .default_backoff()
            .map_ok(move |e| event(e.modify(strip), to_object));
        let (ended, listed) = follow(stored, &sink, &progress, optional.is_some()).await;
        if listed {
            said_missing = false;
            delay = Duration::from_secs(1);
        }
        let Ended::NotServed = ended else {
            return;
        };
        // Older versions the kind accepts, newest first. What one listed stays until
        // another version lists: nothing is cleared while a version is served.
        for version in info
            .versions
            .iter()
            .rev()
            .filter(|v| **v != info.storage_version)
        {
            let stream = older_version::<K>(
                &client,
                namespace.as_deref(),
                sink.kind,
                version,
                to_object,
                strip,
            );
            let (ended, listed) = tokio::select! {
                r = follow(stream, &sink, &progress, true) => r,
                // The stored version is served again (the CRD was upgraded): read that.
                () = served_again(stored_api()) => continue 'stored,
            };
            if let Ended::Closed = ended {
                return;
            }
            if listed {
                // It listed, then stopped being served: start over from the stored
                // version, keeping what it listed.
                said_missing = false;
                delay = Duration::from_secs(1);
                continue 'stored;
            }
        }
        if !said_missing {
            said_missing = true;
            tracing::warn!(
                watcher = %progress.name,
                "{} is not served at any version Rudder reads ({}); objects of this kind are ignored until it is (checked again with backoff, no restart needed)",
                optional.as_deref().unwrap_or_default(),
                info.versions.join(", "),
            );
            sink.replace(Vec::new());
            progress.served(&sink, false);
            progress.listed();
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RECHECK);
    }
}

/// Resolves once a list at the stored version succeeds, checked every [`MAX_RECHECK`]
/// while an older version is read.
async fn served_again<K>(api: Api<K>)
where
    K: Resource + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    loop {
        tokio::time::sleep(MAX_RECHECK).await;
        if api
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .is_ok()
        {
            return;
        }
    }
}

/// The kind's events at an older `version`, read into its Rust type (the versions share
/// its schema). An object that does not read is logged with its field path and skipped.
fn older_version<K>(
    client: &Client,
    namespace: Option<&str>,
    info_kind: Kind,
    version: &'static str,
    to_object: fn(K) -> Object,
    strip: fn(&mut K),
) -> impl Stream<Item = Result<Ev, watcher::Error>> + Send + 'static
where
    K: Resource + DeserializeOwned + Send + 'static,
{
    let info = info_kind.info();
    let gvk = GroupVersionKind::gvk(info.group, version, info.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, info.plural);
    let api: Api<DynamicObject> = match namespace {
        Some(n) => Api::namespaced_with(client.clone(), n, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let read = move |o: DynamicObject| -> Option<K> {
        let name = format!(
            "{} {}/{}",
            info.kind,
            o.metadata.namespace.as_deref().unwrap_or_default(),
            o.metadata.name.as_deref().unwrap_or_default()
        );
        let value = serde_json::to_value(&o).ok()?;
        match serde_path_to_error::deserialize::<_, K>(value) {
            Ok(mut k) => {
                strip(&mut k);
                Some(k)
            }
            Err(e) => {
                tracing::error!(object = %name, version, field = %e.path(), error = %e.inner(), "object skipped: it does not read at this version");
                None
            }
        }
    };
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .filter_map(move |r| {
            let ev = match r {
                Err(e) => Some(Err(e)),
                Ok(watcher::Event::Init) => Some(Ok(Ev::Init)),
                Ok(watcher::Event::InitDone) => Some(Ok(Ev::InitDone)),
                Ok(watcher::Event::InitApply(o)) => {
                    let g = o.metadata.generation;
                    read(o).map(|k| Ok(Ev::InitItem(to_object(k), g)))
                }
                Ok(watcher::Event::Apply(o)) => {
                    let g = o.metadata.generation;
                    read(o).map(|k| Ok(Ev::Apply(to_object(k), g)))
                }
                Ok(watcher::Event::Delete(o)) => Some(Ok(Ev::Delete(ObjectKey {
                    kind: info_kind,
                    namespace: o.metadata.namespace.unwrap_or_default(),
                    name: o.metadata.name.unwrap_or_default(),
                }))),
            };
            futures::future::ready(ev)
        })
}

/// Feeds the store from `stream` until it ends or says its version is not served;
/// answers why, and whether it listed at least once.
async fn follow<S>(stream: S, sink: &Sink, progress: &Progress, optional: bool) -> (Ended, bool)
where
    S: Stream<Item = Result<Ev, watcher::Error>>,
{
    futures::pin_mut!(stream);
    let mut buffer: Vec<(Object, Option<i64>)> = Vec::new();
    let mut listed = false;
    loop {
        match stream.try_next().await {
            Ok(Some(Ev::Init)) => buffer.clear(),
            Ok(Some(Ev::InitItem(o, generation))) => buffer.push((o, generation)),
            Ok(Some(Ev::InitDone)) => {
                let n = buffer.len();
                sink.replace(std::mem::take(&mut buffer));
                tracing::info!(watcher = %progress.name, objects = n, "listed");
                listed = true;
                progress.served(sink, true);
                progress.listed();
            }
            Ok(Some(Ev::Apply(object, generation))) => {
                sink.cache
                    .update(|model| sink.apply(model, object, generation));
            }
            Ok(Some(Ev::Delete(key))) => {
                sink.lock_rejected().remove(&key);
                sink.cache.update(|model| model.delete(&key));
            }
            Ok(None) => {
                tracing::warn!(watcher = %progress.name, "watch stream ended");
                return (Ended::Closed, listed);
            }
            Err(e) if optional && not_served(&e) => return (Ended::NotServed, listed),
            Err(e) => {
                // The backoff is applied by the stream; keep going.
                tracing::warn!(watcher = %progress.name, error = %e, "watch error; retrying");
            }
        }
    }
}
