//! The order in which policy objects claim their targets: oldest first, left-out objects
//! skipped.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{Excluded, Kind, ObjectKey};

/// Policy objects not left out, oldest first (creation time, then name): the order in
/// which they claim their targets.
pub(crate) fn oldest_first<'a, T>(
    objects: impl Iterator<Item = &'a T>,
    kind: Kind,
    excluded: &Excluded,
    meta: impl Fn(&T) -> &ObjectMeta,
) -> Vec<&'a T> {
    let mut out: Vec<&T> = objects
        .filter(|o| {
            let m = meta(o);
            !excluded.contains(&ObjectKey::new(
                kind,
                m.namespace.as_deref().unwrap_or("default"),
                m.name.as_deref().unwrap_or_default(),
            ))
        })
        .collect();
    // Timestamps compare as times, not as text (a fraction of a second would sort wrong).
    out.sort_by_key(|o| {
        let m = meta(o);
        (m.creation_timestamp.as_ref().map(|t| t.0), m.name.clone())
    });
    out
}
