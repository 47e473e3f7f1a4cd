//! The certificate endpoint (`run --ca-address`): HTTPS with the control plane's serving
//! certificate, where the proxy agent obtains and renews the workload certificate that
//! is also its proxy's xDS client certificate. The agent sends a certificate request for
//! a key it made; the answer holds only the certificate, and only for an identity with
//! a pod in the model (a token bound to a pod needs that pod). A client certificate is optional here
//! (a first request may authenticate with a ServiceAccount token), unlike on the xDS
//! port. Anyone in the cluster network may call it, so it runs in the shared hardened
//! shell (`crate::net::http_shell`: the body is read under its deadline before any
//! permit, requests are bounded and fair-queued per address). A token is checked locally
//! first (`super::token`: a JWT for audience `rudder`, valid now, of a ServiceAccount),
//! a token a TokenReview refused is not reviewed again for a while, and TokenReviews in
//! flight are bounded and fair-queued per address. The rules live in [`super::issuer`].

use parking_lot::Mutex;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};

use super::certs::CertManager;
use super::issuer::{self, Decision, Issued, Refusal, Reviewed, TOKEN_AUDIENCE};
use super::token::{self, NegativeCache};
use crate::config::ConnLimits;
use crate::net::fair_queue::{FairQueue, QueueLimits};
use crate::net::front_door::{ConnInfo, TlsSetup};
use crate::net::http_shell::{self, ShellLimits, ShellRequest, json};
use crate::observability::metrics::Metrics;
use crate::runtime::Stop;

/// Largest request body (a CSR of at most 16 KiB in JSON).
const MAX_BODY_BYTES: usize = 32 << 10;
/// TokenReviews in flight at once, and from one address.
pub(crate) const CONCURRENT_REVIEWS: usize = 16;
const REVIEWS_PER_PEER: usize = 2;
/// Longest a caller waits for a TokenReview slot, and longest a review may take: with
/// the body (3 s) they end before the agent's 15 s request timeout.
const REVIEW_WAIT: Duration = Duration::from_secs(4);
const REVIEW_TIMEOUT: Duration = Duration::from_secs(8);
/// How long, and how many, refused tokens are remembered.
const REFUSED_TOKEN_TTL: Duration = Duration::from_secs(30);
const REFUSED_TOKENS: usize = 4096;

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
    /// TokenReviews in flight, fair between addresses (anonymous callers must not flood
    /// the API server nor crowd out real agents).
    reviews: Arc<FairQueue>,
    /// Tokens a TokenReview refused lately.
    refused_tokens: Mutex<NegativeCache>,
    /// The pods of a namespace, for the liveness check.
    pods_in: PodsIn,
}

static REFUSED_LOG: crate::log_limit::RateLimited = crate::log_limit::RateLimited::new();

/// The endpoint's bounds: connections 16 per address; bodies 64 at once, 4 per address
/// (2 MiB at most); requests 64 at once, 4 per address.
fn limits(given: &ConnLimits) -> ShellLimits {
    let queue = |total| QueueLimits {
        total,
        per_peer: 4,
        queue_per_peer: 8,
        queue_total: 512,
        wait: Duration::from_secs(2),
    };
    ShellLimits {
        max_body_bytes: MAX_BODY_BYTES,
        handler_timeout: REVIEW_WAIT + REVIEW_TIMEOUT + Duration::from_secs(1),
        keep_alive: false,
        ..ShellLimits::new("certificate_endpoint", queue(64), queue(64))
    }
    .connections(given, usize::MAX, 16)
}

impl CaService {
    /// The endpoint issuing `lifetime` certificates from `certs` in `trust_domain`,
    /// checking tokens with `kube` when given, to identities `pods_in` shows a pod of.
    pub fn new(
        certs: Arc<CertManager>,
        lifetime: Duration,
        trust_domain: String,
        kube: Option<kube::Client>,
        metrics: Arc<Metrics>,
        pods_in: PodsIn,
    ) -> Self {
        CaService {
            pods_in,
            certs,
            lifetime,
            trust_domain,
            kube,
            metrics,
            reviews: FairQueue::new(QueueLimits {
                total: CONCURRENT_REVIEWS,
                per_peer: REVIEWS_PER_PEER,
                queue_per_peer: 4,
                queue_total: 256,
                wait: REVIEW_WAIT,
            }),
            refused_tokens: Mutex::new(NegativeCache::new(REFUSED_TOKEN_TTL, REFUSED_TOKENS)),
        }
    }

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

    /// The identity `token` proves: checked locally, then (unless refused lately) by a
    /// TokenReview, waiting its turn among `peer`'s.
    async fn review(&self, peer: IpAddr, token: String) -> Result<Reviewed, Refusal> {
        let Some(client) = &self.kube else {
            return Err(Refusal {
                status: 401,
                reason: "tokens_disabled",
                message: "tokens are not checked in this mode".into(),
            });
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = token::precheck(&token, &self.trust_domain, now)?;
        let cached = self
            .refused_tokens
            .lock()
            .get(&token, std::time::Instant::now());
        if let Some(r) = cached {
            return Err(r);
        }
        let _permit = self.reviews.acquire(peer).await.map_err(|busy| Refusal {
            status: 503,
            reason: "review_busy",
            message: format!(
                "too many token reviews in flight from {peer} or in all ({}); retry",
                busy.label()
            ),
        })?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.clone(),
                audiences: Some(vec![TOKEN_AUDIENCE.into()]),
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
        let done = tokio::time::timeout(
            REVIEW_TIMEOUT,
            api.create(&kube::api::PostParams::default(), &review),
        )
        .await;
        let result = match done {
            Ok(Ok(r)) => issuer::identity_from_review(r.status.as_ref(), &self.trust_domain)
                .and_then(|reviewed| {
                    // The API server derives the user from the token's subject.
                    if reviewed.id == claims.identity {
                        Ok(reviewed)
                    } else {
                        Err(Refusal {
                            status: 401,
                            reason: "token_subject_mismatch",
                            message: format!(
                                "the token claims {} but is {}",
                                claims.identity, reviewed.id
                            ),
                        })
                    }
                }),
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
                message: format!("the TokenReview took over {} s", REVIEW_TIMEOUT.as_secs()),
            }),
        };
        // A refusal (not an outage) is remembered, so the same token costs no review.
        if let Err(r) = &result
            && r.status != 503
        {
            self.refused_tokens
                .lock()
                .insert(&token, r.clone(), std::time::Instant::now());
        }
        result
    }

    /// One request, its body read in full by the shell.
    async fn handle(
        &self,
        info: &ConnInfo,
        req: &http::request::Parts,
        body: &Bytes,
    ) -> Response<Full<Bytes>> {
        let decision = issuer::decide(
            req.method.as_str(),
            req.uri.path(),
            req.headers
                .get(hyper::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            info.identity.as_ref(),
            &self.trust_domain,
            self.kube.is_some(),
        );
        if let Decision::Refuse(r) = &decision {
            return self.refused(info, r);
        }
        // The request before any TokenReview: a malformed one costs the API server nothing.
        let request = match issuer::parse_request(body) {
            Ok(r) => r,
            Err(r) => return self.refused(info, &r),
        };
        let reviewed = match decision {
            Decision::Issue(id) => Reviewed { id, pod: None },
            Decision::Review(token) => match self.review(http_shell::peer_of(info), token).await {
                Ok(r) => r,
                Err(r) => return self.refused(info, &r),
            },
            Decision::Refuse(r) => return self.refused(info, &r),
        };
        let id = reviewed.id;
        let pods = (self.pods_in)(&id.namespace);
        let checked = issuer::live(
            &id,
            reviewed.pod.as_deref(),
            pods.iter().map(|(p, sa)| (p.as_str(), sa.as_str())),
        )
        .and_then(|()| issuer::check_request(&request, &id));
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
    let handler = move |req: ShellRequest| {
        let service = service.clone();
        async move { service.handle(&req.conn, &req.parts, &req.body).await }
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
