//! What a proxy holds of one type, stored as a shared snapshot plus its differences.
//!
//! Most proxies hold exactly what their view holds. Keeping a name -> version map per
//! proxy costs memory in proportion to the mesh for every proxy (about 200 bytes per
//! resource); instead a [`HeldSet`] points at a map of the view (the *base*, shared by
//! every proxy of the view) and keeps only where the proxy differs from it (the
//! *overlay*: other versions, resources of its own, and base entries it does not hold).
//!
//! The base is an optimisation, never a meaning: every operation answers from base and
//! overlay together, so a stale base is still correct. Streams move the base along with
//! the view's change sets ([`HeldSet::rebase`], O(changed names)) and re-point it after
//! acknowledgements when that shrinks the overlay ([`HeldSet::compact`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use translator::encoded::{Encoded, TypeMap};

use crate::xds::stream::HashMap;

/// Overlays smaller than this are not worth compacting.
const COMPACT_MIN: usize = 64;

/// What a proxy holds of one resource.
#[derive(Clone, Debug)]
pub(crate) enum Held {
    /// A resource it accepted.
    Res(Arc<Encoded>),
    /// A version it reported on reconnecting (the resource itself is not known).
    Version(Box<str>),
}

impl Held {
    pub(crate) fn resource(&self) -> Option<&Arc<Encoded>> {
        match self {
            Held::Res(r) => Some(r),
            Held::Version(_) => None,
        }
    }

    fn is(&self, r: &Arc<Encoded>) -> bool {
        matches!(self, Held::Res(h) if Arc::ptr_eq(h, r))
    }
}

/// A borrowed view of what is held of one resource.
#[derive(Clone, Copy, Debug)]
pub(crate) enum HeldRef<'a> {
    /// A resource it accepted.
    Res(&'a Arc<Encoded>),
    /// A version it reported on reconnecting.
    Version(&'a str),
}

impl<'a> HeldRef<'a> {
    pub(crate) fn version(self) -> &'a str {
        match self {
            HeldRef::Res(r) => &r.version,
            HeldRef::Version(v) => v,
        }
    }

    pub(crate) fn resource(self) -> Option<&'a Arc<Encoded>> {
        match self {
            HeldRef::Res(r) => Some(r),
            HeldRef::Version(_) => None,
        }
    }

    fn owned(self) -> Held {
        match self {
            HeldRef::Res(r) => Held::Res(r.clone()),
            HeldRef::Version(v) => Held::Version(v.into()),
        }
    }
}

impl<'a> From<&'a Held> for HeldRef<'a> {
    fn from(h: &'a Held) -> Self {
        match h {
            Held::Res(r) => HeldRef::Res(r),
            Held::Version(v) => HeldRef::Version(v),
        }
    }
}

/// What a proxy holds of one type: a shared base map and the differences from it.
#[derive(Debug, Default)]
pub(crate) struct HeldSet {
    base: Arc<TypeMap>,
    /// `Some`: held as given (not as in the base); `None`: in the base but not held.
    overlay: HashMap<Arc<str>, Option<Held>>,
    /// Overlay size at the last compaction that did not pay off.
    compact_failed_at: usize,
}

impl HeldSet {
    /// What is held of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<HeldRef<'_>> {
        match self.overlay.get(name) {
            Some(o) => o.as_ref().map(HeldRef::from),
            None => self.base.get(name).map(HeldRef::Res),
        }
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether it holds `name`, which `map` has: from the overlay alone when the base is
    /// `map` (a synced proxy's, mostly), without looking the name up in the base.
    pub(crate) fn holds_from(&self, name: &str, map: Option<&TypeMap>) -> bool {
        match map {
            Some(m) if std::ptr::eq(Arc::as_ptr(&self.base), m) => {
                self.overlay.get(name).is_none_or(Option::is_some)
            }
            _ => self.contains_key(name),
        }
    }

    /// Holds `held` as `name`; returns what was held before.
    pub(crate) fn insert(&mut self, name: Arc<str>, held: Held) -> Option<Held> {
        let old = self.get(&name).map(HeldRef::owned);
        match self.base.get(&name) {
            Some(b) if held.is(b) => {
                self.overlay.remove(&name);
            }
            _ => {
                self.overlay.insert(name, Some(held));
            }
        }
        old
    }

    /// Stops holding `name`; returns what was held.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Held> {
        let old = self.get(name).map(HeldRef::owned);
        match self.base.get_key_value(name) {
            Some((k, _)) => {
                let k = k.clone();
                self.overlay.insert(k, None);
            }
            None => {
                self.overlay.remove(name);
            }
        }
        old
    }

    /// Whether it holds every name of `map` (at any version) but those `excused` says
    /// need not be held: `map` is its base and nothing of the base is marked not held
    /// unless excused. O(overlay), no name looked up.
    pub(crate) fn covers_but(&self, map: &TypeMap, excused: impl Fn(&str) -> bool) -> bool {
        std::ptr::eq(Arc::as_ptr(&self.base), map)
            && self.overlay.iter().all(|(n, h)| h.is_some() || excused(n))
    }

    /// The names held by version alone (claimed by the proxy, not sent by this stream);
    /// those are never in the base.
    pub(crate) fn claimed(&self) -> impl Iterator<Item = &Arc<str>> {
        self.overlay
            .iter()
            .filter(|(_, h)| matches!(h, Some(Held::Version(_))))
            .map(|(n, _)| n)
    }

    /// Whether this is a fresh set: nothing held, no base.
    pub(crate) fn is_fresh(&self) -> bool {
        self.base.is_empty() && self.overlay.is_empty()
    }

    /// Whether holding `batch` in a fresh set is better done by [`HeldSet::fill_in_order`]:
    /// it covers at least half of `target`.
    pub(crate) fn fills(&self, batch: usize, target: &TypeMap) -> bool {
        self.is_fresh() && batch >= COMPACT_MIN && batch * 2 >= target.len()
    }

    /// Holds `batch` in a fresh set, expressed against `target` straight away (a first
    /// sync of a thousand resources never builds a thousand-entry overlay). The batch is
    /// in name order, each name once (what either protocol sends): one walk beside the
    /// target's, no name hashed or looked up, and no check of the order (comparing a
    /// first sync's thousands of neighbouring names was a percent of a reconnect storm).
    pub(crate) fn fill_in_order(&mut self, batch: &[Arc<Encoded>], target: &Arc<TypeMap>) {
        debug_assert!(self.is_fresh());
        debug_assert!(batch.is_sorted_by(|a, b| a.name < b.name));
        self.fill_sorted(batch, target);
    }

    /// Holds every resource of `target` in a fresh set: the base alone.
    pub(crate) fn fill_whole(&mut self, target: Arc<TypeMap>) {
        debug_assert!(self.is_fresh());
        self.base = target;
    }

    /// The walk of [`HeldSet::fill_in_order`].
    fn fill_sorted(&mut self, batch: &[Arc<Encoded>], target: &Arc<TypeMap>) {
        self.base = target.clone();
        let mut batch = batch.iter().peekable();
        for (name, res) in target.iter() {
            // The batch mostly holds the target's own entries: a pointer settles it.
            if let Some(r) = batch.next_if(|r| Arc::ptr_eq(r, res)) {
                debug_assert!(r.name == *name);
                continue;
            }
            while let Some(r) = batch.next_if(|r| r.name < *name) {
                self.overlay
                    .insert(r.name.clone(), Some(Held::Res(r.clone())));
            }
            match batch.next_if(|r| r.name == *name) {
                Some(r) if Arc::ptr_eq(res, r) => {}
                Some(r) => {
                    self.overlay
                        .insert(r.name.clone(), Some(Held::Res(r.clone())));
                }
                None => {
                    self.overlay.insert(name.clone(), None);
                }
            }
        }
        for r in batch {
            self.overlay
                .insert(r.name.clone(), Some(Held::Res(r.clone())));
        }
    }

    /// Everything held, in no particular order. O(held).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, HeldRef<'_>)> {
        let base = self
            .base
            .iter()
            .filter(|(n, _)| !self.overlay.contains_key(&***n))
            .map(|(n, r)| (n, HeldRef::Res(r)));
        let own = self
            .overlay
            .iter()
            .filter_map(|(n, h)| h.as_ref().map(|h| (n, HeldRef::from(h))));
        base.chain(own)
    }

    /// Names held. O(held).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.iter().map(|(n, _)| n)
    }

    /// Whether the base is `map`.
    pub(crate) fn based_on(&self, map: &Arc<TypeMap>) -> bool {
        Arc::ptr_eq(&self.base, map)
    }

    /// Re-expresses the set over `next`, given every name whose entry may differ
    /// between the current base and `next` (names outside `changed` must be equal in
    /// both). O(changed).
    pub(crate) fn rebase(&mut self, next: &Arc<TypeMap>, changed: &BTreeSet<Arc<str>>) {
        let mut moved = Vec::with_capacity(changed.len());
        for name in changed {
            moved.push((name.clone(), self.get(name).map(HeldRef::owned)));
        }
        self.base = next.clone();
        for (name, held) in moved {
            match (held, next.get(&name)) {
                (Some(h), Some(b)) if h.is(b) => {
                    self.overlay.remove(&name);
                }
                (None, None) => {
                    self.overlay.remove(&name);
                }
                (held, _) => {
                    self.overlay.insert(name, held);
                }
            }
        }
        if changed.len() >= COMPACT_MIN {
            self.shrink();
        }
    }

    /// Re-points the base at `target` (the view's current map) if that at least halves
    /// the overlay. Tried again only once the overlay has doubled since a try that did
    /// not pay off, so a proxy that holds a small part of a large map does not pay
    /// O(map) on every acknowledgement.
    pub(crate) fn compact(&mut self, target: &Arc<TypeMap>) {
        let size = self.overlay.len();
        if size < COMPACT_MIN || self.based_on(target) || size < self.compact_failed_at * 2 {
            return;
        }
        let differing = target
            .iter()
            .filter(|(n, r)| {
                !self
                    .get(n)
                    .is_some_and(|h| matches!(h, HeldRef::Res(x) if Arc::ptr_eq(x, r)))
            })
            .count()
            + self.keys().filter(|n| !target.contains_key(&***n)).count();
        if differing * 2 > size {
            self.compact_failed_at = size;
            return;
        }
        let names: BTreeSet<Arc<str>> = self
            .base
            .keys()
            .chain(target.keys())
            .chain(self.overlay.keys())
            .cloned()
            .collect();
        self.rebase(target, &names);
        self.compact_failed_at = 0;
        self.shrink();
    }

    /// Gives back the overlay's spare capacity when it is mostly empty (a proxy's first
    /// sync fills it before the compaction that empties it).
    fn shrink(&mut self) {
        if self.overlay.capacity() > 4 * self.overlay.len().max(COMPACT_MIN / 4) {
            self.overlay.shrink_to_fit();
        }
    }

    /// How many entries differ from the base (for tests and debugging).
    #[cfg(test)]
    pub(crate) fn overlay_len(&self) -> usize {
        self.overlay.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use xds_types::XdsType;

    use super::*;

    fn res(name: &str, v: &str) -> Arc<Encoded> {
        Arc::new(Encoded::synthetic(XdsType::Cluster, name, v, &[]))
    }

    fn map(rs: &[&Arc<Encoded>]) -> Arc<TypeMap> {
        Arc::new(rs.iter().map(|r| (r.name.clone(), (*r).clone())).collect())
    }

    /// The set as a plain name -> version map.
    fn plain(s: &HeldSet) -> BTreeMap<String, String> {
        s.iter()
            .map(|(n, h)| (n.to_string(), h.version().to_string()))
            .collect()
    }

    #[test]
    fn answers_the_same_whatever_the_base() {
        let (a1, b1, c1, a2) = (res("a", "1"), res("b", "1"), res("c", "1"), res("a", "2"));
        let m1 = map(&[&a1, &b1, &c1]);
        let mut s = HeldSet::default();
        for r in [&a1, &b1, &c1] {
            s.insert(r.name.clone(), Held::Res(r.clone()));
        }
        s.insert("own".into(), Held::Version("x".into()));
        let before = plain(&s);
        // Onto the view's map (what a compaction does for larger overlays).
        let names: BTreeSet<Arc<str>> = m1
            .keys()
            .cloned()
            .chain(s.overlay.keys().cloned())
            .collect();
        s.rebase(&m1, &names);
        assert_eq!(plain(&s), before);
        assert_eq!(
            s.overlay_len(),
            1,
            "only the own resource differs from the base"
        );
        // The view moves on: a changes, c goes away; the proxy still holds the old ones.
        let m2 = map(&[&a2, &b1]);
        let changed: BTreeSet<Arc<str>> = ["a", "c"].into_iter().map(Arc::from).collect();
        s.rebase(&m2, &changed);
        assert_eq!(plain(&s), before, "rebasing never changes what is held");
        // It accepts the new a and the removal of c: nothing differs but its own.
        s.insert(a2.name.clone(), Held::Res(a2.clone()));
        s.remove("c");
        assert_eq!(s.overlay_len(), 1);
        assert_eq!(s.get("a").map(|h| h.version()), Some("2"));
        assert!(!s.contains_key("c"));
        // Dropping a base entry records it; taking it back clears the record.
        assert!(s.remove("b").is_some());
        assert!(!s.contains_key("b") && s.overlay_len() == 2);
        s.insert(b1.name.clone(), Held::Res(b1.clone()));
        assert_eq!(s.overlay_len(), 1);
    }

    #[test]
    fn a_first_sync_fills_against_the_view_map() {
        let all: Vec<Arc<Encoded>> = (0..100).map(|i| res(&format!("r{i}"), "1")).collect();
        let target: Arc<TypeMap> =
            Arc::new(all.iter().map(|r| (r.name.clone(), r.clone())).collect());
        // Holds all but r0, plus its own version of r1 and a resource of its own.
        let mut batch: Vec<Arc<Encoded>> = all[2..].to_vec();
        batch.push(res("r1", "own"));
        batch.push(res("mine", "1"));
        batch.sort_by(|a, b| a.name.cmp(&b.name));
        let mut s = HeldSet::default();
        assert!(s.fills(batch.len(), &target));
        s.fill_in_order(&batch, &target);
        assert_eq!(
            s.overlay_len(),
            3,
            "r0 not held, r1 differs, mine is its own"
        );
        let want: BTreeMap<String, String> = batch
            .iter()
            .map(|r| (r.name.to_string(), r.version.clone()))
            .collect();
        assert_eq!(plain(&s), want);
        assert!(!s.fills(batch.len(), &target), "only a fresh set is filled");
        // Names before, between and after the target's.
        let mut sorted = batch.clone();
        sorted.insert(0, res("a-first", "1"));
        sorted.push(res("zz-last", "1"));
        let mut walked = HeldSet::default();
        walked.fill_in_order(&sorted, &target);
        let want: BTreeMap<String, String> = sorted
            .iter()
            .map(|r| (r.name.to_string(), r.version.clone()))
            .collect();
        assert_eq!(plain(&walked), want);
        assert_eq!(
            walked.overlay_len(),
            5,
            "r0 not held; r1, mine and the two ends"
        );
        // Whether a name of the target is held, answered from the overlay, agrees with
        // the lookup; against another map it is the lookup.
        let other: TypeMap = (*target).clone();
        for name in target.keys() {
            let held = walked.contains_key(name);
            assert_eq!(walked.holds_from(name, Some(&target)), held, "{name}");
            assert_eq!(walked.holds_from(name, Some(&other)), held, "{name}");
            assert_eq!(walked.holds_from(name, None), held, "{name}");
        }
        assert!(!walked.holds_from("r0", Some(&target)));
        // It does not cover the target (r0 is not held), nor a copy of it; holding r0
        // again, it covers the target and still not the copy (not its base).
        assert!(!walked.covers_but(&target, |_| false) && !walked.covers_but(&other, |_| false));
        // Unless r0 is excused (sent ahead), and only r0.
        assert!(walked.covers_but(&target, |n| n == "r0"));
        assert!(!walked.covers_but(&target, |n| n == "r1"));
        assert!(!walked.covers_but(&other, |_| true), "its base only");
        walked.insert(target["r0"].name.clone(), Held::Res(target["r0"].clone()));
        assert!(
            walked.covers_but(&target, |_| false),
            "every name of the target held"
        );
        assert!(
            !walked.covers_but(&other, |_| false),
            "answered for its base only"
        );
        assert!(target.keys().all(|n| walked.contains_key(n)));
    }

    #[test]
    fn compaction_happens_when_it_pays_and_is_not_retried_each_time_when_it_does_not() {
        let all: Vec<Arc<Encoded>> = (0..1000).map(|i| res(&format!("r{i}"), "1")).collect();
        let target: Arc<TypeMap> =
            Arc::new(all.iter().map(|r| (r.name.clone(), r.clone())).collect());
        // Holds everything: the overlay collapses to nothing.
        let mut full = HeldSet::default();
        for r in &all {
            full.insert(r.name.clone(), Held::Res(r.clone()));
        }
        full.compact(&target);
        assert_eq!(full.overlay_len(), 0);
        assert!(
            full.overlay.capacity() < 64,
            "the first sync's overlay is given back"
        );
        assert_eq!(full.iter().count(), 1000);
        // Holds a tenth: compacting would add 900 tombstones, so it does not.
        let mut part = HeldSet::default();
        for r in all.iter().take(100) {
            part.insert(r.name.clone(), Held::Res(r.clone()));
        }
        part.compact(&target);
        assert_eq!(part.overlay_len(), 100);
        assert_eq!(part.compact_failed_at, 100);
        // Not tried again until the overlay doubled.
        for r in all.iter().skip(100).take(50) {
            part.insert(r.name.clone(), Held::Res(r.clone()));
        }
        part.compact(&target);
        assert_eq!(part.compact_failed_at, 100, "150 < 2 x 100: no new try");
    }
}
