//! The drain signal of one filter chain of one listener version: started once (when an
//! update changes or removes the chain, or the listener goes away), with the deadline by
//! which the chain's remaining connections are closed (Envoy's `--drain-time-s`).
//!
//! A connection holds its chain's [`Drain`] (in [`ConnInfo`](crate::data::ConnInfo)):
//! a request asks [`Drain::is_draining`] (one atomic load) to know whether its
//! response closes the connection; the connection's task waits on [`Drain::started`]
//! (to send HTTP/2 GOAWAY) and [`Drain::closed`] (to close at the deadline).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// One chain version's drain; clones share it. The default one never starts unless
/// [`Drain::start`] is called.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Set once the drain started (read per request).
    draining: AtomicBool,
    /// The deadline, once started (awaited by connection tasks).
    deadline: watch::Sender<Option<Instant>>,
}

impl Drain {
    /// Starts the drain (only the first call counts): connections close by `time` from
    /// now. Returns whether this call started it.
    pub fn start(&self, time: Duration) -> bool {
        if self.inner.draining.swap(true, Ordering::AcqRel) {
            return false;
        }
        let deadline = Instant::now() + time;
        self.inner.deadline.send_replace(Some(deadline));
        true
    }

    /// Whether the drain started.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Waits until the drain starts (forever if it never does); its deadline.
    pub async fn started(&self) -> Instant {
        let mut rx = self.inner.deadline.subscribe();
        // The sender lives in `inner`, which `self` holds: the channel never closes.
        if let Ok(d) = rx.wait_for(Option::is_some).await
            && let Some(deadline) = *d
        {
            return deadline;
        }
        std::future::pending().await
    }

    /// Waits until the drain's deadline passes (forever if it never starts).
    pub async fn closed(&self) {
        let deadline = self.started().await;
        tokio::time::sleep_until(deadline).await;
    }

    /// Whether `self` and `other` are the same drain.
    pub fn same(&self, other: &Drain) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_starts_once_and_every_clone_sees_it() {
        let d = Drain::default();
        let seen = d.clone();
        assert!(!seen.is_draining());
        let waiting = tokio::spawn({
            let d = d.clone();
            async move { d.closed().await }
        });
        assert!(d.start(Duration::ZERO));
        assert!(
            !d.start(Duration::from_secs(3600)),
            "only the first start counts"
        );
        assert!(seen.is_draining());
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the deadline (now) passes")
            .expect("task");
        // A waiter that comes after the start sees it too.
        tokio::time::timeout(Duration::from_secs(10), seen.closed())
            .await
            .expect("already past");
    }

    #[tokio::test]
    async fn an_unstarted_drain_never_closes() {
        let d = Drain::default();
        let waited = tokio::time::timeout(Duration::from_millis(50), d.closed()).await;
        assert!(waited.is_err());
        assert!(d.same(&d.clone()));
        assert!(!d.same(&Drain::default()));
    }
}
