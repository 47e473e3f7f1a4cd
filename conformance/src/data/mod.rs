//! The data path: listeners and their filter chains (`listen`), TLS from SDS secrets
//! (`tls`), the HTTP connection manager and router (`http`), clusters, load balancing and
//! upstream connections (`upstream`). Every connection and request reads one
//! [`Snapshot`](crate::config::Snapshot) from [`Live`] and keeps it to the end.

pub mod http;
pub mod listen;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::live::Live;
use crate::stats::Stats;

/// What every connection and request of the data path shares.
#[derive(Debug)]
pub struct Ctx {
    /// The published configuration.
    pub live: Arc<Live>,
    /// Metrics.
    pub stats: Arc<Stats>,
    /// TLS configurations built from secrets, cached.
    pub tls: tls::TlsCache,
    /// Upstream connection pools and load-balancer state, per cluster and endpoint.
    pub upstream: upstream::Upstreams,
    /// The listener manager's bind errors and connection limits.
    pub listeners: listen::Shared,
}

impl Ctx {
    /// A context over `live` and `stats`, with empty caches and pools.
    pub fn new(live: Arc<Live>, stats: Arc<Stats>) -> Arc<Self> {
        Arc::new(Ctx {
            live,
            stats,
            tls: tls::TlsCache::default(),
            upstream: upstream::Upstreams::default(),
            listeners: listen::Shared::default(),
        })
    }

    /// The listeners of the current snapshot that could not be bound (for the xDS
    /// client to NACK them).
    pub fn listener_errors(&self) -> Vec<listen::BindError> {
        self.listeners.errors()
    }
}

/// What the listener knows about an accepted connection, handed to its terminal filter.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The address the connection was for: its original destination under
    /// interception, else the local address.
    pub destination: SocketAddr,
    /// `destination` is the original destination recovered from the socket
    /// (`SO_ORIGINAL_DST`, Envoy's "local address restored"); an original-destination
    /// cluster without a header has no host for the connection otherwise.
    pub destination_restored: bool,
    /// The verified peer certificate, when the chain terminated TLS and the peer sent one.
    pub tls_peer: Option<tls::PeerInfo>,
    /// This proxy's own URI SAN on that TLS connection (`By=` of
    /// `x-forwarded-client-cert`).
    pub own_uri: Option<String>,
    /// The listener's name (for stats and logs).
    pub listener: Arc<str>,
}
