//! What the store publishes to streams, and how a stream reads it.
//!
//! - A [`ViewVersion`] per view: the clusters, endpoints and routes every proxy of the
//!   view shares, and the changes that led to each of the last versions. A stream that
//!   saw the previous version applies just the change set: O(changed names), never a walk
//!   over the whole mesh.
//! - An [`OwnVersion`] per proxy: its listeners, inbound clusters and secrets, and which
//!   view it belongs to. Small; a stream diffs it whole.
//!
//! Both are immutable behind `Arc`s and sent on `watch` channels: streams share the
//! encoded resources, and no lock is held while a stream works.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use translator::encoded::{Encoded, Source, TypeMap};
use translator::incremental::{Changes, Own, ViewMaps};
use translator::model::ViewKey;
use xds_types::{PerType, XdsType};

use super::wire::shared_body::SharedBodies;

/// How many versions of change sets a view keeps for streams that fall behind.
pub(crate) const HISTORY: usize = 16;

/// One version of a view.
#[derive(Debug)]
pub struct ViewVersion {
    /// Which view.
    pub key: ViewKey,
    /// Increases by one with each change.
    pub version: u64,
    /// Everything the view holds at this version.
    pub maps: ViewMaps,
    /// The changes that led to each of the last versions: (version, changes), oldest
    /// first, this one last.
    pub recent: Vec<(u64, Arc<Changes>)>,
    /// When the source change behind this version was seen (for convergence time).
    pub changed_at: Option<Instant>,
    /// Response bodies encoded at this version, shared by the proxies sent them.
    pub bodies: Arc<SharedBodies>,
    /// The names of each type by hash, made when a request first names many.
    names: PerType<OnceLock<NameIndex>>,
    /// Each type's whole list, made when a first answer is first exactly that: one more
    /// reference to every resource of the type while this version lives.
    lists: PerType<OnceLock<ViewList>>,
}

/// A view version's resources of one type, in name order, as one shared list: the
/// commonest first answer (a sidecar's endpoints and virtual hosts) is exactly this, and
/// sending it takes one reference count instead of one per resource, each a write to a
/// count every stream on both cores touches. What is learnt of the list once is kept
/// beside it.
#[derive(Debug)]
pub(crate) struct ViewList {
    /// The view's resources of the type, in name order (its map's values).
    pub(crate) resources: Arc<[Arc<Encoded>]>,
    /// The policy objects its resources were made from (filled by the first stream whose
    /// proxy accepts it).
    pub(crate) policy: OnceLock<Vec<Source>>,
    /// The version of a delta response that carries exactly it (filled by the first
    /// stream that sends one).
    pub(crate) delta_version: OnceLock<String>,
}

/// A view version's names of one type, by hash, each with its place in name order. A
/// first request names a thousand or more, and each costs a dozen string compares of
/// long, alike names in the ordered map: 7% of a first sync's CPU. The keys are the
/// view's own names and the seed is random, so names a peer sends are only looked up,
/// never inserted.
type NameIndex = std::collections::HashMap<Arc<str>, u32, foldhash::fast::RandomState>;

impl ViewVersion {
    /// The first version of a view.
    pub fn first(key: ViewKey, maps: ViewMaps) -> Self {
        ViewVersion {
            key,
            version: 1,
            maps,
            recent: Vec::new(),
            changed_at: None,
            bodies: Arc::default(),
            names: PerType::default(),
            lists: PerType::default(),
        }
    }

    /// The version after `self`.
    pub fn next(&self, maps: ViewMaps, changes: Changes, changed_at: Option<Instant>) -> Self {
        let version = self.version + 1;
        let mut recent: Vec<(u64, Arc<Changes>)> = self
            .recent
            .iter()
            .skip(self.recent.len().saturating_sub(HISTORY - 1))
            .cloned()
            .collect();
        recent.push((version, Arc::new(changes)));
        // What is framed from now on is of the next version.
        self.bodies.clear();
        ViewVersion {
            key: self.key.clone(),
            version,
            maps,
            recent,
            changed_at,
            bodies: Arc::default(),
            names: PerType::default(),
            lists: PerType::default(),
        }
    }

    /// The view's resources of `kind` as one list (made on first use).
    pub(crate) fn list(&self, kind: XdsType) -> Option<&ViewList> {
        let map = self.maps.of(kind)?;
        Some(self.lists[kind].get_or_init(|| ViewList {
            resources: map.values().cloned().collect(),
            policy: OnceLock::new(),
            delta_version: OnceLock::new(),
        }))
    }

    /// [`ViewVersion::list`], if a first answer has made it.
    pub(crate) fn list_made(&self, kind: XdsType) -> Option<&ViewList> {
        self.lists[kind].get()
    }

    /// The view's names of `kind` by hash (made on first use).
    fn name_index(&self, kind: XdsType) -> Option<&NameIndex> {
        let map = self.maps.of(kind)?;
        Some(self.names[kind].get_or_init(|| map.keys().cloned().zip(0..).collect()))
    }

    /// Whether `names` (repeats allowed) are every name of the view's `kind`; if so, the
    /// bytes and count of the distinct names. One lookup each, nothing copied or sorted:
    /// a sidecar's first endpoint subscription.
    fn covers(&self, kind: XdsType, names: &[&str]) -> Option<(usize, usize)> {
        let map = self.maps.of(kind)?;
        if map.is_empty() || names.len() < map.len() || u32::try_from(map.len()).is_err() {
            return None;
        }
        let index = self.name_index(kind)?;
        let mut seen = vec![false; map.len()];
        let (mut count, mut bytes) = (0, 0usize);
        for name in names {
            let &at = index.get(*name)?;
            let seen = seen.get_mut(at as usize)?;
            if !*seen {
                *seen = true;
                count += 1;
                bytes = bytes.saturating_add(name.len());
            }
        }
        (count == map.len()).then_some((bytes, count))
    }

    /// The names of `kind` that changed after version `since`, if the history reaches
    /// back that far.
    /// In the order of [`ViewMaps::SHARED`].
    pub(crate) fn changed_since(
        &self,
        since: u64,
    ) -> Option<[BTreeSet<Arc<str>>; ViewMaps::SHARED.len()]> {
        if since >= self.version {
            return Some(Default::default());
        }
        let oldest = self.recent.first().map(|(v, _)| *v)?;
        if since + 1 < oldest {
            return None;
        }
        let mut out: [BTreeSet<Arc<str>>; ViewMaps::SHARED.len()] = Default::default();
        for (v, c) in &self.recent {
            if *v > since {
                for (i, kind) in ViewMaps::SHARED.into_iter().enumerate() {
                    out[i].extend(c.of(kind).iter().map(|u| u.name().clone()));
                }
            }
        }
        Some(out)
    }
}

/// One version of a proxy's own resources.
#[derive(Debug, Default)]
pub struct OwnVersion {
    /// Increases with each change.
    pub version: u64,
    /// Listeners and inbound clusters.
    pub own: Arc<Own>,
    /// The trust bundle (SDS), by name.
    pub secrets: TypeMap,
    /// The view it belongs to.
    pub view: Option<ViewKey>,
    /// When the source change behind this version was seen.
    pub changed_at: Option<Instant>,
    /// Set when the proxy must not be served any more (why): its streams end.
    pub ended: Option<Arc<str>>,
}

impl OwnVersion {
    /// The next version: the same resources, with `ended` set or cleared.
    pub(crate) fn with_ended(&self, ended: Option<Arc<str>>) -> OwnVersion {
        OwnVersion {
            version: self.version + 1,
            own: self.own.clone(),
            secrets: self.secrets.clone(),
            view: self.view.clone(),
            changed_at: self.changed_at,
            ended,
        }
    }

    /// The resources of `kind` it holds.
    pub fn of(&self, kind: XdsType) -> Option<&TypeMap> {
        match kind {
            XdsType::Listener => Some(&self.own.listeners),
            XdsType::Cluster => Some(&self.own.clusters),
            XdsType::Secret => Some(&self.secrets),
            XdsType::Endpoint | XdsType::Route | XdsType::VirtualHost => None,
        }
    }
}

/// Everything one proxy should hold: its view and its own resources.
#[derive(Clone, Debug)]
pub struct Desired {
    /// The view.
    pub view: Arc<ViewVersion>,
    /// Its own resources.
    pub own: Arc<OwnVersion>,
}

impl Desired {
    /// The resource `name` of `kind`, if the proxy should hold it.
    pub fn get(&self, kind: XdsType, name: &str) -> Option<&Arc<Encoded>> {
        self.locate(kind, name).map(|(r, _)| r)
    }

    /// [`Desired::get`], with the view's map it came from (None: the proxy's own).
    pub fn locate(&self, kind: XdsType, name: &str) -> Option<(&Arc<Encoded>, Option<&TypeMap>)> {
        if let Some(r) = self.own.of(kind).and_then(|m| m.get(name)) {
            return Some((r, None));
        }
        let map = self.view.maps.of(kind)?;
        map.get(name).map(|r| (r, Some(map)))
    }

    /// Every resource of `kind` the proxy should hold, in name order, each name once: a
    /// name both its own and its view's is its own (as [`Desired::get`] answers).
    pub fn all(&self, kind: XdsType) -> impl Iterator<Item = &Arc<Encoded>> {
        OwnFirst::new(self.own.of(kind), self.view.maps.of(kind))
    }

    /// Every resource of `kind` the proxy should hold as the view's one list, when the
    /// proxy has none of its own of that type.
    pub(crate) fn whole_view_list(&self, kind: XdsType) -> Option<&ViewList> {
        (!self.has_own(kind))
            .then(|| self.view.list(kind))
            .flatten()
    }

    /// Whether the proxy has resources of its own of `kind`.
    fn has_own(&self, kind: XdsType) -> bool {
        self.own.of(kind).is_some_and(|m| !m.is_empty())
    }

    /// Whether `names` (repeats allowed) are every resource of `kind` the proxy should
    /// hold, all of them its view's; if so, the bytes and count of the distinct names.
    /// The subscription is then the view's names.
    pub(crate) fn covered_by(&self, kind: XdsType, names: &[&str]) -> Option<(usize, usize)> {
        (!self.has_own(kind))
            .then(|| self.view.covers(kind, names))
            .flatten()
    }

    /// The shared name of `name`, if the proxy should hold such a resource (so that
    /// per-stream maps keep pointers, not copies).
    pub(crate) fn name_of(&self, kind: XdsType, name: &str) -> Option<Arc<str>> {
        let find = |m: &TypeMap| m.get_key_value(name).map(|(k, _)| k.clone());
        self.own
            .of(kind)
            .and_then(find)
            .or_else(|| self.view.maps.of(kind).and_then(find))
    }

    /// [`Desired::name_of`] for one of many names in a request: the view's names are
    /// looked up by hash.
    pub(crate) fn name_of_many(&self, kind: XdsType, name: &str) -> Option<Arc<str>> {
        let own = self.own.of(kind).and_then(|m| m.get_key_value(name));
        match own {
            Some((k, _)) => Some(k.clone()),
            None => self
                .view
                .name_index(kind)?
                .get_key_value(name)
                .map(|(k, _)| k.clone()),
        }
    }
}

/// The proxy's own entries of a type, in name order.
type OwnEntries<'a> =
    std::iter::Peekable<std::collections::btree_map::Iter<'a, Arc<str>, Arc<Encoded>>>;

/// Two maps' entries merged in name order, the first map's entry winning a name in both.
/// The view's entries between two of the proxy's own (a few) are taken as one range of
/// its map, so a first answer of a thousand resources compares no names.
struct OwnFirst<'a> {
    own: OwnEntries<'a>,
    view: Option<&'a TypeMap>,
    /// The view's entries before the next own one, not yet taken.
    run: Option<std::collections::btree_map::Range<'a, Arc<str>, Arc<Encoded>>>,
}

impl<'a> OwnFirst<'a> {
    fn new(own: Option<&'a TypeMap>, view: Option<&'a TypeMap>) -> Self {
        static NONE: TypeMap = TypeMap::new();
        let mut own = own.unwrap_or(&NONE).iter().peekable();
        let run = view.map(|m| m.range::<str, _>((Bound::Unbounded, Self::before(&mut own))));
        OwnFirst { own, view, run }
    }

    /// The bound that ends a run of the view's entries: the next own name, or none.
    fn before(own: &mut OwnEntries<'a>) -> Bound<&'a str> {
        match own.peek() {
            Some((name, _)) => Bound::Excluded(&***name),
            None => Bound::Unbounded,
        }
    }
}

impl<'a> Iterator for OwnFirst<'a> {
    type Item = &'a Arc<Encoded>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some((_, r)) = self.run.as_mut().and_then(Iterator::next) {
            return Some(r);
        }
        // The run is over: the own entry that ended it (a view entry of the same name is
        // skipped), then the view's entries up to the own entry after it.
        let (name, r) = self.own.next()?;
        let end = Self::before(&mut self.own);
        self.run = self
            .view
            .map(|m| m.range::<str, _>((Bound::Excluded(&**name), end)));
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::stream::test_support::{cla, snap};
    use std::collections::BTreeMap;

    #[test]
    fn many_names_are_found_by_hash_as_the_same_shared_names() {
        let endpoints: Vec<_> = (0..100).map(|i| cla(&format!("e{i:03}"), "1")).collect();
        let d = snap(&endpoints);
        for r in &endpoints {
            let one = d.name_of(XdsType::Endpoint, &r.name).expect("known");
            let many = d.name_of_many(XdsType::Endpoint, &r.name).expect("known");
            assert!(Arc::ptr_eq(&one, &many), "{}: the view's own name", r.name);
        }
        assert_eq!(d.name_of_many(XdsType::Endpoint, "e999"), None);
        assert_eq!(d.name_of_many(XdsType::Endpoint, "e00"), None);
        // A type the view does not share has no index.
        assert_eq!(d.name_of_many(XdsType::Secret, "e001"), None);
    }

    #[test]
    fn own_and_view_entries_merge_in_name_order_own_first() {
        let map = |names: &[&str], v: &str| -> TypeMap {
            names.iter().map(|n| (Arc::from(*n), cla(n, v))).collect()
        };
        let view = map(&["b", "c", "e", "f", "h"], "view");
        for own in [
            &[][..],
            &["a"],
            &["z"],
            &["c"],
            &["a", "c", "d", "h", "i"],
            &["b", "c", "e", "f", "h"],
            &["d", "g"],
        ] {
            let own = map(own, "own");
            let mut want: BTreeMap<&str, &str> = view
                .iter()
                .map(|(n, r)| (&**n, r.version.as_str()))
                .collect();
            want.extend(own.iter().map(|(n, r)| (&**n, r.version.as_str())));
            let got: Vec<(&str, &str)> = OwnFirst::new(Some(&own), Some(&view))
                .map(|r| (&*r.name, r.version.as_str()))
                .collect();
            assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "own {own:?}");
            let alone: Vec<&str> = OwnFirst::new(Some(&own), None).map(|r| &*r.name).collect();
            assert_eq!(alone, own.keys().map(|n| &**n).collect::<Vec<_>>());
        }
        assert_eq!(OwnFirst::new(None, Some(&view)).count(), view.len());
        assert_eq!(OwnFirst::new(None, None).count(), 0);
    }
}
