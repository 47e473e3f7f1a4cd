//! Minimal HTTP clients for tests and the demo: HTTP/1.1 through an explicit proxy
//! (absolute-form requests), HTTP/2 prior knowledge (h2c), and plain GETs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A response: status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// `GET url` over HTTP/1.1 sent to `proxy` in absolute form, as an app whose
/// `http_proxy` points at its sidecar does. With `proxy` = the server itself and a
/// path-only `url`, it is a plain GET.
pub async fn get_via(proxy: SocketAddr, url: &str) -> anyhow::Result<Reply> {
    get_via_with(proxy, url, &[]).await
}

/// [`get_via`] with extra request headers.
pub async fn get_via_with(
    proxy: SocketAddr,
    url: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    tokio::time::timeout(TIMEOUT, async {
        let stream = TcpStream::connect(proxy)
            .await
            .with_context(|| format!("connecting to {proxy}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let uri: hyper::Uri = url.parse().with_context(|| format!("bad url {url}"))?;
        let host = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| proxy.to_string());
        let mut req = hyper::Request::get(uri).header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    })
    .await
    .with_context(|| format!("GET {url} via {proxy} timed out"))?
}

/// `GET http://authority/path` over HTTP/2 prior knowledge to `addr` (a sidecar's
/// outbound port routes it by `:authority`).
pub async fn get_h2c(addr: SocketAddr, authority: &str, path: &str) -> anyhow::Result<Reply> {
    tokio::time::timeout(TIMEOUT, async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        let req =
            hyper::Request::get(format!("http://{authority}{path}")).body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    })
    .await
    .with_context(|| format!("h2c GET {authority}{path} via {addr} timed out"))?
}

/// A plain GET of `path` on `addr`, failing on a non-2xx status.
pub async fn get_ok(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let reply = get_via(addr, path).await?;
    if !(200..300).contains(&reply.status) {
        bail!(
            "GET {path} on {addr}: status {}: {}",
            reply.status,
            reply.body
        );
    }
    Ok(reply.body)
}
