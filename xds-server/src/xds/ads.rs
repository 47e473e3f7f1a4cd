//! The tonic glue for ADS: checks who a stream is, attaches it to the store, then reads
//! requests, view and own updates and ticks, feeds the stream state machine and sends
//! what it returns. No protocol logic lives here.
//!
//! A stream is charged to its connection's identity ([`crate::xds::wire::budget`]): a
//! fixed amount for being open, its request buffer as it grows, and its subscribed names
//! (the machine charges them before storing them). Over the identity's allowance or the
//! global budget, the stream is refused or ended with `RESOURCE_EXHAUSTED`.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::mpsc;
use tonic::Status;
use translator::identity::ProxyIdentity;
use xds_types::XdsType;

use crate::config::StreamLimits;
use crate::net::front_door::ConnInfo;
use crate::observability::metrics::{InitialSync, Metrics, TypeLabel};
use crate::observability::nack::NackLog;
use crate::observability::registry::{NodeInfo, ProxyInfo, ProxyRegistry, StreamView};
use crate::xds::fanout::OwnVersion;
use crate::xds::first_sync::{self, FirstSyncs, Gauges};

mod ending;
#[cfg(test)]
mod out_tests;
use crate::xds::store::{Attachment, Store};
use crate::xds::stream::core::{Protocol, Step, Stream};
use crate::xds::stream::delta::Delta;
use crate::xds::stream::names::NameBytes;
use crate::xds::stream::sotw::Sotw;
use crate::xds::stream::{Event, Refusal, ResourceView};
use crate::xds::wire::budget::{Account, Charge, ConnAccount, Queued, STREAM_BYTES};
use crate::xds::wire::frames::{Framing, Response};
use crate::xds::wire::inbound::{Inbound, ReadError, ReadLimits};
use ending::{ConnLife, END_AFTER_GOAWAY, aged_out, cert_expired, lifetime, shutting_down};

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
    first_syncs: Arc<FirstSyncs>,
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
        let gauges = Gauges {
            running: metrics.first_syncs_running.clone(),
            waiting: metrics.first_syncs_waiting.clone(),
        };
        let first_syncs = Arc::new(FirstSyncs::new(
            limits.first_syncs,
            limits.first_sync_hold,
            first_sync::WAIT,
            gauges,
        ));
        AdsService {
            store,
            nacks,
            proxies,
            metrics,
            verify,
            stop,
            limits,
            first_syncs,
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

/// Counts an ADS stream on its connection; uncounted when dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response the glue can frame for HTTP/2.
trait Framed: Response + Send + Sync + 'static {}

impl<R: Response + Send + Sync + 'static> Framed for R {}

/// A stream as the registry reads it (CSDS, `xdsctl`): the same state the stream works
/// on, read on demand.
struct Shared<P: Protocol>(Mutex<Stream<P>>);

impl<P: Protocol> Shared<P> {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Stream<P>> {
        self.0.lock()
    }
}

impl<P: Protocol> StreamView for Shared<P> {
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
        self.spawn::<Delta>(request, max_message_bytes)
    }

    /// Starts a state-of-the-world ADS stream.
    pub(crate) fn sotw(
        &self,
        request: http::Request<tonic::body::Body>,
        max_message_bytes: usize,
    ) -> Result<Frames, Status> {
        self.spawn::<Sotw>(request, max_message_bytes)
    }

    /// Admits a stream (its connection's stream count, its identity's memory) and starts
    /// its task.
    fn spawn<P: Protocol>(
        &self,
        request: http::Request<tonic::body::Body>,
        max_message_bytes: usize,
    ) -> Result<Frames, Status>
    where
        P::Response: Framed,
    {
        let ext = request.extensions();
        if let Some(refused) = crate::net::front_door::refusal_in(ext) {
            return Err(refused);
        }
        let info = ConnInfo::in_extensions(ext);
        let slot = info.map(|i| self.stream_slot(i)).transpose()?;
        let peer = match &self.verify {
            None => Peer::Unverified,
            Some(td) => Peer::Verified(td.clone(), info.and_then(|i| i.identity.clone())),
        };
        let expires = info.and_then(|i| i.not_after);
        let aged_at = info.and_then(|i| i.max_age_at);
        let conn_account: Option<Arc<ConnAccount>> = info.and_then(|i| i.account.clone());
        let account = conn_account.as_ref().map(|c| c.account().clone());
        let who: Arc<str> = account
            .as_ref()
            .map(|a| Arc::from(a.identity()))
            .unwrap_or_else(|| Arc::from("(not charged)"));
        let open_charge = self.charge_open(account.clone(), info)?;
        let read = ReadLimits {
            max_message: max_message_bytes,
            timeout: self.limits.message_timeout,
        };
        let inbound =
            Inbound::<P::Request>::new(request.into_body(), read, account.clone().map(Charge::new));
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
            first_syncs: self.first_syncs.clone(),
        };
        let (stop, limits) = (self.stop.clone(), self.limits);
        let out = Out {
            tx,
            queued: queued.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            let _slot = slot;
            let conn = ConnLife {
                stop,
                expires,
                aged_at,
                who,
            };
            if let Err(status) = drive::<P>(obs, peer, inbound, conn, (limits, names), &out).await {
                let _ = out.tx.send(Err(status)).await;
            }
        });
        Ok(Frames {
            rx,
            queued,
            open: open_charge.zip(conn_account),
        })
    }

    /// Counts a stream on its connection, or refuses it over the connection's limit.
    fn stream_slot(&self, info: &ConnInfo) -> Result<StreamSlot, Status> {
        let open = info.streams.fetch_add(1, Ordering::Relaxed);
        let slot = StreamSlot(info.streams.clone());
        if open < self.limits.streams_per_connection {
            return Ok(slot);
        }
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
        Err(Status::resource_exhausted(format!(
            "too many ADS streams on this connection ({open} open; --max-streams-per-connection {})",
            self.limits.streams_per_connection
        )))
    }

    /// Being open costs the stream's identity a fixed amount: charged, or the stream is
    /// refused over the memory budget.
    fn charge_open(
        &self,
        account: Option<Arc<Account>>,
        info: Option<&ConnInfo>,
    ) -> Result<Option<Charge>, Status> {
        let mut open_charge = account.map(Charge::new);
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
        Ok(open_charge)
    }
}

/// Where a stream reports what happened.
struct Obs {
    store: Arc<Store>,
    nacks: Arc<NackLog>,
    proxies: Arc<ProxyRegistry>,
    metrics: Arc<Metrics>,
    first_syncs: Arc<FirstSyncs>,
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

/// Runs one stream: admits its first request's node, then feeds the state machine its
/// requests, view and own versions and ticks until the stream ends.
async fn drive<P: Protocol>(
    obs: Obs,
    peer: Peer,
    mut inbound: Inbound<P::Request>,
    ConnLife {
        stop,
        expires,
        aged_at,
        who,
    }: ConnLife,
    (limits, names): (StreamLimits, NameBytes),
    tx: &Out,
) -> Result<(), Status>
where
    P::Response: Framed,
{
    if stop.is_stopped() {
        return Err(shutting_down());
    }
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    let expired = tokio::time::sleep(lifetime(expires));
    tokio::pin!(expired);
    let aged = tokio::time::sleep_until(aged_at.map_or_else(
        || tokio::time::Instant::now() + lifetime(None),
        |at| at + END_AFTER_GOAWAY,
    ));
    tokio::pin!(aged);
    let first = match inbound.message().await {
        Ok(Some(first)) => first,
        Ok(None) => return Ok(()),
        Err(e) => return Err(inbound_error(&obs, "(before its node)", &who, e)),
    };
    let apart = P::VIRTUAL_HOSTS_APART;
    let (identity, scope, mut attachment) = open_stream(&obs, &peer, P::node(&first), apart)?;
    let node = identity.node_id.clone();
    tracing::info!(node = %node, identity = %scope, stream = P::NAME, "proxy connected");
    let machine = Arc::new(Shared(Mutex::new(
        Stream::<P>::new(attachment.desired())
            .with_name_limit(limits.subscribed_names)
            .with_name_bytes(names)
            .with_full_resend(obs.store.full_resend()),
    )));
    let id = register(&obs, P::node(&first), &identity, &scope, machine.clone());
    let _registered = Registered(&obs.proxies, id);
    let ctx = Ctx {
        node: &node,
        scope: &scope,
        who: &who,
        tag: crate::xds::store::stream_tag(&scope, &node),
        obs: &obs,
        id,
    };
    let mut pending_since: Option<Instant> = Some(Instant::now());
    let mut initial = InitialSync::default();
    // A first sync waits its turn in a storm (a resuming proxy before one that starts);
    // streams already synced do not.
    let gate_key: Arc<str> = Arc::from(scope.as_str());
    let admitted = tokio::select! {
        a = obs.first_syncs.admit(&gate_key, P::resumes(&first)) => a,
        // A proxy that left while it waited gives up its place (the stream's task is
        // not dropped with it; nothing else notices before its turn).
        () = tx.tx.closed() => return Ok(()),
        () = &mut stopped => return Err(shutting_down()),
        () = &mut aged => return Err(aged_out()),
        () = &mut expired => return Err(cert_expired()),
    };
    let mut step = ctx.request(&machine, first)?;
    while emit(
        &ctx,
        &machine,
        attachment.view_key(),
        (&mut pending_since, &mut initial),
        tx,
        step,
    )
    .await
    {
        // The first sync is over once the proxy answered all it asked for (an Envoy asks
        // for listeners after its clusters; a resumed stream that was sent nothing, at once).
        if admitted.holds() {
            let m = machine.lock();
            if m.idle() && !m.waiting() {
                admitted.done();
            }
        }
        // Checked after every step too: a stream that was busy sending when its pod went
        // must not miss it.
        ctx.end_if_gone::<P>(&attachment.own.borrow())?;
        let waiting = machine.lock().waiting();
        step = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => ctx.request(&machine, req)?,
                Ok(None) => break,
                Err(e) => return Err(inbound_error(&obs, &node, &who, e)),
            },
            changed = attachment.own.changed() => {
                if changed.is_err() {
                    break;
                }
                ctx.own_changed(&machine, &mut attachment, &mut pending_since)?
            }
            changed = attachment.view.changed() => {
                if changed.is_err() {
                    break;
                }
                let view = attachment.view.borrow_and_update().clone();
                if let Some(since) = view.changed_at {
                    pending_since.get_or_insert(since);
                }
                machine.lock().on_view(view, Instant::now())
            }
            _ = tokio::time::sleep(TICK), if waiting => machine.lock().on_tick(Instant::now()),
            () = &mut stopped => {
                tracing::info!(node = %node, stream = P::NAME, "ending the stream: the control plane is shutting down");
                return Err(shutting_down());
            }
            () = &mut aged => {
                tracing::debug!(node = %node, stream = P::NAME, "ending the stream: its connection reached its maximum age");
                return Err(aged_out());
            }
            () = &mut expired => {
                tracing::info!(node = %node, stream = P::NAME, "ending the stream: its client certificate expired");
                return Err(cert_expired());
            }
        };
    }
    tracing::info!(node = %node, stream = P::NAME, "proxy disconnected");
    Ok(())
}

/// Admits the identity a stream's first request claims and attaches it to the store.
/// `apart`: the stream can carry virtual hosts apart (delta), so an Envoy that takes
/// them so gets them ([`translator::identity::takes_vhds`]).
fn open_stream(
    obs: &Obs,
    peer: &Peer,
    node: Option<&Node>,
    apart: bool,
) -> Result<(ProxyIdentity, String, Attachment), Status> {
    let mut identity = ProxyIdentity::from_node(node).map_err(|e| {
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            tracing::warn!(error = %e, suppressed, "refused xDS stream");
        }
        Status::invalid_argument(e.to_string())
    })?;
    identity.vhds = apart && obs.store.vhds() && node.is_some_and(translator::identity::takes_vhds);
    admit(&identity, peer, &obs.store)?;
    let scope = peer.scope(&identity);
    let attachment = obs.store.attach(&scope, &identity).map_err(|why| {
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            tracing::warn!(node = %identity.node_id, reason = %why, suppressed, "refused xDS stream: its pod does not run");
        }
        Status::permission_denied(why)
    })?;
    Ok((identity, scope, attachment))
}

/// Registers a stream with the proxy registry; returns its id.
fn register<P: Protocol>(
    obs: &Obs,
    node: Option<&Node>,
    identity: &ProxyIdentity,
    scope: &str,
    machine: Arc<Shared<P>>,
) -> u64 {
    obs.proxies.connect(ProxyInfo {
        node: NodeInfo::new(node, identity),
        identity: scope.to_string(),
        kind: match identity.kind {
            translator::identity::ProxyKind::Envoy => "envoy",
            translator::identity::ProxyKind::Grpc => "grpc",
        },
        stream: P::NAME,
        connected: SystemTime::now(),
        state: machine,
    })
}

/// Who a stream is, for what it reports.
struct Ctx<'a> {
    node: &'a str,
    scope: &'a str,
    /// Who the stream is charged to, for logs.
    who: &'a str,
    /// Unique per proxy (certificate identity and node id).
    tag: String,
    obs: &'a Obs,
    id: u64,
}

impl Ctx<'_> {
    /// Feeds a request to the stream; ends the stream when it broke a limit.
    fn request<P: Protocol>(
        &self,
        machine: &Shared<P>,
        req: P::Request,
    ) -> Result<Step<P::Response>, Status> {
        let mut m = machine.lock();
        let step = m.on_wire(req, Instant::now());
        let Some(Refusal { limit, reason }) = m.take_refusal() else {
            return Ok(step);
        };
        self.obs.metrics.refused(limit);
        if let Some(suppressed) = REFUSAL_LOG.allow() {
            let (node, identity) = (self.node, self.who);
            tracing::warn!(node, identity, limit, reason = %reason, suppressed, "ending an ADS stream: over a limit");
        }
        Err(Status::resource_exhausted(reason))
    }

    /// Ends the stream when its proxy's own version says so (its pod went).
    fn end_if_gone<P: Protocol>(&self, own: &OwnVersion) -> Result<(), Status> {
        let Some(why) = &own.ended else {
            return Ok(());
        };
        tracing::info!(node = %self.node, stream = P::NAME, reason = %why, "ending the stream");
        Err(Status::permission_denied(why.to_string()))
    }

    /// Feeds a new own version to the stream, and the view it moved to if it moved (its
    /// pod's egress changed).
    fn own_changed<P: Protocol>(
        &self,
        machine: &Shared<P>,
        attachment: &mut Attachment,
        pending_since: &mut Option<Instant>,
    ) -> Result<Step<P::Response>, Status> {
        let own = attachment.own.borrow_and_update().clone();
        self.end_if_gone::<P>(&own)?;
        if let Some(since) = own.changed_at {
            pending_since.get_or_insert(since);
        }
        let mut step = machine.lock().on_own(own.clone(), Instant::now());
        if let Some(view) = own.view.clone().filter(|v| v != attachment.view_key()) {
            attachment.switch_view(view);
            let v = attachment.view.borrow_and_update().clone();
            step.extend(machine.lock().on_view(v, Instant::now()));
        }
        Ok(step)
    }
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
    async fn send<R: Framed>(&self, resp: &R) -> bool {
        let go = async {
            // A body already encoded for another proxy is not encoded again, nor walked
            // to learn its length.
            let kept = resp.kept_body();
            if let Some(q) = &self.queued {
                let gone = || self.tx.is_closed() || self.stop.is_stopped();
                if !q.admit(resp.frame_len(&kept), gone).await {
                    return false;
                }
            }
            let Framing { head, shared } = resp.framing(kept);
            let Some(body) = shared else {
                return self.tx.send(Ok(head)).await.is_ok();
            };
            // Both pieces or neither: a head cut off from its body would end the stream
            // with a message cut short.
            let Ok(mut permits) = self.tx.reserve_many(2).await else {
                return false;
            };
            match (permits.next(), permits.next()) {
                (Some(first), Some(second)) => {
                    first.send(Ok(head));
                    second.send(Ok(body));
                    true
                }
                _ => false,
            }
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
async fn emit<P: Protocol>(
    ctx: &Ctx<'_>,
    machine: &Shared<P>,
    view: &translator::model::ViewKey,
    (pending_since, initial): (&mut Option<Instant>, &mut InitialSync),
    tx: &Out,
    Step { responses, events }: Step<P::Response>,
) -> bool
where
    P::Response: Framed,
{
    let obs = ctx.obs;
    let answered = events
        .iter()
        .any(|e| matches!(e, Event::Ack { .. } | Event::Nack(_)));
    let idle = answered.then(|| {
        let m = machine.lock();
        m.idle().then(|| m.responded(XdsType::Listener))
    });
    if let Some(Some(listeners)) = idle {
        obs.proxies.acked(ctx.id);
        if let Some(since) = pending_since.take() {
            obs.metrics
                .convergence
                .observe(since.elapsed().as_secs_f64());
        }
        initial.answered(listeners, &obs.metrics);
    }
    for event in events {
        match event {
            Event::Sent {
                kind, resources, ..
            } => {
                initial.sent();
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
        if !tx.send(&resp).await {
            return false;
        }
    }
    true
}
