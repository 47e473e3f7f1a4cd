//! What a rejection points at: the objects rejected resources were made from, and the
//! policy objects that could have caused it.

use std::collections::BTreeSet;
use std::sync::Arc;

use translator::encoded::{Encoded, Source};
use xds_types::XdsType;

/// The objects a set of resources was made from, sorted and unique.
pub(crate) fn sources_of<'a>(resources: impl IntoIterator<Item = &'a Arc<Encoded>>) -> Vec<String> {
    let set: BTreeSet<String> = resources
        .into_iter()
        .flat_map(|r| r.sources.iter().map(|s| s.key.to_string()))
        .collect();
    set.into_iter().collect()
}

/// Types whose rejections may be caused by policy objects.
fn policy_shaped(kind: XdsType) -> bool {
    matches!(
        kind,
        XdsType::Route | XdsType::VirtualHost | XdsType::Cluster
    )
}

/// The policy sources of accepted resources, unique.
pub(crate) fn policy_sources<'a>(
    kind: XdsType,
    resources: impl IntoIterator<Item = &'a Arc<Encoded>>,
) -> Vec<Source> {
    if !policy_shaped(kind) {
        return Vec::new();
    }
    let set: BTreeSet<&Source> = resources
        .into_iter()
        .flat_map(|r| r.sources.iter().filter(|s| s.key.is_policy()))
        .collect();
    set.into_iter().cloned().collect()
}

/// What a rejection of `rejected` suspects: for each resource, the policy sources its
/// version the proxy holds (accepted) lacks, or all its policy sources when the proxy
/// holds none. Precise when every rejected resource had a held version.
pub(crate) fn suspects<'a>(
    kind: XdsType,
    rejected: impl IntoIterator<Item = &'a Arc<Encoded>>,
    held: impl Fn(&str) -> Option<&'a Arc<Encoded>>,
) -> (Vec<Source>, bool) {
    if !policy_shaped(kind) {
        return (Vec::new(), true);
    }
    let mut out = BTreeSet::new();
    let mut precise = true;
    for r in rejected {
        let before = held(&r.name);
        precise &= before.is_some();
        for s in r.sources.iter().filter(|s| s.key.is_policy()) {
            if before.is_none_or(|b| !b.sources.contains(s)) {
                out.insert(s.clone());
            }
        }
    }
    (out.into_iter().collect(), precise)
}
