//! A proxy's subscribed names: a sorted vector of the shared names, and what they weigh.
//!
//! A sidecar subscribes to the endpoints of every cluster it has, so at 1,000 clusters
//! this set is the largest thing a synced stream keeps. A hash set of 1,000 pointers
//! takes 2,048 buckets (35 KB); the sorted vector takes 16 KB and answers lookups in
//! ten comparisons.
//!
//! [`NameBytes`] keeps the bytes and count of a stream's names per type; their total
//! across types is bounded per stream and charged to the stream's identity, both checked
//! before a request's names are stored.

use std::collections::HashSet;
use std::sync::Arc;

use xds_types::{PerType, XdsType};

use crate::xds::stream::event::Refusal;
use crate::xds::wire::budget::{Charge, NAME_OVERHEAD};

/// A set of resource names (shared `Arc<str>`s, no copies), sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NameSet(Vec<Arc<str>>);

impl NameSet {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|n| (**n).cmp(name))
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// The shared name equal to `name`, if present.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<str>> {
        self.find(name).ok().map(|i| &self.0[i])
    }

    /// Adds many names at once (one sort, not one shift per name).
    pub(crate) fn extend(&mut self, names: impl IntoIterator<Item = Arc<str>>) {
        let before = self.0.len();
        self.0.extend(names);
        // Most requests (every ACK) add nothing: no sort over what is there.
        if self.0.len() == before {
            return;
        }
        if self.0.len() - before < 8 {
            // A few: each moved into place.
            let added = self.0.split_off(before);
            for name in added {
                if let Err(i) = self.find(&name) {
                    self.0.insert(i, name);
                }
            }
        } else {
            self.0.sort_unstable();
            self.0.dedup();
        }
    }

    /// Removes many names at once.
    pub(crate) fn remove_all(&mut self, names: &HashSet<&str>) {
        self.0.retain(|n| !names.contains(&**n));
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Arc<str>> for NameSet {
    fn from_iter<I: IntoIterator<Item = Arc<str>>>(iter: I) -> Self {
        let mut s = NameSet::default();
        s.extend(iter);
        s.0.shrink_to_fit();
        s
    }
}

/// The bytes and count of a stream's subscribed names, per type; bounded in total and
/// charged to the stream's identity.
#[derive(Debug)]
pub(crate) struct NameBytes {
    per_type: PerType<(usize, usize)>,
    /// Most bytes of names in all types (`--max-subscribed-bytes`).
    limit: usize,
    charge: Option<Charge>,
}

impl Default for NameBytes {
    fn default() -> Self {
        NameBytes::new(usize::MAX, None)
    }
}

impl NameBytes {
    /// At most `limit` bytes of names in all, charged to `charge` (None: not charged).
    pub(crate) fn new(limit: usize, charge: Option<Charge>) -> Self {
        NameBytes {
            per_type: PerType::default(),
            limit,
            charge,
        }
    }

    /// Bytes and count of `kind`'s names.
    pub(crate) fn of(&self, kind: XdsType) -> (usize, usize) {
        self.per_type[kind]
    }

    /// Bytes of names in all types.
    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.per_type.values().map(|(b, _)| b).sum()
    }

    /// `kind`'s names become `bytes` in `count` names, if the stream's total stays within
    /// the limit and the identity's budget takes the charge; else nothing changes.
    pub(crate) fn set(&mut self, kind: XdsType, bytes: usize, count: usize) -> Result<(), Refusal> {
        let mut next = self.per_type.clone();
        next[kind] = (bytes, count);
        let total: usize = next.values().map(|(b, _)| b).sum();
        if total > self.limit {
            return Err(Refusal {
                limit: "subscribed_bytes",
                reason: format!(
                    "{kind}: the stream's subscribed names would total {total} bytes, more than {} (--max-subscribed-bytes)",
                    self.limit
                ),
            });
        }
        if let Some(charge) = &mut self.charge {
            let names: usize = next.values().map(|(_, n)| n).sum();
            charge
                .resize(total.saturating_add(names.saturating_mul(NAME_OVERHEAD)))
                .map_err(|e| Refusal {
                    limit: e.limit(),
                    reason: format!("{kind}: subscribing: {e}"),
                })?;
        }
        self.per_type = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_its_weight() {
        let mut n = NameBytes::new(1_000_000, None);
        for (i, kind) in XdsType::ALL.into_iter().enumerate() {
            n.set(kind, 10 * (i + 1), i + 1).expect("within the limit");
        }
        for (i, kind) in XdsType::ALL.into_iter().enumerate() {
            assert_eq!(n.of(kind), (10 * (i + 1), i + 1), "{kind}");
        }
    }

    #[test]
    fn behaves_as_a_set() {
        let n = |s: &str| Arc::<str>::from(s);
        let mut s: NameSet = ["b", "a", "c", "a"].into_iter().map(n).collect();
        assert_eq!(s.len(), 3);
        assert!(s.contains("a") && s.contains("c") && !s.contains("d"));
        s.extend(["e", "b", "d"].into_iter().map(n));
        assert_eq!(
            s.iter().map(|x| &**x).collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e"]
        );
        s.remove_all(&["a", "c", "e", "zz"].into_iter().collect());
        assert_eq!(s.iter().map(|x| &**x).collect::<Vec<_>>(), ["b", "d"]);
        assert_eq!(s.get("d").map(|x| &**x), Some("d"));
        assert!(!s.is_empty());
    }

    #[test]
    fn name_bytes_are_bounded_across_types_and_charged_before_they_count() {
        use crate::config::BudgetConfig;
        use crate::xds::wire::budget::Budget;
        let budget = Budget::new(
            BudgetConfig {
                total: 1 << 30,
                share: 10_000,
                per_pod: 0,
            },
            prometheus_client::metrics::gauge::Gauge::default(),
        );
        let charge = Charge::new(budget.account("spiffe://td/ns/a/sa/x", None));
        let mut n = NameBytes::new(6_000, Some(charge));
        n.set(XdsType::Endpoint, 3_000, 10).expect("within");
        assert_eq!(budget.used(), 3_000 + 10 * NAME_OVERHEAD);
        // The bound is per stream, over every type.
        let r = n
            .set(XdsType::Route, 3_001, 1)
            .expect_err("over the stream's bound");
        assert_eq!(r.limit, "subscribed_bytes");
        assert!(r.reason.contains("--max-subscribed-bytes"), "{}", r.reason);
        assert_eq!(n.of(XdsType::Route), (0, 0), "nothing changed");
        // The identity's allowance holds too.
        let r = n
            .set(XdsType::Route, 2_900, 200)
            .expect_err("over the allowance");
        assert_eq!(r.limit, "identity_memory");
        assert!(r.reason.contains("--identity-memory-share"), "{}", r.reason);
        n.set(XdsType::Route, 2_000, 10).expect("within both");
        assert_eq!(n.total(), 5_000);
        // A smaller subscription gives back; dropping the stream gives back the rest.
        n.set(XdsType::Endpoint, 0, 0).expect("shrinks");
        assert_eq!(budget.used(), 2_000 + 10 * NAME_OVERHEAD);
        drop(n);
        assert_eq!(budget.used(), 0);
    }
}
