//! Incremental (delta) ADS: responses carry only resources whose version the proxy does
//! not hold, plus the names it must drop.
//!
//! Protocol points kept here: a name subscribed that does not exist is answered in
//! `removed_resources` (so a warming Envoy does not wait out its own timeout); an explicit
//! subscribe to a name the proxy already holds is answered with that resource, wildcard
//! or not; a proxy that reconnects with `initial_resource_versions` is sent only what
//! differs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use translator::encoded::Encoded;
use xds_types::XdsType;

use super::{Event, Held, HeldSet, NameBytes, NameSet, OrderWait, Refusal, Rejection, ready};
use crate::xds::fanout::{Desired, OwnVersion, ViewVersion};
use crate::xds::wire::frames::DeltaResponse;

/// A response in flight.
#[derive(Clone, Debug)]
struct Sent {
    nonce: String,
    resources: Vec<Arc<Encoded>>,
    removed: Vec<Arc<str>>,
}

#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    /// Answered at least once.
    responded: bool,
    wildcard: bool,
    /// Names subscribed explicitly.
    names: NameSet,
    held: HeldSet,
    /// Names to look at on the next flush.
    dirty: HashSet<Arc<str>>,
    /// Look at everything on the next flush.
    resync: bool,
    /// Names to send even if the proxy holds their version.
    force: HashSet<Arc<str>>,
    /// Subscribed names that do not exist and were answered as removed.
    absent: HashSet<Arc<str>>,
    inflight: Option<Sent>,
    /// name -> (version the proxy rejected, its error).
    rejected: HashMap<Arc<str>, (String, Arc<str>)>,
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
    pub responses: Vec<DeltaResponse>,
    /// What happened.
    pub events: Vec<Event>,
}

/// One delta ADS stream.
#[derive(Debug)]
pub struct DeltaStream {
    desired: Desired,
    types: [TypeState; 5],
    next_nonce: u64,
    wait: OrderWait,
    name_limit: usize,
    /// The weight of the subscriptions, bounded and charged.
    name_bytes: NameBytes,
    refusal: Option<Refusal>,
    /// Benchmark baseline: resend every resource of a type on any change.
    full_resend: bool,
}

impl DeltaStream {
    /// A stream that will serve `desired`.
    pub fn new(desired: Desired) -> Self {
        DeltaStream {
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

    /// What the proxy should hold of `kind` that is in its subscription, with the
    /// version it holds (if any), whether a response carrying it is in flight, and the
    /// error it gave if it rejected the current version.
    pub fn resources(&self, kind: XdsType) -> Vec<super::ResourceView> {
        let st = self.st(kind);
        let inflight: HashSet<&str> = st
            .inflight
            .iter()
            .flat_map(|s| s.resources.iter().map(|r| &*r.name))
            .collect();
        let mut out: Vec<super::ResourceView> = Vec::new();
        let mut seen = HashSet::new();
        if st.subscribed {
            let wanted: Box<dyn Iterator<Item = &Arc<Encoded>>> = if st.wildcard {
                Box::new(self.desired.all(kind))
            } else {
                Box::new(st.names.iter().filter_map(|n| self.desired.get(kind, n)))
            };
            for r in wanted {
                seen.insert(r.name.clone());
                out.push(super::ResourceView {
                    name: r.name.clone(),
                    want: Some(r.clone()),
                    held: st.held.get(&r.name).map(|h| h.version().to_string()),
                    inflight: inflight.contains(&*r.name),
                    rejected: st
                        .rejected
                        .get(&r.name)
                        .filter(|(v, _)| *v == r.version)
                        .map(|(_, e)| e.clone()),
                });
            }
        }
        for (n, h) in st.held.iter() {
            if !seen.contains(n) {
                out.push(super::ResourceView {
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

    /// How many held entries of `kind` differ from the view's shared map.
    #[cfg(test)]
    pub(crate) fn held_overlay(&self, kind: XdsType) -> usize {
        self.st(kind).held.overlay_len()
    }

    fn held_here(&self, kind: XdsType, name: &str) -> bool {
        self.st(kind).held.contains_key(name)
    }

    fn hold(&mut self, kind: XdsType, name: Arc<str>, held: Held) {
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

    fn intern(&self, kind: XdsType, name: &str) -> Arc<str> {
        self.desired
            .name_of(kind, name)
            .unwrap_or_else(|| Arc::from(name))
    }

    /// Handles one request as read off the wire.
    pub fn on_wire(&mut self, req: DeltaDiscoveryRequest, now: Instant) -> Step {
        self.on_request(&req, now)
    }

    /// Handles one request from the proxy.
    pub fn on_request(&mut self, req: &DeltaDiscoveryRequest, now: Instant) -> Step {
        let mut step = Step::default();
        let Some(kind) = XdsType::from_type_url(&req.type_url) else {
            step.events.push(Event::Ignored {
                type_url: crds::text::clip(&req.type_url, 256),
                reason: "type not served".into(),
            });
            return step;
        };
        if let Err(r) = super::check_request_sizes(
            kind,
            req.resource_names_subscribe
                .iter()
                .chain(req.initial_resource_versions.keys()),
            req.initial_resource_versions
                .values()
                .chain(std::iter::once(&req.response_nonce)),
        ) {
            self.refusal = Some(r);
            return step;
        }
        let asked = req.resource_names_subscribe.len() + req.initial_resource_versions.len();
        if self.st(kind).names.len().saturating_add(asked) > self.name_limit {
            self.refusal = Some(Refusal {
                limit: "subscribed_names",
                reason: format!(
                    "{kind}: subscribing to {asked} more names would exceed {} (--max-subscribed-names)",
                    self.name_limit
                ),
            });
            return step;
        }
        if asked > 0 || !req.resource_names_unsubscribe.is_empty() {
            // What the subscription weighs after this request, checked and charged
            // before any name is stored.
            let (bytes, count) = self.weight_after(kind, req);
            if let Err(r) = self.name_bytes.set(kind, bytes, count) {
                self.refusal = Some(r);
                return step;
            }
        }
        let first = !self.st(kind).subscribed;
        if first {
            let st = self.st_mut(kind);
            st.subscribed = true;
            st.resync = true;
            // A fresh subscription gets an answer even when there is nothing to send; a
            // reconnecting proxy that already holds everything does not.
            st.responded = !req.initial_resource_versions.is_empty();
            st.wildcard = req.resource_names_subscribe.is_empty() && kind.wildcard_by_default();
            for (name, version) in &req.initial_resource_versions {
                let name = self.intern(kind, name);
                self.hold(kind, name, Held::Version(version.as_str().into()));
            }
        }
        let mut added = Vec::with_capacity(req.resource_names_subscribe.len());
        for name in &req.resource_names_subscribe {
            if name == "*" {
                let st = self.st_mut(kind);
                st.wildcard = true;
                st.resync = true;
                continue;
            }
            let name = self.intern(kind, name);
            let st = self.st_mut(kind);
            added.push(name.clone());
            st.absent.remove(&name);
            // An explicit subscribe is answered even if the proxy holds the resource
            // (but not the names a reconnecting proxy lists with the versions it holds).
            if !first && st.held.contains_key(&name) {
                st.force.insert(name.clone());
            }
            st.dirty.insert(name);
        }
        self.st_mut(kind).names.extend(added);
        let mut gone: HashSet<&str> = HashSet::new();
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                let st = self.st_mut(kind);
                st.wildcard = false;
                let drop: Vec<Arc<str>> = st
                    .held
                    .keys()
                    .filter(|n| !st.names.contains(n))
                    .cloned()
                    .collect();
                for n in drop {
                    self.unhold(kind, &n);
                }
                continue;
            }
            let st = self.st_mut(kind);
            if st.names.contains(name) {
                gone.insert(name.as_str());
            }
            st.dirty.remove(name.as_str());
            st.force.remove(name.as_str());
            st.absent.remove(name.as_str());
            if !st.wildcard {
                self.unhold(kind, name);
            }
        }
        if !gone.is_empty() {
            self.st_mut(kind).names.remove_all(&gone);
        }
        if !req.response_nonce.is_empty() {
            self.on_answer(kind, req, &mut step);
        }
        self.flush(now, &mut step);
        step
    }

    /// The bytes and count of `kind`'s names once `req` is applied: names new to the
    /// subscription (and versions a reconnecting proxy lists) count, unsubscribed ones
    /// stop counting.
    fn weight_after(&self, kind: XdsType, req: &DeltaDiscoveryRequest) -> (usize, usize) {
        let st = self.st(kind);
        let (mut bytes, mut count) = self.name_bytes.of(kind);
        let mut added: HashSet<&str> = HashSet::new();
        for n in req
            .resource_names_subscribe
            .iter()
            .chain(req.initial_resource_versions.keys())
        {
            if n != "*" && !st.names.contains(n) && added.insert(n) {
                bytes = bytes.saturating_add(n.len());
                count += 1;
            }
        }
        let mut gone: HashSet<&str> = HashSet::new();
        for n in &req.resource_names_unsubscribe {
            if (st.names.contains(n) || added.contains(n.as_str())) && gone.insert(n) {
                bytes = bytes.saturating_sub(n.len());
                count = count.saturating_sub(1);
            }
        }
        (bytes, count)
    }

    fn on_answer(&mut self, kind: XdsType, req: &DeltaDiscoveryRequest, step: &mut Step) {
        let inflight = self.st_mut(kind).inflight.take();
        let sent = match inflight {
            Some(sent) if sent.nonce == req.response_nonce => sent,
            other => {
                self.st_mut(kind).inflight = other;
                step.events.push(Event::Ignored {
                    type_url: req.type_url.clone(),
                    reason: format!("stale nonce {}", req.response_nonce),
                });
                return;
            }
        };
        match &req.error_detail {
            None => {
                let map = self.desired.view.maps.shared(kind).cloned();
                let st = self.st_mut(kind);
                match map {
                    // A first sync: nothing held, nothing to release.
                    Some(map) if st.held.fills(sent.resources.len(), &map) => {
                        for r in &sent.resources {
                            st.rejected.remove(&r.name);
                        }
                        st.held.fill(&sent.resources, &map);
                    }
                    _ => {
                        for r in &sent.resources {
                            self.st_mut(kind).rejected.remove(&r.name);
                            self.hold(kind, r.name.clone(), Held::Res(r.clone()));
                        }
                    }
                }
                for name in &sent.removed {
                    self.unhold(kind, name);
                }
                if let Some(map) = self.desired.view.maps.shared(kind) {
                    let map = map.clone();
                    self.st_mut(kind).held.compact(&map);
                }
                step.events.push(Event::Ack {
                    kind,
                    version: response_version(&sent),
                    accepted: super::policy_sources(kind, sent.resources.iter()),
                });
            }
            Some(status) => {
                let error: Arc<str> = Arc::from(super::bound_nack_text(&status.message));
                let st = self.st_mut(kind);
                for r in &sent.resources {
                    st.rejected
                        .insert(r.name.clone(), (r.version.clone(), error.clone()));
                }
                // Removals it refused are still held.
                let held = &st.held;
                let (suspects, precise) = super::suspects(kind, sent.resources.iter(), |name| {
                    held.get(name).and_then(|h| h.resource())
                });
                step.events.push(Event::Nack(Rejection {
                    kind,
                    version: response_version(&sent),
                    resources: sent.resources.iter().map(|r| r.name.to_string()).collect(),
                    error: error.to_string(),
                    sources: super::sources_of(sent.resources.iter()),
                    suspects,
                    precise,
                }));
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
                Some(names) if !full => st.dirty.extend(names[i].iter().cloned()),
                Some(names) if names[i].is_empty() => {}
                _ => st.resync = true,
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
            let full = self.full_resend && !names.is_empty();
            let st = self.st_mut(kind);
            st.dirty.extend(names);
            st.resync |= full;
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

    /// The names to look at for `kind` now.
    fn candidates(&mut self, kind: XdsType) -> Vec<Arc<str>> {
        let st = &mut self.types[kind.index()];
        let mut names: HashSet<Arc<str>> = std::mem::take(&mut st.dirty);
        if std::mem::take(&mut st.resync) {
            names.extend(st.held.keys().cloned());
            names.extend(st.names.iter().cloned());
            if st.wildcard {
                names.extend(self.desired.all(kind).map(|r| r.name.clone()));
            }
        }
        names.into_iter().collect()
    }

    /// What to send for `kind` now, ignoring ordering: (resources, removals).
    fn candidate(&mut self, kind: XdsType) -> Option<Sent> {
        {
            let st = self.st(kind);
            if !st.subscribed || st.inflight.is_some() {
                return None;
            }
        }
        let names = self.candidates(kind);
        // Names held resources point at, computed once if a removal needs them.
        let mut pinned: Option<HashSet<Arc<str>>> = None;
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        for name in names {
            let st = &self.types[kind.index()];
            let want = if st.in_scope(&name) {
                self.desired.get(kind, &name)
            } else {
                None
            };
            match want {
                Some(d) => {
                    let forced = st.force.contains(&name) || self.full_resend;
                    let held_same = st.held.get(&name).is_some_and(|h| h.version() == d.version);
                    let rejected = st.rejected.get(&name).is_some_and(|(v, _)| *v == d.version);
                    if (forced || !held_same) && !rejected {
                        resources.push(d.clone());
                    }
                }
                None if st.held.contains_key(&name) => {
                    let pinned = pinned.get_or_insert_with(|| {
                        super::pinned_by(
                            super::holders_of(kind)
                                .iter()
                                .map(|h| &self.types[h.index()].held),
                        )
                    });
                    // A pinned name is looked at again when what pins it is released.
                    if !pinned.contains(&name) {
                        removed.push(name);
                    }
                }
                None if st.names.contains(&name) && !st.absent.contains(&name) => {
                    removed.push(name);
                }
                None => {}
            }
        }
        let st = self.st_mut(kind);
        for r in &resources {
            st.force.remove(&r.name);
        }
        for n in &removed {
            if !st.held.contains_key(n) {
                st.absent.insert(n.clone());
            }
        }
        if resources.is_empty() && removed.is_empty() && st.responded {
            return None;
        }
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        removed.sort();
        Some(Sent {
            nonce: String::new(),
            resources,
            removed,
        })
    }

    fn flush(&mut self, now: Instant, step: &mut Step) {
        let mut lower_busy = false;
        let mut blocked = false;
        for kind in XdsType::ALL {
            let stage_one = matches!(kind, XdsType::Listener | XdsType::Route);
            if stage_one && lower_busy {
                continue;
            }
            let Some(mut sent) = self.candidate(kind) else {
                if !stage_one && self.st(kind).inflight.is_some() {
                    lower_busy = true;
                }
                continue;
            };
            if stage_one {
                let ok = ready(
                    &self.desired,
                    |k, n| self.held_here(k, n),
                    sent.resources.iter().flat_map(|r| r.refs.iter()),
                );
                if !ok && !self.wait.expired(now) {
                    blocked = true;
                    let st = self.st_mut(kind);
                    st.dirty
                        .extend(sent.resources.iter().map(|r| r.name.clone()));
                    st.dirty.extend(sent.removed.iter().cloned());
                    continue;
                }
            } else {
                lower_busy = true;
            }
            self.next_nonce += 1;
            sent.nonce = self.next_nonce.to_string();
            let bytes: usize = sent.resources.iter().map(|r| r.any.value.len()).sum();
            step.responses.push(DeltaResponse {
                system_version_info: response_version(&sent),
                resources: sent.resources.clone(),
                type_url: kind.type_url(),
                removed_resources: sent.removed.clone(),
                nonce: sent.nonce.clone(),
            });
            // Envoy re-warms a changed Cluster and waits for its endpoints: send them
            // again even though they did not change.
            if kind == XdsType::Cluster {
                let rewarm: Vec<Arc<str>> = sent
                    .resources
                    .iter()
                    .filter(|r| self.held_here(XdsType::Cluster, &r.name))
                    .flat_map(|r| r.refs.iter().cloned())
                    .collect();
                let eds = self.st_mut(XdsType::Endpoint);
                for name in rewarm {
                    if eds.held.contains_key(&name) {
                        eds.force.insert(name.clone());
                        eds.dirty.insert(name);
                    }
                }
            }
            step.events.push(Event::Sent {
                kind,
                resources: sent.resources.len(),
                removed: sent.removed.len(),
                bytes,
            });
            let st = self.st_mut(kind);
            st.responded = true;
            st.inflight = Some(sent);
        }
        if !blocked {
            self.wait.clear();
        }
    }
}

/// A version naming one delta response: a digest of what it carried (the resources'
/// content hashes and the removed names).
fn response_version(sent: &Sent) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in &sent.resources {
        r.hash.hash(&mut h);
    }
    for n in &sent.removed {
        n.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}
