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
//! Each view version keeps a few bodies, the last used first; a version's bodies go when
//! the next version is made, and all bodies together stay within [`SHARED_MAX`] bytes, so
//! the cache cannot grow with the number of views or outlive what it was built for.

use std::collections::VecDeque;
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

/// Whether a response with `resources` shares its body.
pub(crate) fn worth_sharing(resources: &[Arc<Encoded>]) -> bool {
    resources.len() >= SHARE_MIN
        || resources.iter().map(|r| r.any.value.len()).sum::<usize>() >= SHARE_BYTES
}
/// Bodies kept per view version (a type's wildcard answer, its named answers, for both
/// protocols).
const SLOTS: usize = 8;
/// The bytes all kept bodies may hold together.
pub(crate) const SHARED_MAX: usize = 64 << 20;

/// Bytes held by kept bodies, across all views.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// The bodies kept for one view version.
#[derive(Default)]
pub struct SharedBodies {
    slots: Mutex<VecDeque<Body>>,
}

impl std::fmt::Debug for SharedBodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedBodies({})", self.slots.lock().len())
    }
}

/// One kept body, with what it was encoded from.
struct Body {
    type_url: &'static str,
    delta: bool,
    resources: Vec<Arc<Encoded>>,
    bytes: Bytes,
}

impl Drop for Body {
    fn drop(&mut self) {
        HELD.fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

/// Whether two resource lists encode alike: the same resources in the same order (the
/// same pointer, or the same name and content hash: a proxy's own resources are its
/// own allocations even where they equal another proxy's).
fn same(a: &[Arc<Encoded>], b: &[Arc<Encoded>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| Arc::ptr_eq(x, y) || (x.hash == y.hash && x.name == y.name))
}

impl SharedBodies {
    /// The body for `resources` of `type_url` in `delta` or state-of-the-world form:
    /// kept, or made by `build` and kept if there is room.
    pub(crate) fn get_or_build(
        &self,
        type_url: &'static str,
        delta: bool,
        resources: &[Arc<Encoded>],
        build: impl FnOnce() -> Bytes,
    ) -> Bytes {
        if let Some(bytes) = self.find(type_url, delta, resources) {
            return bytes;
        }
        let bytes = build();
        self.keep(type_url, delta, resources, &bytes);
        bytes
    }

    /// The body kept for `resources`, if any.
    pub(crate) fn find(
        &self,
        type_url: &str,
        delta: bool,
        resources: &[Arc<Encoded>],
    ) -> Option<Bytes> {
        let mut slots = self.slots.lock();
        let i = slots.iter().position(|b| {
            b.type_url == type_url && b.delta == delta && same(&b.resources, resources)
        })?;
        let body = slots.remove(i)?;
        let bytes = body.bytes.clone();
        slots.push_front(body);
        Some(bytes)
    }

    fn keep(&self, type_url: &'static str, delta: bool, resources: &[Arc<Encoded>], bytes: &Bytes) {
        let len = bytes.len();
        let room = HELD
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h.saturating_add(len) <= SHARED_MAX).then_some(h + len)
            })
            .is_ok();
        if !room {
            return;
        }
        let body = Body {
            type_url,
            delta,
            resources: resources.to_vec(),
            bytes: bytes.clone(),
        };
        let mut slots = self.slots.lock();
        slots.push_front(body);
        slots.truncate(SLOTS);
    }

    /// Drops every kept body (the version they were built for is past).
    pub(crate) fn clear(&self) {
        let gone = std::mem::take(&mut *self.slots.lock());
        drop(gone);
    }

    /// How many bodies are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().len()
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
    use xds_types::XdsType;

    #[test]
    fn bodies_beyond_the_budget_are_not_kept_and_the_newest_displace_the_oldest() {
        let cache = SharedBodies::default();
        let one = [cla("a", "1")];
        let url = XdsType::Endpoint.type_url();
        let big = cache.get_or_build(url, true, &one, || Bytes::from(vec![0u8; SHARED_MAX + 1]));
        assert_eq!(big.len(), SHARED_MAX + 1, "still sent");
        assert_eq!(cache.len(), 0, "but not kept");

        for i in 0..SLOTS + 3 {
            let r = [cla(&format!("r{i}"), "1")];
            cache.get_or_build(url, true, &r, || Bytes::from(format!("body {i}")));
        }
        assert_eq!(cache.len(), SLOTS);
        // The newest are kept; the first ones were displaced and are built again.
        let last = [cla(&format!("r{}", SLOTS + 2), "1")];
        let kept = cache.get_or_build(url, true, &last, || Bytes::from_static(b"again"));
        assert_eq!(&kept[..], format!("body {}", SLOTS + 2).as_bytes());
        let first = [cla("r0", "1")];
        let rebuilt = cache.get_or_build(url, true, &first, || Bytes::from_static(b"again"));
        assert_eq!(&rebuilt[..], b"again");
    }
}
