//! The admin port, as Envoy's for what Rudder's tests and tools read: `/ready`,
//! `/stats` (`?filter=REGEX`), `/stats/prometheus`, `/clusters`, `/listeners`, `/certs`,
//! `/config_dump` (`?resource=`, `?include_eds`) and `/quitquitquit`. HTTP/1.1 only,
//! with a bounded number of connections, header size and header read time.
//!
//! Modules: `text` (the plain text pages and `/certs`), `dump` (`/config_dump`).

mod dump;
mod text;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::live::Live;
use crate::stats::Stats;
use crate::xds::Dump;

/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;
/// The largest request head.
const MAX_HEAD: usize = 16 << 10;
/// The longest a request head may take to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin pages read.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The published configuration.
    pub live: Arc<Live>,
    /// Metrics.
    pub stats: Arc<Stats>,
    /// The accepted resources as they arrived.
    pub dump: Arc<Dump>,
    /// Set to true by `/quitquitquit`.
    pub quit: watch::Sender<bool>,
}

impl Admin {
    /// Binds `addr` (port 0: any free port) and returns the bound address and the server.
    pub async fn bind(
        self,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, impl Future<Output = ()>)> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let stop = self.quit.subscribe();
        Ok((bound, self.serve(listener, stop)))
    }

    async fn serve(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let admin = Arc::new(self);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok(permit) = permit else { return };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(&req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(MAX_HEAD)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                drop(permit);
            });
        }
    }

    /// Answers one request.
    pub(crate) fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let query = parse_query(req.uri().query().unwrap_or_default());
        self.route(req.method(), req.uri().path(), &query)
    }

    pub(crate) fn route(
        &self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
    ) -> Response<Full<Bytes>> {
        match path {
            "/ready" if self.live.is_ready() => text(StatusCode::OK, "LIVE\n".into()),
            "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n".into()),
            "/stats" => match query.get("filter").map(|f| regex::Regex::new(f)) {
                Some(Err(e)) => text(StatusCode::BAD_REQUEST, format!("bad filter: {e}\n")),
                Some(Ok(re)) => text(StatusCode::OK, text::stats(&self.stats, Some(&re))),
                None => text(StatusCode::OK, text::stats(&self.stats, None)),
            },
            "/stats/prometheus" => text(StatusCode::OK, text::prometheus(&self.stats)),
            "/clusters" => text(
                StatusCode::OK,
                text::clusters(&self.live.load(), &self.stats),
            ),
            "/listeners" => text(StatusCode::OK, text::listeners(&self.live.load())),
            "/certs" => json(&text::certs(&self.live.load())),
            "/config_dump" => {
                let include_eds = query.contains_key("include_eds");
                match dump::config_dump(&self.dump, query.get("resource"), include_eds) {
                    Ok(v) => json(&v),
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                }
            }
            // A page that changes the server's state takes only POST (Envoy's admin).
            "/quitquitquit" if method != Method::POST => text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("Method {method} not allowed, POST required."),
            ),
            "/quitquitquit" => {
                self.quit.send_replace(true);
                text(StatusCode::OK, "OK\n".into())
            }
            _ => text(StatusCode::NOT_FOUND, format!("no admin page {path}\n")),
        }
    }
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

fn json(v: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_string_pretty(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests;
