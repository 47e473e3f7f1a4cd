//! RetryPolicies: one per (Service, port), the oldest winning; a port-specific policy
//! beats a whole-Service one on its port. An excluded policy leaves its slot to the next
//! oldest.

use std::collections::BTreeMap;

use crds::RetryPolicy;

use crate::model::{Excluded, Kind, Model};
use crate::policy::oldest::oldest_first;

/// (namespace, Service, port or None for every port) -> winning policy name.
pub fn retry_winners(
    model: &Model,
    excluded: &Excluded,
) -> BTreeMap<(String, String, Option<u32>), String> {
    let mut winners = BTreeMap::new();
    for p in oldest_first(model.retry_policies(), Kind::RetryPolicy, excluded, |p| {
        &p.metadata
    }) {
        let ns = p
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let slot = (ns, p.spec.target_ref.name.clone(), p.spec.target_ref.port);
        winners
            .entry(slot)
            .or_insert_with(|| p.metadata.name.clone().unwrap_or_default());
    }
    winners
}

/// The policy in effect for calls to `svc` on `port`.
pub fn retry_for<'a>(
    model: &'a Model,
    winners: &BTreeMap<(String, String, Option<u32>), String>,
    ns: &str,
    svc: &str,
    port: u16,
) -> Option<&'a RetryPolicy> {
    let by = |p: Option<u32>| winners.get(&(ns.to_string(), svc.to_string(), p));
    let name = by(Some(u32::from(port))).or_else(|| by(None))?;
    model.retry_policy(ns, name)
}
