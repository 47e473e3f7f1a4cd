//! The `tcp_proxy` terminal: one upstream connection per downstream connection (to the
//! original destination for an `ORIGINAL_DST` cluster such as Rudder's `passthrough`,
//! else the cluster's balancer), then bytes both ways until both sides are done or the
//! idle timeout passes. A side that ends (EOF) half-closes the other's write side.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use crate::config::Snapshot;
use crate::config::cluster::Discovery;
use crate::config::listener::TcpProxy;
use crate::data::ctx::{ConnInfo, Ctx};
use crate::data::upstream::io::{Target, UpstreamIo};

/// Envoy's default `tcp_proxy` idle timeout.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(3600);

/// Where a `tcp_proxy` connection goes.
pub(crate) struct Upstream<'a> {
    /// The connection's snapshot.
    pub(crate) snapshot: Arc<Snapshot>,
    /// The filter.
    pub(crate) proxy: &'a TcpProxy,
}

/// The endpoint choice for `up`: the original destination for an `ORIGINAL_DST`
/// cluster (none when it was not restored, as Envoy's cluster finds no host), else
/// the balancer.
fn target(up: &Upstream<'_>, conn: &ConnInfo) -> Option<Target> {
    match up.snapshot.cluster(&up.proxy.cluster).map(|c| &c.discovery) {
        Some(Discovery::OriginalDst { .. }) => conn
            .destination_restored
            .then_some(Target::Address(conn.destination)),
        _ => Some(Target::Balanced),
    }
}

/// Proxies `downstream` to the cluster of `up.proxy`.
pub(crate) async fn serve(ctx: Arc<Ctx>, up: Upstream<'_>, downstream: UpstreamIo, conn: ConnInfo) {
    let proxy = up.proxy;
    // Counted whether or not an upstream is found, as Envoy does (a `blackhole`
    // connection counts too).
    ctx.stats
        .counter(&format!("tcp.{}.downstream_cx_total", proxy.stat_prefix))
        .inc();
    let upstream = match target(&up, &conn) {
        None => {
            ctx.stats
                .counter(&format!(
                    "cluster.{}.upstream_cx_none_healthy",
                    proxy.cluster
                ))
                .inc();
            Err(format!(
                "no original destination for cluster {}",
                proxy.cluster
            ))
        }
        Some(target) => {
            crate::data::upstream::connect::connect(&ctx, &up.snapshot, &proxy.cluster, target)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let upstream = match upstream {
        Ok((_, io)) => io,
        Err(e) => {
            // The upstream module counts the cluster's connect failures.
            tracing::debug!(listener = %conn.listener, cluster = %proxy.cluster, "tcp_proxy: {e}");
            return;
        }
    };
    let idle = proxy.idle_timeout.unwrap_or(DEFAULT_IDLE);
    if let Err(e) = pipe(downstream, upstream, idle).await {
        tracing::debug!(listener = %conn.listener, "tcp_proxy ended: {e}");
    }
}

/// Copies both ways until both directions ended or nothing moved for `idle`.
pub async fn pipe<A, B>(a: A, b: B, idle: Duration) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut abuf = vec![0u8; 16 * 1024];
    let mut bbuf = vec![0u8; 16 * 1024];
    let (mut a_done, mut b_done) = (false, false);
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "idle timeout");
    while !(a_done && b_done) {
        let deadline = Instant::now() + idle;
        tokio::select! {
            r = ar.read(&mut abuf), if !a_done => {
                let n = r?;
                if n == 0 {
                    a_done = true;
                    let _ = timeout_at(deadline, bw.shutdown()).await;
                } else {
                    timeout_at(deadline, bw.write_all(&abuf[..n])).await.map_err(|_| timed_out())??;
                }
            }
            r = br.read(&mut bbuf), if !b_done => {
                let n = r?;
                if n == 0 {
                    b_done = true;
                    let _ = timeout_at(deadline, aw.shutdown()).await;
                } else {
                    timeout_at(deadline, aw.write_all(&bbuf[..n])).await.map_err(|_| timed_out())??;
                }
            }
            () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_flow_both_ways_and_half_close_passes_through() {
        let (mut client, proxy_a) = tokio::io::duplex(1024);
        let (proxy_b, mut server) = tokio::io::duplex(1024);
        let task = tokio::spawn(pipe(proxy_a, proxy_b, Duration::from_secs(30)));
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping", "the client's EOF reaches the server");
        server.write_all(b"pong").await.unwrap();
        drop(server);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(
            back, b"pong",
            "the server still answers after the half-close"
        );
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_idle_connection_ends_at_the_idle_timeout() {
        let (_client, proxy_a) = tokio::io::duplex(1024);
        let (proxy_b, _server) = tokio::io::duplex(1024);
        let err = pipe(proxy_a, proxy_b, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
