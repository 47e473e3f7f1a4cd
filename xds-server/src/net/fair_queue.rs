//! A fair queue of permits between peers (source addresses by default, or any key such
//! as an identity): at most `total` permits
//! out at once and at most `per_peer` to one peer; a caller over either cap waits in its
//! peer's queue (bounded) for at most a bounded time, and a freed permit goes to the
//! peers that wait in turn (round robin), so one address cannot hold every permit or
//! starve the others by queueing first. A waiter is of one of two [`Priority`] classes:
//! a freed permit goes to the first class's waiters (their peers in turn) before the
//! second's, except that after [`HIGH_BURST`] first-class grants in a row a second-class
//! waiter goes (so the second class is slowed, never starved); the caps are the same for
//! both.
//!
//! [`Core`] is the bookkeeping without clocks or channels (tested beside it);
//! [`FairQueue`] is the async shell that waits on it.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

/// The caps of one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// Permits out at once, in all.
    pub total: usize,
    /// Permits out at once to one peer.
    pub per_peer: usize,
    /// Callers of one peer waiting at once; more are refused at once.
    pub queue_per_peer: usize,
    /// Callers waiting at once, in all.
    pub queue_total: usize,
    /// Longest a caller waits.
    pub wait: Duration,
}

/// Why a caller got no permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Busy {
    /// The peer's queue (or the whole queue) is full.
    QueueFull,
    /// The caller waited the longest it may.
    Timeout,
}

impl Busy {
    /// A metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Busy::QueueFull => "queue_full",
            Busy::Timeout => "queue_timeout",
        }
    }
}

/// First-class grants in a row before a second-class waiter, if any may go, gets one.
pub(crate) const HIGH_BURST: usize = 4;

/// A waiter's class: `High` waiters are served before `Normal` ones ([`HIGH_BURST`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Priority {
    /// Served first.
    High,
    /// Served when no `High` waiter may be.
    Normal,
}

impl Priority {
    /// Both, in the order they are served.
    const ALL: [Priority; 2] = [Priority::High, Priority::Normal];

    fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
        }
    }
}

/// What [`Core::enqueue`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// A permit, counted now.
    Granted,
    /// Waiting, with this ticket (to cancel it).
    Waiting(u64),
    /// Refused at once.
    Full,
}

#[derive(Debug)]
struct Peer<W> {
    out: usize,
    /// Its waiters, per class ([`Priority::index`]).
    waiting: [VecDeque<(u64, W)>; 2],
}

impl<W> Default for Peer<W> {
    fn default() -> Self {
        Peer {
            out: 0,
            waiting: [VecDeque::new(), VecDeque::new()],
        }
    }
}

impl<W> Peer<W> {
    fn idle(&self) -> bool {
        self.out == 0 && self.waiting.iter().all(VecDeque::is_empty)
    }

    fn waiters(&self) -> usize {
        self.waiting.iter().map(VecDeque::len).sum()
    }
}

/// The bookkeeping: permits out per peer, waiters per peer, and whose turn is next.
#[derive(Debug)]
pub(crate) struct Core<W, K = IpAddr> {
    limits: QueueLimits,
    out: usize,
    waiting: usize,
    peers: HashMap<K, Peer<W>>,
    /// Peers with waiters of each class, in the order they are served.
    turn: [VecDeque<K>; 2],
    /// `High` grants since the last `Normal` one.
    high_streak: usize,
    next_ticket: u64,
}

impl<W, K: Hash + Eq + Clone> Core<W, K> {
    pub(crate) fn new(limits: QueueLimits) -> Self {
        Core {
            limits,
            out: 0,
            waiting: 0,
            peers: HashMap::new(),
            turn: [VecDeque::new(), VecDeque::new()],
            high_streak: 0,
            next_ticket: 0,
        }
    }

    /// Permits out now (in all, to `peer`).
    #[cfg(test)]
    pub(crate) fn out(&self, peer: K) -> (usize, usize) {
        (self.out, self.peers.get(&peer).map_or(0, |p| p.out))
    }

    /// A caller of `peer` asks; `waiter` is what it is reached by if it has to wait.
    pub(crate) fn enqueue(&mut self, peer: K, class: Priority, waiter: W) -> Enqueued {
        let l = self.limits;
        let p = self.peers.entry(peer.clone()).or_default();
        // Nobody of this peer is ahead of it and there is room: granted.
        if p.waiters() == 0 && p.out < l.per_peer && self.out < l.total {
            p.out += 1;
            self.out += 1;
            return Enqueued::Granted;
        }
        if p.waiters() >= l.queue_per_peer || self.waiting >= l.queue_total {
            if p.idle() {
                self.peers.remove(&peer);
            }
            return Enqueued::Full;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let queue = &mut p.waiting[class.index()];
        if queue.is_empty() {
            self.turn[class.index()].push_back(peer);
        }
        queue.push_back((ticket, waiter));
        self.waiting += 1;
        Enqueued::Waiting(ticket)
    }

    /// A waiter gave up: true if it was still waiting (false: it was already granted).
    pub(crate) fn cancel(&mut self, peer: K, ticket: u64) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        for class in Priority::ALL {
            let queue = &mut p.waiting[class.index()];
            let Some(i) = queue.iter().position(|(t, _)| *t == ticket) else {
                continue;
            };
            queue.remove(i);
            self.waiting -= 1;
            if queue.is_empty() {
                self.turn[class.index()].retain(|t| *t != peer);
            }
            if p.idle() {
                self.peers.remove(&peer);
            }
            return true;
        }
        false
    }

    /// A permit of `peer` comes back.
    pub(crate) fn release(&mut self, peer: K) {
        self.out = self.out.saturating_sub(1);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.out = p.out.saturating_sub(1);
            if p.idle() {
                self.peers.remove(&peer);
            }
        }
    }

    /// The next waiter to hand a permit to (counted to its peer now), if any may have one:
    /// the first class before the second (but see [`HIGH_BURST`]), peers in turn within a
    /// class, skipping those at their own cap.
    pub(crate) fn next(&mut self) -> Option<(K, W)> {
        if self.out >= self.limits.total {
            return None;
        }
        let order = if self.high_streak >= HIGH_BURST {
            [Priority::Normal, Priority::High]
        } else {
            Priority::ALL
        };
        let (class, next) = order
            .into_iter()
            .find_map(|class| self.next_of(class).map(|n| (class, n)))?;
        self.high_streak = match class {
            Priority::High => self.high_streak + 1,
            Priority::Normal => 0,
        };
        Some(next)
    }

    fn next_of(&mut self, class: Priority) -> Option<(K, W)> {
        let c = class.index();
        for _ in 0..self.turn[c].len() {
            let peer = self.turn[c].pop_front()?;
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            if p.out >= self.limits.per_peer {
                self.turn[c].push_back(peer);
                continue;
            }
            let Some((_, w)) = p.waiting[c].pop_front() else {
                continue;
            };
            p.out += 1;
            self.out += 1;
            self.waiting -= 1;
            if !p.waiting[c].is_empty() {
                self.turn[c].push_back(peer.clone());
            }
            return Some((peer, w));
        }
        None
    }
}

/// The async queue: [`FairQueue::acquire`] waits for a [`Permit`] that is returned when
/// dropped.
#[derive(Debug)]
pub(crate) struct FairQueue<K: Hash + Eq + Clone = IpAddr> {
    core: Mutex<Core<oneshot::Sender<Permit<K>>, K>>,
    wait: Duration,
}

/// One permit; returned (and handed to the next waiter) when dropped.
#[derive(Debug)]
pub(crate) struct Permit<K: Hash + Eq + Clone = IpAddr> {
    queue: Arc<FairQueue<K>>,
    peer: K,
}

impl<K: Hash + Eq + Clone> Drop for Permit<K> {
    fn drop(&mut self) {
        self.queue.release(self.peer.clone());
    }
}

impl<K: Hash + Eq + Clone> FairQueue<K> {
    pub(crate) fn new(limits: QueueLimits) -> Arc<Self> {
        Arc::new(FairQueue {
            core: Mutex::new(Core::new(limits)),
            wait: limits.wait,
        })
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Core<oneshot::Sender<Permit<K>>, K>> {
        self.core.lock()
    }

    fn release(self: &Arc<Self>, peer: K) {
        let mut core = self.lock();
        core.release(peer);
        // Hand freed permits on; a waiter that is gone drops its permit, which comes
        // back here (outside the lock).
        let mut handed = Vec::new();
        while let Some(next) = core.next() {
            handed.push(next);
        }
        drop(core);
        for (peer, tx) in handed {
            let _ = tx.send(Permit {
                queue: self.clone(),
                peer,
            });
        }
    }

    /// A permit for `peer`, waiting in its turn for at most the queue's wait.
    pub(crate) async fn acquire(self: &Arc<Self>, peer: K) -> Result<Permit<K>, Busy> {
        self.acquire_as(peer, Priority::Normal).await
    }

    /// A permit for `peer` as a waiter of `class`.
    pub(crate) async fn acquire_as(
        self: &Arc<Self>,
        peer: K,
        class: Priority,
    ) -> Result<Permit<K>, Busy> {
        let (tx, mut rx) = oneshot::channel();
        let enqueued = self.lock().enqueue(peer.clone(), class, tx);
        let ticket = match enqueued {
            Enqueued::Granted => {
                return Ok(Permit {
                    queue: self.clone(),
                    peer,
                });
            }
            Enqueued::Full => return Err(Busy::QueueFull),
            Enqueued::Waiting(t) => t,
        };
        // Cancels the ticket however this future ends (timeout, or the caller dropped).
        struct Ticket<'a, K: Hash + Eq + Clone> {
            queue: &'a FairQueue<K>,
            peer: K,
            ticket: u64,
        }
        impl<K: Hash + Eq + Clone> Drop for Ticket<'_, K> {
            fn drop(&mut self) {
                self.queue.lock().cancel(self.peer.clone(), self.ticket);
            }
        }
        let _ticket = Ticket {
            queue: self,
            peer,
            ticket,
        };
        match tokio::time::timeout(self.wait, &mut rx).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Busy::Timeout),
            Err(_) => {
                // Granted just now? Then the permit is ours to return (dropping it does).
                rx.close();
                match rx.try_recv() {
                    Ok(permit) => Ok(permit),
                    Err(_) => Err(Busy::Timeout),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: Priority = Priority::Normal;

    fn limits() -> QueueLimits {
        QueueLimits {
            total: 3,
            per_peer: 2,
            queue_per_peer: 2,
            queue_total: 3,
            wait: Duration::from_millis(200),
        }
    }

    /// Room to queue; peer 1 holds its two permits, one of three is free.
    fn peer_one_at_its_cap() -> Core<&'static str> {
        let mut c = Core::new(QueueLimits {
            queue_total: 10,
            queue_per_peer: 4,
            ..limits()
        });
        for w in ["a1", "a2"] {
            assert_eq!(c.enqueue(ip(1), N, w), Enqueued::Granted);
        }
        c
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn one_peer_gets_at_most_its_share_and_waits_in_a_bounded_queue() {
        let mut c: Core<&str> = Core::new(limits());
        assert_eq!(c.enqueue(ip(1), N, "a1"), Enqueued::Granted);
        assert_eq!(c.enqueue(ip(1), N, "a2"), Enqueued::Granted);
        // Its cap reached while the total is not: it waits, the others do not.
        assert!(matches!(c.enqueue(ip(1), N, "a3"), Enqueued::Waiting(_)));
        assert!(matches!(c.enqueue(ip(1), N, "a4"), Enqueued::Waiting(_)));
        assert_eq!(
            c.enqueue(ip(1), N, "a5"),
            Enqueued::Full,
            "its queue is full"
        );
        assert_eq!(c.enqueue(ip(2), N, "b1"), Enqueued::Granted);
        assert_eq!(c.out(ip(1)), (3, 2));
    }

    #[test]
    fn freed_permits_go_round_robin_between_waiting_peers() {
        let mut c = peer_one_at_its_cap();
        assert_eq!(c.enqueue(ip(2), N, "b1"), Enqueued::Granted);
        // Full: the first peer queued three before the others queued one each.
        for w in ["a3", "a4", "a5"] {
            assert!(matches!(c.enqueue(ip(1), N, w), Enqueued::Waiting(_)));
        }
        assert!(matches!(c.enqueue(ip(2), N, "b2"), Enqueued::Waiting(_)));
        assert!(matches!(c.enqueue(ip(3), N, "c1"), Enqueued::Waiting(_)));
        let mut order = Vec::new();
        // Every permit that comes back goes to the next peer in turn.
        c.release(ip(2));
        order.extend(c.next().map(|(_, w)| w)); // a is at its cap: b2
        c.release(ip(1));
        order.extend(c.next().map(|(_, w)| w)); // c1 (a had its turn skipped, c is next)
        c.release(ip(1));
        order.extend(c.next().map(|(_, w)| w)); // a3
        c.release(ip(2));
        order.extend(c.next().map(|(_, w)| w)); // a4
        assert_eq!(order, ["b2", "c1", "a3", "a4"]);
        assert_eq!(c.next(), None, "nothing more is free");
    }

    #[test]
    fn a_cancelled_waiter_leaves_no_trace() {
        let mut c: Core<&str> = Core::new(limits());
        c.enqueue(ip(1), N, "a1");
        c.enqueue(ip(1), N, "a2");
        let Enqueued::Waiting(t) = c.enqueue(ip(1), N, "a3") else {
            panic!("waits")
        };
        assert!(c.cancel(ip(1), t));
        assert!(!c.cancel(ip(1), t), "only once");
        c.release(ip(1));
        assert_eq!(c.next(), None);
        c.release(ip(1));
        assert!(c.peers.is_empty() && c.turn.iter().all(VecDeque::is_empty) && c.waiting == 0);
        assert_eq!(c.out(ip(1)), (0, 0));
    }

    #[test]
    fn high_priority_waiters_go_first_within_the_same_caps() {
        let mut c = peer_one_at_its_cap();
        assert_eq!(c.enqueue(ip(2), N, "b1"), Enqueued::Granted);
        // Normal waiters queued first; high ones after them, of two peers.
        assert!(matches!(c.enqueue(ip(2), N, "b2"), Enqueued::Waiting(_)));
        assert!(matches!(c.enqueue(ip(3), N, "c1"), Enqueued::Waiting(_)));
        assert!(matches!(
            c.enqueue(ip(1), Priority::High, "A3"),
            Enqueued::Waiting(_)
        ));
        assert!(matches!(
            c.enqueue(ip(3), Priority::High, "C2"),
            Enqueued::Waiting(_)
        ));
        let mut order = Vec::new();
        c.release(ip(2));
        // a is at its cap: its high waiter is skipped, c's is next.
        order.extend(c.next().map(|(_, w)| w));
        c.release(ip(1));
        order.extend(c.next().map(|(_, w)| w));
        c.release(ip(3));
        order.extend(c.next().map(|(_, w)| w));
        c.release(ip(1));
        order.extend(c.next().map(|(_, w)| w));
        assert_eq!(order, ["C2", "A3", "b2", "c1"]);
        assert_eq!(c.next(), None);
        // A high waiter still counts against its peer's queue.
        let Enqueued::Waiting(t) = c.enqueue(ip(1), Priority::High, "A4") else {
            panic!("waits")
        };
        assert!(c.cancel(ip(1), t));
        assert!(c.turn[0].is_empty(), "no turn left for a cancelled class");
    }

    #[test]
    fn high_waiters_keep_their_peers_cap() {
        let mut c = peer_one_at_its_cap();
        assert!(
            matches!(c.enqueue(ip(1), Priority::High, "A3"), Enqueued::Waiting(_)),
            "at its peer's cap, though a permit is free"
        );
        assert_eq!(c.next(), None, "the free permit is not its");
        assert_eq!(c.enqueue(ip(2), N, "b1"), Enqueued::Granted);
    }

    #[test]
    fn normal_waiters_are_slowed_by_high_ones_never_starved() {
        let mut c: Core<&str> = Core::new(QueueLimits {
            total: 1,
            per_peer: 1,
            queue_per_peer: 20,
            queue_total: 20,
            ..limits()
        });
        assert_eq!(c.enqueue(ip(1), N, "first"), Enqueued::Granted);
        assert!(matches!(c.enqueue(ip(2), N, "n1"), Enqueued::Waiting(_)));
        let high: Vec<String> = (0..8).map(|i| format!("h{i}")).collect();
        for h in &high {
            assert!(matches!(
                c.enqueue(ip(3), Priority::High, h.as_str()),
                Enqueued::Waiting(_)
            ));
        }
        let mut order = Vec::new();
        let mut holder = ip(1);
        for _ in 0..6 {
            c.release(holder);
            let (peer, w) = c.next().expect("a waiter goes");
            holder = peer;
            order.push(w);
        }
        assert_eq!(order, ["h0", "h1", "h2", "h3", "n1", "h4"]);
    }

    #[tokio::test]
    async fn waiters_time_out_and_permits_are_handed_on_when_dropped() {
        let q = FairQueue::new(limits());
        let a1 = q.acquire(ip(1)).await.expect("granted");
        let a2 = q.acquire(ip(1)).await.expect("granted");
        // Over its cap: waits the bounded time, then gives up.
        let started = tokio::time::Instant::now();
        assert_eq!(q.acquire(ip(1)).await.err(), Some(Busy::Timeout));
        assert!(started.elapsed() >= Duration::from_millis(200));
        // A waiter gets the permit another drops.
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.acquire(ip(1)).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a1);
        assert_eq!(waiter.await.expect("join"), Ok(()));
        // Everything came back: a new peer gets all the room there is.
        drop(a2);
        let b: Vec<Permit> = vec![
            q.acquire(ip(2)).await.expect("b1"),
            q.acquire(ip(2)).await.expect("b2"),
            q.acquire(ip(3)).await.expect("c1"),
        ];
        assert_eq!(q.lock().out(ip(2)), (3, 2));
        drop(b);
        assert_eq!(q.lock().out(ip(2)), (0, 0));
    }
}
