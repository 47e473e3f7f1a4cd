//! The agent's status port: `/ready` and `/status` from the agent's state, and the app's
//! kubelet probes (moved here by the injector) forwarded to the app on loopback. Any pod
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

/// Longest a forwarded probe waits for the app.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One app probe the agent forwards.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct AppProbe {
    /// The app's port.
    pub port: u16,
    /// The app's path.
    pub path: String,
    /// Headers the probe sends.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub headers: Vec<ProbeHeader>,
}

/// A probe header.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct ProbeHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ProbeHeader>, D::Error> {
    use serde::Deserialize;
    Ok(Option::<Vec<ProbeHeader>>::deserialize(d)?.unwrap_or_default())
}

/// Parses the injector's probe map (`RUDDER_APP_PROBES`).
pub fn parse_app_probes(
    json: &str,
) -> Result<std::collections::BTreeMap<String, AppProbe>, String> {
    let map: std::collections::BTreeMap<String, AppProbe> =
        serde_json::from_str(json).map_err(|e| format!("not a probe map: {e}"))?;
    for (path, p) in &map {
        if !path.starts_with("/app-health/") || p.port == 0 || !p.path.starts_with('/') {
            return Err(format!("bad probe {path:?}"));
        }
    }
    Ok(map)
}

/// Sends one forwarded probe to the app on loopback: its status, or 503 when it cannot
/// be reached in time.
async fn probe_app(p: &AppProbe) -> u16 {
    let go = async {
        let tcp = tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, p.port)).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut req =
            hyper::Request::get(p.path.as_str()).header("host", format!("127.0.0.1:{}", p.port));
        for h in &p.headers {
            req = req.header(h.name.as_str(), h.value.as_str());
        }
        let resp = send
            .send_request(req.body(http_body_util::Empty::<Bytes>::new())?)
            .await?;
        anyhow::Ok(resp.status().as_u16())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, go).await {
        Ok(Ok(code)) if (200..400).contains(&code) => 200,
        Ok(Ok(code)) => code.max(400),
        _ => 503,
    }
}

/// The status port's bounds. It is plain HTTP on every pod's address, outside
/// interception and without authentication, so any pod can reach it: connections 128 at
/// once and 16 per address (about 3 MiB of request heads at most in a 64 Mi agent);
/// requests 16 at once and 4 per address (a forwarded probe may take 5 s); bodies of 1
/// KiB (nothing here takes one).
fn limits() -> ShellLimits {
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
        handler_timeout: PROBE_TIMEOUT + Duration::from_secs(1),
        ..ShellLimits::new("agent_status", queue(32, 8), queue(16, 4))
    }
    .connections(&given, 128, 16)
}

fn answer(
    status: &Mutex<Status>,
    probes: &std::collections::BTreeMap<String, AppProbe>,
    req: &ShellRequest,
) -> Result<hyper::Response<Full<Bytes>>, AppProbe> {
    let path = req.parts.uri.path();
    if let Some(p) = probes.get(path) {
        return Err(p.clone());
    }
    let s = status.lock().clone();
    Ok(match path {
        "/ready" if s.ready(SystemTime::now()) => json(200, &s),
        "/ready" => json(503, &s),
        "/status" => json(200, &s),
        _ => json(404, &serde_json::json!({"error": "use /ready or /status"})),
    })
}

/// Serves `/ready`, `/status` and the forwarded probes on `listener`, in the hardened
/// shell shared with the control plane's ports.
pub(crate) async fn serve_status(
    listener: tokio::net::TcpListener,
    status: Arc<Mutex<Status>>,
    probes: Arc<std::collections::BTreeMap<String, AppProbe>>,
) {
    let handler = move |req: ShellRequest| {
        let (status, probes) = (status.clone(), probes.clone());
        async move {
            match answer(&status, &probes, &req) {
                Ok(r) => r,
                Err(p) => {
                    let code = probe_app(&p).await;
                    let mut r = hyper::Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = hyper::StatusCode::from_u16(code)
                        .unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
                    r
                }
            }
        }
    };
    let metrics = Arc::new(crate::observability::metrics::Metrics::new());
    http_shell::serve(listener, None, limits(), metrics, Stop::default(), handler).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An app that answers 200 on /healthz (checking a header) and 500 elsewhere.
    async fn app() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                        let ok = req.uri().path() == "/healthz"
                            && req.headers().get("x-probe").is_some_and(|v| v == "kubelet");
                        let mut r = hyper::Response::new(Full::new(Bytes::new()));
                        if !ok {
                            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        port
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
            Arc::new(probes),
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
}
