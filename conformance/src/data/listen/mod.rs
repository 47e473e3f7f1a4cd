//! Listeners: binds what the snapshot lists (rebinding only what changed), accepts,
//! takes the original destination under interception, chooses the filter chain as Envoy
//! does, terminates TLS, and hands the connection to its terminal filter.
//!
//! The manager ([`run`]) keeps the bound sockets equal to the snapshot's listeners: a
//! new listener is bound (`SO_REUSEADDR`, backlog [`BACKLOG`]); one whose address did
//! not change keeps its socket, and since its accept loop reads the current `Listener`
//! from the snapshot for every connection, its new configuration applies to new
//! connections at once; a removed one stops accepting (its open connections finish).
//! A snapshot whose listener map is the same `Arc` (an endpoint change, say) does not
//! touch listeners. A new listener is bound only once the secrets its TLS chains name
//! are held (Envoy's warming; until then its port refuses connections), so a secret
//! change is looked at while one waits; a bound listener takes a new configuration at
//! once. A listener that cannot bind is recorded in [`Shared::errors`] (for the xDS
//! client to NACK it) and counted in `listener_manager.listener_create_failure`; the
//! others are unaffected, and it is retried when its configuration changes.
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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::listener::Listener;
use crate::config::secret::Secret;
use crate::config::{Snapshot, TypeMap};
use crate::data::ctx::Ctx;

pub use chain::{ConnFacts, is_local, select};
pub use inspect::{Inspected, MAX_RECORD, Prefixed, inspect, verdict};
pub use origdst::original_dst;
pub use shared::{BindError, Limits, Shared, stat_prefix};
pub use tcp::{DEFAULT_IDLE, pipe};

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
    config: Arc<Listener>,
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
                close(b).await;
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
                    ctx.stats
                        .counter("listener_manager.listener_modified")
                        .inc();
                    b.config = listener.clone();
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
            close(b).await;
        }
        self.set_active(ctx);
    }
}

/// Stops a listener's accept loop and waits until its socket is closed.
async fn close(b: Bound) {
    let _ = b.stop.send(true);
    let _ = b.task.await;
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
    let task = tokio::spawn(accept_loop(
        ctx.clone(),
        Arc::from(name),
        listener.address,
        socket,
        stopped,
    ));
    Bound {
        address: listener.address,
        config: listener.clone(),
        stop,
        task,
    }
}

async fn accept_loop(
    ctx: Arc<Ctx>,
    name: Arc<str>,
    address: SocketAddr,
    socket: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
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
                    active.add(1);
                    tokio::spawn(async move {
                        conn::handle(ctx, name, address, stream, peer).await;
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
