//! The snapshot cache: owns the mesh model, turns it into per-proxy snapshots, and
//! tells each connected proxy's streams when its snapshot changed.
//!
//! Sources write through [`Cache::update`]. Changes are batched: the pusher waits for a
//! quiet period ([`CacheConfig::debounce`], at most [`CacheConfig::max_delay`] in all),
//! then translates once. Shared resources (Clusters, endpoints, per-namespace routes)
//! are encoded once per build; an unchanged resource keeps its previous `Arc`, so all
//! proxies share one copy. Only proxies whose snapshot versions changed are notified.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ca::SpiffeId;

use tokio::sync::{Notify, watch};
use translator::identity::ProxyIdentity;
use translator::model::{Model, ObjectKey};
use translator::policy::PolicyContext;
use translator::{Diagnostic, MeshConfig, XdsType};

use crate::identity::certs::CertManager;

use crate::xds::snapshot::{Encoded, Snapshot};

/// Batching of model changes.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Quiet time after the last change before a build.
    pub debounce: Duration,
    /// Longest a change waits for a build while changes keep coming.
    pub max_delay: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }
}

/// (scope: the verified SPIFFE ID, node id).
type NodeKey = (String, String);

struct NodeEntry {
    identity: ProxyIdentity,
    tx: watch::Sender<Arc<Snapshot>>,
    streams: usize,
}

#[derive(Default)]
struct Inner {
    model: Model,
    mesh_config: MeshConfig,
    certs: Option<Arc<CertManager>>,
    /// Policy of the last build (its splits are the last good ones for the next).
    policy: PolicyContext,
    generation: u64,
    built: u64,
    /// Every resource of the last build, for reuse by content.
    interned: HashMap<(XdsType, String), Arc<Encoded>>,
    mesh: Vec<Arc<Encoded>>,
    routes: HashMap<String, Arc<Encoded>>,
    nodes: HashMap<NodeKey, NodeEntry>,
    diagnostics: BTreeSet<Diagnostic>,
    changed_at: Option<Instant>,
    /// Policy objects left out because proxies rejected config made from them.
    containment: crate::xds::containment::Containment,
}

impl Inner {
    fn intern(
        &mut self,
        fresh: &mut HashMap<(XdsType, String), Arc<Encoded>>,
        r: &translator::Resource,
    ) -> Arc<Encoded> {
        let model = &self.model;
        let enc = Encoded::with_revs(r, |k| model.rev(k).unwrap_or(0));
        let key = (r.kind, r.name.clone());
        let arc = match self.interned.get(&key) {
            Some(old) if old.version == enc.version && old.sources == enc.sources => old.clone(),
            _ => Arc::new(enc),
        };
        fresh.insert(key, arc.clone());
        arc
    }

    fn note(&mut self, diags: Vec<Diagnostic>, seen: &mut BTreeSet<Diagnostic>) {
        for d in diags {
            if !self.diagnostics.contains(&d) && !seen.contains(&d) {
                tracing::warn!(object = %d.object, field = %d.field, "{}", d.message);
            }
            seen.insert(d);
        }
    }

    fn routes_for(
        &mut self,
        namespace: &str,
        fresh: &mut HashMap<(XdsType, String), Arc<Encoded>>,
        seen: &mut BTreeSet<Diagnostic>,
    ) -> Arc<Encoded> {
        if let Some(r) = self.routes.get(namespace) {
            return r.clone();
        }
        let out = translator::outbound_routes(&self.model, &self.policy, namespace);
        self.note(out.diagnostics, seen);
        // The translator always emits exactly one outbound route table.
        let mut arc = None;
        for r in &out.resources {
            arc = Some(self.intern(fresh, r));
        }
        let arc = arc.unwrap_or_else(|| Arc::new(Encoded::new(&empty_routes())));
        self.routes.insert(namespace.to_string(), arc.clone());
        arc
    }

    fn snapshot_for(
        &mut self,
        identity: &ProxyIdentity,
        fresh: &mut HashMap<(XdsType, String), Arc<Encoded>>,
        seen: &mut BTreeSet<Diagnostic>,
    ) -> Snapshot {
        let mut snap = Snapshot::default();
        for r in &self.mesh {
            snap.insert(r.clone());
        }
        snap.insert(self.routes_for(&identity.namespace, fresh, seen));
        let out = translator::translate_proxy(&self.model, &self.mesh_config, identity);
        self.note(out.diagnostics, seen);
        for r in &out.resources {
            snap.insert(self.intern(fresh, r));
        }
        if let Some(certs) = &self.certs {
            match SpiffeId::new(
                &self.mesh_config.trust_domain,
                &identity.namespace,
                &identity.service_account,
            )
            .map_err(|e| e.to_string())
            .and_then(|id| {
                certs
                    .secrets_for(&id, SystemTime::now())
                    .map_err(|e| e.to_string())
            }) {
                Ok(secrets) => {
                    for s in secrets {
                        snap.insert(s);
                    }
                }
                Err(e) => {
                    tracing::error!(node = %identity.node_id, error = %e, "no certificate for this proxy")
                }
            }
        }
        snap
    }

    fn rebuild(&mut self) -> BuildReport {
        let started = Instant::now();
        let changed_at = self.changed_at;
        let mut fresh = HashMap::new();
        let mut seen = BTreeSet::new();
        let model = &self.model;
        self.containment.retain(|k| model.rev(k));
        let excluded = self.containment.excluded();
        self.policy = PolicyContext::new(&self.model, &self.policy.splits, &excluded);
        let out = translator::translate_mesh(&self.model, &self.mesh_config, &self.policy);
        self.note(out.diagnostics, &mut seen);
        self.mesh = out
            .resources
            .iter()
            .map(|r| self.intern(&mut fresh, r))
            .collect();
        self.routes.clear();
        let ids: Vec<NodeKey> = self.nodes.keys().cloned().collect();
        let mut pushed = 0;
        for id in ids {
            let Some(identity) = self.nodes.get(&id).map(|n| n.identity.clone()) else {
                continue;
            };
            let mut snap = self.snapshot_for(&identity, &mut fresh, &mut seen);
            snap.changed_at = changed_at;
            if let Some(node) = self.nodes.get(&id)
                && !node.tx.borrow().same_versions(&snap)
            {
                node.tx.send_replace(Arc::new(snap));
                pushed += 1;
            }
        }
        self.interned = fresh;
        for d in self.diagnostics.difference(&seen) {
            tracing::info!(object = %d.object, field = %d.field, was = %d.message, "resolved");
        }
        self.diagnostics = seen;
        self.built = self.generation;
        BuildReport {
            proxies_pushed: pushed,
            proxies: self.nodes.len(),
            resources: self.mesh.len(),
            took: started.elapsed(),
            since_change: self.changed_at.take().map(|t| t.elapsed()),
        }
    }
}

fn empty_routes() -> translator::Resource {
    translator::Resource {
        kind: XdsType::Route,
        name: translator::OUTBOUND_ROUTE.into(),
        refs: Vec::new(),
        sources: Vec::new(),
        body: translator::Body::Route(Box::default()),
    }
}

/// What one build did.
#[derive(Debug)]
pub struct BuildReport {
    /// Proxies whose snapshot changed.
    pub proxies_pushed: usize,
    /// Proxies connected.
    pub proxies: usize,
    /// Shared resources in the build.
    pub resources: usize,
    /// Translation and encoding time.
    pub took: Duration,
    /// Time since the first change of the batch.
    pub since_change: Option<Duration>,
}

/// The snapshot cache.
pub struct Cache {
    inner: Mutex<Inner>,
    changed: Notify,
    config: CacheConfig,
    builds: watch::Sender<u64>,
    metrics: std::sync::OnceLock<Arc<crate::observability::metrics::Metrics>>,
    proxies: std::sync::OnceLock<Arc<crate::observability::registry::ProxyRegistry>>,
}

/// A stream's subscription to its node's snapshot; dropping it unregisters.
pub struct NodeWatch {
    cache: Arc<Cache>,
    key: NodeKey,
    /// Receives the node's snapshot whenever it changes.
    pub rx: watch::Receiver<Arc<Snapshot>>,
}

impl Drop for NodeWatch {
    fn drop(&mut self) {
        let mut inner = self.cache.lock();
        if let Some(node) = inner.nodes.get_mut(&self.key) {
            node.streams = node.streams.saturating_sub(1);
            if node.streams == 0 {
                inner.nodes.remove(&self.key);
            }
        }
    }
}

impl Cache {
    /// An empty cache with the default mesh settings and no certificates (plain text
    /// between sidecars; for tests of other parts).
    pub fn new(config: CacheConfig) -> Arc<Self> {
        Self::with_mesh(config, MeshConfig::default(), None)
    }

    /// An empty cache for `mesh`, delivering certificates from `certs` over SDS.
    pub fn with_mesh(
        config: CacheConfig,
        mesh: MeshConfig,
        certs: Option<Arc<CertManager>>,
    ) -> Arc<Self> {
        Arc::new(Cache {
            inner: Mutex::new(Inner {
                mesh_config: mesh,
                certs,
                ..Inner::default()
            }),
            changed: Notify::new(),
            config,
            builds: watch::channel(0).0,
            metrics: std::sync::OnceLock::new(),
            proxies: std::sync::OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent model (every mutation is
        // one call); keep serving rather than poisoning every stream.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the model; a build follows after the debounce.
    pub fn update<R>(&self, f: impl FnOnce(&mut Model) -> R) -> R {
        let r = {
            let mut inner = self.lock();
            inner.generation += 1;
            inner.changed_at.get_or_insert_with(Instant::now);
            f(&mut inner.model)
        };
        self.changed.notify_one();
        r
    }

    /// A proxy accepted resources made from these policy objects.
    pub fn on_ack(&self, accepted: &[crate::xds::snapshot::Source]) {
        let changed = self.lock().containment.on_ack(accepted);
        if changed {
            self.touch();
        }
    }

    /// A proxy rejected config: the policy objects that could have caused it are left
    /// out (see `containment`) and a build follows.
    pub fn on_nack(&self, node: &str, rejection: &crate::xds::stream::Rejection) {
        let resource = format!("{} {}", rejection.kind, rejection.resources.join(","));
        let nack = crate::xds::containment::Nack {
            suspects: &rejection.suspects,
            precise: rejection.precise,
            proxy: node,
            resource: &resource,
            error: &rejection.error,
        };
        let changed = self.lock().containment.on_nack(&nack);
        if changed {
            self.touch();
        }
    }

    /// Policy objects left out because proxies rejected config made from them.
    pub fn contained(&self) -> Vec<(ObjectKey, crate::xds::containment::Suspect)> {
        self.lock()
            .containment
            .suspects()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
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

    /// Builds now (used at start-up and in tests).
    pub fn rebuild_now(&self) -> BuildReport {
        let report = self.lock().rebuild();
        self.builds.send_modify(|n| *n += 1);
        report
    }

    /// Where builds report their time and size.
    pub fn set_metrics(&self, metrics: Arc<crate::observability::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The registry of connected proxies (for status derived from their answers).
    pub fn set_proxies(&self, proxies: Arc<crate::observability::registry::ProxyRegistry>) {
        let _ = self.proxies.set(proxies);
    }

    /// The registry of connected proxies, once set.
    pub fn proxies(&self) -> Option<&Arc<crate::observability::registry::ProxyRegistry>> {
        self.proxies.get()
    }

    /// Reads the model.
    pub fn read<R>(&self, f: impl FnOnce(&Model) -> R) -> R {
        f(&self.lock().model)
    }

    /// Ticks once per build.
    pub fn builds(&self) -> watch::Receiver<u64> {
        self.builds.subscribe()
    }

    /// Registers a stream for `identity` and returns its snapshot watch.
    ///
    /// Streams share a snapshot only when both their node id and their `scope` (the
    /// SPIFFE ID of their verified certificate) are equal: a node id claimed under
    /// another identity is another node, and never sees this one's config or secrets.
    pub fn subscribe(self: &Arc<Self>, scope: &str, identity: &ProxyIdentity) -> NodeWatch {
        let key: NodeKey = (scope.to_string(), identity.node_id.clone());
        let mut inner = self.lock();
        let needs_build = inner
            .nodes
            .get(&key)
            .is_none_or(|n| n.identity != *identity);
        let snap = needs_build.then(|| {
            let mut fresh = std::mem::take(&mut inner.interned);
            let mut seen = std::mem::take(&mut inner.diagnostics);
            let snap = Arc::new(inner.snapshot_for(identity, &mut fresh, &mut seen));
            inner.interned = fresh;
            inner.diagnostics = seen;
            snap
        });
        let node = inner.nodes.entry(key.clone()).or_insert_with(|| NodeEntry {
            identity: identity.clone(),
            tx: watch::channel(Arc::new(Snapshot::default())).0,
            streams: 0,
        });
        if let Some(snap) = snap {
            node.identity = identity.clone();
            node.tx.send_replace(snap);
        }
        node.streams += 1;
        let rx = node.tx.subscribe();
        drop(inner);
        NodeWatch {
            cache: self.clone(),
            key,
            rx,
        }
    }

    /// Runs forever: wakes the pusher when a certificate is due for renewal.
    pub async fn run_renewer(self: Arc<Self>) {
        loop {
            let next = self.lock().certs.as_ref().and_then(|c| c.next_renewal());
            let wait = next
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(200), Duration::from_secs(5));
            tokio::time::sleep(wait).await;
            if next.is_some_and(|t| t <= SystemTime::now()) {
                self.update(|_| ());
            }
        }
    }

    /// Runs forever: batches model changes and rebuilds.
    pub async fn run_pusher(self: Arc<Self>) {
        loop {
            self.changed.notified().await;
            let start = Instant::now();
            loop {
                let seen = self.lock().generation;
                tokio::time::sleep(self.config.debounce).await;
                if self.lock().generation == seen || start.elapsed() >= self.config.max_delay {
                    break;
                }
            }
            let report = self.rebuild_now();
            if let Some(m) = self.metrics.get() {
                m.translation.observe(report.took.as_secs_f64());
                m.snapshot_resources
                    .set(i64::try_from(report.resources).unwrap_or(i64::MAX));
            }
            tracing::info!(
                proxies_pushed = report.proxies_pushed,
                proxies = report.proxies,
                shared_resources = report.resources,
                build_ms = report.took.as_secs_f64() * 1e3,
                since_change_ms = report.since_change.map(|d| d.as_secs_f64() * 1e3),
                "built snapshots"
            );
        }
    }
}

#[cfg(test)]
mod tests;
