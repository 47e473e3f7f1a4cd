//! The published configuration: the current [`Snapshot`] behind an `ArcSwap` (a request
//! loads it once and keeps it), a change counter the listener manager waits on, and
//! whether the initial configuration has arrived (`/ready` says LIVE).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Snapshot;

/// The proxy's current configuration and who waits for its changes.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Snapshot>,
    changed: watch::Sender<u64>,
    ready: AtomicBool,
    binds: watch::Sender<Binds>,
}

/// What the listener manager made of a publication: the listeners it could not bind
/// (name -> why, naming the address), as of publication `version`. The xDS client
/// NACKs a listener update whose listeners failed, as Envoy does.
#[derive(Clone, Debug, Default)]
pub struct Binds {
    /// The publication the report is for (or a later one).
    pub version: u64,
    /// Listener name -> why it is not bound.
    pub failed: BTreeMap<String, String>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            current: ArcSwap::from_pointee(Snapshot::default()),
            changed: watch::Sender::new(0),
            ready: AtomicBool::new(false),
            binds: watch::Sender::new(Binds::default()),
        }
    }
}

impl Live {
    /// The current snapshot (for one request or connection: keep it, do not reload).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot and wakes every waiter; returns the publication's number.
    pub fn publish(&self, snapshot: Snapshot) -> u64 {
        self.current.store(Arc::new(snapshot));
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        *self.changed.borrow()
    }

    /// Replaces the snapshot with `f` of the current one (the xDS client is the only
    /// writer, so no update is lost); returns the publication's number.
    pub fn update(&self, f: impl FnOnce(&Snapshot) -> Snapshot) -> u64 {
        let next = f(&self.current.load());
        self.publish(next)
    }

    /// The number of the latest publication.
    pub fn version(&self) -> u64 {
        *self.changed.borrow()
    }

    /// The listener manager's report for publication `version`.
    pub fn report_binds(&self, version: u64, failed: BTreeMap<String, String>) {
        self.binds.send_replace(Binds { version, failed });
    }

    /// The first bind report for publication `version` or later, waiting at most
    /// `timeout` (none: no listener manager answered in time).
    pub async fn binds_after(&self, version: u64, timeout: Duration) -> Option<Binds> {
        let mut rx = self.binds.subscribe();
        let got = tokio::time::timeout(timeout, rx.wait_for(|b| b.version >= version)).await;
        match got {
            Ok(Ok(b)) => Some(b.clone()),
            _ => None,
        }
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
