//! The xDS port's memory budget: what peers make the control plane hold for them
//! (connections, streams, request buffers, subscribed names) is charged to the identity
//! that proved itself on the connection (its certificate's SPIFFE ID, never its IP) and
//! to one global budget, so the per-connection, per-stream and per-message caps cannot
//! multiply past either.
//!
//! An identity's allowance is `share + per_pod x its live pods` (pods of that namespace
//! and service account in the model), so a Deployment of hundreds of replicas sharing one
//! ServiceAccount is not refused while one pod gets only the share; no identity gets more
//! than half the global budget. Each holder owns a [`Charge`] that it grows and shrinks
//! as its memory does and that gives everything back when dropped; a growth past the
//! allowance or the budget is refused. Charging is two atomic updates (the identity's
//! and the global); the map of identities is locked only when a connection opens or the
//! last of an identity's holders goes.
//!
//! Responses waiting for a peer to read them are charged too ([`Queued`]), from before
//! they are encoded until HTTP/2 takes them in [`CHUNK`]-sized pieces. They are never
//! refused: a stream waits until its identity and the budget are under their line plus
//! an eighth ([`RESPONSE_RESERVE`]), so a peer that does not read stalls its own streams,
//! and what the rest hold can never starve responses.
//!
//! A stream's fixed charge covers what HTTP/2 buffers of its responses; once the stream
//! is over, HTTP/2 may still hold that much until the peer reads it, so the connection
//! keeps it charged ([`ConnAccount::finished`], at most once per HTTP/2 stream slot)
//! until it closes.
//!
//! ```text
//!   Budget (global used / total)
//!     └─ Account per identity (used / allowance)
//!          ├─ Charge per holder: connection, stream, request buffer, subscriptions
//!          ├─ Queued per stream: responses not yet taken by HTTP/2
//!          └─ ConnAccount per connection: what its finished streams may leave behind
//! ```

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use prometheus_client::metrics::gauge::Gauge;

use crate::config::BudgetConfig;

/// What a connection holds beyond what its streams are charged: TLS and HTTP/2 state
/// (TLS records both ways, HTTP/2's write buffer), the frame HTTP/2 is reading
/// ([`MAX_FRAME`]) and the HTTP/2 connection receive window ([`RECEIVE_WINDOW`]), which
/// a peer can fill while the server is not reading.
pub(crate) const CONNECTION_BYTES: usize = 48 * 1024 + MAX_FRAME as usize + RECEIVE_WINDOW as usize;
/// Largest HTTP/2 frame a peer may send. A SotW acknowledgement repeats the proxy's whole
/// subscription (about 18 KB of endpoint names at 1,000 Services): in one frame it is
/// decoded where it arrived; split over two, it is copied into one buffer first.
pub(crate) const MAX_FRAME: u32 = 32 * 1024;
/// Largest HTTP/2 header list a peer may send.
pub(crate) const MAX_HEADER_LIST: u32 = 16 * 1024;
/// What an ADS stream holds beyond its request buffer, subscriptions and queued
/// responses: its task and state machine, and what HTTP/2 buffers of its responses
/// ([`HTTP2_HELD`]).
pub(crate) const STREAM_BYTES: usize = 16 * 1024 + HTTP2_HELD;
/// What HTTP/2 may hold of one stream's responses: its send buffer and the piece it
/// holds while waiting to send.
pub(crate) const HTTP2_HELD: usize = SEND_BUFFER + CHUNK;
/// What one subscribed name holds beyond its bytes (its shared pointer and bookkeeping).
pub(crate) const NAME_OVERHEAD: usize = 32;
/// HTTP/2 receive window of an xDS connection and of each stream on it, in bytes: the
/// most request data the server buffers for a connection before reading it.
pub(crate) const RECEIVE_WINDOW: u32 = 64 * 1024;
/// Most response bytes HTTP/2 buffers per stream for a peer that does not read.
pub(crate) const SEND_BUFFER: usize = 64 * 1024;
/// Responses are handed to HTTP/2 in pieces of at most this many bytes, each once it has
/// room: the rest stays queued and charged.
pub(crate) const CHUNK: usize = 64 * 1024;
/// Queued responses wait while their identity holds more than its allowance plus this
/// share of it (and the budget likewise): room that what is refused can never fill.
pub(crate) const RESPONSE_RESERVE: usize = 8;
/// How soon a stream waiting to queue a response looks again: first, and at most
/// (doubling in between), so stalled streams cost little.
const QUEUE_RETRY: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(5),
    std::time::Duration::from_millis(250),
);

/// Why a charge was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The identity's allowance is used.
    #[error(
        "{identity} would hold {would} bytes of connections, streams, request buffers and subscriptions, more than its allowance of {allowance} bytes (--identity-memory-share {share} plus --identity-memory-per-pod {per_pod} for each of its {pods} live pods)"
    )]
    Identity {
        /// Whose allowance.
        identity: Arc<str>,
        /// What it would hold with the charge.
        would: usize,
        /// Its allowance.
        allowance: usize,
        /// Its live pods.
        pods: usize,
        /// `--identity-memory-share`.
        share: usize,
        /// `--identity-memory-per-pod`.
        per_pod: usize,
    },
    /// The global budget is used.
    #[error(
        "the control plane's memory budget for connections, streams, request buffers and subscriptions is used ({used} of {total} bytes, --xds-memory-budget); {identity} asked for {asked} more"
    )]
    Global {
        /// Who asked.
        identity: Arc<str>,
        /// Bytes charged in all.
        used: usize,
        /// `--xds-memory-budget`.
        total: usize,
        /// Bytes asked for.
        asked: usize,
    },
}

impl BudgetError {
    /// The limit, as `rudder_xds_refusals_total` labels it.
    pub(crate) fn limit(&self) -> &'static str {
        match self {
            BudgetError::Identity { .. } => "identity_memory",
            BudgetError::Global { .. } => "memory_budget",
        }
    }

    /// The identity that was refused.
    pub fn identity(&self) -> &str {
        match self {
            BudgetError::Identity { identity, .. } | BudgetError::Global { identity, .. } => {
                identity
            }
        }
    }
}

/// Live pods per `namespace/serviceaccount`.
pub type PodCounts = HashMap<String, usize>;

/// The global budget and the identities charged to it.
pub struct Budget {
    cfg: BudgetConfig,
    used: AtomicUsize,
    /// Mirrors `used` for `/metrics`.
    gauge: Gauge,
    accounts: Mutex<HashMap<Arc<str>, Weak<Account>>>,
    pods: RwLock<Arc<PodCounts>>,
    /// Bumped whenever `pods` changes: accounts recompute their allowance once after.
    pods_epoch: AtomicU64,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("cfg", &self.cfg)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

impl Budget {
    /// An empty budget; `gauge` follows what is charged.
    pub fn new(cfg: BudgetConfig, gauge: Gauge) -> Arc<Self> {
        Arc::new(Budget {
            cfg,
            used: AtomicUsize::new(0),
            gauge,
            accounts: Mutex::default(),
            pods: RwLock::default(),
            pods_epoch: AtomicU64::new(1),
        })
    }

    /// The sizes.
    pub fn config(&self) -> BudgetConfig {
        self.cfg
    }

    /// Bytes charged in all.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Sets the live pods per `namespace/serviceaccount` (after every model change).
    pub(crate) fn set_pods(&self, pods: PodCounts) {
        *self.pods.write() = Arc::new(pods);
        self.pods_epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn pods_of(&self, owner: &str) -> usize {
        self.pods.read().get(owner).copied().unwrap_or(0)
    }

    /// The account of `identity` (created on first use). `owner` is its
    /// `namespace/serviceaccount`, whose pods raise its allowance; None for peers without
    /// a workload identity (plain-text xDS).
    pub fn account(self: &Arc<Self>, identity: &str, owner: Option<String>) -> Arc<Account> {
        let mut map = self.accounts.lock();
        if let Some(a) = map.get(identity).and_then(Weak::upgrade) {
            return a;
        }
        let key: Arc<str> = Arc::from(identity);
        let account = Arc::new(Account {
            budget: self.clone(),
            identity: key.clone(),
            owner,
            used: AtomicUsize::new(0),
            allowance: AtomicUsize::new(self.cfg.share),
            pods: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
        });
        map.insert(key, Arc::downgrade(&account));
        account
    }

    /// Identities with an account now.
    #[cfg(test)]
    pub(crate) fn identities(&self) -> usize {
        self.accounts.lock().len()
    }

    fn take(&self, identity: &Arc<str>, n: usize) -> Result<(), BudgetError> {
        let total = self.cfg.total;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|v| *v <= total)
            })
            .map_err(|used| BudgetError::Global {
                identity: identity.clone(),
                used,
                total,
                asked: n,
            })?;
        self.gauge.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
        Ok(())
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.gauge.dec_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Takes `n` if what is charged is under the budget plus its response reserve (it
    /// may go over by this `n`).
    fn take_queued(&self, n: usize) -> bool {
        let line = with_reserve(self.cfg.total);
        let ok = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < line).then(|| u.saturating_add(n))
            })
            .is_ok();
        if ok {
            self.gauge.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
        }
        ok
    }
}

/// A line plus the response reserve.
fn with_reserve(line: usize) -> usize {
    line.saturating_add(line / RESPONSE_RESERVE)
}

/// One identity's use of the budget.
pub struct Account {
    budget: Arc<Budget>,
    identity: Arc<str>,
    owner: Option<String>,
    used: AtomicUsize,
    allowance: AtomicUsize,
    pods: AtomicUsize,
    /// The pods epoch `allowance` was computed at.
    epoch: AtomicU64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("identity", &self.identity)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

impl Account {
    /// The identity charged.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Bytes it holds.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// What it may hold, and its live pods (recomputed once after the pods change).
    pub(crate) fn allowance(&self) -> (usize, usize) {
        let epoch = self.budget.pods_epoch.load(Ordering::Acquire);
        if self.epoch.load(Ordering::Acquire) != epoch {
            let pods = self
                .owner
                .as_deref()
                .map(|o| self.budget.pods_of(o))
                .unwrap_or(0);
            self.pods.store(pods, Ordering::Release);
            self.allowance
                .store(self.budget.cfg.allowance(pods), Ordering::Release);
            self.epoch.store(epoch, Ordering::Release);
        }
        (
            self.allowance.load(Ordering::Acquire),
            self.pods.load(Ordering::Acquire),
        )
    }

    fn take(&self, n: usize) -> Result<(), BudgetError> {
        if n == 0 {
            return Ok(());
        }
        let (allowance, pods) = self.allowance();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|v| *v <= allowance)
            })
            .map_err(|u| {
                let cfg = self.budget.cfg;
                BudgetError::Identity {
                    identity: self.identity.clone(),
                    would: u.saturating_add(n),
                    allowance,
                    pods,
                    share: cfg.share,
                    per_pod: cfg.per_pod,
                }
            })?;
        if let Err(e) = self.budget.take(&self.identity, n) {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }

    fn give(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::AcqRel);
            self.budget.give(n);
        }
    }

    /// Takes `n` for memory that already exists, whatever the allowance.
    fn force(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
        self.budget.used.fetch_add(n, Ordering::AcqRel);
        self.budget
            .gauge
            .inc_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Takes `n` for a queued response if the identity and the budget are under their
    /// lines plus the response reserve.
    fn take_queued(&self, n: usize) -> bool {
        let line = with_reserve(self.allowance().0);
        if self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < line).then(|| u.saturating_add(n))
            })
            .is_err()
        {
            return false;
        }
        if !self.budget.take_queued(n) {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let mut map = self.budget.accounts.lock();
        // A new account for the identity may have replaced this one meanwhile.
        if map
            .get(&self.identity)
            .is_some_and(|w| w.strong_count() == 0)
        {
            map.remove(&self.identity);
        }
    }
}

/// What one holder (a connection, a stream, a request buffer, a stream's subscriptions)
/// has charged to its identity; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    account: Arc<Account>,
    held: usize,
}

impl Charge {
    /// A charge of nothing yet on `account`.
    pub fn new(account: Arc<Account>) -> Self {
        Charge { account, held: 0 }
    }

    /// The account charged.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Holds `to` bytes: grows if the identity's allowance and the global budget take
    /// it (else holds what it held), shrinks always.
    pub(crate) fn resize(&mut self, to: usize) -> Result<(), BudgetError> {
        if to > self.held {
            self.account.take(to - self.held)?;
        } else {
            self.account.give(self.held - to);
        }
        self.held = to;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.account.give(self.held);
    }
}

/// A connection's standing with the budget: its identity's account, and what its
/// finished streams may still hold in HTTP/2 (charged until the connection closes, at
/// most `cap`).
#[derive(Debug)]
pub struct ConnAccount {
    account: Arc<Account>,
    lingering: Mutex<Charge>,
    cap: usize,
}

impl ConnAccount {
    /// A connection on `account` whose finished streams may leave at most `cap` bytes.
    pub fn new(account: Arc<Account>, cap: usize) -> Arc<Self> {
        Arc::new(ConnAccount {
            lingering: Mutex::new(Charge::new(account.clone())),
            account,
            cap,
        })
    }

    /// The identity's account.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// A stream is over; HTTP/2 may still hold `n` bytes of its responses until the peer
    /// reads them. Charged whatever the allowance (the memory exists): the identity's
    /// next connections, streams and subscriptions are refused instead.
    pub fn finished(&self, n: usize) {
        let mut c = self.lingering.lock();
        let to = c.held.saturating_add(n).min(self.cap);
        if to > c.held {
            self.account.force(to - c.held);
            c.held = to;
        }
    }

    /// Bytes charged for finished streams.
    #[cfg(test)]
    pub(crate) fn lingering(&self) -> usize {
        self.lingering.lock().held
    }
}

/// A stream's responses from before they are encoded until HTTP/2 takes them; shared by
/// the stream's task (which admits them) and its response body (which releases them).
#[derive(Debug)]
pub struct Queued {
    account: Arc<Account>,
    held: AtomicUsize,
}

impl Queued {
    /// Nothing queued yet on `account`.
    pub fn new(account: Arc<Account>) -> Arc<Self> {
        Arc::new(Queued {
            account,
            held: AtomicUsize::new(0),
        })
    }

    /// Bytes queued.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Charges a response of `n` bytes once the identity and the budget have room
    /// (under their lines plus the response reserve); false if `gone` says the stream
    /// ended meanwhile.
    pub(crate) async fn admit(&self, n: usize, gone: impl Fn() -> bool) -> bool {
        let mut wait = QUEUE_RETRY.0;
        loop {
            if self.account.take_queued(n) {
                self.held.fetch_add(n, Ordering::AcqRel);
                return true;
            }
            if gone() {
                return false;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(QUEUE_RETRY.1);
        }
    }

    /// `n` bytes were handed to HTTP/2.
    pub(crate) fn release(&self, n: usize) {
        let n = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(h.saturating_sub(n))
            })
            .map(|h| h.min(n))
            .unwrap_or(0);
        self.account.give(n);
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.account.give(*self.held.get_mut());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn budget(total: usize, share: usize, per_pod: usize) -> Arc<Budget> {
        Budget::new(
            BudgetConfig {
                total,
                share,
                per_pod,
            },
            Gauge::default(),
        )
    }

    #[test]
    fn charges_hold_per_identity_and_in_all_and_are_given_back_when_dropped() {
        let gauge = Gauge::default();
        let b = Budget::new(
            BudgetConfig {
                total: 1000,
                share: 400,
                per_pod: 0,
            },
            gauge.clone(),
        );
        let a = b.account("spiffe://td/ns/a/sa/x", None);
        let mut c1 = Charge::new(a.clone());
        c1.resize(300).expect("within the share");
        let mut c2 = Charge::new(a.clone());
        let err = c2.resize(101).expect_err("over the share");
        assert_eq!(err.limit(), "identity_memory");
        assert_eq!(err.identity(), "spiffe://td/ns/a/sa/x");
        assert!(
            err.to_string().contains("--identity-memory-share 400"),
            "{err}"
        );
        assert_eq!((c2.held(), a.used(), b.used()), (0, 300, 300));
        c2.resize(100).expect("exactly the share");
        // Another identity has its own share; the global budget holds for both.
        let other = b.account("spiffe://td/ns/b/sa/y", None);
        let mut c3 = Charge::new(other.clone());
        c3.resize(400).expect("its own share");
        let mut c4 = Charge::new(b.account("spiffe://td/ns/c/sa/z", None));
        let err = c4.resize(300).expect_err("over the global budget");
        assert_eq!(err.limit(), "memory_budget");
        assert!(err.to_string().contains("--xds-memory-budget"), "{err}");
        assert_eq!(b.used(), 800);
        assert_eq!(gauge.get(), 800);
        // Shrinking gives back; dropping gives back the rest.
        c1.resize(100).expect("shrinks");
        assert_eq!((a.used(), b.used()), (200, 600));
        drop(c1);
        drop(c2);
        assert_eq!((a.used(), b.used(), gauge.get()), (0, 400, 400));
        drop(c3);
        drop(other);
        assert_eq!(b.used(), 0);
        // Accounts go with their last holder.
        drop(c4);
        drop(a);
        assert_eq!(b.identities(), 0);
    }

    #[test]
    fn the_allowance_grows_with_the_identitys_live_pods_up_to_half_the_budget() {
        let b = budget(100 << 20, 1 << 20, 1 << 20);
        let fleet = b.account("spiffe://td/ns/prod/sa/web", Some("prod/web".into()));
        let lone = b.account("spiffe://td/ns/evil/sa/x", Some("evil/x".into()));
        assert_eq!(fleet.allowance(), (1 << 20, 0));
        b.set_pods([("prod/web".to_string(), 20), ("evil/x".to_string(), 1)].into());
        assert_eq!(fleet.allowance(), (21 << 20, 20));
        assert_eq!(lone.allowance(), (2 << 20, 1));
        // Twenty replicas' streams fit where one pod's would not.
        let mut c = Charge::new(fleet.clone());
        c.resize(20 << 20).expect("the fleet's allowance");
        assert!(Charge::new(lone.clone()).resize(3 << 20).is_err());
        b.set_pods([("prod/web".to_string(), 500)].into());
        assert_eq!(
            fleet.allowance(),
            (50 << 20, 500),
            "at most half the budget"
        );
        assert_eq!(lone.allowance(), (1 << 20, 0), "its pod is gone");
    }

    #[test]
    fn an_account_is_shared_by_the_holders_of_one_identity() {
        let b = budget(1 << 20, 1000, 0);
        let a1 = b.account("id", None);
        let a2 = b.account("id", None);
        assert!(Arc::ptr_eq(&a1, &a2));
        let mut c1 = Charge::new(a1);
        let mut c2 = Charge::new(a2);
        c1.resize(600).expect("ok");
        assert!(c2.resize(600).is_err(), "one allowance for both");
        assert_eq!(b.identities(), 1);
    }

    #[test]
    fn concurrent_charges_never_pass_the_allowance() {
        let b = budget(1 << 30, 10_000, 0);
        let a = b.account("id", None);
        let granted = AtomicUsize::new(0);
        let held: Vec<Charge> = std::thread::scope(|s| {
            // Each keeps what it was granted until every one is done.
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut held = Vec::new();
                        for _ in 0..1000 {
                            let mut c = Charge::new(a.clone());
                            if c.resize(7).is_ok() {
                                granted.fetch_add(7, Ordering::Relaxed);
                                held.push(c);
                            }
                        }
                        held
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(a.used(), granted.load(Ordering::Relaxed));
        assert!(granted.load(Ordering::Relaxed) <= 10_000);
        assert!(
            granted.load(Ordering::Relaxed) > 10_000 - 7,
            "up to the allowance"
        );
        drop(held);
        assert_eq!(a.used(), 0, "all given back when the holders dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn queued_responses_wait_for_room_and_are_never_refused() {
        let b = budget(8_000, 800, 0);
        let a = b.account("id", None);
        // What is refused can fill the allowance; a response still fits in the reserve.
        let mut held = Charge::new(a.clone());
        held.resize(800).expect("the whole share");
        let q = Queued::new(a.clone());
        assert!(
            q.admit(5_000, || false).await,
            "a response may cross the line"
        );
        assert_eq!((q.held(), a.used()), (5_000, 5_800));
        // Over the line plus the reserve: the next one waits until HTTP/2 takes some.
        let q2 = q.clone();
        let waiting = tokio::spawn(async move { q2.admit(100, || false).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "waits while over");
        q.release(5_000);
        assert!(waiting.await.expect("task"), "admitted once there is room");
        assert_eq!(a.used(), 900);
        // A stream that ends stops waiting.
        let mut big = Charge::new(b.account("other", None));
        big.resize(800).expect("ok");
        let other = Queued::new(b.account("other", None));
        assert!(other.admit(8_000, || false).await);
        let third = Queued::new(b.account("third", None));
        assert!(
            !third.admit(1, || true).await,
            "the budget's line plus its reserve holds for everyone"
        );
        drop(other);
        drop(q);
        assert_eq!(
            a.used(),
            800,
            "what is still queued is given back with the stream"
        );
    }

    #[test]
    fn finished_streams_stay_charged_to_their_connection_up_to_its_cap() {
        let b = budget(1 << 20, 1000, 0);
        let a = b.account("id", None);
        let conn = ConnAccount::new(a.clone(), 300);
        conn.finished(200);
        assert_eq!((conn.lingering(), a.used()), (200, 200));
        conn.finished(200);
        assert_eq!((conn.lingering(), a.used()), (300, 300), "at most the cap");
        // It counts against the identity: what it may still be refused.
        let mut c = Charge::new(a.clone());
        assert!(c.resize(701).is_err());
        c.resize(700).expect("the rest of the share");
        // Even over the allowance, what exists is charged.
        let other = ConnAccount::new(a.clone(), 500);
        other.finished(500);
        assert_eq!(a.used(), 1500);
        drop(other);
        drop(c);
        drop(conn);
        assert_eq!(b.used(), 0, "given back when the connection goes");
    }
}
