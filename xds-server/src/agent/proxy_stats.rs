//! The proxy's Prometheus stats on the agent's status port (`/stats/prometheus`), for a
//! PodMonitor: the proxy's admin listens on loopback only, so the agent fetches them
//! (`?usedonly`, as Istio's agent does) and answers. Bounded together: one scrape at a
//! time (a second concurrent one gets 429), at most [`MAX_STATS_BYTES`] read, within the
//! probe timeout.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;

use crate::agent::app_probe::PROBE_TIMEOUT;

/// The path on the status port.
pub(crate) const STATS_PATH: &str = "/stats/prometheus";
/// Most stats text read from the proxy: a 64 MiB agent holds one scrape at a time.
pub(crate) const MAX_STATS_BYTES: usize = 8 << 20;

fn answer(code: u16, body: Bytes) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(body));
    *r.status_mut() =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::SERVICE_UNAVAILABLE);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn fetch(admin: SocketAddr, max: usize) -> anyhow::Result<Bytes> {
    let tcp = tokio::net::TcpStream::connect(admin).await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("{STATS_PATH}?usedonly"))
        .header("host", admin.to_string())
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "the proxy answered {}",
        resp.status()
    );
    let body = http_body_util::Limited::new(resp.into_body(), max)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the proxy's stats: {e}"))?;
    Ok(body.to_bytes())
}

/// Answers one scrape: the proxy's stats, 429 while another scrape runs, 503 when the
/// proxy cannot be read in time or its stats are larger than `max`.
pub(crate) async fn scrape(
    admin: SocketAddr,
    gate: &Semaphore,
    max: usize,
) -> hyper::Response<Full<Bytes>> {
    let Ok(_permit) = gate.try_acquire() else {
        return answer(429, Bytes::from_static(b"another scrape is running\n"));
    };
    match tokio::time::timeout(PROBE_TIMEOUT, fetch(admin, max)).await {
        Ok(Ok(body)) => answer(200, body),
        Ok(Err(e)) => answer(503, Bytes::from(format!("{e:#}\n"))),
        Err(_) => answer(
            503,
            Bytes::from_static(b"the proxy's stats took too long\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy admin whose stats are `size` bytes.
    async fn admin(size: usize) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: hyper::Request<_>| async move {
                            let ok = req.uri().path() == STATS_PATH
                                && req.uri().query() == Some("usedonly");
                            let body = if ok { "x".repeat(size) } else { String::new() };
                            let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                            if !ok {
                                *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                            }
                            Ok::<_, std::convert::Infallible>(r)
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn stats_are_relayed_bounded_and_one_scrape_runs_at_a_time() {
        let gate = Semaphore::new(1);
        let small = admin(100).await;
        let r = scrape(small, &gate, 1000).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
                .len(),
            100
        );
        let big = admin(5000).await;
        assert_eq!(scrape(big, &gate, 1000).await.status(), 503, "too large");
        let held = gate.try_acquire().expect("free");
        assert_eq!(scrape(small, &gate, 1000).await.status(), 429);
        drop(held);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        assert_eq!(scrape(closed, &gate, 1000).await.status(), 503);
    }
}
