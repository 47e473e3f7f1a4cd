//! The data-path benchmark's sink (`loadgen serve`): HTTP/1.1 and h2c on one port,
//! reads each request body to its end (dropping it frame by frame, so any size is
//! bounded in memory) and answers 200 with a fixed body built once.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// HTTP/2 streams a connection may have open.
const MAX_STREAMS: u32 = 1024;

/// Serves forever on `listener`, answering `body` to every request.
pub async fn serve(listener: TcpListener, body: Bytes) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let body = body.clone();
                async move {
                    let mut incoming = req.into_body();
                    while let Some(frame) = incoming.frame().await {
                        if frame.is_err() {
                            break;
                        }
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // Not the limit under test: generators keep up to 256 streams in flight.
            builder.http2().max_concurrent_streams(Some(MAX_STREAMS));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// The answer body: `bytes` bytes.
pub fn body(bytes: usize) -> Bytes {
    Bytes::from(vec![b'y'; bytes])
}

/// Binds `listen` and serves on `threads` threads, each with a single-threaded runtime
/// accepting from the same socket. Returns only on an error.
pub fn run(listen: SocketAddr, body_bytes: usize, threads: usize) -> anyhow::Result<()> {
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("--listen {listen}: bind"))?;
    listener.set_nonblocking(true).context("listener")?;
    eprintln!("loadgen sink listening on {}", listener.local_addr()?);
    let body = body(body_bytes);
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let listener = listener.try_clone().context("listener")?;
        let body = body.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("sink-{i}"))
                .spawn(move || -> anyhow::Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        serve(listener, body).await
                    })?;
                    Ok(())
                })?,
        );
    }
    for handle in handles {
        match handle.join() {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("a sink thread panicked"),
        }
    }
    Ok(())
}
