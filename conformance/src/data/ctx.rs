//! What the whole data path shares (`Ctx`: the published configuration, metrics, the
//! TLS cache, upstream state and the listener manager's shared state) and what a
//! listener hands its terminal filter about a connection (`ConnInfo`).

use std::net::SocketAddr;
use std::sync::Arc;

use super::drain::Drain;
use super::listen::shared::{BindError, Shared};
use super::tls::{PeerInfo, TlsCache};
use super::upstream::state::Upstreams;
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
    pub tls: TlsCache,
    /// Upstream connection pools and load-balancer state, per cluster and endpoint.
    pub upstream: Upstreams,
    /// The listener manager's bind errors and connection limits.
    pub listeners: Shared,
}

impl Ctx {
    /// A context over `live` and `stats`, with empty caches and pools.
    pub fn new(live: Arc<Live>, stats: Arc<Stats>) -> Arc<Self> {
        Arc::new(Ctx {
            live,
            stats,
            tls: TlsCache::default(),
            upstream: Upstreams::default(),
            listeners: Shared::default(),
        })
    }

    /// The listeners of the current snapshot that could not be bound (for the xDS
    /// client to NACK them).
    pub fn listener_errors(&self) -> Vec<BindError> {
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
    /// The chain terminated TLS on this connection (whether or not the peer sent a
    /// certificate).
    pub tls: bool,
    /// The verified peer certificate, when the chain terminated TLS and the peer sent one.
    pub tls_peer: Option<PeerInfo>,
    /// This proxy's own URI SAN on that TLS connection (`By=` of
    /// `x-forwarded-client-cert`).
    pub own_uri: Option<String>,
    /// The listener's name (for stats and logs).
    pub listener: Arc<str>,
    /// The drain of the filter chain (of the listener version) it was accepted under:
    /// once started, HTTP responses close the connection (HTTP/2: GOAWAY), and the
    /// connection is closed at its deadline.
    pub drain: Drain,
}
