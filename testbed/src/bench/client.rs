//! Simulated Envoy sidecars for the benchmark: each opens its own connection and one ADS
//! stream (delta or SotW), subscribes the way Envoy does (CDS and LDS wildcard, then EDS
//! for every cluster and RDS for the route its listener names, SDS by name; on delta,
//! VHDS when the route table asks for its virtual hosts apart, as Envoy 1.37+ does and
//! the server sends them), ACKs every response, and timestamps what it receives. They
//! share one core, so they read responses for what they act on and write their names from
//! pieces encoded once ([`super::wire`]).

use parking_lot::RwLock;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::wire::{
    DeltaRequest, LightDelta, LightResource, LightSotw, RawCodec, SotwRequest, encode_names,
};
use crate::xds_client::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, VIRTUAL_HOST, node};

/// What one simulated proxy has seen, updated as it goes.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Endpoint assignments received since connecting.
    pub eds: AtomicUsize,
    /// A route, listener and secret have arrived.
    pub rds: AtomicBool,
    /// Listener received.
    pub lds: AtomicBool,
    /// Secret received.
    pub sds: AtomicBool,
    /// Bytes of responses received.
    pub bytes: AtomicU64,
    /// Watched names received since the watch was set.
    pub hits: AtomicUsize,
    /// When the last watched name arrived (ns since the bench's epoch).
    pub done_at: AtomicU64,
    /// The stream failed.
    pub failed: AtomicBool,
}

/// What every simulated proxy shares.
#[derive(Debug)]
pub struct Shared {
    /// The bench's epoch.
    pub epoch: Instant,
    /// Every EDS name of the mesh, to subscribe to, encoded once as a request's names
    /// ([`encode_names`]).
    pub eds_names_wire: Bytes,
    /// Every cluster name of the mesh: a cluster not among them is new, and its
    /// endpoints are subscribed by its service name.
    pub clusters: Arc<std::collections::HashSet<String>>,
    /// Names being waited for, and how many of them a proxy must see.
    pub watch: RwLock<Vec<String>>,
    /// The outbound route table the listener names (whole, or apart on delta with VHDS).
    pub route_name: &'static str,
}

impl Shared {
    /// Whether `cluster` is a Service's cluster the mesh started without (a new Service).
    fn is_new_cluster(&self, cluster: &str) -> bool {
        cluster.starts_with("outbound|") && !self.clusters.contains(cluster)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn saw<S: AsRef<str>>(&self, stats: &ProxyStats, names: impl Iterator<Item = S>) {
        let watch = self.watch.read();
        if watch.is_empty() {
            return;
        }
        let n = names
            .filter(|n| watch.iter().any(|w| w == n.as_ref()))
            .count();
        if n == 0 {
            return;
        }
        let total = stats.hits.fetch_add(n, Ordering::Relaxed) + n;
        if total >= watch.len() {
            stats.done_at.store(self.now_ns(), Ordering::Relaxed);
        }
    }
}

/// The ADS method SotW proxies call.
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// The ADS method delta proxies call.
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Opens the ADS stream at `path`, sending what `rx` yields and handing over each
/// response's bytes ([`RawCodec`]).
async fn open<Req: Message + Send + 'static>(
    channel: Channel,
    path: &'static str,
    rx: mpsc::Receiver<Req>,
) -> Result<tonic::Streaming<Bytes>, tonic::Status> {
    let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let resp = client
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            RawCodec::<Req>::default(),
        )
        .await?;
    Ok(resp.into_inner())
}

/// The name field of a ClusterLoadAssignment (field 1), decoded alone.
#[derive(Clone, PartialEq, Message)]
struct Named {
    #[prost(string, tag = "1")]
    name: String,
}

/// The names of SotW resources (each decoded for its name alone).
fn names_in(resources: &[super::wire::LightAny]) -> impl Iterator<Item = String> + '_ {
    resources
        .iter()
        .filter_map(|a| Named::decode(&a.value[..]).ok())
        .map(|n| n.name)
}

/// An EDS cluster's endpoints name (its `eds_cluster_config.service_name`), read from
/// its encoded Cluster.
fn eds_name_of(cluster: &[u8]) -> Option<String> {
    Cluster::decode(cluster)
        .ok()?
        .eds_cluster_config
        .map(|e| e.service_name)
        .filter(|n| !n.is_empty())
}

/// Whether a RouteConfiguration asks for its virtual hosts apart (its `vhds`, field 9,
/// decoded alone).
#[derive(Clone, PartialEq, Message)]
struct AsksVhds {
    #[prost(bytes = "vec", optional, tag = "9")]
    vhds: Option<Vec<u8>>,
}

/// The node of simulated proxy `p`: Envoy 1.40, as the real sidecars.
pub fn proxy_node(p: usize) -> Node {
    use envoy_types::pb::envoy::config::core::v3::{BuildVersion, node::UserAgentVersionType};
    use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
    let mut n = node(
        &format!("proxy-{p}.{}", super::mesh::NAMESPACE),
        super::mesh::NAMESPACE,
        &format!("proxy-{p}"),
        "bench",
    );
    n.user_agent_name = "envoy".into();
    n.user_agent_version_type = Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
        version: Some(SemanticVersion {
            major_number: 1,
            minor_number: 40,
            patch: 0,
        }),
        metadata: None,
    }));
    n
}

/// Runs one delta proxy until its stream ends.
pub async fn run_delta(channel: Channel, p: usize, shared: Arc<Shared>, stats: Arc<ProxyStats>) {
    let (tx, rx) = mpsc::channel::<DeltaRequest>(16);
    let request = |head: DeltaDiscoveryRequest, names: Vec<Bytes>| DeltaRequest { head, names };
    let first = [
        (CLUSTER, Vec::new()),
        (LISTENER, Vec::new()),
        (SECRET, vec![encode_names(["default", "ROOTCA"])]),
    ];
    for (i, (url, names)) in first.into_iter().enumerate() {
        let head = DeltaDiscoveryRequest {
            node: (i == 0).then(|| proxy_node(p)),
            type_url: url.into(),
            ..Default::default()
        };
        let _ = tx.send(request(head, names)).await;
    }
    let mut inbound = match open(channel, DELTA_PATH, rx).await {
        Ok(inbound) => inbound,
        Err(e) => return fail(&stats, p, &e.to_string()),
    };
    let (mut eds_subscribed, mut rds_subscribed, mut vhds_subscribed) = (false, false, false);
    // A Clusters ACK held until the new Clusters' endpoints arrive (see `HeldAck`).
    let mut held: Option<HeldAck<DeltaRequest>> = None;
    // Endpoints of new Services asked for (a Cluster sent again is not asked anew).
    let mut asked: std::collections::HashSet<String> = std::collections::HashSet::new();
    while let Some(msg) = inbound.next().await {
        let (bytes, r) = match msg.map(|b| (b.clone(), LightDelta::decode(b))) {
            Ok((bytes, Ok(r))) => (bytes, r),
            Ok((_, Err(e))) => return fail(&stats, p, &e.to_string()),
            Err(e) => return fail(&stats, p, &e.to_string()),
        };
        stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let url = r.type_url.as_str();
        let names = || r.resources.iter().map(LightResource::name);
        let mut asks_vhds = false;
        if url == ENDPOINT {
            stats.eds.fetch_add(r.resources.len(), Ordering::Relaxed);
            shared.saw(&stats, names());
        } else if url == ROUTE || url == VIRTUAL_HOST {
            stats.rds.store(true, Ordering::Relaxed);
            shared.saw(&stats, names());
            // A route table is read whole (one, now and then) for whether it asks for
            // its virtual hosts apart.
            asks_vhds = url == ROUTE
                && !vhds_subscribed
                && DeltaDiscoveryResponse::decode(bytes.clone()).is_ok_and(|full| {
                    full.resources.iter().any(|x| {
                        x.resource
                            .as_ref()
                            .and_then(|a| AsksVhds::decode(a.value.as_slice()).ok())
                            .is_some_and(|t| t.vhds.is_some())
                    })
                });
        } else if url == LISTENER {
            stats.lds.store(true, Ordering::Relaxed);
        } else if url == SECRET {
            stats.sds.store(true, Ordering::Relaxed);
        }
        // Endpoints removed count as arrived: Envoy's cluster warms without them.
        let gone = r.removed_resources.iter().map(String::as_str);
        if url == ENDPOINT
            && let Some(ack) = held.as_mut().and_then(|h| h.arrived(names().chain(gone)))
        {
            let _ = tx.send(ack).await;
            held = None;
        }
        let head = DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        let ack = request(head, Vec::new());
        let ack = if url == CLUSTER {
            // Clusters that appear later (a new Service) get their endpoints subscribed.
            let mut subscribe = Vec::new();
            if !eds_subscribed {
                subscribe.push(shared.eds_names_wire.clone());
            }
            let started = std::mem::replace(&mut eds_subscribed, true);
            let new = r
                .resources
                .iter()
                .map(LightResource::name)
                .any(|n| shared.is_new_cluster(n));
            let mut fresh = Vec::new();
            if new {
                // Rare (a new Service): the response is read whole for their service names.
                let full = DeltaDiscoveryResponse::decode(bytes.clone()).unwrap_or_default();
                fresh = full
                    .resources
                    .iter()
                    .filter(|x| shared.is_new_cluster(&x.name))
                    .filter_map(|x| x.resource.as_ref())
                    .filter_map(|any| eds_name_of(&any.value))
                    .filter(|e| asked.insert(e.clone()))
                    .collect();
                if !fresh.is_empty() {
                    subscribe.push(encode_names(&fresh));
                }
            }
            if !subscribe.is_empty() {
                let head = DeltaDiscoveryRequest {
                    type_url: ENDPOINT.into(),
                    ..Default::default()
                };
                let _ = tx.send(request(head, subscribe)).await;
            }
            HeldAck::hold(&mut held, started, fresh, ack)
        } else {
            Some(ack)
        };
        if let Some(ack) = ack {
            let _ = tx.send(ack).await;
        }
        if url == LISTENER && !rds_subscribed {
            rds_subscribed = true;
            let head = DeltaDiscoveryRequest {
                type_url: ROUTE.into(),
                ..Default::default()
            };
            let _ = tx
                .send(request(head, vec![encode_names([shared.route_name])]))
                .await;
        }
        if asks_vhds && !vhds_subscribed {
            // Envoy's first VHDS request names nothing: every host of the table.
            vhds_subscribed = true;
            let head = DeltaDiscoveryRequest {
                type_url: VIRTUAL_HOST.into(),
                ..Default::default()
            };
            let _ = tx.send(request(head, Vec::new())).await;
        }
    }
    fail(&stats, p, "the server ended the stream");
}

/// A Clusters ACK held back as Envoy holds it: past its first sync, Envoy asks for new
/// Clusters' endpoints first and ACKs the Clusters once those have warmed, that is once
/// their endpoints arrived (then the endpoints' ACK follows). At startup it sends both
/// at once, the endpoints' request first.
struct HeldAck<R> {
    ack: Option<R>,
    waiting: Vec<String>,
}

impl<R> HeldAck<R> {
    /// Holds `ack` in `held` for the endpoints `fresh` if the proxy is `started`; else
    /// gives it back to send now.
    fn hold(held: &mut Option<Self>, started: bool, fresh: Vec<String>, ack: R) -> Option<R> {
        if started && !fresh.is_empty() {
            debug_assert!(held.is_none(), "one Clusters response in flight");
            *held = Some(HeldAck {
                ack: Some(ack),
                waiting: fresh,
            });
            None
        } else {
            Some(ack)
        }
    }

    /// Endpoints `names` arrived: the ACK, once all it waits for have.
    fn arrived<S: AsRef<str>>(&mut self, names: impl Iterator<Item = S>) -> Option<R> {
        for n in names {
            self.waiting.retain(|w| w != n.as_ref());
        }
        if self.waiting.is_empty() {
            self.ack.take()
        } else {
            None
        }
    }
}

/// Marks a stream failed, saying why on stderr (a benchmark's dropped streams are a
/// result to explain).
fn fail(stats: &ProxyStats, p: usize, why: &str) {
    if !stats.failed.swap(true, Ordering::Relaxed) {
        eprintln!("proxy {p}: stream failed: {why}");
    }
}

/// Runs one SotW proxy until its stream ends.
pub async fn run_sotw(channel: Channel, p: usize, shared: Arc<Shared>, stats: Arc<ProxyStats>) {
    let (tx, rx) = mpsc::channel::<SotwRequest>(16);
    // Clusters beyond the mesh's own (new Services), and their names encoded.
    let mut extra: Vec<String> = Vec::new();
    let mut extra_wire = Bytes::new();
    let names = |url: &str, shared: &Shared, extra_wire: &Bytes| -> Vec<Bytes> {
        match url {
            ENDPOINT => vec![shared.eds_names_wire.clone(), extra_wire.clone()],
            ROUTE => vec![encode_names([shared.route_name])],
            SECRET => vec![encode_names(["default", "ROOTCA"])],
            _ => Vec::new(),
        }
    };
    let request = |head: DiscoveryRequest, names: Vec<Bytes>| SotwRequest { head, names };
    for (i, url) in [CLUSTER, LISTENER, SECRET].into_iter().enumerate() {
        let head = DiscoveryRequest {
            node: (i == 0).then(|| proxy_node(p)),
            type_url: url.into(),
            ..Default::default()
        };
        let _ = tx
            .send(request(head, names(url, &shared, &extra_wire)))
            .await;
    }
    let mut inbound = match open(channel, SOTW_PATH, rx).await {
        Ok(inbound) => inbound,
        Err(e) => return fail(&stats, p, &e.to_string()),
    };
    let (mut eds_subscribed, mut rds_subscribed) = (false, false);
    let mut held: Option<HeldAck<SotwRequest>> = None;
    while let Some(msg) = inbound.next().await {
        let (len, r) = match msg.map(|b| (b.len(), LightSotw::decode(b))) {
            Ok((len, Ok(r))) => (len, r),
            Ok((_, Err(e))) => return fail(&stats, p, &e.to_string()),
            Err(e) => return fail(&stats, p, &e.to_string()),
        };
        stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
        let url = r.type_url.as_str();
        if url == ENDPOINT {
            stats.eds.fetch_add(r.resources.len(), Ordering::Relaxed);
            shared.saw(&stats, names_in(&r.resources));
        } else if url == ROUTE {
            stats.rds.store(true, Ordering::Relaxed);
            shared.saw(&stats, names_in(&r.resources));
        } else if url == LISTENER {
            stats.lds.store(true, Ordering::Relaxed);
        } else if url == SECRET {
            stats.sds.store(true, Ordering::Relaxed);
        }
        if url == ENDPOINT
            && let Some(ack) = held
                .as_mut()
                .and_then(|h| h.arrived(names_in(&r.resources)))
        {
            let _ = tx.send(ack).await;
            held = None;
        }
        let mut fresh = Vec::new();
        if url == CLUSTER {
            for a in &r.resources {
                let Ok(n) = Named::decode(&a.value[..]) else {
                    continue;
                };
                if !shared.is_new_cluster(&n.name) {
                    continue;
                }
                // A new Service's cluster: its endpoints by its service name.
                if let Some(eds) = eds_name_of(&a.value).filter(|e| !extra.contains(e)) {
                    extra.push(eds.clone());
                    fresh.push(eds);
                }
            }
            if !fresh.is_empty() {
                extra_wire = encode_names(&extra);
            }
        }
        let head = DiscoveryRequest {
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            type_url: r.type_url.clone(),
            ..Default::default()
        };
        let ack = request(head, names(url, &shared, &extra_wire));
        let ack = if url == CLUSTER {
            let started = eds_subscribed;
            if !eds_subscribed || !fresh.is_empty() {
                eds_subscribed = true;
                let head = DiscoveryRequest {
                    type_url: ENDPOINT.into(),
                    ..Default::default()
                };
                let _ = tx
                    .send(request(head, names(ENDPOINT, &shared, &extra_wire)))
                    .await;
            }
            HeldAck::hold(&mut held, started, fresh, ack)
        } else {
            Some(ack)
        };
        if let Some(ack) = ack {
            let _ = tx.send(ack).await;
        }
        if url == LISTENER && !rds_subscribed {
            rds_subscribed = true;
            let head = DiscoveryRequest {
                type_url: ROUTE.into(),
                ..Default::default()
            };
            let _ = tx
                .send(request(head, names(ROUTE, &shared, &extra_wire)))
                .await;
        }
    }
    fail(&stats, p, "the server ended the stream");
}

#[cfg(test)]
mod tests {
    use super::HeldAck;

    #[test]
    fn a_clusters_ack_waits_for_the_new_clusters_endpoints_past_startup_only() {
        let mut held = None;
        assert_eq!(
            HeldAck::hold(&mut held, false, vec!["b:80".into()], 1),
            Some(1)
        );
        assert_eq!(HeldAck::hold(&mut held, true, Vec::new(), 1), Some(1));
        assert!(held.is_none());
        assert_eq!(
            HeldAck::hold(&mut held, true, vec!["b:80".into(), "c:80".into()], 7),
            None
        );
        let Some(mut h) = held else {
            panic!("held");
        };
        assert_eq!(h.arrived(["a:80", "b:80"].iter()), None);
        assert_eq!(h.arrived(["c:80"].iter()), Some(7));
        assert_eq!(h.arrived(["c:80"].iter()), None, "given once");
    }
}
