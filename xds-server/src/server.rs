//! Wiring of `xds-server run`: loads the CA, starts the chosen source, the pusher and
//! the certificate renewer, and serves ADS (TLS with client certificates unless plain
//! text was asked for).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ca::{Authority, SpiffeId};
use translator::MeshConfig;
use translator::tls::MtlsMode;

use crate::cli::SecurityArgs;
use crate::identity::certs::CertManager;
use crate::observability::csds::CsdsService;
use crate::observability::metrics::{Admin, Metrics};
use crate::observability::nack::NackLog;
use crate::observability::registry::ProxyRegistry;
use crate::source::manifest::{self, ManifestDir};
use crate::xds::grpc::AdsService;
use crate::xds::store::{Store, StoreConfig};
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer;

/// Namespace and service account of the control plane's own identity.
pub const CONTROL_PLANE_NS: &str = "rudder-system";
/// See [`CONTROL_PLANE_NS`].
pub const CONTROL_PLANE_SA: &str = "rudder";

/// The control plane's SPIFFE ID; sidecars check it on the xDS connection.
pub fn control_plane_id(trust_domain: &str) -> anyhow::Result<SpiffeId> {
    SpiffeId::new(trust_domain, CONTROL_PLANE_NS, CONTROL_PLANE_SA).context("the trust domain")
}

/// Everything `run` was given.
#[derive(Debug)]
pub struct ServeConfig {
    /// Manifest directory (manifest mode).
    pub manifests: Option<PathBuf>,
    /// Cluster mode.
    pub kubernetes: bool,
    /// Namespaces to watch (cluster mode; empty = all).
    pub namespaces: Vec<String>,
    /// Namespace of the Lease and the CA Secret.
    pub lease_namespace: String,
    /// Replica identity.
    pub identity: Option<String>,
    /// xDS listen address.
    pub xds_address: SocketAddr,
    /// The certificate endpoint's address (none: no endpoint; not with plain-text xDS).
    pub ca_address: Option<SocketAddr>,
    /// The sidecar injector's address and settings (trust domain and bundle are filled
    /// in here).
    pub inject: Option<(SocketAddr, crate::k8s::inject::InjectConfig)>,
    /// Where to write the bound addresses.
    pub ready_file: Option<PathBuf>,
    /// Admin address: `/metrics`, `/healthz`, `/readyz`.
    pub admin_address: SocketAddr,
    /// Push debounce.
    pub debounce: Duration,
    /// Mesh-wide inbound mTLS mode.
    pub mtls_mode: MtlsMode,
    /// DNS names for the serving certificate.
    pub xds_dns_names: Vec<String>,
    /// CA and TLS settings.
    pub security: SecurityArgs,
    /// Longest a shutdown waits for connections to close after ending every stream.
    pub drain: Duration,
    /// Limits on what peers may open and send.
    pub limits: Limits,
    /// Benchmark baseline: resend every resource of a type on any change.
    pub full_resend: bool,
    /// Quiet time after a manifest-directory event before it is read.
    pub manifest_debounce: Duration,
}

/// Limits on what peers of the xDS port may open and send.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections and handshakes.
    pub conn: crate::xds::listener::ConnLimits,
    /// What one stream may ask for.
    pub stream: crate::xds::grpc::StreamLimits,
    /// Largest request message decoded, in bytes.
    pub message_bytes: usize,
    /// The memory peers may make the xDS port hold, in all and per identity.
    pub budget: crate::xds::wire::budget::BudgetConfig,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            conn: Default::default(),
            stream: Default::default(),
            message_bytes: 4 << 20,
            budget: Default::default(),
        }
    }
}

/// Largest CSDS request decoded (a few node matchers), in bytes.
const CSDS_MESSAGE_BYTES: usize = 64 * 1024;

/// Loads the CA from operator-supplied files or the CA directory, which must hold one.
pub fn load_ca_files(sec: &SecurityArgs) -> anyhow::Result<Authority> {
    match (&sec.ca_cert, &sec.ca_key) {
        (Some(cert), Some(key)) => crate::identity::ca_store::from_files(
            cert,
            key,
            sec.ca_chain.as_deref(),
            &sec.trust_domain,
        ),
        _ => crate::identity::ca_store::from_dir(&sec.ca_dir, &sec.trust_domain),
    }
}

/// The pods of a namespace as the certificate endpoint's liveness check reads them: a
/// finished pod (Succeeded or Failed) vouches for no identity.
fn pods_in(store: Arc<Store>) -> crate::identity::ca_service::PodsIn {
    Box::new(move |namespace| {
        store.read(|m| {
            m.pods_in(namespace)
                .filter(|p| !p.finished)
                .map(|p| (p.name.clone(), p.service_account.clone()))
                .collect()
        })
    })
}

/// Runs the control plane until SIGTERM or Ctrl-C.
pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let sec = &cfg.security;
    if sec.insecure_xds && !cfg.xds_address.ip().is_loopback() {
        anyhow::bail!(
            "--insecure-xds is refused on {}: without TLS anyone who can connect may claim any identity and is sent its config; it is allowed on a loopback address only",
            cfg.xds_address
        );
    }
    let client = if cfg.kubernetes {
        Some(
            kube::Client::try_default()
                .await
                .context("connecting to Kubernetes (in-cluster config or kubeconfig)")?,
        )
    } else {
        None
    };
    let (authority, issued_dir, previous_signer) = match (&client, &sec.ca_cert) {
        (Some(client), None) => (
            crate::identity::ca_store::from_kubernetes(
                client.clone(),
                &cfg.lease_namespace,
                &sec.trust_domain,
            )
            .await?,
            None,
            None,
        ),
        _ => {
            let authority = match (&sec.ca_cert, &sec.ca_key) {
                (Some(_), Some(_)) => load_ca_files(sec)?,
                _ => crate::identity::ca_store::open_or_create(&sec.ca_dir, &sec.trust_domain)?,
            };
            // During a rotation overlap the previous root signs our serving certificate.
            let previous = match &sec.ca_cert {
                None => crate::identity::ca_store::serving_authority(
                    &sec.ca_dir,
                    &sec.trust_domain,
                    &authority,
                )?,
                Some(_) => None,
            };
            (authority, Some(sec.ca_dir.join("issued")), previous)
        }
    };
    if let Some(dir) = &issued_dir {
        crate::identity::certs::forget_kept_keys(dir);
    }
    let certs = Arc::new(CertManager::new(authority));
    let mesh = MeshConfig {
        trust_domain: sec.trust_domain.clone(),
        mtls: cfg.mtls_mode,
    };
    let cache = Store::new(
        StoreConfig {
            debounce: cfg.debounce,
            full_resend: cfg.full_resend,
            require_live_pod: cfg.kubernetes,
            ..StoreConfig::default()
        },
        mesh,
        Some(certs.clone()),
    );
    let shared = Shared::new(cache.clone());
    let admin = Arc::new(Admin {
        metrics: shared.metrics.clone(),
        proxies: shared.proxies.clone(),
        certs: Some(certs.clone()),
        store: Some(cache.clone()),
        ready: Default::default(),
    });
    let admin_listener = crate::observability::metrics::bind(cfg.admin_address)
        .await
        .with_context(|| format!("binding the admin address {}", cfg.admin_address))?;
    let admin_bound = admin_listener
        .local_addr()
        .context("reading the admin address")?;
    tokio::spawn(crate::observability::metrics::serve_admin(
        admin_listener,
        admin.clone(),
    ));
    if let Some(dir) = &cfg.manifests {
        let mut source = ManifestDir::new(dir);
        manifest::apply(&cache, source.scan());
        tokio::spawn(manifest::run_with(
            source,
            cache.clone(),
            cfg.manifest_debounce,
        ));
        tokio::spawn(crate::k8s::crd_status::log_changes(cache.clone()));
        tracing::info!(dir = %dir.display(), "manifests loaded");
    } else if let Some(client) = client.clone() {
        let lease = crate::k8s::lease::LeaseConfig {
            namespace: cfg.lease_namespace.clone(),
            name: "rudder-status-writer".into(),
            identity: cfg.identity.clone().unwrap_or_else(default_identity),
        };
        let scope = crate::k8s::watch::KubeScope {
            namespaces: cfg.namespaces.clone(),
        };
        start_kubernetes(client, cache.clone(), &scope, lease)
            .wait()
            .await;
        tracing::info!("Kubernetes objects listed");
    }
    let report = cache.rebuild_now();
    tracing::info!(encoded = report.encoded, "initial sync done");

    let listener = crate::xds::listener::bind(cfg.xds_address)
        .with_context(|| format!("binding the xDS address {}", cfg.xds_address))?;
    let bound = listener
        .local_addr()
        .context("reading the bound xDS address")?;
    tokio::spawn(cache.clone().run_pusher());
    tokio::spawn(crate::observability::memory::run_trimmer());

    let ca_listener = match cfg.ca_address.filter(|_| !sec.insecure_xds) {
        Some(addr) => Some(
            crate::xds::listener::bind(addr)
                .with_context(|| format!("binding the certificate endpoint {addr}"))?,
        ),
        None => None,
    };
    let ca_bound = ca_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .context("reading the certificate endpoint's address")?;
    let tls = if sec.insecure_xds {
        tracing::warn!(
            "--insecure-xds: serving xDS in plain text on loopback. Any local process may claim any workload identity and is sent that identity's config, and may read every proxy's config over CSDS. For local experiments only."
        );
        None
    } else {
        let id = control_plane_id(&sec.trust_domain)?;
        let mut names = cfg.xds_dns_names.clone();
        names.push(bound.ip().to_string());
        names.extend(ca_bound.map(|a| a.ip().to_string()));
        names.dedup();
        let lifetime = Duration::from_secs(365 * 24 * 3600);
        let serving = match previous_signer {
            Some(prev) => prev.issue_server(&id, &names, lifetime, std::time::SystemTime::now()),
            None => certs.issue_server(&id, &names, lifetime),
        }
        .context("issuing the control plane's serving certificate")?;
        Some(XdsTls {
            cert_pem: serving.cert_chain_pem.clone(),
            key_pem: serving.private_key_pem().to_string(),
            client_anchors: certs.issuer_anchors(),
            trust_domain: sec.trust_domain.clone(),
        })
    };
    let stop = shared.stop.clone();
    let mut limits = cfg.limits.clone();
    crate::xds::listener::fit_to_fd_limit(&mut limits.conn);
    if let (Some(listener), Some(t)) = (ca_listener, &tls) {
        let setup =
            crate::xds::listener::TlsSetup::from_pem(&t.cert_pem, &t.key_pem, &t.client_anchors)
                .context("configuring TLS for the certificate endpoint")?;
        let service = Arc::new(crate::identity::ca_service::CaService::new(
            certs.clone(),
            sec.cert_lifetime,
            sec.trust_domain.clone(),
            client.clone(),
            shared.metrics.clone(),
            pods_in(cache.clone()),
        ));
        tokio::spawn(crate::identity::ca_service::serve(
            listener,
            setup,
            limits.conn.clone(),
            service,
            stop.clone(),
        ));
    }
    let mut injector_bound = None;
    if let (Some((addr, inject)), Some(t)) = (&cfg.inject, &tls) {
        let listener = crate::xds::listener::bind(*addr)
            .with_context(|| format!("binding the injector address {addr}"))?;
        injector_bound = listener.local_addr().ok();
        let setup =
            crate::xds::listener::TlsSetup::from_pem(&t.cert_pem, &t.key_pem, &t.client_anchors)
                .context("configuring TLS for the injector")?;
        let bundle = certs.bundle_pem();
        let inject = crate::k8s::inject::InjectConfig {
            trust_domain: sec.trust_domain.clone(),
            trust_bundle_pem: bundle.clone(),
            ..inject.clone()
        };
        tokio::spawn(crate::k8s::inject::webhook::serve(
            listener,
            setup,
            limits.conn.clone(),
            Arc::new(inject),
            shared.metrics.clone(),
            stop.clone(),
        ));
        if let Some(client) = client.clone() {
            tokio::spawn(async move {
                loop {
                    if let Err(e) =
                        crate::k8s::inject::webhook::sync_ca_bundle(client.clone(), &bundle).await
                    {
                        tracing::warn!(error = %format!("{e:#}"), "updating the injector's caBundle failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            });
        }
        tracing::info!(injector = %addr, "serving the sidecar injector");
    }
    let server = serve_ads(listener, shared, tls, limits);
    tokio::pin!(server);
    admin
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(path) = &cfg.ready_file {
        write_ready(path, bound, admin_bound, ca_bound, injector_bound)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(xds = %bound, admin = %admin_bound, ca = ?ca_bound, tls = !sec.insecure_xds, "serving xDS");
    tokio::select! {
        result = &mut server => return result,
        signal = shutdown_signal() => tracing::info!(%signal, drain_ms = cfg.drain.as_millis() as u64, "shutting down: not ready, no new connections, ending every xDS stream"),
    }
    let started = std::time::Instant::now();
    admin
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    stop.stop();
    match tokio::time::timeout(cfg.drain, &mut server).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!(
            drain_ms = cfg.drain.as_millis() as u64,
            "drain time ran out with connections still open; closing them"
        ),
    }
    tracing::info!(took_ms = started.elapsed().as_millis() as u64, "shut down");
    Ok(())
}

/// Tells every stream and server loop that the control plane is shutting down.
#[derive(Clone, Debug)]
pub struct Stop {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl Stop {
    /// Starts the shutdown.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the shutdown has started.
    pub fn is_stopped(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes once the shutdown has started.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // An error means the sender is gone, which only happens at exit.
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

/// TLS for the xDS port.
pub struct XdsTls {
    /// Serving certificate chain.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
    /// Client certificates must chain to one of these: the CA that issues workload
    /// certificates (and, during a rotation overlap, the previous roots).
    pub client_anchors: Vec<String>,
    /// Trust domain of client identities.
    pub trust_domain: String,
}

/// What the gRPC services share.
#[derive(Clone)]
pub struct Shared {
    /// Snapshots.
    pub cache: Arc<Store>,
    /// Rejections.
    pub nacks: Arc<NackLog>,
    /// Connected proxies and what they were sent.
    pub proxies: Arc<ProxyRegistry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The shutdown signal: streams end when it fires.
    pub stop: Stop,
}

impl Shared {
    /// Fresh registries around `cache`.
    pub fn new(cache: Arc<Store>) -> Self {
        let metrics = Arc::new(Metrics::new());
        cache.set_metrics(metrics.clone());
        let proxies: Arc<ProxyRegistry> = Arc::default();
        Shared {
            cache,
            nacks: Arc::default(),
            proxies,
            metrics,
            stop: Stop::default(),
        }
    }
}

/// Running pods per `namespace/serviceaccount`: what raises an identity's memory
/// allowance (a finished pod runs nothing, as for certificates and streams).
fn pods_per_account(model: &translator::model::Model) -> crate::xds::wire::budget::PodCounts {
    let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
    for p in model.pods().filter(|p| !p.finished) {
        *counts
            .entry((p.namespace.as_str(), p.service_account.as_str()))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((ns, sa), n)| (format!("{ns}/{sa}"), n))
        .collect()
}

/// Keeps `budget`'s pod counts up to date: counted again after a build in which a Pod
/// changed, not after every build.
async fn feed_pod_counts(store: Arc<Store>, budget: Arc<crate::xds::wire::budget::Budget>) {
    let mut pod_builds = store.pod_builds();
    loop {
        budget.set_pods(store.read(pods_per_account));
        if pod_builds.changed().await.is_err() {
            return;
        }
    }
}

/// Serves ADS and CSDS on `listener` until `shared.stop` fires; with `tls`, every peer
/// must present a client certificate our CA issued: a proxy's stream acts as that
/// certificate's identity, and CSDS readers must be in the control plane's namespace and
/// trust domain (checked before a request is read). What peers make the server hold is
/// charged to their identities within `limits.budget`.
pub async fn serve_ads(
    listener: tokio::net::TcpListener,
    shared: Shared,
    tls: Option<XdsTls>,
    limits: Limits,
) -> anyhow::Result<()> {
    let verify = tls.as_ref().map(|t| t.trust_domain.clone());
    let setup = tls
        .map(|t| {
            crate::xds::listener::TlsSetup::from_pem(&t.cert_pem, &t.key_pem, &t.client_anchors)
        })
        .transpose()
        .context("configuring TLS for xDS")?
        .map(Arc::new);
    let budget = crate::xds::wire::budget::Budget::new(
        limits.budget,
        shared.metrics.xds_memory_charged.clone(),
    );
    shared
        .metrics
        .xds_memory_budget
        .set(i64::try_from(limits.budget.total).unwrap_or(i64::MAX));
    tokio::spawn(feed_pod_counts(shared.cache.clone(), budget.clone()));
    let ads = crate::xds::wire::AdsServer::new(
        AdsService::new(
            shared.cache,
            shared.nacks,
            shared.proxies.clone(),
            shared.metrics.clone(),
            verify.clone(),
            shared.stop.clone(),
            limits.stream,
        ),
        limits.message_bytes,
    );
    let csds = CsdsService::new(
        shared.proxies,
        verify.map(|td| (td, CONTROL_PLANE_NS.to_string())),
        shared.stop.clone(),
    );
    // Callers are checked before their request is read (tonic reads a unary request
    // whole, reserving its declared length, before the handler runs).
    let guard = csds.clone();
    let csds = tonic::service::interceptor::InterceptedService::new(
        ClientStatusDiscoveryServiceServer::new(csds)
            .max_decoding_message_size(CSDS_MESSAGE_BYTES.min(limits.message_bytes))
            .max_encoding_message_size(usize::MAX),
        move |req: tonic::Request<()>| guard.authorize(&req).map(|()| req),
    );
    // HTTP/2 backstop; the ADS service refuses streams over the limit with a status. Each
    // slot may hold a finished stream's unread responses (charged to the connection), so
    // there are only a few more than ADS may use: CSDS and a refusal.
    let h2_streams =
        u32::try_from(limits.stream.streams_per_connection.saturating_add(2)).unwrap_or(u32::MAX);
    let charging = crate::xds::wire::http2::Charging {
        budget,
        metrics: shared.metrics.clone(),
    };
    let incoming = crate::xds::listener::incoming(
        listener,
        setup,
        limits.conn,
        shared.metrics,
        shared.stop.clone(),
    );
    let routes = tonic::service::Routes::new(ads).add_service(csds).prepare();
    crate::xds::wire::http2::serve(
        incoming,
        routes,
        crate::xds::wire::http2::Settings {
            max_streams: h2_streams,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        },
        charging,
        shared.stop.clone(),
    )
    .await;
    Ok(())
}

/// Starts the Kubernetes watchers, the Lease election and the status writer.
pub fn start_kubernetes(
    client: kube::Client,
    cache: Arc<Store>,
    scope: &crate::k8s::watch::KubeScope,
    lease: crate::k8s::lease::LeaseConfig,
) -> crate::k8s::watch::SyncState {
    let (rejected, sync) = crate::k8s::watch::spawn(client.clone(), cache.clone(), scope);
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    let field_manager = format!("rudder/{}", lease.identity);
    tokio::spawn(crate::k8s::lease::run(client.clone(), lease, leader_tx));
    tokio::spawn(crate::k8s::crd_status::run(
        client,
        cache,
        rejected,
        leader_rx,
        field_manager,
    ));
    sync
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "rudder".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

fn write_ready(
    path: &std::path::Path,
    xds: SocketAddr,
    admin: SocketAddr,
    ca: Option<SocketAddr>,
    injector: Option<SocketAddr>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let body = serde_json::json!({
        "xds": xds.to_string(),
        "admin": admin.to_string(),
        "ca": ca.map(|a| a.to_string()),
        "injector": injector.map(|a| a.to_string()),
    });
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(tmp, path)
}

/// Completes on SIGTERM or Ctrl-C (SIGINT) and names the signal.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        Some(()) = async { term.as_mut()?.recv().await } => "SIGTERM",
        Some(()) = async { int.as_mut()?.recv().await } => "SIGINT",
        else => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_allowances_count_running_pods_per_service_account() {
        let pod = |name: &str, sa: &str, phase: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{serviceAccountName: {sa}, containers: [{{name: app}}]}}\nstatus: {{podIP: 10.0.0.1, phase: {phase}}}\n"
            )
        };
        let yaml = [
            pod("a-1", "a", "Running"),
            pod("a-2", "a", "Running"),
            pod("a-3", "a", "Succeeded"),
            pod("b-1", "b", "Failed"),
        ]
        .join("---\n");
        let mut model = translator::model::Model::new();
        for o in &translator::model::parse_manifest(&yaml)
            .expect("yaml")
            .objects
        {
            model.apply(o).expect("valid");
        }
        let counts = super::pods_per_account(&model);
        assert_eq!(counts.get("shop/a"), Some(&2));
        assert_eq!(counts.get("shop/b"), None, "a finished pod runs nothing");
    }
}
