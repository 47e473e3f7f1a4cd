//! The tonic glue for ADS: reads requests, feeds the stream state machines, forwards
//! snapshot changes and sends what the machines return. No protocol logic lives here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::AggregatedDiscoveryService,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use translator::identity::{ProxyIdentity, ProxyKind};

use crate::ads::{Event, delta, sotw};
use crate::cache::Cache;
use crate::metrics::{Metrics, TypeLabel};
use crate::nack::NackLog;
use crate::proxies::{ProxyRegistry, ProxyState};
use crate::snapshot::Snapshot;

/// How often a stream with an ordering wait re-checks it.
const TICK: Duration = Duration::from_millis(250);

/// The ADS service.
#[derive(Clone)]
pub struct AdsService {
    cache: Arc<Cache>,
    nacks: Arc<NackLog>,
    proxies: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
    /// With TLS: the trust domain whose client certificates prove a node's identity.
    verify: Option<String>,
    /// Ends every stream when the control plane shuts down.
    stop: crate::server::Stop,
}

impl AdsService {
    /// Serves snapshots from `cache`, recording rejections in `nacks`. With `verify`
    /// (the trust domain), a node must present a client certificate for the namespace
    /// and service account it claims.
    pub fn new(
        cache: Arc<Cache>,
        nacks: Arc<NackLog>,
        proxies: Arc<ProxyRegistry>,
        metrics: Arc<Metrics>,
        verify: Option<String>,
        stop: crate::server::Stop,
    ) -> Self {
        AdsService {
            cache,
            nacks,
            proxies,
            metrics,
            verify,
            stop,
        }
    }
}

/// The SPIFFE ID in a peer's leaf certificate (its URI SAN).
pub(crate) fn peer_identity<T>(request: &Request<T>) -> Option<ca::SpiffeId> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => u.parse().ok(),
        _ => None,
    })
}

/// Who the stream may act as.
#[derive(Clone, Debug)]
enum Peer {
    /// Plain-text xDS (explicitly allowed): no proof.
    Unverified,
    /// The identity from a verified client certificate, if it had one.
    Verified(String, Option<ca::SpiffeId>),
}

/// What the glue needs from a state machine.
trait Machine: Send + Sync + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    const STREAM: &'static str;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn new(snapshot: Arc<Snapshot>) -> Self;
    fn request(&mut self, req: &Self::Req, now: Instant) -> (Vec<Self::Resp>, Vec<Event>);
    fn snapshot(&mut self, snap: Arc<Snapshot>, now: Instant) -> (Vec<Self::Resp>, Vec<Event>);
    fn tick(&mut self, now: Instant) -> (Vec<Self::Resp>, Vec<Event>);
    fn waiting(&self) -> bool;
    fn subscribed(&self) -> Vec<translator::XdsType>;
    fn idle(&self) -> bool;
}

/// Both stream machines have the same surface; only the message types differ.
macro_rules! machine {
    ($ty:ty, $req:ty, $resp:ty, $name:literal) => {
        impl Machine for $ty {
            type Req = $req;
            type Resp = $resp;
            const STREAM: &'static str = $name;
            fn node(req: &$req) -> Option<&Node> {
                req.node.as_ref()
            }
            fn new(snapshot: Arc<Snapshot>) -> Self {
                <$ty>::new(snapshot)
            }
            fn request(&mut self, req: &$req, now: Instant) -> (Vec<$resp>, Vec<Event>) {
                let s = self.on_request(req, now);
                (s.responses, s.events)
            }
            fn snapshot(&mut self, snap: Arc<Snapshot>, now: Instant) -> (Vec<$resp>, Vec<Event>) {
                let s = self.on_snapshot(snap, now);
                (s.responses, s.events)
            }
            fn tick(&mut self, now: Instant) -> (Vec<$resp>, Vec<Event>) {
                let s = self.on_tick(now);
                (s.responses, s.events)
            }
            fn waiting(&self) -> bool {
                <$ty>::waiting(self)
            }
            fn subscribed(&self) -> Vec<translator::XdsType> {
                <$ty>::subscribed(self)
            }
            fn idle(&self) -> bool {
                <$ty>::idle(self)
            }
        }
    };
}

machine!(
    sotw::SotwStream,
    DiscoveryRequest,
    DiscoveryResponse,
    "sotw"
);
machine!(
    delta::DeltaStream,
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    "delta"
);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl AdsService {
    fn spawn<M: Machine>(&self, request: Request<Streaming<M::Req>>) -> BoxStream<M::Resp>
    where
        Streaming<M::Req>: Send,
    {
        let peer = match &self.verify {
            None => Peer::Unverified,
            Some(td) => Peer::Verified(td.clone(), peer_identity(&request)),
        };
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let obs = Obs {
            nacks: self.nacks.clone(),
            proxies: self.proxies.clone(),
            metrics: self.metrics.clone(),
        };
        let cache = self.cache.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            if let Err(status) = drive::<M>(cache, obs, peer, inbound, stop, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

/// Where a stream reports what happened.
struct Obs {
    nacks: Arc<NackLog>,
    proxies: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
}

async fn drive<M: Machine>(
    cache: Arc<Cache>,
    obs: Obs,
    peer: Peer,
    mut inbound: Streaming<M::Req>,
    stop: crate::server::Stop,
    tx: &mpsc::Sender<Result<M::Resp, Status>>,
) -> Result<(), Status> {
    if stop.is_stopped() {
        return Err(shutting_down());
    }
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    let Some(first) = inbound.message().await? else {
        return Ok(());
    };
    let identity = ProxyIdentity::from_node(M::node(&first)).map_err(|e| {
        tracing::warn!(error = %e, "refused xDS stream");
        Status::invalid_argument(e.to_string())
    })?;
    if identity.kind == ProxyKind::Grpc {
        return Err(Status::unimplemented(
            "proxyless gRPC clients are not served by this version of Rudder",
        ));
    }
    if let Peer::Verified(td, cert) = &peer {
        let ok = cert.as_ref().is_some_and(|c| {
            c.trust_domain == *td
                && c.namespace == identity.namespace
                && c.service_account == identity.service_account
        });
        if !ok {
            let shown = cert
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into());
            tracing::warn!(
                node = %identity.node_id,
                claimed_namespace = %identity.namespace,
                claimed_service_account = %identity.service_account,
                certificate = %shown,
                "refused xDS stream: the node's claimed identity does not match its client certificate"
            );
            return Err(Status::permission_denied(format!(
                "node {} claims {}/{} but its client certificate is {shown}",
                identity.node_id, identity.namespace, identity.service_account
            )));
        }
    }
    let node = identity.node_id.clone();
    let mut watch = cache.subscribe(&identity);
    tracing::info!(node = %node, stream = M::STREAM, "proxy connected");
    let snapshot = watch.rx.borrow_and_update().clone();
    let mut machine = M::new(snapshot.clone());
    let id = obs.proxies.connect(ProxyState {
        node: M::node(&first).cloned().unwrap_or_default(),
        identity: format!(
            "spiffe://{}/ns/{}/sa/{}",
            match &peer {
                Peer::Verified(td, _) => td.as_str(),
                Peer::Unverified => "unverified",
            },
            identity.namespace,
            identity.service_account
        ),
        kind: "envoy",
        stream: M::STREAM,
        connected: std::time::SystemTime::now(),
        last_ack: None,
        sent: Default::default(),
        subscribed: Vec::new(),
        snapshot,
    });
    let _registered = Registered(&obs.proxies, id);
    let mut pending_since: Option<Instant> = Some(Instant::now());
    let step = machine.request(&first, Instant::now());
    let mut open = emit::<M>(&node, &obs, id, &machine, &mut pending_since, tx, step).await;
    while open {
        let step = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => machine.request(&req, Instant::now()),
                Ok(None) => break,
                Err(status) => {
                    tracing::info!(node = %node, error = %status.message(), "stream ended");
                    break;
                }
            },
            changed = watch.rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let snap = watch.rx.borrow_and_update().clone();
                obs.proxies.snapshot(id, snap.clone());
                pending_since.get_or_insert(snap.changed_at.unwrap_or_else(Instant::now));
                machine.snapshot(snap, Instant::now())
            }
            _ = tokio::time::sleep(TICK), if machine.waiting() => machine.tick(Instant::now()),
            () = &mut stopped => {
                tracing::info!(node = %node, stream = M::STREAM, "ending the stream: the control plane is shutting down");
                return Err(shutting_down());
            }
        };
        open = emit::<M>(&node, &obs, id, &machine, &mut pending_since, tx, step).await;
    }
    tracing::info!(node = %node, stream = M::STREAM, "proxy disconnected");
    Ok(())
}

/// The status a stream ends with when the control plane shuts down: proxies reconnect
/// (to another replica) and keep serving their last config meanwhile.
fn shutting_down() -> Status {
    Status::unavailable("the control plane is shutting down; reconnect")
}

/// Unregisters a stream from the proxy registry when it ends.
struct Registered<'a>(&'a ProxyRegistry, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.disconnect(self.1);
    }
}

/// Sends responses and records events; false once the client is gone.
async fn emit<M: Machine>(
    node: &str,
    obs: &Obs,
    id: u64,
    machine: &M,
    pending_since: &mut Option<Instant>,
    tx: &mpsc::Sender<Result<M::Resp, Status>>,
    (responses, events): (Vec<M::Resp>, Vec<Event>),
) -> bool {
    obs.proxies.record(id, &events, machine.subscribed());
    if machine.idle()
        && events
            .iter()
            .any(|e| matches!(e, Event::Ack { .. } | Event::Nack(_)))
        && let Some(since) = pending_since.take()
    {
        obs.metrics
            .convergence
            .observe(since.elapsed().as_secs_f64());
    }
    for event in events {
        match event {
            Event::Sent {
                kind, resources, ..
            } => {
                let label = TypeLabel {
                    r#type: kind.to_string(),
                };
                obs.metrics.pushes.get_or_create(&label).inc();
                obs.metrics
                    .resources_sent
                    .get_or_create(&label)
                    .inc_by(u64::try_from(resources.len()).unwrap_or(0));
            }
            Event::Ack { kind, version } => {
                tracing::debug!(node, r#type = %kind, %version, "ACK");
            }
            Event::Nack(rejection) => {
                obs.metrics
                    .nacks
                    .get_or_create(&TypeLabel {
                        r#type: rejection.kind.to_string(),
                    })
                    .inc();
                obs.nacks.record(node, &rejection);
            }
            Event::Ignored { type_url, reason } => {
                tracing::debug!(node, %type_url, %reason, "request ignored");
            }
        }
    }
    for resp in responses {
        if tx.send(Ok(resp)).await.is_err() {
            return false;
        }
    }
    true
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.spawn::<sotw::SotwStream>(request)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.spawn::<delta::DeltaStream>(request)))
    }
}
