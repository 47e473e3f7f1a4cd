//! What ends an ADS stream from outside, and the status it ends with: the control plane
//! shutting down, the certificate that proved its identity expiring, and its connection
//! reaching its maximum age.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::Status;

/// What ends a stream from outside: the shutdown, and the expiry of the certificate that
/// proved its identity; and who it is charged to, for logs.
pub(super) struct ConnLife {
    pub(super) stop: crate::runtime::Stop,
    pub(super) expires: Option<SystemTime>,
    /// When the connection reached its maximum age (it was sent GOAWAY then).
    pub(super) aged_at: Option<tokio::time::Instant>,
    pub(super) who: Arc<str>,
}

/// After its connection's GOAWAY, an ADS stream ends this much later: the peer, which
/// keeps its config meanwhile, has learnt not to reopen it on that connection.
pub(super) const END_AFTER_GOAWAY: Duration = Duration::from_millis(500);

/// The status a stream ends with when the certificate that proved its identity expired.
pub(super) fn cert_expired() -> Status {
    Status::unauthenticated("the client certificate expired; reconnect with a renewed one")
}

/// The status a stream ends with when its connection reached its maximum age.
pub(super) fn aged_out() -> Status {
    Status::unavailable("the connection reached its maximum age (--max-connection-age); reconnect")
}

/// How long a stream may live: no longer than the certificate that proved its identity.
pub(super) fn lifetime(expires: Option<SystemTime>) -> Duration {
    expires
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::from_secs(365 * 24 * 3600))
}

/// The status a stream ends with when the control plane shuts down: proxies reconnect
/// (to another replica) and keep serving their last config meanwhile.
pub(super) fn shutting_down() -> Status {
    Status::unavailable("the control plane is shutting down; reconnect")
}
