//! The proxy's Prometheus stats on the agent's status port (`/stats/prometheus`), for a
//! PodMonitor: the proxy's admin listens on loopback only, so the agent fetches them
//! (`?usedonly`, as Istio's agent does) and answers. Bounded together, whoever asks: one
//! fetch at a time, at most [`MAX_STATS_BYTES`] read within the probe timeout, and the
//! answer kept for [`STATS_TTL`] and shared (one buffer, reference-counted) by every
//! caller meanwhile, so slow readers hold at most a few generations of it.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::agent::app_probe::PROBE_TIMEOUT;

/// The path on the status port.
pub(crate) const STATS_PATH: &str = "/stats/prometheus";
/// Most stats text read from the proxy.
pub(crate) const MAX_STATS_BYTES: usize = 4 << 20;
/// How long one fetch answers every scrape (a scrape interval is 15 s or more). With the
/// status port's 30 s idle timeout, slow readers hold at most about three generations.
pub(crate) const STATS_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The last fetch: when, and its answer (status, body).
#[derive(Default)]
pub(crate) struct StatsCache {
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, u16, Bytes)>>,
}

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
    let req = hyper::Request::get(format!("{STATS_PATH}?usedonly"))
        .header("host", admin.to_string())
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = crate::agent::app_probe::send_http1(tcp, req).await?;
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

/// Answers one scrape: the proxy's stats (fetched at most once per [`STATS_TTL`], callers
/// meanwhile share that answer), or 503 when the proxy cannot be read in time or its
/// stats are larger than `max`.
pub(crate) async fn scrape(
    admin: SocketAddr,
    cache: &StatsCache,
    max: usize,
) -> hyper::Response<Full<Bytes>> {
    // One fetch at a time: the lock is held across it, and the others wait for its answer.
    let mut last = cache.last.lock().await;
    if let Some((at, code, body)) = last.as_ref()
        && at.elapsed() < STATS_TTL
    {
        return answer(*code, body.clone());
    }
    let (code, body) = match tokio::time::timeout(PROBE_TIMEOUT, fetch(admin, max)).await {
        Ok(Ok(body)) => (200, body),
        Ok(Err(e)) => (503, Bytes::from(format!("{e:#}\n"))),
        Err(_) => (
            503,
            Bytes::from_static(b"the proxy's stats took too long\n"),
        ),
    };
    *last = Some((tokio::time::Instant::now(), code, body.clone()));
    answer(code, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy admin whose stats are `size` bytes.
    async fn admin(size: usize) -> SocketAddr {
        crate::agent::app_probe::test_server(move |_, target, _| {
            match target == format!("{STATS_PATH}?usedonly") {
                true => (200, "x".repeat(size)),
                false => (404, String::new()),
            }
        })
        .await
    }

    #[tokio::test]
    async fn stats_are_relayed_bounded_and_shared_between_scrapes() {
        let small = admin(100).await;
        let cache = StatsCache::default();
        let r = scrape(small, &cache, 1000).await;
        assert_eq!(r.status(), 200);
        let first = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(first.len(), 100);
        // Within the TTL, the same buffer answers again, even with the proxy gone.
        let again = scrape("127.0.0.1:1".parse().expect("addr"), &cache, 1000)
            .await
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(again.as_ptr(), first.as_ptr(), "one shared buffer");
        let big = admin(5000).await;
        assert_eq!(
            scrape(big, &StatsCache::default(), 1000).await.status(),
            503,
            "too large"
        );
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        assert_eq!(
            scrape(closed, &StatsCache::default(), 1000).await.status(),
            503
        );
    }
}
