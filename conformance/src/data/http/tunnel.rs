//! HTTP CONNECT: the authority routes to a cluster, an upstream byte stream is opened
//! to it, the client gets 200, and bytes are spliced both ways until either side ends
//! (or the idle timeout, or the end of its connection's drain).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::activity::{Activity, Tracked};
use super::forward::{pick_cluster, target};
use super::req::{Req, local};
use crate::config::route::RouteAction;
use crate::data::upstream::connect as dial;
use crate::data::upstream::io::{Body, UpstreamError};

tokio::task_local! {
    /// The connection's hold, set around each request: a tunnel keeps a clone until
    /// it ends, and the connection waits for every clone before it is released.
    pub(crate) static HOLD: tokio::sync::mpsc::Sender<()>;
}

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
    // The tunnel keeps its downstream connection counted (see `HOLD`) and ends after
    // the idle timeout with no byte either way (the manager's, else Envoy's 1 h).
    let hold = HOLD.try_with(Clone::clone).ok();
    let idle = match rq.hcm.idle_timeout {
        None => Some(rq.ctx.listeners.limits().http_idle_timeout),
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    };
    let drain = rq.conn.drain.clone();
    tokio::spawn(async move {
        let Ok(down) = upgrade.await else { return };
        let activity = Arc::new(Activity::default());
        let mut down = Tracked {
            io: Box::pin(TokioIo::new(down)),
            activity: Arc::clone(&activity),
        };
        let copy = tokio::io::copy_bidirectional(&mut down, &mut io);
        tokio::pin!(copy);
        let closed = drain.closed();
        tokio::pin!(closed);
        loop {
            tokio::select! {
                _ = copy.as_mut() => break,
                () = closed.as_mut() => break,
                () = tokio::time::sleep(idle.unwrap_or_default()), if idle.is_some() => {
                    if idle.is_some_and(|idle| activity.idle_for() >= idle) {
                        break;
                    }
                }
            }
        }
        drop(hold);
    });
    let mut resp = Response::new(super::body::empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}
