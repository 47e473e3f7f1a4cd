//! The echo backend: answers every request with its own name, the protocol it was
//! spoken to in, and the authority and path it saw. HTTP/1.1 and h2c on one port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// How the backend misbehaves, for policy tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Behaviour {
    /// Answer 503 to every Nth request (1: all of them; 0: none).
    pub fail_every: u64,
    /// Wait this long before answering.
    pub delay_ms: u64,
}

/// Serves forever on `listener`. `GET /__count` answers the number of other requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    name: String,
    behaviour: Behaviour,
) -> anyhow::Result<()> {
    let name = Arc::new(name);
    let count = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let (name, count) = (name.clone(), count.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                if req.uri().path() == "/__count" {
                    let n = count.load(Ordering::Relaxed);
                    return futures::future::Either::Left(async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(n.to_string()))))
                    });
                }
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                let authority = req
                    .uri()
                    .authority()
                    .map(|a| a.to_string())
                    .or_else(|| {
                        req.headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                let xfcc = req
                    .headers()
                    .get("x-forwarded-client-cert")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("-")
                    .to_string();
                // Request headers named `x-echo-*` come back in the body, so tests can see
                // what a proxy added.
                let echoed: String = req
                    .headers()
                    .iter()
                    .filter(|(k, _)| k.as_str().starts_with("x-echo-"))
                    .map(|(k, v)| format!(" {}={}", k, v.to_str().unwrap_or("?")))
                    .collect();
                let body = format!(
                    "{} proto={:?} authority={} path={} n={} xfcc={}{}\n",
                    name,
                    req.version(),
                    authority,
                    req.uri().path(),
                    n,
                    xfcc,
                    echoed
                );
                let fail = behaviour.fail_every > 0 && n % behaviour.fail_every == 0;
                futures::future::Either::Right(async move {
                    if behaviour.delay_ms > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(behaviour.delay_ms))
                            .await;
                    }
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    if fail {
                        *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok::<_, Infallible>(resp)
                })
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds `addr` and serves.
pub async fn run(addr: SocketAddr, name: String, behaviour: Behaviour) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve(listener, name, behaviour).await
}
