//! Make-before-break: which names held resources pin, what releasing one frees, whether
//! the Clusters an update needs are held ([`ready`]), which new Clusters in flight the
//! proxy has shown it took ([`Warming`]), and the bounded wait ([`OrderWait`]); also the
//! names an own-version change touched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use translator::encoded::{Encoded, TypeMap};
use xds_types::XdsType;

use crate::xds::fanout::{Desired, OwnVersion};
use crate::xds::stream::HashSet;
use crate::xds::stream::held::HeldSet;

/// Longest a Listener or Route update waits for the Clusters it needs.
pub(crate) const ORDER_WAIT: Duration = Duration::from_secs(2);

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

/// The types whose resources can pin resources of `kind`: those that refer to it.
pub(crate) fn holders_of(kind: XdsType) -> impl Iterator<Item = XdsType> {
    XdsType::ALL
        .into_iter()
        .filter(move |t| t.refers_to() == Some(kind))
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
/// is not meant to exist. `held(kind, name, map)` answers whether the proxy holds `name`,
/// which the view's `map` has (None: the proxy's own resource); the stream counts
/// endpoints sent ahead as held.
pub(crate) fn ready<'r>(
    desired: &Desired,
    held: impl Fn(XdsType, &str, Option<&TypeMap>) -> bool,
    refs: impl IntoIterator<Item = &'r Arc<str>>,
) -> bool {
    refs.into_iter()
        .all(|c| match desired.locate(XdsType::Cluster, c) {
            None => true,
            Some((cluster, from)) => {
                held(XdsType::Cluster, c, from)
                    && cluster
                        .refs
                        .iter()
                        .all(|e| match desired.locate(XdsType::Endpoint, e) {
                            None => true,
                            Some((_, from)) => held(XdsType::Endpoint, e, from),
                        })
            }
        })
}

/// The new Clusters of the Cluster response in flight, until the proxy asks for their
/// endpoints.
///
/// Envoy starts a Cluster's endpoint subscription only for a Cluster it accepted (into
/// warming), and past its first sync it holds the Cluster response's ACK until the new
/// Clusters have warmed, that is until their endpoints arrive: it asks for the
/// endpoints first. Its asking for every new Cluster's endpoints therefore shows it took
/// them all, and a route to them may go right behind their endpoints instead of a round
/// trip later, behind the ACK. Only a response of new Clusters qualifies, each with an
/// endpoints name (its EDS `service_name`) of its own that the proxy has not asked for
/// yet, the rest held at their versions: a changed Cluster re-warms beside the old one,
/// which nothing shows, and a name shared or already asked for cannot be asked for anew,
/// so those keep the wait for the ACK, as does a rejected Cluster (its endpoints are
/// never asked for).
///
/// This rests on Envoy ending a Cluster's warming as it applies its endpoints, which
/// holds for the Clusters Rudder sends: no active health checks, and TLS secrets shared
/// by every Cluster (warm since the first sync). A Cluster that warms on more than its
/// endpoints must not qualify.
#[derive(Debug)]
pub(crate) struct Warming {
    /// Endpoints names not asked for yet.
    pending: HashSet<Arc<str>>,
}

/// At most this many new Clusters are followed; past it (a first sync), the ACK is
/// waited for.
const WARMING_MAX: usize = 64;

impl Warming {
    /// What a Cluster response of `resources`, about to go, leaves to be shown taken
    /// (the stream keeps it beside that response and replaces it with the next); None if it carries no new Cluster or one whose taking nothing would
    /// show. `asked(name)`: whether the proxy has asked for endpoints `name` already.
    pub(crate) fn of(
        resources: &[Arc<Encoded>],
        held: &HeldSet,
        asked: impl Fn(&str) -> bool,
    ) -> Option<Warming> {
        if held.is_fresh() {
            return None;
        }
        let mut pending = HashSet::default();
        for r in resources {
            match held.get(&r.name) {
                Some(h) if h.version() == r.version => {}
                Some(_) => return None,
                None => match &r.refs[..] {
                    [endpoints]
                        if pending.len() < WARMING_MAX
                            && !asked(endpoints)
                            && pending.insert(endpoints.clone()) => {}
                    _ => return None,
                },
            }
        }
        (!pending.is_empty()).then_some(Warming { pending })
    }

    /// The proxy asked for `names` of endpoints (newly).
    pub(crate) fn asked(&mut self, names: &[Arc<str>]) {
        for n in names {
            self.pending.remove(n);
        }
    }

    /// Whether the proxy asked for every new Cluster's endpoints.
    pub(crate) fn taken(&self) -> bool {
        self.pending.is_empty()
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

/// Names of `kind` that changed between two own versions (compared by pointer).
pub(crate) fn own_changes(kind: XdsType, old: &OwnVersion, new: &OwnVersion) -> Vec<Arc<str>> {
    let (Some(a), Some(b)) = (old.of(kind), new.of(kind)) else {
        return Vec::new();
    };
    if std::ptr::eq(a, b) {
        // One shared map (a gRPC client's Listeners are its view's).
        return Vec::new();
    }
    let mut out: Vec<Arc<str>> = b
        .iter()
        .filter(|(n, r)| a.get(*n).is_none_or(|o| !Arc::ptr_eq(o, r)))
        .map(|(n, _)| n.clone())
        .collect();
    out.extend(a.keys().filter(|n| !b.contains_key(*n)).cloned());
    out
}
