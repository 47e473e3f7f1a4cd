//! What every part of the running control plane shares and nothing in it configures: the
//! stop signal ([`Stop`]) and the process signals that start a shutdown, and the control
//! plane's own identity ([`control_plane_id`]). The bottom of the crate: it imports
//! nothing of it.

use std::sync::Arc;

use anyhow::Context;
use ca::SpiffeId;

/// Namespace and service account of the control plane's own identity.
pub(crate) const CONTROL_PLANE_NS: &str = "rudder-system";
/// See [`CONTROL_PLANE_NS`].
pub(crate) const CONTROL_PLANE_SA: &str = "rudder";

/// The control plane's SPIFFE ID; sidecars check it on the xDS connection.
pub fn control_plane_id(trust_domain: &str) -> anyhow::Result<SpiffeId> {
    SpiffeId::new(trust_domain, CONTROL_PLANE_NS, CONTROL_PLANE_SA).context("the trust domain")
}

/// Tells every stream and server loop that the control plane is shutting down.
#[derive(Clone, Debug)]
pub struct Stop {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl Stop {
    /// Starts the shutdown.
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the shutdown has started.
    pub(crate) fn is_stopped(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes once the shutdown has started.
    pub(crate) fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // An error means the sender is gone, which only happens at exit.
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT) and names the signal.
pub(crate) async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        Some(()) = async { term.as_mut()?.recv().await } => "SIGTERM",
        Some(()) = async { int.as_mut()?.recv().await } => "SIGINT",
        else => std::future::pending().await,
    }
}
