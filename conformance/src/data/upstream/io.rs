//! What an upstream connection is: the byte stream, the body type of requests and
//! responses through the proxy, which endpoint a connection goes to, and why none was
//! made.

use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed error of a body.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of requests and responses through the proxy.
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

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
