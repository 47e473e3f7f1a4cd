//! The agent's status port: `/ready` and `/status` from the agent's state, and the app's
//! kubelet probes (moved here by the injector) forwarded to the app on loopback.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;

use super::Status;

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
    match tokio::time::timeout(Duration::from_secs(5), go).await {
        Ok(Ok(code)) if (200..400).contains(&code) => 200,
        Ok(Ok(code)) => code.max(400),
        _ => 503,
    }
}

pub(crate) async fn serve_status(
    listener: tokio::net::TcpListener,
    status: Arc<Mutex<Status>>,
    probes: Arc<std::collections::BTreeMap<String, AppProbe>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let status = status.clone();
        let probes = probes.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let s = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let probe = probes.get(req.uri().path()).cloned();
                async move {
                    if let Some(p) = probe {
                        let code = probe_app(&p).await;
                        let mut r = hyper::Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = hyper::StatusCode::from_u16(code)
                            .unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
                        return Ok::<_, std::convert::Infallible>(r);
                    }
                    let (code, body) = match req.uri().path() {
                        "/ready" if s.ready(SystemTime::now()) => (200, serde_json::to_vec(&s)),
                        "/ready" => (503, serde_json::to_vec(&s)),
                        "/status" => (200, serde_json::to_vec(&s)),
                        _ => (404, Ok(b"{\"error\":\"use /ready or /status\"}".to_vec())),
                    };
                    let mut r =
                        hyper::Response::new(Full::new(Bytes::from(body.unwrap_or_default())));
                    *r.status_mut() = hyper::StatusCode::from_u16(code)
                        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                .await;
        });
    }
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
