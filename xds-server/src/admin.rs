//! The admin HTTP endpoint: `/metrics` (refreshing the gauges read on demand from the
//! proxy registry, the certificates and the store first), `/healthz` and `/readyz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::net::front_door;
use crate::observability::metrics::Metrics;
use crate::observability::registry::ProxyRegistry;
use crate::pki::certs::CertManager;
use crate::xds::store::Store;

/// What the admin endpoint serves.
pub(crate) struct Admin {
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Connected proxies.
    pub(crate) proxies: Arc<ProxyRegistry>,
    /// Certificates, for their gauges.
    pub(crate) certs: Option<Arc<CertManager>>,
    /// The store, for the size of what the views hold.
    pub(crate) store: Option<Arc<Store>>,
    /// Set once the initial sync is done and xDS is serving.
    pub(crate) ready: AtomicBool,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` forever.
pub(crate) async fn serve_admin(listener: tokio::net::TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, req.uri().path())) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(admin: &Admin, path: &str) -> Response<Full<Bytes>> {
    let (status, body, ctype) = match path {
        "/metrics" => (
            StatusCode::OK,
            {
                if let Some(store) = &admin.store {
                    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
                    admin
                        .metrics
                        .snapshot_resources
                        .set(gauge(store.view_resources()));
                    let (identities, objects) = store.containment_size();
                    admin.metrics.contained_identities.set(gauge(identities));
                    admin.metrics.contained_objects.set(gauge(objects));
                }
                admin.metrics.encode(
                    &admin.proxies.counts(),
                    admin.certs.as_ref().map(|c| c.expiries()).as_deref(),
                )
            },
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/healthz" => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
        "/readyz" if admin.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "ready\n".to_string(), "text/plain")
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "initial sync not done\n".to_string(),
            "text/plain",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_string(),
            "text/plain",
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Binds the admin address (port 0: any free port).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    front_door::bind(addr)
}

/// Binds `addr` and serves `admin` there; answers the bound address.
pub(crate) async fn start(addr: SocketAddr, admin: Arc<Admin>) -> anyhow::Result<SocketAddr> {
    let listener = bind(addr)
        .await
        .with_context(|| format!("binding the admin address {addr}"))?;
    let bound = listener.local_addr().context("reading the admin address")?;
    tokio::spawn(serve_admin(listener, admin));
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_flips_only_when_ready() {
        let admin = Admin {
            metrics: Arc::new(Metrics::new()),
            proxies: Arc::default(),
            certs: None,
            store: None,
            ready: AtomicBool::new(false),
        };
        assert_eq!(
            route(&admin, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(route(&admin, "/healthz").status(), StatusCode::OK);
        admin.ready.store(true, Ordering::Relaxed);
        assert_eq!(route(&admin, "/readyz").status(), StatusCode::OK);
        assert_eq!(route(&admin, "/nope").status(), StatusCode::NOT_FOUND);
    }
}
