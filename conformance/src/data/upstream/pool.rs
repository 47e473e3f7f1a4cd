//! HTTP connection pools of one endpoint: idle HTTP/1.1 connections reused by
//! keep-alive, and one multiplexed HTTP/2 connection. A request sent here is one try:
//! its failure is classified for the router's retry decision.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::choose::choose;
use super::endpoint::{EndpointState, H1};
use super::io::{Body, Target, UpstreamError};
use super::state::ClusterState;
use super::transport;
use crate::config::Snapshot;
use crate::config::cluster::{Cluster, UpstreamProtocol};
use crate::data::ctx::Ctx;

/// Why a try got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No endpoint or no connection.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The connection failed before the request was sent.
    #[error("reset before request: {0}")]
    ResetBeforeRequest(String),
    /// HTTP/2 `REFUSED_STREAM`.
    #[error("refused stream: {0}")]
    RefusedStream(String),
    /// Reset or closed after the request was sent.
    #[error("reset: {0}")]
    Reset(String),
}

struct InFlight<'a>(&'a EndpointState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends one try of `req` to an endpoint of `cluster` (`target` as for [`choose`]);
/// `downstream_h2`: the downstream request's protocol, for `UpstreamProtocol::Downstream`.
/// Returns the response and the endpoint.
pub(crate) async fn send(
    ctx: &Ctx,
    snapshot: &Snapshot,
    cluster: &Cluster,
    state: &Arc<ClusterState>,
    target: Target,
    mut req: Request<Body>,
    downstream_h2: bool,
) -> Result<(Response<Incoming>, SocketAddr), SendError> {
    let chosen = choose(snapshot, cluster, state, target).await?;
    let ep = &chosen.state;
    ep.active.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight(ep);
    let h2 = match cluster.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Downstream => downstream_h2,
    };
    *req.version_mut() = if h2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    let res = if h2 {
        send_h2(ctx, snapshot, cluster, ep, chosen.transport, req).await
    } else {
        send_h1(ctx, snapshot, cluster, ep, chosen.transport, req).await
    };
    // Per-endpoint request stats once a connection was made (a failed connect names
    // no endpoint worth a stat), never for an original-destination cluster.
    let connected = !matches!(
        res,
        Err(SendError::Upstream(UpstreamError::ConnectFailure { .. }))
    );
    if connected && let Some(prefix) = transport::endpoint_prefix(cluster, chosen.addr) {
        ctx.stats.counter(&format!("{prefix}.rq_total")).inc();
        let ok = res.as_ref().is_ok_and(|r| !r.status().is_server_error());
        let outcome = if ok { "rq_success" } else { "rq_error" };
        ctx.stats.counter(&format!("{prefix}.{outcome}")).inc();
    }
    res.map(|r| (r, chosen.addr))
}

async fn send_h1(
    ctx: &Ctx,
    snapshot: &Snapshot,
    cluster: &Cluster,
    ep: &EndpointState,
    transport_index: usize,
    mut req: Request<Body>,
) -> Result<Response<Incoming>, SendError> {
    // A pooled connection the peer closed meanwhile gives the request back unsent:
    // it then goes once more on a fresh connection.
    let mut pooled = true;
    loop {
        let idle = if pooled { ep.idle_h1() } else { None };
        let mut conn = match idle {
            Some(c) => c,
            None => {
                pooled = false;
                let io = transport::dial(ctx, snapshot, cluster, ep.addr, transport_index).await?;
                let (sender, conn) = http1::Builder::new()
                    .handshake::<_, Body>(TokioIo::new(io))
                    .await
                    .map_err(|e| SendError::ResetBeforeRequest(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
                H1 { sender, used: 0 }
            }
        };
        conn.used += 1;
        match conn.sender.try_send_request(req).await {
            Ok(resp) => {
                ep.put_h1(conn, cluster.max_requests_per_connection);
                return Ok(resp);
            }
            Err(mut e) => match e.take_message() {
                Some(back) if pooled => {
                    req = back;
                    pooled = ep.h1.lock().iter().any(|c| c.sender.is_ready());
                }
                Some(_) => return Err(SendError::ResetBeforeRequest(e.into_error().to_string())),
                None => return Err(classify(&e.into_error())),
            },
        }
    }
}

async fn send_h2(
    ctx: &Ctx,
    snapshot: &Snapshot,
    cluster: &Cluster,
    ep: &EndpointState,
    transport_index: usize,
    req: Request<Body>,
) -> Result<Response<Incoming>, SendError> {
    let req = absolute(req, transport::is_tls(cluster, transport_index));
    let mut sender = {
        let mut slot = ep.h2.lock().await;
        match slot.as_ref().filter(|s| !s.is_closed()) {
            Some(s) => s.clone(),
            None => {
                let io = transport::dial(ctx, snapshot, cluster, ep.addr, transport_index).await?;
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .handshake::<_, Body>(TokioIo::new(io))
                    .await
                    .map_err(|e| SendError::ResetBeforeRequest(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                *slot = Some(sender.clone());
                sender
            }
        }
    };
    sender
        .ready()
        .await
        .map_err(|e| SendError::ResetBeforeRequest(e.to_string()))?;
    match sender.try_send_request(req).await {
        Ok(resp) => Ok(resp),
        Err(mut e) => match e.take_message() {
            Some(_) => Err(SendError::ResetBeforeRequest(e.into_error().to_string())),
            None => Err(classify(&e.into_error())),
        },
    }
}

/// HTTP/2 needs `:scheme` and `:authority`: the URI takes them from the `Host`.
fn absolute(mut req: Request<Body>, tls: bool) -> Request<Body> {
    if req.uri().scheme().is_some() {
        return req;
    }
    let authority = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    if let Some(a) = authority {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let scheme = if tls { "https" } else { "http" };
        if let Ok(uri) = format!("{scheme}://{a}{pq}").parse::<Uri>() {
            *req.uri_mut() = uri;
            req.headers_mut().remove(http::header::HOST);
        }
    }
    req
}

/// A sent request's failure: `REFUSED_STREAM`, else a reset.
fn classify(e: &hyper::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h2e) = s.downcast_ref::<h2::Error>()
            && h2e.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return SendError::RefusedStream(e.to_string());
        }
        source = s.source();
    }
    SendError::Reset(e.to_string())
}
