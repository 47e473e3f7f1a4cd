use std::time::Instant;

use crate::xds::wire::frames::DeltaResponse as DeltaDiscoveryResponse;
use xds_types::XdsType::{Cluster, Endpoint, Listener, Route};

use super::Event;
use super::delta::DeltaStream;
#[allow(unused_imports)]
use super::test_support::Feed;
use super::test_support::*;

pub(super) fn strs(names: &[std::sync::Arc<str>]) -> Vec<&str> {
    names.iter().map(|n| &**n).collect()
}

pub(super) fn items(r: &DeltaDiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|x| format!("{}@{}", x.name, x.version))
        .collect()
}

pub(super) fn ack(s: &mut DeltaStream, r: &DeltaDiscoveryResponse) -> super::delta::Step {
    let kind = xds_types::XdsType::from_type_url(r.type_url).expect("type");
    s.on_request(&delta(kind, &[], &r.nonce), Instant::now())
}

/// The names the response of `kind` in `step` removes.
pub(super) fn removed_of(step: &super::delta::Step, kind: xds_types::XdsType) -> Vec<&str> {
    let r = step
        .responses
        .iter()
        .find(|r| r.type_url == kind.type_url())
        .unwrap_or_else(|| panic!("a {kind} response"));
    strs(&r.removed_resources)
}

/// Subscribes to each `(type, names)` in turn and acknowledges its first answer, which
/// leaves nothing more to send.
pub(super) fn subscribe_and_ack(s: &mut DeltaStream, subs: &[(xds_types::XdsType, &[&str])]) {
    let now = Instant::now();
    for (kind, names) in subs {
        let r = s
            .on_request(&delta(*kind, names, ""), now)
            .responses
            .remove(0);
        assert!(
            ack(s, &r).responses.is_empty(),
            "{kind}: nothing more to send"
        );
    }
}

#[test]
fn wildcard_gets_everything_then_only_changes() {
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[cluster("a", "1"), cluster("b", "1")]));
    let r = s
        .on_request(&delta(Cluster, &[], ""), now)
        .responses
        .remove(0);
    assert_eq!(items(&r), ["a@1", "b@1"]);
    assert!(matches!(ack(&mut s, &r).events[..], [Event::Ack { .. }]));
    let change = s.on_snapshot(snap(&[cluster("a", "2"), cluster("c", "1")]), now);
    let r = &change.responses[0];
    assert_eq!(items(r), ["a@2", "c@1"]);
    assert_eq!(strs(&r.removed_resources), ["b"]);
    ack(&mut s, r);
    assert!(
        s.on_snapshot(snap(&[cluster("a", "2"), cluster("c", "1")]), now)
            .responses
            .is_empty()
    );
}

#[test]
fn reconnect_sends_only_what_differs_and_removes_what_is_gone() {
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[cluster("a", "1"), cluster("b", "2")]));
    let mut req = delta(Cluster, &[], "");
    req.initial_resource_versions = [("a", "1"), ("b", "1"), ("gone", "1")]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let r = s.on_request(&req, now).responses.remove(0);
    assert_eq!(items(&r), ["b@2"]);
    assert_eq!(strs(&r.removed_resources), ["gone"]);
    // A proxy that holds exactly the current config gets nothing at all.
    let mut quiet = DeltaStream::new(snap(&[cluster("a", "1")]));
    let mut req = delta(Cluster, &[], "");
    req.initial_resource_versions = [("a".to_string(), "1".to_string())].into_iter().collect();
    assert!(quiet.on_request(&req, now).responses.is_empty());
}

#[test]
fn fresh_subscription_with_nothing_gets_an_empty_answer() {
    let mut s = DeltaStream::new(snap(&[]));
    let step = s.on_request(&delta(Listener, &[], ""), Instant::now());
    assert_eq!(step.responses.len(), 1);
    assert!(step.responses[0].resources.is_empty());
}

#[test]
fn nacked_versions_are_not_resent() {
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[cluster("a", "1")]));
    let r = s
        .on_request(&delta(Cluster, &[], ""), now)
        .responses
        .remove(0);
    let step = s.on_request(&delta_nack(Cluster, &r.nonce, "bad a"), now);
    match &step.events[..] {
        [Event::Nack(rej)] => {
            assert_eq!(rej.error, "bad a");
            assert_eq!(rej.resources, ["a"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(step.responses.is_empty());
    assert!(
        s.on_snapshot(snap(&[cluster("a", "1")]), now)
            .responses
            .is_empty()
    );
    let fixed = s.on_snapshot(snap(&[cluster("a", "2")]), now);
    assert_eq!(items(&fixed.responses[0]), ["a@2"]);
}

#[test]
fn named_subscribe_and_unsubscribe() {
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[cla("a", "1"), cla("b", "1")]));
    let r = s
        .on_request(&delta(Endpoint, &["a"], ""), now)
        .responses
        .remove(0);
    assert_eq!(items(&r), ["a@1"]);
    // Subscribing to b while ACKing a.
    let step = s.on_request(&delta(Endpoint, &["b"], &r.nonce), now);
    assert_eq!(items(&step.responses[0]), ["b@1"]);
    ack(&mut s, &step.responses[0]);
    let mut unsub = delta(Endpoint, &[], "");
    unsub.resource_names_unsubscribe = vec!["a".into()];
    assert!(s.on_request(&unsub, now).responses.is_empty());
    assert!(
        s.on_snapshot(snap(&[cla("a", "2"), cla("b", "1")]), now)
            .responses
            .is_empty()
    );
    let held: Vec<String> = s
        .resources(Endpoint)
        .into_iter()
        .filter(|r| r.held.is_some())
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(held, ["b"]);
}

#[test]
fn stale_nonce_does_not_ack_but_subscriptions_apply() {
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[cla("a", "1"), cla("b", "1")]));
    let r = s
        .on_request(&delta(Endpoint, &["a"], ""), now)
        .responses
        .remove(0);
    let step = s.on_request(&delta(Endpoint, &["b"], "999"), now);
    assert!(matches!(step.events[..], [Event::Ignored { .. }]));
    assert!(step.responses.is_empty(), "a is still in flight");
    let after = ack(&mut s, &r);
    assert_eq!(
        items(&after.responses[0]),
        ["b@1"],
        "the subscription to b was kept"
    );
}

#[test]
fn make_before_break_in_both_directions() {
    let now = Instant::now();
    let base = [cluster("a", "1"), cla("a", "1"), route("r", "1", &["a"])];
    let mut s = DeltaStream::new(snap(&base));
    subscribe_and_ack(
        &mut s,
        &[(Cluster, &[]), (Endpoint, &["a"]), (Route, &["r"])],
    );
    // Add b and point the route at it: CDS first, RDS only once the proxy took b
    // (asked for its endpoints) and right behind b's endpoints.
    let step = s.on_snapshot(route_to_new_b("1", "1"), now);
    assert_eq!(step.responses.len(), 1);
    assert_eq!(items(&step.responses[0]), ["b@1"]);
    let cds_nonce = step.responses[0].nonce.clone();
    let step = s.on_request(&delta(Endpoint, &["b"], ""), now);
    assert_eq!(
        step.responses.len(),
        2,
        "b's endpoints, the route behind them"
    );
    assert_eq!(items(&step.responses[0]), ["b@1"]);
    assert_eq!(items(&step.responses[1]), ["r@2"]);
    let (eds, rds) = (step.responses[0].clone(), step.responses[1].clone());
    let step = s.on_request(&delta(Cluster, &[], &cds_nonce), now);
    assert!(step.responses.is_empty());
    ack(&mut s, &eds);
    ack(&mut s, &rds);
    // Drop a: the route changes first; a is removed only after that is ACKed.
    let step = s.on_snapshot(
        snap(&[cluster("b", "1"), cla("b", "1"), route("r", "3", &["b"])]),
        now,
    );
    assert_eq!(step.responses.len(), 1);
    assert_eq!(step.responses[0].type_url, Route.type_url());
    let step = ack(&mut s, &step.responses[0]);
    assert_eq!(removed_of(&step, Cluster), ["a"]);
    assert_eq!(
        step.responses.len(),
        1,
        "endpoints of a stay while cluster a is held"
    );
    let step = ack(&mut s, &step.responses[0]);
    assert_eq!(step.responses[0].type_url, Endpoint.type_url());
    assert_eq!(strs(&step.responses[0].removed_resources), ["a"]);
}

#[test]
fn listeners_follow_once_clusters_are_acked() {
    let now = Instant::now();
    let listener = res(Listener, "outbound", "1", &[]);
    let mut s = DeltaStream::new(snap(&[cluster("a", "1"), cla("a", "1"), listener]));
    let cds = s
        .on_request(&delta(Cluster, &[], ""), now)
        .responses
        .remove(0);
    assert!(
        s.on_request(&delta(Listener, &[], ""), now)
            .responses
            .is_empty(),
        "waits for CDS"
    );
    let step = s.on_request(&delta(Endpoint, &["a"], ""), now);
    assert_eq!(step.responses.len(), 1, "still waits for the CDS ACK");
    // Once the clusters are held, the listeners follow the endpoints sent ahead of
    // them, before those are acknowledged.
    let step = ack(&mut s, &cds);
    assert_eq!(step.responses.len(), 1);
    assert_eq!(items(&step.responses[0]), ["outbound@1"]);
}

#[test]
fn a_changed_cluster_gets_its_endpoints_again() {
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[cluster("a", "1"), cla("a", "1")]));
    let r = s
        .on_request(&delta(Cluster, &[], ""), now)
        .responses
        .remove(0);
    ack(&mut s, &r);
    let r = s
        .on_request(&delta(Endpoint, &["a"], ""), now)
        .responses
        .remove(0);
    ack(&mut s, &r);
    let step = s.on_snapshot(snap(&[cluster("a", "2"), cla("a", "1")]), now);
    let kinds: Vec<_> = step
        .responses
        .iter()
        .map(|r| (r.type_url.to_string(), items(r)))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (Cluster.type_url().to_string(), vec!["a@2".to_string()]),
            (Endpoint.type_url().to_string(), vec!["a@1".to_string()])
        ],
        "Envoy re-warms the cluster and needs its endpoints"
    );
}

#[test]
fn nack_text_is_cut_and_suspects_are_the_diff_against_the_held_version() {
    use translator::encoded::Source;
    use translator::model::{Kind, ObjectKey};
    let now = Instant::now();
    let src = |name: &str, rev: u64| Source {
        key: ObjectKey::new(Kind::RetryPolicy, "default", name),
        rev,
    };
    let with_sources = |version: &str, sources: Vec<Source>| {
        let mut r = (*route("outbound", version, &[])).clone();
        r.sources = sources;
        std::sync::Arc::new(r)
    };
    let mut s = DeltaStream::new(snap(&[with_sources("1", vec![src("old", 1)])]));
    let r = s
        .on_request(&delta(Route, &["outbound"], ""), now)
        .responses
        .remove(0);
    ack(&mut s, &r);
    let step = s.on_snapshot(
        snap(&[with_sources("2", vec![src("old", 1), src("new", 5)])]),
        now,
    );
    let nonce = step.responses[0].nonce.clone();
    let huge = "e".repeat(100_000);
    let step = s.on_request(&delta_nack(Route, &nonce, &huge), now);
    let Event::Nack(rej) = &step.events[0] else {
        panic!("{:?}", step.events)
    };
    assert!(
        rej.error.len() < super::NACK_TEXT_MAX + 64,
        "{}",
        rej.error.len()
    );
    assert!(rej.error.ends_with("(100000 bytes in all)"));
    assert_eq!(rej.suspects, [src("new", 5)]);
    assert!(rej.precise);
}

#[test]
fn subscribing_over_the_name_limit_sets_a_refusal() {
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[])).with_name_limit(3);
    s.on_request(&delta(Endpoint, &["a", "b"], ""), now);
    assert!(s.take_refusal().is_none());
    s.on_request(&delta(Endpoint, &["c", "d"], ""), now);
    let refusal = s.take_refusal().expect("over the limit");
    assert_eq!(refusal.limit, "subscribed_names");
    assert!(
        refusal.reason.contains("--max-subscribed-names"),
        "{refusal:?}"
    );
}

#[test]
fn a_route_rejected_with_no_held_version_suspects_all_its_policies() {
    use translator::encoded::Source;
    use translator::model::{Kind, ObjectKey};
    let now = Instant::now();
    let src = |name: &str| Source {
        key: ObjectKey::new(Kind::TrafficSplit, "default", name),
        rev: 1,
    };
    let mut r = (*route("outbound", "1", &[])).clone();
    r.sources = vec![
        src("a"),
        src("b"),
        Source {
            key: ObjectKey::new(Kind::Service, "default", "web"),
            rev: 1,
        },
    ];
    let mut s = DeltaStream::new(snap(&[std::sync::Arc::new(r)]));
    let resp = s
        .on_request(&delta(Route, &["outbound"], ""), now)
        .responses
        .remove(0);
    let step = s.on_request(&delta_nack(Route, &resp.nonce, "bad"), now);
    let Event::Nack(rej) = &step.events[0] else {
        panic!()
    };
    assert_eq!(rej.suspects, [src("a"), src("b")]);
    assert!(!rej.precise);
}

#[test]
fn a_name_that_does_not_exist_is_answered_as_removed_once() {
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[cla("a", "1")]));
    let r = s
        .on_request(&delta(Endpoint, &["a", "ghost"], ""), now)
        .responses
        .remove(0);
    assert_eq!(items(&r), ["a@1"]);
    assert_eq!(
        strs(&r.removed_resources),
        ["ghost"],
        "the warming client need not wait"
    );
    let next = ack(&mut s, &r);
    assert!(
        next.responses.is_empty(),
        "answered once: {:?}",
        next.responses
    );
    // When it appears, it is sent.
    let step = s.on_snapshot(snap(&[cla("a", "1"), cla("ghost", "1")]), now);
    assert_eq!(items(&step.responses[0]), ["ghost@1"]);
}

#[test]
fn an_explicit_subscribe_on_a_wildcard_stream_is_answered_even_if_held() {
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[cluster("a", "1"), cluster("b", "1")]));
    let r = s
        .on_request(&delta(Cluster, &[], ""), now)
        .responses
        .remove(0);
    ack(&mut s, &r);
    let step = s.on_request(&delta(Cluster, &["a"], ""), now);
    assert_eq!(step.responses.len(), 1, "the server must still provide it");
    assert_eq!(items(&step.responses[0]), ["a@1"]);
}

#[test]
fn a_reconnecting_proxy_is_sent_only_what_differs_and_is_synced() {
    let now = Instant::now();
    let desired = snap(&[cla("a", "1"), cla("b", "2")]);
    let mut s = DeltaStream::new(desired);
    let mut req = delta(Endpoint, &["a", "b"], "");
    req.initial_resource_versions = [
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "1".to_string()),
    ]
    .into_iter()
    .collect();
    let step = s.on_request(&req, now);
    assert_eq!(step.responses.len(), 1);
    assert_eq!(
        items(&step.responses[0]),
        ["b@2"],
        "a is held at its version"
    );
    ack(&mut s, &step.responses[0]);
    let views = s.resources(Endpoint);
    assert!(
        views
            .iter()
            .all(|v| v.held.as_deref() == v.want.as_ref().map(|w| w.version.as_str())),
        "everything is held at the current version"
    );
}

#[test]
fn a_one_endpoint_change_sends_one_resource_whatever_the_mesh_size() {
    let now = Instant::now();
    let names: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
    let all: Vec<_> = names.iter().map(|n| cla(n, "1")).collect();
    let mut s = DeltaStream::new(snap(&all));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let r = s
        .on_request(&delta(Endpoint, &refs, ""), now)
        .responses
        .remove(0);
    assert_eq!(r.resources.len(), 1000);
    ack(&mut s, &r);
    assert_eq!(
        s.held_overlay(Endpoint),
        0,
        "what it holds is the view's own map"
    );
    let mut next = all.clone();
    next[7] = cla("c7", "2");
    let step = s.on_snapshot(snap(&next), now);
    assert_eq!(step.responses.len(), 1);
    assert_eq!(items(&step.responses[0]), ["c7@2"]);
    assert_eq!(
        s.held_overlay(Endpoint),
        1,
        "until acknowledged, c7 differs"
    );
    ack(&mut s, &step.responses[0]);
    assert_eq!(s.held_overlay(Endpoint), 0, "and then nothing does");
    assert_eq!(s.resources(Endpoint).len(), 1000);
}

/// A budget with `share` bytes per identity and a charge on one identity.
fn charged(
    share: usize,
) -> (
    std::sync::Arc<crate::xds::wire::budget::Budget>,
    crate::xds::wire::budget::Charge,
) {
    use crate::config::BudgetConfig;
    use crate::xds::wire::budget::{Budget, Charge};
    let b = Budget::new(
        BudgetConfig {
            total: 1 << 30,
            share,
            per_pod: 0,
        },
        prometheus_client::metrics::gauge::Gauge::default(),
    );
    let c = Charge::new(b.account("spiffe://td/ns/a/sa/x", None));
    (b, c)
}

#[test]
fn subscribed_name_bytes_are_bounded_per_stream_and_charged_before_they_are_stored() {
    use crate::xds::wire::budget::NAME_OVERHEAD;
    let now = Instant::now();
    let name = |i: usize| format!("{i}{}", "n".repeat(499));
    let (a, b, c, d) = (name(0), name(1), name(2), name(3));
    let (budget, charge) = charged(1 << 20);
    let mut s = DeltaStream::new(snap(&[cla("a", "1")]))
        .with_name_bytes(super::NameBytes::new(1_500, Some(charge)));
    s.on_request(&delta(Endpoint, &[&a, &b], ""), now);
    assert!(s.take_refusal().is_none());
    assert_eq!(budget.used(), 1_000 + 2 * NAME_OVERHEAD);
    // A name it already has weighs nothing more.
    s.on_request(&delta(Endpoint, &[&a, &a], ""), now);
    assert!(s.take_refusal().is_none());
    assert_eq!(budget.used(), 1_000 + 2 * NAME_OVERHEAD);
    // Another type counts toward the same bound: refused, and nothing of it stored.
    s.on_request(&delta(Route, &[&c, &d], ""), now);
    let r = s.take_refusal().expect("over the stream's bound");
    assert_eq!(r.limit, "subscribed_bytes");
    assert!(r.reason.contains("--max-subscribed-bytes"), "{r:?}");
    assert!(!s.subscribed().contains(&Route));
    assert_eq!(budget.used(), 1_000 + 2 * NAME_OVERHEAD);
    // Unsubscribing gives back.
    let mut unsub = delta(Endpoint, &[], "");
    unsub.resource_names_unsubscribe = vec![a.clone()];
    s.on_request(&unsub, now);
    assert_eq!(budget.used(), 500 + NAME_OVERHEAD);
    s.on_request(&delta(Route, &[&c], ""), now);
    assert!(s.take_refusal().is_none());
    drop(s);
    assert_eq!(budget.used(), 0, "given back when the stream goes");
}

#[test]
fn subscriptions_over_the_identitys_allowance_are_refused_before_they_are_stored() {
    let now = Instant::now();
    let (budget, charge) = charged(1_000);
    let mut s = DeltaStream::new(snap(&[]))
        .with_name_bytes(super::NameBytes::new(usize::MAX, Some(charge)));
    let names: Vec<String> = (0..3).map(|i| format!("{i}{}", "n".repeat(399))).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    s.on_request(&delta(Endpoint, &names, ""), now);
    let r = s.take_refusal().expect("over the allowance");
    assert_eq!(r.limit, "identity_memory");
    assert!(
        r.reason.contains("spiffe://td/ns/a/sa/x") && r.reason.contains("--identity-memory-share"),
        "{r:?}"
    );
    assert!(s.subscribed().is_empty() && s.resources(Endpoint).is_empty());
    assert_eq!(budget.used(), 0);
}

#[test]
fn listeners_of_the_view_and_its_own_come_together_and_change_alone() {
    let now = Instant::now();
    let l = |n: &str, v: &str| res(Listener, n, v, &[]);
    let state = |shared: &[std::sync::Arc<translator::encoded::Encoded>]| {
        with_view_listeners(snap(&[l("own", "1")]), shared)
    };
    let mut s = DeltaStream::new(state(&[l("a", "1")]));
    let r = s
        .on_request(&delta(Listener, &[], ""), now)
        .responses
        .remove(0);
    assert_eq!(items(&r), ["a@1", "own@1"]);
    ack(&mut s, &r);
    // The view gains one: that one alone.
    let step = s.on_snapshot(state(&[l("a", "1"), l("b", "1")]), now);
    assert_eq!(items(&step.responses[0]), ["b@1"]);
    ack(&mut s, &step.responses[0]);
    // And loses one: its removal alone; its own stays.
    let step = s.on_snapshot(state(&[l("b", "1")]), now);
    let r = &step.responses[0];
    assert!(items(r).is_empty());
    assert_eq!(strs(&r.removed_resources), ["a"]);
}

#[test]
fn a_first_wildcard_answer_sends_each_name_once_the_proxys_own_first() {
    let now = Instant::now();
    let l = |n: &str, v: &str| res(Listener, n, v, &[]);
    let mut s = DeltaStream::new(with_view_listeners(
        snap(&[l("b", "own"), l("c", "1")]),
        &[l("a", "1"), l("b", "view")],
    ));
    let r = s
        .on_request(&delta(Listener, &[], ""), now)
        .responses
        .remove(0);
    assert_eq!(items(&r), ["a@1", "b@own", "c@1"]);
    // Acknowledged, a change goes by the names as before.
    ack(&mut s, &r);
    let step = s.on_snapshot(
        with_view_listeners(snap(&[l("b", "own"), l("c", "2")]), &[l("a", "1")]),
        now,
    );
    assert_eq!(items(&step.responses[0]), ["c@2"]);
}

#[test]
fn a_first_named_answer_sends_what_exists_in_order_and_removes_the_rest() {
    let now = Instant::now();
    let cfg = [cla("a", "1"), cla("b", "1"), cla("d", "1"), cla("e", "1")];
    let mut s = DeltaStream::new(snap(&cfg));
    // Names in any order, one unknown, one repeated; "e" is not asked for.
    let r = s
        .on_request(&delta(Endpoint, &["d", "zz", "a", "c", "d"], ""), now)
        .responses
        .remove(0);
    assert_eq!(items(&r), ["a@1", "d@1"]);
    assert_eq!(strs(&r.removed_resources), ["c", "zz"]);
    ack(&mut s, &r);
    // Later subscriptions go by the names as before: an explicit subscribe is answered,
    // an unknown name again as removed.
    let r = s
        .on_request(&delta(Endpoint, &["b", "c"], ""), now)
        .responses
        .remove(0);
    assert_eq!(items(&r), ["b@1"]);
    assert_eq!(strs(&r.removed_resources), ["c"]);
    ack(&mut s, &r);
    let step = s.on_snapshot(snap(&[cla("a", "2"), cla("b", "1"), cla("c", "1")]), now);
    assert_eq!(items(&step.responses[0]), ["a@2", "c@1"]);
    assert_eq!(strs(&step.responses[0].removed_resources), ["d"]);
}

#[test]
fn first_named_answers_are_what_exists_and_removals_of_the_rest_whatever_the_path() {
    // Few names among many resources take the general path, many the walk: both answer
    // the same thing.
    let mut x: u64 = 11;
    let mut next = |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) % m) as usize
    };
    for round in 0..300 {
        let have: std::collections::BTreeSet<String> = (0..60)
            .filter(|_| next(3) > 0)
            .map(|i| format!("e{i:02}"))
            .collect();
        let share = 1 + next(4) as u64;
        let asked: Vec<String> = (0..70)
            .filter(|_| next(12) < share as usize * (1 + round % 3))
            .map(|i| format!("e{i:02}"))
            .collect();
        let cfg: Vec<_> = have.iter().map(|n| cla(n, "1")).collect();
        let mut s = DeltaStream::new(snap(&cfg));
        let names: Vec<&str> = asked.iter().map(String::as_str).collect();
        let step = s.on_request(&delta(Endpoint, &names, ""), Instant::now());
        assert_eq!(
            step.responses.len(),
            1,
            "round {round}: a first request is answered"
        );
        let r = &step.responses[0];
        let want: Vec<String> = asked
            .iter()
            .filter(|n| have.contains(*n))
            .map(|n| format!("{n}@1"))
            .collect();
        let gone: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !have.contains(*n))
            .collect();
        assert_eq!(items(r), want, "round {round}");
        assert_eq!(strs(&r.removed_resources), gone, "round {round}");
    }
}

#[test]
fn a_route_answer_held_back_for_its_cluster_still_removes_unknown_names() {
    let now = Instant::now();
    let mut s = DeltaStream::new(snap(&[
        cluster("a", "1"),
        cla("a", "1"),
        route("r", "1", &["a"]),
    ]));
    // Routes asked for before the cluster is held: the answer waits for it.
    let step = s.on_request(&delta(Route, &["r", "unknown"], ""), now);
    assert!(
        step.responses.is_empty(),
        "held back until the cluster is held"
    );
    subscribe_and_ack(&mut s, &[(Cluster, &[])]);
    // The endpoints go, and the route right behind them, the unknown name answered
    // as removed.
    let mut after = s.on_request(&delta(Endpoint, &["a"], ""), now).responses;
    assert_eq!(after.len(), 2, "the endpoints, then the route answer");
    assert_eq!(after[0].type_url, Endpoint.type_url());
    let r = after.remove(1);
    assert_eq!(items(&r), ["r@1"]);
    assert_eq!(strs(&r.removed_resources), ["unknown"]);
}

/// A first request that says what the proxy holds resumes (it serves traffic by that
/// config): its first sync goes ahead of starting proxies' in a storm.
#[test]
fn a_first_request_that_says_what_it_holds_resumes() {
    use super::core::Protocol;
    use super::delta::Delta;
    let mut first = delta(Cluster, &[], "");
    assert!(!Delta::resumes(&first.clone().into()));
    first.initial_resource_versions = [("a".to_string(), "1".to_string())].into();
    assert!(Delta::resumes(&first.into()));
}

#[test]
fn proxies_of_one_view_share_a_first_sync_body_until_the_view_moves_on() {
    let now = Instant::now();
    let clusters: Vec<_> = (0..40).map(|i| cluster(&format!("c{i:02}"), "1")).collect();
    let d = snap(&clusters);
    let first = |d: &crate::xds::fanout::Desired| {
        let mut s = DeltaStream::new(d.clone());
        let mut step = s.on_request(&delta(Cluster, &[], ""), now);
        use crate::xds::wire::frames::Response;
        step.responses.remove(0).framed()
    };
    // The first proxy's list is seen once; the second keeps its body.
    first(&d);
    let (a, b) = (first(&d), first(&d));
    assert_ne!(a.head.as_ptr(), b.head.as_ptr(), "each its own head");
    let shared = a.shared.expect("a shared body");
    assert_eq!(shared.as_ptr(), b.shared.expect("shared").as_ptr());
    assert_eq!(d.view.bodies.len(), 1);

    let mut more = clusters.clone();
    more.push(cluster("c99", "1"));
    let (view, _) = advance(&d, snap(&more));
    assert_eq!(d.view.bodies.len(), 0, "the past version keeps nothing");
    first(&d);
    first(&d);
    assert_eq!(d.view.bodies.len(), 0, "not even for streams still on it");
    let next = crate::xds::fanout::Desired {
        view,
        own: d.own.clone(),
    };
    first(&next);
    let c = first(&next).shared.expect("shared");
    assert_ne!(c.as_ptr(), shared.as_ptr());
    assert_eq!(next.view.bodies.len(), 1);
}

/// A request naming many names interns them by hash (`Stream::intern_among`): the answer
/// is the one a few names get, each known name its resource and an unknown one removed.
#[test]
fn a_first_request_of_many_names_is_answered_like_one_of_a_few() {
    let now = Instant::now();
    let endpoints: Vec<_> = (0..100).map(|i| cla(&format!("e{i:03}"), "1")).collect();
    let mut names: Vec<String> = (0..80).map(|i| format!("e{:03}", 99 - i)).collect();
    names.push("unknown".into());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut s = DeltaStream::new(snap(&endpoints));
    let step = s.on_request(&delta(Endpoint, &names, ""), now);
    let r = &step.responses[0];
    assert_eq!(r.resources.len(), 80);
    assert!(
        r.resources
            .iter()
            .all(|x| endpoints.iter().any(|e| std::sync::Arc::ptr_eq(e, x)))
    );
    assert_eq!(strs(&r.removed_resources), ["unknown"]);
    assert!(ack(&mut s, r).responses.is_empty(), "nothing more to send");
    // A later change of one of them reaches the stream by its interned name.
    let mut next = endpoints.clone();
    next[50] = cla("e050", "2");
    let change = s.on_snapshot(snap(&next), now);
    assert_eq!(items(&change.responses[0]), ["e050@2"]);
}
