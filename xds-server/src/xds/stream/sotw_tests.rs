use std::time::{Duration, Instant};

use crate::xds::wire::frames::SotwResponse as DiscoveryResponse;
use xds_types::XdsType::{Cluster, Endpoint, Listener, Route};

use super::Event;
use super::sotw::SotwStream;
#[allow(unused_imports)]
use super::test_support::Feed;
use super::test_support::*;

fn items(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| String::from_utf8(a.any.value.clone()).expect("utf8"))
        .collect()
}

/// Brings a fresh stream to fully ACKed state for `snapshot`; returns the stream and the
/// last (version, nonce) per type.
fn synced(
    snapshot: crate::xds::fanout::Desired,
    eds: &[&str],
) -> (
    SotwStream,
    std::collections::BTreeMap<xds_types::XdsType, (String, String)>,
) {
    let now = Instant::now();
    let mut last = std::collections::BTreeMap::new();
    let mut s = SotwStream::new(snapshot);
    for (kind, names) in [
        (Cluster, &[][..]),
        (Endpoint, eds),
        (Listener, &[][..]),
        (Route, &["r"][..]),
    ] {
        let step = s.on_request(&sotw(kind, names, "", ""), now);
        for resp in step.responses {
            let kind = xds_types::XdsType::from_type_url(resp.type_url).expect("type");
            let names: Vec<&str> = match kind {
                Endpoint => eds.to_vec(),
                Route => vec!["r"],
                _ => vec![],
            };
            let ack = s.on_request(&sotw(kind, &names, &resp.version_info, &resp.nonce), now);
            assert!(
                matches!(ack.events[..], [Event::Ack { .. }]),
                "{:?}",
                ack.events
            );
            assert!(
                ack.responses.is_empty(),
                "nothing more to send: {:?}",
                ack.responses
            );
            last.insert(kind, (resp.version_info.clone(), resp.nonce.clone()));
        }
    }
    (s, last)
}

#[test]
fn first_request_is_answered_and_ack_sends_nothing_more() {
    let now = Instant::now();
    let mut s = SotwStream::new(snap(&[cluster("a", "1"), cluster("b", "1")]));
    let step = s.on_request(&sotw(Cluster, &[], "", ""), now);
    assert_eq!(step.responses.len(), 1);
    let r = &step.responses[0];
    assert_eq!(items(r), ["a@1", "b@1"]);
    assert!(!r.version_info.is_empty());
    let ack = s.on_request(&sotw(Cluster, &[], &r.version_info, &r.nonce), now);
    assert_eq!(
        ack.events,
        vec![Event::Ack {
            kind: Cluster,
            version: r.version_info.clone(),
            accepted: Vec::new(),
        }]
    );
    assert!(ack.responses.is_empty());
}

#[test]
fn empty_type_still_gets_a_first_response() {
    let mut s = SotwStream::new(snap(&[]));
    let step = s.on_request(&sotw(Cluster, &[], "", ""), Instant::now());
    assert_eq!(step.responses.len(), 1);
    assert!(step.responses[0].resources.is_empty());
}

#[test]
fn nack_is_recorded_and_the_rejected_version_is_not_resent() {
    let now = Instant::now();
    let mut s = SotwStream::new(snap(&[cluster("a", "1")]));
    let r = s
        .on_request(&sotw(Cluster, &[], "", ""), now)
        .responses
        .remove(0);
    let nack = s.on_request(&sotw_nack(Cluster, &[], &r.nonce, "bad cluster a"), now);
    match &nack.events[..] {
        [Event::Nack(rej)] => {
            assert_eq!(rej.error, "bad cluster a");
            assert_eq!(rej.resources, ["a"]);
            assert_eq!(rej.version, r.version_info);
        }
        other => panic!("expected one NACK, got {other:?}"),
    }
    assert!(
        nack.responses.is_empty(),
        "rejected version must not be re-sent"
    );
    // The same snapshot again (e.g. an unrelated rebuild) is not re-sent either.
    assert!(
        s.on_snapshot(snap(&[cluster("a", "1")]), now)
            .responses
            .is_empty()
    );
    assert!(
        s.on_tick(now + Duration::from_secs(60))
            .responses
            .is_empty()
    );
    // A different version is.
    let fixed = s.on_snapshot(snap(&[cluster("a", "2")]), now);
    assert_eq!(items(&fixed.responses[0]), ["a@2"]);
}

#[test]
fn stale_nonce_is_ignored() {
    let now = Instant::now();
    let mut s = SotwStream::new(snap(&[cluster("a", "1")]));
    let first = s
        .on_request(&sotw(Cluster, &[], "", ""), now)
        .responses
        .remove(0);
    let ack = s.on_request(&sotw(Cluster, &[], &first.version_info, &first.nonce), now);
    assert_eq!(ack.events.len(), 1);
    let second = s
        .on_snapshot(snap(&[cluster("a", "2")]), now)
        .responses
        .remove(0);
    // A late request carrying the first nonce neither ACKs nor NACKs the second response.
    let stale = s.on_request(&sotw_nack(Cluster, &[], &first.nonce, "old"), now);
    assert!(matches!(stale.events[..], [Event::Ignored { .. }]));
    assert!(stale.responses.is_empty());
    let ack2 = s.on_request(
        &sotw(Cluster, &[], &second.version_info, &second.nonce),
        now,
    );
    assert!(matches!(ack2.events[..], [Event::Ack { .. }]));
}

#[test]
fn reconnect_with_current_version_gets_no_resend() {
    let now = Instant::now();
    let snapshot = snap(&[cluster("a", "1"), cla("a", "1")]);
    let mut first = SotwStream::new(snapshot.clone());
    let cds = first
        .on_request(&sotw(Cluster, &[], "", ""), now)
        .responses
        .remove(0);
    let eds = first
        .on_request(&sotw(Endpoint, &["a"], "", ""), now)
        .responses
        .remove(0);
    // New stream (control plane restarted): the proxy reports what it holds.
    let mut again = SotwStream::new(snapshot);
    assert!(
        again
            .on_request(&sotw(Cluster, &[], &cds.version_info, ""), now)
            .responses
            .is_empty()
    );
    assert!(
        again
            .on_request(&sotw(Endpoint, &["a"], &eds.version_info, ""), now)
            .responses
            .is_empty()
    );
    // A proxy holding an older version is sent the current one.
    let mut third = SotwStream::new(snap(&[cluster("a", "2")]));
    let step = third.on_request(&sotw(Cluster, &[], &cds.version_info, ""), now);
    assert_eq!(items(&step.responses[0]), ["a@2"]);
}

#[test]
fn named_subscriptions_get_only_what_they_name() {
    let now = Instant::now();
    let mut s = SotwStream::new(snap(&[cla("a", "1"), cla("b", "1"), cla("c", "1")]));
    let r = s
        .on_request(&sotw(Endpoint, &["a", "c"], "", ""), now)
        .responses
        .remove(0);
    assert_eq!(items(&r), ["a@1", "c@1"]);
    // Changing the subscription (with the current nonce) answers with the new set.
    s.on_request(&sotw(Endpoint, &["a", "c"], &r.version_info, &r.nonce), now);
    let step = s.on_request(&sotw(Endpoint, &["b"], &r.version_info, &r.nonce), now);
    assert_eq!(items(&step.responses[0]), ["b@1"]);
    // A change to a resource nobody named sends nothing.
    let r2 = &step.responses[0];
    s.on_request(&sotw(Endpoint, &["b"], &r2.version_info, &r2.nonce), now);
    let quiet = s.on_snapshot(snap(&[cla("a", "2"), cla("b", "1"), cla("c", "1")]), now);
    assert!(quiet.responses.is_empty());
}

#[test]
fn one_response_in_flight_per_type() {
    let now = Instant::now();
    let mut s = SotwStream::new(snap(&[cluster("a", "1")]));
    let r = s
        .on_request(&sotw(Cluster, &[], "", ""), now)
        .responses
        .remove(0);
    assert!(
        s.on_snapshot(snap(&[cluster("a", "2")]), now)
            .responses
            .is_empty()
    );
    let ack = s.on_request(&sotw(Cluster, &[], &r.version_info, &r.nonce), now);
    assert_eq!(
        items(&ack.responses[0]),
        ["a@2"],
        "the newer version follows the ACK"
    );
}

#[test]
fn new_cluster_is_acked_before_the_route_that_uses_it() {
    let now = Instant::now();
    let (mut s, last) = synced(
        snap(&[cluster("a", "1"), cla("a", "1"), route("r", "1", &["a"])]),
        &["a"],
    );
    let step = s.on_snapshot(route_to_new_b("1", "1"), now);
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(
        types,
        [Cluster.type_url()],
        "route must wait for the cluster"
    );
    let cds = &step.responses[0];
    let after_cds = s.on_request(&sotw(Cluster, &[], &cds.version_info, &cds.nonce), now);
    assert!(
        after_cds.responses.is_empty(),
        "route still waits for b's endpoints"
    );
    // The proxy now asks for b's endpoints, quoting its last EDS version and nonce.
    let (eds_version, eds_nonce) = &last[&Endpoint];
    let eds = s.on_request(&sotw(Endpoint, &["a", "b"], eds_version, eds_nonce), now);
    let eds_resp = eds
        .responses
        .iter()
        .find(|r| r.type_url == Endpoint.type_url())
        .expect("eds");
    assert_eq!(items(eds_resp), ["b@1"], "only the endpoints that changed");
    // The route follows the endpoints on the same stream, without waiting for their
    // ACK: the proxy applies them first.
    let types: Vec<_> = eds.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Endpoint.type_url(), Route.type_url()]);
    assert_eq!(items(&eds.responses[1]), ["r@2"]);
}

#[test]
fn other_endpoints_in_flight_do_not_let_the_route_go() {
    let now = Instant::now();
    let (mut s, _) = synced(
        snap(&[cluster("a", "1"), cla("a", "1"), route("r", "1", &["a"])]),
        &["a"],
    );
    // b is new and the route points at it; a's endpoints change too.
    let step = s.on_snapshot(route_to_new_b("1", "2"), now);
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Cluster.type_url(), Endpoint.type_url()]);
    let (cds, eds_a) = (step.responses[0].clone(), step.responses[1].clone());
    assert_eq!(items(&eds_a), ["a@2"]);
    let after_cds = s.on_request(&sotw(Cluster, &[], &cds.version_info, &cds.nonce), now);
    assert!(
        after_cds.responses.is_empty(),
        "b is held, but only a's endpoints are in flight"
    );
    // The proxy takes a's endpoints and asks for b's too: b's go, the route behind them.
    let step = s.on_request(
        &sotw(Endpoint, &["a", "b"], &eds_a.version_info, &eds_a.nonce),
        now,
    );
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Endpoint.type_url(), Route.type_url()]);
    assert_eq!(items(&step.responses[0]), ["b@1"]);
    assert_eq!(items(&step.responses[1]), ["r@2"]);
}

#[test]
fn cluster_is_removed_only_after_the_route_stops_using_it() {
    let now = Instant::now();
    let (mut s, _) = synced(
        snap(&[
            cluster("a", "1"),
            cla("a", "1"),
            cluster("b", "1"),
            cla("b", "1"),
            route("r", "1", &["a", "b"]),
        ]),
        &["a", "b"],
    );
    let step = s.on_snapshot(
        snap(&[cluster("a", "1"), cla("a", "1"), route("r", "2", &["a"])]),
        now,
    );
    assert_eq!(step.responses.len(), 1, "{:?}", step.responses);
    let rds = &step.responses[0];
    assert_eq!(
        rds.type_url,
        Route.type_url(),
        "route goes first; b stays while it is used"
    );
    let after = s.on_request(&sotw(Route, &["r"], &rds.version_info, &rds.nonce), now);
    let cds = &after.responses[0];
    assert_eq!(cds.type_url, Cluster.type_url());
    assert_eq!(items(cds), ["a@1"], "b goes once no held route uses it");
}

#[test]
fn ordering_wait_is_bounded() {
    let now = Instant::now();
    let (mut s, _) = synced(
        snap(&[cluster("a", "1"), cla("a", "1"), route("r", "1", &["a"])]),
        &["a"],
    );
    let step = s.on_snapshot(route_to_new_b("1", "1"), now);
    let cds = &step.responses[0];
    // The proxy rejects the cluster: the route must not wait forever.
    s.on_request(&sotw_nack(Cluster, &[], &cds.nonce, "no"), now);
    assert!(s.waiting());
    assert!(
        s.on_tick(now + Duration::from_millis(500))
            .responses
            .is_empty()
    );
    let late = s.on_tick(now + super::ORDER_WAIT + Duration::from_millis(1));
    assert_eq!(items(&late.responses[0]), ["r@2"]);
}

#[test]
fn unknown_types_are_ignored() {
    let mut s = SotwStream::new(snap(&[]));
    let mut req = sotw(Cluster, &[], "", "");
    req.type_url = "type.googleapis.com/unknown.Thing".into();
    let step = s.on_request(&req, Instant::now());
    assert!(step.responses.is_empty());
    assert!(matches!(step.events[..], [Event::Ignored { .. }]));
}

#[test]
fn a_changed_cluster_gets_its_endpoints_again() {
    let now = Instant::now();
    let (mut s, _) = synced(
        snap(&[cluster("a", "1"), cla("a", "1"), route("r", "1", &["a"])]),
        &["a"],
    );
    let step = s.on_snapshot(
        snap(&[cluster("a", "2"), cla("a", "1"), route("r", "1", &["a"])]),
        now,
    );
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(
        types,
        [Cluster.type_url(), Endpoint.type_url()],
        "Envoy re-warms the cluster and needs its endpoints"
    );
    assert_eq!(items(&step.responses[1]), ["a@1"]);
}

#[test]
fn too_many_names_set_a_refusal_and_nack_text_is_cut() {
    let now = Instant::now();
    let mut s = SotwStream::new(snap(&[cluster("a", "1")])).with_name_limit(2);
    s.on_request(&sotw(Endpoint, &["a", "b", "c"], "", ""), now);
    assert!(
        s.take_refusal()
            .is_some_and(|r| r.reason.contains("--max-subscribed-names"))
    );
    let mut s = SotwStream::new(snap(&[cluster("a", "1")]));
    let r = s.on_request(&sotw(Cluster, &[], "", ""), now).responses[0].clone();
    let step = s.on_request(&sotw_nack(Cluster, &[], &r.nonce, &"x".repeat(50_000)), now);
    let Event::Nack(rej) = &step.events[0] else {
        panic!("{:?}", step.events)
    };
    assert!(rej.error.len() <= super::NACK_TEXT_MAX + 64);
}

#[test]
fn an_empty_list_after_names_means_none_not_wildcard() {
    let now = Instant::now();
    let mut s = SotwStream::new(snap(&[cluster("a", "1"), cluster("b", "1")]));
    let r = s.on_request(&sotw(Cluster, &["a"], "", ""), now).responses[0].clone();
    assert_eq!(items(&r), ["a@1"]);
    let step = s.on_request(&sotw(Cluster, &[], &r.version_info, &r.nonce), now);
    assert_eq!(step.responses.len(), 1, "{:?}", step.responses);
    assert!(
        items(&step.responses[0]).is_empty(),
        "[] after [a] is no resources: {:?}",
        items(&step.responses[0])
    );
    // Before any name, [] is the legacy wildcard.
    let mut fresh = SotwStream::new(snap(&[cluster("a", "1"), cluster("b", "1")]));
    let r = fresh.on_request(&sotw(Cluster, &[], "", ""), now).responses[0].clone();
    assert_eq!(items(&r), ["a@1", "b@1"]);
}

#[test]
fn endpoints_are_sent_only_when_they_change_and_versions_survive_a_restart() {
    let now = Instant::now();
    let (mut s, last) = synced(
        snap(&[
            cluster("a", "1"),
            cla("a", "1"),
            cluster("b", "1"),
            cla("b", "1"),
            route("r", "1", &["a", "b"]),
        ]),
        &["a", "b"],
    );
    let step = s.on_snapshot(
        snap(&[
            cluster("a", "1"),
            cla("a", "2"),
            cluster("b", "1"),
            cla("b", "1"),
            route("r", "1", &["a", "b"]),
        ]),
        now,
    );
    assert_eq!(step.responses.len(), 1);
    assert_eq!(
        items(&step.responses[0]),
        ["a@2"],
        "only the changed assignment"
    );
    let version = step.responses[0].version_info.clone();
    s.on_request(
        &sotw(Endpoint, &["a", "b"], &version, &step.responses[0].nonce),
        now,
    );
    // A restarted control plane, and the proxy reconnects quoting what it holds.
    let mut again = SotwStream::new(snap(&[
        cluster("a", "1"),
        cla("a", "2"),
        cluster("b", "1"),
        cla("b", "1"),
        route("r", "1", &["a", "b"]),
    ]));
    let (cds_version, _) = &last[&Cluster];
    assert!(
        again
            .on_request(&sotw(Cluster, &[], cds_version, ""), now)
            .responses
            .is_empty(),
        "clusters unchanged: nothing to resend"
    );
    assert!(
        again
            .on_request(&sotw(Endpoint, &["a", "b"], &version, ""), now)
            .responses
            .is_empty(),
        "endpoints unchanged: nothing to resend"
    );
}

#[test]
fn a_synced_proxy_keeps_nothing_of_its_own_for_shared_resources() {
    let now = Instant::now();
    let names: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
    let mut all: Vec<_> = names.iter().map(|n| cla(n, "1")).collect();
    all.extend(names.iter().map(|n| cluster(n, "1")));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut s, _) = synced(snap(&all), &refs);
    assert_eq!(s.held_overlay(Cluster), 0);
    assert_eq!(s.held_overlay(Endpoint), 0);
    // One endpoint set changes: sent alone, and once acknowledged nothing differs.
    let mut next = all.clone();
    next[7] = cla("c7", "2");
    let step = s.on_snapshot(snap(&next), now);
    assert_eq!(step.responses.len(), 1);
    assert_eq!(items(&step.responses[0]), ["c7@2"]);
    let r = &step.responses[0];
    s.on_request(&sotw(Endpoint, &refs, &r.version_info, &r.nonce), now);
    assert!(s.idle());
    assert_eq!(s.held_overlay(Endpoint), 0);
    assert_eq!(s.resources(Endpoint).len(), 200);
}

#[test]
fn an_ack_repeating_the_subscription_is_taken_without_decoding_its_names() {
    use crate::xds::wire::sotw_request::SotwRequest;
    let now = Instant::now();
    let names: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    let all: Vec<_> = names.iter().map(|n| cla(n, "1")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut s = SotwStream::new(snap(&all));
    let first = s.on_wire(SotwRequest::from(sotw(Endpoint, &refs, "", "")), now);
    let r = &first.responses[0];
    assert_eq!(r.resources.len(), 100);
    // The ACK names the same list: nothing more is sent, the subscription stands.
    let ack = SotwRequest::from(sotw(Endpoint, &refs, &r.version_info, &r.nonce));
    assert!(s.on_wire(ack, now).responses.is_empty());
    assert!(s.idle());
    // A list that differs is decoded and taken: one name fewer, one new.
    let mut next: Vec<&str> = refs[1..].to_vec();
    next.push("c-new");
    let mut with_new = all.clone();
    with_new.push(cla("c-new", "1"));
    s.on_snapshot(snap(&with_new), now);
    let step = s.on_wire(
        SotwRequest::from(sotw(Endpoint, &next, &r.version_info, "")),
        now,
    );
    assert_eq!(step.responses.len(), 1);
    assert_eq!(items(&step.responses[0]), ["c-new@1"]);
    // A name that is not UTF-8 ends the stream with a reason.
    let mut bad = prost::Message::encode_to_vec(&sotw(Endpoint, &refs, "", ""));
    bad.extend_from_slice(&[0x1a, 0x01, 0xff]);
    let bad = <SotwRequest as prost::Message>::decode(bytes::Bytes::from(bad)).expect("frame");
    s.on_wire(bad, now);
    assert!(s.take_refusal().is_some_and(|e| e.reason.contains("UTF-8")));
}

#[test]
fn a_client_that_names_its_clusters_gets_the_route_before_it_asks_for_them() {
    // Proxyless gRPC: LDS, then RDS by name, and only then CDS for the route's clusters.
    // Waiting for clusters it has not asked for would hold the route back for the
    // whole ordering wait.
    let now = Instant::now();
    let mut s = SotwStream::new(snap_grpc(&[
        cluster("a", "1"),
        cla("a", "1"),
        route("r", "1", &["a"]),
    ]));
    let step = s.on_request(&sotw(Route, &["r"], "", ""), now);
    assert_eq!(
        step.responses
            .iter()
            .map(|r| r.type_url)
            .collect::<Vec<_>>(),
        [Route.type_url()],
        "the route goes at once"
    );
    assert!(!s.waiting());
    // Once it names the cluster, a changed route waits for it as for any proxy.
    let rds = &step.responses[0];
    s.on_request(&sotw(Route, &["r"], &rds.version_info, &rds.nonce), now);
    let cds = s
        .on_request(&sotw(Cluster, &["a", "b"], "", ""), now)
        .responses
        .remove(0);
    s.on_request(
        &sotw(Cluster, &["a", "b"], &cds.version_info, &cds.nonce),
        now,
    );
    let step = s.on_snapshot(
        snap_grpc(&[
            cluster("a", "1"),
            cla("a", "1"),
            cluster("b", "1"),
            cla("b", "1"),
            route("r", "2", &["a", "b"]),
        ]),
        now,
    );
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(
        types,
        [Cluster.type_url()],
        "the route waits for b: {types:?}"
    );
}

#[test]
fn an_envoy_route_before_its_cds_subscription_still_waits_for_the_clusters() {
    // Envoy subscribes to CDS first, but should LDS/RDS come first the route must
    // still wait for the clusters it uses (bounded by the ordering wait).
    let now = Instant::now();
    let mut s = SotwStream::new(snap(&[
        cluster("a", "1"),
        cla("a", "1"),
        route("r", "1", &["a"]),
    ]));
    let step = s.on_request(&sotw(Route, &["r"], "", ""), now);
    assert!(step.responses.is_empty(), "the route waits for cluster a");
    assert!(s.waiting());
}

#[test]
fn subscribed_name_bytes_are_bounded_per_stream_and_charged_before_they_are_stored() {
    use crate::config::BudgetConfig;
    use crate::xds::wire::budget::{Budget, Charge, NAME_OVERHEAD};
    use crate::xds::wire::sotw_request::SotwRequest;
    let now = Instant::now();
    let budget = Budget::new(
        BudgetConfig {
            total: 1 << 30,
            share: 1 << 20,
            per_pod: 0,
        },
        prometheus_client::metrics::gauge::Gauge::default(),
    );
    let charge = Charge::new(budget.account("spiffe://td/ns/a/sa/x", None));
    let name = |i: usize| format!("{i}{}", "n".repeat(499));
    let (a, b, c, d) = (name(0), name(1), name(2), name(3));
    let mut s = SotwStream::new(snap(&[cla("a", "1")]))
        .with_name_bytes(super::NameBytes::new(1_500, Some(charge)));
    s.on_request(&sotw(Endpoint, &[&a, &b], "", ""), now);
    assert!(s.take_refusal().is_none());
    assert_eq!(budget.used(), 1_000 + 2 * NAME_OVERHEAD);
    // An ACK repeating the subscription off the wire is not decoded or charged again.
    let wire = |names: &[&str]| {
        let bytes = prost::Message::encode_to_vec(&sotw(Endpoint, names, "", ""));
        <SotwRequest as prost::Message>::decode(bytes::Bytes::from(bytes)).expect("frame")
    };
    s.on_wire(wire(&[&a, &b]), now);
    assert!(s.take_refusal().is_none());
    assert_eq!(budget.used(), 1_000 + 2 * NAME_OVERHEAD);
    // Another type counts toward the same bound: refused, and nothing of it stored.
    s.on_wire(
        {
            let bytes = prost::Message::encode_to_vec(&sotw(Route, &[&c, &d], "", ""));
            <SotwRequest as prost::Message>::decode(bytes::Bytes::from(bytes)).expect("frame")
        },
        now,
    );
    let r = s.take_refusal().expect("over the stream's bound");
    assert_eq!(r.limit, "subscribed_bytes");
    assert!(r.reason.contains("--max-subscribed-bytes"), "{r:?}");
    assert!(!s.subscribed().contains(&Route));
    // A smaller subscription gives back; the stream's end gives back the rest.
    s.on_request(&sotw(Endpoint, &[&a], "", ""), now);
    assert_eq!(budget.used(), 500 + NAME_OVERHEAD);
    drop(s);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_full_set_of_listeners_holds_the_views_and_its_own() {
    let now = Instant::now();
    let l = |n: &str, v: &str| res(Listener, n, v, &[]);
    let state = |shared: &[std::sync::Arc<translator::encoded::Encoded>]| {
        with_view_listeners(snap(&[l("own", "1")]), shared)
    };
    let mut s = SotwStream::new(state(&[l("a", "1")]));
    let r = s
        .on_request(&sotw(Listener, &[], "", ""), now)
        .responses
        .remove(0);
    let mut got = items(&r);
    got.sort();
    assert_eq!(got, ["a@1", "own@1"]);
    s.on_request(&sotw(Listener, &[], &r.version_info, &r.nonce), now);
    // The view loses `a` and gains `b`: the whole set again, without `a`.
    let step = s.on_snapshot(state(&[l("b", "1")]), now);
    let mut got = items(&step.responses[0]);
    got.sort();
    assert_eq!(got, ["b@1", "own@1"]);
}

#[test]
fn a_name_both_own_and_the_views_is_sent_once_as_its_own() {
    let now = Instant::now();
    let l = |n: &str, v: &str| res(Listener, n, v, &[]);
    let mut s = SotwStream::new(with_view_listeners(
        snap(&[l("b", "own")]),
        &[l("a", "1"), l("b", "view")],
    ));
    let r = s
        .on_request(&sotw(Listener, &[], "", ""), now)
        .responses
        .remove(0);
    assert_eq!(items(&r), ["a@1", "b@own"]);
}

/// A first request with a version resumes (the proxy holds config from an earlier stream
/// and serves by it): its first sync goes ahead of starting proxies' in a storm.
#[test]
fn a_first_request_with_a_version_resumes() {
    use super::core::Protocol;
    use super::sotw::Sotw;
    use crate::xds::wire::sotw_request::SotwRequest;
    let first = |version: &str| SotwRequest::from(sotw(Cluster, &[], version, ""));
    assert!(Sotw::resumes(&first("v7")));
    assert!(!Sotw::resumes(&first("")));
}

#[test]
fn envoy_asking_for_a_new_clusters_endpoints_before_its_ack_takes_the_route_with_them() {
    let now = Instant::now();
    let (mut s, last) = synced(
        snap(&[cluster("a", "1"), cla("a", "1"), route("r", "1", &["a"])]),
        &["a"],
    );
    let step = s.on_snapshot(route_to_new_b("1", "1"), now);
    let cds = step.responses[0].clone();
    assert_eq!(items(&cds), ["a@1", "b@1"], "the whole set");
    // Envoy asks for b's endpoints first; it ACKs the Clusters once b has warmed.
    let (eds_version, eds_nonce) = &last[&Endpoint];
    let step = s.on_request(&sotw(Endpoint, &["a", "b"], eds_version, eds_nonce), now);
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Endpoint.type_url(), Route.type_url()]);
    assert_eq!(items(&step.responses[0]), ["b@1"]);
    assert_eq!(items(&step.responses[1]), ["r@2"]);
    let after = s.on_request(&sotw(Cluster, &[], &cds.version_info, &cds.nonce), now);
    assert!(after.responses.is_empty());
}

#[test]
fn endpoints_asked_for_before_their_cluster_came_show_nothing() {
    let now = Instant::now();
    // The proxy asks for b's endpoints before b exists.
    let (mut s, _) = synced(
        snap(&[cluster("a", "1"), cla("a", "1"), route("r", "1", &["a"])]),
        &["a", "b"],
    );
    let step = s.on_snapshot(route_to_new_b("1", "1"), now);
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Cluster.type_url(), Endpoint.type_url()]);
    let (cds, eds) = (step.responses[0].clone(), step.responses[1].clone());
    assert_eq!(items(&eds), ["b@1"]);
    // The ACK of b's endpoints repeats what was asked: it shows nothing of b.
    let step = s.on_request(
        &sotw(Endpoint, &["a", "b"], &eds.version_info, &eds.nonce),
        now,
    );
    assert!(
        step.responses.is_empty(),
        "the route waits for the Clusters' ACK"
    );
    let step = s.on_request(&sotw(Cluster, &[], &cds.version_info, &cds.nonce), now);
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Route.type_url()]);
}
