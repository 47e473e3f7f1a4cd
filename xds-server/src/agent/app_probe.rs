//! The app's kubelet probes, run by the agent: the injector moves each HTTP, gRPC and TCP
//! probe to the agent's status port (the kubelet can no longer reach the app once inbound
//! needs mesh mTLS, and a TCP connect to the sidecar would always succeed), and the agent
//! checks the app itself, the way the kubelet would have:
//! - HTTP: a GET with the probe's path and headers, 200-399 passes;
//! - gRPC: `grpc.health.v1.Health/Check` over h2c, `SERVING` passes;
//! - TCP: a connect passes.
//!
//! The app is reached where the kubelet reached it, at the pod IP (or loopback outside
//! interception). From the pod IP the agent connects from 127.0.0.6, the source address
//! interception lets through to the app, as the inbound sidecar's own connections do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;

/// Longest a probe waits for the app (the kubelet's own timeoutSeconds, up to this).
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The source address of the agent's connections to the app at an IPv4 pod IP.
pub const PROBE_SOURCE: IpAddr = IpAddr::V4(translator::identity::INBOUND_SOURCE_V4);
/// The same for an IPv6 pod IP (the init container or CNI plugin puts it on `lo`).
pub const PROBE_SOURCE_V6: IpAddr = IpAddr::V6(translator::identity::INBOUND_SOURCE_V6);
/// Longest gRPC health answer read.
const MAX_HEALTH_BYTES: usize = 1 << 10;

/// What a probe checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// An HTTP GET (the default, as the injector wrote before it moved other kinds).
    #[default]
    Http,
    /// A gRPC health check.
    Grpc,
    /// A TCP connect.
    Tcp,
}

/// One app probe the agent runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    /// What it checks.
    #[serde(default)]
    pub kind: ProbeKind,
    /// The app's port.
    pub port: u16,
    /// The app's path (HTTP).
    #[serde(default = "root")]
    pub path: String,
    /// Headers the probe sends (HTTP).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub headers: Vec<ProbeHeader>,
    /// The service asked about (gRPC; empty: the server as a whole).
    #[serde(default, deserialize_with = "null_as_default")]
    pub service: String,
    /// The kubelet's `timeoutSeconds` for it, if set (capped at [`PROBE_TIMEOUT`]).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// A probe header.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct ProbeHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

fn root() -> String {
    "/".into()
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ProbeHeader>, D::Error> {
    use serde::Deserialize;
    Ok(Option::<Vec<ProbeHeader>>::deserialize(d)?.unwrap_or_default())
}

fn null_as_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::Deserialize;
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Where the app is probed: its address, and the source address to connect from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The app's address (the pod IP, or loopback).
    pub ip: IpAddr,
    /// The local address connections are bound to, if any.
    pub source: Option<IpAddr>,
}

impl Default for ProbeTarget {
    fn default() -> Self {
        ProbeTarget {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            source: None,
        }
    }
}

impl ProbeTarget {
    /// The target of an agent: an intercepted pod's app at its pod IP (or the app
    /// address the node names) from the interception's passthrough source (127.0.0.6, or
    /// ::6 for IPv6), which the rules let through to the app; otherwise at `app_address`
    /// (default loopback) from any source.
    pub fn of(intercepted: bool, pod_ip: Option<IpAddr>, app_address: Option<IpAddr>) -> Self {
        let ip = match (app_address, intercepted, pod_ip) {
            (Some(ip), ..) => ip,
            (None, true, Some(ip)) => ip,
            _ => return ProbeTarget::default(),
        };
        let source = match ip {
            _ if !intercepted || ip.is_loopback() => None,
            IpAddr::V4(_) => Some(PROBE_SOURCE),
            IpAddr::V6(_) => Some(PROBE_SOURCE_V6),
        };
        ProbeTarget { ip, source }
    }

    async fn connect(&self, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        let to = SocketAddr::new(self.ip, port);
        let Some(source) = self.source else {
            return tokio::net::TcpStream::connect(to).await;
        };
        let socket = match to {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        socket.connect(to).await
    }
}

/// Runs one probe: 200 when it passes, the app's status (at least 400) when an HTTP
/// probe fails, 503 when the app cannot be reached in time or a gRPC app is not serving.
pub async fn run(p: &AppProbe, target: ProbeTarget) -> u16 {
    let go = async {
        match p.kind {
            ProbeKind::Http => http(p, target).await,
            ProbeKind::Tcp => target
                .connect(p.port)
                .await
                .map(|_| 200)
                .map_err(Into::into),
            ProbeKind::Grpc => grpc(p, target).await,
        }
    };
    let timeout = p.timeout_seconds.map_or(PROBE_TIMEOUT, |t| {
        Duration::from_secs(t.max(1)).min(PROBE_TIMEOUT)
    });
    match tokio::time::timeout(timeout, go).await {
        Ok(Ok(code)) if (200..400).contains(&code) => 200,
        Ok(Ok(code)) => code.max(400),
        _ => 503,
    }
}

/// Sends `req` on `tcp` over HTTP/1.1 (the agent's one client for the app's and the
/// proxy's admin endpoints); the response, its body unread.
pub(crate) async fn send_http1(
    tcp: tokio::net::TcpStream,
    req: hyper::Request<http_body_util::Empty<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(send.send_request(req).await?)
}

async fn http(p: &AppProbe, target: ProbeTarget) -> anyhow::Result<u16> {
    let tcp = target.connect(p.port).await?;
    let host = SocketAddr::new(target.ip, p.port);
    let mut req = hyper::Request::get(p.path.as_str()).header("host", host.to_string());
    for h in &p.headers {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let resp = send_http1(tcp, req.body(http_body_util::Empty::new())?).await?;
    Ok(resp.status().as_u16())
}

/// The `HealthCheckRequest` for `service`, framed as one gRPC message.
pub(crate) fn health_request(service: &str) -> Bytes {
    let mut msg = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        let mut n = service.len();
        while n >= 0x80 {
            msg.push(u8::try_from(n & 0x7f).unwrap_or(0) | 0x80);
            n >>= 7;
        }
        msg.push(u8::try_from(n).unwrap_or(0));
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(msg.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
    framed.extend_from_slice(&msg);
    Bytes::from(framed)
}

/// Whether a framed `HealthCheckResponse` says `SERVING` (status, field 1, is 1).
pub(crate) fn health_serving(mut body: &[u8]) -> bool {
    if body.len() < 5 || body[0] != 0 {
        return false;
    }
    let len = usize::try_from(u32::from_be_bytes([body[1], body[2], body[3], body[4]]))
        .unwrap_or(usize::MAX);
    body.advance(5);
    let Some(mut msg) = body.get(..len) else {
        return false;
    };
    let mut serving = false;
    // Fields other than `status` are skipped; only varints and length-delimited ones
    // can appear in a well-formed answer.
    while let Some((&tag, rest)) = msg.split_first() {
        msg = rest;
        let Some(value) = varint(&mut msg) else {
            return false;
        };
        match (tag >> 3, tag & 7) {
            (1, 0) => serving = value == 1,
            (_, 0) => {}
            (_, 2) => {
                let Some(rest) = usize::try_from(value).ok().and_then(|n| msg.get(n..)) else {
                    return false;
                };
                msg = rest;
            }
            _ => return false,
        }
    }
    serving
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

async fn grpc(p: &AppProbe, target: ProbeTarget) -> anyhow::Result<u16> {
    let tcp = target.connect(p.port).await?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await?;
    tokio::spawn(conn);
    let req = hyper::Request::post(format!(
        "http://{}/grpc.health.v1.Health/Check",
        SocketAddr::new(target.ip, p.port)
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(health_request(&p.service)))?;
    let resp = send.send_request(req).await?;
    if !resp.status().is_success() {
        return Ok(503);
    }
    let header_status = resp.headers().get("grpc-status").cloned();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_HEALTH_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the health answer: {e}"))?;
    let status = body
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .cloned()
        .or(header_status);
    let ok = status.is_some_and(|s| s == "0") && health_serving(&body.to_bytes());
    Ok(if ok { 200 } else { 503 })
}

/// A loopback HTTP/1.1 server for the agent's tests, answering each request with
/// `answer(method, path and query, headers)` as (status, body).
#[cfg(test)]
pub(crate) async fn test_server<F>(answer: F) -> SocketAddr
where
    F: Fn(&hyper::Method, &str, &hyper::HeaderMap) -> (u16, String) + Clone + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let target = req
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string();
                    let (code, body) = answer(req.method(), &target, req.headers());
                    let mut r = hyper::Response::new(http_body_util::Full::new(Bytes::from(body)));
                    *r.status_mut() = hyper::StatusCode::from_u16(code)
                        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_are_framed_and_read() {
        assert_eq!(&health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &health_request("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        let long = "x".repeat(200);
        let framed = health_request(&long);
        assert_eq!(&framed[5..8], &[0x0a, 0xc8, 0x01]);
        assert!(health_serving(&[0, 0, 0, 0, 2, 0x08, 1]));
        assert!(!health_serving(&[0, 0, 0, 0, 2, 0x08, 2]), "NOT_SERVING");
        assert!(!health_serving(&[0, 0, 0, 0, 0]), "UNKNOWN (absent)");
        assert!(!health_serving(&[0, 0, 0, 0, 9, 0x08, 1]), "truncated");
        assert!(!health_serving(&[1, 0, 0, 0, 2, 0x08, 1]), "compressed");
        // An unknown length-delimited field before the status is skipped.
        assert!(health_serving(&[0, 0, 0, 0, 5, 0x12, 1, b'z', 0x08, 1]));
    }

    #[test]
    fn intercepted_pods_are_probed_at_the_pod_ip_from_the_passthrough_source() {
        let pod: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(
            ProbeTarget::of(true, Some(pod), None),
            ProbeTarget {
                ip: pod,
                source: Some(PROBE_SOURCE)
            }
        );
        assert_eq!(
            ProbeTarget::of(false, Some(pod), None),
            ProbeTarget::default()
        );
        let pod6: IpAddr = "fd00::12".parse().expect("ip");
        assert_eq!(
            ProbeTarget::of(true, Some(pod6), None),
            ProbeTarget {
                ip: pod6,
                source: Some(PROBE_SOURCE_V6)
            },
            "IPv6: from ::6, or the proxy UID's traffic would go to the inbound sidecar"
        );
        let app: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(
            ProbeTarget::of(true, Some(pod), Some(app)),
            ProbeTarget {
                ip: app,
                source: None
            }
        );
    }
}
