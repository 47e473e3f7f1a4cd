//! The injector's HTTPS shell: `POST /inject` with an AdmissionReview, answered by
//! [`super::review`]. The serving certificate comes from the built-in CA; in cluster mode
//! the MutatingWebhookConfiguration's `caBundle` is kept equal to the trust bundle, so
//! the API server trusts it. Connection limits and the handshake timeout of the xDS port
//! apply; bodies are bounded.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response};

use super::InjectConfig;
use crate::server::Stop;
use crate::xds::listener::{ConnLimits, TlsSetup};

/// The path the API server calls.
pub const PATH: &str = "/inject";
/// Largest AdmissionReview accepted (a Pod is stored in etcd's 1.5 MiB limit).
const MAX_BODY_BYTES: usize = 2 << 20;
/// Requests read and answered at once; more wait (bounding memory to about 16 MiB).
const CONCURRENT_REQUESTS: usize = 8;
/// Longest one request may take, its body included (the API server waits 10 s at most).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Connections at once: the API server's, not a fleet's.
const MAX_CONNECTIONS: usize = 256;
/// Name of the MutatingWebhookConfiguration the chart installs.
pub const WEBHOOK_CONFIG: &str = "rudder-sidecar-injector";

fn reply(status: u16, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    cfg: &InjectConfig,
    permits: &tokio::sync::Semaphore,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH || req.method() != hyper::Method::POST {
        return reply(404, br#"{"error":"POST /inject"}"#.to_vec());
    }
    let Ok(_permit) = permits.acquire().await else {
        return reply(503, br#"{"error":"shutting down"}"#.to_vec());
    };
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            tracing::warn!(error = %e, "injector: unreadable request");
            return reply(
                413,
                br#"{"error":"request too large or unreadable"}"#.to_vec(),
            );
        }
    };
    let Ok(review) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return reply(400, br#"{"error":"not JSON"}"#.to_vec());
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
    reply(200, out.to_string().into_bytes())
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
    let limits = ConnLimits {
        max_connections: limits.max_connections.min(MAX_CONNECTIONS),
        max_connections_per_peer: limits.max_connections_per_peer.min(MAX_CONNECTIONS),
        ..limits
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REQUESTS));
    let mut incoming = crate::xds::listener::incoming(listener, Some(tls), limits, metrics, stop);
    while let Some(Ok(conn)) = incoming.next().await {
        let (cfg, permits) = (cfg.clone(), permits.clone());
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req| {
                let (cfg, permits) = (cfg.clone(), permits.clone());
                async move {
                    let answer = tokio::time::timeout(REQUEST_TIMEOUT, handle(&cfg, &permits, req))
                        .await
                        .unwrap_or_else(|_| {
                            reply(408, br#"{"error":"request timed out"}"#.to_vec())
                        });
                    Ok::<_, std::convert::Infallible>(answer)
                }
            });
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            builder.http2().max_concurrent_streams(4);
            let served = builder
                .serve_connection(hyper_util::rt::TokioIo::new(conn), handler)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "injector connection");
            }
        });
    }
}

/// Keeps the MutatingWebhookConfiguration's `caBundle` equal to `bundle_pem` (cluster
/// mode with the self-made CA: the chart cannot know it at install time).
pub async fn sync_ca_bundle(client: kube::Client, bundle_pem: &str) -> anyhow::Result<()> {
    use base64::Engine;
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let api: kube::Api<MutatingWebhookConfiguration> = kube::Api::all(client);
    let Some(current) = api.get_opt(WEBHOOK_CONFIG).await? else {
        tracing::warn!(
            name = WEBHOOK_CONFIG,
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
        WEBHOOK_CONFIG,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Strategic(serde_json::json!({"webhooks": webhooks})),
    )
    .await?;
    tracing::info!(
        name = WEBHOOK_CONFIG,
        "gave the injector's CA bundle to the API server"
    );
    Ok(())
}
