//! The ADS protocol, one pure state machine per stream: [`sotw::SotwStream`] for
//! `StreamAggregatedResources` and [`delta::DeltaStream`] for
//! `DeltaAggregatedResources`. They take requests, new view and own versions
//! ([`crate::xds::fanout`]) and clock ticks, and return the responses to send plus what
//! happened (ACKs, NACKs). No sockets: the tonic glue in `grpc.rs` only moves messages.
//!
//! Per-stream state is subscriptions and what the proxy holds (pointers to the shared
//! encoded resources, or versions it reported), never copies of the config. A change
//! reaches a stream as the names it touched, so its work is O(changed names).
//!
//! Shared rules, both variants:
//! - one response in flight per type; the next waits for its ACK or NACK;
//! - make-before-break: Listeners and Routes wait until the Clusters and endpoints they
//!   point at are held by the proxy (bounded by [`ORDER_WAIT`], so one rejected Cluster
//!   cannot stall every route), and a Cluster stays while a held route still points at it;
//! - a NACKed version is remembered and never re-sent; the proxy keeps its last good
//!   config and gets the next different version;
//! - a changed Cluster is followed by its endpoints again (Envoy re-warms it).

pub mod delta;
mod held;
mod names;
pub mod sotw;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use translator::encoded::{Encoded, Source};
use xds_types::XdsType;

use crate::xds::fanout::Desired;
pub(crate) use held::{Held, HeldSet};
pub(crate) use names::{NameBytes, NameSet};

/// Longest a Listener or Route update waits for the Clusters it needs.
pub const ORDER_WAIT: Duration = Duration::from_secs(2);

/// A proxy rejected a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The type.
    pub kind: XdsType,
    /// The version it rejected (SotW) or a hash of what the response carried (delta).
    pub version: String,
    /// The resources in the rejected response.
    pub resources: Vec<String>,
    /// The proxy's error text (cut to [`NACK_TEXT_MAX`]).
    pub error: String,
    /// The objects the rejected resources were made from.
    pub sources: Vec<String>,
    /// Policy objects (at their revisions) that could have caused the rejection: see
    /// [`suspects`].
    pub suspects: Vec<Source>,
    /// Whether `suspects` is an exact diff against versions the proxy accepted.
    pub precise: bool,
}

/// What a stream saw, for logs, metrics and containment.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A response was sent.
    Sent {
        /// The type.
        kind: XdsType,
        /// Resources it carried.
        resources: usize,
        /// Names it removed.
        removed: usize,
        /// Encoded bytes of the resources.
        bytes: usize,
    },
    /// A response was accepted.
    Ack {
        /// The type.
        kind: XdsType,
        /// The accepted version.
        version: String,
        /// The policy objects (at their revisions) the accepted resources were made from.
        accepted: Vec<Source>,
    },
    /// A response was rejected.
    Nack(Rejection),
    /// A request was ignored (unknown type, stale nonce).
    Ignored {
        /// The request's type URL.
        type_url: String,
        /// Why.
        reason: String,
    },
}

/// Longest resource name a request may carry, in bytes (Rudder's own names stay under
/// 300: `outbound|PORT||` and a 253-character Service name with its domain).
pub const MAX_NAME_BYTES: usize = 512;
/// Most bytes of names one stream may subscribe to, over every type (the default of
/// `--max-subscribed-bytes`).
pub const MAX_SUBSCRIBED_BYTES: usize = 4 << 20;
/// Longest version or nonce a request may carry, in bytes.
pub const MAX_TOKEN_BYTES: usize = 128;
/// Longest proxy error text kept from a NACK, in bytes: it is untrusted input that is
/// stored, logged and written into CRD status.
pub const NACK_TEXT_MAX: usize = 4096;

/// Why a stream must end: the limit a request broke (as `rudder_xds_refusals_total`
/// labels it) and what was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `subscribed_names`, `subscribed_bytes`, `name_size`, `identity_memory`, ...
    pub limit: &'static str,
    /// What was refused, naming the flag that sets the limit.
    pub reason: String,
}

/// Checks the sizes of what a request names: each name, version and nonce. Returns the
/// bytes of the names.
pub(crate) fn check_request_sizes<'a>(
    kind: XdsType,
    names: impl IntoIterator<Item = &'a String>,
    tokens: impl IntoIterator<Item = &'a String>,
) -> Result<usize, Refusal> {
    let refuse = |reason: String| Refusal {
        limit: "name_size",
        reason,
    };
    let mut total = 0usize;
    for n in names {
        if n.len() > MAX_NAME_BYTES {
            return Err(refuse(format!(
                "{kind}: a resource name of {} bytes is longer than {MAX_NAME_BYTES}",
                n.len()
            )));
        }
        total = total.saturating_add(n.len());
    }
    if let Some(t) = tokens.into_iter().find(|t| t.len() > MAX_TOKEN_BYTES) {
        return Err(refuse(format!(
            "{kind}: a version or nonce of {} bytes is longer than {MAX_TOKEN_BYTES}",
            t.len()
        )));
    }
    Ok(total)
}

/// A NACK's error text cut to [`NACK_TEXT_MAX`] bytes (at a character boundary).
pub(crate) fn bound_nack_text(text: &str) -> String {
    if text.len() <= NACK_TEXT_MAX {
        return text.to_string();
    }
    let mut end = NACK_TEXT_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len())
}

/// The objects a set of resources was made from, sorted and unique.
pub(crate) fn sources_of<'a>(resources: impl IntoIterator<Item = &'a Arc<Encoded>>) -> Vec<String> {
    let set: BTreeSet<String> = resources
        .into_iter()
        .flat_map(|r| r.sources.iter().map(|s| s.key.to_string()))
        .collect();
    set.into_iter().collect()
}

/// Types whose rejections may be caused by policy objects.
fn policy_shaped(kind: XdsType) -> bool {
    matches!(kind, XdsType::Route | XdsType::Cluster)
}

/// The policy sources of accepted resources, unique.
pub(crate) fn policy_sources<'a>(
    kind: XdsType,
    resources: impl IntoIterator<Item = &'a Arc<Encoded>>,
) -> Vec<Source> {
    if !policy_shaped(kind) {
        return Vec::new();
    }
    let set: BTreeSet<&Source> = resources
        .into_iter()
        .flat_map(|r| r.sources.iter().filter(|s| s.key.is_policy()))
        .collect();
    set.into_iter().cloned().collect()
}

/// What a rejection of `rejected` suspects: for each resource, the policy sources its
/// version the proxy holds (accepted) lacks, or all its policy sources when the proxy
/// holds none. Precise when every rejected resource had a held version.
pub(crate) fn suspects<'a>(
    kind: XdsType,
    rejected: impl IntoIterator<Item = &'a Arc<Encoded>>,
    held: impl Fn(&str) -> Option<&'a Arc<Encoded>>,
) -> (Vec<Source>, bool) {
    if !policy_shaped(kind) {
        return (Vec::new(), true);
    }
    let mut out = BTreeSet::new();
    let mut precise = true;
    for r in rejected {
        let before = held(&r.name);
        precise &= before.is_some();
        for s in r.sources.iter().filter(|s| s.key.is_policy()) {
            if before.is_none_or(|b| !b.sources.contains(s)) {
                out.insert(s.clone());
            }
        }
    }
    (out.into_iter().collect(), precise)
}

/// Names that resources held of `holders` point at: Clusters named by held Listeners
/// and Routes, endpoints named by held Clusters may not be removed while pointed at.
pub(crate) fn pinned_by<'a>(holders: impl IntoIterator<Item = &'a HeldSet>) -> HashSet<Arc<str>> {
    holders
        .into_iter()
        .flat_map(|h| h.iter())
        .filter_map(|(_, h)| h.resource())
        .flat_map(|r| r.refs.iter().cloned())
        .collect()
}

/// The types whose resources can pin resources of `kind`.
pub(crate) fn holders_of(kind: XdsType) -> &'static [XdsType] {
    match kind {
        XdsType::Cluster => &[XdsType::Listener, XdsType::Route],
        XdsType::Endpoint => &[XdsType::Cluster],
        _ => &[],
    }
}

/// What releasing `old` (a resource of `holder`'s type no longer held, or held at another
/// version) makes worth looking at again: the names it pointed at that are not wanted any
/// more, with their type.
pub(crate) fn released(
    desired: &Desired,
    holder: XdsType,
    old: &Encoded,
) -> Option<(XdsType, Vec<Arc<str>>)> {
    let target = holder.refers_to()?;
    let freed: Vec<Arc<str>> = old
        .refs
        .iter()
        .filter(|n| desired.get(target, n).is_none())
        .cloned()
        .collect();
    (!freed.is_empty()).then_some((target, freed))
}

/// Whether every Cluster that `refs` names (and its endpoints) is held by the proxy, or
/// is not meant to exist.
pub(crate) fn ready<'r>(
    desired: &Desired,
    held: impl Fn(XdsType, &str) -> bool,
    refs: impl IntoIterator<Item = &'r Arc<str>>,
) -> bool {
    refs.into_iter()
        .all(|c| match desired.get(XdsType::Cluster, c) {
            None => true,
            Some(cluster) => {
                held(XdsType::Cluster, c)
                    && cluster.refs.iter().all(|e| {
                        desired.get(XdsType::Endpoint, e).is_none() || held(XdsType::Endpoint, e)
                    })
            }
        })
}

/// The bounded wait of the ordering gate.
#[derive(Debug, Default)]
pub(crate) struct OrderWait {
    since: Option<Instant>,
}

impl OrderWait {
    /// Whether a blocked update may go anyway (the wait ran out); starts the wait.
    pub(crate) fn expired(&mut self, now: Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        now.duration_since(since) >= ORDER_WAIT
    }

    pub(crate) fn clear(&mut self) {
        self.since = None;
    }

    /// Whether a tick could unblock something.
    pub(crate) fn waiting(&self) -> bool {
        self.since.is_some()
    }
}

/// Names of `kind` that changed between two own versions (compared by pointer).
pub(crate) fn own_changes(
    kind: XdsType,
    old: &crate::xds::fanout::OwnVersion,
    new: &crate::xds::fanout::OwnVersion,
) -> Vec<Arc<str>> {
    let (Some(a), Some(b)) = (old.of(kind), new.of(kind)) else {
        return Vec::new();
    };
    let mut out: Vec<Arc<str>> = b
        .iter()
        .filter(|(n, r)| a.get(*n).is_none_or(|o| !Arc::ptr_eq(o, r)))
        .map(|(n, _)| n.clone())
        .collect();
    out.extend(a.keys().filter(|n| !b.contains_key(*n)).cloned());
    out
}

/// One resource as a stream sees it, for CSDS and `xdsctl`.
#[derive(Clone, Debug)]
pub struct ResourceView {
    /// Its name.
    pub name: Arc<str>,
    /// What the proxy should hold (None: it holds something it should drop).
    pub want: Option<Arc<Encoded>>,
    /// The version the proxy holds, if any.
    pub held: Option<String>,
    /// Whether a response carrying it awaits an answer.
    pub inflight: bool,
    /// The proxy's error, if it rejected the version it should hold.
    pub rejected: Option<Arc<str>>,
}

#[cfg(test)]
mod delta_tests;
#[cfg(test)]
mod sotw_tests;
#[cfg(test)]
pub(crate) mod test_support;
