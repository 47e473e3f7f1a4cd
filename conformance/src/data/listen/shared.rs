//! What the listener manager shares with the rest of the proxy through `Ctx`: bind
//! errors (for the xDS client's NACK), connection limits, and a test-only upstream
//! connector; and the listener stat prefix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};

use crate::data::ConnInfo;
use crate::data::upstream::{Target, UpstreamIo};

/// The data path's connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections per listener.
    pub max_connections: usize,
    /// How long the TLS inspector waits for a ClientHello.
    pub inspect_timeout: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16_384,
            inspect_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
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

/// Connects a `tcp_proxy` upstream instead of `upstream::connect`: a test-only path
/// for testing listeners before the upstream module exists. Takes the cluster name,
/// the target and the connection.
pub type TestConnector = Arc<
    dyn Fn(String, Target, ConnInfo) -> BoxFuture<'static, Result<(SocketAddr, UpstreamIo), String>>
        + Send
        + Sync,
>;

/// What the listener manager shares with the rest of the proxy (in [`Ctx`]).
#[derive(Default)]
pub struct Shared {
    pub(super) errors: Mutex<BTreeMap<String, BindError>>,
    limits: RwLock<Limits>,
    connector: RwLock<Option<TestConnector>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("errors", &*self.errors.lock())
            .field("limits", &*self.limits.read())
            .finish_non_exhaustive()
    }
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

    /// Test-only: `tcp_proxy` connects through `f` instead of the upstream module.
    #[doc(hidden)]
    pub fn set_test_connector(&self, f: TestConnector) {
        *self.connector.write() = Some(f);
    }

    pub(crate) fn connector(&self) -> Option<TestConnector> {
        self.connector.read().clone()
    }
}

/// The stat prefix of a listener at `addr`, as Envoy names it
/// (`listener.0.0.0.0_15001`, `listener.[__1]_80`).
pub fn stat_prefix(addr: SocketAddr) -> String {
    format!("listener.{}", addr.to_string().replace(':', "_"))
}
