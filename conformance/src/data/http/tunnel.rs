//! HTTP CONNECT: the authority routes to a cluster, an upstream byte stream is opened
//! to it, the client gets 200, and bytes are spliced both ways until either side ends.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::forward::{pick_cluster, target};
use super::req::{Req, local};
use crate::config::route::RouteAction;
use crate::data::upstream::connect as dial;
use crate::data::upstream::io::{Body, UpstreamError};

/// Tunnels a CONNECT request along `ra`.
pub(crate) async fn connect(
    rq: &Req<'_>,
    ra: &RouteAction,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some((name, _)) = pick_cluster(&ra.destination, rand::random::<u64>()) else {
        return local(StatusCode::SERVICE_UNAVAILABLE, "");
    };
    let Some(cluster) = rq.snapshot.cluster(name) else {
        return local(StatusCode::SERVICE_UNAVAILABLE, "");
    };
    let Some(target) = target(cluster, rq, req.headers()) else {
        return local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };
    let mut io = match dial::connect(rq.ctx, rq.snapshot, name, target).await {
        Ok((_, io)) => io,
        Err(UpstreamError::NoHealthyUpstream(_)) => {
            return local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
        }
        Err(UpstreamError::NoCluster(_)) => {
            return local(StatusCode::SERVICE_UNAVAILABLE, "");
        }
        Err(UpstreamError::ConnectFailure { .. }) => {
            return local(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. \
                 reset reason: connection failure",
            );
        }
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(down) = upgrade.await {
            let mut down = TokioIo::new(down);
            let _ = tokio::io::copy_bidirectional(&mut down, &mut io).await;
        }
    });
    let mut resp = Response::new(super::body::empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}
