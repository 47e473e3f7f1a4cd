//! Containment of config that proxies reject. When a proxy NACKs a route or cluster, the
//! policy objects (TrafficSplits with their HTTPRouteGroups, RetryPolicies) that could
//! have caused it are left out **of that proxy's view only** (its namespace and declared
//! egress), and the rest is rebuilt and re-sent. One tenant's mistake costs only its own
//! policy, and a workload that rejects everything hurts only the view it is in: it cannot
//! switch off policy for anyone else.
//!
//! Who is suspected, per view:
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
//!   proxies of one view may differ (one Envoy with stricter limits than the others).
//!
//! A suspect stays out until its contents change (a new revision) or it is deleted.
//! Pure: the store feeds it events and reads [`Containment::excluded`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use translator::encoded::Source;
use translator::model::{ObjectKey, ViewKey};
use translator::policy::Excluded;

/// Why an object is left out of a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    /// The revision that was rejected.
    pub rev: u64,
    /// The identity (SPIFFE ID) of the proxy that rejected config made from it.
    pub proxy: String,
    /// The rejected resource(s), e.g. `RDS outbound`.
    pub resource: String,
    /// The proxy's error text.
    pub error: String,
    /// Whether it is known to be the cause (else it is one of several candidates).
    pub confirmed: bool,
}

/// A rejection as the containment sees it.
#[derive(Clone, Debug)]
pub struct Nack<'a> {
    /// Which stream rejected (unique per proxy).
    pub by: &'a str,
    /// Policy objects that could have caused it.
    pub suspects: &'a [Source],
    /// Whether `suspects` is the exact diff against an accepted version.
    pub precise: bool,
    /// The proxy's identity.
    pub proxy: &'a str,
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
    /// one view may differ, such as one Envoy with stricter limits). None once it left.
    by: Option<String>,
}

/// One view's containment.
#[derive(Debug, Default)]
struct ViewContainment {
    suspects: BTreeMap<ObjectKey, Suspect>,
    search: Option<Search>,
}

impl ViewContainment {
    fn excluded(&self) -> Excluded {
        let trial: BTreeSet<&ObjectKey> = self.search.iter().flat_map(|s| s.trial.iter()).collect();
        self.suspects
            .keys()
            .filter(|k| !trial.contains(k))
            .cloned()
            .collect()
    }

    fn confirm(&mut self, key: &ObjectKey) {
        if let Some(s) = self.suspects.get_mut(key) {
            s.confirmed = true;
            tracing::warn!(object = %key, proxy = %s.proxy, resource = %s.resource, error = ?s.error, "a proxy rejected config made from this object: its view leaves it out until it changes");
        }
    }

    fn clear(&mut self, key: &ObjectKey) {
        if self.suspects.remove(key).is_some() {
            tracing::info!(object = %key, "no longer suspected: its view accepted config made from it");
        }
    }

    /// Searches `candidates`: a lone implicated one is confirmed, otherwise half of them
    /// is re-admitted. With nothing left, the unconfirmed suspects still out (if any) are
    /// searched next, until every suspect is confirmed or cleared.
    fn narrow(&mut self, candidates: Vec<ObjectKey>, implicated: bool, by: Option<String>) {
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
                    self.confirm(&candidates[0]);
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
                    tracing::info!(candidates = n, trial = ?trial.iter().map(|k| k.to_string()).collect::<Vec<_>>(), "re-admitting suspected objects to find which one proxies reject");
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
}

/// Containment for every view.
#[derive(Debug, Default)]
pub struct Containment {
    views: HashMap<ViewKey, ViewContainment>,
}

impl Containment {
    /// What each view leaves out of its next build (views leaving out nothing are not
    /// listed).
    pub fn excluded(&self) -> BTreeMap<ViewKey, Excluded> {
        self.views
            .iter()
            .map(|(k, v)| (k.clone(), v.excluded()))
            .filter(|(_, e)| !e.is_empty())
            .collect()
    }

    /// Objects left out, with the view and why.
    pub fn suspects(&self) -> impl Iterator<Item = (&ViewKey, &ObjectKey, &Suspect)> {
        self.views
            .iter()
            .flat_map(|(view, v)| v.suspects.iter().map(move |(k, s)| (view, k, s)))
    }

    /// Proxy `proxy` of `view` accepted resources made from `sources`. Returns whether
    /// what the view leaves out changed (a rebuild is due).
    pub fn on_ack(&mut self, view: &ViewKey, proxy: &str, sources: &[Source]) -> bool {
        let Some(v) = self.views.get_mut(view) else {
            return false;
        };
        let Some(search) = v.search.clone() else {
            return false;
        };
        if search.by.as_deref().is_some_and(|by| by != proxy) {
            return false;
        }
        // The trial passed once the proxy accepted config made from every re-admitted
        // object (at the revision suspected).
        let passed = search.trial.iter().all(|k| {
            v.suspects
                .get(k)
                .is_none_or(|s| sources.iter().any(|src| src.key == *k && src.rev == s.rev))
        });
        if !passed {
            return false;
        }
        for k in &search.trial {
            v.clear(k);
        }
        let rest: Vec<ObjectKey> = search
            .candidates
            .into_iter()
            .filter(|k| !search.trial.contains(k))
            .collect();
        v.narrow(rest, search.implicated, search.by);
        true
    }

    /// A proxy left: a search it started is judged by any proxy of the view from now on.
    pub fn proxy_gone(&mut self, view: &ViewKey, proxy: &str) {
        if let Some(search) = self.views.get_mut(view).and_then(|v| v.search.as_mut())
            && search.by.as_deref() == Some(proxy)
        {
            search.by = None;
        }
    }

    /// After a build: re-admitted objects that add nothing to `view` (`present` says
    /// whether an object is among the sources of the view's resources) are cleared, since
    /// no proxy can reject them. Returns whether what the view leaves out changed.
    pub fn after_build(&mut self, view: &ViewKey, present: impl Fn(&ObjectKey) -> bool) -> bool {
        let Some(v) = self.views.get_mut(view) else {
            return false;
        };
        let Some(search) = v.search.clone() else {
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
            v.clear(k);
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
            v.narrow(rest, search.implicated, search.by);
        } else {
            v.search = Some(Search {
                candidates: rest,
                implicated: search.implicated,
                trial,
                by: search.by,
            });
        }
        true
    }

    /// A proxy of `view` rejected config. Returns whether what the view leaves out
    /// changed.
    pub fn on_nack(&mut self, view: &ViewKey, nack: &Nack<'_>) -> bool {
        let v = self.views.entry(view.clone()).or_default();
        let named: Vec<&Source> = nack.suspects.iter().filter(|s| s.key.is_policy()).collect();
        if named.is_empty() {
            return false;
        }
        let before = v.excluded();
        for s in &named {
            let entry = v.suspects.entry(s.key.clone()).or_insert(Suspect {
                rev: s.rev,
                proxy: String::new(),
                resource: String::new(),
                error: String::new(),
                confirmed: false,
            });
            if entry.rev != s.rev {
                entry.rev = s.rev;
                entry.confirmed = false;
            }
            entry.proxy = nack.proxy.to_string();
            entry.resource = nack.resource.to_string();
            entry.error = nack.error.to_string();
        }
        // The objects this rejection names are implicated: one of them is at fault. The
        // search continues within them; any others wait their turn.
        let candidates: Vec<ObjectKey> = named
            .iter()
            .map(|s| s.key.clone())
            .filter(|k| v.suspects.get(k).is_some_and(|s| !s.confirmed))
            .collect();
        v.narrow(candidates, true, Some(nack.by.to_string()));
        v.excluded() != before || v.search.is_some()
    }

    /// Drops suspects that changed or are gone (`rev` gives each object's current
    /// revision), and proofs of old revisions. Returns whether anything was lifted.
    pub fn retain(&mut self, rev: impl Fn(&ObjectKey) -> Option<u64>) -> bool {
        let mut lifted = false;
        for v in self.views.values_mut() {
            let before = v.suspects.len();
            v.suspects.retain(|k, s| {
                let keep = rev(k) == Some(s.rev);
                if !keep {
                    tracing::info!(object = %k, "a left-out object changed or was deleted: it is tried again");
                }
                keep
            });
            lifted |= v.suspects.len() != before;
            if let Some(search) = &mut v.search {
                search.candidates.retain(|k| v.suspects.contains_key(k));
                search.trial.retain(|k| v.suspects.contains_key(k));
                if search.trial.is_empty() {
                    let (rest, implicated, by) = (
                        search.candidates.clone(),
                        search.implicated,
                        search.by.clone(),
                    );
                    v.narrow(rest, implicated, by);
                }
            }
        }
        self.views.retain(|_, v| !v.suspects.is_empty());
        lifted
    }

    /// Forgets a view no proxy uses any more.
    pub fn drop_view(&mut self, view: &ViewKey) {
        self.views.remove(view);
    }
}

#[cfg(test)]
mod tests;
