//! Start-up of the Kubernetes side: the watchers that feed the store, the Lease election
//! and the status writer ([`start_kubernetes`]), and the sidecar injector with its
//! caBundle kept current ([`start_injector`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::ConnLimits;
use crate::k8s::inject::{InjectConfig, webhook};
use crate::k8s::lease::{self, LeaseConfig};
use crate::k8s::watch::{self, KubeScope, SyncState};
use crate::net::front_door::{self, ServingTls};
use crate::observability::metrics::Metrics;
use crate::runtime::Stop;
use crate::xds::store::Store;

/// Starts the Kubernetes watchers, the Lease election and the status writer.
pub fn start_kubernetes(
    client: kube::Client,
    cache: Arc<Store>,
    scope: &KubeScope,
    lease: LeaseConfig,
) -> SyncState {
    let (rejected, sync) = watch::spawn(client.clone(), cache.clone(), scope);
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    let field_manager = format!("rudder/{}", lease.identity);
    tokio::spawn(lease::run(client.clone(), lease, leader_tx));
    tokio::spawn(crate::k8s::crd_status::run(
        client,
        cache,
        rejected,
        leader_rx,
        field_manager,
    ));
    sync
}

/// Starts everything Kubernetes feeds and waits until the watched objects are listed.
/// `identity` names this replica in the status-writer election (default: host name and
/// a random suffix).
pub(crate) async fn start_and_sync(
    client: kube::Client,
    cache: Arc<Store>,
    namespaces: Vec<String>,
    lease_namespace: String,
    identity: Option<String>,
) {
    let lease = LeaseConfig {
        namespace: lease_namespace,
        name: "rudder-status-writer".into(),
        identity: identity.unwrap_or_else(default_identity),
    };
    start_kubernetes(client, cache, &KubeScope { namespaces }, lease)
        .wait()
        .await;
    tracing::info!("Kubernetes objects listed");
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "rudder".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Binds `addr` and serves the sidecar injector there with the control plane's serving
/// certificate; with a client, keeps the webhook's caBundle current. Answers the bound
/// address.
pub(crate) fn start_injector(
    addr: SocketAddr,
    inject: InjectConfig,
    tls: &ServingTls,
    limits: ConnLimits,
    client: Option<kube::Client>,
    metrics: Arc<Metrics>,
    stop: Stop,
) -> anyhow::Result<Option<SocketAddr>> {
    let listener =
        front_door::bind(addr).with_context(|| format!("binding the injector address {addr}"))?;
    let bound = listener.local_addr().ok();
    let setup = tls.setup().context("configuring TLS for the injector")?;
    let bundle = inject.trust_bundle_pem.clone();
    let webhook_name = inject.webhook_name.clone();
    tokio::spawn(webhook::serve(
        listener,
        setup,
        limits,
        Arc::new(inject),
        metrics,
        stop,
    ));
    if let Some(client) = client {
        tokio::spawn(keep_ca_bundle(client, webhook_name, bundle));
    }
    tracing::info!(injector = %addr, "serving the sidecar injector");
    Ok(bound)
}

/// Writes the injector's caBundle every minute, so that a lost write is mended.
async fn keep_ca_bundle(client: kube::Client, name: String, bundle: String) {
    loop {
        if let Err(e) = webhook::sync_ca_bundle(client.clone(), &name, &bundle).await {
            tracing::warn!(error = %format!("{e:#}"), "updating the injector's caBundle failed; retrying");
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}
