//! The ADS protocol, one pure state machine per stream: [`sotw::SotwStream`] for
//! `StreamAggregatedResources` and [`delta::DeltaStream`] for
//! `DeltaAggregatedResources`. They take requests, new snapshots and clock ticks, and
//! return the responses to send plus what happened (ACKs, NACKs). No sockets: the tonic
//! glue in `grpc.rs` only moves messages.
//!
//! Shared rules, both variants:
//! - one response in flight per type; the next waits for its ACK or NACK;
//! - make-before-break: Listeners and Routes wait until the Clusters and endpoints they
//!   point at are held by the proxy (bounded by [`ORDER_WAIT`], so one rejected Cluster
//!   cannot stall every route), and a Cluster stays while a held route still points at it;
//! - a NACKed version is remembered and never re-sent; the proxy keeps its last good
//!   config and gets the next different version.

pub mod delta;
pub mod sotw;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use translator::XdsType;

use crate::xds::snapshot::{Encoded, Resources, Source};

/// Longest a Listener or Route update waits for the Clusters it needs.
pub const ORDER_WAIT: Duration = Duration::from_secs(2);

/// A proxy rejected a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The type.
    pub kind: XdsType,
    /// The version it rejected (SotW) or the versions of the resources it was sent.
    pub version: String,
    /// The resources in the rejected response.
    pub resources: Vec<String>,
    /// The proxy's error text.
    pub error: String,
    /// The objects the rejected resources were made from.
    pub sources: Vec<String>,
    /// Policy objects (at their revisions) that could have caused the rejection: see
    /// [`suspects`].
    pub suspects: Vec<Source>,
    /// Whether `suspects` is an exact diff against versions the proxy accepted.
    pub precise: bool,
}

/// What a stream saw, for logs, metrics and the NACK record.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A response was sent.
    Sent {
        /// The type.
        kind: XdsType,
        /// Its version (SotW: the set; delta: a hash of what it carried).
        version: String,
        /// The resources it carried.
        resources: Vec<std::sync::Arc<Encoded>>,
        /// Names it removed (delta), or `None` for a state-of-the-world response, which
        /// replaces everything of its type.
        removed: Option<Vec<String>>,
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
/// Most bytes of names one stream may subscribe to, per type.
pub const MAX_SUBSCRIBED_BYTES: usize = 4 << 20;
/// Longest version or nonce a request may carry, in bytes.
pub const MAX_TOKEN_BYTES: usize = 128;

/// Checks the sizes of what a request names: each name, version and nonce, and the
/// names' total (`already` bytes are subscribed). Returns the new total or why not.
pub(crate) fn check_request_sizes<'a>(
    kind: XdsType,
    names: impl IntoIterator<Item = &'a String>,
    tokens: impl IntoIterator<Item = &'a String>,
    already: usize,
) -> Result<usize, String> {
    let mut total = already;
    for n in names {
        if n.len() > MAX_NAME_BYTES {
            return Err(format!(
                "{kind}: a resource name of {} bytes is longer than {MAX_NAME_BYTES}",
                n.len()
            ));
        }
        total = total.saturating_add(n.len());
    }
    if total > MAX_SUBSCRIBED_BYTES {
        return Err(format!(
            "{kind}: subscribed names would total {total} bytes, more than {MAX_SUBSCRIBED_BYTES}"
        ));
    }
    if let Some(t) = tokens.into_iter().find(|t| t.len() > MAX_TOKEN_BYTES) {
        return Err(format!(
            "{kind}: a version or nonce of {} bytes is longer than {MAX_TOKEN_BYTES}",
            t.len()
        ));
    }
    Ok(total)
}

/// Longest proxy error text kept from a NACK, in bytes: it is untrusted input that is
/// stored, logged and written into CRD status.
pub const NACK_TEXT_MAX: usize = 4096;

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
pub(crate) fn sources_of<'a>(
    resources: impl IntoIterator<Item = &'a std::sync::Arc<Encoded>>,
) -> Vec<String> {
    let set: BTreeSet<String> = resources
        .into_iter()
        .flat_map(|r| r.sources.iter().map(|s| s.key.to_string()))
        .collect();
    set.into_iter().collect()
}

/// Types whose rejections may be caused by policy objects (their contents come from
/// TrafficSplits, RetryPolicies and HTTPRouteGroups).
fn policy_shaped(kind: XdsType) -> bool {
    matches!(kind, XdsType::Route | XdsType::Cluster)
}

/// The policy sources of accepted resources, unique.
pub(crate) fn policy_sources<'a>(
    kind: XdsType,
    resources: impl IntoIterator<Item = &'a std::sync::Arc<Encoded>>,
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
    rejected: impl IntoIterator<Item = &'a std::sync::Arc<Encoded>>,
    held: impl Fn(&str) -> Option<&'a std::sync::Arc<Encoded>>,
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

/// Clusters a set of held Listeners and Routes point at: these may not be removed yet.
pub(crate) fn pinned<'a>(
    held: impl IntoIterator<Item = &'a std::sync::Arc<Encoded>>,
) -> BTreeSet<String> {
    held.into_iter()
        .flat_map(|r| r.refs.iter().cloned())
        .collect()
}

/// What the ordering gate needs to know about the Cluster and Endpoint types.
pub(crate) struct Readiness<'a> {
    /// Clusters the proxy holds (acknowledged).
    pub held_clusters: &'a BTreeSet<String>,
    /// Endpoint assignments the proxy holds.
    pub held_endpoints: &'a BTreeSet<String>,
    /// Clusters that should exist.
    pub desired_clusters: &'a Resources,
    /// Assignments that should exist.
    pub desired_endpoints: &'a Resources,
}

impl Readiness<'_> {
    /// Whether every Cluster that `refs` names (and its endpoints) is held by the proxy.
    pub(crate) fn ready<'r>(&self, refs: impl IntoIterator<Item = &'r String>) -> bool {
        refs.into_iter()
            .all(|c| match self.desired_clusters.get(c) {
                None => true,
                Some(cluster) => {
                    self.held_clusters.contains(c)
                        && cluster.refs.iter().all(|e| {
                            !self.desired_endpoints.contains_key(e)
                                || self.held_endpoints.contains(e)
                        })
                }
            })
    }
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

#[cfg(test)]
mod delta_tests;
#[cfg(test)]
mod sotw_tests;
#[cfg(test)]
mod test_support;
