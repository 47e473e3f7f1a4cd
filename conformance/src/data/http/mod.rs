//! The HTTP connection manager, its request path transformations (`path`), its RBAC
//! filters (`rbac`) and the router: virtual host and route choice, header edits, direct
//! responses and redirects, weighted clusters, retries with budgets, timeouts, mirrors;
//! absolute-form and CONNECT requests of the explicit-proxy port.
//!
//! Each request loads one snapshot at its start and uses it to its end, so a
//! configuration published meanwhile never changes a request in flight. The connection
//! manager's own configuration (its filters) is the one the connection was accepted
//! under; when that chain drains (`drain`), HTTP/1 responses close the connection and
//! HTTP/2 gets GOAWAY, so new requests go over a new connection under the new one.

mod activity;
mod body;
mod drain;
mod forward;
mod headers;
mod matching;
mod path;
mod rbac;
mod redirect;
mod req;
mod retry;
mod tunnel;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::Snapshot;
use crate::config::listener::{HttpManager, RouteSource};
use crate::config::route::{Action, RouteConfig};
use crate::data::ctx::{ConnInfo, Ctx};
use crate::data::upstream::io::{Body, UpstreamIo};
use activity::{Activity, Tracked};
use req::{Req, local, local_bytes};

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an HTTP/2 connection is pinged, and how long the pong may take before
/// the connection is closed.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 streams a client may open at once.
const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Headers per request (Envoy's default `max_headers_count`).
const MAX_HEADERS: usize = 100;

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN `h2` under TLS) on `io` until
/// the connection ends.
pub async fn serve(ctx: Arc<Ctx>, io: UpstreamIo, conn: ConnInfo, hcm: Arc<HttpManager>) {
    let prefix = &hcm.stat_prefix;
    ctx.stats
        .counter(&format!("http.{prefix}.downstream_cx_total"))
        .inc();
    let ctx_limits = ctx.listeners.limits();
    let cx_active = ctx
        .stats
        .gauge(&format!("http.{prefix}.downstream_cx_active"));
    cx_active.add(1);
    let _cx_active = GaugeGuard(cx_active);
    let activity = Arc::new(Activity::default());
    // CONNECT tunnels outlive the HTTP/1 connection's serving: each holds a sender,
    // and the connection (its slot in the listener's cap, its gauges) ends only
    // when the last one is dropped.
    let (hold, mut tunnels) = tokio::sync::mpsc::channel::<()>(1);
    let chain_drain = conn.drain.clone();
    let shared = Arc::new(PerConn {
        conn,
        winding: drain::Winding::default(),
    });
    let svc = {
        let activity = Arc::clone(&activity);
        let hcm = Arc::clone(&hcm);
        let hold = hold.clone();
        let (ctx, shared) = (Arc::clone(&ctx), Arc::clone(&shared));
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (ctx, shared, hcm) = (Arc::clone(&ctx), Arc::clone(&shared), Arc::clone(&hcm));
            let guard = activity.start();
            let (version, tunnel) = (req.version(), req.method() == http::Method::CONNECT);
            shared.winding.note(version);
            tunnel::HOLD.scope(hold.clone(), async move {
                let mut resp = handle(&ctx, &shared.conn, &hcm, req).await;
                if shared.conn.drain.is_draining() {
                    let prefix = &hcm.stat_prefix;
                    shared
                        .winding
                        .on_response(&ctx, prefix, version, tunnel, &mut resp);
                }
                drop(guard);
                Ok::<_, Infallible>(resp)
            })
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(hcm.max_request_headers_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(hcm.max_request_headers_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    let io = TokioIo::new(Tracked {
        io,
        activity: Arc::clone(&activity),
    });
    async {
        let served = builder.serve_connection_with_upgrades(io, svc);
        tokio::pin!(served);
        let limits = ctx_limits;
        // A connection that sends nothing is closed after the first-bytes deadline.
        let first_bytes = tokio::time::sleep(limits.first_bytes_timeout);
        tokio::pin!(first_bytes);
        let idle = match hcm.idle_timeout {
            None => Some(limits.http_idle_timeout),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        };
        let drain_started = chain_drain.started();
        tokio::pin!(drain_started);
        let (mut draining, mut gone_away) = (false, false);
        loop {
            tokio::select! {
                _ = served.as_mut() => return,
                () = first_bytes.as_mut(), if !activity.has_read() => {
                    if !activity.has_read() {
                        return;
                    }
                }
                () = tokio::time::sleep(idle.unwrap_or_default()), if idle.is_some() => {
                    if idle.is_some_and(|idle| activity.idle_for() >= idle) {
                        served.as_mut().graceful_shutdown();
                        let _ = served.await;
                        return;
                    }
                }
                _ = drain_started.as_mut(), if !draining => {
                    // HTTP/2 gets GOAWAY now; HTTP/1 closes after its next response
                    // (or at the deadline); a connection whose protocol no request has
                    // shown yet waits for its first request to tell.
                    draining = true;
                    if shared.winding.is_h2() {
                        gone_away = true;
                        served.as_mut().graceful_shutdown();
                        shared.winding.count(&ctx, prefix);
                    }
                }
                () = shared.winding.goaway_asked(), if draining && !gone_away => {
                    gone_away = true;
                    served.as_mut().graceful_shutdown();
                    shared.winding.count(&ctx, prefix);
                }
            }
        }
    }
    .await;
    drop(hold);
    let _ = tunnels.recv().await;
}

/// What every request of a connection shares with it.
struct PerConn {
    conn: ConnInfo,
    /// What its requests tell the connection about draining.
    winding: drain::Winding,
}

/// Takes one off a gauge when dropped.
struct GaugeGuard(Arc<crate::stats::Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

async fn handle(
    ctx: &Arc<Ctx>,
    conn: &ConnInfo,
    hcm: &HttpManager,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let snapshot = ctx.live.load();
    let prefix = &hcm.stat_prefix;
    ctx.stats
        .counter(&format!("http.{prefix}.downstream_rq_total"))
        .inc();
    let rq_active = ctx
        .stats
        .gauge(&format!("http.{prefix}.downstream_rq_active"));
    rq_active.add(1);
    let rq_active = GaugeGuard(rq_active);
    let resp = route(ctx, conn, hcm, &snapshot, req).await;
    drop(rq_active);
    let class = resp.status().as_u16() / 100;
    ctx.stats
        .counter(&format!("http.{prefix}.downstream_rq_{class}xx"))
        .inc();
    ctx.stats
        .histogram(&format!("http.{prefix}.downstream_rq_time"))
        .record_us(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    resp
}

async fn route(
    ctx: &Arc<Ctx>,
    conn: &ConnInfo,
    hcm: &HttpManager,
    snapshot: &Snapshot,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let is_connect = req.method() == http::Method::CONNECT;
    // The path transformations come first: the HTTP filters, routing and the upstream
    // request all see the transformed path. A CONNECT has no path.
    if !is_connect && let Some(resp) = path::apply(ctx, &hcm.stat_prefix, &hcm.path, &mut req) {
        return resp;
    }
    let authority = authority_of(&req);
    let scheme = if conn.tls_peer.is_some() || conn.own_uri.is_some() {
        "https"
    } else {
        "http"
    };
    // Rudder configures no upgrade but CONNECT: Envoy's connection manager refuses
    // any other upgrade with an empty 403 before routing (`upgrade_failed`).
    if !is_connect && is_upgrade(req.headers()) {
        return local(StatusCode::FORBIDDEN, "");
    }
    let path_and_query = if is_connect {
        String::new()
    } else {
        req.uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string()
    };
    let view = matching::RequestView {
        method: req.method().as_str(),
        authority: &authority,
        path_and_query: &path_and_query,
        scheme,
        headers: req.headers(),
    };
    // The HTTP filters before the router: RBAC.
    if let Some(denied) = rbac::deny(ctx, conn, hcm, &view) {
        return denied;
    }
    let Some(rc) = route_config(snapshot, hcm) else {
        return local(StatusCode::NOT_FOUND, "");
    };
    let Some(vh) = matching::virtual_host(&rc, &authority) else {
        return local(StatusCode::NOT_FOUND, "");
    };
    let Some(r) = matching::route(vh, &view) else {
        return local(StatusCode::NOT_FOUND, "");
    };
    let rq = Req {
        ctx,
        conn,
        hcm,
        snapshot,
        authority,
        scheme,
    };
    let mut resp = match &r.action {
        Action::Direct { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            let body = body.clone().unwrap_or_default();
            local_bytes(status, body)
        }
        Action::Redirect(rd) => {
            // Envoy redirects on the request's `x-forwarded-proto` (set from the
            // connection when the client sent none).
            let proto = req
                .headers()
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .filter(|p| p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("https"))
                .unwrap_or(scheme)
                .to_ascii_lowercase();
            let origin = redirect::Origin {
                scheme: &proto,
                authority: &rq.authority,
                path_and_query: &path_and_query,
            };
            let location = redirect::location(rd, &r.matcher.path, &origin);
            let status = StatusCode::from_u16(rd.status).unwrap_or(StatusCode::FOUND);
            let mut resp = local(status, "");
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            resp
        }
        Action::Route(ra) if is_connect => {
            if !(ra.connect || hcm.connect) {
                return local(StatusCode::NOT_FOUND, "");
            }
            return tunnel::connect(&rq, ra, req).await;
        }
        Action::Route(ra) => {
            let forwarded = forward::forward(&rq, vh, r, ra, req);
            // The stream's cap: Envoy answers 408 when it passes before the response.
            return match ra.max_stream_duration.filter(|d| !d.is_zero()) {
                Some(d) => tokio::time::timeout(d, forwarded)
                    .await
                    .unwrap_or_else(|_| {
                        local(StatusCode::REQUEST_TIMEOUT, "downstream duration timeout")
                    }),
                None => forwarded.await,
            };
        }
    };
    headers::apply(
        resp.headers_mut(),
        &[&r.headers, &vh.headers],
        headers::Side::Response,
    );
    resp
}

fn route_config(snapshot: &Snapshot, hcm: &HttpManager) -> Option<Arc<RouteConfig>> {
    match &hcm.routes {
        RouteSource::Rds(name) => snapshot.route(name).cloned(),
        RouteSource::Inline(rc) => Some(Arc::clone(rc)),
    }
}

/// The request's authority: the URI's (absolute form, HTTP/2), else `Host`.
fn authority_of<B>(req: &Request<B>) -> String {
    if let Some(a) = req.uri().authority() {
        return a.as_str().to_string();
    }
    req.headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// An HTTP/1.1 upgrade request: an `Upgrade` header and `upgrade` among the
/// `Connection` options (Envoy's `isUpgrade`).
fn is_upgrade(h: &http::HeaderMap) -> bool {
    h.contains_key(http::header::UPGRADE)
        && h.get_all(http::header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|o| o.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}
