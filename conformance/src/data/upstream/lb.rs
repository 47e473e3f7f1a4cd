//! Endpoint choice over a load assignment: the lowest priority that has healthy
//! endpoints takes the traffic (all endpoints in Envoy's panic mode); within it, weighted round robin or least request (two
//! random choices over active requests). Locality weights take effect only with
//! `locality_weighted_lb_config`, which Rudder does not emit, so endpoints of every
//! locality of the chosen priority are balanced together, as Envoy does.

use crate::config::cluster::{Endpoint, LbPolicy, LoadAssignment};

/// Envoy's default `healthy_panic_threshold`, in percent.
const PANIC_THRESHOLD: u64 = 50;
/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING: u64 = 140;

/// The endpoints to balance over: the healthy ones of the lowest priority that has
/// any; in panic (the priorities' overprovisioned health sums below Envoy's default
/// threshold), every endpoint of the lowest priority, healthy or not.
pub(crate) fn healthy_tier(la: &LoadAssignment) -> Vec<&Endpoint> {
    let mut per_priority: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
    for l in &la.localities {
        let entry = per_priority.entry(l.priority).or_default();
        entry.0 += l.endpoints.iter().filter(|e| e.healthy).count() as u64;
        entry.1 += l.endpoints.len() as u64;
    }
    let health: u64 = per_priority
        .values()
        .filter(|(_, total)| *total > 0)
        .map(|(healthy, total)| (OVERPROVISIONING * healthy / total).min(100))
        .sum();
    if health.min(100) < PANIC_THRESHOLD {
        let lowest = per_priority
            .iter()
            .find(|(_, (_, total))| *total > 0)
            .map(|(p, _)| *p);
        return la
            .localities
            .iter()
            .filter(|l| Some(l.priority) == lowest)
            .flat_map(|l| l.endpoints.iter())
            .collect();
    }
    let Some(priority) = la
        .localities
        .iter()
        .filter(|l| l.endpoints.iter().any(|e| e.healthy))
        .map(|l| l.priority)
        .min()
    else {
        return Vec::new();
    };
    la.localities
        .iter()
        .filter(|l| l.priority == priority)
        .flat_map(|l| l.endpoints.iter())
        .filter(|e| e.healthy)
        .collect()
}

/// Picks one of `tier` (non-empty): `tick` is the cluster's round-robin counter,
/// `active` an endpoint's active requests, `rand2` two random indices for least request.
pub(crate) fn pick<'a>(
    policy: LbPolicy,
    tier: &[&'a Endpoint],
    tick: u64,
    active: impl Fn(&Endpoint) -> u64,
    rand2: (usize, usize),
) -> Option<&'a Endpoint> {
    if tier.is_empty() {
        return None;
    }
    match policy {
        LbPolicy::LeastRequest if tier.len() > 1 => {
            let a = tier[rand2.0 % tier.len()];
            let b = tier[rand2.1 % tier.len()];
            Some(if active(b) < active(a) { b } else { a })
        }
        _ => weighted_round_robin(tier, tick),
    }
}

/// The `tick`-th choice of a smooth-enough weighted round robin: endpoint `i` takes
/// `weight_i` of every `sum(weights)` consecutive ticks, interleaved by stride.
pub(crate) fn weighted_round_robin<'a>(tier: &[&'a Endpoint], tick: u64) -> Option<&'a Endpoint> {
    let weights: Vec<u64> = tier.iter().map(|e| u64::from(e.weight.max(1))).collect();
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return None;
    }
    if weights.iter().all(|w| *w == weights[0]) {
        let i = usize::try_from(tick % tier.len() as u64).unwrap_or(0);
        return tier.get(i).copied();
    }
    // Spread the slots: slot s of the round is taken by the endpoint whose cumulative
    // weight covers (s * stride) mod total, with a stride coprime to the total.
    let stride = coprime_stride(total);
    // In u128: the product of two values below the total (itself below 2^64) fits.
    let slot = u64::try_from(u128::from(tick % total) * u128::from(stride) % u128::from(total))
        .unwrap_or(0);
    let mut acc = 0;
    for (e, w) in tier.iter().zip(&weights) {
        acc += w;
        if slot < acc {
            return Some(e);
        }
    }
    tier.last().copied()
}

fn coprime_stride(total: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let mut s = (total / 2).max(1) + 1;
    while s < total && gcd(s, total) != 1 {
        s += 1;
    }
    if s >= total { 1 } else { s }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use super::*;
    use crate::config::cluster::Locality;

    fn ep(port: u16, weight: u32, healthy: bool) -> Endpoint {
        Endpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            healthy,
            weight,
            transport_match: vec![],
        }
    }

    fn la(localities: Vec<(u32, Vec<Endpoint>)>) -> LoadAssignment {
        LoadAssignment {
            name: "c".into(),
            localities: localities
                .into_iter()
                .map(|(priority, endpoints)| Locality {
                    priority,
                    weight: 1,
                    endpoints,
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn lowest_priority_with_a_healthy_endpoint_takes_traffic() {
        let a = la(vec![
            (1, vec![ep(2, 1, true)]),
            (0, vec![ep(1, 1, false)]),
            (0, vec![ep(3, 1, false)]),
        ]);
        let tier = healthy_tier(&a);
        assert_eq!(tier.len(), 1, "priority 1 is healthy enough: no panic");
        assert_eq!(tier[0].address.port(), 2);
        let one_in_three = la(vec![(
            0,
            vec![ep(1, 1, true), ep(2, 1, false), ep(3, 1, false)],
        )]);
        assert_eq!(
            healthy_tier(&one_in_three).len(),
            3,
            "panic: every endpoint"
        );
        let two_in_five = la(vec![(
            0,
            vec![
                ep(1, 1, true),
                ep(2, 1, true),
                ep(3, 1, false),
                ep(4, 1, false),
                ep(5, 1, false),
            ],
        )]);
        assert_eq!(
            healthy_tier(&two_in_five).len(),
            2,
            "56% overprovisioned: no panic"
        );
        let b = la(vec![
            (0, vec![ep(1, 1, true)]),
            (0, vec![ep(3, 1, true)]),
            (1, vec![ep(2, 1, true)]),
        ]);
        assert_eq!(healthy_tier(&b).len(), 2);
        assert_eq!(healthy_tier(&la(vec![(0, vec![ep(1, 1, false)])])).len(), 1);
        assert!(healthy_tier(&la(vec![])).is_empty());
    }

    #[test]
    fn round_robin_follows_weights() {
        let eps = [ep(1, 1, true), ep(2, 3, true), ep(3, 6, true)];
        let tier: Vec<&Endpoint> = eps.iter().collect();
        let mut counts: HashMap<u16, u32> = HashMap::new();
        let mut last = 0;
        let mut changes = 0;
        for t in 0..1000 {
            let e = weighted_round_robin(&tier, t)
                .map(|e| e.address.port())
                .unwrap_or(0);
            *counts.entry(e).or_default() += 1;
            if e != last {
                changes += 1;
                last = e;
            }
        }
        assert_eq!(counts.get(&1), Some(&100));
        assert_eq!(counts.get(&2), Some(&300));
        assert_eq!(counts.get(&3), Some(&600));
        assert!(changes > 300, "choices interleave: {changes}");
        let even = [ep(1, 1, true), ep(2, 1, true)];
        let even: Vec<&Endpoint> = even.iter().collect();
        let picks: Vec<u16> = (0..4)
            .filter_map(|t| weighted_round_robin(&even, t).map(|e| e.address.port()))
            .collect();
        assert_eq!(picks, vec![1, 2, 1, 2]);
    }

    #[test]
    fn least_request_takes_the_less_busy_of_two() {
        let eps = [ep(1, 1, true), ep(2, 1, true)];
        let tier: Vec<&Endpoint> = eps.iter().collect();
        let busy = |e: &Endpoint| if e.address.port() == 1 { 10 } else { 0 };
        let e = pick(LbPolicy::LeastRequest, &tier, 0, busy, (0, 1));
        assert_eq!(e.map(|e| e.address.port()), Some(2));
        let e = pick(LbPolicy::LeastRequest, &tier, 0, busy, (1, 0));
        assert_eq!(e.map(|e| e.address.port()), Some(2));
        assert!(pick(LbPolicy::RoundRobin, &[], 0, busy, (0, 0)).is_none());
    }

    #[test]
    fn weighted_round_robin_does_not_overflow_with_large_weight_totals() {
        // Totals past 2^32 made `slot * stride` wrap, mapping ticks to the wrong slots.
        let eps = [ep(1, u32::MAX, true), ep(2, u32::MAX, true), ep(3, 1, true)];
        let tier: Vec<&Endpoint> = eps.iter().collect();
        let total = 2 * u128::from(u32::MAX) + 1;
        let stride = u128::from(coprime_stride(u64::try_from(total).expect("fits")));
        for tick in [
            total - 1,
            total / 2 + 7,
            3 * total + 12345,
            u128::from(u64::MAX),
        ] {
            let slot = (tick % total) * stride % total;
            let want = if slot < u128::from(u32::MAX) {
                1
            } else if slot < 2 * u128::from(u32::MAX) {
                2
            } else {
                3
            };
            let got = weighted_round_robin(&tier, u64::try_from(tick).expect("fits"))
                .expect("a pick")
                .address
                .port();
            assert_eq!(got, want, "tick {tick}");
        }
    }
}
