//! A proxy's subscribed names: a sorted list of the shared names, shared between the
//! proxies that subscribe alike, and what they weigh.
//!
//! A sidecar subscribes to the endpoints of every cluster it has, so at 1,000 clusters
//! this set is the largest thing a synced stream keeps: 16 KB as a sorted vector of
//! pointers (a hash set takes 35 KB). The proxies of one view mostly subscribe to the
//! same names, so a changed set is looked up in a process-wide pool ([`share`]) and
//! shares the list another stream already made: 10,000 sidecars keep one list, not
//! 10,000. The pool is an optimisation only: lookups and equality read the names, never
//! whether a list is shared.
//!
//! [`NameBytes`] keeps the bytes and count of a stream's names per type; their total
//! across types is bounded per stream and charged to the stream's identity, both checked
//! before a request's names are stored (as if nothing were shared: the bound is what a
//! stream may ask for, not what it happens to cost).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;

use xds_types::{PerType, XdsType};

use crate::xds::stream::HashSet;
use crate::xds::stream::event::Refusal;
use crate::xds::wire::budget::{Charge, NAME_OVERHEAD};

/// Lists shorter than this are not worth a lookup in the pool.
const SHARE_MIN: usize = 32;

/// A sorted list of names. Boxed inside its `Arc`, so the names' memory goes with the
/// last stream that holds the list, even while the pool still holds a weak reference to
/// it (a weak reference keeps only the `Arc`'s small header).
type List = Box<[Arc<str>]>;

/// A set of resource names (shared `Arc<str>`s, no copies), sorted; the list itself is
/// shared with other streams' equal sets where the pool finds one.
#[derive(Clone, Debug)]
pub(crate) struct NameSet(Arc<List>);

impl Default for NameSet {
    fn default() -> Self {
        NameSet(Arc::new(List::default()))
    }
}

impl PartialEq for NameSet {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for NameSet {}

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

    /// The set of `names`, `len` of them, in order and each once (a view's names): the
    /// pool's equal list if it has one, so nothing is copied or sorted.
    pub(crate) fn of_sorted<'a>(
        len: usize,
        names: impl Iterator<Item = &'a Arc<str>> + Clone,
    ) -> NameSet {
        debug_assert!(names.clone().is_sorted_by(|a, b| a < b));
        if len < SHARE_MIN {
            return NameSet(Arc::new(names.cloned().collect()));
        }
        NameSet(pooled(
            len,
            || names.clone(),
            || names.clone().cloned().collect(),
        ))
    }

    /// Adds many names at once.
    pub(crate) fn extend(&mut self, names: impl IntoIterator<Item = Arc<str>>) {
        // Most requests (every ACK) add nothing: no copy of what is there.
        let mut added: Vec<Arc<str>> = names.into_iter().filter(|n| !self.contains(n)).collect();
        if added.is_empty() {
            return;
        }
        if added.len() > self.0.len() / 8 {
            // Many (a first subscription): one sort of everything.
            added.extend(self.0.iter().cloned());
            self.0 = share(added);
            return;
        }
        added.sort_unstable();
        added.dedup();
        let at: Vec<usize> = added
            .iter()
            .map(|n| self.find(n).unwrap_or_else(|i| i))
            .collect();
        self.0 = share_edit(&self.0, &[], &added, &at);
    }

    /// Removes many names at once.
    pub(crate) fn remove_all(&mut self, names: &HashSet<&str>) {
        let mut skip: Vec<usize> = names.iter().filter_map(|n| self.find(n).ok()).collect();
        if skip.is_empty() {
            return;
        }
        skip.sort_unstable();
        self.0 = share_edit(&self.0, &skip, &[], &[]);
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

    /// Whether `self` and `other` keep one list between them.
    #[cfg(test)]
    pub(crate) fn shares_with(&self, other: &NameSet) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl FromIterator<Arc<str>> for NameSet {
    fn from_iter<I: IntoIterator<Item = Arc<str>>>(iter: I) -> Self {
        NameSet(share(iter.into_iter().collect()))
    }
}

/// The process-wide pool of name lists, by a hash of their pointers.
struct Pool {
    lists: HashMap<u64, Weak<List>>,
    /// Live lists at the last sweep: the pool is swept when it doubles from there.
    live_at_sweep: usize,
    /// The last edit made, which the other streams of a view make next.
    last_edit: Option<LastEdit>,
}

/// An edit of a list and the list it made.
struct LastEdit {
    /// The edited list. Held weakly, its allocation stays reserved, so a live list at
    /// the same address is this one.
    old: Weak<List>,
    skip: Vec<usize>,
    add: Vec<Arc<str>>,
    new: Weak<List>,
}

impl LastEdit {
    fn made(&self, old: &Arc<List>, skip: &[usize], add: &[Arc<str>]) -> Option<Arc<List>> {
        let same = std::ptr::addr_eq(self.old.as_ptr(), Arc::as_ptr(old))
            && self.skip == skip
            && self.add.len() == add.len()
            && self.add.iter().zip(add).all(|(a, b)| Arc::ptr_eq(a, b));
        same.then(|| self.new.upgrade()).flatten()
    }
}

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| {
    Mutex::new(Pool {
        lists: HashMap::default(),
        live_at_sweep: 0,
        last_edit: None,
    })
});

/// Sorts and dedups `names` into a list, the pool's equal one if it has it.
fn share(mut names: Vec<Arc<str>>) -> Arc<List> {
    names.sort_unstable();
    names.dedup();
    if names.len() < SHARE_MIN {
        return Arc::new(names.into_boxed_slice());
    }
    pooled(names.len(), || names.iter(), || names.clone())
}

/// `old` without the entries at `skip` and with `add` inserted at `at` (both sorted, as
/// [`NameSet::find`] places them), the pool's equal list if it has it. A stream that
/// makes the change another stream already made copies nothing: no name is cloned (a
/// reference count on a name every stream shares is a contended write).
fn share_edit(old: &Arc<List>, skip: &[usize], add: &[Arc<str>], at: &[usize]) -> Arc<List> {
    let edited = || Edited {
        old,
        skip,
        add,
        at,
        i: 0,
        s: 0,
        a: 0,
    };
    let len = old.len() - skip.len() + add.len();
    if len < SHARE_MIN {
        return Arc::new(edited().cloned().collect());
    }
    if let Some(new) = POOL
        .lock()
        .last_edit
        .as_ref()
        .and_then(|e| e.made(old, skip, add))
    {
        return new;
    }
    let new = pooled(len, edited, || edited().cloned().collect());
    POOL.lock().last_edit = Some(LastEdit {
        old: Arc::downgrade(old),
        skip: skip.to_vec(),
        add: add.to_vec(),
        new: Arc::downgrade(&new),
    });
    new
}

/// The pool's list equal to what `names` yields (by pointer), or `make()` added to it.
///
/// Equal lists share only when they hold the same `Arc`s (the names a stream interns
/// from its view); equal names in other allocations just make another list.
fn pooled<'a, I: Iterator<Item = &'a Arc<str>>>(
    len: usize,
    names: impl Fn() -> I,
    make: impl FnOnce() -> Vec<Arc<str>>,
) -> Arc<List> {
    // One seed per process is enough: a collision only costs the sharing.
    let mut h = SEED.build_hasher();
    for n in names() {
        h.write_usize(Arc::as_ptr(n).cast::<u8>() as usize);
    }
    let key = h.finish();
    // The lock is held for map operations only: one stream's long list is compared and
    // copied outside it, so it does not hold up the others' subscriptions.
    let found = POOL.lock().lists.get(&key).and_then(Weak::upgrade);
    if let Some(list) = found
        && list.len() == len
        && list.iter().zip(names()).all(|(a, b)| Arc::ptr_eq(a, b))
    {
        return list;
    }
    let list: Arc<List> = Arc::new(make().into_boxed_slice());
    let mut pool = POOL.lock();
    pool.lists.insert(key, Arc::downgrade(&list));
    if pool.lists.len() > 2 * pool.live_at_sweep + 64 {
        // A dead list's memory stays until its weak pointer goes: sweep them.
        pool.lists.retain(|_, w| w.strong_count() > 0);
        pool.live_at_sweep = pool.lists.len();
    }
    list
}

/// The names of an edited list, in order, borrowed.
struct Edited<'a> {
    old: &'a [Arc<str>],
    skip: &'a [usize],
    add: &'a [Arc<str>],
    at: &'a [usize],
    /// Next in `old`, `skip` and `add`.
    i: usize,
    s: usize,
    a: usize,
}

impl<'a> Iterator for Edited<'a> {
    type Item = &'a Arc<str>;

    fn next(&mut self) -> Option<&'a Arc<str>> {
        loop {
            if self.a < self.add.len() && self.at[self.a] <= self.i {
                self.a += 1;
                return Some(&self.add[self.a - 1]);
            }
            let name = self.old.get(self.i)?;
            self.i += 1;
            if self.s < self.skip.len() && self.skip[self.s] == self.i - 1 {
                self.s += 1;
                continue;
            }
            return Some(name);
        }
    }
}

static SEED: LazyLock<foldhash::fast::RandomState> =
    LazyLock::new(foldhash::fast::RandomState::default);

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
    fn streams_that_subscribe_alike_share_one_list() {
        // The names as a view holds them: one Arc each, which every stream interns.
        let view: Vec<Arc<str>> = (0..100).map(|i| Arc::from(format!("c{i:03}"))).collect();
        let mut a: NameSet = view[..99].iter().cloned().collect();
        let mut b: NameSet = view[..99].iter().rev().cloned().collect();
        assert!(
            a.shares_with(&b),
            "the same names in any order are one list"
        );
        a.extend([view[99].clone()]);
        assert!(!a.shares_with(&b) && a != b);
        assert_eq!(a.len(), 100);
        assert!(a.contains("c099") && !b.contains("c099"));
        b.extend([view[99].clone(), view[0].clone()]);
        assert!(a.shares_with(&b), "the same change made alike shares again");
        a.remove_all(&["c000"].into_iter().collect());
        assert!(
            !a.contains("c000") && b.contains("c000"),
            "a change stays its own"
        );
        // Equal names in other allocations are equal, but not shared.
        let copies: NameSet = view.iter().map(|n| Arc::from(&**n)).collect();
        assert!(copies == b && !copies.shares_with(&b));
        // Small sets are not pooled.
        let small: NameSet = view[..3].iter().cloned().collect();
        let small2: NameSet = view[..3].iter().cloned().collect();
        assert!(small == small2 && !small.shares_with(&small2));
    }

    #[test]
    fn edits_keep_the_set_sorted_and_equal_to_a_plain_set() {
        let pool: Vec<Arc<str>> = (0..200).map(|i| Arc::from(format!("n{i:03}"))).collect();
        let mut set = NameSet::default();
        let mut model = std::collections::BTreeSet::new();
        let mut x: u64 = 7;
        let mut next = |m: usize| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize % m
        };
        for round in 0..400 {
            // Few names at a time (placed one by one) and many (one sort), both ways.
            let k = if round % 10 == 0 { 60 } else { 1 + next(3) };
            let picked: Vec<Arc<str>> = (0..k).map(|_| pool[next(pool.len())].clone()).collect();
            if next(3) == 0 {
                let gone: HashSet<&str> = picked.iter().map(|n| &**n).collect();
                set.remove_all(&gone);
                for n in &picked {
                    model.remove(&**n);
                }
            } else {
                set.extend(picked.iter().cloned());
                model.extend(picked.iter().map(|n| n.to_string()));
            }
            let got: Vec<&str> = set.iter().map(|n| &**n).collect();
            assert_eq!(
                got,
                model.iter().map(String::as_str).collect::<Vec<_>>(),
                "round {round}"
            );
        }
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
