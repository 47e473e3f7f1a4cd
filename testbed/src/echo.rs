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

/// Serves forever on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, name: String) -> anyhow::Result<()> {
    let name = Arc::new(name);
    let count = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let (name, count) = (name.clone(), count.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
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
                let body = format!(
                    "{} proto={:?} authority={} path={} n={} xfcc={}\n",
                    name,
                    req.version(),
                    authority,
                    req.uri().path(),
                    n,
                    xfcc
                );
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds `addr` and serves.
pub async fn run(addr: SocketAddr, name: String) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve(listener, name).await
}
