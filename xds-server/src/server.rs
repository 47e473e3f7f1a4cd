//! Wiring of `xds-server run`: opens the CA and the store, starts each subsystem (the
//! source that feeds the store, the admin endpoint, the xDS port, the certificate
//! endpoint, the sidecar injector), reports the bound addresses, and drains on SIGTERM.
//! Each subsystem starts itself; this file only hands them what they share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use translator::MeshConfig;
use translator::tls::MtlsMode;

use crate::admin::Admin;
use crate::config::{Limits, Security};
use crate::k8s::inject::InjectConfig;
use crate::net::front_door::{self, ServingTls};
use crate::pki::ca_service::PodsIn;
use crate::pki::start::{CaEndpoint, Opened};
use crate::runtime::shutdown_signal;
use crate::source::manifest::{self, ManifestDir};
use crate::xds::serve::{XdsState, serve_ads};
use crate::xds::store::{Store, StoreConfig};

/// Everything `run` was given.
#[derive(Debug)]
pub(crate) struct ServeConfig {
    /// Manifest directory (manifest mode).
    pub(crate) manifests: Option<PathBuf>,
    /// Cluster mode.
    pub(crate) kubernetes: bool,
    /// Namespaces to watch (cluster mode; empty = all).
    pub(crate) namespaces: Vec<String>,
    /// Namespace of the Lease and the CA Secret.
    pub(crate) lease_namespace: String,
    /// Replica identity.
    pub(crate) identity: Option<String>,
    /// xDS listen address.
    pub(crate) xds_address: SocketAddr,
    /// The certificate endpoint's address (none: no endpoint; not with plain-text xDS).
    pub(crate) ca_address: Option<SocketAddr>,
    /// The sidecar injector's address and settings (trust domain and bundle are filled
    /// in here).
    pub(crate) inject: Option<(SocketAddr, crate::k8s::inject::InjectConfig)>,
    /// Where to write the bound addresses.
    pub(crate) ready_file: Option<PathBuf>,
    /// Admin address: `/metrics`, `/healthz`, `/readyz`.
    pub(crate) admin_address: SocketAddr,
    /// Push debounce.
    pub(crate) debounce: Duration,
    /// Mesh-wide inbound mTLS mode.
    pub(crate) mtls_mode: MtlsMode,
    /// What destinations without a TrafficTarget allow: the mesh's choice and each
    /// namespace's.
    pub(crate) inbound: (
        translator::mesh::InboundDefault,
        std::collections::BTreeMap<String, translator::mesh::InboundDefault>,
    ),
    /// DNS names for the serving certificate.
    pub(crate) xds_dns_names: Vec<String>,
    /// CA and TLS settings.
    pub(crate) security: Security,
    /// Longest a shutdown waits for connections to close after ending every stream.
    pub(crate) drain: Duration,
    /// Limits on what peers may open and send.
    pub(crate) limits: Limits,
    /// Benchmark baseline: resend every resource of a type on any change.
    pub(crate) full_resend: bool,
    /// Serve virtual hosts apart (VHDS) to the Envoys that can take them so.
    pub(crate) vhds: bool,
    /// Quiet time after a manifest-directory event before it is read.
    pub(crate) manifest_debounce: Duration,
}

/// Runs the control plane until SIGTERM or Ctrl-C.
pub(crate) async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let sec = &cfg.security;
    check_insecure(sec, cfg.xds_address)?;
    let client = match cfg.kubernetes {
        true => Some(
            kube::Client::try_default()
                .await
                .context("connecting to Kubernetes (in-cluster config or kubeconfig)")?,
        ),
        false => None,
    };
    let ca = crate::pki::start::open(client.as_ref(), &cfg.lease_namespace, sec).await?;
    let cache = new_store(&cfg, &ca);
    let state = XdsState::new(cache.clone());
    let admin = Arc::new(Admin {
        metrics: state.metrics.clone(),
        proxies: state.proxies.clone(),
        certs: Some(ca.certs.clone()),
        store: Some(cache.clone()),
        ready: Default::default(),
    });
    let admin_bound = crate::admin::start(cfg.admin_address, admin.clone()).await?;
    start_source(&cfg, client.clone(), cache.clone()).await;
    let report = cache.rebuild_now();
    tracing::info!(encoded = report.encoded, "initial sync done");

    let listener = front_door::bind(cfg.xds_address)
        .with_context(|| format!("binding the xDS address {}", cfg.xds_address))?;
    let mut bound = Bound {
        xds: listener
            .local_addr()
            .context("reading the bound xDS address")?,
        admin: admin_bound,
        ca: None,
        injector: None,
    };
    tokio::spawn(cache.clone().run_pusher());
    tokio::spawn(crate::observability::memory::run_trimmer());
    let mut limits = cfg.limits.clone();
    front_door::fit_to_fd_limit(&mut limits.conn);
    let tls = start_tls_ports(&cfg, &ca, client, &state, &limits, &mut bound)?;
    let stop = state.stop.clone();
    let server = serve_ads(listener, state, tls, limits);
    tokio::pin!(server);
    admin.ready.store(true, Ordering::Relaxed);
    if let Some(path) = &cfg.ready_file {
        write_ready(path, &bound).with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(xds = %bound.xds, admin = %bound.admin, ca = ?bound.ca, tls = !sec.insecure_xds, "serving xDS");
    tokio::select! {
        result = &mut server => return result,
        signal = shutdown_signal() => tracing::info!(%signal, drain_ms = cfg.drain.as_millis() as u64, "shutting down: not ready, no new connections, ending every xDS stream"),
    }
    let started = std::time::Instant::now();
    admin.ready.store(false, Ordering::Relaxed);
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

/// Plain-text xDS only on loopback.
fn check_insecure(sec: &Security, xds_address: SocketAddr) -> anyhow::Result<()> {
    if sec.insecure_xds && !xds_address.ip().is_loopback() {
        anyhow::bail!(
            "--insecure-xds is refused on {xds_address}: without TLS anyone who can connect may claim any identity and is sent its config; it is allowed on a loopback address only"
        );
    }
    Ok(())
}

/// The store, signing SDS secrets with the CA.
fn new_store(cfg: &ServeConfig, ca: &Opened) -> Arc<Store> {
    let mesh = MeshConfig {
        trust_domain: cfg.security.trust_domain.clone(),
        mtls: cfg.mtls_mode,
        inbound_default: cfg.inbound.0,
        namespace_inbound: cfg.inbound.1.clone(),
    };
    Store::new(
        StoreConfig {
            debounce: cfg.debounce,
            full_resend: cfg.full_resend,
            vhds: cfg.vhds,
            require_live_pod: cfg.kubernetes,
            ..StoreConfig::default()
        },
        mesh,
        Some(ca.certs.clone()),
    )
}

/// Starts the source that feeds the store, the manifest directory or Kubernetes, and
/// returns once its objects are in.
async fn start_source(cfg: &ServeConfig, client: Option<kube::Client>, cache: Arc<Store>) {
    if let Some(dir) = &cfg.manifests {
        let mut source = ManifestDir::new(dir);
        manifest::apply(&cache, source.scan());
        tokio::spawn(manifest::run_with(
            source,
            cache.clone(),
            cfg.manifest_debounce,
        ));
        tokio::spawn(crate::k8s::crd_status::log_changes(cache));
        tracing::info!(dir = %dir.display(), "manifests loaded");
    } else if let Some(client) = client {
        crate::k8s::start::start_and_sync(
            client,
            cache,
            cfg.namespaces.clone(),
            cfg.lease_namespace.clone(),
            cfg.identity.clone(),
        )
        .await;
    }
}

/// Unless xDS is plain text: issues the serving certificate (for the xDS and
/// certificate-endpoint addresses too) and starts the certificate endpoint and the
/// injector behind it. Answers the xDS port's TLS.
fn start_tls_ports(
    cfg: &ServeConfig,
    ca: &Opened,
    client: Option<kube::Client>,
    state: &XdsState,
    limits: &Limits,
    bound: &mut Bound,
) -> anyhow::Result<Option<ServingTls>> {
    let sec = &cfg.security;
    let ca_listener = match cfg.ca_address.filter(|_| !sec.insecure_xds) {
        Some(addr) => Some(crate::pki::start::bind(addr)?),
        None => None,
    };
    bound.ca = ca_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .context("reading the certificate endpoint's address")?;
    if sec.insecure_xds {
        tracing::warn!(
            "--insecure-xds: serving xDS in plain text on loopback. Any local process may claim any workload identity and is sent that identity's config, and may read every proxy's config over CSDS. For local experiments only."
        );
        return Ok(None);
    }
    let mut names = cfg.xds_dns_names.clone();
    names.push(bound.xds.ip().to_string());
    names.extend(bound.ca.map(|a| a.ip().to_string()));
    names.dedup();
    let (tls, issuer) = ca.serving_tls(&sec.trust_domain, &names)?;
    tokio::spawn(crate::pki::start::keep_serving_fresh(
        issuer,
        tls.key.clone(),
    ));
    if let Some(listener) = ca_listener {
        let endpoint = CaEndpoint {
            listener,
            certs: ca.certs.clone(),
            client: client.clone(),
            pods_in: pods_in(state.cache.clone()),
        };
        let (metrics, stop) = (state.metrics.clone(), state.stop.clone());
        crate::pki::start::start_ca_service(
            endpoint,
            &tls,
            sec,
            limits.conn.clone(),
            metrics,
            stop,
        )?;
    }
    if let Some((addr, inject)) = &cfg.inject {
        let inject = InjectConfig {
            trust_domain: sec.trust_domain.clone(),
            trust_bundle_pem: ca.certs.bundle_pem(),
            namespaces: cfg.namespaces.clone(),
            ..inject.clone()
        };
        bound.injector = crate::k8s::start::start_injector(
            *addr,
            inject,
            &tls,
            limits.conn.clone(),
            client,
            state.metrics.clone(),
            state.stop.clone(),
        )?;
    }
    Ok(Some(tls))
}

/// The pods of a namespace as the certificate endpoint's liveness check reads them: a
/// finished pod (Succeeded or Failed) vouches for no identity.
fn pods_in(store: Arc<Store>) -> PodsIn {
    Box::new(move |namespace| {
        store.read(|m| {
            m.pods_in(namespace)
                .filter(|p| !p.finished)
                .map(|p| (p.name.clone(), p.service_account.clone()))
                .collect()
        })
    })
}

/// The addresses bound, as the ready file reports them.
struct Bound {
    xds: SocketAddr,
    admin: SocketAddr,
    ca: Option<SocketAddr>,
    injector: Option<SocketAddr>,
}

fn write_ready(path: &std::path::Path, bound: &Bound) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let body = serde_json::json!({
        "xds": bound.xds.to_string(),
        "admin": bound.admin.to_string(),
        "ca": bound.ca.map(|a| a.to_string()),
        "injector": bound.injector.map(|a| a.to_string()),
    });
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(tmp, path)
}
