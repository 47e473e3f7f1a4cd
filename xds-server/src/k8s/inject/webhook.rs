//! The injector's HTTPS shell: `POST /inject` with an AdmissionReview, answered by
//! [`super::review`]. The serving certificate comes from the built-in CA; in cluster mode
//! the MutatingWebhookConfiguration's `caBundle` is kept equal to the trust bundle, so
//! the API server trusts it. Anyone in the cluster network may connect, so it runs in
//! the shared hardened shell (`crate::net::http_shell`): the body is read under a 3 s
//! deadline before any permit, permits and queues are per source address, idle and
//! preface-only connections are closed; every answer comes well inside the API server's
//! 10 s webhook timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use super::InjectConfig;
use crate::config::ConnLimits;
use crate::net::fair_queue::QueueLimits;
use crate::net::front_door::TlsSetup;
use crate::net::http_shell::{self, ShellLimits, ShellRequest, json};
use crate::runtime::Stop;

/// The path the API server calls.
pub const PATH: &str = "/inject";
/// Largest AdmissionReview accepted (a Pod is stored in etcd's 1.5 MiB limit).
const MAX_BODY_BYTES: usize = 2 << 20;
/// Connections at once: the API server's, not a fleet's.
const MAX_CONNECTIONS: usize = 256;
/// Connections at once from one address.
const MAX_CONNECTIONS_PER_PEER: usize = 32;
/// Name of the MutatingWebhookConfiguration the chart installs for the default revision.
pub const WEBHOOK_CONFIG: &str = "rudder-sidecar-injector";

/// The injector's bounds. Bodies being read: 32 at once, 8 per address (at most 64 MiB
/// of AdmissionReviews in memory); reviews: 8 at once, 4 per address. The API server is
/// one address that may send bursts, so an address's queue is deep (waiting requests
/// hold no body yet) and a wait short: the body (3 s), the two waits (2 s each) and the
/// review end before its 10 s timeout.
fn limits(given: &ConnLimits) -> ShellLimits {
    let queue = |total, per_peer| QueueLimits {
        total,
        per_peer,
        queue_per_peer: 256,
        queue_total: 1024,
        wait: Duration::from_secs(2),
    };
    ShellLimits {
        max_body_bytes: MAX_BODY_BYTES,
        handler_timeout: Duration::from_secs(2),
        ..ShellLimits::new("injector", queue(32, 8), queue(8, 4))
    }
    .connections(given, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER)
}

fn handle(cfg: &InjectConfig, req: &ShellRequest) -> Response<Full<Bytes>> {
    if req.parts.uri.path() != PATH || req.parts.method != hyper::Method::POST {
        return json(404, &serde_json::json!({"error": "POST /inject"}));
    }
    let Ok(review) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
        return json(400, &serde_json::json!({"error": "not JSON"}));
    };
    let out = super::review(&review, cfg);
    let pod = &review["request"]["object"]["metadata"];
    let name = pod["name"]
        .as_str()
        .or(pod["generateName"].as_str())
        .unwrap_or("?");
    let ns = review["request"]["namespace"].as_str().unwrap_or("?");
    match out["response"]["warnings"][0].as_str() {
        Some(w) => tracing::info!(pod = %format!("{ns}/{name}"), "{w}"),
        None => {
            tracing::info!(pod = %format!("{ns}/{name}"), patched = out["response"]["patch"].is_string(), "injector answered")
        }
    }
    json(200, &out)
}

/// Serves the injector on `listener` until `stop` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: TlsSetup,
    limits: ConnLimits,
    cfg: Arc<InjectConfig>,
    metrics: Arc<crate::observability::metrics::Metrics>,
    stop: Stop,
) {
    // The API server presents no client certificate.
    let tls = Arc::new(TlsSetup {
        client_cert_optional: true,
        ..tls
    });
    let handler = move |req: ShellRequest| {
        let cfg = cfg.clone();
        async move { handle(&cfg, &req) }
    };
    http_shell::serve(
        listener,
        Some(tls),
        self::limits(&limits),
        metrics,
        stop,
        handler,
    )
    .await;
}

/// Keeps the MutatingWebhookConfiguration's `caBundle` equal to `bundle_pem`: the control
/// plane is its one owner in cluster mode, with either CA source (the chart never sets it).
pub(crate) async fn sync_ca_bundle(
    client: kube::Client,
    name: &str,
    bundle_pem: &str,
) -> anyhow::Result<()> {
    use base64::Engine;
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client);
    let Some(current) = api.get_opt(name).await? else {
        tracing::warn!(
            name = name,
            "no MutatingWebhookConfiguration to give the CA bundle to; sidecars are not injected"
        );
        return Ok(());
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle_pem);
    let webhooks: Vec<serde_json::Value> = current
        .webhooks
        .iter()
        .flatten()
        .map(|w| serde_json::json!({"name": w.name, "clientConfig": {"caBundle": encoded}}))
        .collect();
    if current.webhooks.iter().flatten().all(|w| {
        w.client_config
            .ca_bundle
            .as_ref()
            .is_some_and(|b| b.0 == bundle_pem.as_bytes())
    }) {
        return Ok(());
    }
    // A strategic merge patch matches webhooks by name.
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Strategic(serde_json::json!({"webhooks": webhooks})),
    )
    .await?;
    tracing::info!(
        name = name,
        "gave the injector's CA bundle to the API server"
    );
    Ok(())
}
