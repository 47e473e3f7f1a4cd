//! The model store and the build loop. Sources change the [`Model`] through
//! [`Store::update`]; when the store was quiet, after a few milliseconds
//! ([`LEADING_WINDOW`]), otherwise after the burst settles ([`StoreConfig::debounce`],
//! at most [`StoreConfig::max_delay`] in all), the incremental builder turns the objects
//! that changed into per-view change sets, which are published to the streams of each view
//! ([`crate::xds::fanout`]). Per-proxy resources (listeners, inbound clusters, secrets)
//! are published to that proxy's streams only.
//!
//! ```text
//!   sources ─update─▶ Model ─changed keys─▶ Builder ─▶ ViewVersion per view ──watch──▶ streams
//!                                               └────▶ OwnVersion per proxy ─watch──▶ streams
//!   streams ─ACK/NACK─▶ Containment (per identity and view) ─left-out objects─▶ Builder
//! ```
//!
//! A proxy is registered by (certificate identity, proxy identity): streams share state
//! only when both are equal, so a node id claimed under another certificate is another
//! proxy. The proxies of a certificate identity whose rejections left objects out of its
//! view follow that view's variant for the identity (see `containment`); every other
//! proxy stays on the shared view. Translation runs under the store's lock; streams never take it on their hot
//! path (only to attach and detach).

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use translator::MeshConfig;
use translator::encoded::TypeMap;
use translator::identity::ProxyIdentity;
use translator::incremental::Builder;
use translator::model::{Model, ObjectKey, ViewKey};

use crate::observability::metrics::Metrics;
use crate::pki::certs::CertManager;
use crate::xds::containment::{Containment, Nack, Suspect};
use crate::xds::fanout::{Desired, OwnVersion, ViewVersion};
use crate::xds::stream::Rejection;

/// Batching of model changes.
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// A change within this of the last build is part of a burst: the build waits for
    /// this much quiet. A change after a quiet period is built at once.
    pub debounce: Duration,
    /// Longest a change waits for a build while changes keep coming.
    pub max_delay: Duration,
    /// Benchmark baseline: streams resend every resource of a type on any change.
    pub full_resend: bool,
    /// Delta Envoys that can (1.37+) take the outbound table's virtual hosts apart,
    /// over VHDS; false: every proxy gets the whole table.
    pub vhds: bool,
    /// Cluster mode: a proxy is served only while a pod of its service account exists
    /// (its streams end when the last one goes).
    pub require_live_pod: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            full_resend: false,
            vhds: true,
            require_live_pod: false,
        }
    }
}

/// A registered proxy: the identity of its certificate (`scope`) and what it claims.
type ProxyKey = (String, ProxyIdentity);

/// What names one proxy to containment: its certificate identity and node id.
pub fn stream_tag(scope: &str, node_id: &str) -> String {
    format!("{scope} {node_id}")
}

struct ViewSlot {
    tx: watch::Sender<Arc<ViewVersion>>,
    streams: usize,
}

struct ProxySlot {
    tx: watch::Sender<Arc<OwnVersion>>,
    streams: usize,
}

struct Inner {
    model: Model,
    builder: Builder,
    containment: Containment,
    generation: u64,
    built: u64,
    changed_at: Option<Instant>,
    views: HashMap<ViewKey, ViewSlot>,
    /// The view variants containment used at the last build.
    variants: BTreeSet<ViewKey>,
    proxies: HashMap<ProxyKey, ProxySlot>,
    /// The certificate identities each proxy identity is registered under.
    scopes: HashMap<ProxyIdentity, BTreeSet<String>>,
    /// The proxy identities claiming each pod (namespace, name): a pod change looks at
    /// its own proxies only.
    by_pod: HashMap<(String, String), HashSet<ProxyIdentity>>,
}

/// What one build did.
#[derive(Debug, Default)]
pub struct BuildReport {
    /// Views whose resources changed.
    pub views_changed: usize,
    /// Proxies whose own resources changed.
    pub proxies_changed: usize,
    /// Resources encoded by this build.
    pub encoded: usize,
    /// Views and proxies registered.
    pub views: usize,
    /// Proxies registered.
    pub proxies: usize,
    /// Translation and publication time.
    pub took: Duration,
    /// Time since the first change of the batch.
    pub since_change: Option<Duration>,
}

/// The store.
pub struct Store {
    inner: Mutex<Inner>,
    changed: Notify,
    config: StoreConfig,
    builds: watch::Sender<u64>,
    /// Ticks once per build in which a Pod changed.
    pod_builds: watch::Sender<u64>,
    metrics: OnceLock<Arc<Metrics>>,
    certs: Option<Arc<CertManager>>,
    mesh: MeshConfig,
}

/// A stream's registration: its own resources and its view, kept current. Dropping it
/// unregisters.
pub struct Attachment {
    store: Arc<Store>,
    key: ProxyKey,
    view_key: ViewKey,
    /// The proxy's own resources.
    pub own: watch::Receiver<Arc<OwnVersion>>,
    /// Its view.
    pub view: watch::Receiver<Arc<ViewVersion>>,
}

impl Attachment {
    /// What the proxy should hold now (marking both as seen).
    pub(crate) fn desired(&mut self) -> Desired {
        Desired {
            view: self.view.borrow_and_update().clone(),
            own: self.own.borrow_and_update().clone(),
        }
    }

    /// The view it follows.
    pub fn view_key(&self) -> &ViewKey {
        &self.view_key
    }

    /// Follows the proxy into another view (its pod's declared egress changed).
    pub(crate) fn switch_view(&mut self, key: ViewKey) {
        if key == self.view_key {
            return;
        }
        let rx = self.store.attach_view(&key);
        self.store.detach_view(&self.view_key);
        self.view = rx;
        self.view_key = key;
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.store.detach(&self.key, &self.view_key);
    }
}

impl Store {
    /// An empty store for `mesh`; `certs` issues the proxies' secrets.
    pub fn new(
        config: StoreConfig,
        mesh: MeshConfig,
        certs: Option<Arc<CertManager>>,
    ) -> Arc<Self> {
        Arc::new(Store {
            inner: Mutex::new(Inner {
                model: Model::new(),
                builder: Builder::new(mesh.clone()),
                containment: Containment::default(),
                generation: 0,
                built: 0,
                changed_at: None,
                views: HashMap::new(),
                variants: BTreeSet::new(),
                proxies: HashMap::new(),
                scopes: HashMap::new(),
                by_pod: HashMap::new(),
            }),
            changed: Notify::new(),
            config,
            builds: watch::channel(0).0,
            pod_builds: watch::channel(0).0,
            metrics: OnceLock::new(),
            certs,
            mesh,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent model (every mutation is
        // one call); keep serving rather than poisoning every stream.
        self.inner.lock()
    }

    /// The mesh settings.
    pub fn mesh(&self) -> &MeshConfig {
        &self.mesh
    }

    /// Whether streams resend everything on any change (the benchmark baseline).
    pub(crate) fn full_resend(&self) -> bool {
        self.config.full_resend
    }

    /// Whether Envoys that can take virtual hosts apart get them so.
    pub(crate) fn vhds(&self) -> bool {
        self.config.vhds
    }

    /// Where builds report their time and size.
    pub(crate) fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The metrics builds report to, once set.
    pub(crate) fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.get()
    }

    /// Changes the model; a build follows after the debounce.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Model) -> R) -> R {
        let r = {
            let mut inner = self.lock();
            inner.generation += 1;
            inner.changed_at.get_or_insert_with(Instant::now);
            f(&mut inner.model)
        };
        self.changed.notify_one();
        r
    }

    /// Reads the model.
    pub fn read<R>(&self, f: impl FnOnce(&Model) -> R) -> R {
        f(&self.lock().model)
    }

    /// Ticks once per build.
    pub(crate) fn builds(&self) -> watch::Receiver<u64> {
        self.builds.subscribe()
    }

    /// Ticks once per build in which a Pod changed (what reads pods needs no more).
    pub(crate) fn pod_builds(&self) -> watch::Receiver<u64> {
        self.pod_builds.subscribe()
    }

    /// Asks for a build without a model change.
    fn touch(&self) {
        {
            let mut inner = self.lock();
            inner.generation += 1;
            inner.changed_at.get_or_insert_with(Instant::now);
        }
        self.changed.notify_one();
    }

    /// The secrets every proxy is sent over ADS: the trust bundle only. Workload
    /// certificates and their keys come from the proxy's own agent, never from here.
    fn secrets(&self) -> TypeMap {
        self.certs
            .iter()
            .map(|c| c.root_secret())
            .map(|s| (s.name.clone(), s))
            .collect()
    }

    /// Registers a stream of a proxy: `scope` is its certificate's identity (the key it
    /// shares state by). In cluster mode it is refused (with why) unless its pod runs,
    /// checked under the store's lock so no build can end the pod in between.
    pub fn attach(
        self: &Arc<Self>,
        scope: &str,
        identity: &ProxyIdentity,
    ) -> Result<Attachment, String> {
        let key: ProxyKey = (scope.to_string(), identity.clone());
        let secrets = self.secrets();
        let mut inner = self.lock();
        if self.config.require_live_pod {
            pod_runs(&inner.model, identity)?;
            // Its pod runs (again: a StatefulSet pod comes back under its name): a slot
            // an earlier pod's deletion ended serves again.
            if let Some(slot) = inner.proxies.get(&key)
                && slot.tx.borrow().ended.is_some()
            {
                slot.tx.send_modify(|v| *v = Arc::new(v.with_ended(None)));
            }
        }
        let Inner {
            model,
            builder,
            proxies,
            scopes,
            by_pod,
            containment,
            ..
        } = &mut *inner;
        let scoped = scopes.entry(identity.clone()).or_default();
        if scoped.is_empty() {
            by_pod
                .entry((identity.namespace.clone(), identity.pod.clone()))
                .or_default()
                .insert(identity.clone());
        }
        scoped.insert(scope.to_string());
        let slot = proxies.entry(key.clone()).or_insert_with(|| {
            let (own, view) = builder.proxy(model, identity);
            ProxySlot {
                tx: watch::channel(Arc::new(OwnVersion {
                    version: 1,
                    own,
                    secrets,
                    view: Some(containment.follows(&view, scope)),
                    changed_at: None,
                    ended: None,
                }))
                .0,
                streams: 0,
            }
        });
        slot.streams += 1;
        let own = slot.tx.subscribe();
        let view_key = own
            .borrow()
            .view
            .clone()
            .unwrap_or_else(|| translator::identity::view_key_without_pod(identity));
        let view = Self::attach_view_locked(&mut inner, &view_key);
        drop(inner);
        Ok(Attachment {
            store: self.clone(),
            key,
            view_key,
            own,
            view,
        })
    }

    fn attach_view_locked(inner: &mut Inner, key: &ViewKey) -> watch::Receiver<Arc<ViewVersion>> {
        let Inner {
            model,
            builder,
            views,
            ..
        } = inner;
        let slot = views.entry(key.clone()).or_insert_with(|| {
            let maps = builder.view(model, key);
            ViewSlot {
                tx: watch::channel(Arc::new(ViewVersion::first(key.clone(), maps))).0,
                streams: 0,
            }
        });
        slot.streams += 1;
        slot.tx.subscribe()
    }

    fn attach_view(&self, key: &ViewKey) -> watch::Receiver<Arc<ViewVersion>> {
        Self::attach_view_locked(&mut self.lock(), key)
    }

    fn detach_view(&self, key: &ViewKey) {
        let mut inner = self.lock();
        Self::detach_view_locked(&mut inner, key);
    }

    fn detach_view_locked(inner: &mut Inner, key: &ViewKey) {
        if let Some(slot) = inner.views.get_mut(key) {
            slot.streams = slot.streams.saturating_sub(1);
            if slot.streams == 0 {
                inner.views.remove(key);
                // A variant still in use stays built (a build forgets it once lifted).
                if !inner.containment.holds(key) {
                    inner.builder.drop_view(key);
                }
            }
        }
    }

    fn detach(&self, key: &ProxyKey, view: &ViewKey) {
        let mut inner = self.lock();
        let mut lifted = false;
        if let Some(slot) = inner.proxies.get_mut(key) {
            slot.streams = slot.streams.saturating_sub(1);
            if slot.streams == 0 {
                inner.proxies.remove(key);
                // The proxy left: what only its rejections kept out is lifted.
                lifted = inner
                    .containment
                    .proxy_gone(&key.0, &stream_tag(&key.0, &key.1.node_id));
                let last = inner.scopes.get_mut(&key.1).is_none_or(|s| {
                    s.remove(&key.0);
                    s.is_empty()
                });
                if last {
                    inner.scopes.remove(&key.1);
                    inner.builder.drop_proxy(&key.1);
                    let pod = (key.1.namespace.clone(), key.1.pod.clone());
                    if let Some(claims) = inner.by_pod.get_mut(&pod) {
                        claims.remove(&key.1);
                        if claims.is_empty() {
                            inner.by_pod.remove(&pod);
                        }
                    }
                }
            }
        }
        Self::detach_view_locked(&mut inner, view);
        drop(inner);
        if lifted {
            self.touch();
        }
    }

    /// Proxy `by` of `view` (with certificate identity `identity`) accepted resources
    /// made from these policy objects.
    pub(crate) fn on_ack(
        &self,
        view: &ViewKey,
        by: &str,
        identity: &str,
        accepted: &[translator::encoded::Source],
    ) {
        let changed = self.lock().containment.on_ack(view, identity, by, accepted);
        if changed {
            self.touch();
        }
    }

    /// A proxy of `view` (with certificate identity `proxy`) rejected config: the policy
    /// objects that could have caused it are left out for the proxies of that identity
    /// in that view (see `containment`) and a build follows.
    pub fn on_nack(&self, view: &ViewKey, by: &str, proxy: &str, rejection: &Rejection) {
        // gRPC views are not contained (their parts are shared): the rejection is in the
        // NACK record, metrics and CSDS, and the client keeps its last good config.
        if view.grpc {
            tracing::warn!(view = %view.namespace, proxy, error = %rejection.error, "a proxyless gRPC client rejected config; not contained");
            return;
        }
        let resource = format!("{} {}", rejection.kind, rejection.resources.join(","));
        let nack = Nack {
            by,
            suspects: &rejection.suspects,
            precise: rejection.precise,
            identity: proxy,
            resource: &crds::text::clip(&resource, 256),
            error: &rejection.error,
        };
        let changed = self.lock().containment.on_nack(view, &nack);
        if changed {
            self.touch();
        }
    }

    /// Policy objects left out for the proxies of one identity because they rejected
    /// config made from them: the view variant (`variant` names the identity), the
    /// object and why.
    pub(crate) fn contained(&self) -> Vec<(ViewKey, ObjectKey, Suspect)> {
        self.lock()
            .containment
            .suspects()
            .map(|(v, k, s)| (v, k.clone(), s.clone()))
            .collect()
    }

    /// (identities, objects) containment leaves out now, for metrics.
    pub(crate) fn containment_size(&self) -> (usize, usize) {
        self.lock().containment.size()
    }

    /// Resources the views hold, summed over views.
    pub(crate) fn view_resources(&self) -> usize {
        self.lock()
            .views
            .values()
            .map(|s| {
                let v = s.tx.borrow();
                v.maps.clusters.len() + v.maps.endpoints.len() + v.maps.routes.len()
            })
            .sum()
    }

    /// Builds now (used at start-up and in tests).
    pub fn rebuild_now(&self) -> BuildReport {
        let report = self.build();
        if let Some(m) = self.metrics.get() {
            m.translation.observe(report.took.as_secs_f64());
        }
        self.builds.send_modify(|n| *n += 1);
        report
    }

    fn build(&self) -> BuildReport {
        let started = Instant::now();
        let mut inner = self.lock();
        let changed_at = inner.changed_at.take();
        let changes = inner.model.take_changes();
        let Inner {
            model,
            builder,
            containment,
            views,
            variants,
            proxies,
            scopes,
            by_pod,
            ..
        } = &mut *inner;
        // The pods that changed (their proxies are checked after the build).
        let changed_pods: Vec<(String, String)> = changes
            .iter()
            .filter(|k| k.kind == translator::model::Kind::Pod)
            .map(|k| (k.namespace.clone(), k.name.clone()))
            .collect();
        if !changed_pods.is_empty() {
            self.pod_builds.send_modify(|n| *n += 1);
        }
        containment.retain(|k| model.rev(k));
        let excluded = containment.excluded();
        // Variants in use are built (a new one as a copy of its view) before the update
        // gives them what they leave out; unused ones are forgotten.
        builder.retain_variants(|k| excluded.contains_key(k) || views.contains_key(k));
        for key in excluded.keys() {
            builder.view(model, key);
        }
        let out = builder.update(model, &changes, &excluded);
        for d in &out.appeared {
            tracing::warn!(object = %d.object, field = %d.field, "{}", d.message);
        }
        for d in &out.cleared {
            tracing::info!(object = %d.object, field = %d.field, was = %d.message, "resolved");
        }
        let mut report = BuildReport {
            views_changed: out.views.len(),
            proxies_changed: out.proxies.len(),
            encoded: out.encoded,
            ..Default::default()
        };
        let mut search_moved = false;
        for (key, changes, maps) in out.views {
            // A search re-admitted objects: those that add nothing to the view (in any
            // map it shares: routes, virtual hosts apart, clusters...) are cleared at once.
            let present = |k: &ObjectKey| {
                translator::incremental::ViewMaps::SHARED
                    .iter()
                    .filter_map(|t| maps.of(*t))
                    .flat_map(|m| m.values())
                    .any(|r| r.sources.iter().any(|s| s.key == *k))
            };
            search_moved |= containment.after_build(&key, present);
            if let Some(slot) = views.get(&key) {
                let next = slot.tx.borrow().next(maps, changes, changed_at);
                slot.tx.send_replace(Arc::new(next));
            }
        }
        let updates: HashMap<&ProxyIdentity, (&Arc<translator::incremental::Own>, &ViewKey)> = out
            .proxies
            .iter()
            .map(|(id, own, view)| (id, (own, view)))
            .collect();
        // Which variants proxies follow changed: every proxy checks its view.
        let refollow = excluded.len() != variants.len() || !excluded.keys().eq(variants.iter());
        if refollow {
            *variants = excluded.keys().cloned().collect();
        }
        publish_proxies(&updates, refollow, proxies, scopes, containment, changed_at);
        if self.config.require_live_pod {
            let claimants = changed_pods
                .iter()
                .filter_map(|pod| by_pod.get(pod))
                .flatten();
            end_orphans(model, proxies, scopes, claimants);
        }
        report.views = views.len();
        report.proxies = proxies.len();
        inner.built = inner.generation;
        drop(inner);
        if search_moved {
            self.touch();
        }
        report.took = started.elapsed();
        report.since_change = changed_at.map(|t| t.elapsed());
        report
    }

    /// Waits until the model has not changed for the debounce, at most the maximum
    /// delay: the rest of a burst joins one build.
    async fn settle(&self) {
        let start = tokio::time::Instant::now();
        loop {
            let seen = self.lock().generation;
            tokio::time::sleep(self.config.debounce).await;
            if self.lock().generation == seen || start.elapsed() >= self.config.max_delay {
                return;
            }
        }
    }

    /// Runs forever: rebuilds after model changes. A change to a quiet store (no build
    /// within the last [`StoreConfig::debounce`]) is built after [`LEADING_WINDOW`] (what
    /// belongs with it, such as the other files of one copy or the objects of one apply,
    /// joins it), so a lone edit costs no timer; changes that follow a build closely are
    /// a burst (a rollout, a re-list) and are batched until the debounce passes without
    /// one, at most [`StoreConfig::max_delay`] after the first.
    pub async fn run_pusher(self: Arc<Self>) {
        let mut last_build: Option<tokio::time::Instant> = None;
        loop {
            self.changed.notified().await;
            if quiet_since(last_build, self.config.debounce) {
                tokio::time::sleep(LEADING_WINDOW.min(self.config.debounce)).await;
            } else {
                self.settle().await;
            }
            let report = self.rebuild_now();
            last_build = Some(tokio::time::Instant::now());
            tracing::info!(
                views_changed = report.views_changed,
                proxies_changed = report.proxies_changed,
                encoded = report.encoded,
                views = report.views,
                proxies = report.proxies,
                build_ms = report.took.as_secs_f64() * 1e3,
                since_change_ms = report.since_change.map(|d| d.as_secs_f64() * 1e3),
                "built"
            );
        }
    }
}

/// How long a change to a quiet store waits for the changes that belong with it.
pub const LEADING_WINDOW: Duration = Duration::from_millis(5);

/// Whether nothing was built within `debounce`: the next change is pushed at once.
fn quiet_since(last_build: Option<tokio::time::Instant>, debounce: Duration) -> bool {
    last_build.is_none_or(|t| t.elapsed() >= debounce)
}

/// Whether the pod `identity` claims runs as its service account: the reason when not.
fn pod_runs(model: &Model, identity: &ProxyIdentity) -> Result<(), String> {
    match model.pod(&identity.namespace, &identity.pod) {
        Some(p) if p.service_account != identity.service_account => Err(format!(
            "pod {}/{} runs as service account {}, not {}",
            identity.namespace, identity.pod, p.service_account, identity.service_account
        )),
        Some(p) if p.finished => Err(format!(
            "pod {}/{} has finished",
            identity.namespace, identity.pod
        )),
        Some(_) => Ok(()),
        None => Err(format!(
            "pod {}/{} does not exist (proxies are served only for running pods)",
            identity.namespace, identity.pod
        )),
    }
}

/// Gives each proxy whose resources changed its next version: only the proxies that
/// changed, unless the variants changed (`refollow`: then every one checks its view).
fn publish_proxies(
    updates: &HashMap<&ProxyIdentity, (&Arc<translator::incremental::Own>, &ViewKey)>,
    refollow: bool,
    proxies: &HashMap<ProxyKey, ProxySlot>,
    scopes: &HashMap<ProxyIdentity, BTreeSet<String>>,
    containment: &Containment,
    changed_at: Option<Instant>,
) {
    let keys: Vec<ProxyKey> = if refollow {
        proxies.keys().cloned().collect()
    } else {
        updates
            .keys()
            .flat_map(|id| {
                scopes
                    .get(*id)
                    .into_iter()
                    .flatten()
                    .map(|s| (s.clone(), (*id).clone()))
            })
            .collect()
    };
    for key in keys {
        let Some(slot) = proxies.get(&key) else {
            continue;
        };
        let (scope, identity) = &key;
        let update = updates.get(identity).map(|(own, view)| (*own, *view));
        let current = slot.tx.borrow().clone();
        let (own, view) = match update {
            Some((own, view)) => (own.clone(), Some(view.clone())),
            None => (current.own.clone(), current.view.clone()),
        };
        // The shared view, or its identity's variant while one is in use.
        let view = view.map(|v| containment.follows(&v, scope));
        if update.is_none() && view == current.view {
            continue;
        }
        tracing::debug!(identity = %scope, node = %identity.node_id, "proxy resources changed");
        slot.tx.send_replace(Arc::new(OwnVersion {
            version: current.version + 1,
            own,
            secrets: current.secrets.clone(),
            view,
            changed_at,
            ended: current.ended.clone(),
        }));
    }
}

/// Ends the streams of `claimants` (the proxies of the pods that changed) whose pod is
/// gone or finished (cluster mode): a certificate outlives the workload it was issued to
/// by up to its lifetime, and must not keep a config stream open for that long.
fn end_orphans<'a>(
    model: &Model,
    proxies: &HashMap<ProxyKey, ProxySlot>,
    scopes: &HashMap<ProxyIdentity, BTreeSet<String>>,
    claimants: impl Iterator<Item = &'a ProxyIdentity>,
) {
    for identity in claimants {
        let Err(reason) = pod_runs(model, identity) else {
            continue;
        };
        let reason: Arc<str> = reason.into();
        for scope in scopes.get(identity).into_iter().flatten() {
            let key = (scope.clone(), identity.clone());
            let Some(slot) = proxies.get(&key) else {
                continue;
            };
            if slot.tx.borrow().ended.is_some() {
                continue;
            }
            tracing::info!(identity = %scope, node = %identity.node_id, %reason, "ending the proxy's streams");
            slot.tx
                .send_modify(|v| *v = Arc::new(v.with_ended(Some(reason.clone()))));
        }
    }
}

#[cfg(test)]
mod tests;
