//! Admission of first syncs: what keeps a storm of (re)connecting proxies from starving
//! the ones already synced. A stream's first sync (building and sending every resource
//! it subscribes to) waits for a turn: at most `--max-first-syncs` (64) run
//! at once, at most half of them for one identity, and waiting identities take turns
//! ([`crate::net::fair_queue`]). Synced streams never wait: a change reaches them while
//! the storm queues (`rudder_xds_first_syncs_running` and `_waiting` show it). A turn is
//! given back once the proxy has answered everything it asked for (an Envoy's clusters
//! and endpoints; a resumed stream that needed nothing, at once), or after
//! `--first-sync-hold` (2 s; a proxy that never answers cannot keep one), and a stream waits
//! at most [`WAIT`] before it is served anyway. Identities are not divided further: pods
//! of one service account share its turns. A proxy that resumes (it says what it holds:
//! it serves traffic by that config) takes the next free turn before a proxy that
//! starts, but a starting one gets every fifth turn in a run of resuming ones
//! ([`crate::net::fair_queue::HIGH_BURST`]); the caps hold for both, so claiming to resume
//! (anyone can) gains an identity no more turns, only earlier ones.

use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Duration;

use crate::log_limit::RateLimited;
use crate::net::fair_queue::{Busy, FairQueue, Permit, Priority, QueueLimits};

/// Longest a stream waits for a permit before it is served without one. Long: the queue
/// drains as fast as the server syncs, and letting thousands of waiters go at once after a
/// short wait would be the storm again (10,000 proxies broke connections that way).
pub(crate) const WAIT: Duration = Duration::from_secs(120);

/// Waits past the queue's bounds are logged at most once a second.
static BUSY_LOG: RateLimited = RateLimited::new();

/// What the gate shows in the metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct Gauges {
    /// First syncs holding a turn.
    pub running: Gauge,
    /// First syncs waiting for one.
    pub waiting: Gauge,
}

/// The gate every stream's first sync passes.
#[derive(Debug)]
pub(crate) struct FirstSyncs {
    queue: Arc<FairQueue<Arc<str>>>,
    hold: Duration,
    gauges: Gauges,
}

/// A held turn: counted in the gauge until it is given back.
#[derive(Debug)]
struct Turn {
    _permit: Option<Permit<Arc<str>>>,
    running: Gauge,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.running.dec();
    }
}

/// A stream counted in the waiting gauge while this lives.
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A stream's admission: holds its turn until [`Admitted::done`], the hold time, or
/// the stream's end.
#[derive(Debug)]
pub(crate) struct Admitted {
    turn: Arc<Mutex<Option<Turn>>>,
}

impl Admitted {
    /// The first sync is over: the turn goes to the next waiter.
    pub(crate) fn done(&self) {
        self.turn.lock().take();
    }

    /// Whether the turn is still held.
    pub(crate) fn holds(&self) -> bool {
        self.turn.lock().is_some()
    }
}

impl FirstSyncs {
    /// `in_flight` first syncs at once (half of them at most for one identity), each
    /// holding its turn at most `hold`; a stream waits at most `wait` for one.
    pub(crate) fn new(in_flight: usize, hold: Duration, wait: Duration, gauges: Gauges) -> Self {
        let limits = QueueLimits {
            total: in_flight.max(1),
            per_peer: (in_flight / 2).max(1),
            queue_per_peer: 10_000,
            queue_total: 100_000,
            wait,
        };
        FirstSyncs {
            queue: FairQueue::new(limits),
            hold,
            gauges,
        }
    }

    /// Waits for `identity`'s turn to sync (at most the queue's wait; past its bounds the
    /// stream is served without a turn rather than refused). A proxy that `resumes`
    /// (it holds config from an earlier stream, so it serves traffic by it) is served
    /// before any that starts, within the same caps.
    pub(crate) async fn admit(&self, identity: &Arc<str>, resumes: bool) -> Admitted {
        let class = if resumes {
            Priority::High
        } else {
            Priority::Normal
        };
        let acquired = {
            // Counted while waiting, however the wait ends (the caller may drop it for
            // the stream's end, the connection's age or the server's stop).
            let _waiting = Waiting::new(&self.gauges.waiting);
            self.queue.acquire_as(identity.clone(), class).await
        };
        let permit = match acquired {
            Ok(p) => Some(p),
            Err(busy) => {
                if let Some(suppressed) = BUSY_LOG.allow() {
                    tracing::warn!(
                        identity = %identity,
                        reason = busy.label(),
                        suppressed,
                        "serving a first sync without waiting further for its turn"
                    );
                }
                debug_assert!(matches!(busy, Busy::QueueFull | Busy::Timeout));
                None
            }
        };
        self.gauges.running.inc();
        let turn = Arc::new(Mutex::new(Some(Turn {
            _permit: permit,
            running: self.gauges.running.clone(),
        })));
        let held = Arc::downgrade(&turn);
        let hold = self.hold;
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            if let Some(t) = held.upgrade() {
                t.lock().take();
            }
        });
        Admitted { turn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(total: usize, hold: Duration) -> FirstSyncs {
        FirstSyncs::new(total, hold, Duration::from_secs(3600), Gauges::default())
    }

    /// Whether `admit` is still waiting after a tenth of a second.
    async fn still_waiting(admit: &mut std::pin::Pin<&mut impl std::future::Future>) -> bool {
        tokio::time::timeout(Duration::from_millis(100), admit)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn first_syncs_past_the_cap_wait_until_one_is_done() {
        let gauges = Gauges::default();
        let g = FirstSyncs::new(4, Duration::from_secs(3600), WAIT, gauges.clone());
        let id: Arc<str> = Arc::from("spiffe://td/ns/a/sa/a");
        let a = g.admit(&id, false).await;
        let _b = g.admit(&id, false).await;
        let third = g.admit(&id, false);
        tokio::pin!(third);
        assert!(
            still_waiting(&mut third).await,
            "a third first sync of one identity waits (half of 4 each)"
        );
        assert_eq!((gauges.running.get(), gauges.waiting.get()), (2, 1));
        a.done();
        let c = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("admitted once one is done");
        assert!(c.holds());
        assert_eq!((gauges.running.get(), gauges.waiting.get()), (2, 0));
        drop(c);
        assert_eq!(
            gauges.running.get(),
            1,
            "a stream that ends gives its turn back"
        );
    }

    #[tokio::test]
    async fn a_wait_given_up_is_no_longer_counted_or_queued() {
        let gauges = Gauges::default();
        let g = FirstSyncs::new(2, Duration::from_secs(3600), WAIT, gauges.clone());
        let id: Arc<str> = Arc::from("a");
        let first = g.admit(&id, false).await;
        {
            let second = g.admit(&id, false);
            tokio::pin!(second);
            assert!(still_waiting(&mut second).await);
            assert_eq!((gauges.running.get(), gauges.waiting.get()), (1, 1));
        }
        assert_eq!(
            (gauges.running.get(), gauges.waiting.get()),
            (1, 0),
            "a stream that stopped waiting is not shown waiting"
        );
        first.done();
        let third = tokio::time::timeout(Duration::from_secs(10), g.admit(&id, false))
            .await
            .expect("the turn was not handed to the wait given up");
        assert!(third.holds());
    }

    #[tokio::test]
    async fn one_identity_never_takes_every_permit() {
        let g = gate(2, Duration::from_secs(3600));
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let _a1 = g.admit(&a, false).await;
        let a2 = g.admit(&a, false);
        tokio::pin!(a2);
        assert!(still_waiting(&mut a2).await, "a's second waits");
        let b1 = tokio::time::timeout(Duration::from_secs(10), g.admit(&b, false))
            .await
            .expect("another identity goes ahead");
        assert!(b1.holds());
    }

    #[tokio::test]
    async fn a_proxy_that_never_answers_gives_its_permit_back_after_the_hold() {
        let g = gate(2, Duration::from_millis(200));
        let id: Arc<str> = Arc::from("a");
        let silent = g.admit(&id, false).await;
        let next = tokio::time::timeout(Duration::from_secs(10), g.admit(&id, false))
            .await
            .expect("the hold ran out");
        assert!(!silent.holds() && next.holds());
    }

    /// In a storm, a proxy that resumes (it serves traffic by what it holds) takes the
    /// next free turn before one that starts and queued first.
    #[tokio::test]
    async fn a_resuming_proxy_goes_before_one_that_starts() {
        let g = FirstSyncs::new(2, Duration::from_secs(3600), WAIT, Gauges::default());
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = (Arc::from("a"), "b".into(), "c".into());
        let a1 = g.admit(&a, false).await;
        let _b1 = g.admit(&b, false).await;
        let starts = g.admit(&c, false);
        tokio::pin!(starts);
        assert!(still_waiting(&mut starts).await, "both turns are out");
        let resumes = g.admit(&c, true);
        tokio::pin!(resumes);
        assert!(still_waiting(&mut resumes).await);
        a1.done();
        let r = tokio::time::timeout(Duration::from_secs(10), &mut resumes)
            .await
            .expect("the resuming proxy gets the freed turn");
        assert!(r.holds());
        assert!(
            still_waiting(&mut starts).await,
            "the starting one still waits"
        );
        r.done();
        let s = tokio::time::timeout(Duration::from_secs(10), starts)
            .await
            .expect("then the starting one");
        assert!(s.holds());
    }
}
