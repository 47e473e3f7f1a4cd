//! The agent's status port: `/ready` and `/status` from the agent's state, `/proxy-ready`
//! (the agent's and the proxy's readiness), and the app's kubelet probes (moved here by
//! the injector) run against the app ([`crate::agent::app_probe`]). Any pod
//! can reach it, so it runs in the hardened shell (`crate::net::http_shell`) with
//! connection caps per address and in all.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;

use crate::agent::state::Status;
use crate::net::fair_queue::QueueLimits;
use crate::net::http_shell::{self, ShellLimits, ShellRequest, json};
use crate::runtime::Stop;

use crate::agent::app_probe::{self, PROBE_TIMEOUT};
pub use crate::agent::app_probe::{AppProbe, ProbeHeader, ProbeKind, ProbeTarget};
use crate::agent::proxy_stats;

/// What the status port answers besides the agent's own state.
#[derive(Clone, Debug, Default)]
pub(crate) struct StatusConfig {
    /// The app's probes by agent path.
    pub(crate) probes: std::collections::BTreeMap<String, AppProbe>,
    /// Where they reach the app.
    pub(crate) target: ProbeTarget,
    /// The proxy's admin address, whose `/ready` (200 once it is LIVE) `/proxy-ready`
    /// adds to the agent's own readiness: the proxy container's readiness probe.
    pub(crate) proxy_admin: Option<std::net::SocketAddr>,
    /// Whether `/stats/prometheus` relays the proxy's stats (else 404).
    pub(crate) proxy_stats: bool,
    /// The proxy's preStop drain: the pod's token and how long to drain.
    pub(crate) drain: Option<Drain>,
}

/// What `/drain` needs: the token the injector put in the pod's preStop hook (the status
/// port is reachable by every pod), and the drain time.
#[derive(Clone, Debug)]
pub struct Drain {
    /// The pod's token.
    pub token: String,
    /// The drain time.
    pub seconds: u64,
}

/// Longest drain honoured (the pod's grace period bounds it anyway).
pub(crate) const MAX_DRAIN_SECONDS: u64 = 300;

/// Parses the injector's probe map (`RUDDER_APP_PROBES`).
pub fn parse_app_probes(
    json: &str,
) -> Result<std::collections::BTreeMap<String, AppProbe>, String> {
    let map: std::collections::BTreeMap<String, AppProbe> =
        serde_json::from_str(json).map_err(|e| format!("not a probe map: {e}"))?;
    for (path, p) in &map {
        if !path.starts_with("/app-health/")
            || path == PROXY_READY
            || p.port == 0
            || !p.path.starts_with('/')
        {
            return Err(format!("bad probe {path:?}"));
        }
    }
    Ok(map)
}

pub(crate) use crate::k8s::inject::probes::{DRAIN_HEADER, DRAIN_PATH, PROXY_READY};

/// Whether the proxy's admin `/ready` answers 200 (LIVE) in time.
async fn proxy_live(admin: std::net::SocketAddr) -> bool {
    let probe = AppProbe {
        kind: ProbeKind::Http,
        port: admin.port(),
        path: "/ready".into(),
        headers: Vec::new(),
        service: String::new(),
        timeout_seconds: None,
    };
    let target = ProbeTarget {
        ip: admin.ip(),
        source: None,
    };
    app_probe::run(&probe, target).await == 200
}

/// The status port's bounds. It is plain HTTP on every pod's address, outside
/// interception and without authentication, so any pod can reach it: connections 128 at
/// once and 16 per address (about 3 MiB of request heads at most in a 64 Mi agent);
/// requests 16 at once and 4 per address (a probe may take up to 10 s, its kubelet timeout); bodies of 1
/// KiB (nothing here takes one).
fn limits(drain_seconds: u64) -> ShellLimits {
    let queue = |total, per_peer| QueueLimits {
        total,
        per_peer,
        queue_per_peer: 16,
        queue_total: 128,
        wait: Duration::from_secs(2),
    };
    let given = crate::config::ConnLimits::default();
    ShellLimits {
        max_body_bytes: 1 << 10,
        handler_timeout: PROBE_TIMEOUT.max(Duration::from_secs(
            drain_seconds.min(MAX_DRAIN_SECONDS) + 2,
        )) + Duration::from_secs(1),
        ..ShellLimits::new("agent_status", queue(32, 8), queue(16, 4))
    }
    .connections(&given, 128, 16)
}

/// What a request needs beyond the agent's state.
enum Check {
    App(AppProbe),
    Proxy(std::net::SocketAddr),
    Stats(std::net::SocketAddr),
    Drain(Option<std::net::SocketAddr>, u64),
}

/// Whether the request carries the pod's drain token (compared in constant time).
fn drain_allowed(drain: &Drain, req: &ShellRequest) -> bool {
    let given = req
        .parts
        .headers
        .get(DRAIN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let want = drain.token.as_bytes();
    given.len() == want.len()
        && !want.is_empty()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Drains the proxy: its admin's graceful listener drain (Envoy's `/drain_listeners`;
/// a proxy without it drains on SIGTERM itself), then the drain time, then 200 so the
/// kubelet stops it.
async fn drain(admin: Option<std::net::SocketAddr>, seconds: u64) -> hyper::Response<Full<Bytes>> {
    if let Some(admin) = admin {
        let asked = async {
            let tcp = tokio::net::TcpStream::connect(admin).await?;
            let req = hyper::Request::post("/drain_listeners?graceful")
                .header("host", admin.to_string())
                .body(http_body_util::Empty::<Bytes>::new())?;
            anyhow::Ok(app_probe::send_http1(tcp, req).await?.status())
        };
        match tokio::time::timeout(Duration::from_secs(2), asked).await {
            Ok(Ok(status)) => {
                tracing::info!(%status, seconds, "draining the proxy before it stops")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "asking the proxy to drain failed; waiting the drain time anyway")
            }
            Err(_) => tracing::warn!(
                "the proxy did not answer the drain request in time; waiting the drain time anyway"
            ),
        }
    }
    tokio::time::sleep(Duration::from_secs(seconds.min(MAX_DRAIN_SECONDS))).await;
    empty(200)
}

fn answer(
    status: &Mutex<Status>,
    cfg: &StatusConfig,
    req: &ShellRequest,
) -> Result<hyper::Response<Full<Bytes>>, Check> {
    let path = req.parts.uri.path();
    if let Some(p) = cfg.probes.get(path) {
        return Err(Check::App(p.clone()));
    }
    let s = status.lock().clone();
    let ready = s.ready(SystemTime::now());
    Ok(match (path, cfg.proxy_admin) {
        (PROXY_READY, Some(admin)) if ready => return Err(Check::Proxy(admin)),
        (proxy_stats::STATS_PATH, Some(admin)) if cfg.proxy_stats => {
            return Err(Check::Stats(admin));
        }
        (DRAIN_PATH, admin) => match &cfg.drain {
            Some(d) if drain_allowed(d, req) => return Err(Check::Drain(admin, d.seconds)),
            _ => json(
                403,
                &serde_json::json!({"error": "not this pod's drain token"}),
            ),
        },
        ("/ready" | PROXY_READY, _) if ready => json(200, &s),
        ("/ready" | PROXY_READY, _) => json(503, &s),
        ("/status", _) => json(200, &s),
        _ => json(
            404,
            &serde_json::json!({"error": "use /ready, /proxy-ready, /status or /stats/prometheus"}),
        ),
    })
}

fn empty(code: u16) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::new()));
    *r.status_mut() =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
    r
}

/// Serves `/ready`, `/proxy-ready`, `/status`, the proxy's `/stats/prometheus` and the
/// app's moved probes on `listener`,
/// in the hardened shell shared with the control plane's ports.
pub(crate) async fn serve_status(
    listener: tokio::net::TcpListener,
    status: Arc<Mutex<Status>>,
    cfg: Arc<StatusConfig>,
) {
    let drain_seconds = cfg.drain.as_ref().map_or(0, |d| d.seconds);
    let stats = Arc::new(proxy_stats::StatsCache::default());
    let handler = move |req: ShellRequest| {
        let (status, cfg, stats) = (status.clone(), cfg.clone(), stats.clone());
        async move {
            match answer(&status, &cfg, &req) {
                Ok(r) => r,
                Err(Check::App(p)) => empty(app_probe::run(&p, cfg.target).await),
                Err(Check::Proxy(admin)) if proxy_live(admin).await => empty(200),
                Err(Check::Proxy(_)) => empty(503),
                Err(Check::Drain(admin, seconds)) => drain(admin, seconds).await,
                Err(Check::Stats(admin)) => {
                    proxy_stats::scrape(admin, &stats, proxy_stats::MAX_STATS_BYTES).await
                }
            }
        }
    };
    let metrics = Arc::new(crate::observability::metrics::Metrics::new());
    http_shell::serve(
        listener,
        None,
        limits(drain_seconds),
        metrics,
        Stop::default(),
        handler,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An app that answers 200 on /healthz (checking a header) and 500 elsewhere.
    async fn app() -> u16 {
        crate::agent::app_probe::test_server(|_, target, headers| {
            let ok = target == "/healthz" && headers.get("x-probe").is_some_and(|v| v == "kubelet");
            (if ok { 200 } else { 500 }, String::new())
        })
        .await
        .port()
    }

    #[tokio::test]
    async fn moved_probes_are_forwarded_to_the_app_on_loopback_and_nothing_else_is() {
        let port = app().await;
        let probes = parse_app_probes(&format!(
            r#"{{"/app-health/web/readyz": {{"port": {port}, "path": "/healthz",
                 "headers": [{{"name": "x-probe", "value": "kubelet"}}]}},
                "/app-health/web/livez": {{"port": {port}, "path": "/broken", "headers": null}},
                "/app-health/web/startupz": {{"port": 1, "path": "/", "headers": null}}}}"#
        ))
        .expect("probe map");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve_status(
            listener,
            Arc::new(Mutex::new(Status::default())),
            Arc::new(StatusConfig {
                probes,
                ..StatusConfig::default()
            }),
        ));
        let status = |path: &'static str| async move {
            testbed::http::get_via(addr, &format!("http://{addr}{path}"))
                .await
                .expect("answer")
                .status
        };
        assert_eq!(status("/app-health/web/readyz").await, 200);
        assert_eq!(status("/app-health/web/livez").await, 500);
        assert_eq!(status("/app-health/web/startupz").await, 503);
        // Not an open proxy: unknown paths are not forwarded anywhere.
        assert_eq!(status("/app-health/other/readyz").await, 404);
        assert_eq!(status("/ready").await, 503);
        assert!(parse_app_probes(r#"{"/x": {"port": 80, "path": "/"}}"#).is_err());
        assert!(parse_app_probes(r#"{"/app-health/a/b": {"port": 0, "path": "/"}}"#).is_err());
    }

    /// An admin endpoint whose `/ready` answers `code`.
    async fn admin(code: u16) -> std::net::SocketAddr {
        crate::agent::app_probe::test_server(move |_, target, _| {
            (
                if target == "/ready" && code == 200 {
                    200
                } else {
                    503
                },
                String::new(),
            )
        })
        .await
    }

    #[test]
    fn what_the_injector_writes_the_agent_reads() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "web",
            "readinessProbe": {"grpc": {"port": 9090, "service": "web.v1"}},
            "livenessProbe": {"tcpSocket": {"port": 5432}},
            "startupProbe": {"httpGet": {"port": 8080, "path": "/healthz"}}}]}});
        let (_, map) = crate::k8s::inject::rewrite_probes(&pod, 15021);
        let parsed = parse_app_probes(&serde_json::Value::Object(map).to_string())
            .expect("the agent reads the map");
        assert_eq!(parsed["/app-health/web/livez"].kind, ProbeKind::Tcp);
        assert_eq!(parsed["/app-health/web/readyz"].kind, ProbeKind::Grpc);
        assert_eq!(parsed["/app-health/web/readyz"].service, "web.v1");
        assert_eq!(parsed["/app-health/web/startupz"].path, "/healthz");
    }

    #[tokio::test]
    async fn proxy_ready_needs_the_agent_ready_and_the_proxy_live() {
        let ready = Status {
            not_after: Some(u64::MAX),
            ..Status::default()
        };
        let cases = [
            (ready.clone(), Some(admin(200).await), 200),
            (ready.clone(), Some(admin(503).await), 503),
            (Status::default(), Some(admin(200).await), 503),
            (ready, None, 200),
        ];
        for (status, proxy_admin, want) in cases {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(serve_status(
                listener,
                Arc::new(Mutex::new(status.clone())),
                Arc::new(StatusConfig {
                    proxy_admin,
                    ..StatusConfig::default()
                }),
            ));
            let got = testbed::http::get_via(addr, &format!("http://{addr}{PROXY_READY}"))
                .await
                .expect("answer")
                .status;
            assert_eq!(got, want, "{status:?} {proxy_admin:?}");
        }
    }

    #[tokio::test]
    async fn proxy_stats_are_served_only_when_asked() {
        let admin = admin(200).await;
        for (on, want) in [(false, 404), (true, 503)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(serve_status(
                listener,
                Arc::new(Mutex::new(Status::default())),
                Arc::new(StatusConfig {
                    proxy_admin: Some(admin),
                    proxy_stats: on,
                    ..StatusConfig::default()
                }),
            ));
            let got = testbed::http::get_via(addr, &format!("http://{addr}/stats/prometheus"))
                .await
                .expect("answer")
                .status;
            // On, it reaches the (test) admin, which has no stats path: 503 from the relay.
            assert_eq!(got, want, "proxy_stats {on}");
        }
    }

    /// An admin endpoint that records the requests it gets.
    async fn recording_admin() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let addr = crate::agent::app_probe::test_server(move |method, target, _| {
            record.lock().push(format!("{method} {target}"));
            (200, String::new())
        })
        .await;
        (addr, seen)
    }

    #[tokio::test]
    async fn drain_needs_the_pods_token_and_drains_the_proxy_gracefully() {
        let (admin, seen) = recording_admin().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve_status(
            listener,
            Arc::new(Mutex::new(Status::default())),
            Arc::new(StatusConfig {
                proxy_admin: Some(admin),
                drain: Some(Drain {
                    token: "0123456789abcdef0123456789abcdef".into(),
                    seconds: 0,
                }),
                ..StatusConfig::default()
            }),
        ));
        let url = format!("http://{addr}{DRAIN_PATH}");
        let status = |token: Option<&'static str>| {
            let url = url.clone();
            async move {
                let headers: Vec<(&str, &str)> =
                    token.map(|t| (DRAIN_HEADER, t)).into_iter().collect();
                testbed::http::get_via_with(addr, &url, &headers)
                    .await
                    .expect("answer")
                    .status
            }
        };
        // Any other pod can reach the port: no token, or a wrong one, drains nothing.
        assert_eq!(status(None).await, 403);
        assert_eq!(status(Some("0123456789abcdef0123456789abcdee")).await, 403);
        assert!(seen.lock().is_empty());
        assert_eq!(status(Some("0123456789abcdef0123456789abcdef")).await, 200);
        assert_eq!(*seen.lock(), ["POST /drain_listeners?graceful"]);
    }
}
