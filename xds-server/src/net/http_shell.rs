//! The hardening every unauthenticated HTTP shell shares (the injector webhook, the
//! certificate endpoint, the agent's status port), written once: whoever can reach the
//! port cannot starve the requests of another address.
//!
//! - Connections go through the xDS port's front door ([`front_door::incoming`]): total and
//!   per-address caps, and the TLS handshake under a timeout.
//! - The request head: under a deadline, at most [`ShellLimits::max_head_bytes`]. A
//!   connection that has not sent a whole request by then (nothing, or only the HTTP/2
//!   preface) is closed; so is one idle for [`ShellLimits::idle_timeout`]. HTTP/2 pings
//!   the peer and closes a connection that does not answer; streams per connection are
//!   bounded and its flow-control windows small.
//! - The body: read in full under its own deadline and size bound before the handler runs
//!   or any of its permits is taken, so a slow sender loses only its own request. Bodies
//!   being read are bounded per address and in all ([`ShellLimits::bodies`]), which
//!   bounds their memory.
//! - The handler: its requests in flight are bounded per address and in all
//!   ([`ShellLimits::requests`]); a caller over a cap waits its turn in a fair queue (a
//!   bounded wait in a bounded queue) instead of an instant 503.
//!
//! Every refusal is counted (`rudder_http_shell_refusals_total`) and logged, rate-limited.

use parking_lot::Mutex;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response};
use tokio::time::Instant;

use super::fair_queue::{FairQueue, QueueLimits};
use crate::config::ConnLimits;
use crate::log_limit::RateLimited;
use crate::net::front_door::{self, ConnInfo, TlsSetup};
use crate::observability::metrics::Metrics;
use crate::runtime::Stop;

/// The bounds of one shell.
#[derive(Clone, Debug)]
pub(crate) struct ShellLimits {
    /// The shell's name, for metrics and logs (`injector`, `certificate_endpoint`, ...).
    pub name: &'static str,
    /// Connections (total and per address) and the TLS handshake timeout.
    pub conn: ConnLimits,
    /// Longest a client may take to send a request head (and its first request).
    pub header_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_head_bytes: usize,
    /// Longest a client may take to send a request body.
    pub body_timeout: Duration,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Bodies being read or held at once.
    pub bodies: QueueLimits,
    /// Requests in the handler at once.
    pub requests: QueueLimits,
    /// Longest the handler may take.
    pub handler_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 streams open at once on one connection.
    pub h2_streams: u32,
    /// HTTP/2 ping interval; a ping unanswered for as long again closes the connection.
    pub h2_keepalive: Duration,
    /// HTTP/1 keep-alive (several requests on one connection).
    pub keep_alive: bool,
}

impl ShellLimits {
    /// The defaults every shell starts from; each sets its own queues and body size.
    pub(crate) fn new(name: &'static str, bodies: QueueLimits, requests: QueueLimits) -> Self {
        ShellLimits {
            name,
            conn: ConnLimits {
                handshake_timeout: Duration::from_secs(5),
                ..ConnLimits::default()
            },
            header_timeout: Duration::from_secs(5),
            max_head_bytes: 16 << 10,
            body_timeout: Duration::from_secs(3),
            max_body_bytes: 16 << 10,
            bodies,
            requests,
            handler_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            h2_streams: 4,
            h2_keepalive: Duration::from_secs(10),
            keep_alive: true,
        }
    }

    /// Connections capped at `total` and `per_peer` (never above what `given` allows).
    pub(crate) fn connections(mut self, given: &ConnLimits, total: usize, per_peer: usize) -> Self {
        self.conn = ConnLimits {
            max_connections: given.max_connections.min(total),
            max_connections_per_peer: given.max_connections_per_peer.min(per_peer),
            handshake_timeout: given.handshake_timeout.min(self.conn.handshake_timeout),
            keepalive: given.keepalive,
            max_age: None,
        };
        self
    }
}

/// A request whose body has been read in full.
#[derive(Debug)]
pub(crate) struct ShellRequest {
    /// Method, URI, headers.
    pub parts: http::request::Parts,
    /// The whole body.
    pub body: Bytes,
    /// The connection it came on.
    pub conn: ConnInfo,
}

/// A JSON answer with `status`.
pub(crate) fn json(status: u16, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if status == 503 {
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    r
}

struct Shell {
    limits: ShellLimits,
    bodies: Arc<FairQueue>,
    requests: Arc<FairQueue>,
    metrics: Arc<Metrics>,
    log: RateLimited,
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    served: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    /// When the connection is to be closed if nothing happens until then (None: a
    /// request is in flight).
    fn deadline(&self, first: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = *self.last.lock();
        Some(if self.served.load(Ordering::Acquire) == 0 {
            last + first
        } else {
            last + idle
        })
    }
}

/// Counts one request in flight on its connection.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock() = Instant::now();
        self.0.served.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The address caps count by (the listener's: an IPv4 address or an IPv6 /64).
pub(crate) fn peer_of(info: &ConnInfo) -> IpAddr {
    info.remote
        .map(|r| front_door::peer_key(r.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

impl Shell {
    fn refuse(
        &self,
        info: &ConnInfo,
        status: u16,
        reason: &str,
        message: String,
    ) -> Response<Full<Bytes>> {
        self.metrics.shell_refused(self.limits.name, reason);
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(
                shell = self.limits.name,
                peer = ?info.remote,
                reason,
                error = %message,
                suppressed,
                "refused a request"
            );
        }
        json(status, &serde_json::json!({ "error": message }))
    }

    /// One request: caps, the body under its deadline, then the handler under its own.
    async fn answer<H, F>(
        &self,
        info: &ConnInfo,
        handler: &H,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>>
    where
        H: Fn(ShellRequest) -> F,
        F: std::future::Future<Output = Response<Full<Bytes>>>,
    {
        let l = &self.limits;
        if let Some(reason) = &info.refused {
            return self.refuse(info, 503, "connections", reason.to_string());
        }
        let peer = peer_of(info);
        let _body_slot = match self.bodies.acquire(peer).await {
            Ok(p) => p,
            Err(busy) => {
                let msg = format!("{peer} has too many requests being read; retry");
                return self.refuse(info, 503, busy.label(), msg);
            }
        };
        let (parts, body) = req.into_parts();
        let read = tokio::time::timeout(
            l.body_timeout,
            Limited::new(body, l.max_body_bytes).collect(),
        )
        .await;
        let body = match read {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                let msg = format!("the request body is over {} bytes", l.max_body_bytes);
                return self.refuse(info, 413, "body_too_large", msg);
            }
            Ok(Err(e)) => {
                let msg = format!("the request body is unreadable: {e}");
                return self.refuse(info, 400, "body_unreadable", msg);
            }
            Err(_) => {
                let msg = format!(
                    "the request body took over {} ms",
                    l.body_timeout.as_millis()
                );
                return self.refuse(info, 408, "body_timeout", msg);
            }
        };
        let _request = match self.requests.acquire(peer).await {
            Ok(p) => p,
            Err(busy) => {
                let msg = format!("{peer} has too many requests in flight; retry");
                return self.refuse(info, 503, busy.label(), msg);
            }
        };
        let req = ShellRequest {
            parts,
            body,
            conn: info.clone(),
        };
        match tokio::time::timeout(l.handler_timeout, handler(req)).await {
            Ok(r) => r,
            Err(_) => {
                let msg = format!("no answer within {} ms", l.handler_timeout.as_millis());
                self.refuse(info, 503, "handler_timeout", msg)
            }
        }
    }
}

/// Serves `handler` on `listener` (TLS when `tls` is given) with `limits` until `stop`
/// fires.
pub(crate) async fn serve<H, F>(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<TlsSetup>>,
    limits: ShellLimits,
    metrics: Arc<Metrics>,
    stop: Stop,
    handler: H,
) where
    H: Fn(ShellRequest) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let shell = Arc::new(Shell {
        bodies: FairQueue::new(limits.bodies),
        requests: FairQueue::new(limits.requests),
        limits,
        metrics: metrics.clone(),
        log: RateLimited::new(),
    });
    let mut incoming =
        front_door::incoming(listener, tls, shell.limits.conn.clone(), metrics, stop);
    while let Some(Ok(conn)) = incoming.next().await {
        tokio::spawn(serve_connection(shell.clone(), conn, handler.clone()));
    }
}

async fn serve_connection<H, F>(shell: Arc<Shell>, conn: front_door::Conn, handler: H)
where
    H: Fn(ShellRequest) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let info = tonic::transport::server::Connected::connect_info(&conn);
    let activity = Activity::new();
    let service = {
        let (shell, info, activity) = (shell.clone(), info.clone(), activity.clone());
        hyper::service::service_fn(move |req| {
            let (shell, info, handler) = (shell.clone(), info.clone(), handler.clone());
            let in_flight = InFlight::new(&activity);
            async move {
                let r = shell.answer(&info, &handler, req).await;
                drop(in_flight);
                Ok::<_, Infallible>(r)
            }
        })
    };
    let l = &shell.limits;
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(l.header_timeout)
        .max_buf_size(l.max_head_bytes.max(8192))
        .keep_alive(l.keep_alive);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(l.h2_streams)
        .max_header_list_size(u32::try_from(l.max_head_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(l.h2_keepalive)
        .keep_alive_timeout(l.h2_keepalive)
        .initial_stream_window_size(64 << 10)
        .initial_connection_window_size(128 << 10)
        .max_pending_accept_reset_streams(16)
        .max_local_error_reset_streams(16);
    let served = builder.serve_connection(hyper_util::rt::TokioIo::new(conn), service);
    tokio::pin!(served);
    // A connection that has not sent a whole request by the header deadline, or is idle
    // for the idle timeout, is shut down; one that does not finish within a further
    // header timeout is dropped.
    let mut shutdown_at: Option<Instant> = None;
    loop {
        let idle_at = activity.deadline(l.header_timeout, l.idle_timeout);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(shell = l.name, peer = ?info.remote, error = %e, "connection ended");
                }
                return;
            }
            () = sleep_until(idle_at), if shutdown_at.is_none() => {
                if activity.deadline(l.header_timeout, l.idle_timeout).is_some_and(|d| d <= Instant::now()) {
                    shell.metrics.shell_refused(l.name, "idle_connection");
                    served.as_mut().graceful_shutdown();
                    shutdown_at = Some(Instant::now() + l.header_timeout);
                }
            }
            () = sleep_until(shutdown_at), if shutdown_at.is_some() => return,
            // A request in flight: look again later.
            () = tokio::time::sleep(l.idle_timeout), if idle_at.is_none() && shutdown_at.is_none() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
