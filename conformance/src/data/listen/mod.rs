//! Listeners: binds what the snapshot lists (rebinding only what changed), accepts,
//! takes the original destination under interception, chooses the filter chain as Envoy
//! does, terminates TLS, and hands the connection to its terminal filter; and drains
//! the connections of listeners and filter chains that an update changed or removed.
//!
//! The manager ([`run`]) keeps the bound sockets equal to the snapshot's listeners: a
//! new listener is bound (`SO_REUSEADDR`, backlog [`BACKLOG`]); one whose address did
//! not change keeps its socket and takes its new configuration as a new `Version`
//! (`version`), under which its accept loop accepts every later connection; a removed
//! one stops accepting. A snapshot whose listener map is the same `Arc` (an endpoint
//! change, say) does not touch listeners, and a listener equal to the running one (a
//! state-of-the-world resend) is no update. A new listener is bound only once the
//! secrets its TLS chains name are held (Envoy's warming; until then its port refuses
//! connections), so a secret change is looked at while one waits; a bound listener
//! takes a new configuration at once. A listener that cannot bind is recorded in
//! [`Shared::errors`] (for the xDS client to NACK it) and counted in
//! `listener_manager.listener_create_failure`; the others are unaffected, and it is
//! retried when its configuration changes.
//!
//! Draining, as Envoy's: a connection keeps the configuration it was accepted under,
//! so when an update changes its filter chain (only the changed chains when nothing
//! but chains changed, Envoy's in-place update; every chain when the listener's own
//! settings changed), or removes or moves its listener, or the manager stops, its
//! chain's [`Drain`] starts: an HTTP/1 connection's next response carries
//! `connection: close`, an HTTP/2 connection gets GOAWAY, and whatever is still open
//! when the drain time ([`Limits::drain_time`], `--drain-time-s`) is over is closed,
//! `tcp_proxy` connections and CONNECT tunnels included. So a new policy (an RBAC
//! filter's rules) reaches every connection within the drain time.
//!
//! Limits (see [`Limits`]): connections per listener (16,384 by default; beyond that a
//! new connection is closed and counted in `listener.ADDR.downstream_cx_overflow`), the
//! TLS inspection deadline (Envoy's `listener_filters_timeout`, 15 s, after which the
//! connection is closed as Envoy does without `continue_on_listener_filters_timeout`),
//! and the TLS handshake deadline (10 s). A peer sending garbage fails inspection, chain
//! selection or the handshake and is closed; every connection is its own task, so it
//! affects no other.

mod chain;
mod conn;
mod inspect;
mod origdst;
pub(crate) mod shared;
mod tcp;
mod version;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::listener::Listener;
use crate::config::secret::Secret;
use crate::config::{Snapshot, TypeMap};
use crate::data::ctx::Ctx;
use crate::data::drain::Drain;

pub use chain::{ConnFacts, is_local, select};
pub use inspect::{Inspected, MAX_RECORD, Prefixed, inspect, verdict};
pub use origdst::original_dst;
pub use shared::{BindError, Limits, Shared, stat_prefix};
pub use tcp::{DEFAULT_IDLE, pipe};
use version::Version;

/// The listen backlog of every listener.
pub const BACKLOG: i32 = 1024;

/// Keeps the bound listeners equal to the snapshot's until the stop signal.
pub async fn run(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut changes = ctx.live.subscribe();
    let mut manager = Manager::default();
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        // The number first, then the snapshot: the snapshot is at least that new.
        let version = *changes.borrow_and_update();
        let snapshot = ctx.live.load();
        manager.reconcile(&ctx, &snapshot).await;
        let failed = ctx
            .listener_errors()
            .into_iter()
            .map(|e| {
                (
                    e.listener,
                    format!("cannot bind {}: {}", e.address, e.message),
                )
            })
            .collect();
        ctx.live.report_binds(version, failed);
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            r = stop.changed() => if r.is_err() { break },
        }
    }
    manager.close_all(&ctx).await;
}

struct Bound {
    address: SocketAddr,
    /// The snapshot's value last seen (equal to the version's, or the same).
    config: Arc<Listener>,
    /// What the accept loop accepts under.
    version: Arc<ArcSwap<Version>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Manager {
    bound: BTreeMap<String, Bound>,
    seen: Option<TypeMap<Listener>>,
    seen_secrets: Option<TypeMap<Secret>>,
    /// Listeners whose last bind failed, with the configuration tried.
    failed: BTreeMap<String, Arc<Listener>>,
    /// New listeners waiting for the secrets their chains name.
    warming: BTreeSet<String>,
}

/// Whether every secret `listener`'s chains name is held: a new listener is bound only
/// then (Envoy's listener warming); a bound one takes a new configuration at once.
fn warm(listener: &Listener, snapshot: &Snapshot) -> bool {
    listener
        .chains
        .iter()
        .chain(&listener.default_chain)
        .filter_map(|c| c.tls.as_ref())
        .all(|t| {
            snapshot.secret(&t.certificate.name).is_some()
                && t.validation
                    .as_ref()
                    .is_none_or(|v| snapshot.secret(&v.trust.name).is_some())
        })
}

impl Manager {
    async fn reconcile(&mut self, ctx: &Arc<Ctx>, snapshot: &Snapshot) {
        let wanted = &snapshot.listeners;
        let same_listeners = self.seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, wanted));
        let same_secrets = self
            .seen_secrets
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &snapshot.secrets));
        if same_listeners && (self.warming.is_empty() || same_secrets) {
            return;
        }
        self.seen = Some(wanted.clone());
        self.seen_secrets = Some(snapshot.secrets.clone());
        self.warming.clear();
        let gone: Vec<String> = self
            .bound
            .iter()
            .filter(|(name, b)| wanted.get(*name).is_none_or(|l| l.address != b.address))
            .map(|(name, _)| name.clone())
            .collect();
        let mut moved = BTreeSet::new();
        for name in gone {
            if wanted.contains_key(&name) {
                moved.insert(name.clone());
            } else {
                ctx.stats.counter("listener_manager.listener_removed").inc();
            }
            if let Some(b) = self.bound.remove(&name) {
                close(ctx, b).await;
            }
        }
        self.failed.retain(|name, _| wanted.contains_key(name));
        ctx.listeners
            .errors
            .lock()
            .retain(|name, _| wanted.contains_key(name));
        for (name, listener) in wanted.iter() {
            if let Some(b) = self.bound.get_mut(name) {
                if !Arc::ptr_eq(&b.config, listener) {
                    b.config = listener.clone();
                    update(ctx, b, listener);
                }
                continue;
            }
            if self
                .failed
                .get(name)
                .is_some_and(|f| Arc::ptr_eq(f, listener))
            {
                continue;
            }
            if !warm(listener, snapshot) {
                self.warming.insert(name.clone());
                continue;
            }
            match bind(listener.address) {
                Ok(socket) => {
                    self.failed.remove(name);
                    ctx.listeners.errors.lock().remove(name);
                    let counter = if moved.contains(name) {
                        "listener_manager.listener_modified"
                    } else {
                        "listener_manager.listener_added"
                    };
                    ctx.stats.counter(counter).inc();
                    self.bound
                        .insert(name.clone(), start(ctx, name, listener, socket));
                }
                Err(e) => {
                    let err = BindError {
                        listener: name.clone(),
                        address: listener.address,
                        message: e.to_string(),
                    };
                    tracing::warn!("{err}");
                    ctx.stats
                        .counter("listener_manager.listener_create_failure")
                        .inc();
                    ctx.listeners.errors.lock().insert(name.clone(), err);
                    self.failed.insert(name.clone(), listener.clone());
                }
            }
        }
        self.set_active(ctx);
    }

    fn set_active(&self, ctx: &Ctx) {
        let n = i64::try_from(self.bound.len()).unwrap_or(i64::MAX);
        ctx.stats
            .gauge("listener_manager.total_listeners_active")
            .set(n);
    }

    async fn close_all(&mut self, ctx: &Ctx) {
        for (_, b) in std::mem::take(&mut self.bound) {
            close(ctx, b).await;
        }
        self.set_active(ctx);
    }
}

/// Takes `listener` as the new configuration of the bound `b` (same address): unless it
/// equals the running one, new connections are accepted under a new version, and the
/// connections of the chains it changed or removed drain.
fn update(ctx: &Ctx, b: &Bound, listener: &Arc<Listener>) {
    let Some(up) = b.version.load().update(listener.clone()) else {
        return; // the same configuration again: nothing changes, nothing drains
    };
    ctx.stats
        .counter("listener_manager.listener_modified")
        .inc();
    if up.in_place {
        ctx.stats
            .counter("listener_manager.listener_in_place_updated")
            .inc();
    }
    // New connections first, then the old ones are told.
    b.version.store(Arc::new(up.version));
    start_drains(ctx, &listener.name, &up.retired, !up.in_place);
}

/// Starts `drains` (chains of listener `name`; `whole`: all of them, the listener goes
/// or is replaced), counted as Envoy does until their deadline: in
/// `listener_manager.total_listeners_draining` (`whole`), else
/// `listener_manager.total_filter_chains_draining` (per chain).
fn start_drains(ctx: &Ctx, name: &str, drains: &[Drain], whole: bool) {
    let time = ctx.listeners.limits().drain_time;
    let started: Vec<Drain> = drains.iter().filter(|d| d.start(time)).cloned().collect();
    let Some(first) = started.first().cloned() else {
        return;
    };
    tracing::info!(listener = %name, chains = started.len(), drain_s = time.as_secs(), "draining");
    let (gauge, n) = if whole {
        ("listener_manager.total_listeners_draining", 1)
    } else {
        let n = i64::try_from(started.len()).unwrap_or(i64::MAX);
        ("listener_manager.total_filter_chains_draining", n)
    };
    let gauge = ctx.stats.gauge(gauge);
    gauge.add(n);
    // They started together: they end together.
    tokio::spawn(async move {
        first.closed().await;
        gauge.add(-n);
    });
}

/// Stops a listener's accept loop, waits until its socket is closed, and drains its
/// connections.
async fn close(ctx: &Ctx, b: Bound) {
    let _ = b.stop.send(true);
    let _ = b.task.await;
    let version = b.version.load();
    start_drains(ctx, &version.listener.name, version.drains(), true);
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // As Envoy without `ipv4_compat`: `[::]` takes IPv6 only.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Starts the accept loop of `listener`, held under `name` in the snapshot.
fn start(ctx: &Arc<Ctx>, name: &str, listener: &Arc<Listener>, socket: TcpListener) -> Bound {
    let (stop, stopped) = watch::channel(false);
    let version = Arc::new(ArcSwap::from_pointee(Version::new(listener.clone())));
    let task = tokio::spawn(accept_loop(
        ctx.clone(),
        Arc::from(name),
        Arc::clone(&version),
        socket,
        stopped,
    ));
    Bound {
        address: listener.address,
        config: listener.clone(),
        version,
        stop,
        task,
    }
}

async fn accept_loop(
    ctx: Arc<Ctx>,
    name: Arc<str>,
    version: Arc<ArcSwap<Version>>,
    socket: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let address = version.load().listener.address;
    let prefix = stat_prefix(address);
    let total = ctx.stats.counter(&format!("{prefix}.downstream_cx_total"));
    let overflow = ctx
        .stats
        .counter(&format!("{prefix}.downstream_cx_overflow"));
    let active = ctx.stats.gauge(&format!("{prefix}.downstream_cx_active"));
    let slots = Arc::new(Semaphore::new(ctx.listeners.limits().max_connections));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = socket.accept() => match r {
                Ok((stream, peer)) => {
                    total.inc();
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        overflow.inc();
                        continue;
                    };
                    let (ctx, name, active) = (ctx.clone(), name.clone(), active.clone());
                    // The version it is accepted under, kept to its end.
                    let version = version.load_full();
                    active.add(1);
                    tokio::spawn(async move {
                        conn::handle(ctx, name, version, stream, peer).await;
                        active.add(-1);
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
