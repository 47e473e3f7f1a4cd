//! The settings of a running control plane, parsed once from the command line (`cli`
//! turns its flags into these) and handed down to the parts that obey them: the CA and
//! TLS settings ([`Security`]) and the limits on what peers may open, send and make the
//! server hold ([`Limits`], [`ConnLimits`], [`StreamLimits`], [`BudgetConfig`]). Plain
//! data: it imports nothing of the crate.

use std::path::PathBuf;
use std::time::Duration;

/// Where the CA is, what it issues, and whether xDS is served with TLS.
#[derive(Clone, Debug)]
pub struct Security {
    /// SPIFFE trust domain of workload identities.
    pub trust_domain: String,
    /// Directory holding the CA (manifest mode).
    pub ca_dir: PathBuf,
    /// An operator-supplied CA certificate, instead of the CA directory's.
    pub ca_cert: Option<PathBuf>,
    /// The key of `ca_cert`.
    pub ca_key: Option<PathBuf>,
    /// Certificates above `ca_cert`, up to the root.
    pub ca_chain: Option<PathBuf>,
    /// Workload certificate lifetime.
    pub cert_lifetime: Duration,
    /// Plain-text xDS without authentication (loopback only).
    pub insecure_xds: bool,
}

/// Limits on what peers of the xDS port may open and send.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections and handshakes.
    pub conn: ConnLimits,
    /// What one stream may ask for.
    pub stream: StreamLimits,
    /// Largest request message decoded, in bytes.
    pub message_bytes: usize,
    /// The memory peers may make the xDS port hold, in all and per identity.
    pub budget: BudgetConfig,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            conn: Default::default(),
            stream: Default::default(),
            message_bytes: 4 << 20,
            budget: Default::default(),
        }
    }
}

/// Connection limits of a port behind the front door.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// TCP keepalive idle time (None: off).
    pub keepalive: Option<Duration>,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_peer: usize,
    /// A connection older than this (give or take a tenth, at random) is asked to close:
    /// its peer reconnects, possibly to another replica (None: connections live on).
    pub max_age: Option<Duration>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            handshake_timeout: Duration::from_secs(10),
            keepalive: Some(Duration::from_secs(60)),
            max_connections: 10_000,
            max_connections_per_peer: 64,
            max_age: None,
        }
    }
}

/// Limits on what one ADS stream may ask for.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// ADS streams open at once on one connection.
    pub streams_per_connection: usize,
    /// Resource names one stream may subscribe to, per type.
    pub subscribed_names: usize,
    /// Bytes of resource names one stream may subscribe to, over every type.
    pub subscribed_bytes: usize,
    /// Longest a request message may take from its first byte to its last.
    pub message_timeout: Duration,
    /// First syncs running at once (half of them at most for one identity).
    pub first_syncs: usize,
    /// Longest a first sync keeps its turn while the proxy has not answered.
    pub first_sync_hold: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            streams_per_connection: 8,
            subscribed_names: 50_000,
            subscribed_bytes: 4 << 20,
            message_timeout: Duration::from_secs(10),
            first_syncs: 64,
            first_sync_hold: Duration::from_secs(2),
        }
    }
}

/// The sizes of the xDS port's memory budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Bytes charged in all, over every identity (`--xds-memory-budget`).
    pub total: usize,
    /// Bytes any identity may hold (`--identity-memory-share`).
    pub share: usize,
    /// More bytes an identity may hold per live pod of it (`--identity-memory-per-pod`).
    pub per_pod: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            total: 512 << 20,
            share: 16 << 20,
            per_pod: 1 << 20,
        }
    }
}

impl BudgetConfig {
    /// The allowance of an identity with `pods` live pods.
    pub(crate) fn allowance(&self, pods: usize) -> usize {
        let cap = (self.total / 2).max(self.share);
        self.share
            .saturating_add(self.per_pod.saturating_mul(pods))
            .min(cap)
    }
}
