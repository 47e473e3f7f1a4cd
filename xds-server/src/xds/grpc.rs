//! The tonic glue for ADS: checks who a stream is, attaches it to the store, then reads
//! requests, view and own updates and ticks, feeds the stream state machine and sends
//! what it returns. No protocol logic lives here.
//!
//! A stream is charged to its connection's identity ([`crate::xds::wire::budget`]): a
//! fixed amount for being open, its request buffer as it grows, and its subscribed names
//! (the machine charges them before storing them). Over the identity's allowance or the
//! global budget, the stream is refused or ended with `RESOURCE_EXHAUSTED`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

use crate::xds::wire::sotw_request::SotwRequest;
use tokio::sync::mpsc;
use tonic::Status;
use translator::identity::ProxyIdentity;
use xds_types::XdsType;

use crate::config::StreamLimits;
use crate::observability::metrics::{Metrics, TypeLabel};
use crate::observability::nack::NackLog;
use crate::observability::registry::{NodeInfo, ProxyInfo, ProxyRegistry, StreamView};
use crate::xds::fanout::{Desired, OwnVersion, ViewVersion};
use crate::xds::store::Store;
use crate::xds::stream::{Event, NameBytes, Refusal, ResourceView, delta, sotw};
use crate::xds::wire::budget::{Charge, ConnAccount, Queued, STREAM_BYTES};
use crate::xds::wire::frames::{DeltaResponse, SotwResponse};
use crate::xds::wire::inbound::{Inbound, ReadError, ReadLimits};

/// How often a stream with an ordering wait re-checks it.
const TICK: Duration = Duration::from_millis(250);
/// Longest a response may wait for the proxy to read it (Envoy applying 10,000 clusters
/// takes under 10 s).
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// What the ADS service works with.
#[derive(Clone)]
pub struct AdsService {
    store: Arc<Store>,
    nacks: Arc<NackLog>,
    proxies: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
    /// With TLS: the trust domain whose client certificates prove a node's identity.
    verify: Option<String>,
    /// Ends every stream when the control plane shuts down.
    stop: crate::runtime::Stop,
    limits: StreamLimits,
}

impl AdsService {
    /// Serves from `store`, recording rejections in `nacks`. With `verify` (the trust
    /// domain), a stream is its client certificate's identity.
    pub fn new(
        store: Arc<Store>,
        nacks: Arc<NackLog>,
        proxies: Arc<ProxyRegistry>,
        metrics: Arc<Metrics>,
        verify: Option<String>,
        stop: crate::runtime::Stop,
        limits: StreamLimits,
    ) -> Self {
        AdsService {
            store,
            nacks,
            proxies,
            metrics,
            verify,
            stop,
            limits,
        }
    }
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
static REFUSAL_LOG: crate::log_limit::RateLimited = crate::log_limit::RateLimited::new();

/// What ends a stream from outside: the shutdown, and the expiry of the certificate that
/// proved its identity; and who it is charged to, for logs.
struct ConnLife {
    stop: crate::runtime::Stop,
    expires: Option<SystemTime>,
    who: Arc<str>,
}

/// Counts an ADS stream on its connection; uncounted when dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the glue needs from a state machine.
trait Machine: Send + 'static {
    type Req: prost::Message + Default + Send + 'static;
    type Resp: Send + Sync + 'static;
    const STREAM: &'static str;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn frame(resp: &Self::Resp) -> Bytes;
    fn frame_len(resp: &Self::Resp) -> usize;
    fn new(desired: Desired, limits: &StreamLimits, full_resend: bool, names: NameBytes) -> Self;
    fn request(&mut self, req: Self::Req, now: Instant) -> (Vec<Self::Resp>, Vec<Event>);
    fn view(&mut self, view: Arc<ViewVersion>, now: Instant) -> (Vec<Self::Resp>, Vec<Event>);
    fn own(&mut self, own: Arc<OwnVersion>, now: Instant) -> (Vec<Self::Resp>, Vec<Event>);
    fn tick(&mut self, now: Instant) -> (Vec<Self::Resp>, Vec<Event>);
    fn waiting(&self) -> bool;
    fn idle(&self) -> bool;
    fn refusal(&mut self) -> Option<Refusal>;
    fn resources(&self, kind: XdsType) -> Vec<ResourceView>;
    fn subscribed(&self) -> Vec<XdsType>;
}

/// Both stream machines have the same surface; only the message types differ.
macro_rules! machine {
    ($ty:ty, $req:ty, $resp:ty, $name:literal, |$r:ident| $node:expr) => {
        impl Machine for $ty {
            type Req = $req;
            type Resp = $resp;
            const STREAM: &'static str = $name;
            fn node($r: &$req) -> Option<&Node> {
                $node
            }
            fn frame(resp: &$resp) -> Bytes {
                resp.frame()
            }
            fn frame_len(resp: &$resp) -> usize {
                5 + resp.encoded_len()
            }
            fn new(
                desired: Desired,
                limits: &StreamLimits,
                full_resend: bool,
                names: NameBytes,
            ) -> Self {
                <$ty>::new(desired)
                    .with_name_limit(limits.subscribed_names)
                    .with_name_bytes(names)
                    .with_full_resend(full_resend)
            }
            fn request(&mut self, req: $req, now: Instant) -> (Vec<$resp>, Vec<Event>) {
                let s = self.on_wire(req, now);
                (s.responses, s.events)
            }
            fn view(&mut self, v: Arc<ViewVersion>, now: Instant) -> (Vec<$resp>, Vec<Event>) {
                let s = self.on_view(v, now);
                (s.responses, s.events)
            }
            fn own(&mut self, o: Arc<OwnVersion>, now: Instant) -> (Vec<$resp>, Vec<Event>) {
                let s = self.on_own(o, now);
                (s.responses, s.events)
            }
            fn tick(&mut self, now: Instant) -> (Vec<$resp>, Vec<Event>) {
                let s = self.on_tick(now);
                (s.responses, s.events)
            }
            fn waiting(&self) -> bool {
                <$ty>::waiting(self)
            }
            fn idle(&self) -> bool {
                <$ty>::idle(self)
            }
            fn refusal(&mut self) -> Option<Refusal> {
                self.take_refusal()
            }
            fn resources(&self, kind: XdsType) -> Vec<ResourceView> {
                <$ty>::resources(self, kind)
            }
            fn subscribed(&self) -> Vec<XdsType> {
                <$ty>::subscribed(self)
            }
        }
    };
}

machine!(sotw::SotwStream, SotwRequest, SotwResponse, "sotw", |r| r
    .req
    .node
    .as_ref());
machine!(
    delta::DeltaStream,
    DeltaDiscoveryRequest,
    DeltaResponse,
    "delta",
    |r| r.node.as_ref()
);

/// A stream's machine as the registry reads it (CSDS, `xdsctl`): the same state the
/// stream works on, read on demand.
struct Shared<M>(Mutex<M>);

impl<M> Shared<M> {
    fn lock(&self) -> std::sync::MutexGuard<'_, M> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<M: Machine> StreamView for Shared<M> {
    fn resources(&self, kind: XdsType) -> Vec<ResourceView> {
        self.lock().resources(kind)
    }

    fn subscribed(&self) -> Vec<XdsType> {
        self.lock().subscribed()
    }
}

/// What a stream's task sends to its response body: frames, then perhaps a status; the
/// charge for the frames the body has not handed to HTTP/2 yet; and the stream's fixed
/// charge, which covers what HTTP/2 holds of its responses and passes to the connection
/// when the body is done.
pub(crate) struct Frames {
    pub(crate) rx: mpsc::Receiver<Result<Bytes, Status>>,
    pub(crate) queued: Option<Arc<Queued>>,
    pub(crate) open: Option<(Charge, Arc<ConnAccount>)>,
}

impl AdsService {
    /// Starts a delta ADS stream.
    pub(crate) fn delta(
        &self,
        request: http::Request<tonic::body::Body>,
        max_message_bytes: usize,
    ) -> Result<Frames, Status> {
        self.spawn::<delta::DeltaStream>(request, max_message_bytes)
    }

    /// Starts a state-of-the-world ADS stream.
    pub(crate) fn sotw(
        &self,
        request: http::Request<tonic::body::Body>,
        max_message_bytes: usize,
    ) -> Result<Frames, Status> {
        self.spawn::<sotw::SotwStream>(request, max_message_bytes)
    }

    fn spawn<M: Machine>(
        &self,
        request: http::Request<tonic::body::Body>,
        max_message_bytes: usize,
    ) -> Result<Frames, Status> {
        let ext = request.extensions();
        if let Some(refused) = crate::net::front_door::refusal_in(ext) {
            return Err(refused);
        }
        let info = crate::net::front_door::ConnInfo::in_extensions(ext);
        let slot = match info {
            Some(info) => {
                let open = info.streams.fetch_add(1, Ordering::Relaxed);
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
            Some(td) => Peer::Verified(td.clone(), info.and_then(|i| i.identity.clone())),
        };
        let expires = info.and_then(|i| i.not_after);
        let conn_account: Option<Arc<ConnAccount>> = info.and_then(|i| i.account.clone());
        let account = conn_account.as_ref().map(|c| c.account().clone());
        let who: Arc<str> = account
            .as_ref()
            .map(|a| Arc::from(a.identity()))
            .unwrap_or_else(|| Arc::from("(not charged)"));
        // Being open costs the stream's identity a fixed amount.
        let mut open_charge = account.clone().map(Charge::new);
        if let Some(Err(e)) = open_charge.as_mut().map(|c| c.resize(STREAM_BYTES)) {
            self.metrics.refused(e.limit());
            if let Some(suppressed) = REFUSAL_LOG.allow() {
                tracing::warn!(
                    peer = ?info.and_then(|i| i.remote),
                    identity = e.identity(),
                    error = %e,
                    suppressed,
                    "refused an ADS stream: over the memory budget"
                );
            }
            return Err(Status::resource_exhausted(e.to_string()));
        }
        let read = ReadLimits {
            max_message: max_message_bytes,
            timeout: self.limits.message_timeout,
        };
        let inbound =
            Inbound::<M::Req>::new(request.into_body(), read, account.clone().map(Charge::new));
        let names = NameBytes::new(
            self.limits.subscribed_bytes,
            account.clone().map(Charge::new),
        );
        let queued = account.map(Queued::new);
        let (tx, rx) = mpsc::channel(16);
        let obs = Obs {
            store: self.store.clone(),
            nacks: self.nacks.clone(),
            proxies: self.proxies.clone(),
            metrics: self.metrics.clone(),
        };
        let stop = self.stop.clone();
        let limits = self.limits;
        let out = Out {
            tx,
            queued: queued.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            let _slot = slot;
            let conn = ConnLife { stop, expires, who };
            if let Err(status) = drive::<M>(obs, peer, inbound, conn, (limits, names), &out).await {
                let _ = out.tx.send(Err(status)).await;
            }
        });
        Ok(Frames {
            rx,
            queued,
            open: open_charge.zip(conn_account),
        })
    }
}

/// Where a stream reports what happened.
struct Obs {
    store: Arc<Store>,
    nacks: Arc<NackLog>,
    proxies: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
}

/// Checks the identity a stream claims against its certificate and the model.
fn admit(identity: &ProxyIdentity, peer: &Peer, store: &Store) -> Result<(), Status> {
    let refuse = |msg: String, log: &str| {
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            tracing::warn!(node = %identity.node_id, reason = %msg, suppressed, "refused xDS stream: {log}");
        }
        Status::permission_denied(msg)
    };
    if identity.namespace == crate::runtime::CONTROL_PLANE_NS {
        return Err(refuse(
            format!(
                "identities in namespace {} belong to the control plane; proxies cannot use them",
                crate::runtime::CONTROL_PLANE_NS
            ),
            "the control plane's own namespace",
        ));
    }
    if let Peer::Verified(td, cert) = peer {
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
            return Err(refuse(
                format!(
                    "node {} claims {}/{} but its client certificate is {shown}",
                    identity.node_id, identity.namespace, identity.service_account
                ),
                "the node's claimed identity does not match its client certificate",
            ));
        }
    }
    // A pod's workload identity is its service account: a node may only claim a pod that
    // runs as the identity it proved.
    let pod_account = store.read(|m| {
        m.pod(&identity.namespace, &identity.pod)
            .map(|p| p.service_account.clone())
    });
    if let Some(sa) = pod_account.filter(|sa| *sa != identity.service_account) {
        return Err(refuse(
            format!(
                "pod {}/{} runs as service account {sa}, not {}",
                identity.namespace, identity.pod, identity.service_account
            ),
            "the pod runs as another service account",
        ));
    }
    Ok(())
}

async fn drive<M: Machine>(
    obs: Obs,
    peer: Peer,
    mut inbound: Inbound<M::Req>,
    ConnLife { stop, expires, who }: ConnLife,
    (limits, names): (StreamLimits, NameBytes),
    tx: &Out,
) -> Result<(), Status> {
    if stop.is_stopped() {
        return Err(shutting_down());
    }
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    // A stream lives no longer than the certificate that proved its identity.
    let expired = tokio::time::sleep(
        expires
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::from_secs(365 * 24 * 3600)),
    );
    tokio::pin!(expired);
    let first = match inbound.message().await {
        Ok(Some(first)) => first,
        Ok(None) => return Ok(()),
        Err(e) => return Err(inbound_error(&obs, "(before its node)", &who, e)),
    };
    let identity = ProxyIdentity::from_node(M::node(&first)).map_err(|e| {
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            tracing::warn!(error = %e, suppressed, "refused xDS stream");
        }
        Status::invalid_argument(e.to_string())
    })?;
    admit(&identity, &peer, &obs.store)?;
    let node = identity.node_id.clone();
    let scope = peer.scope(&identity);
    let mut attachment = obs.store.attach(&scope, &identity).map_err(|why| {
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            tracing::warn!(node = %identity.node_id, reason = %why, suppressed, "refused xDS stream: its pod does not run");
        }
        Status::permission_denied(why)
    })?;
    tracing::info!(node = %node, identity = %scope, stream = M::STREAM, "proxy connected");
    let desired = attachment.desired();
    let machine = Arc::new(Shared(Mutex::new(M::new(
        desired,
        &limits,
        obs.store.full_resend(),
        names,
    ))));
    let id = obs.proxies.connect(ProxyInfo {
        node: NodeInfo::new(M::node(&first), &identity),
        identity: scope.clone(),
        kind: match identity.kind {
            translator::identity::ProxyKind::Envoy => "envoy",
            translator::identity::ProxyKind::Grpc => "grpc",
        },
        stream: M::STREAM,
        connected: SystemTime::now(),
        state: machine.clone(),
    });
    let _registered = Registered(&obs.proxies, id);
    let ctx = Ctx {
        node: &node,
        scope: &scope,
        tag: crate::xds::store::stream_tag(&scope, &node),
        obs: &obs,
        id,
    };
    let mut pending_since: Option<Instant> = Some(Instant::now());
    let step = machine.lock().request(first, Instant::now());
    refuse_if_over(&mut *machine.lock(), &node, &who, &obs)?;
    let mut open = emit(
        &ctx,
        &machine,
        attachment.view_key(),
        &mut pending_since,
        tx,
        step,
    )
    .await;
    while open {
        // Checked after every step too: a stream that was busy sending when its pod went
        // must not miss it.
        if let Some(why) = attachment.own.borrow().ended.clone() {
            tracing::info!(node = %node, stream = M::STREAM, reason = %why, "ending the stream");
            return Err(Status::permission_denied(why.to_string()));
        }
        let waiting = machine.lock().waiting();
        let step = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    let mut m = machine.lock();
                    let step = m.request(req, Instant::now());
                    refuse_if_over(&mut *m, &node, &who, &obs)?;
                    step
                }
                Ok(None) => break,
                Err(e) => return Err(inbound_error(&obs, &node, &who, e)),
            },
            changed = attachment.own.changed() => {
                if changed.is_err() {
                    break;
                }
                let own = attachment.own.borrow_and_update().clone();
                if let Some(why) = &own.ended {
                    tracing::info!(node = %node, stream = M::STREAM, reason = %why, "ending the stream");
                    return Err(Status::permission_denied(why.to_string()));
                }
                if let Some(since) = own.changed_at {
                    pending_since.get_or_insert(since);
                }
                let mut step = machine.lock().own(own.clone(), Instant::now());
                // The proxy moved to another view (its pod's egress changed).
                if let Some(view) = own.view.clone().filter(|v| v != attachment.view_key()) {
                    attachment.switch_view(view);
                    let v = attachment.view.borrow_and_update().clone();
                    let (r, e) = machine.lock().view(v, Instant::now());
                    step.0.extend(r);
                    step.1.extend(e);
                }
                step
            }
            changed = attachment.view.changed() => {
                if changed.is_err() {
                    break;
                }
                let view = attachment.view.borrow_and_update().clone();
                if let Some(since) = view.changed_at {
                    pending_since.get_or_insert(since);
                }
                machine.lock().view(view, Instant::now())
            }
            _ = tokio::time::sleep(TICK), if waiting => machine.lock().tick(Instant::now()),
            () = &mut stopped => {
                tracing::info!(node = %node, stream = M::STREAM, "ending the stream: the control plane is shutting down");
                return Err(shutting_down());
            }
            () = &mut expired => {
                tracing::info!(node = %node, stream = M::STREAM, "ending the stream: its client certificate expired");
                return Err(Status::unauthenticated("the client certificate expired; reconnect with a renewed one"));
            }
        };
        open = emit(
            &ctx,
            &machine,
            attachment.view_key(),
            &mut pending_since,
            tx,
            step,
        )
        .await;
    }
    tracing::info!(node = %node, stream = M::STREAM, "proxy disconnected");
    Ok(())
}

/// Who a stream is, for what it reports.
struct Ctx<'a> {
    node: &'a str,
    scope: &'a str,
    /// Unique per proxy (certificate identity and node id).
    tag: String,
    obs: &'a Obs,
    id: u64,
}

/// Ends the stream when the last request broke a limit.
fn refuse_if_over<M: Machine>(
    machine: &mut M,
    node: &str,
    identity: &str,
    obs: &Obs,
) -> Result<(), Status> {
    let Some(Refusal { limit, reason }) = machine.refusal() else {
        return Ok(());
    };
    obs.metrics.refused(limit);
    if let Some(suppressed) = REFUSAL_LOG.allow() {
        tracing::warn!(node, identity, limit, reason = %reason, suppressed, "ending an ADS stream: over a limit");
    }
    Err(Status::resource_exhausted(reason))
}

/// What ends a stream whose request could not be read: a limit (a message too large or
/// too slow, a buffer over the budget: answered, counted and logged as a refusal), or the
/// peer going away or sending garbage.
fn inbound_error(obs: &Obs, node: &str, identity: &str, e: ReadError) -> Status {
    let error = crds::text::clip(&e.to_string(), 1024);
    match e.limit() {
        Some(limit) => {
            obs.metrics.refused(limit);
            if let Some(suppressed) = REFUSAL_LOG.allow() {
                let what = match limit {
                    "message_size" => "a request over the message size limit (--max-message-bytes)",
                    "message_timeout" => {
                        "a request message not completed in time (--message-timeout)"
                    }
                    _ => "a request buffer over the memory budget",
                };
                tracing::warn!(node, identity, limit, error = %error, suppressed, "ending an ADS stream: {what}");
            }
        }
        None => tracing::info!(node, identity, error = %error, "stream ended"),
    }
    e.status()
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

/// Where a stream's responses go: the response body's channel, and the charge that
/// admits each frame before it is encoded.
struct Out {
    tx: mpsc::Sender<Result<Bytes, Status>>,
    queued: Option<Arc<Queued>>,
    stop: crate::runtime::Stop,
}

impl Out {
    /// Encodes and sends one response once its identity has room for it (a peer that
    /// does not read its responses stalls its own streams); false once the client is gone.
    /// A proxy that takes nothing for [`SEND_TIMEOUT`] is gone (or holding the stream open
    /// on purpose): the stream ends rather than wait on it forever.
    async fn send<M: Machine>(&self, resp: &M::Resp) -> bool {
        let go = async {
            if let Some(q) = &self.queued {
                let gone = || self.tx.is_closed() || self.stop.is_stopped();
                if !q.admit(M::frame_len(resp), gone).await {
                    return false;
                }
            }
            self.tx.send(Ok(M::frame(resp))).await.is_ok()
        };
        match tokio::time::timeout(SEND_TIMEOUT, go).await {
            Ok(sent) => sent,
            Err(_) => {
                tracing::info!(
                    timeout_s = SEND_TIMEOUT.as_secs(),
                    "ending a stream: the proxy takes no responses"
                );
                false
            }
        }
    }
}

/// Records events and sends responses; false once the client is gone.
async fn emit<M: Machine>(
    ctx: &Ctx<'_>,
    machine: &Arc<Shared<M>>,
    view: &translator::model::ViewKey,
    pending_since: &mut Option<Instant>,
    tx: &Out,
    (responses, events): (Vec<M::Resp>, Vec<Event>),
) -> bool {
    let obs = ctx.obs;
    let answered = events
        .iter()
        .any(|e| matches!(e, Event::Ack { .. } | Event::Nack(_)));
    if answered && machine.lock().idle() {
        obs.proxies.acked(ctx.id);
        if let Some(since) = pending_since.take() {
            obs.metrics
                .convergence
                .observe(since.elapsed().as_secs_f64());
        }
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
                    .inc_by(u64::try_from(resources).unwrap_or(0));
            }
            Event::Ack {
                kind,
                version,
                accepted,
            } => {
                tracing::debug!(node = ctx.node, r#type = %kind, %version, "ACK");
                if !accepted.is_empty() {
                    obs.store.on_ack(view, &ctx.tag, ctx.scope, &accepted);
                }
            }
            Event::Nack(rejection) => {
                obs.metrics
                    .nacks
                    .get_or_create(&TypeLabel {
                        r#type: rejection.kind.to_string(),
                    })
                    .inc();
                obs.nacks.record(ctx.node, ctx.scope, &rejection);
                obs.store.on_nack(view, &ctx.tag, ctx.scope, &rejection);
            }
            Event::Ignored { type_url, reason } => {
                tracing::debug!(node = ctx.node, %type_url, %reason, "request ignored");
            }
        }
    }
    for resp in responses {
        if !tx.send::<M>(&resp).await {
            return false;
        }
    }
    true
}
