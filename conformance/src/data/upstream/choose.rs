//! Endpoint choice: the endpoint of a cluster a request or connection goes to, by the
//! cluster's discovery and load-balancing policy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::endpoint::EndpointState;
use super::io::{Target, UpstreamError};
use super::state::ClusterState;
use super::{lb, transport};
use crate::config::Snapshot;
use crate::config::cluster::{Cluster, Discovery};

/// The endpoint a request or connection goes to.
#[derive(Debug)]
pub(crate) struct Chosen {
    pub(crate) addr: SocketAddr,
    pub(crate) transport: usize,
    pub(crate) state: Arc<EndpointState>,
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
