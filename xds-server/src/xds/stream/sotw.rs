//! State-of-the-world ADS ([`Sotw`], run by [`super::core::Stream`]). Listeners and
//! Clusters are sent as whole sets, as the protocol requires; RouteConfigurations,
//! ClusterLoadAssignments and Secrets are named subscriptions, and a response carries only
//! the named resources that changed.
//!
//! A request is read as a version, the whole name list and a nonce: the list becomes the
//! subscription, and a nonce that is not the last one sent is stale.
//!
//! A response's version is an order-independent digest of everything of that type the
//! proxy holds once it applies the response (kept incrementally, so computing it costs
//! what changed). The same config has the same version across control-plane restarts,
//! so a reconnecting proxy whose `version_info` matches is not sent it again.
//!
//! Legacy wildcard (an empty name list meaning "everything" for LDS and CDS) applies only
//! before the client ever named a resource: after that, an empty list means none.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use translator::encoded::{Encoded, element_digest};
use xds_types::XdsType;

use crate::xds::stream::HashSet;
use crate::xds::stream::core::{Protocol, Sent, Stream, TypeState};
use crate::xds::stream::event::Refusal;
use crate::xds::stream::held::Held;
use crate::xds::stream::limits::check_request_sizes;
use crate::xds::stream::names::NameSet;
use crate::xds::stream::order::{holders_of, pinned_by};
use crate::xds::wire::frames::SotwResponse;
use crate::xds::wire::shared_body::Bodies;
use crate::xds::wire::sotw_request::SotwRequest;

/// The state-of-the-world variant.
#[derive(Debug)]
pub(crate) enum Sotw {}

/// One SotW ADS stream.
pub(crate) type SotwStream = Stream<Sotw>;
/// What one call to a SotW stream produced.
pub(crate) type Step = super::core::Step<SotwResponse>;

/// Per-type state only SotW keeps.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    /// The client has named resources at least once.
    ever_named: bool,
    /// Signature of `names` (see `same_names`).
    names_sig: u64,
    /// Digest of the raw name list the subscription was last taken from (see `on_wire`).
    names_digest: Option<u64>,
    held_digest: u64,
    acked_version: Option<String>,
    /// Versions the proxy rejected lately (a few: a client alternating between
    /// subscriptions must not get a fresh response to reject every time).
    rejected: VecDeque<String>,
    /// The error of the last rejection.
    error: Option<Arc<str>>,
    /// The version a reconnecting proxy said it holds, until matched.
    client_version: Option<String>,
}

type State = TypeState<Extra>;

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

impl Protocol for Sotw {
    type Request = SotwRequest;
    type Response = SotwResponse;
    type Extra = Extra;
    const NAME: &'static str = "sotw";
    const NAMED_CLUSTERS_ONLY: bool = true;
    const VIRTUAL_HOSTS_APART: bool = false;

    fn resumes(first: &SotwRequest) -> bool {
        !first.req.version_info.is_empty()
    }

    fn node(req: &SotwRequest) -> Option<&Node> {
        req.req.node.as_ref()
    }

    /// Its names are decoded only if their digest differs from the subscription last
    /// taken for the type (a SotW ACK repeats the whole subscription; see
    /// [`SotwRequest`]).
    fn read(s: &mut SotwStream, mut wire: SotwRequest, now: Instant) -> Step {
        let digest = wire.names_digest();
        let known = XdsType::from_type_url(&wire.req.type_url).is_some_and(|k| {
            let st = &s.types[k];
            st.subscribed && st.x.names_digest == Some(digest)
        });
        let mut req = std::mem::take(&mut wire.req);
        if !known {
            match wire.decode_names() {
                Ok(names) => req.resource_names = names,
                Err(reason) => {
                    s.refuse(Refusal {
                        limit: "name_size",
                        reason,
                    });
                    return Step::default();
                }
            }
        }
        s.request(&req, Some((digest, known)), now)
    }

    fn candidate(s: &mut SotwStream, kind: XdsType) -> Option<Sent> {
        if kind.full_set() {
            s.candidate_full(kind)
        } else {
            s.candidate_named(kind)
        }
    }

    fn response(kind: XdsType, sent: &Sent, bodies: Bodies) -> SotwResponse {
        SotwResponse {
            version_info: sent.version.clone(),
            resources: sent.resources.clone(),
            type_url: kind.type_url(),
            nonce: sent.nonce.clone(),
            bodies,
        }
    }

    /// The endpoints of the Clusters sent at another version than the proxy holds.
    fn rewarm(s: &SotwStream, sent: &Sent) -> Vec<Arc<str>> {
        let held = &s.types[XdsType::Cluster].held;
        sent.resources
            .iter()
            .filter(|r| held.get(&r.name).is_some_and(|h| h.version() != r.version))
            .flat_map(|r| r.refs.iter())
            .filter_map(|e| s.desired.name_of(XdsType::Endpoint, e))
            .collect()
    }

    /// A whole set accepted: what it left out is no longer held.
    fn before_hold(s: &mut SotwStream, kind: XdsType, sent: &Sent) {
        if !sent.full {
            return;
        }
        let keep: HashSet<&str> = sent.resources.iter().map(|r| &*r.name).collect();
        let gone: Vec<Arc<str>> = s.types[kind]
            .held
            .keys()
            .filter(|n| !keep.contains(&***n))
            .cloned()
            .collect();
        for n in gone {
            s.unhold(kind, &n);
        }
    }

    fn accepted(st: &mut State, sent: Sent) {
        st.x.held_digest = sent.digest;
        st.x.acked_version = Some(sent.version);
        st.x.rejected.clear();
        st.x.error = None;
    }

    fn rejected(st: &mut State, sent: &Sent, error: &Arc<str>) {
        if st.x.rejected.len() >= 8 {
            st.x.rejected.pop_front();
        }
        st.x.rejected.push_back(sent.version.clone());
        st.x.error = Some(error.clone());
    }

    fn deferred(_: &mut State, _: &Sent) {}

    fn forget_rejections(st: &mut State) {
        st.x.rejected.clear();
    }

    fn rejection_of(st: &State, want: &Encoded, held: Option<&str>) -> Option<Arc<str>> {
        let current = held == Some(want.version.as_str());
        st.x.error
            .clone()
            .filter(|_| !st.x.rejected.is_empty() && !current)
    }
}

impl SotwStream {
    /// Handles one request from the proxy.
    #[cfg(test)]
    pub(crate) fn on_request(&mut self, req: &DiscoveryRequest, now: Instant) -> Step {
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
        let Some(kind) = Self::served_type(&req.type_url, &mut step) else {
            return step;
        };
        if let Err(r) = self.admit(kind, req, matches!(names, Some((_, true)))) {
            self.refuse(r);
            return step;
        }
        if !req.response_nonce.is_empty() {
            let st = &mut self.types[kind];
            if st.last_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                step.ignore(
                    req.type_url.clone(),
                    format!("stale nonce {}", req.response_nonce),
                );
                return step;
            }
            if let Some(sent) = st.inflight.take() {
                self.answer(kind, sent, req.error_detail.as_ref(), &mut step);
            }
        } else if !self.types[kind].subscribed && !req.version_info.is_empty() {
            self.types[kind].x.client_version = Some(req.version_info.clone());
        }
        match names {
            Some((_, true)) => {}
            Some((digest, false)) => {
                self.subscribe(kind, &req.resource_names);
                self.types[kind].x.names_digest = Some(digest);
            }
            None => {
                self.subscribe(kind, &req.resource_names);
                self.types[kind].x.names_digest = None;
            }
        }
        self.flush(now, &mut step);
        step
    }

    /// Checks a request against the limits; its names become the subscription (unless
    /// `current`: they are the current one, left undecoded), so they are checked and
    /// charged before they are stored.
    fn admit(
        &mut self,
        kind: XdsType,
        req: &DiscoveryRequest,
        current: bool,
    ) -> Result<(), Refusal> {
        let bytes = check_request_sizes(
            kind,
            req.resource_names.iter().map(String::as_str),
            [req.version_info.as_str(), req.response_nonce.as_str()],
        )?;
        if req.resource_names.len() > self.name_limit {
            return Err(Refusal {
                limit: "subscribed_names",
                reason: format!(
                    "{kind}: {} resource names exceed {} (--max-subscribed-names)",
                    req.resource_names.len(),
                    self.name_limit
                ),
            });
        }
        if !current {
            self.name_bytes.set(kind, bytes, req.resource_names.len())?;
        }
        Ok(())
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
                named.push(self.intern_among(names.len(), kind, n));
            }
        }
        let set: NameSet = named.into_iter().collect();
        // New endpoint names are kept apart only while new Clusters wait on them.
        let follow = kind == XdsType::Endpoint && self.follows_endpoint_asks();
        let st = &mut self.types[kind];
        let wildcard = star || (set.is_empty() && !st.x.ever_named && kind.wildcard_by_default());
        st.x.ever_named |= !set.is_empty();
        let first = !st.subscribed;
        st.subscribed = true;
        if first || wildcard != st.wildcard || set != st.names {
            let mut asked = Vec::new();
            for n in set.iter().filter(|n| !st.names.contains(n)) {
                if follow && !first {
                    asked.push(n.clone());
                }
                st.dirty.insert(n.clone());
            }
            st.names = set;
            st.x.names_sig = st.names.iter().fold(0, |s, n| s.wrapping_add(name_sig(n)));
            st.wildcard = wildcard;
            st.resync = true;
            if !asked.is_empty() {
                self.asked_for_endpoints(&asked);
            }
        }
    }

    /// Whether a request names exactly the current subscription: every ACK repeats the
    /// whole list, so this is checked without building a set or interning a name. The
    /// signature (a sum over the subscribed names' shared pointers) tells a list with
    /// duplicates from the set it resembles.
    fn same_names(&self, kind: XdsType, names: &[String]) -> bool {
        let st = &self.types[kind];
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
        sig == st.x.names_sig
    }

    /// A reconnecting proxy said it holds `version`, which is `want`'s: it holds `want`.
    fn adopt(&mut self, kind: XdsType, want: Vec<Arc<Encoded>>, d: u64) {
        let st = &mut self.types[kind];
        st.x.client_version = None;
        st.x.acked_version = Some(hex(d));
        st.x.held_digest = d;
        for r in want {
            self.hold(kind, r.name.clone(), Held::Res(r));
        }
    }

    /// The response for a whole-set type, if one is due.
    fn candidate_full(&mut self, kind: XdsType) -> Option<Sent> {
        let st = &self.types[kind];
        if st.dirty.is_empty() && !st.resync && !st.force && st.x.acked_version.is_some() {
            return None;
        }
        let mut set = self.wanted(kind);
        if kind == XdsType::Cluster {
            set.extend(self.pinned_leftovers(kind, &set));
        }
        set.sort_by(|a, b| a.name.cmp(&b.name));
        let d = digest(&set);
        let version = hex(d);
        let full_resend = self.full_resend;
        let st = &mut self.types[kind];
        st.dirty.clear();
        st.resync = false;
        let forced = std::mem::take(&mut st.force) || full_resend;
        if st.x.acked_version.is_none() && st.x.client_version.as_deref() == Some(version.as_str())
        {
            // A reconnecting proxy already holds exactly this.
            self.adopt(kind, set, d);
            return None;
        }
        if !forced
            && (st.x.acked_version.as_deref() == Some(version.as_str())
                || st.x.rejected.contains(&version))
        {
            return None;
        }
        Some(Sent {
            version,
            digest: d,
            resources: set.into(),
            full: true,
            ..Sent::default()
        })
    }

    /// Held resources of `kind` not in `set` that a held route or listener still points
    /// at: they stay until it changes.
    fn pinned_leftovers(&self, kind: XdsType, set: &[Arc<Encoded>]) -> Vec<Arc<Encoded>> {
        let names: HashSet<&Arc<str>> = set.iter().map(|r| &r.name).collect();
        let gone: Vec<Arc<Encoded>> = self.types[kind]
            .held
            .iter()
            .filter(|(n, _)| !names.contains(*n))
            .filter_map(|(_, h)| h.resource().cloned())
            .collect();
        if gone.is_empty() {
            return gone;
        }
        let pinned = pinned_by(holders_of(kind).map(|h| &self.types[h].held));
        gone.into_iter()
            .filter(|r| pinned.contains(&r.name))
            .collect()
    }

    /// The response for a named type, if one is due: only what changed.
    fn candidate_named(&mut self, kind: XdsType) -> Option<Sent> {
        let full_resend = self.full_resend;
        let st = &mut self.types[kind];
        let first = !st.responded;
        let resync = std::mem::take(&mut st.resync) || first;
        let forced = std::mem::take(&mut st.force) || full_resend;
        let dirty = std::mem::take(&mut st.dirty);
        let force_names = std::mem::take(&mut st.force_names);
        let candidates: Vec<Arc<Encoded>> = if resync || forced {
            self.wanted(kind)
        } else {
            let st = &self.types[kind];
            dirty
                .iter()
                .filter(|n| st.in_scope(n))
                .filter_map(|n| self.desired.get(kind, n).cloned())
                .collect()
        };
        if first && self.types[kind].x.client_version.is_some() {
            // A reconnecting proxy: does it hold exactly what it should?
            let want = self.wanted(kind);
            let d = digest(&want);
            let st = &mut self.types[kind];
            if st.x.client_version.as_deref() == Some(hex(d).as_str()) {
                st.responded = true;
                self.adopt(kind, want, d);
                return None;
            }
        }
        let st = &self.types[kind];
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
        let d = next_digest(st, &sends);
        let version = hex(d);
        if !forced && !first && st.x.rejected.contains(&version) {
            return None;
        }
        Some(Sent {
            version,
            digest: d,
            resources: sends.into(),
            ..Sent::default()
        })
    }
}

/// The digest of what the proxy holds of a named type once it applies `sends`.
fn next_digest(st: &State, sends: &[Arc<Encoded>]) -> u64 {
    let mut d = st.x.held_digest;
    for r in sends {
        if let Some(old) = st.held.get(&r.name).and_then(|h| h.resource()) {
            d ^= element_digest(&old.name, old.hash);
        }
        d ^= element_digest(&r.name, r.hash);
    }
    d
}
