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

use crate::observability::metrics::{Metrics, TypeLabel};
use crate::observability::nack::NackLog;
use crate::observability::registry::{ProxyRegistry, ProxyState};
use crate::xds::cache::Cache;
use crate::xds::snapshot::Snapshot;
use crate::xds::stream::{Event, delta, sotw};

/// How often a stream with an ordering wait re-checks it.
const TICK: Duration = Duration::from_millis(250);

/// Limits on what one ADS stream may ask for.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// ADS streams open at once on one connection.
    pub streams_per_connection: usize,
    /// Resource names one stream may subscribe to, per type.
    pub subscribed_names: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            streams_per_connection: 8,
            subscribed_names: 50_000,
        }
    }
}

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
    limits: StreamLimits,
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
        limits: StreamLimits,
    ) -> Self {
        AdsService {
            cache,
            nacks,
            proxies,
            metrics,
            verify,
            stop,
            limits,
        }
    }
}

/// The SPIFFE ID of the peer's verified client certificate, from the connection.
pub(crate) fn peer_identity<T>(request: &Request<T>) -> Option<ca::SpiffeId> {
    crate::xds::listener::ConnInfo::of(request)?
        .identity
        .clone()
}

/// Who the stream may act as.
#[derive(Clone, Debug)]
pub(crate) enum Peer {
    /// Plain-text xDS (explicitly allowed, loopback only): no proof.
    Unverified,
    /// The identity from a verified client certificate, if it had one, and the trust
    /// domain it must be in.
    Verified(String, Option<ca::SpiffeId>),
}

impl Peer {
    /// The scope a node id is valid in: two streams share config only if both their
    /// node ids and their scopes are equal. With TLS this is the certificate's SPIFFE ID.
    fn scope(&self, claimed: &ProxyIdentity) -> String {
        match self {
            Peer::Verified(_, Some(id)) => id.to_string(),
            Peer::Verified(td, None) => format!("spiffe://{td}/unverified"),
            Peer::Unverified => format!(
                "unverified:{}/{}",
                claimed.namespace, claimed.service_account
            ),
        }
    }
}

/// Refusals of streams are logged at most once a second (a peer may churn streams).
static REFUSAL_LOG: crate::xds::listener::RateLimited = crate::xds::listener::RateLimited::new();

/// What ends a stream from outside: the shutdown, and the expiry of the certificate that
/// proved its identity.
struct ConnLife {
    stop: crate::server::Stop,
    expires: Option<std::time::SystemTime>,
}

/// Counts an ADS stream on its connection; uncounted when dropped.
struct StreamSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the glue needs from a state machine.
trait Machine: Send + Sync + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    const STREAM: &'static str;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn new(snapshot: Arc<Snapshot>, limits: &StreamLimits) -> Self;
    fn request(&mut self, req: &Self::Req, now: Instant) -> (Vec<Self::Resp>, Vec<Event>);
    fn snapshot(&mut self, snap: Arc<Snapshot>, now: Instant) -> (Vec<Self::Resp>, Vec<Event>);
    fn tick(&mut self, now: Instant) -> (Vec<Self::Resp>, Vec<Event>);
    fn waiting(&self) -> bool;
    fn subscribed(&self) -> Vec<translator::XdsType>;
    fn idle(&self) -> bool;
    /// Set when the last request broke a limit: the stream ends with this.
    fn refusal(&mut self) -> Option<String>;
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
            fn new(snapshot: Arc<Snapshot>, limits: &StreamLimits) -> Self {
                <$ty>::new(snapshot).with_name_limit(limits.subscribed_names)
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
            fn refusal(&mut self) -> Option<String> {
                self.take_refusal()
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
    fn spawn<M: Machine>(
        &self,
        request: Request<Streaming<M::Req>>,
    ) -> Result<BoxStream<M::Resp>, Status>
    where
        Streaming<M::Req>: Send,
    {
        if let Some(refused) = crate::xds::listener::refusal(&request) {
            return Err(refused);
        }
        let slot = match crate::xds::listener::ConnInfo::of(&request) {
            Some(info) => {
                let open = info
                    .streams
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let slot = StreamSlot(info.streams.clone());
                if open >= self.limits.streams_per_connection {
                    self.metrics.refused("streams_per_connection");
                    if let Some(suppressed) = REFUSAL_LOG.allow() {
                        tracing::warn!(
                            peer = ?info.remote,
                            identity = ?info.identity.as_ref().map(|i| i.to_string()),
                            open,
                            limit = self.limits.streams_per_connection,
                            suppressed,
                            "refused an ADS stream: too many streams on one connection"
                        );
                    }
                    return Err(Status::resource_exhausted(format!(
                        "too many ADS streams on this connection ({open} open; --max-streams-per-connection {})",
                        self.limits.streams_per_connection
                    )));
                }
                Some(slot)
            }
            None => None,
        };
        let peer = match &self.verify {
            None => Peer::Unverified,
            Some(td) => Peer::Verified(td.clone(), peer_identity(&request)),
        };
        let expires = crate::xds::listener::ConnInfo::of(&request).and_then(|i| i.not_after);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let obs = Obs {
            cache: self.cache.clone(),
            nacks: self.nacks.clone(),
            proxies: self.proxies.clone(),
            metrics: self.metrics.clone(),
        };
        let cache = self.cache.clone();
        let stop = self.stop.clone();
        let limits = self.limits;
        tokio::spawn(async move {
            let _slot = slot;
            let conn = ConnLife { stop, expires };
            if let Err(status) = drive::<M>(cache, obs, peer, inbound, conn, limits, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Where a stream reports what happened.
struct Obs {
    cache: Arc<Cache>,
    nacks: Arc<NackLog>,
    proxies: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
}

async fn drive<M: Machine>(
    cache: Arc<Cache>,
    obs: Obs,
    peer: Peer,
    mut inbound: Streaming<M::Req>,
    ConnLife { stop, expires }: ConnLife,
    limits: StreamLimits,
    tx: &mpsc::Sender<Result<M::Resp, Status>>,
) -> Result<(), Status> {
    if stop.is_stopped() {
        return Err(shutting_down());
    }
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    // A stream lives no longer than the certificate that proved its identity.
    let expired = tokio::time::sleep(
        expires
            .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
            .unwrap_or(Duration::from_secs(365 * 24 * 3600)),
    );
    tokio::pin!(expired);
    let first = match inbound.message().await {
        Ok(Some(first)) => first,
        Ok(None) => return Ok(()),
        Err(status) => return Err(inbound_error(&obs, "(before its node)", status)),
    };
    let identity = ProxyIdentity::from_node(M::node(&first)).map_err(|e| {
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            tracing::warn!(error = %e, suppressed, "refused xDS stream");
        }
        Status::invalid_argument(e.to_string())
    })?;
    if identity.namespace == crate::server::CONTROL_PLANE_NS {
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            tracing::warn!(node = %identity.node_id, suppressed, "refused xDS stream: namespace {} is the control plane's own", crate::server::CONTROL_PLANE_NS);
        }
        return Err(Status::permission_denied(format!(
            "identities in namespace {} belong to the control plane; proxies cannot use them",
            crate::server::CONTROL_PLANE_NS
        )));
    }
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
            if let Some(suppressed) = REFUSAL_LOG.allow() {
                tracing::warn!(
                    node = %identity.node_id,
                    claimed_namespace = %identity.namespace,
                    claimed_service_account = %identity.service_account,
                    certificate = %shown,
                    suppressed,
                    "refused xDS stream: the node's claimed identity does not match its client certificate"
                );
            }
            return Err(Status::permission_denied(format!(
                "node {} claims {}/{} but its client certificate is {shown}",
                identity.node_id, identity.namespace, identity.service_account
            )));
        }
    }
    // A pod's workload identity is its service account: a node may only claim a pod that
    // runs as the identity it proved.
    let pod_account = cache.read(|m| {
        m.pod(&identity.namespace, &identity.pod)
            .map(|p| p.service_account.clone())
    });
    if let Some(sa) = pod_account.filter(|sa| *sa != identity.service_account) {
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            tracing::warn!(node = %identity.node_id, pod = %identity.pod, pod_service_account = %sa, claimed = %identity.service_account, suppressed, "refused xDS stream: the pod runs as another service account");
        }
        return Err(Status::permission_denied(format!(
            "pod {}/{} runs as service account {sa}, not {}",
            identity.namespace, identity.pod, identity.service_account
        )));
    }
    let node = identity.node_id.clone();
    let scope = peer.scope(&identity);
    let mut watch = cache.subscribe(&scope, &identity);
    tracing::info!(node = %node, identity = %scope, stream = M::STREAM, "proxy connected");
    let snapshot = watch.rx.borrow_and_update().clone();
    let mut machine = M::new(snapshot.clone(), &limits);
    let id = obs.proxies.connect(ProxyState {
        node: crate::observability::registry::NodeInfo::new(M::node(&first), &identity),
        identity: scope.clone(),
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
    refuse_if_over(&mut machine, &node, &obs)?;
    let mut open = emit::<M>(&node, &obs, id, &machine, &mut pending_since, tx, step).await;
    while open {
        let step = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    let step = machine.request(&req, Instant::now());
                    refuse_if_over(&mut machine, &node, &obs)?;
                    step
                }
                Ok(None) => break,
                Err(status) => return Err(inbound_error(&obs, &node, status)),
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
            () = &mut expired => {
                tracing::info!(node = %node, stream = M::STREAM, "ending the stream: its client certificate expired");
                return Err(Status::unauthenticated("the client certificate expired; reconnect with a renewed one"));
            }
        };
        open = emit::<M>(&node, &obs, id, &machine, &mut pending_since, tx, step).await;
    }
    tracing::info!(node = %node, stream = M::STREAM, "proxy disconnected");
    Ok(())
}

/// Ends the stream when the last request broke a limit.
fn refuse_if_over<M: Machine>(machine: &mut M, node: &str, obs: &Obs) -> Result<(), Status> {
    let Some(reason) = machine.refusal() else {
        return Ok(());
    };
    obs.metrics.refused("subscribed_names");
    if let Some(suppressed) = REFUSAL_LOG.allow() {
        tracing::warn!(node, reason = %reason, suppressed, "ending an ADS stream: over a limit");
    }
    Err(Status::resource_exhausted(reason))
}

/// What ends a stream whose request could not be read: a message over the size limit
/// (answered and logged as a refusal), or the peer going away.
fn inbound_error(obs: &Obs, node: &str, status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange || status.code() == tonic::Code::ResourceExhausted {
        obs.metrics.refused("message_size");
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            tracing::warn!(node, error = %crds::text::clip(status.message(), 512), suppressed, "ending an ADS stream: a request over the message size limit (--max-message-bytes)");
        }
    } else {
        tracing::info!(node, error = %crds::text::clip(status.message(), 512), "stream ended");
    }
    status
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
            Event::Ack {
                kind,
                version,
                accepted,
            } => {
                tracing::debug!(node, r#type = %kind, %version, "ACK");
                if !accepted.is_empty() {
                    obs.cache.on_ack(&accepted);
                }
            }
            Event::Nack(rejection) => {
                obs.metrics
                    .nacks
                    .get_or_create(&TypeLabel {
                        r#type: rejection.kind.to_string(),
                    })
                    .inc();
                obs.nacks.record(node, &rejection);
                obs.cache.on_nack(node, &rejection);
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
        Ok(Response::new(self.spawn::<sotw::SotwStream>(request)?))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.spawn::<delta::DeltaStream>(request)?))
    }
}
