//! A proxy's subscribed names: a sorted vector of the shared names.
//!
//! A sidecar subscribes to the endpoints of every cluster it has, so at 1,000 clusters
//! this set is the largest thing a synced stream keeps. A hash set of 1,000 pointers
//! takes 2,048 buckets (35 KB); the sorted vector takes 16 KB and answers lookups in
//! ten comparisons.

use std::collections::HashSet;
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
