//! The run-time state of clusters, kept per cluster name across snapshots: request
//! counts, balancer ticks and endpoint pools (`Upstreams`, `ClusterState`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::endpoint::EndpointState;
use crate::config::Snapshot;
use crate::config::cluster::{Cluster, LoadAssignment};

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
    pub(super) tick: AtomicU64,
    /// Endpoint state by (address, transport index).
    endpoints: Mutex<HashMap<(SocketAddr, usize), Arc<EndpointState>>>,
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

impl ClusterState {
    pub(super) fn endpoint(&self, addr: SocketAddr, transport: usize) -> Arc<EndpointState> {
        let mut eps = self.endpoints.lock();
        if eps.len() >= MAX_ADDRESS_ENDPOINTS {
            eps.retain(|_, e| e.busy());
        }
        Arc::clone(
            eps.entry((addr, transport))
                .or_insert_with(|| Arc::new(EndpointState::new(addr))),
        )
    }

    /// Drops the pools of endpoints `la` no longer lists, once per new assignment.
    pub(super) fn follow(&self, la: &LoadAssignment) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::config::cluster::{Discovery, LbPolicy, Transport, UpstreamProtocol};

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
            source: Vec::new(),
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
        let ctx = crate::data::ctx::Ctx::new(Arc::default(), Arc::default());
        let a = def("a", UpstreamProtocol::Http1);
        let b = def("b", UpstreamProtocol::Http1);
        let old = snap(&[&a]);
        ctx.live.publish(snap(&[&a, &b]));
        let b_state = ctx.upstream.state(&ctx.live.load(), &b);
        // A request still holding the snapshot from before `b` was added.
        let _ = crate::data::upstream::connect::connect(
            &ctx,
            &old,
            "a",
            crate::data::upstream::io::Target::Balanced,
        )
        .await;
        assert!(
            Arc::ptr_eq(&b_state, &ctx.upstream.state(&ctx.live.load(), &b)),
            "b's state (pools, balancer) survives"
        );
    }
}
