//! What the listener manager shares with the rest of the proxy through `Ctx`: bind
//! errors (for the xDS client's NACK) and connection limits (the drain time among
//! them); and the listener stat prefix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

/// The data path's connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections per listener.
    pub max_connections: usize,
    /// How long the TLS inspector waits for a ClientHello.
    pub inspect_timeout: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long an HTTP connection may take to send its first bytes (request line or
    /// HTTP/2 preface) before it is closed (10 s; Envoy's sidecar ports give their
    /// listener filters 15 s).
    pub first_bytes_timeout: Duration,
    /// The HTTP connection manager's idle timeout when its configuration sets none
    /// (Envoy's default: 1 h with no request in flight).
    pub http_idle_timeout: Duration,
    /// How long the connections of an updated or removed listener (or filter chain)
    /// drain before they are closed (`--drain-time-s`; Envoy's default 600 s).
    pub drain_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16_384,
            inspect_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            first_bytes_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(3600),
            drain_time: Duration::from_secs(600),
        }
    }
}

/// A listener that could not be bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("listener {listener}: cannot bind {address}: {message}")]
pub struct BindError {
    /// The listener's name.
    pub listener: String,
    /// Its address.
    pub address: SocketAddr,
    /// Why (the OS error).
    pub message: String,
}

/// What the listener manager shares with the rest of the proxy (in [`Ctx`](crate::data::Ctx)).
#[derive(Debug, Default)]
pub struct Shared {
    pub(super) errors: Mutex<BTreeMap<String, BindError>>,
    limits: RwLock<Limits>,
}

impl Shared {
    /// The listeners of the current snapshot that could not be bound, by name.
    pub fn errors(&self) -> Vec<BindError> {
        self.errors.lock().values().cloned().collect()
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        *self.limits.read()
    }

    /// Changes the limits (for new connections).
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write() = limits;
    }
}

/// The stat prefix of a listener at `addr`, as Envoy names it
/// (`listener.0.0.0.0_15001`, `listener.[__1]_80`).
pub fn stat_prefix(addr: SocketAddr) -> String {
    format!("listener.{}", addr.to_string().replace(':', "_"))
}
