//! Byte streams to a cluster's endpoints, for `tcp_proxy` and CONNECT: the endpoint
//! chosen as for requests, dialled over its transport.

use std::net::SocketAddr;

use super::choose::choose;
use super::io::{Target, UpstreamError, UpstreamIo};
use super::transport;
use crate::config::Snapshot;
use crate::data::ctx::Ctx;

/// Opens a byte stream to an endpoint of `cluster` (for `tcp_proxy` and CONNECT).
pub async fn connect(
    ctx: &Ctx,
    snapshot: &Snapshot,
    cluster: &str,
    target: Target,
) -> Result<(SocketAddr, UpstreamIo), UpstreamError> {
    let c = snapshot
        .cluster(cluster)
        .ok_or_else(|| UpstreamError::NoCluster(cluster.to_string()))?;
    let state = ctx.upstream.state(&ctx.live.load(), c);
    let chosen = choose(snapshot, c, &state, target).await?;
    let io = transport::dial(ctx, snapshot, c, chosen.addr, chosen.transport).await?;
    Ok((chosen.addr, io))
}
