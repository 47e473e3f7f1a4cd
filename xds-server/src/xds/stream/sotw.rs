//! State-of-the-world ADS. Listeners and Clusters are sent as whole sets, as the protocol
//! requires; RouteConfigurations, ClusterLoadAssignments and Secrets are named
//! subscriptions, and a response carries only the named resources that changed.
//!
//! A response's version is an order-independent digest of everything of that type the
//! proxy holds once it applies the response (kept incrementally, so computing it costs
//! what changed). The same config has the same version across control-plane restarts,
//! so a reconnecting proxy whose `version_info` matches is not sent it again.
//!
//! Legacy wildcard (an empty name list meaning "everything" for LDS and CDS) applies only
//! before the client ever named a resource: after that, an empty list means none.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

use crate::xds::wire::frames::SotwResponse;
use crate::xds::wire::sotw_request::SotwRequest;
use translator::encoded::{Encoded, element_digest};
use xds_types::XdsType;

use super::{
    Event, Held, HeldSet, NameBytes, NameSet, OrderWait, Refusal, Rejection, ResourceView, ready,
};
use crate::xds::fanout::{Desired, OwnVersion, ViewVersion};

/// A response in flight.
#[derive(Clone, Debug)]
struct Sent {
    version: String,
    digest: u64,
    resources: Vec<Arc<Encoded>>,
    /// The whole set of its type (LDS, CDS), or only changed named resources.
    full: bool,
}

#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    wildcard: bool,
    /// The client has named resources at least once.
    ever_named: bool,
    names: NameSet,
    /// Signature of `names` (see `same_names`).
    names_sig: u64,
    /// Digest of the raw name list the subscription was last taken from (see `on_wire`).
    names_digest: Option<u64>,
    last_nonce: Option<String>,
    inflight: Option<Sent>,
    held: HeldSet,
    held_digest: u64,
    acked_version: Option<String>,
    /// Versions the proxy rejected lately (a few: a client alternating between
    /// subscriptions must not get a fresh response to reject every time).
    rejected: VecDeque<String>,
    /// The error of the last rejection.
    error: Option<Arc<str>>,
    /// The version a reconnecting proxy said it holds, until matched.
    client_version: Option<String>,
    dirty: HashSet<Arc<str>>,
    resync: bool,
    /// Send the next response even if its version is unchanged.
    force: bool,
    /// Named resources to send even if unchanged (endpoints of a re-warming cluster).
    force_names: HashSet<Arc<str>>,
    responded: bool,
}

impl TypeState {
    fn in_scope(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct Step {
    /// Responses to send, in order.
    pub responses: Vec<SotwResponse>,
    /// What happened.
    pub events: Vec<Event>,
}

/// One SotW ADS stream.
#[derive(Debug)]
pub struct SotwStream {
    desired: Desired,
    types: [TypeState; 5],
    next_nonce: u64,
    wait: OrderWait,
    name_limit: usize,
    /// The weight of the subscriptions, bounded and charged.
    name_bytes: NameBytes,
    refusal: Option<Refusal>,
    full_resend: bool,
}

/// One name's part of a subscription signature: its shared pointer, spread by an odd
/// multiplier (a bijection, so two different names never give the same part).
fn name_sig(name: &Arc<str>) -> u64 {
    (Arc::as_ptr(name).cast::<u8>() as usize as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn hex(d: u64) -> String {
    format!("{d:016x}")
}

fn digest<'a>(resources: impl IntoIterator<Item = &'a Arc<Encoded>>) -> u64 {
    resources
        .into_iter()
        .fold(0, |d, r| d ^ element_digest(&r.name, r.hash))
}

impl SotwStream {
    /// A stream that will serve `desired`.
    pub fn new(desired: Desired) -> Self {
        SotwStream {
            desired,
            types: Default::default(),
            next_nonce: 0,
            wait: OrderWait::default(),
            name_limit: usize::MAX,
            name_bytes: NameBytes::default(),
            refusal: None,
            full_resend: false,
        }
    }

    /// Caps the names one type may subscribe to; a request over it sets a refusal.
    pub fn with_name_limit(mut self, limit: usize) -> Self {
        self.name_limit = limit;
        self
    }

    /// Bounds the bytes of names the stream may subscribe to over every type, and
    /// charges them to `charge` before they are stored; a request over either sets a
    /// refusal.
    pub(crate) fn with_name_bytes(mut self, name_bytes: NameBytes) -> Self {
        self.name_bytes = name_bytes;
        self
    }

    /// Resends every resource of a type on any change (the benchmark's baseline).
    pub fn with_full_resend(mut self, on: bool) -> Self {
        self.full_resend = on;
        self
    }

    /// Why the stream must end, if a request broke a limit.
    pub fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    fn st(&self, kind: XdsType) -> &TypeState {
        &self.types[kind.index()]
    }

    fn st_mut(&mut self, kind: XdsType) -> &mut TypeState {
        &mut self.types[kind.index()]
    }

    /// What the stream serves.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Types the proxy has asked for.
    pub fn subscribed(&self) -> Vec<XdsType> {
        XdsType::ALL
            .into_iter()
            .filter(|k| self.st(*k).subscribed)
            .collect()
    }

    /// Whether no response is waiting for an answer.
    pub fn idle(&self) -> bool {
        self.types.iter().all(|s| s.inflight.is_none())
    }

    /// Whether an ordering wait is running (the caller should tick).
    pub fn waiting(&self) -> bool {
        self.wait.waiting()
    }

    /// The version the proxy last accepted, per type.
    pub fn acked_versions(&self) -> Vec<(XdsType, String)> {
        XdsType::ALL
            .into_iter()
            .filter_map(|k| self.st(k).acked_version.clone().map(|v| (k, v)))
            .collect()
    }

    /// What the proxy should hold of `kind` in its subscription, and where each stands.
    pub fn resources(&self, kind: XdsType) -> Vec<ResourceView> {
        let st = self.st(kind);
        let inflight: HashSet<&str> = st
            .inflight
            .iter()
            .flat_map(|s| s.resources.iter().map(|r| &*r.name))
            .collect();
        let rejected_now = st.error.clone().filter(|_| !st.rejected.is_empty());
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        if st.subscribed {
            for r in self.wanted(kind) {
                seen.insert(r.name.clone());
                let held = st.held.get(&r.name).map(|h| h.version().to_string());
                let current = held.as_deref() == Some(r.version.as_str());
                out.push(ResourceView {
                    name: r.name.clone(),
                    want: Some(r.clone()),
                    held,
                    inflight: inflight.contains(&*r.name),
                    rejected: rejected_now.clone().filter(|_| !current),
                });
            }
        }
        for (n, h) in st.held.iter() {
            if !seen.contains(n) {
                out.push(ResourceView {
                    name: n.clone(),
                    want: None,
                    held: Some(h.version().to_string()),
                    inflight: false,
                    rejected: None,
                });
            }
        }
        out
    }

    /// What the proxy should hold of `kind`, by its subscription.
    fn wanted(&self, kind: XdsType) -> Vec<Arc<Encoded>> {
        let st = self.st(kind);
        if st.wildcard {
            self.desired.all(kind).cloned().collect()
        } else {
            st.names
                .iter()
                .filter_map(|n| self.desired.get(kind, n).cloned())
                .collect()
        }
    }

    /// How many held entries of `kind` differ from the view's shared map.
    #[cfg(test)]
    pub(crate) fn held_overlay(&self, kind: XdsType) -> usize {
        self.st(kind).held.overlay_len()
    }

    fn held_here(&self, kind: XdsType, name: &str) -> bool {
        self.st(kind).held.contains_key(name)
    }

    fn hold(&mut self, kind: XdsType, held: Held, name: Arc<str>) {
        let old = self.st_mut(kind).held.insert(name, held);
        self.release(kind, old);
    }

    fn unhold(&mut self, kind: XdsType, name: &str) {
        let old = self.st_mut(kind).held.remove(name);
        self.release(kind, old);
    }

    /// `old` is no longer held: what it pointed at may be removable now.
    fn release(&mut self, holder: XdsType, old: Option<Held>) {
        if let Some((target, freed)) = old
            .as_ref()
            .and_then(Held::resource)
            .and_then(|r| super::released(&self.desired, holder, r))
        {
            self.st_mut(target).dirty.extend(freed);
        }
    }

    /// Handles one request as read off the wire. Its names are decoded only if their
    /// digest differs from the subscription last taken for the type (a SotW ACK repeats
    /// the whole subscription; see [`SotwRequest`]).
    pub fn on_wire(&mut self, mut wire: SotwRequest, now: Instant) -> Step {
        let digest = wire.names_digest();
        let known = XdsType::from_type_url(&wire.req.type_url).is_some_and(|k| {
            let st = self.st(k);
            st.subscribed && st.names_digest == Some(digest)
        });
        let mut req = std::mem::take(&mut wire.req);
        if !known {
            match wire.decode_names() {
                Ok(names) => req.resource_names = names,
                Err(e) => {
                    self.refusal = Some(Refusal {
                        limit: "name_size",
                        reason: e,
                    });
                    return Step::default();
                }
            }
        }
        self.request(&req, Some((digest, known)), now)
    }

    /// Handles one request from the proxy.
    pub fn on_request(&mut self, req: &DiscoveryRequest, now: Instant) -> Step {
        self.request(req, None, now)
    }

    /// `names`: the digest of the request's names, and whether they are the current
    /// subscription's (then `req.resource_names` is not read).
    fn request(
        &mut self,
        req: &DiscoveryRequest,
        names: Option<(u64, bool)>,
        now: Instant,
    ) -> Step {
        let mut step = Step::default();
        let Some(kind) = XdsType::from_type_url(&req.type_url) else {
            step.events.push(Event::Ignored {
                type_url: crds::text::clip(&req.type_url, 256),
                reason: "type not served".into(),
            });
            return step;
        };
        let bytes = match super::check_request_sizes(
            kind,
            req.resource_names.iter(),
            [&req.version_info, &req.response_nonce],
        ) {
            Ok(bytes) => bytes,
            Err(r) => {
                self.refusal = Some(r);
                return step;
            }
        };
        if req.resource_names.len() > self.name_limit {
            self.refusal = Some(Refusal {
                limit: "subscribed_names",
                reason: format!(
                    "{kind}: {} resource names exceed {} (--max-subscribed-names)",
                    req.resource_names.len(),
                    self.name_limit
                ),
            });
            return step;
        }
        // The request's names become the subscription (unless they are the current one,
        // left undecoded): checked and charged before they are stored.
        if !matches!(names, Some((_, true)))
            && let Err(r) = self.name_bytes.set(kind, bytes, req.resource_names.len())
        {
            self.refusal = Some(r);
            return step;
        }
        if !req.response_nonce.is_empty() {
            if self.st(kind).last_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                step.events.push(Event::Ignored {
                    type_url: req.type_url.clone(),
                    reason: format!("stale nonce {}", req.response_nonce),
                });
                return step;
            }
            self.on_answer(kind, req, &mut step);
        } else if !self.st(kind).subscribed && !req.version_info.is_empty() {
            self.st_mut(kind).client_version = Some(req.version_info.clone());
        }
        match names {
            Some((_, true)) => {}
            Some((digest, false)) => {
                self.subscribe(kind, &req.resource_names);
                self.st_mut(kind).names_digest = Some(digest);
            }
            None => {
                self.subscribe(kind, &req.resource_names);
                self.st_mut(kind).names_digest = None;
            }
        }
        self.flush(now, &mut step);
        step
    }

    /// The request's names become the subscription.
    fn subscribe(&mut self, kind: XdsType, names: &[String]) {
        if self.same_names(kind, names) {
            return;
        }
        let mut star = false;
        let mut named = Vec::with_capacity(names.len());
        for n in names {
            if n == "*" {
                star = true;
            } else {
                named.push(
                    self.desired
                        .name_of(kind, n)
                        .unwrap_or_else(|| Arc::from(n.as_str())),
                );
            }
        }
        let set: NameSet = named.into_iter().collect();
        let st = self.st_mut(kind);
        let wildcard = star || (set.is_empty() && !st.ever_named && kind.wildcard_by_default());
        st.ever_named |= !set.is_empty();
        let first = !st.subscribed;
        st.subscribed = true;
        if first || wildcard != st.wildcard || set != st.names {
            for n in set.iter().filter(|n| !st.names.contains(n)) {
                st.dirty.insert(n.clone());
            }
            st.names = set;
            st.names_sig = st.names.iter().fold(0, |s, n| s.wrapping_add(name_sig(n)));
            st.wildcard = wildcard;
            st.resync = true;
        }
    }

    /// Whether a request names exactly the current subscription: every ACK repeats the
    /// whole list, so this is checked without building a set or interning a name. The
    /// signature (a sum over the subscribed names' shared pointers) tells a list with
    /// duplicates from the set it resembles.
    fn same_names(&self, kind: XdsType, names: &[String]) -> bool {
        let st = self.st(kind);
        if !st.subscribed || st.wildcard || names.is_empty() || names.len() != st.names.len() {
            return false;
        }
        let mut sig = 0u64;
        for n in names {
            match st.names.get(n.as_str()) {
                Some(a) => sig = sig.wrapping_add(name_sig(a)),
                None => return false,
            }
        }
        sig == st.names_sig
    }

    fn on_answer(&mut self, kind: XdsType, req: &DiscoveryRequest, step: &mut Step) {
        let Some(sent) = self.st_mut(kind).inflight.take() else {
            return;
        };
        match &req.error_detail {
            None => {
                step.events.push(Event::Ack {
                    kind,
                    version: sent.version.clone(),
                    accepted: super::policy_sources(kind, sent.resources.iter()),
                });
                if sent.full {
                    let keep: HashSet<&str> = sent.resources.iter().map(|r| &*r.name).collect();
                    let gone: Vec<Arc<str>> = self
                        .st(kind)
                        .held
                        .keys()
                        .filter(|n| !keep.contains(&***n))
                        .cloned()
                        .collect();
                    for n in gone {
                        self.unhold(kind, &n);
                    }
                }
                let map = self.desired.view.maps.shared(kind).cloned();
                match map {
                    // A first sync: nothing held, nothing to release.
                    Some(map) if self.st(kind).held.fills(sent.resources.len(), &map) => {
                        self.st_mut(kind).held.fill(&sent.resources, &map);
                    }
                    _ => {
                        for r in &sent.resources {
                            self.hold(kind, Held::Res(r.clone()), r.name.clone());
                        }
                    }
                }
                if let Some(map) = self.desired.view.maps.shared(kind) {
                    let map = map.clone();
                    self.st_mut(kind).held.compact(&map);
                }
                let st = self.st_mut(kind);
                st.held_digest = sent.digest;
                st.acked_version = Some(sent.version);
                st.rejected.clear();
                st.error = None;
            }
            Some(status) => {
                let error: Arc<str> = Arc::from(super::bound_nack_text(&status.message));
                let st = self.st_mut(kind);
                let held = &st.held;
                let (suspects, precise) = super::suspects(kind, sent.resources.iter(), |name| {
                    held.get(name).and_then(|h| h.resource())
                });
                step.events.push(Event::Nack(Rejection {
                    kind,
                    version: sent.version.clone(),
                    resources: sent.resources.iter().map(|r| r.name.to_string()).collect(),
                    error: error.to_string(),
                    sources: super::sources_of(sent.resources.iter()),
                    suspects,
                    precise,
                }));
                if st.rejected.len() >= 8 {
                    st.rejected.pop_front();
                }
                st.rejected.push_back(sent.version);
                st.error = Some(error);
            }
        }
    }

    /// Takes a new version of the stream's view.
    pub fn on_view(&mut self, view: Arc<ViewVersion>, now: Instant) -> Step {
        let same = view.key == self.desired.view.key;
        let changed = same
            .then(|| view.changed_since(self.desired.view.version))
            .flatten();
        for (i, kind) in [XdsType::Cluster, XdsType::Endpoint, XdsType::Route]
            .into_iter()
            .enumerate()
        {
            let full = self.full_resend;
            let old = self.desired.view.maps.shared(kind).cloned();
            let new = view.maps.shared(kind).cloned();
            let st = self.st_mut(kind);
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
        let mut step = Step::default();
        self.flush(now, &mut step);
        step
    }

    /// Takes a new version of the proxy's own resources.
    pub fn on_own(&mut self, own: Arc<OwnVersion>, now: Instant) -> Step {
        for kind in [XdsType::Secret, XdsType::Cluster, XdsType::Listener] {
            let names = super::own_changes(kind, &self.desired.own, &own);
            self.st_mut(kind).dirty.extend(names);
        }
        self.desired.own = own;
        let mut step = Step::default();
        self.flush(now, &mut step);
        step
    }

    /// Re-checks waits that may have run out.
    pub fn on_tick(&mut self, now: Instant) -> Step {
        let mut step = Step::default();
        self.flush(now, &mut step);
        step
    }

    /// The response for a whole-set type, if one is due.
    fn candidate_full(&mut self, kind: XdsType) -> Option<Sent> {
        let st = self.st(kind);
        if st.dirty.is_empty() && !st.resync && !st.force && st.acked_version.is_some() {
            return None;
        }
        let mut set = self.wanted(kind);
        if kind == XdsType::Cluster {
            // Clusters a held route or listener still points at stay until it changes.
            let names: HashSet<Arc<str>> = set.iter().map(|r| r.name.clone()).collect();
            let gone: Vec<Arc<Encoded>> = st
                .held
                .iter()
                .filter(|(n, _)| !names.contains(*n))
                .filter_map(|(_, h)| h.resource().cloned())
                .collect();
            if !gone.is_empty() {
                let pinned = super::pinned_by(
                    super::holders_of(kind)
                        .iter()
                        .map(|h| &self.types[h.index()].held),
                );
                set.extend(gone.into_iter().filter(|r| pinned.contains(&r.name)));
            }
        }
        set.sort_by(|a, b| a.name.cmp(&b.name));
        let d = digest(&set);
        let version = hex(d);
        let full_resend = self.full_resend;
        let st = self.st_mut(kind);
        st.dirty.clear();
        st.resync = false;
        let forced = std::mem::take(&mut st.force) || full_resend;
        if st.acked_version.is_none() && st.client_version.as_deref() == Some(version.as_str()) {
            // A reconnecting proxy already holds exactly this.
            st.client_version = None;
            st.acked_version = Some(version);
            st.held_digest = d;
            for r in set {
                self.hold(kind, Held::Res(r.clone()), r.name.clone());
            }
            return None;
        }
        if !forced
            && (st.acked_version.as_deref() == Some(version.as_str())
                || st.rejected.contains(&version))
        {
            return None;
        }
        Some(Sent {
            version,
            digest: d,
            resources: set,
            full: true,
        })
    }

    /// The response for a named type, if one is due: only what changed.
    fn candidate_named(&mut self, kind: XdsType) -> Option<Sent> {
        let st = &mut self.types[kind.index()];
        let first = !st.responded;
        let resync = std::mem::take(&mut st.resync) || first;
        let forced = std::mem::take(&mut st.force) || self.full_resend;
        let dirty = std::mem::take(&mut st.dirty);
        let force_names = std::mem::take(&mut st.force_names);
        let candidates: Vec<Arc<Encoded>> = if resync || forced {
            self.wanted(kind)
        } else {
            let st = self.st(kind);
            dirty
                .iter()
                .filter(|n| st.in_scope(n))
                .filter_map(|n| self.desired.get(kind, n).cloned())
                .collect()
        };
        let st = self.st(kind);
        if first && st.client_version.is_some() {
            // A reconnecting proxy: does it hold exactly what it should?
            let want = self.wanted(kind);
            let d = digest(&want);
            if st.client_version.as_deref() == Some(hex(d).as_str()) {
                let st = self.st_mut(kind);
                st.client_version = None;
                st.acked_version = Some(hex(d));
                st.held_digest = d;
                st.responded = true;
                for r in want {
                    self.hold(kind, Held::Res(r.clone()), r.name.clone());
                }
                return None;
            }
        }
        let mut sends: Vec<Arc<Encoded>> = candidates
            .into_iter()
            .filter(|r| {
                forced
                    || first
                    || force_names.contains(&r.name)
                    || st
                        .held
                        .get(&r.name)
                        .is_none_or(|h| h.version() != r.version)
            })
            .collect();
        if sends.is_empty() && !first {
            return None;
        }
        sends.sort_by(|a, b| a.name.cmp(&b.name));
        let mut d = st.held_digest;
        for r in &sends {
            if let Some(old) = st.held.get(&r.name).and_then(|h| h.resource()) {
                d ^= element_digest(&old.name, old.hash);
            }
            d ^= element_digest(&r.name, r.hash);
        }
        let version = hex(d);
        if !forced && !first && st.rejected.contains(&version) {
            return None;
        }
        Some(Sent {
            version,
            digest: d,
            resources: sends,
            full: false,
        })
    }

    fn flush(&mut self, now: Instant, step: &mut Step) {
        let mut lower_busy = false;
        let mut blocked = false;
        for kind in XdsType::ALL {
            let stage_one = matches!(kind, XdsType::Listener | XdsType::Route);
            {
                let st = self.st(kind);
                if !st.subscribed || st.inflight.is_some() {
                    if !stage_one && st.inflight.is_some() {
                        lower_busy = true;
                    }
                    continue;
                }
            }
            if stage_one && lower_busy {
                continue;
            }
            let candidate = if kind.full_set() {
                self.candidate_full(kind)
            } else {
                self.candidate_named(kind)
            };
            let Some(sent) = candidate else {
                continue;
            };
            if stage_one {
                // A client that names its Clusters (proxyless gRPC) asks for a route's
                // clusters only once it has the route: it cannot hold what it has not
                // asked for, so only the clusters it asked for are waited on.
                let clusters = self.st(XdsType::Cluster);
                let named = self.desired.view.key.grpc;
                let ok = ready(
                    &self.desired,
                    |k, n| self.held_here(k, n),
                    sent.resources
                        .iter()
                        .flat_map(|r| r.refs.iter())
                        .filter(|c| !named || clusters.in_scope(c)),
                );
                if !ok && !self.wait.expired(now) {
                    blocked = true;
                    let st = self.st_mut(kind);
                    st.dirty
                        .extend(sent.resources.iter().map(|r| r.name.clone()));
                    if sent.full {
                        st.resync = true;
                    }
                    continue;
                }
            } else {
                lower_busy = true;
            }
            self.next_nonce += 1;
            let nonce = self.next_nonce.to_string();
            let bytes: usize = sent.resources.iter().map(|r| r.any.value.len()).sum();
            step.responses.push(SotwResponse {
                version_info: sent.version.clone(),
                resources: sent.resources.clone(),
                type_url: kind.type_url(),
                nonce: nonce.clone(),
            });
            // Envoy re-warms a changed Cluster and waits for its endpoints: answer with
            // them again even if they did not change.
            if kind == XdsType::Cluster {
                let rewarm: Vec<Arc<str>> = sent
                    .resources
                    .iter()
                    .filter(|r| {
                        self.st(kind)
                            .held
                            .get(&r.name)
                            .is_some_and(|h| h.version() != r.version)
                    })
                    .flat_map(|r| r.refs.iter())
                    .filter_map(|e| self.desired.name_of(XdsType::Endpoint, e))
                    .collect();
                let eds = self.st_mut(XdsType::Endpoint);
                for name in rewarm {
                    eds.force_names.insert(name.clone());
                    eds.dirty.insert(name);
                }
            }
            step.events.push(Event::Sent {
                kind,
                resources: sent.resources.len(),
                removed: 0,
                bytes,
            });
            let st = self.st_mut(kind);
            st.last_nonce = Some(nonce);
            st.responded = true;
            st.inflight = Some(sent);
        }
        if !blocked {
            self.wait.clear();
        }
    }
}
