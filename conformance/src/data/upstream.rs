//! Clusters at run time: endpoint choice (round robin, least request, locality
//! priority), connections to an endpoint (plain or mTLS as its transport match says),
//! and HTTP/1.1 and HTTP/2 connection pools per endpoint.

use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Snapshot;
use crate::data::Ctx;

/// A byte stream to an upstream endpoint (TCP, maybe TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connected upstream byte stream.
pub type UpstreamIo = Pin<Box<dyn Io>>;

/// Why no upstream connection was made.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The cluster is not held.
    #[error("no cluster {0}")]
    NoCluster(String),
    /// It has no healthy endpoint.
    #[error("no healthy upstream in {0}")]
    NoHealthyUpstream(String),
    /// Connecting failed.
    #[error("connect to {addr} failed: {reason}")]
    ConnectFailure {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Which endpoint a connection goes to.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The cluster's load balancer picks.
    Balanced,
    /// This address (an original-destination cluster).
    Address(SocketAddr),
}

/// Pools and balancer state, per cluster and endpoint.
#[derive(Debug, Default)]
pub struct Upstreams {}

/// Opens a byte stream to an endpoint of `cluster` (for `tcp_proxy` and CONNECT).
pub async fn connect(
    _ctx: &Ctx,
    _snapshot: &Snapshot,
    cluster: &str,
    _target: Target,
) -> Result<(SocketAddr, UpstreamIo), UpstreamError> {
    Err(UpstreamError::NoCluster(cluster.to_string()))
}
