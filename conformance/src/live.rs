//! The published configuration: the current [`Snapshot`] behind an `ArcSwap` (a request
//! loads it once and keeps it), a change counter the listener manager waits on, and
//! whether the initial configuration has arrived (`/ready` says LIVE).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Snapshot;

/// The proxy's current configuration and who waits for its changes.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Snapshot>,
    changed: watch::Sender<u64>,
    ready: AtomicBool,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            current: ArcSwap::from_pointee(Snapshot::default()),
            changed: watch::Sender::new(0),
            ready: AtomicBool::new(false),
        }
    }
}

impl Live {
    /// The current snapshot (for one request or connection: keep it, do not reload).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot and wakes every waiter.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Replaces the snapshot with `f` of the current one (the xDS client is the only
    /// writer, so no update is lost).
    pub fn update(&self, f: impl FnOnce(&Snapshot) -> Snapshot) {
        let next = f(&self.current.load());
        self.publish(next);
    }

    /// A receiver that sees every publication.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Marks the initial configuration as applied.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the initial configuration has been applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
