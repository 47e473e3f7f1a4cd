//! Response bodies encoded once and shared by the streams that send the same resources.
//!
//! A view's proxies start alike: each first sync sends the same thousand Clusters, the
//! same endpoints and the same route table as the proxy before it. Copying those bytes
//! into a frame of its own for each proxy was about a tenth of a first sync's CPU, and
//! each frame a buffer of its own while it waited for HTTP/2. A response with many
//! resources is therefore framed as a small head of its own (the gRPC prefix, its
//! version, nonce and removals) and a body held here, encoded once per view version:
//! the resources and the type, which proxies that are sent the same resources share.
//! Protobuf parsers take fields in any order, so the message is the same to the proxy.
//!
//! Each view version keeps a few bodies, the last used first, and only for a list of
//! resources it has seen before (a proxy's own list, seen once, does not displace the
//! view's). A version's bodies go when the next version is made, and a past version
//! keeps none after that. Bodies stay within [`VIEW_MAX`] bytes per view version and
//! [`SHARED_MAX`] in all, so the cache cannot grow with the number of views or outlive
//! what it was built for. A kept body is used only for the same resources: the same
//! pointers, or the same name, content hash and encoded bytes.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use translator::encoded::Encoded;

/// Responses with fewer resources are framed whole unless they are large: there is
/// little to share.
pub(crate) const SHARE_MIN: usize = 16;
/// ... or unless their resources hold this many bytes (a whole route table: one
/// resource of hundreds of KB, sent to every proxy of the view at each canary step).
pub(crate) const SHARE_BYTES: usize = 8 << 10;
/// Bodies kept per view version (a type's wildcard answer, its named answers, for both
/// protocols).
const SLOTS: usize = 8;
/// Lists seen once that are remembered, to keep a body the second time.
const SEEN: usize = 16;
/// The bytes one view version's bodies may hold.
pub(crate) const VIEW_MAX: usize = 16 << 20;
/// The bytes all kept bodies may hold together.
pub(crate) const SHARED_MAX: usize = 64 << 20;

/// Bytes held by kept bodies, across all views.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Whether a response with `resources` shares its body.
pub(crate) fn worth_sharing(resources: &[Arc<Encoded>]) -> bool {
    resources.len() >= SHARE_MIN
        || resources.iter().map(|r| r.any.value.len()).sum::<usize>() >= SHARE_BYTES
}

/// The bodies kept for one view version.
#[derive(Default)]
pub struct SharedBodies {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    slots: VecDeque<Body>,
    /// Fingerprints of lists seen once.
    seen: VecDeque<u64>,
    /// Bytes the slots hold.
    bytes: usize,
    /// The version is past: nothing more is kept.
    retired: bool,
}

impl std::fmt::Debug for SharedBodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedBodies({})", self.state.lock().slots.len())
    }
}

/// One kept body, with what it was encoded from.
struct Body {
    print: u64,
    type_url: &'static str,
    delta: bool,
    resources: Vec<Arc<Encoded>>,
    bytes: Bytes,
}

impl Drop for Body {
    fn drop(&mut self) {
        HELD.fetch_sub(self.bytes.len(), Ordering::Relaxed);
        crate::observability::memory::note_freed(self.bytes.len());
    }
}

/// An order-dependent fingerprint of a list of one type in one form: a cheap first
/// test before the lists are compared.
fn fingerprint(type_url: &str, delta: bool, resources: &[Arc<Encoded>]) -> u64 {
    static SEED: std::sync::LazyLock<foldhash::fast::RandomState> =
        std::sync::LazyLock::new(foldhash::fast::RandomState::default);
    let mut h = SEED.build_hasher();
    h.write(type_url.as_bytes());
    h.write_u8(u8::from(delta));
    h.write_usize(resources.len());
    for r in resources {
        h.write_u64(r.hash);
    }
    h.finish()
}

/// Whether two resource lists encode alike: the same resources in the same order (the
/// same pointer, or the same name, hash and bytes: a proxy's own resources are its own
/// allocations even where they equal another proxy's).
fn same(a: &[Arc<Encoded>], b: &[Arc<Encoded>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            Arc::ptr_eq(x, y)
                || (x.hash == y.hash
                    && x.name == y.name
                    && x.version == y.version
                    && x.any == y.any)
        })
}

impl State {
    fn find(
        &mut self,
        print: u64,
        type_url: &str,
        delta: bool,
        resources: &[Arc<Encoded>],
    ) -> Option<Bytes> {
        let i = self.slots.iter().position(|b| {
            b.print == print
                && b.type_url == type_url
                && b.delta == delta
                && same(&b.resources, resources)
        })?;
        let body = self.slots.remove(i)?;
        let bytes = body.bytes.clone();
        self.slots.push_front(body);
        Some(bytes)
    }

    /// Whether to keep the body of a list with `print`: the second time it is seen.
    fn second_sight(&mut self, print: u64) -> bool {
        if self.retired {
            return false;
        }
        if let Some(i) = self.seen.iter().position(|&p| p == print) {
            self.seen.remove(i);
            return true;
        }
        self.seen.push_front(print);
        self.seen.truncate(SEEN);
        false
    }

    fn evict(&mut self) {
        if let Some(old) = self.slots.pop_back() {
            self.bytes -= old.bytes.len();
        }
    }
}

/// A list's fingerprint, from a [`SharedBodies::find`] that found no body for it: what
/// building the body goes by, so the list is not hashed twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(u64);

impl SharedBodies {
    /// The body for `resources` of `type_url` in `delta` or state-of-the-world form,
    /// which [`SharedBodies::find`] did not find (`print`): kept meanwhile by another
    /// stream, or made by `build` (and kept the second time the list is seen).
    pub(crate) fn get_or_build(
        &self,
        Fingerprint(print): Fingerprint,
        type_url: &'static str,
        delta: bool,
        resources: &[Arc<Encoded>],
        build: impl FnOnce() -> Bytes,
    ) -> Bytes {
        let keep = {
            let mut st = self.state.lock();
            if let Some(bytes) = st.find(print, type_url, delta, resources) {
                return bytes;
            }
            st.second_sight(print)
        };
        let bytes = build();
        if keep {
            return self.keep(print, type_url, delta, resources, bytes);
        }
        bytes
    }

    /// The body kept for `resources`, or the list's fingerprint to build one by.
    pub(crate) fn find(
        &self,
        type_url: &str,
        delta: bool,
        resources: &[Arc<Encoded>],
    ) -> Result<Bytes, Fingerprint> {
        let print = fingerprint(type_url, delta, resources);
        self.state
            .lock()
            .find(print, type_url, delta, resources)
            .ok_or(Fingerprint(print))
    }

    /// Keeps `bytes` if there is room, or returns the equal body another stream kept
    /// meanwhile.
    fn keep(
        &self,
        print: u64,
        type_url: &'static str,
        delta: bool,
        resources: &[Arc<Encoded>],
        bytes: Bytes,
    ) -> Bytes {
        let len = bytes.len();
        let mut st = self.state.lock();
        if let Some(kept) = st.find(print, type_url, delta, resources) {
            return kept;
        }
        if st.retired || len > VIEW_MAX {
            return bytes;
        }
        while !st.slots.is_empty() && (st.slots.len() >= SLOTS || st.bytes + len > VIEW_MAX) {
            st.evict();
        }
        let room = HELD
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h.saturating_add(len) <= SHARED_MAX).then_some(h + len)
            })
            .is_ok();
        if !room {
            return bytes;
        }
        st.bytes += len;
        st.slots.push_front(Body {
            print,
            type_url,
            delta,
            resources: resources.to_vec(),
            bytes: bytes.clone(),
        });
        bytes
    }

    /// Drops every kept body, and keeps none from now on (the version they were built
    /// for is past).
    pub(crate) fn clear(&self) {
        let gone = {
            let mut st = self.state.lock();
            st.retired = true;
            st.bytes = 0;
            st.seen.clear();
            std::mem::take(&mut st.slots)
        };
        drop(gone);
    }

    /// How many bodies are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().slots.len()
    }
}

/// A response's handle on its view version's [`SharedBodies`]. Responses compare by what
/// they carry, so every handle equals every other.
#[derive(Clone, Default)]
pub struct Bodies(pub Option<Arc<SharedBodies>>);

impl PartialEq for Bodies {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Bodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bodies"
        } else {
            "NoBodies"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::stream::test_support::cla;

    const URL: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

    /// The body `r` gets, built (if it must be) as `build` makes it.
    fn body(cache: &SharedBodies, r: &[Arc<Encoded>], build: impl FnOnce() -> Bytes) -> Bytes {
        cache
            .find(URL, true, r)
            .unwrap_or_else(|print| cache.get_or_build(print, URL, true, r, build))
    }

    /// Frames `r` with a body that names `tag`: the body it got.
    fn frame(cache: &SharedBodies, r: &[Arc<Encoded>], tag: &str) -> Bytes {
        body(cache, r, || Bytes::from(tag.to_string()))
    }

    #[test]
    fn a_body_is_kept_the_second_time_its_list_is_seen_and_used_from_then_on() {
        let cache = SharedBodies::default();
        let r = [cla("a", "1")];
        assert_eq!(frame(&cache, &r, "first"), "first");
        assert_eq!(cache.len(), 0, "a list seen once keeps nothing");
        assert_eq!(frame(&cache, &r, "second"), "second");
        assert_eq!(cache.len(), 1);
        assert_eq!(frame(&cache, &r, "third"), "second", "kept");
        assert_eq!(
            cache.find(URL, true, &r).ok().as_deref(),
            Some(&b"second"[..])
        );
        assert!(
            cache.find(URL, false, &r).is_err(),
            "the other protocol's form"
        );
        // The same name and hash with other bytes is another resource.
        let mut forged = (*r[0]).clone();
        forged.any.value = b"other bytes".to_vec();
        assert!(cache.find(URL, true, &[Arc::new(forged)]).is_err());
        // An equal copy (a proxy's own allocation) is the same resource.
        let copy = Arc::new((*r[0]).clone());
        assert_eq!(
            cache.find(URL, true, &[copy]).ok().as_deref(),
            Some(&b"second"[..])
        );
    }

    #[test]
    fn two_streams_that_build_the_same_body_at_once_keep_one() {
        let cache = SharedBodies::default();
        let r = [cla("a", "1")];
        frame(&cache, &r, "seen");
        let print = fingerprint(URL, true, &r);
        let keep = |b: &'static str| cache.keep(print, URL, true, &r, Bytes::from(b));
        let (one, two) = (keep("one"), keep("two"));
        assert_eq!((&one[..], &two[..]), (&b"one"[..], &b"one"[..]));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_past_version_keeps_nothing_even_when_framed_from_again() {
        let cache = SharedBodies::default();
        let r = [cla("a", "1")];
        frame(&cache, &r, "1");
        frame(&cache, &r, "2");
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert_eq!(cache.len(), 0);
        // A stream still on the past version frames from it: nothing is kept again.
        for i in 0..3 {
            assert_eq!(frame(&cache, &r, &format!("late {i}")), format!("late {i}"));
        }
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn bodies_beyond_the_budgets_are_not_kept_and_the_newest_displace_the_oldest() {
        let cache = SharedBodies::default();
        let big = [cla("big", "1")];
        for _ in 0..2 {
            let b = body(&cache, &big, || Bytes::from(vec![0u8; VIEW_MAX + 1]));
            assert_eq!(b.len(), VIEW_MAX + 1, "still sent");
        }
        assert_eq!(cache.len(), 0, "but not kept");

        // Twice each: kept on the second sight.
        for i in 0..SLOTS + 3 {
            let r = [cla(&format!("r{i}"), "1")];
            frame(&cache, &r, &format!("body {i}"));
            frame(&cache, &r, &format!("body {i}"));
        }
        assert_eq!(cache.len(), SLOTS);
        let last = [cla(&format!("r{}", SLOTS + 2), "1")];
        assert_eq!(frame(&cache, &last, "again"), format!("body {}", SLOTS + 2));
        let first = [cla("r0", "1")];
        assert_eq!(frame(&cache, &first, "again"), "again", "displaced");

        // A view version's bytes are bounded: large bodies displace each other.
        let cache = SharedBodies::default();
        for i in 0..3 {
            let r = [cla(&format!("half{i}"), "1")];
            for _ in 0..2 {
                body(&cache, &r, || Bytes::from(vec![0u8; VIEW_MAX / 2]));
            }
        }
        assert_eq!(cache.len(), 2, "two halves fit, not three");
        cache.clear();
    }
}
