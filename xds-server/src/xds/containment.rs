//! Containment of config that proxies reject. When a proxy NACKs a route or cluster, the
//! policy objects (TrafficSplits with their HTTPRouteGroups, RetryPolicies, routes) that
//! could have caused it are left out **for the proxies of its certificate identity only**
//! (its SPIFFE ID, never the node id it claims), in the view it is in, and the rest is
//! rebuilt and re-sent. Those proxies follow a variant of their view
//! ([`ViewKey::variant`]); every other proxy of the view keeps the object. One proxy's
//! word costs only its own identity: it cannot take another tenant's policy from its
//! neighbours, nor from anyone once it has left. A proxy of the same identity under
//! another node id follows the variant too: the identity is what the certificate proves,
//! any of its proxies could have sent the rejection, and replicas of one workload run the
//! same Envoy.
//!
//! Who is suspected, per (identity, view):
//! - **The diff.** A proxy that held an accepted version of the rejected resource
//!   suspects exactly the policy objects (at their revisions) that are new since that
//!   version. A single suspect is confirmed at once.
//! - **The search.** Several suspects, or a rejection with no accepted version to diff
//!   against (a proxy that just connected, a control plane that just started), start a
//!   search: all candidates are left out, then half of them are re-admitted. If the
//!   proxy that rejected accepts that half, its members are cleared and the other half
//!   is tried; if it rejects it, the search continues within the rejected half. A
//!   candidate left alone is confirmed; suspects not yet cleared are then tested in
//!   turn. A re-admitted object that adds nothing to the view is cleared at once (it
//!   cannot be what a proxy rejects). Only the rejecting proxy's answers judge a trial:
//!   proxies of one identity may differ (one Envoy with stricter limits than the others).
//!
//! What is left out is lifted when the object changes (a new revision) or is deleted, and
//! when every proxy of the identity whose rejections put it there has left: nothing stays
//! out on the word of a gone proxy. A proxy that comes back is sent the object again and
//! judged again.
//!
//! **Never widened to the whole view.** Every identity whose proxies reject an object gets
//! its own variant, so a genuinely bad object (one every Envoy rejects) is left out for
//! each of them and no shared route table stays wedged; widening would buy only fewer
//! variants and spare a newcomer its own rejection, at the price of letting anyone who
//! holds two service accounts of a namespace take an object from all of it.
//!
//! **Bounds, per identity:** at most [`MAX_VIEWS_PER_IDENTITY`] views contained (one
//! search each), at most [`MAX_SUSPECTS_PER_IDENTITY`] suspects over them, at most
//! [`MAX_REJECTERS`] rejecting proxies remembered per view, and one copy of each
//! rejection's error text cut to [`ERROR_MAX`] characters. What does not fit is not
//! contained (the proxy keeps its last good config, as Envoy does anyway). So one identity
//! holds a few hundred KiB at most, and costs each build at most that many variant
//! updates, whatever it sends.
//!
//! Pure: the store feeds it events and reads [`Containment::excluded`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use translator::encoded::Source;
use translator::model::{ObjectKey, ViewKey};
use translator::policy::Excluded;

use crate::log_limit::RateLimited;

/// Most views one identity's rejections are contained in.
pub(crate) const MAX_VIEWS_PER_IDENTITY: usize = 4;
/// Most suspects one identity's rejections hold, over all its views.
pub(crate) const MAX_SUSPECTS_PER_IDENTITY: usize = 1024;
/// Most rejecting proxies remembered per identity and view (the containment is lifted
/// once those have left; one not remembered that still rejects is contained again).
pub(crate) const MAX_REJECTERS: usize = 64;
/// Longest error text kept from a rejection, in characters.
pub(crate) const ERROR_MAX: usize = 1024;

/// Peer-triggered containment events are logged at most once a second per kind.
static SEARCH_LOG: RateLimited = RateLimited::new();
static CONFIRM_LOG: RateLimited = RateLimited::new();
static LIFT_LOG: RateLimited = RateLimited::new();
static BOUND_LOG: RateLimited = RateLimited::new();

/// Why an object is left out for one identity's proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    /// The revision that was rejected.
    pub rev: u64,
    /// The rejected resource(s), e.g. `RDS outbound`.
    pub resource: Arc<str>,
    /// The proxy's error text (cut to [`ERROR_MAX`]).
    pub error: Arc<str>,
    /// Whether it is known to be the cause (else it is one of several candidates).
    pub confirmed: bool,
}

/// A rejection as the containment sees it.
#[derive(Clone, Debug)]
pub struct Nack<'a> {
    /// Which proxy rejected (unique per proxy: certificate identity and node id).
    pub by: &'a str,
    /// Policy objects that could have caused it.
    pub suspects: &'a [Source],
    /// Whether `suspects` is the exact diff against an accepted version.
    pub precise: bool,
    /// The proxy's certificate identity (SPIFFE ID): whose proxies stop getting them.
    pub identity: &'a str,
    /// What it rejected.
    pub resource: &'a str,
    /// Its error text.
    pub error: &'a str,
}

/// A search among candidates.
#[derive(Clone, Debug, Default)]
struct Search {
    /// The objects being tested.
    candidates: Vec<ObjectKey>,
    /// Whether a rejection showed that one of them is at fault (else they are only
    /// suspects left to clear).
    implicated: bool,
    /// The half re-admitted now.
    trial: Vec<ObjectKey>,
    /// The proxy whose rejection started it: only its answers judge a trial (proxies of
    /// one identity may differ, such as one Envoy with stricter limits). None once it
    /// left.
    by: Option<String>,
}

/// One identity's containment in one view.
#[derive(Debug, Default)]
struct Entry {
    suspects: BTreeMap<ObjectKey, Suspect>,
    search: Option<Search>,
    /// The proxies whose rejections put the suspects here (at most [`MAX_REJECTERS`]):
    /// the entry is lifted once all of them have left.
    rejecters: BTreeSet<String>,
}

impl Entry {
    fn excluded(&self) -> Excluded {
        let trial: BTreeSet<&ObjectKey> = self.search.iter().flat_map(|s| s.trial.iter()).collect();
        self.suspects
            .keys()
            .filter(|k| !trial.contains(k))
            .cloned()
            .collect()
    }

    fn confirm(&mut self, key: &ObjectKey, view: &ViewKey) {
        if let Some(s) = self.suspects.get_mut(key) {
            s.confirmed = true;
            if let Some(suppressed) = CONFIRM_LOG.allow() {
                tracing::warn!(object = %key, identity = view.variant.as_deref().unwrap_or_default(), namespace = %view.namespace, resource = %s.resource, error = ?s.error, suppressed, "proxies rejected config made from this object: left out for that identity's proxies only");
            }
        }
    }

    fn clear(&mut self, key: &ObjectKey) {
        if self.suspects.remove(key).is_some() {
            tracing::debug!(object = %key, "no longer suspected: the rejecting proxies accepted config made from it");
        }
    }

    /// Searches `candidates`: a lone implicated one is confirmed, otherwise half of them
    /// is re-admitted. With nothing left, the unconfirmed suspects still out (if any) are
    /// searched next, until every suspect is confirmed or cleared.
    fn narrow(
        &mut self,
        view: &ViewKey,
        candidates: Vec<ObjectKey>,
        implicated: bool,
        by: Option<String>,
    ) {
        let mut candidates = candidates;
        let mut implicated = implicated;
        loop {
            match candidates.len() {
                0 => {
                    // What is left to clear: unconfirmed suspects not yet tested.
                    let rest: Vec<ObjectKey> = self
                        .suspects
                        .iter()
                        .filter(|(_, s)| !s.confirmed)
                        .map(|(k, _)| k.clone())
                        .collect();
                    if rest.is_empty() {
                        self.search = None;
                        return;
                    }
                    candidates = rest;
                    implicated = false;
                }
                1 if implicated => {
                    self.confirm(&candidates[0], view);
                    candidates.clear();
                }
                1 => {
                    // One suspect left to clear: re-admit it alone.
                    self.search = Some(Search {
                        trial: candidates.clone(),
                        candidates,
                        implicated,
                        by,
                    });
                    return;
                }
                n => {
                    let trial = candidates[..n.div_ceil(2)].to_vec();
                    if let Some(suppressed) = SEARCH_LOG.allow() {
                        tracing::info!(candidates = n, trial = ?trial.iter().map(|k| k.to_string()).collect::<Vec<_>>(), identity = view.variant.as_deref().unwrap_or_default(), suppressed, "re-admitting suspected objects to find which one proxies reject");
                    }
                    self.search = Some(Search {
                        candidates,
                        implicated,
                        trial,
                        by,
                    });
                    return;
                }
            }
        }
    }

    /// Drops suspects `rev` says changed or are gone; returns whether any was.
    fn retain(&mut self, view: &ViewKey, rev: &impl Fn(&ObjectKey) -> Option<u64>) -> bool {
        let before = self.suspects.len();
        self.suspects.retain(|k, s| {
            let keep = rev(k) == Some(s.rev);
            if !keep {
                tracing::info!(object = %k, identity = view.variant.as_deref().unwrap_or_default(), "a left-out object changed or was deleted: it is tried again");
            }
            keep
        });
        if self.suspects.len() == before {
            return false;
        }
        if let Some(search) = &mut self.search {
            search.candidates.retain(|k| self.suspects.contains_key(k));
            search.trial.retain(|k| self.suspects.contains_key(k));
            if search.trial.is_empty() {
                let (rest, implicated, by) = (
                    search.candidates.clone(),
                    search.implicated,
                    search.by.clone(),
                );
                self.narrow(view, rest, implicated, by);
            }
        }
        true
    }
}

/// Containment for every identity whose proxies rejected something: its entries by
/// view (without variant).
#[derive(Debug, Default)]
pub struct Containment {
    identities: HashMap<Arc<str>, BTreeMap<ViewKey, Entry>>,
}

impl Containment {
    /// What each view variant leaves out of its next build: every variant in use, even
    /// one that leaves out nothing while a search re-admits all its suspects (its proxies
    /// stay on it until the search ends).
    pub(crate) fn excluded(&self) -> BTreeMap<ViewKey, Excluded> {
        self.identities
            .iter()
            .flat_map(|(id, views)| {
                views
                    .iter()
                    .map(move |(view, e)| (view.variant_for(id), e.excluded()))
            })
            .collect()
    }

    /// The view a proxy of `identity` in `view` follows: the variant of its identity
    /// while something is left out for it there, else the view itself.
    pub(crate) fn follows(&self, view: &ViewKey, identity: &str) -> ViewKey {
        let base = view.base();
        match self.identities.get(identity) {
            Some(views) if views.contains_key(&base) => base.variant_for(identity),
            _ => base,
        }
    }

    /// Whether `view` is a variant in use.
    pub fn holds(&self, view: &ViewKey) -> bool {
        view.variant.as_deref().is_some_and(|id| {
            self.identities
                .get(id)
                .is_some_and(|views| views.contains_key(&view.base()))
        })
    }

    /// Objects left out, with the view variant (its `variant` is the rejecting identity,
    /// its `namespace` that of the rejecting proxies) and why.
    pub fn suspects(&self) -> impl Iterator<Item = (ViewKey, &ObjectKey, &Suspect)> {
        self.identities.iter().flat_map(|(id, views)| {
            views.iter().flat_map(move |(view, e)| {
                let variant = view.variant_for(id);
                e.suspects.iter().map(move |(k, s)| (variant.clone(), k, s))
            })
        })
    }

    /// (identities, objects left out summed over identities and views), for metrics.
    pub(crate) fn size(&self) -> (usize, usize) {
        let objects = self
            .identities
            .values()
            .flat_map(|views| views.values())
            .map(|e| e.suspects.len())
            .sum();
        (self.identities.len(), objects)
    }

    fn entry_mut(&mut self, view: &ViewKey, identity: &str) -> Option<&mut Entry> {
        self.identities.get_mut(identity)?.get_mut(&view.base())
    }

    /// Proxy `by` of `identity` in `view` accepted resources made from `sources`.
    /// Returns whether what its variant leaves out changed (a rebuild is due).
    pub(crate) fn on_ack(
        &mut self,
        view: &ViewKey,
        identity: &str,
        by: &str,
        sources: &[Source],
    ) -> bool {
        let variant = view.base().variant_for(identity);
        let Some(e) = self.entry_mut(view, identity) else {
            return false;
        };
        let Some(search) = e.search.clone() else {
            return false;
        };
        if search.by.as_deref().is_some_and(|b| b != by) {
            return false;
        }
        // The trial passed once the proxy accepted config made from every re-admitted
        // object (at the revision suspected).
        let passed = search.trial.iter().all(|k| {
            e.suspects
                .get(k)
                .is_none_or(|s| sources.iter().any(|src| src.key == *k && src.rev == s.rev))
        });
        if !passed {
            return false;
        }
        for k in &search.trial {
            e.clear(k);
        }
        let rest: Vec<ObjectKey> = search
            .candidates
            .into_iter()
            .filter(|k| !search.trial.contains(k))
            .collect();
        e.narrow(&variant, rest, search.implicated, search.by);
        self.forget_empty(identity);
        true
    }

    /// Proxy `by` of `identity` left (its last stream ended): a search it started is
    /// judged by any proxy of the identity from now on, and what only its rejections
    /// keep out is lifted. Returns whether anything was lifted (a rebuild is due).
    pub(crate) fn proxy_gone(&mut self, identity: &str, by: &str) -> bool {
        let Some(views) = self.identities.get_mut(identity) else {
            return false;
        };
        let mut lifted = false;
        views.retain(|view, e| {
            if let Some(search) = e.search.as_mut()
                && search.by.as_deref() == Some(by)
            {
                search.by = None;
            }
            if e.rejecters.remove(by) && e.rejecters.is_empty() {
                if let Some(suppressed) = LIFT_LOG.allow() {
                    tracing::info!(identity, namespace = %view.namespace, objects = e.suspects.len(), suppressed, "the proxies that rejected config have left: what was left out for their identity is sent again");
                }
                lifted = true;
                return false;
            }
            true
        });
        self.forget_empty(identity);
        lifted
    }

    /// After a build: re-admitted objects that add nothing to the variant `view`
    /// (`present` says whether an object is among the sources of its resources) are
    /// cleared, since no proxy can reject them. Returns whether what it leaves out
    /// changed.
    pub(crate) fn after_build(
        &mut self,
        view: &ViewKey,
        present: impl Fn(&ObjectKey) -> bool,
    ) -> bool {
        let Some(identity) = view.variant.clone() else {
            return false;
        };
        let Some(e) = self.entry_mut(view, &identity) else {
            return false;
        };
        let Some(search) = e.search.clone() else {
            return false;
        };
        let idle: Vec<ObjectKey> = search
            .trial
            .iter()
            .filter(|k| !present(k))
            .cloned()
            .collect();
        if idle.is_empty() {
            return false;
        }
        for k in &idle {
            e.clear(k);
        }
        let trial: Vec<ObjectKey> = search
            .trial
            .into_iter()
            .filter(|k| !idle.contains(k))
            .collect();
        let rest: Vec<ObjectKey> = search
            .candidates
            .into_iter()
            .filter(|k| !idle.contains(k))
            .collect();
        if trial.is_empty() {
            e.narrow(view, rest, search.implicated, search.by);
        } else {
            e.search = Some(Search {
                candidates: rest,
                implicated: search.implicated,
                trial,
                by: search.by,
            });
        }
        self.forget_empty(&identity);
        true
    }

    /// A proxy in `view` rejected config. Returns whether what its identity's variant
    /// leaves out changed.
    pub fn on_nack(&mut self, view: &ViewKey, nack: &Nack<'_>) -> bool {
        let named: Vec<&Source> = nack.suspects.iter().filter(|s| s.key.is_policy()).collect();
        if named.is_empty() {
            return false;
        }
        let base = view.base();
        let variant = base.variant_for(nack.identity);
        let views = self.identities.entry(nack.identity.into()).or_default();
        if !views.contains_key(&base) && views.len() >= MAX_VIEWS_PER_IDENTITY {
            if let Some(suppressed) = BOUND_LOG.allow() {
                tracing::warn!(identity = nack.identity, namespace = %view.namespace, limit = MAX_VIEWS_PER_IDENTITY, suppressed, "not contained: this identity's rejections are contained in as many views as allowed; its proxy keeps its last good config");
            }
            return false;
        }
        let mut room = MAX_SUSPECTS_PER_IDENTITY
            .saturating_sub(views.values().map(|e| e.suspects.len()).sum::<usize>());
        let e = views.entry(base).or_default();
        let before = e.excluded();
        let resource: Arc<str> = nack.resource.into();
        let error: Arc<str> = crds::text::clip(nack.error, ERROR_MAX).into();
        let mut refused = 0;
        for s in &named {
            match e.suspects.get_mut(&s.key) {
                Some(entry) => {
                    if entry.rev != s.rev {
                        entry.rev = s.rev;
                        entry.confirmed = false;
                    }
                    entry.resource = resource.clone();
                    entry.error = error.clone();
                }
                None if room > 0 => {
                    room -= 1;
                    e.suspects.insert(
                        s.key.clone(),
                        Suspect {
                            rev: s.rev,
                            resource: resource.clone(),
                            error: error.clone(),
                            confirmed: false,
                        },
                    );
                }
                None => refused += 1,
            }
        }
        if refused > 0
            && let Some(suppressed) = BOUND_LOG.allow()
        {
            tracing::warn!(
                identity = nack.identity,
                refused,
                limit = MAX_SUSPECTS_PER_IDENTITY,
                suppressed,
                "not every suspect of a rejection is contained: this identity holds as many as allowed"
            );
        }
        if e.suspects.is_empty() {
            self.forget_empty(nack.identity);
            return false;
        }
        if e.rejecters.len() < MAX_REJECTERS {
            e.rejecters.insert(nack.by.to_string());
        }
        // The objects this rejection names are implicated: one of them is at fault. The
        // search continues within them; any others wait their turn.
        let candidates: Vec<ObjectKey> = named
            .iter()
            .map(|s| s.key.clone())
            .filter(|k| e.suspects.get(k).is_some_and(|s| !s.confirmed))
            .collect();
        e.narrow(&variant, candidates, true, Some(nack.by.to_string()));
        e.excluded() != before || e.search.is_some()
    }

    /// Drops suspects that changed or are gone (`rev` gives each object's current
    /// revision). Returns whether anything was lifted.
    pub fn retain(&mut self, rev: impl Fn(&ObjectKey) -> Option<u64>) -> bool {
        let mut lifted = false;
        for (id, views) in &mut self.identities {
            for (view, e) in views.iter_mut() {
                lifted |= e.retain(&view.variant_for(id), &rev);
            }
            views.retain(|_, e| !e.suspects.is_empty());
        }
        self.identities.retain(|_, views| !views.is_empty());
        lifted
    }

    /// Forgets `identity`'s entries that hold nothing, and the identity once it has none.
    fn forget_empty(&mut self, identity: &str) {
        if let Some(views) = self.identities.get_mut(identity) {
            views.retain(|_, e| !e.suspects.is_empty());
            if views.is_empty() {
                self.identities.remove(identity);
            }
        }
    }
}

#[cfg(test)]
mod tests;
