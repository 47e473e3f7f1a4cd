//! Clusters at run time: endpoint choice (round robin, least request, locality
//! priority), connections to an endpoint (plain or mTLS as its transport match says),
//! and HTTP/1.1 and HTTP/2 connection pools per endpoint.
//!
//! State is kept per cluster name and survives snapshots: a new load assignment keeps
//! the pools of endpoints that stay and drops those of removed endpoints (their idle
//! connections close; busy ones finish their requests first).

mod lb;
mod pool;
mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Snapshot;
use crate::config::cluster::{Cluster, Discovery, LoadAssignment};
use crate::data::Ctx;

pub(crate) use pool::{Body, BoxError, SendError, send};

/// A byte stream to an upstream endpoint (TCP, maybe TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connected upstream byte stream.
pub type UpstreamIo = Pin<Box<dyn Io>>;

/// Why no upstream connection was made.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The cluster is not held.
    #[error("no cluster {0}")]
    NoCluster(String),
    /// It has no healthy endpoint.
    #[error("no healthy upstream in {0}")]
    NoHealthyUpstream(String),
    /// Connecting failed.
    #[error("connect to {addr} failed: {reason}")]
    ConnectFailure {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Which endpoint a connection goes to.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The cluster's load balancer picks.
    Balanced,
    /// This address (an original-destination cluster).
    Address(SocketAddr),
}

/// A cluster's definition and the run-time state made for it.
type Held = (Arc<Cluster>, Arc<ClusterState>);

/// Pools and balancer state, per cluster and endpoint.
#[derive(Debug, Default)]
pub struct Upstreams {
    /// By name: the cluster definition the state was made for, and the state.
    clusters: Mutex<HashMap<String, Held>>,
    /// The snapshot's cluster map last pruned against.
    seen: Mutex<usize>,
}

impl Upstreams {
    /// The run-time state of `cluster` (the definition a request's snapshot holds). A
    /// changed definition gets fresh state (its old pools drain as their requests
    /// finish, as Envoy drains an updated cluster's pools); clusters the `current`
    /// (live) snapshot no longer holds are dropped. Pruning only against the live
    /// snapshot keeps an old in-flight request from dropping newly added clusters.
    pub(crate) fn state(&self, current: &Snapshot, cluster: &Arc<Cluster>) -> Arc<ClusterState> {
        let mut clusters = self.clusters.lock();
        let map = Arc::as_ptr(&current.clusters) as usize;
        {
            let mut seen = self.seen.lock();
            if *seen != map {
                *seen = map;
                clusters.retain(|name, _| current.clusters.contains_key(name));
            }
        }
        match clusters.get_mut(&cluster.name) {
            Some((def, state)) if Arc::ptr_eq(def, cluster) => Arc::clone(state),
            // The same definition again (a state-of-the-world update of other clusters).
            Some((def, state)) if same_definition(def, cluster) => {
                *def = Arc::clone(cluster);
                Arc::clone(state)
            }
            _ => {
                let state = Arc::new(ClusterState::default());
                clusters.insert(
                    cluster.name.clone(),
                    (Arc::clone(cluster), Arc::clone(&state)),
                );
                state
            }
        }
    }
}

/// Whether two cluster definitions are equal (compared in full, only when a snapshot
/// brings a new value).
fn same_definition(a: &Cluster, b: &Cluster) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Original-destination endpoints kept before idle ones are dropped.
const MAX_ADDRESS_ENDPOINTS: usize = 1024;

/// One cluster's balancer state, request counts and endpoint pools.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    /// Upstream requests in flight (tries, retries among them).
    pub(crate) active_requests: AtomicU64,
    /// Retries in flight.
    pub(crate) active_retries: AtomicU64,
    tick: AtomicU64,
    /// Endpoint state by (address, transport index).
    endpoints: Mutex<HashMap<(SocketAddr, usize), Arc<pool::EndpointState>>>,
    /// Identity of the load assignment last balanced over.
    seen: Mutex<usize>,
}

/// A counted in-flight value, decremented on drop.
#[derive(Debug)]
pub(crate) struct Active(Arc<ClusterState>, bool);

impl Active {
    /// Counts one request (and a retry, with `retry`) on `state`.
    pub(crate) fn start(state: &Arc<ClusterState>, retry: bool) -> Self {
        state.active_requests.fetch_add(1, Ordering::Relaxed);
        if retry {
            state.active_retries.fetch_add(1, Ordering::Relaxed);
        }
        Active(Arc::clone(state), retry)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
        if self.1 {
            self.0.active_retries.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The endpoint a request or connection goes to.
#[derive(Debug)]
pub(crate) struct Chosen {
    pub(crate) addr: SocketAddr,
    pub(crate) transport: usize,
    pub(crate) state: Arc<pool::EndpointState>,
}

impl ClusterState {
    fn endpoint(&self, addr: SocketAddr, transport: usize) -> Arc<pool::EndpointState> {
        let mut eps = self.endpoints.lock();
        if eps.len() >= MAX_ADDRESS_ENDPOINTS {
            eps.retain(|_, e| e.busy());
        }
        Arc::clone(
            eps.entry((addr, transport))
                .or_insert_with(|| Arc::new(pool::EndpointState::new(addr))),
        )
    }

    /// Drops the pools of endpoints `la` no longer lists, once per new assignment.
    fn follow(&self, la: &LoadAssignment) {
        let id = std::ptr::from_ref(la) as usize;
        let mut seen = self.seen.lock();
        if *seen == id {
            return;
        }
        *seen = id;
        let keep: std::collections::HashSet<SocketAddr> =
            la.endpoints().map(|e| e.address).collect();
        self.endpoints.lock().retain(|(a, _), _| keep.contains(a));
    }
}

/// The endpoint of `cluster` for `target`.
pub(crate) async fn choose(
    snapshot: &Snapshot,
    cluster: &Cluster,
    state: &ClusterState,
    target: Target,
) -> Result<Chosen, UpstreamError> {
    if let Target::Address(addr) = target {
        return Ok(Chosen {
            addr,
            transport: 0,
            state: state.endpoint(addr, 0),
        });
    }
    let la = match &cluster.discovery {
        Discovery::Static(la) => la,
        Discovery::Eds { service_name } => snapshot
            .endpoints(service_name)
            .map(|a| a.as_ref())
            .ok_or_else(|| UpstreamError::NoHealthyUpstream(cluster.name.clone()))?,
        Discovery::Dns { host, port } => {
            // The first address, IPv4 preferred (Rudder's `dns_lookup_family`).
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map(Iterator::collect)
                .unwrap_or_default();
            let addr = addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
                .ok_or_else(|| UpstreamError::NoHealthyUpstream(cluster.name.clone()))?;
            return Ok(Chosen {
                addr,
                transport: 0,
                state: state.endpoint(addr, 0),
            });
        }
        Discovery::OriginalDst { .. } => {
            return Err(UpstreamError::NoHealthyUpstream(cluster.name.clone()));
        }
    };
    state.follow(la);
    let tier = lb::healthy_tier(la);
    let tick = state.tick.fetch_add(1, Ordering::Relaxed);
    let rand2 = (
        rand::random::<u32>() as usize,
        rand::random::<u32>() as usize,
    );
    let active = |e: &crate::config::cluster::Endpoint| {
        let t = transport::transport_index(cluster, &e.transport_match);
        state.endpoint(e.address, t).active()
    };
    let ep = lb::pick(cluster.lb, &tier, tick, active, rand2)
        .ok_or_else(|| UpstreamError::NoHealthyUpstream(cluster.name.clone()))?;
    let t = transport::transport_index(cluster, &ep.transport_match);
    Ok(Chosen {
        addr: ep.address,
        transport: t,
        state: state.endpoint(ep.address, t),
    })
}

/// Opens a byte stream to an endpoint of `cluster` (for `tcp_proxy` and CONNECT).
pub async fn connect(
    ctx: &Ctx,
    snapshot: &Snapshot,
    cluster: &str,
    target: Target,
) -> Result<(SocketAddr, UpstreamIo), UpstreamError> {
    let c = snapshot
        .cluster(cluster)
        .ok_or_else(|| UpstreamError::NoCluster(cluster.to_string()))?;
    let state = ctx.upstream.state(&ctx.live.load(), c);
    let chosen = choose(snapshot, c, &state, target).await?;
    let io = transport::dial(ctx, snapshot, c, chosen.addr, chosen.transport).await?;
    Ok((chosen.addr, io))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::config::cluster::{LbPolicy, Transport, UpstreamProtocol};

    fn def(name: &str, protocol: UpstreamProtocol) -> Arc<Cluster> {
        Arc::new(Cluster {
            name: name.into(),
            discovery: Discovery::Eds {
                service_name: name.into(),
            },
            lb: LbPolicy::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            transport: Transport::Plain,
            transport_matches: vec![],
            protocol,
            retry_budget: None,
            max_requests_per_connection: None,
        })
    }

    fn snap(clusters: &[&Arc<Cluster>]) -> Snapshot {
        let map: BTreeMap<String, Arc<Cluster>> = clusters
            .iter()
            .map(|c| (c.name.clone(), Arc::clone(c)))
            .collect();
        Snapshot {
            clusters: Arc::new(map),
            ..Default::default()
        }
    }

    #[test]
    fn state_survives_equal_definitions_and_not_changed_or_removed_ones() {
        let u = Upstreams::default();
        let a = def("a", UpstreamProtocol::Http1);
        let b = def("b", UpstreamProtocol::Http1);
        let s1 = snap(&[&a, &b]);
        let first = u.state(&s1, &a);
        let b_first = u.state(&s1, &b);
        assert!(Arc::ptr_eq(&first, &u.state(&s1, &a)));
        let a_again = def("a", UpstreamProtocol::Http1);
        let s2 = snap(&[&a_again, &b]);
        assert!(
            Arc::ptr_eq(&first, &u.state(&s2, &a_again)),
            "same definition"
        );
        let a_h2 = def("a", UpstreamProtocol::Http2);
        let s3 = snap(&[&a_h2]);
        assert!(
            !Arc::ptr_eq(&first, &u.state(&s3, &a_h2)),
            "changed definition"
        );
        assert_eq!(u.clusters.lock().len(), 1, "b was dropped with its pools");
        assert!(!Arc::ptr_eq(&b_first, &u.state(&s1, &b)));
    }

    #[tokio::test]
    async fn an_old_snapshots_request_keeps_newer_clusters_state() {
        let ctx = crate::data::Ctx::new(Arc::default(), Arc::default());
        let a = def("a", UpstreamProtocol::Http1);
        let b = def("b", UpstreamProtocol::Http1);
        let old = snap(&[&a]);
        ctx.live.publish(snap(&[&a, &b]));
        let b_state = ctx.upstream.state(&ctx.live.load(), &b);
        // A request still holding the snapshot from before `b` was added.
        let _ = connect(&ctx, &old, "a", Target::Balanced).await;
        assert!(
            Arc::ptr_eq(&b_state, &ctx.upstream.state(&ctx.live.load(), &b)),
            "b's state (pools, balancer) survives"
        );
    }
}
