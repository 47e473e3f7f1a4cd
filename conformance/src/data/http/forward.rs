//! The router's `route` action: a weighted cluster pick, the upstream request (header
//! edits, rewrites, `x-forwarded-*`), tries under the per-try and whole-request
//! timeouts with retries bounded by the policy and the cluster's budget, and mirrors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use super::body::{self, Kept};
use super::headers::{self, Side};
use super::redirect::{rewrite_prefix, split_port, substitute};
use super::req::{Req, boxed, local};
use super::retry::{self, Outcome};
use crate::config::cluster::{Cluster, Discovery};
use crate::config::route::{
    Destination, HeaderEdits, Mirror, RetryPolicy, Rewrite, Route, RouteAction, VirtualHost,
};
use crate::data::upstream::io::{Body, Target, UpstreamError};
use crate::data::upstream::pool::{self, SendError};
use crate::data::upstream::state::{Active, ClusterState};

/// Envoy's route timeout when the route sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The request line and headers sent upstream, reusable for every try and mirror.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    downstream_h2: bool,
}

impl Head {
    fn request(&self, body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Forwards `req` along `ra`.
pub(crate) async fn forward(
    rq: &Req<'_>,
    vh: &VirtualHost,
    r: &Route,
    ra: &RouteAction,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some((name, backend)) = pick_cluster(&ra.destination, rand::random::<u64>()) else {
        return local(StatusCode::SERVICE_UNAVAILABLE, "");
    };
    let mut levels: Vec<&HeaderEdits> = backend.into_iter().collect();
    levels.extend([&r.headers, &vh.headers]);
    let Some(cluster) = rq.snapshot.cluster(name) else {
        // `cluster_not_found_response_code`: Rudder's routes to a backend that does not
        // resolve ask for 500.
        let status = StatusCode::from_u16(ra.cluster_not_found_status)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return local(status, "");
    };
    let (parts, incoming) = req.into_parts();
    let Some(target) = target(cluster, rq, &parts.headers) else {
        return local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };
    let policy = ra.retry.as_deref().or(vh.retry.as_deref());
    let head = upstream_head(rq, r, ra, policy, &levels, parts);
    let incoming = boxed(incoming);
    // Nothing waits for the body: it streams to the first try while a copy is kept.
    let mut kept = if policy.is_some() || !ra.mirrors.is_empty() {
        Kept::new(incoming)
    } else {
        Kept::Streaming(incoming)
    };
    let mut mirrored = false;
    if let Some(b) = kept.whole() {
        for m in &ra.mirrors {
            mirror(rq, m, &head, b.clone());
        }
        mirrored = true;
    }
    let state = rq.ctx.upstream.state(&rq.ctx.live.load(), cluster);
    let started = Instant::now();
    let limit = whole_request_limit(ra);
    let tries = tries(rq, cluster, &state, policy, &head, &mut kept, target);
    let result = match limit {
        Some(t) => tokio::time::timeout(t, tries)
            .await
            .unwrap_or(Err(Failure::Timeout)),
        None => tries.await,
    };
    // A body with content is mirrored once it has been read whole (a larger one is not).
    if let (false, Some(b)) = (mirrored, kept.whole()) {
        for m in &ra.mirrors {
            mirror(rq, m, &head, b.clone());
        }
    }
    let mut resp = respond(rq, name, result, started, limit);
    headers::strip_hop_by_hop(resp.headers_mut());
    headers::apply(resp.headers_mut(), &levels, Side::Response);
    resp
}

/// The downstream response of the tries' `result`: the upstream's (its body under the
/// rest of the whole-request limit), or a local reply for the failure.
fn respond(
    rq: &Req<'_>,
    cluster: &str,
    result: Result<Response<Incoming>, Failure>,
    started: Instant,
    limit: Option<Duration>,
) -> Response<Body> {
    let stats = &rq.ctx.stats;
    stats
        .histogram(&format!("cluster.{cluster}.upstream_rq_time"))
        .record_us(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    match result {
        Ok(mut resp) => {
            // As Envoy reports it (`suppress_envoy_headers` is not set by Rudder).
            if let Ok(v) = HeaderValue::from_str(&started.elapsed().as_millis().to_string()) {
                resp.headers_mut()
                    .insert(HeaderName::from_static("x-envoy-upstream-service-time"), v);
            }
            match limit {
                Some(t) => resp.map(|b| body::until(boxed(b), (started + t).into())),
                None => resp.map(boxed),
            }
        }
        Err(f) => {
            if matches!(f, Failure::Timeout) {
                stats
                    .counter(&format!("cluster.{cluster}.upstream_rq_timeout"))
                    .inc();
            }
            f.response()
        }
    }
}

/// The cluster of a destination (`roll` a random number for the weighted pick) and
/// the header edits of the chosen backend.
pub(crate) fn pick_cluster(d: &Destination, roll: u64) -> Option<(&str, Option<&HeaderEdits>)> {
    match d {
        Destination::Cluster(c) => Some((c.as_str(), None)),
        Destination::Weighted(ws) => {
            let total: u64 = ws.iter().map(|w| u64::from(w.weight)).sum();
            if total == 0 {
                return None;
            }
            let mut at = roll % total;
            for w in ws {
                if at < u64::from(w.weight) {
                    return Some((w.name.as_str(), Some(&w.headers)));
                }
                at -= u64::from(w.weight);
            }
            None
        }
    }
}

/// The endpoint target of `cluster`: an original-destination cluster goes to the
/// address its header names (`:authority` for Rudder's `pod-address`), or to the
/// connection's original destination; none when that header names no address, or
/// without a header when the destination was not restored from the socket (Envoy's
/// cluster then finds no host).
pub(crate) fn target(cluster: &Cluster, rq: &Req<'_>, headers: &HeaderMap) -> Option<Target> {
    match &cluster.discovery {
        Discovery::OriginalDst { header: Some(h) } => {
            let value = match h.as_str() {
                ":authority" | "host" => Some(rq.authority.clone()),
                name => headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            };
            // Absent: the connection's destination when it was restored from the
            // socket; present but not `IP:port`: none (Envoy's original-destination
            // balancer finds no host).
            match value {
                None => rq
                    .conn
                    .destination_restored
                    .then_some(Target::Address(rq.conn.destination)),
                Some(v) => v.parse().ok().map(Target::Address),
            }
        }
        Discovery::OriginalDst { header: None } => rq
            .conn
            .destination_restored
            .then_some(Target::Address(rq.conn.destination)),
        _ => Some(Target::Balanced),
    }
}

/// The time the whole request (every try) may take: the route's `timeout`, Envoy's
/// 15 s when unset, none when zero.
fn whole_request_limit(ra: &RouteAction) -> Option<Duration> {
    match ra.timeout {
        None => Some(DEFAULT_TIMEOUT),
        Some(t) if t.is_zero() => None,
        Some(t) => Some(t),
    }
}

fn upstream_head(
    rq: &Req<'_>,
    r: &Route,
    ra: &RouteAction,
    policy: Option<&RetryPolicy>,
    levels: &[&HeaderEdits],
    parts: http::request::Parts,
) -> Head {
    let mut h = parts.headers;
    headers::strip_hop_by_hop(&mut h);
    headers::set_xfcc(
        &mut h,
        rq.hcm.forward_client_cert,
        rq.conn.tls_peer.as_ref(),
        rq.conn.own_uri.as_deref(),
    );
    headers::set_request_ids(&mut h, rq.scheme);
    // Envoy's expectation: the per-try timeout, else the route's.
    if let Some(t) = policy
        .and_then(|p| p.per_try_timeout)
        .or_else(|| whole_request_limit(ra))
        && let Ok(v) = HeaderValue::from_str(&t.as_millis().to_string())
    {
        h.insert(HeaderName::from_static("x-envoy-expected-rq-timeout-ms"), v);
    }
    headers::apply(&mut h, levels, Side::Request);
    let host = ra
        .host_rewrite
        .clone()
        .unwrap_or_else(|| rq.authority.clone());
    if let Ok(v) = HeaderValue::from_str(&host) {
        h.insert(http::header::HOST, v);
    }
    let original = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let pq = rewrite_path(r, ra, original);
    // Envoy keeps the path it rewrote (`suppress_envoy_headers` is not set by Rudder).
    if pq != original
        && let Ok(v) = HeaderValue::from_str(original)
    {
        h.insert(HeaderName::from_static("x-envoy-original-path"), v);
    }
    Head {
        method: parts.method,
        uri: pq.parse().unwrap_or_else(|_| Uri::from_static("/")),
        headers: h,
        downstream_h2: parts.version == http::Version::HTTP_2,
    }
}

/// The path and query after the route's rewrite (the query is kept).
fn rewrite_path(r: &Route, ra: &RouteAction, pq: &str) -> String {
    let (path, query) = match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    };
    let path = match &ra.rewrite {
        None => return pq.to_string(),
        Some(Rewrite::Prefix(p)) => rewrite_prefix(&r.matcher.path, path, p),
        Some(Rewrite::Regex(re, sub)) => substitute(re, path, sub),
    };
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// Why the tries got no response.
#[derive(Debug)]
enum Failure {
    /// The whole request or the last try timed out.
    Timeout,
    /// No upstream answered.
    Upstream(SendError),
}

impl Failure {
    fn response(&self) -> Response<Body> {
        match self {
            Failure::Timeout => local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
            Failure::Upstream(SendError::Upstream(UpstreamError::NoHealthyUpstream(_))) => {
                local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
            }
            Failure::Upstream(SendError::Upstream(UpstreamError::NoCluster(_))) => {
                local(StatusCode::SERVICE_UNAVAILABLE, "")
            }
            Failure::Upstream(SendError::Upstream(UpstreamError::ConnectFailure { .. })) => local(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. \
                 reset reason: connection failure",
            ),
            Failure::Upstream(_) => local(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. \
                 reset reason: connection termination",
            ),
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Failure::Timeout => Outcome::PerTryTimeout,
            Failure::Upstream(SendError::Upstream(UpstreamError::ConnectFailure { .. })) => {
                Outcome::ConnectFailure
            }
            Failure::Upstream(SendError::ResetBeforeRequest(_)) => Outcome::ResetBeforeRequest,
            Failure::Upstream(SendError::RefusedStream(_)) => Outcome::RefusedStream,
            Failure::Upstream(_) => Outcome::Reset,
        }
    }
}

async fn tries(
    rq: &Req<'_>,
    cluster: &Cluster,
    state: &Arc<ClusterState>,
    policy: Option<&RetryPolicy>,
    head: &Head,
    kept: &mut Kept,
    target: Target,
) -> Result<Response<Incoming>, Failure> {
    let stats = &rq.ctx.stats;
    let name = &cluster.name;
    let mut n = 0u32;
    let mut retry_slot: Option<Active> = None;
    loop {
        let _active = retry_slot
            .take()
            .unwrap_or_else(|| Active::start(state, false));
        stats
            .counter(&format!("cluster.{name}.upstream_rq_total"))
            .inc();
        let send = pool::send(
            rq.ctx,
            rq.snapshot,
            cluster,
            state,
            target,
            head.request(kept.take()),
            head.downstream_h2,
        );
        let result = match policy.and_then(|p| p.per_try_timeout) {
            Some(t) => match tokio::time::timeout(t, send).await {
                Ok(r) => r.map_err(Failure::Upstream),
                Err(_) => {
                    stats
                        .counter(&format!("cluster.{name}.upstream_rq_per_try_timeout"))
                        .inc();
                    Err(Failure::Timeout)
                }
            },
            None => send.await.map_err(Failure::Upstream),
        };
        let outcome = record(rq, name, &result);
        let wants = policy.is_some_and(|p| retry::retriable(p, outcome));
        let Some(p) = policy.filter(|p| wants && n < p.num_retries && kept.replayable()) else {
            let counter = match (wants, n) {
                (true, _) if policy.is_some_and(|p| n >= p.num_retries) => {
                    "upstream_rq_retry_limit_exceeded"
                }
                (false, 1..) if result.is_ok() => "upstream_rq_retry_success",
                _ => "",
            };
            if !counter.is_empty() {
                stats.counter(&format!("cluster.{name}.{counter}")).inc();
            }
            return result.map(|(r, _)| r);
        };
        if !budget_allows(cluster, state) {
            stats
                .counter(&format!("cluster.{name}.upstream_rq_retry_overflow"))
                .inc();
            return result.map(|(r, _)| r);
        }
        retry_slot = Some(Active::start(state, true));
        stats
            .counter(&format!("cluster.{name}.upstream_rq_retry"))
            .inc();
        drop(result);
        tokio::time::sleep(retry::backoff(&p.backoff, n)).await;
        n += 1;
    }
}

/// Counts a try's answer (`upstream_rq_<code>`, `upstream_rq_<N>xx`); its outcome.
fn record(
    rq: &Req<'_>,
    cluster: &str,
    result: &Result<(Response<Incoming>, std::net::SocketAddr), Failure>,
) -> Outcome {
    match result {
        Ok((resp, _)) => {
            let code = resp.status().as_u16();
            let stats = &rq.ctx.stats;
            stats
                .counter(&format!("cluster.{cluster}.upstream_rq_{code}"))
                .inc();
            stats
                .counter(&format!("cluster.{cluster}.upstream_rq_{}xx", code / 100))
                .inc();
            let grpc = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            match grpc {
                Some(g) => Outcome::Grpc(code, g),
                None => Outcome::Status(code),
            }
        }
        Err(f) => f.outcome(),
    }
}

/// Whether the cluster's retry budget (else Envoy's default of three concurrent
/// retries) has room for one more retry.
fn budget_allows(cluster: &Cluster, state: &ClusterState) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let limit = cluster
        .retry_budget
        .map_or(retry::DEFAULT_MAX_RETRIES, |b| {
            retry::budget_limit(&b, state.active_requests.load(Relaxed))
        });
    state.active_retries.load(Relaxed) < limit
}

/// Sends a copy of the request to the mirror's cluster with the given share, its host
/// suffixed `-shadow`; its answer is read and dropped, never delaying the request.
fn mirror(rq: &Req<'_>, m: &Mirror, head: &Head, body: bytes::Bytes) {
    if rand::random_range(0..1_000_000u32) >= m.per_million {
        return;
    }
    let Some(cluster) = rq.snapshot.cluster(&m.cluster).cloned() else {
        return;
    };
    let mut req = head.request(body::whole(body));
    if let Some(host) = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        let shadow = shadow_host(host);
        if let Ok(v) = HeaderValue::from_str(&shadow) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let ctx = Arc::clone(rq.ctx);
    let snapshot = rq.snapshot.clone();
    let downstream_h2 = head.downstream_h2;
    tokio::spawn(async move {
        let state = ctx.upstream.state(&ctx.live.load(), &cluster);
        let _active = Active::start(&state, false);
        let send = pool::send(
            &ctx,
            &snapshot,
            &cluster,
            &state,
            Target::Balanced,
            req,
            downstream_h2,
        );
        let work = async {
            if let Ok((resp, _)) = send.await {
                use http_body_util::BodyExt;
                let _ = resp.into_body().collect().await;
            }
        };
        let _ = tokio::time::timeout(DEFAULT_TIMEOUT, work).await;
    });
}

/// `web:8080` -> `web-shadow:8080`, as Envoy names a mirrored request's host.
pub(crate) fn shadow_host(host: &str) -> String {
    match split_port(host) {
        (h, Some(p)) => format!("{h}-shadow:{p}"),
        (h, None) => format!("{h}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::route::WeightedCluster;

    #[test]
    fn weighted_picks_follow_weights() {
        let d = Destination::Weighted(vec![
            WeightedCluster {
                name: "a".into(),
                weight: 1,
                headers: HeaderEdits::default(),
            },
            WeightedCluster {
                name: "b".into(),
                weight: 3,
                headers: HeaderEdits::default(),
            },
            WeightedCluster {
                name: "zero".into(),
                weight: 0,
                headers: HeaderEdits::default(),
            },
        ]);
        let mut counts = std::collections::HashMap::new();
        for roll in 0..4000u64 {
            let (n, _) = pick_cluster(&d, roll).expect("pick");
            *counts.entry(n).or_insert(0) += 1;
        }
        assert_eq!(counts.get("a"), Some(&1000));
        assert_eq!(counts.get("b"), Some(&3000));
        assert_eq!(counts.get("zero"), None);
        let mut random = std::collections::HashMap::new();
        for _ in 0..4000 {
            let (n, _) = pick_cluster(&d, rand::random()).expect("pick");
            *random.entry(n).or_insert(0) += 1;
        }
        let b = random.get("b").copied().unwrap_or(0);
        assert!((2700..3300).contains(&b), "about 3/4 go to b: {b}");
        assert!(pick_cluster(&Destination::Weighted(vec![]), 1).is_none());
    }

    #[test]
    fn shadow_hosts_keep_their_port() {
        assert_eq!(shadow_host("web:8080"), "web-shadow:8080");
        assert_eq!(shadow_host("web"), "web-shadow");
    }

    #[test]
    fn timeouts_default_to_envoys_and_zero_disables() {
        let mut ra = RouteAction {
            destination: Destination::Cluster("c".into()),
            timeout: None,
            retry: None,
            mirrors: vec![],
            rewrite: None,
            host_rewrite: None,
            max_stream_duration: None,
            connect: false,
            cluster_not_found_status: 503,
        };
        assert_eq!(whole_request_limit(&ra), Some(DEFAULT_TIMEOUT));
        ra.timeout = Some(Duration::ZERO);
        assert_eq!(whole_request_limit(&ra), None);
        ra.timeout = Some(Duration::from_secs(1));
        assert_eq!(whole_request_limit(&ra), Some(Duration::from_secs(1)));
    }
}
