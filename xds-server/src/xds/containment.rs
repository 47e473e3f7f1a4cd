//! Containment of config that proxies reject: when a proxy NACKs a route or cluster,
//! the policy objects (TrafficSplit, RetryPolicy, HTTPRouteGroup) that could have caused
//! it lose their contribution, and everything else is rebuilt and re-sent. One tenant's
//! mistake then costs only its own policy, never every route in the mesh.
//!
//! Who is suspected:
//! - **The diff.** A proxy that held an accepted version of the rejected resource
//!   suspects exactly the policy objects (at their revisions) that are new since that
//!   version: the last good version proves everything else. One suspect is confirmed at
//!   once.
//! - **Bisection.** Without such a version (a proxy that just connected, a control plane
//!   that just started), every policy object in the resource that no proxy has accepted
//!   yet is suspected. All are left out; then they are re-admitted half at a time. A
//!   re-admitted half that is accepted is cleared; one that is rejected is split again,
//!   until a NACK names a single object, which is confirmed.
//!
//! A suspect is excluded from translation until its contents change (a new revision) or
//! it is deleted. Pure: the cache feeds it events and reads [`Containment::excluded`].

use std::collections::{BTreeMap, BTreeSet, HashSet};

use translator::model::ObjectKey;

use crate::xds::snapshot::Source;

/// Why an object is left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    /// The revision that was rejected.
    pub rev: u64,
    /// The proxy that rejected config made from it.
    pub proxy: String,
    /// The rejected resource(s), e.g. `RDS outbound`.
    pub resource: String,
    /// The proxy's error text.
    pub error: String,
    /// Whether a rejection named it alone (else it is one of several suspects).
    pub confirmed: bool,
}

/// A rejection as the containment sees it.
#[derive(Clone, Debug)]
pub struct Nack<'a> {
    /// Policy objects that could have caused it.
    pub suspects: &'a [Source],
    /// Whether `suspects` is the exact diff against an accepted version.
    pub precise: bool,
    /// The proxy.
    pub proxy: &'a str,
    /// What it rejected.
    pub resource: &'a str,
    /// Its error text.
    pub error: &'a str,
}

/// The containment state.
#[derive(Debug, Default)]
pub struct Containment {
    /// (object, revision) pairs some proxy accepted config from.
    proven: HashSet<Source>,
    suspects: BTreeMap<ObjectKey, Suspect>,
    /// Unconfirmed suspects re-admitted for a test.
    trial: BTreeSet<ObjectKey>,
}

impl Containment {
    /// Objects to leave out of the next build.
    pub fn excluded(&self) -> BTreeSet<ObjectKey> {
        self.suspects
            .keys()
            .filter(|k| !self.trial.contains(*k))
            .cloned()
            .collect()
    }

    /// Objects left out, with why.
    pub fn suspects(&self) -> impl Iterator<Item = (&ObjectKey, &Suspect)> {
        self.suspects
            .iter()
            .filter(|(k, _)| !self.trial.contains(*k))
    }

    /// Whether anything is suspected (acknowledgements only matter then, and for
    /// proving objects good).
    pub fn active(&self) -> bool {
        !self.suspects.is_empty()
    }

    /// A proxy accepted resources made from `sources`. Returns whether the set of
    /// excluded objects changed (a rebuild is due).
    pub fn on_ack<'a>(&mut self, sources: impl IntoIterator<Item = &'a Source>) -> bool {
        for s in sources {
            if s.key.is_policy() && !self.proven.contains(s) {
                self.proven.insert(s.clone());
            }
        }
        if !self.active() {
            return false;
        }
        let mut changed = false;
        // Re-admitted suspects that were accepted are cleared.
        let cleared: Vec<ObjectKey> = self
            .trial
            .iter()
            .filter(|k| {
                self.suspects.get(*k).is_some_and(|s| {
                    self.proven.contains(&Source {
                        key: (*k).clone(),
                        rev: s.rev,
                    })
                })
            })
            .cloned()
            .collect();
        for k in cleared {
            self.trial.remove(&k);
            self.suspects.remove(&k);
            tracing::info!(object = %k, "a proxy accepted config made from it: no longer suspected");
            changed = true;
        }
        if self.trial.is_empty() {
            changed |= self.start_trial();
        }
        changed
    }

    /// Re-admits half of the unconfirmed suspects (at least one).
    fn start_trial(&mut self) -> bool {
        let open: Vec<ObjectKey> = self
            .suspects
            .iter()
            .filter(|(_, s)| !s.confirmed)
            .map(|(k, _)| k.clone())
            .collect();
        if open.is_empty() {
            return false;
        }
        let half = open.len().div_ceil(2);
        self.trial = open.into_iter().take(half).collect();
        tracing::info!(objects = ?self.trial.iter().map(|k| k.to_string()).collect::<Vec<_>>(), "re-admitting suspected objects to find which one proxies reject");
        true
    }

    /// A proxy rejected config. Returns whether the set of excluded objects changed.
    pub fn on_nack(&mut self, nack: &Nack<'_>) -> bool {
        let named: Vec<&Source> = nack
            .suspects
            .iter()
            .filter(|s| s.key.is_policy())
            .filter(|s| nack.precise || !self.proven.contains(*s))
            .collect();
        if named.is_empty() {
            return false;
        }
        let before = self.excluded();
        let alone = named.len() == 1;
        for s in &named {
            let entry = self.suspects.entry(s.key.clone()).or_insert(Suspect {
                rev: s.rev,
                proxy: nack.proxy.to_string(),
                resource: nack.resource.to_string(),
                error: nack.error.to_string(),
                confirmed: false,
            });
            if entry.rev != s.rev {
                entry.rev = s.rev;
                entry.confirmed = false;
            }
            entry.proxy = nack.proxy.to_string();
            entry.resource = nack.resource.to_string();
            entry.error = nack.error.to_string();
            entry.confirmed |= alone;
            if alone {
                tracing::warn!(object = %s.key, proxy = nack.proxy, resource = nack.resource, error = nack.error, "a proxy rejected config made from this object: leaving it out until it changes");
            }
        }
        // A failed trial: its members are suspects again, to be split further.
        self.trial.clear();
        self.excluded() != before
    }

    /// Drops suspects that changed or are gone (`rev` gives each object's current
    /// revision), and forgets proofs of old revisions. Returns whether any was lifted.
    pub fn retain(&mut self, rev: impl Fn(&ObjectKey) -> Option<u64>) -> bool {
        let before = self.suspects.len();
        self.suspects.retain(|k, s| {
            let keep = rev(k) == Some(s.rev);
            if !keep {
                tracing::info!(object = %k, "a left-out object changed or was deleted: it is tried again");
            }
            keep
        });
        self.trial.retain(|k| self.suspects.contains_key(k));
        self.proven.retain(|s| rev(&s.key) == Some(s.rev));
        self.suspects.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use translator::model::Kind;

    fn src(name: &str, rev: u64) -> Source {
        Source {
            key: ObjectKey::new(Kind::RetryPolicy, "default", name),
            rev,
        }
    }

    fn nack<'a>(suspects: &'a [Source], precise: bool) -> Nack<'a> {
        Nack {
            suspects,
            precise,
            proxy: "p.default",
            resource: "RDS outbound",
            error: "bad",
        }
    }

    fn names(set: &BTreeSet<ObjectKey>) -> Vec<&str> {
        set.iter().map(|k| k.name.as_str()).collect()
    }

    #[test]
    fn a_precise_single_suspect_is_confirmed_at_once() {
        let mut c = Containment::default();
        assert!(c.on_nack(&nack(&[src("bad", 3)], true)));
        assert_eq!(names(&c.excluded()), ["bad"]);
        assert!(c.suspects.values().all(|s| s.confirmed));
        // Accepting the rebuilt config proves nothing about it: it stays out.
        c.on_ack(&[src("good", 1)]);
        assert_eq!(names(&c.excluded()), ["bad"]);
        // Until it changes.
        assert!(c.retain(|k| Some(if k.name == "bad" { 4 } else { 1 })));
        assert!(c.excluded().is_empty());
    }

    #[test]
    fn bisection_finds_the_one_rejected_object_among_many() {
        let all: Vec<Source> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| src(n, 1))
            .collect();
        let guilty = "d";
        let mut c = Containment::default();
        assert!(c.on_nack(&nack(&all, false)));
        assert_eq!(c.excluded().len(), 5);
        // Simulate proxies: a build is rejected iff it includes the guilty object.
        for _ in 0..20 {
            let included: Vec<Source> = all
                .iter()
                .filter(|s| !c.excluded().contains(&s.key))
                .cloned()
                .collect();
            if included.iter().any(|s| s.key.name == guilty) {
                c.on_nack(&nack(&included, false));
            } else {
                c.on_ack(&included);
            }
            if c.suspects.len() == 1 && c.trial.is_empty() {
                break;
            }
        }
        assert_eq!(names(&c.excluded()), [guilty]);
        assert!(c.suspects[&src(guilty, 1).key].confirmed);
    }

    #[test]
    fn objects_a_proxy_accepted_are_not_suspected_by_imprecise_rejections() {
        let mut c = Containment::default();
        c.on_ack(&[src("old", 1)]);
        assert!(c.on_nack(&nack(&[src("old", 1), src("new", 2)], false)));
        assert_eq!(names(&c.excluded()), ["new"]);
        // A precise diff is trusted even against another proxy's acceptance.
        assert!(c.on_nack(&nack(&[src("old", 1)], true)));
        assert_eq!(names(&c.excluded()), ["new", "old"]);
    }

    #[test]
    fn non_policy_sources_are_never_suspected() {
        let mut c = Containment::default();
        let svc = Source {
            key: ObjectKey::new(Kind::Service, "default", "web"),
            rev: 1,
        };
        assert!(!c.on_nack(&nack(&[svc], true)));
        assert!(c.excluded().is_empty());
    }
}
