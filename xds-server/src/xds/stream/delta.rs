//! Incremental (delta) ADS ([`Delta`], run by [`super::core::Stream`]): responses carry
//! only resources whose version the proxy does not hold, plus the names it must drop.
//!
//! A request is read as names subscribed and unsubscribed, the versions a reconnecting
//! proxy holds (`initial_resource_versions`), and a nonce that must be the one in flight.
//!
//! Protocol points kept here: a name subscribed that does not exist is answered in
//! `removed_resources` (so a warming Envoy does not wait out its own timeout); an explicit
//! subscribe to a name the proxy already holds is answered with that resource, wildcard
//! or not; so is an unsubscribe of a held name the wildcard still covers (the proxy asks
//! whether to keep it); a proxy that reconnects with `initial_resource_versions` is sent only what
//! differs.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use translator::encoded::Encoded;
use xds_types::XdsType;

use crate::xds::stream::core::{BULK_NAMES, Protocol, Sent, Stream, TypeState};
use crate::xds::stream::event::Refusal;
use crate::xds::stream::held::Held;
use crate::xds::stream::limits::check_request_sizes;
use crate::xds::stream::names::NameSet;
use crate::xds::stream::order::{holders_of, pinned_by};
use crate::xds::stream::{HashMap, HashSet};
use crate::xds::wire::delta_request::DeltaRequest;
use crate::xds::wire::frames::DeltaResponse;
use crate::xds::wire::shared_body::Bodies;

/// The incremental variant.
#[derive(Debug)]
pub(crate) enum Delta {}

/// One delta ADS stream.
pub(crate) type DeltaStream = Stream<Delta>;
/// What one call to a delta stream produced.
pub(crate) type Step = super::core::Step<DeltaResponse>;

/// Per-type state only delta keeps.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    /// Subscribed names that do not exist and were answered as removed.
    absent: HashSet<Arc<str>>,
    /// name -> (version the proxy rejected, its error).
    rejected: HashMap<Arc<str>, (String, Arc<str>)>,
}

type State = TypeState<Extra>;

impl Protocol for Delta {
    type Request = DeltaRequest;
    type Response = DeltaResponse;
    type Extra = Extra;
    const NAME: &'static str = "delta";
    const NAMED_CLUSTERS_ONLY: bool = false;
    const VIRTUAL_HOSTS_APART: bool = true;

    fn resumes(first: &DeltaRequest) -> bool {
        !first.req.initial_resource_versions.is_empty()
    }

    fn node(req: &DeltaRequest) -> Option<&Node> {
        req.req.node.as_ref()
    }

    fn read(s: &mut DeltaStream, wire: DeltaRequest, now: Instant) -> Step {
        let subscribe: Vec<&str> = wire.subscribe().collect();
        s.on_asked(&wire.req, &subscribe, now)
    }

    fn candidate(s: &mut DeltaStream, kind: XdsType) -> Option<Sent> {
        s.candidate(kind)
    }

    fn response(kind: XdsType, sent: &Sent, bodies: Bodies) -> DeltaResponse {
        DeltaResponse {
            system_version_info: sent.version.clone(),
            resources: sent.resources.clone(),
            type_url: kind.type_url(),
            removed_resources: sent.removed.clone(),
            nonce: sent.nonce.clone(),
            bodies,
        }
    }

    /// The held endpoints of the Clusters sent that the proxy held before.
    fn rewarm(s: &DeltaStream, sent: &Sent) -> Vec<Arc<str>> {
        let clusters = &s.types[XdsType::Cluster].held;
        let endpoints = &s.types[XdsType::Endpoint].held;
        sent.resources
            .iter()
            .filter(|r| clusters.contains_key(&r.name))
            .flat_map(|r| r.refs.iter().cloned())
            .filter(|e| endpoints.contains_key(e))
            .collect()
    }

    fn before_hold(s: &mut DeltaStream, kind: XdsType, sent: &Sent) {
        let st = &mut s.types[kind];
        // Most streams hold no rejection: hashing every name sent to find that out was
        // a tenth of a first sync's CPU.
        if !st.x.rejected.is_empty() {
            for r in sent.resources.iter() {
                st.x.rejected.remove(&r.name);
            }
        }
        if kind == XdsType::Route {
            s.took_tables(sent);
        }
    }

    fn accepted(_: &mut State, _: Sent) {}

    fn rejected(st: &mut State, sent: &Sent, error: &Arc<str>) {
        for r in sent.resources.iter() {
            st.x.rejected
                .insert(r.name.clone(), (r.version.clone(), error.clone()));
        }
    }

    fn deferred(st: &mut State, sent: &Sent) {
        // Building it marked its unheld removals as answered and its forced names as
        // sent: neither happened.
        for n in &sent.removed {
            if !st.held.contains_key(n) {
                st.x.absent.remove(n);
            }
        }
        for r in sent.resources.iter() {
            if st
                .held
                .get(&r.name)
                .is_some_and(|h| h.version() == r.version)
            {
                st.force_names.insert(r.name.clone());
            }
        }
    }

    fn forget_rejections(st: &mut State) {
        st.x.rejected.clear();
    }

    fn rejection_of(st: &State, want: &Encoded, _: Option<&str>) -> Option<Arc<str>> {
        st.x.rejected
            .get(&want.name)
            .filter(|(v, _)| *v == want.version)
            .map(|(_, e)| e.clone())
    }
}

impl DeltaStream {
    /// Handles one request from the proxy, read as the wire reads it.
    #[cfg(test)]
    pub(crate) fn on_request(&mut self, req: &DeltaDiscoveryRequest, now: Instant) -> Step {
        use prost::Message;
        let wire = DeltaRequest::decode(bytes::Bytes::from(req.encode_to_vec()));
        Delta::read(self, wire.expect("a request decodes"), now)
    }

    /// Handles one request whose subscribed names are `subscribe` (its own
    /// `resource_names_subscribe` is not read: the wire keeps them apart).
    fn on_asked(&mut self, req: &DeltaDiscoveryRequest, subscribe: &[&str], now: Instant) -> Step {
        let mut step = Step::default();
        let Some(kind) = Self::served_type(&req.type_url, &mut step) else {
            return step;
        };
        let first = !self.types[kind].subscribed;
        let whole = match self.admit(kind, req, subscribe, first) {
            Ok(whole) => whole,
            Err(r) => {
                self.refuse(r);
                return step;
            }
        };
        if first {
            self.first_request(kind, req, subscribe.is_empty());
        }
        match whole {
            Some(_) => self.subscribe_to_view(kind),
            None => self.subscribe(kind, subscribe, first),
        }
        self.unsubscribe(kind, &req.resource_names_unsubscribe);
        if !req.response_nonce.is_empty() {
            let st = &mut self.types[kind];
            match st.inflight.take() {
                Some(sent) if sent.nonce == req.response_nonce => {
                    self.answer(kind, sent, req.error_detail.as_ref(), &mut step);
                }
                other => {
                    st.inflight = other;
                    step.ignore(
                        req.type_url.clone(),
                        format!("stale nonce {}", req.response_nonce),
                    );
                }
            }
        }
        self.flush(now, &mut step);
        step
    }

    /// Checks a request against the limits; what the subscription weighs after it is
    /// checked and charged before any name is stored. Some: the request is a `first`
    /// subscription to every name of the view ([`Self::whole_view`]), to be stored as the
    /// view's names.
    fn admit(
        &mut self,
        kind: XdsType,
        req: &DeltaDiscoveryRequest,
        subscribe: &[&str],
        first: bool,
    ) -> Result<Option<(usize, usize)>, Refusal> {
        check_request_sizes(
            kind,
            subscribe
                .iter()
                .copied()
                .chain(req.initial_resource_versions.keys().map(String::as_str)),
            req.initial_resource_versions
                .values()
                .chain(std::iter::once(&req.response_nonce))
                .map(String::as_str),
        )?;
        let asked = subscribe.len() + req.initial_resource_versions.len();
        if self.types[kind].names.len().saturating_add(asked) > self.name_limit {
            return Err(Refusal {
                limit: "subscribed_names",
                reason: format!(
                    "{kind}: subscribing to {asked} more names would exceed {} (--max-subscribed-names)",
                    self.name_limit
                ),
            });
        }
        let whole = self.whole_view(kind, req, subscribe, first);
        if asked > 0 || !req.resource_names_unsubscribe.is_empty() {
            let (bytes, count) = match whole {
                Some(weight) => weight,
                None => self.weight_after(kind, req, subscribe),
            };
            self.name_bytes.set(kind, bytes, count)?;
        }
        Ok(whole)
    }

    /// Whether `req` is a `first` subscription to every name the view has (a sidecar's
    /// endpoints) and nothing else: then the distinct names' bytes and count, from one
    /// lookup of each, and the subscription will be the view's names with no copy or sort
    /// of them. Only after the request's sizes and name count are checked.
    fn whole_view(
        &self,
        kind: XdsType,
        req: &DeltaDiscoveryRequest,
        subscribe: &[&str],
        first: bool,
    ) -> Option<(usize, usize)> {
        let only_names = first
            && self.types[kind].names.is_empty()
            && req.initial_resource_versions.is_empty()
            && req.resource_names_unsubscribe.is_empty()
            && subscribe.len() >= BULK_NAMES;
        only_names
            .then(|| self.desired.covered_by(kind, subscribe))
            .flatten()
    }

    /// The first request of a type: the subscription starts, with what a reconnecting
    /// proxy says it holds.
    fn first_request(&mut self, kind: XdsType, req: &DeltaDiscoveryRequest, no_names: bool) {
        let st = &mut self.types[kind];
        st.subscribed = true;
        st.resync = true;
        // A fresh subscription gets an answer even when there is nothing to send; a
        // reconnecting proxy that already holds everything does not.
        st.responded = !req.initial_resource_versions.is_empty();
        st.wildcard = no_names && kind.wildcard_by_default();
        let count = req.initial_resource_versions.len();
        for (name, version) in &req.initial_resource_versions {
            let name = self.intern_among(count, kind, name);
            self.hold(kind, name, Held::Version(version.as_str().into()));
        }
        if kind == XdsType::Route {
            self.claimed_tables(req.initial_resource_versions.keys());
        }
    }

    fn subscribe(&mut self, kind: XdsType, names: &[&str], first: bool) {
        let mut added = Vec::with_capacity(names.len());
        // New endpoint names are kept apart only while new Clusters wait on them.
        let follow = kind == XdsType::Endpoint && !first && self.follows_endpoint_asks();
        let mut new_endpoints = Vec::new();
        for &name in names {
            if name == "*" {
                let st = &mut self.types[kind];
                st.wildcard = true;
                st.resync = true;
                continue;
            }
            let name = self.intern_among(names.len(), kind, name);
            let st = &mut self.types[kind];
            if follow && !st.names.contains(&name) {
                new_endpoints.push(name.clone());
            }
            added.push(name.clone());
            if !st.x.absent.is_empty() {
                st.x.absent.remove(&name);
            }
            // An explicit subscribe is answered even if the proxy holds the resource
            // (but not the names a reconnecting proxy lists with the versions it holds).
            if !first && st.held.contains_key(&name) {
                st.force_names.insert(name.clone());
            }
            // A first request looks at every subscribed name anyway (`resync`).
            if !first {
                st.dirty.insert(name);
            }
        }
        self.types[kind].names.extend(added);
        if !new_endpoints.is_empty() {
            self.asked_for_endpoints(&new_endpoints);
        }
    }

    /// A first subscription to every name of the view
    /// ([`crate::xds::fanout::Desired::covered_by`]): the view's names, as they are.
    fn subscribe_to_view(&mut self, kind: XdsType) {
        if let Some(map) = self.desired.view.maps.of(kind) {
            self.types[kind].names = NameSet::of_sorted(map.len(), map.keys());
        }
    }

    fn unsubscribe(&mut self, kind: XdsType, names: &[String]) {
        let mut gone: HashSet<&str> = HashSet::default();
        for name in names {
            if name == "*" {
                let st = &mut self.types[kind];
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
            let st = &mut self.types[kind];
            if st.names.contains(name) {
                gone.insert(name.as_str());
            }
            st.dirty.remove(name.as_str());
            st.force_names.remove(name.as_str());
            st.x.absent.remove(name.as_str());
            if st.wildcard {
                // The wildcard still covers the name, but the proxy cannot know that:
                // Envoy keeps the resource as "ambiguous" until the server says whether
                // it stays (the resource, sent again) or goes (a removal).
                if st.held.contains_key(name.as_str()) {
                    let name = self.intern(kind, name);
                    let st = &mut self.types[kind];
                    st.force_names.insert(name.clone());
                    st.dirty.insert(name);
                }
            } else {
                self.unhold(kind, name);
            }
        }
        if !gone.is_empty() {
            self.types[kind].names.remove_all(&gone);
        }
    }

    /// The bytes and count of `kind`'s names once `req` is applied: names new to the
    /// subscription (and versions a reconnecting proxy lists) count, unsubscribed ones
    /// stop counting.
    fn weight_after(
        &self,
        kind: XdsType,
        req: &DeltaDiscoveryRequest,
        subscribe: &[&str],
    ) -> (usize, usize) {
        let st = &self.types[kind];
        let (mut bytes, mut count) = self.name_bytes.of(kind);
        let mut added: HashSet<&str> = HashSet::with_capacity_and_hasher(
            subscribe.len() + req.initial_resource_versions.len(),
            Default::default(),
        );
        for n in subscribe
            .iter()
            .copied()
            .chain(req.initial_resource_versions.keys().map(String::as_str))
        {
            if n != "*" && !st.names.contains(n) && added.insert(n) {
                bytes = bytes.saturating_add(n.len());
                count += 1;
            }
        }
        let mut gone: HashSet<&str> = HashSet::default();
        for n in &req.resource_names_unsubscribe {
            if (st.names.contains(n) || added.contains(n.as_str())) && gone.insert(n) {
                bytes = bytes.saturating_sub(n.len());
                count = count.saturating_sub(1);
            }
        }
        (bytes, count)
    }

    /// The names to look at for `kind` now.
    fn names_to_check(&mut self, kind: XdsType) -> Vec<Arc<str>> {
        let st = &mut self.types[kind];
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

    /// What to send for `kind` now, ignoring ordering: resources and removals.
    fn candidate(&mut self, kind: XdsType) -> Option<Sent> {
        if let Some(first) = self.first_of_wildcard(kind) {
            return first;
        }
        if let Some(first) = self.first_of_named(kind) {
            return first;
        }
        let names = self.names_to_check(kind);
        let all = std::mem::take(&mut self.types[kind].force) || self.full_resend;
        // Names held resources point at, computed once if a removal needs them.
        let mut pinned: Option<HashSet<Arc<str>>> = None;
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        for name in names {
            let st = &self.types[kind];
            let want = if st.in_scope(&name) {
                self.desired.get(kind, &name)
            } else {
                None
            };
            match want {
                // Sent once the proxy holds its table (see `apart`).
                Some(_) if kind == XdsType::VirtualHost && !self.table_held(&name) => {}
                Some(d) => {
                    // Empty sets are not hashed into (a first sync has nothing in them).
                    let forced =
                        all || (!st.force_names.is_empty() && st.force_names.contains(&name));
                    let held_same = !st.held.is_fresh()
                        && st.held.get(&name).is_some_and(|h| h.version() == d.version);
                    let rejected = !st.x.rejected.is_empty()
                        && st
                            .x
                            .rejected
                            .get(&name)
                            .is_some_and(|(v, _)| *v == d.version);
                    if (forced || !held_same) && !rejected {
                        resources.push(d.clone());
                    }
                }
                None if st.held.contains_key(&name) => {
                    if kind == XdsType::VirtualHost && self.goes_with_its_table(&name) {
                        continue;
                    }
                    let pinned = pinned.get_or_insert_with(|| {
                        pinned_by(holders_of(kind).map(|h| &self.types[h].held))
                    });
                    // A pinned name is looked at again when what pins it is released.
                    if !pinned.contains(&name) {
                        removed.push(name);
                    }
                }
                None if st.names.contains(&name) && !st.x.absent.contains(&name) => {
                    removed.push(name);
                }
                None => {}
            }
        }
        self.sent_of(kind, resources, removed)
    }

    /// A wildcard subscription's first answer, when the proxy holds nothing, names
    /// nothing besides the wildcard, and nothing is pending, forced or refused: every
    /// desired resource, taken in order from the maps without looking each name up (a
    /// first sync's, and a reconnect storm's, commonest answer). None: not that case.
    fn first_of_wildcard(&mut self, kind: XdsType) -> Option<Option<Sent>> {
        let st = &self.types[kind];
        if !(first_answer_due(st) && st.wildcard && st.names.is_empty()) {
            return None;
        }
        if kind == XdsType::VirtualHost && !self.tables_held() {
            // Nothing yet: the answer comes once the proxy holds the table.
            return Some(None);
        }
        let st = &mut self.types[kind];
        st.resync = false;
        st.force = false;
        // In name order, each name once (`Desired::all`): the view's own list when the
        // proxy has nothing of its own of the type.
        let resources: Arc<[Arc<Encoded>]> = match self.desired.whole_view_list(kind) {
            Some(list) => list.resources.clone(),
            None => self.desired.all(kind).cloned().collect(),
        };
        Some(self.sent_of_sorted(kind, resources, Vec::new()))
    }

    /// A named subscription's first answer, when the proxy holds nothing and nothing is
    /// pending, forced or refused (a sidecar's first endpoint subscription): its names,
    /// in order, walked beside the desired resources in order, each matched by pointer
    /// where the name was interned from them. A name with no resource is answered as
    /// removed. None: not that case.
    fn first_of_named(&mut self, kind: XdsType) -> Option<Option<Sent>> {
        let st = &self.types[kind];
        // Virtual hosts wait for their table name by name (`candidate`).
        let fresh = first_answer_due(st) && !st.wildcard && kind != XdsType::VirtualHost;
        // The walk passes every desired resource of the type: worth it when the names
        // are a good share of them (a sidecar's endpoints), not for a client that names
        // a few among many (proxyless gRPC).
        let desired_len = self.desired.view.maps.of(kind).map_or(0, |m| m.len());
        if !fresh || st.names.len().saturating_mul(4) < desired_len {
            return None;
        }
        // Exactly the view's names: the view's one list. Else a walk beside it.
        let whole = (st.names.len() == desired_len)
            .then(|| self.desired.whole_view_list(kind))
            .flatten()
            .filter(|l| names_are(&st.names, &l.resources));
        let (resources, removed) = match whole {
            Some(list) => (list.resources.clone(), Vec::new()),
            None => self.walk_named(kind),
        };
        let st = &mut self.types[kind];
        st.resync = false;
        st.force = false;
        Some(self.sent_of_sorted(kind, resources, removed))
    }

    /// `kind`'s subscribed names walked beside the desired resources, both in order,
    /// each matched by pointer where the name was interned from them: the resources
    /// there are, and the names with none (answered as removed).
    fn walk_named(&self, kind: XdsType) -> (Arc<[Arc<Encoded>]>, Vec<Arc<str>>) {
        let names = &self.types[kind].names;
        let mut resources = Vec::with_capacity(names.len());
        let mut removed = Vec::new();
        let mut desired = self.desired.all(kind).peekable();
        for name in names.iter() {
            while desired
                .next_if(|r| !Arc::ptr_eq(&r.name, name) && r.name < *name)
                .is_some()
            {}
            match desired.next_if(|r| Arc::ptr_eq(&r.name, name) || r.name == *name) {
                Some(r) => resources.push(r.clone()),
                None => removed.push(name.clone()),
            }
        }
        (resources.into(), removed)
    }

    /// The response carrying `resources` and `removed`, if it is due.
    fn sent_of(
        &mut self,
        kind: XdsType,
        mut resources: Vec<Arc<Encoded>>,
        mut removed: Vec<Arc<str>>,
    ) -> Option<Sent> {
        resources.sort_by(|a, b| a.name.cmp(&b.name));
        removed.sort();
        self.sent_of_sorted(kind, resources.into(), removed)
    }

    /// [`Self::sent_of`] for lists already in name order (the first-answer walks take
    /// them from sorted maps and lists: sorting thousands of names again was a few
    /// percent of a reconnect storm).
    fn sent_of_sorted(
        &mut self,
        kind: XdsType,
        resources: Arc<[Arc<Encoded>]>,
        removed: Vec<Arc<str>>,
    ) -> Option<Sent> {
        debug_assert!(resources.is_sorted_by(|a, b| a.name < b.name));
        debug_assert!(removed.is_sorted_by(|a, b| a < b));
        let st = &mut self.types[kind];
        if !st.force_names.is_empty() {
            for r in resources.iter() {
                st.force_names.remove(&r.name);
            }
        }
        for n in &removed {
            if !st.held.contains_key(n) {
                st.x.absent.insert(n.clone());
            }
        }
        if resources.is_empty() && removed.is_empty() && st.responded {
            return None;
        }
        // The view's whole list: its version is digested once.
        let version = match self.desired.view.list_made(kind) {
            Some(list) if removed.is_empty() && Arc::ptr_eq(&list.resources, &resources) => list
                .delta_version
                .get_or_init(|| response_version(&resources, &[]))
                .clone(),
            _ => response_version(&resources, &removed),
        };
        Some(Sent {
            version,
            resources,
            removed,
            ..Sent::default()
        })
    }
}

/// Whether a type's next answer is its first to a proxy that holds nothing, with nothing
/// pending, forced or refused: the case the first-answer walks take.
fn first_answer_due(st: &State) -> bool {
    st.resync
        && st.held.is_fresh()
        && st.dirty.is_empty()
        && st.force_names.is_empty()
        && st.x.rejected.is_empty()
        && st.x.absent.is_empty()
}

/// Whether `names` are exactly the names of `resources` (both in name order): pointers
/// settle it where the names were interned from the view.
fn names_are(names: &NameSet, resources: &[Arc<Encoded>]) -> bool {
    names.len() == resources.len()
        && names
            .iter()
            .zip(resources)
            .all(|(n, r)| Arc::ptr_eq(n, &r.name) || *n == r.name)
}

/// A version naming one delta response: a digest of what it carries (the resources'
/// content hashes and the removed names). foldhash with a fixed seed: the same response
/// gets the same version in every process of one build, and a first answer's thousand
/// hashes cost less than with SipHash (2% of a reconnect storm; the digest keys no table
/// a peer could flood).
fn response_version(resources: &[Arc<Encoded>], removed: &[Arc<str>]) -> String {
    use std::hash::BuildHasher;
    let mut h = foldhash::fast::FixedState::with_seed(0x7275_6464_6572).build_hasher();
    for r in resources {
        h.write_u64(r.hash);
    }
    for n in removed {
        n.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::stream::test_support::cla;

    /// The view's whole list is digested once, to the version any list of the same
    /// resources gets.
    #[test]
    fn the_views_whole_list_keeps_its_version() {
        use crate::xds::stream::test_support::{delta, snap};
        let endpoints: Vec<_> = (0..80).map(|i| cla(&format!("e{i:02}"), "1")).collect();
        let names: Vec<String> = endpoints.iter().map(|e| e.name.to_string()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let d = snap(&endpoints);
        let mut versions = Vec::new();
        for _ in 0..2 {
            let mut s = DeltaStream::new(d.clone());
            let mut step = s.on_request(&delta(XdsType::Endpoint, &names, ""), Instant::now());
            versions.push(step.responses.remove(0).system_version_info);
        }
        let list = d.view.list_made(XdsType::Endpoint).expect("made");
        assert_eq!(list.delta_version.get(), Some(&versions[0]));
        assert_eq!(versions[0], versions[1]);
        assert_eq!(versions[0], response_version(&endpoints, &[]));
    }

    #[test]
    fn a_response_version_follows_what_the_response_carries() {
        let (a, b) = (cla("a", "1"), cla("b", "1"));
        let gone: Vec<Arc<str>> = vec![Arc::from("c")];
        let v = response_version(&[a.clone(), b.clone()], &[]);
        assert_eq!(v.len(), 16);
        assert_eq!(v, response_version(&[cla("a", "1"), cla("b", "1")], &[]));
        for other in [
            response_version(std::slice::from_ref(&a), &[]),
            response_version(&[a.clone(), cla("b", "2")], &[]),
            response_version(&[a.clone(), b.clone()], &gone),
            response_version(&[], &gone),
        ] {
            assert_ne!(other, v);
        }
    }
}
