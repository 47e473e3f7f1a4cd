//! The stream skeleton SotW and delta share: per-type state ([`TypeState`] in a
//! [`PerType`]), one response in flight per type, ACK and NACK bookkeeping with the
//! rejection record, what the proxy holds, the make-before-break ordering wait, view and
//! own version intake, ticks, refusals and [`Event`]s.
//!
//! What differs is a [`Protocol`]: how a request is read (`read`), which response is due
//! for a type (`candidate`), how it is framed (`response`), and the few places where the
//! variants keep different records (rejections, re-warming endpoints).

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status;
use translator::encoded::Encoded;
use xds_types::{PerType, XdsType};

use crate::xds::fanout::{Desired, OwnVersion, ViewVersion};
use crate::xds::stream::HashSet;
use crate::xds::stream::blame::{policy_sources, sources_of, suspects};
use crate::xds::stream::event::{Event, Refusal, Rejection, ResourceView};
use crate::xds::stream::held::{Held, HeldSet};
use crate::xds::stream::limits::bound_nack_text;
use crate::xds::stream::names::{NameBytes, NameSet};
use crate::xds::stream::order::{OrderWait, Warming, own_changes, ready, released};
use crate::xds::wire::shared_body::Bodies;

/// Requests naming this many names intern them by hash ([`Stream::intern_among`]).
pub(crate) const BULK_NAMES: usize = 64;

#[cfg(test)]
thread_local! {
    /// Names interned one by one on this thread (the tests' check that a fast path is
    /// taken).
    pub(crate) static INTERNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// What one ADS variant does its own way.
pub(crate) trait Protocol: Sized + Send + 'static {
    /// A request as read off the wire.
    type Request: prost::Message + Default + Send + 'static;
    /// A response, ready to frame.
    type Response: Send + Sync + 'static;
    /// Per-type state only this variant keeps.
    type Extra: Default + fmt::Debug + Send;
    /// The variant's name in logs and the registry (`sotw`, `delta`).
    const NAME: &'static str;
    /// Whether the ordering wait counts only the Clusters a proxyless gRPC client named.
    const NAMED_CLUSTERS_ONLY: bool;
    /// Whether an Envoy that can may take virtual hosts apart (VHDS is delta-only).
    const VIRTUAL_HOSTS_APART: bool;

    /// The node a request carries (the first request of a stream must).
    fn node(req: &Self::Request) -> Option<&Node>;
    /// Whether a stream's first request says the proxy holds config from an earlier
    /// stream (it resumes, serving traffic by that config) rather than starting.
    fn resumes(first: &Self::Request) -> bool;
    /// Handles one request as read off the wire.
    fn read(s: &mut Stream<Self>, req: Self::Request, now: Instant) -> Step<Self::Response>;
    /// The response due for `kind` (subscribed, nothing in flight), ignoring ordering.
    fn candidate(s: &mut Stream<Self>, kind: XdsType) -> Option<Sent>;
    /// The response that carries `sent`, its body shared through `bodies`.
    fn response(kind: XdsType, sent: &Sent, bodies: Bodies) -> Self::Response;
    /// The endpoints to send again after `sent`, a response of Clusters.
    fn rewarm(s: &Stream<Self>, sent: &Sent) -> Vec<Arc<str>>;
    /// Before an accepted response's resources are held.
    fn before_hold(s: &mut Stream<Self>, kind: XdsType, sent: &Sent);
    /// After an accepted response's resources are held.
    fn accepted(st: &mut TypeState<Self::Extra>, sent: Sent);
    /// Records a rejection of `sent`.
    fn rejected(st: &mut TypeState<Self::Extra>, sent: &Sent, error: &Arc<str>);
    /// Undoes what building `sent` recorded, now that it is held back for ordering: it is
    /// built again, from its names, on the next flush.
    fn deferred(st: &mut TypeState<Self::Extra>, sent: &Sent);
    /// Forgets the versions the proxy refused: it moved to another view (a containment
    /// trial), whose resources it must judge even where one equals a version it refused
    /// before (with virtual hosts apart, a trial's host is often exactly that).
    fn forget_rejections(st: &mut TypeState<Self::Extra>);
    /// The error the proxy gave for `want`, if it rejected the version it should hold.
    fn rejection_of(
        st: &TypeState<Self::Extra>,
        want: &Encoded,
        held: Option<&str>,
    ) -> Option<Arc<str>>;
}

/// A response built and perhaps in flight.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sent {
    /// Its nonce, once sent.
    pub(crate) nonce: String,
    /// Its version (SotW: of what the proxy holds once it applies it; delta: a digest of
    /// what it carries).
    pub(crate) version: String,
    /// SotW: the digest `version` spells.
    pub(crate) digest: u64,
    /// Shared with the response that carries it (no per-resource reference counts). In
    /// name order: both protocols sort what they send, so what a proxy accepts is held
    /// by one walk beside the view's map ([`super::held::HeldSet::fill_in_order`]).
    pub(crate) resources: Arc<[Arc<Encoded>]>,
    /// Names the proxy must drop (delta).
    pub(crate) removed: Vec<Arc<str>>,
    /// The whole set of its type (SotW LDS and CDS).
    pub(crate) full: bool,
}

impl Sent {
    /// Whether it carries a resource named `name`.
    pub(crate) fn carries(&self, name: &str) -> bool {
        // In name order (see `resources`).
        self.resources
            .binary_search_by(|r| (*r.name).cmp(name))
            .is_ok()
    }
}

/// What a stream keeps of one type.
#[derive(Debug, Default)]
pub(crate) struct TypeState<X> {
    /// The proxy has asked for the type.
    pub(crate) subscribed: bool,
    /// Answered at least once.
    pub(crate) responded: bool,
    pub(crate) wildcard: bool,
    /// Names subscribed explicitly.
    pub(crate) names: NameSet,
    pub(crate) held: HeldSet,
    /// Names to look at on the next flush.
    pub(crate) dirty: HashSet<Arc<str>>,
    /// Look at everything on the next flush.
    pub(crate) resync: bool,
    /// Send the next response even if nothing changed (the benchmark baseline).
    pub(crate) force: bool,
    /// Names to send even if the proxy holds their version.
    pub(crate) force_names: HashSet<Arc<str>>,
    /// The nonce of the last response sent.
    pub(crate) last_nonce: Option<String>,
    pub(crate) inflight: Option<Sent>,
    /// What only the variant keeps.
    pub(crate) x: X,
}

impl<X> TypeState<X> {
    pub(crate) fn in_scope(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// What one call produced.
#[derive(Debug)]
pub(crate) struct Step<R> {
    /// Responses to send, in order.
    pub(crate) responses: Vec<R>,
    /// What happened.
    pub(crate) events: Vec<Event>,
}

impl<R> Default for Step<R> {
    fn default() -> Self {
        Step {
            responses: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl<R> Step<R> {
    /// Adds what `other` produced after what this did.
    pub(crate) fn extend(&mut self, other: Step<R>) {
        self.responses.extend(other.responses);
        self.events.extend(other.events);
    }

    /// Records a request ignored.
    pub(crate) fn ignore(&mut self, type_url: String, reason: String) {
        self.events.push(Event::Ignored { type_url, reason });
    }
}

/// One ADS stream of variant `P`.
pub(crate) struct Stream<P: Protocol> {
    pub(super) desired: Desired,
    pub(super) types: PerType<TypeState<P::Extra>>,
    next_nonce: u64,
    wait: OrderWait,
    /// The new Clusters of the Cluster response in flight, until the proxy asks for
    /// their endpoints.
    warming: Option<Warming>,
    pub(super) name_limit: usize,
    /// The weight of the subscriptions, bounded and charged.
    pub(super) name_bytes: NameBytes,
    pub(super) refusal: Option<Refusal>,
    /// Benchmark baseline: resend every resource of a type on any change.
    pub(super) full_resend: bool,
}

impl<P: Protocol> Stream<P> {
    /// A stream that will serve `desired`.
    pub(crate) fn new(desired: Desired) -> Self {
        Stream {
            desired,
            types: PerType::default(),
            next_nonce: 0,
            wait: OrderWait::default(),
            warming: None,
            name_limit: usize::MAX,
            name_bytes: NameBytes::default(),
            refusal: None,
            full_resend: false,
        }
    }

    /// Caps the names one type may subscribe to; a request over it sets a refusal.
    pub(crate) fn with_name_limit(mut self, limit: usize) -> Self {
        self.name_limit = limit;
        self
    }

    /// Bounds the bytes of names the stream may subscribe to over every type, and
    /// charges them before they are stored; a request over either sets a refusal.
    pub(crate) fn with_name_bytes(mut self, name_bytes: NameBytes) -> Self {
        self.name_bytes = name_bytes;
        self
    }

    /// Resends every resource of a type on any change (the benchmark's baseline).
    pub(crate) fn with_full_resend(mut self, on: bool) -> Self {
        self.full_resend = on;
        self
    }

    /// Why the stream must end, if a request broke a limit.
    pub(crate) fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    /// What the stream serves.
    #[cfg(test)]
    pub(crate) fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Types the proxy has asked for.
    pub(crate) fn subscribed(&self) -> Vec<XdsType> {
        self.types
            .iter()
            .filter(|(_, st)| st.subscribed)
            .map(|(k, _)| k)
            .collect()
    }

    /// Whether no response is waiting for an answer.
    pub(crate) fn idle(&self) -> bool {
        self.types.values().all(|s| s.inflight.is_none())
    }

    /// Whether a response of `kind` was ever sent on this stream.
    pub(crate) fn responded(&self, kind: XdsType) -> bool {
        self.types[kind].responded
    }

    /// Whether an ordering wait is running (the caller should tick).
    pub(crate) fn waiting(&self) -> bool {
        self.wait.waiting()
    }

    /// What the proxy should hold of `kind` in its subscription, with the version it
    /// holds (if any), whether a response carrying it is in flight, and the error it gave
    /// if it rejected the current version; then what it holds and should drop.
    pub(crate) fn resources(&self, kind: XdsType) -> Vec<ResourceView> {
        let st = &self.types[kind];
        let inflight: HashSet<&str> = st
            .inflight
            .iter()
            .flat_map(|s| s.resources.iter().map(|r| &*r.name))
            .collect();
        let mut out = Vec::new();
        let mut seen = HashSet::default();
        if st.subscribed {
            for r in self.wanted(kind) {
                seen.insert(r.name.clone());
                let held = st.held.get(&r.name).map(|h| h.version().to_string());
                out.push(ResourceView {
                    name: r.name.clone(),
                    rejected: P::rejection_of(st, &r, held.as_deref()),
                    held,
                    inflight: inflight.contains(&*r.name),
                    want: Some(r),
                });
            }
        }
        for (n, h) in st.held.iter().filter(|(n, _)| !seen.contains(*n)) {
            out.push(ResourceView {
                name: n.clone(),
                want: None,
                held: Some(h.version().to_string()),
                inflight: false,
                rejected: None,
            });
        }
        out
    }

    /// What the proxy should hold of `kind`, by its subscription.
    pub(crate) fn wanted(&self, kind: XdsType) -> Vec<Arc<Encoded>> {
        let st = &self.types[kind];
        if st.wildcard {
            self.desired.all(kind).cloned().collect()
        } else {
            st.names
                .iter()
                .filter_map(|n| self.desired.get(kind, n).cloned())
                .collect()
        }
    }

    /// The names of `kind` subscribed.
    #[cfg(test)]
    pub(crate) fn names_of(&self, kind: XdsType) -> NameSet {
        self.types[kind].names.clone()
    }

    /// The bytes and count of `kind`'s names, as weighed.
    #[cfg(test)]
    pub(crate) fn name_bytes_of(&self, kind: XdsType) -> (usize, usize) {
        self.name_bytes.of(kind)
    }

    /// How many held entries of `kind` differ from the view's shared map.
    #[cfg(test)]
    pub(crate) fn held_overlay(&self, kind: XdsType) -> usize {
        self.types[kind].held.overlay_len()
    }

    /// The shared name for `name` of `kind`, or a new one.
    pub(crate) fn intern(&self, kind: XdsType, name: &str) -> Arc<str> {
        self.intern_among(1, kind, name)
    }

    /// [`Stream::intern`] for one of `count` names a request carries: many are looked
    /// up by hash.
    pub(crate) fn intern_among(&self, count: usize, kind: XdsType, name: &str) -> Arc<str> {
        #[cfg(test)]
        INTERNED.with(|n| n.set(n.get() + 1));
        let found = if count >= BULK_NAMES {
            self.desired.name_of_many(kind, name)
        } else {
            self.desired.name_of(kind, name)
        };
        found.unwrap_or_else(|| Arc::from(name))
    }

    pub(crate) fn hold(&mut self, kind: XdsType, name: Arc<str>, held: Held) {
        let old = self.types[kind].held.insert(name, held);
        self.release(kind, old);
    }

    pub(crate) fn unhold(&mut self, kind: XdsType, name: &str) {
        let old = self.types[kind].held.remove(name);
        self.release(kind, old);
    }

    /// `old` is no longer held: what it pointed at may be removable now.
    fn release(&mut self, holder: XdsType, old: Option<Held>) {
        if let Some((target, freed)) = old
            .as_ref()
            .and_then(Held::resource)
            .and_then(|r| released(&self.desired, holder, r))
        {
            self.types[target].dirty.extend(freed);
        }
    }

    /// Records a request over a limit; the caller ends the stream.
    pub(crate) fn refuse(&mut self, refusal: Refusal) {
        self.refusal = Some(refusal);
    }

    /// The served type a request names, or None (recorded as ignored).
    pub(crate) fn served_type(type_url: &str, step: &mut Step<P::Response>) -> Option<XdsType> {
        let kind = XdsType::from_type_url(type_url);
        if kind.is_none() {
            step.ignore(crds::text::clip(type_url, 256), "type not served".into());
        }
        kind
    }

    /// Handles one request as read off the wire.
    pub(crate) fn on_wire(&mut self, req: P::Request, now: Instant) -> Step<P::Response> {
        P::read(self, req, now)
    }

    /// The proxy answered `sent`: accepted it, or rejected it with `error`.
    pub(crate) fn answer(
        &mut self,
        kind: XdsType,
        sent: Sent,
        error: Option<&Status>,
        step: &mut Step<P::Response>,
    ) {
        match error {
            None => self.accept(kind, sent, step),
            Some(status) => self.reject(kind, sent, &status.message, step),
        }
    }

    fn accept(&mut self, kind: XdsType, sent: Sent, step: &mut Step<P::Response>) {
        // The view's whole list (a first answer, mostly): what is learnt of it is kept.
        let list = (self.desired.view.list_made(kind))
            .filter(|l| Arc::ptr_eq(&l.resources, &sent.resources));
        let whole = list.is_some();
        let accepted = match list {
            Some(list) => list
                .policy
                .get_or_init(|| policy_sources(kind, list.resources.iter()))
                .clone(),
            None => policy_sources(kind, sent.resources.iter()),
        };
        step.events.push(Event::Ack {
            kind,
            version: sent.version.clone(),
            accepted,
        });
        P::before_hold(self, kind, &sent);
        match self.desired.view.maps.shared(kind).cloned() {
            // A first sync of the view's whole list: held as it is.
            Some(map) if whole && self.types[kind].held.is_fresh() => {
                self.types[kind].held.fill_whole(map);
            }
            // A first sync: nothing held, nothing to release.
            Some(map) if self.types[kind].held.fills(sent.resources.len(), &map) => {
                self.types[kind].held.fill_in_order(&sent.resources, &map);
            }
            _ => {
                for r in sent.resources.iter() {
                    self.hold(kind, r.name.clone(), Held::Res(r.clone()));
                }
            }
        }
        for name in &sent.removed {
            self.unhold(kind, name);
        }
        if let Some(map) = self.desired.view.maps.shared(kind).cloned() {
            self.types[kind].held.compact(&map);
        }
        P::accepted(&mut self.types[kind], sent);
    }

    fn reject(&mut self, kind: XdsType, sent: Sent, message: &str, step: &mut Step<P::Response>) {
        let error: Arc<str> = Arc::from(bound_nack_text(message));
        let st = &mut self.types[kind];
        P::rejected(st, &sent, &error);
        // Removals it refused are still held.
        let held = &st.held;
        let (suspects, precise) = suspects(kind, sent.resources.iter(), |name| {
            held.get(name).and_then(|h| h.resource())
        });
        step.events.push(Event::Nack(Rejection {
            kind,
            version: sent.version,
            resources: sent.resources.iter().map(|r| r.name.to_string()).collect(),
            error: error.to_string(),
            sources: sources_of(sent.resources.iter()),
            suspects,
            precise,
        }));
    }

    /// Takes a new version of the stream's view.
    pub(crate) fn on_view(&mut self, view: Arc<ViewVersion>, now: Instant) -> Step<P::Response> {
        let same = view.key == self.desired.view.key;
        if !same {
            for kind in XdsType::ALL {
                P::forget_rejections(&mut self.types[kind]);
            }
        }
        let changed = same
            .then(|| view.changed_since(self.desired.view.version))
            .flatten();
        for (i, kind) in translator::incremental::ViewMaps::SHARED
            .into_iter()
            .enumerate()
        {
            let full = self.full_resend;
            let old = self.desired.view.maps.shared(kind).cloned();
            let new = view.maps.shared(kind).cloned();
            let st = &mut self.types[kind];
            // What it holds stays expressed against the view's current map.
            if let (Some(names), Some(old), Some(new)) = (&changed, old, new)
                && st.held.based_on(&old)
            {
                st.held.rebase(&new, &names[i]);
            }
            match &changed {
                Some(names) if names[i].is_empty() => {}
                Some(names) if !full => st.dirty.extend(names[i].iter().cloned()),
                Some(_) => {
                    st.resync = true;
                    st.force = true;
                }
                None => st.resync = true,
            }
        }
        self.desired.view = view;
        self.on_tick(now)
    }

    /// Takes a new version of the proxy's own resources.
    pub(crate) fn on_own(&mut self, own: Arc<OwnVersion>, now: Instant) -> Step<P::Response> {
        for kind in [XdsType::Secret, XdsType::Cluster, XdsType::Listener] {
            let names = own_changes(kind, &self.desired.own, &own);
            let full = self.full_resend && !names.is_empty();
            let st = &mut self.types[kind];
            st.dirty.extend(names);
            st.resync |= full;
        }
        self.desired.own = own;
        self.on_tick(now)
    }

    /// Re-checks waits that may have run out.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Step<P::Response> {
        let mut step = Step::default();
        self.flush(now, &mut step);
        step
    }

    /// Sends what is due, type by type in push order: one response in flight per type,
    /// and the types that point at Clusters (Listeners, Routes, virtual hosts) not while
    /// a Secret or Cluster response is in flight nor before the Clusters they point at
    /// are held and those Clusters' endpoints held or sent ahead of them (until the wait
    /// runs out).
    pub(crate) fn flush(&mut self, now: Instant, step: &mut Step<P::Response>) {
        let mut lower_busy = false;
        let mut blocked = false;
        for kind in XdsType::ALL {
            let stage_one = kind.refers_to() == Some(XdsType::Cluster);
            // Endpoints in flight hold nothing back: what points at them goes after them
            // on the same stream once they are sent ([`Stream::may_go`]); nor do new
            // Clusters the proxy has shown it took ([`Warming`]).
            let holds_back = !stage_one
                && kind != XdsType::Endpoint
                && !(kind == XdsType::Cluster && self.clusters_taken());
            let st = &self.types[kind];
            if !st.subscribed || st.inflight.is_some() {
                lower_busy |= holds_back && st.inflight.is_some();
                continue;
            }
            if stage_one && lower_busy {
                continue;
            }
            let Some(sent) = P::candidate(self, kind) else {
                continue;
            };
            if !stage_one {
                lower_busy |= holds_back;
            } else if !self.may_go(&sent, now) {
                blocked = true;
                self.defer(kind, &sent);
                continue;
            }
            self.send(kind, sent, step);
        }
        if !blocked {
            self.wait.clear();
        }
    }

    /// Whether a Listener or Route response may go: the Clusters it points at are held,
    /// and their endpoints are held or in flight; or the wait ran out.
    ///
    /// Endpoints in flight count: ADS carries every type on one ordered stream, and a
    /// proxy applies a response before it reads the next. Envoy ends a new Cluster's
    /// warming as it applies its endpoints (or as it rejects them, with none), before
    /// it reads the route that follows; a route held back for the endpoints' ACK cost
    /// every new Service and canary backend one more round trip per proxy.
    fn may_go(&mut self, sent: &Sent, now: Instant) -> bool {
        // A client that names its Clusters (proxyless gRPC) asks for a route's clusters
        // only once it has the route: it cannot hold what it has not asked for, so only
        // the clusters it asked for are waited on.
        if self.holds_all(XdsType::Cluster) && self.holds_all(XdsType::Endpoint) {
            // Every ref is held (or sent ahead) or not meant to exist: no name to look up
            // (a sidecar's first virtual hosts point at a thousand clusters it took just
            // before; a SotW table, at every cluster, one of them new).
            return true;
        }
        let clusters = &self.types[XdsType::Cluster];
        let named = P::NAMED_CLUSTERS_ONLY && self.desired.view.key.grpc;
        ready(
            &self.desired,
            |k, n, map| self.types[k].held.holds_from(n, map) || self.sent_ahead(k, n),
            sent.resources
                .iter()
                .flat_map(|r| r.refs.iter())
                .filter(|c| !named || clusters.in_scope(c)),
        ) || self.wait.expired(now)
    }

    /// Whether `name` of `kind` is an endpoint resource in the response in flight, or a
    /// Cluster in flight that the proxy has shown it took: as good as held for what goes
    /// after it ([`Stream::may_go`]).
    fn sent_ahead(&self, kind: XdsType, name: &str) -> bool {
        (kind == XdsType::Endpoint || (kind == XdsType::Cluster && self.clusters_taken()))
            && self.types[kind]
                .inflight
                .as_ref()
                .is_some_and(|s| s.carries(name))
    }

    /// Whether the proxy took every new Cluster of the Cluster response in flight
    /// (`warming` is that response's, set as it is sent).
    fn clusters_taken(&self) -> bool {
        self.types[XdsType::Cluster].inflight.is_some()
            && self.warming.as_ref().is_some_and(Warming::taken)
    }

    /// Whether new Clusters in flight wait on the proxy asking for their endpoints.
    pub(super) fn follows_endpoint_asks(&self) -> bool {
        self.warming.is_some()
    }

    /// The proxy newly asked for endpoints `names`: if they are those of new Clusters in
    /// flight, it took those Clusters ([`Warming`]).
    pub(super) fn asked_for_endpoints(&mut self, names: &[Arc<str>]) {
        if let Some(w) = &mut self.warming {
            w.asked(names);
        }
    }

    /// Whether the proxy holds (or was sent ahead) every resource of `kind` it should:
    /// the view's (the held set's base, nothing of it marked not held) and its own.
    fn holds_all(&self, kind: XdsType) -> bool {
        let held = &self.types[kind].held;
        let ahead = |n: &str| self.sent_ahead(kind, n);
        self.desired
            .view
            .maps
            .of(kind)
            .is_none_or(|m| held.covers_but(m, ahead))
            && self
                .desired
                .own
                .of(kind)
                .is_none_or(|m| m.keys().all(|n| held.contains_key(n) || ahead(n)))
    }

    /// A blocked response is looked at again on the next flush.
    fn defer(&mut self, kind: XdsType, sent: &Sent) {
        let st = &mut self.types[kind];
        P::deferred(st, sent);
        st.dirty
            .extend(sent.resources.iter().map(|r| r.name.clone()));
        st.dirty.extend(sent.removed.iter().cloned());
        if sent.full {
            st.resync = true;
        }
    }

    fn send(&mut self, kind: XdsType, mut sent: Sent, step: &mut Step<P::Response>) {
        debug_assert!(sent.resources.is_sorted_by(|a, b| a.name < b.name));
        self.next_nonce += 1;
        sent.nonce = self.next_nonce.to_string();
        let bytes: usize = sent.resources.iter().map(|r| r.any.value.len()).sum();
        let bodies = Bodies(Some(self.desired.view.bodies.clone()));
        step.responses.push(P::response(kind, &sent, bodies));
        // Envoy re-warms a changed Cluster and waits for its endpoints: send them again
        // even though they did not change.
        if kind == XdsType::Cluster {
            let eds = &self.types[XdsType::Endpoint];
            self.warming =
                Warming::of(&sent.resources, &self.types[kind].held, |e| eds.in_scope(e));
            let rewarm = P::rewarm(self, &sent);
            let eds = &mut self.types[XdsType::Endpoint];
            for name in rewarm {
                eds.force_names.insert(name.clone());
                eds.dirty.insert(name);
            }
        }
        step.events.push(Event::Sent {
            kind,
            resources: sent.resources.len(),
            removed: sent.removed.len(),
            bytes,
        });
        let st = &mut self.types[kind];
        st.last_nonce = Some(sent.nonce.clone());
        st.responded = true;
        st.inflight = Some(sent);
    }
}
