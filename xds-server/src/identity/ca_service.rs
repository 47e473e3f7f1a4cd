//! The certificate endpoint (`run --ca-address`): HTTPS with the control plane's serving
//! certificate, where the proxy agent obtains and renews the workload certificate that
//! is also its proxy's xDS client certificate. The agent sends a certificate request for
//! a key it made; the answer holds only the certificate. A client certificate is optional
//! here (a first request may authenticate with a ServiceAccount token), unlike on the
//! xDS port. The connection limits and handshake timeout of the xDS port apply. The
//! rules live in [`super::issuer`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper::{Request, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};

use super::certs::CertManager;
use super::issuer::{self, Decision, Issued, Refusal, Reviewed, TOKEN_AUDIENCE};
use crate::observability::metrics::Metrics;
use crate::server::Stop;
use crate::xds::listener::{ConnInfo, ConnLimits, TlsSetup};

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head, in bytes.
const MAX_HEAD_BYTES: usize = 16 << 10;
/// How long a client may take to send its request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may be issued a certificate now: the (pod name, service account) of every pod in
/// a namespace, from the model (cluster mode: the watched Pods; manifest mode: the
/// manifests' Pods).
pub type PodsIn = Box<dyn Fn(&str) -> Vec<(String, String)> + Send + Sync>;

/// What the endpoint needs.
pub struct CaService {
    /// Issues the certificates.
    pub certs: Arc<CertManager>,
    /// Lifetime of what it issues.
    pub lifetime: Duration,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// Checks ServiceAccount tokens (cluster mode); `None` accepts certificates only.
    pub kube: Option<kube::Client>,
    /// Counts requests by result.
    pub metrics: Arc<Metrics>,
    /// TokenReviews in flight at once (anonymous callers must not flood the API server).
    pub reviews: tokio::sync::Semaphore,
    /// The pods of a namespace, for the liveness check.
    pub pods_in: PodsIn,
}

/// TokenReviews in flight at once; more callers are told to retry.
pub const CONCURRENT_REVIEWS: usize = 16;

static REFUSED_LOG: crate::xds::listener::RateLimited = crate::xds::listener::RateLimited::new();

fn json(status: u16, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

impl CaService {
    fn refused(&self, info: &ConnInfo, r: &Refusal) -> Response<Full<Bytes>> {
        self.metrics.cert_request(r.reason);
        if let Some(suppressed) = REFUSED_LOG.allow() {
            tracing::warn!(
                peer = ?info.remote,
                reason = r.reason,
                error = %r.message,
                suppressed,
                "refused a certificate request"
            );
        }
        json(r.status, &serde_json::json!({"error": r.message}))
    }

    async fn review(&self, token: String) -> Result<Reviewed, Refusal> {
        let Some(client) = &self.kube else {
            return Err(Refusal {
                status: 401,
                reason: "tokens_disabled",
                message: "tokens are not checked in this mode".into(),
            });
        };
        let Ok(_permit) = self.reviews.try_acquire() else {
            return Err(Refusal {
                status: 503,
                reason: "review_busy",
                message: "too many token reviews in flight; retry".into(),
            });
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token,
                audiences: Some(vec![TOKEN_AUDIENCE.into()]),
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
        let done = tokio::time::timeout(
            Duration::from_secs(10),
            api.create(&kube::api::PostParams::default(), &review),
        )
        .await;
        match done {
            Ok(Ok(r)) => issuer::identity_from_review(r.status.as_ref(), &self.trust_domain),
            Ok(Err(e)) => Err(Refusal {
                status: 503,
                reason: "token_review_failed",
                message: format!(
                    "the TokenReview failed: {}",
                    crds::text::clip(&e.to_string(), 256)
                ),
            }),
            Err(_) => Err(Refusal {
                status: 503,
                reason: "token_review_timeout",
                message: "the TokenReview took over 10 s".into(),
            }),
        }
    }

    async fn handle(
        &self,
        info: &ConnInfo,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        if let Some(reason) = &info.refused {
            let r = Refusal {
                status: 503,
                reason: "connections",
                message: reason.to_string(),
            };
            return self.refused(info, &r);
        }
        let decision = issuer::decide(
            req.method().as_str(),
            req.uri().path(),
            req.headers()
                .get(hyper::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            info.identity.as_ref(),
            &self.trust_domain,
            self.kube.is_some(),
        );
        if let Decision::Refuse(r) = &decision {
            return self.refused(info, r);
        }
        // The body before any TokenReview: a malformed request costs the API server nothing.
        let request = match read_body(req.into_body()).await {
            Ok(body) => issuer::parse_request(&body),
            Err(r) => Err(r),
        };
        let request = match request {
            Ok(r) => r,
            Err(r) => return self.refused(info, &r),
        };
        let reviewed = match decision {
            Decision::Issue(id) => Reviewed { id, pod: None },
            Decision::Review(token) => match self.review(token).await {
                Ok(r) => r,
                Err(r) => return self.refused(info, &r),
            },
            Decision::Refuse(r) => return self.refused(info, &r),
        };
        let id = reviewed.id;
        let pods = (self.pods_in)(&id.namespace);
        let alive = issuer::live(
            &id,
            reviewed.pod.as_deref(),
            pods.iter().map(|(p, sa)| (p.as_str(), sa.as_str())),
        );
        let checked = alive.and_then(|()| issuer::check_request(&request, &id));
        let checked = match checked {
            Ok(c) => c,
            Err(r) => return self.refused(info, &r),
        };
        let cert = match self.certs.sign_request(&checked, &id, self.lifetime) {
            Ok(c) => c,
            Err(e) => {
                let r = Refusal {
                    status: 500,
                    reason: "issue_failed",
                    message: format!("issuing for {id} failed: {e}"),
                };
                return self.refused(info, &r);
            }
        };
        let not_after = cert
            .not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.metrics.cert_request("issued");
        tracing::info!(identity = %id, peer = ?info.remote, renewal = info.identity.is_some(), not_after, "signed a certificate request from an agent");
        json(
            200,
            &Issued {
                spiffe_id: id.to_string(),
                cert_chain_pem: cert.cert_chain_pem,
                trust_bundle_pem: self.certs.bundle_pem(),
                not_after,
            },
        )
    }
}

/// The request body, bounded in size and time.
async fn read_body(body: hyper::body::Incoming) -> Result<Bytes, Refusal> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, issuer::MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(_)) => Err(Refusal {
            status: 413,
            reason: "body_too_large",
            message: format!(
                "the request body is over {} bytes or unreadable",
                issuer::MAX_BODY_BYTES
            ),
        }),
        Err(_) => Err(Refusal {
            status: 408,
            reason: "body_timeout",
            message: format!("the request body took over {BODY_TIMEOUT:?}"),
        }),
    }
}

/// Serves the endpoint on `listener` until `stop` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: TlsSetup,
    limits: ConnLimits,
    service: Arc<CaService>,
    stop: Stop,
) {
    let tls = Arc::new(TlsSetup {
        client_cert_optional: true,
        ..tls
    });
    let metrics = service.metrics.clone();
    let mut incoming =
        crate::xds::listener::incoming(listener, Some(tls), limits, metrics, stop.clone());
    while let Some(Ok(conn)) = incoming.next().await {
        let info = tonic::transport::server::Connected::connect_info(&conn);
        let service = service.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req| {
                let (service, info) = (service.clone(), info.clone());
                async move { Ok::<_, std::convert::Infallible>(service.handle(&info, req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(conn), handler)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "certificate endpoint connection");
            }
        });
    }
}
