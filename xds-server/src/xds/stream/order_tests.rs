//! Make-before-break on one ordered stream: a route goes once the Clusters it points at
//! are held, right behind their endpoints (held or sent ahead of it), and not while a
//! Secret or Cluster response is in flight.

use std::time::Instant;

use xds_types::XdsType::{Cluster, Endpoint, Route};

use super::delta::DeltaStream;
use super::delta_tests::{ack, items, subscribe_and_ack};
use super::test_support::*;

/// Synced on cluster `a` and route `r` (version 1, to `a`).
fn synced() -> DeltaStream {
    let mut s = DeltaStream::new(snap(&[
        cluster("a", "1"),
        cla("a", "1"),
        route("r", "1", &["a"]),
    ]));
    subscribe_and_ack(
        &mut s,
        &[(Cluster, &[]), (Endpoint, &["a"]), (Route, &["r"])],
    );
    s
}

/// Route `r` moves onto a new cluster `b` while `a` changes (`route_to_new_b`), so
/// that a's endpoints (`a_sent`) go with the Cluster response: b is held once that is
/// ACKed, but a's endpoints in flight do not let the route go; b's wait for their ACK,
/// and the route follows b's.
fn route_waits_for_bs_own_endpoints(a_cluster: &str, a_endpoints: &str, a_sent: &str) {
    let now = Instant::now();
    let mut s = synced();
    let step = s.on_snapshot(route_to_new_b(a_cluster, a_endpoints), now);
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Cluster.type_url(), Endpoint.type_url()]);
    assert_eq!(items(&step.responses[1]), [a_sent]);
    let (cds, eds_a) = (step.responses[0].clone(), step.responses[1].clone());
    assert!(
        ack(&mut s, &cds).responses.is_empty(),
        "waits for b's endpoints"
    );
    assert!(s.waiting());
    assert!(
        s.on_request(&delta(Endpoint, &["b"], ""), now)
            .responses
            .is_empty()
    );
    let step = ack(&mut s, &eds_a);
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Endpoint.type_url(), Route.type_url()]);
    assert_eq!(items(&step.responses[0]), ["b@1"]);
    assert_eq!(items(&step.responses[1]), ["r@2"]);
}

#[test]
fn other_endpoints_in_flight_do_not_let_a_route_go() {
    // a's endpoints change.
    route_waits_for_bs_own_endpoints("1", "2", "a@2");
}

#[test]
fn a_rewarmed_cluster_and_a_new_one_behind_one_route() {
    // a changes: Envoy re-warms it, so its endpoints go again.
    route_waits_for_bs_own_endpoints("2", "1", "a@1");
}

#[test]
fn a_cluster_in_flight_holds_a_route_back_even_to_clusters_held() {
    let now = Instant::now();
    let mut s = synced();
    // a changes and the route changes too (still to a, which the proxy holds).
    let step = s.on_snapshot(
        snap(&[cluster("a", "2"), cla("a", "1"), route("r", "2", &["a"])]),
        now,
    );
    // Envoy re-warms a: its endpoints again, and the route waits for the CDS ACK.
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Cluster.type_url(), Endpoint.type_url()]);
    let step = ack(&mut s, &step.responses[0]);
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Route.type_url()]);
    assert_eq!(items(&step.responses[0]), ["r@2"]);
}

#[test]
fn a_route_behind_endpoints_that_are_refused_still_holds() {
    let now = Instant::now();
    let mut s = synced();
    let step = s.on_snapshot(route_to_new_b("1", "1"), now);
    ack(&mut s, &step.responses[0]);
    let step = s.on_request(&delta(Endpoint, &["b"], ""), now);
    let (eds, rds) = (step.responses[0].clone(), step.responses[1].clone());
    assert_eq!(items(&rds), ["r@2"]);
    // Envoy warms a Cluster whose endpoints it refused with none: the route it took
    // stays, and the refused endpoints are not sent again.
    let nack = delta_nack(Endpoint, &eds.nonce, "bad endpoints");
    assert!(s.on_request(&nack, now).responses.is_empty());
    assert!(ack(&mut s, &rds).responses.is_empty());
    assert!(!s.waiting());
}

#[test]
fn a_secret_in_flight_holds_a_route_back() {
    use xds_types::XdsType::Secret;
    let now = Instant::now();
    let secret = |v: &str| res(Secret, "default", v, &[]);
    let mut s = DeltaStream::new(snap(&[
        cluster("a", "1"),
        cla("a", "1"),
        route("r", "1", &["a"]),
        secret("1"),
    ]));
    subscribe_and_ack(
        &mut s,
        &[
            (Secret, &["default"]),
            (Cluster, &[]),
            (Endpoint, &["a"]),
            (Route, &["r"]),
        ],
    );
    // The certificate rotates; while it is in flight, the route changes and waits.
    let step = s.on_snapshot(
        snap(&[
            cluster("a", "1"),
            cla("a", "1"),
            route("r", "1", &["a"]),
            secret("2"),
        ]),
        now,
    );
    let sds = step.responses[0].clone();
    assert_eq!(sds.type_url, Secret.type_url());
    let step = s.on_snapshot(
        snap(&[
            cluster("a", "1"),
            cla("a", "1"),
            route("r", "2", &["a"]),
            secret("2"),
        ]),
        now,
    );
    assert!(step.responses.is_empty(), "waits for the SDS ACK");
    let step = ack(&mut s, &sds);
    assert_eq!(items(&step.responses[0]), ["r@2"]);
}

#[test]
fn endpoints_named_apart_from_their_cluster_are_waited_for_by_their_own_name() {
    // As the translator names them: a Cluster `outbound|80||a` whose endpoints (its
    // `service_name`, its one ref) are `a:80`.
    let now = Instant::now();
    let a = res(Cluster, "outbound|80||a", "1", &["a:80"]);
    let b = res(Cluster, "outbound|80||b", "1", &["b:80"]);
    let mut s = DeltaStream::new(snap(&[
        a.clone(),
        cla("a:80", "1"),
        route("r", "1", &["outbound|80||a"]),
    ]));
    subscribe_and_ack(
        &mut s,
        &[(Cluster, &[]), (Endpoint, &["a:80"]), (Route, &["r"])],
    );
    let step = s.on_snapshot(
        snap(&[
            a,
            cla("a:80", "1"),
            b,
            cla("b:80", "1"),
            route("r", "2", &["outbound|80||a", "outbound|80||b"]),
        ]),
        now,
    );
    assert_eq!(items(&step.responses[0]), ["outbound|80||b@1"]);
    assert_eq!(step.responses.len(), 1);
    assert!(
        ack(&mut s, &step.responses[0]).responses.is_empty(),
        "the route waits for b's endpoints"
    );
    let step = s.on_request(&delta(Endpoint, &["b:80"], ""), now);
    let types: Vec<_> = step.responses.iter().map(|r| r.type_url).collect();
    assert_eq!(types, [Endpoint.type_url(), Route.type_url()]);
    assert_eq!(items(&step.responses[0]), ["b:80@1"]);
    assert_eq!(items(&step.responses[1]), ["r@2"]);
}

/// Held cluster `a`, new clusters `b` and `c`, and route `r` at version 2 to `routed`.
fn route_to_new_b_and_c(routed: &[&str]) -> crate::xds::fanout::Desired {
    snap(&[
        cluster("a", "1"),
        cla("a", "1"),
        cluster("b", "1"),
        cla("b", "1"),
        cluster("c", "1"),
        cla("c", "1"),
        route("r", "2", routed),
    ])
}

fn types_of(step: &super::delta::Step) -> Vec<&'static str> {
    step.responses.iter().map(|r| r.type_url).collect()
}

#[test]
fn envoy_asking_for_a_new_clusters_endpoints_before_its_ack_takes_the_route_with_them() {
    // Past its first sync, Envoy asks for a new Cluster's endpoints before it ACKs the
    // Clusters (it ACKs them once the new one has warmed, on its endpoints).
    let now = Instant::now();
    let mut s = synced();
    let step = s.on_snapshot(route_to_new_b("1", "1"), now);
    assert_eq!(types_of(&step), [Cluster.type_url()]);
    let cds = step.responses[0].clone();
    let step = s.on_request(&delta(Endpoint, &["b"], ""), now);
    assert_eq!(types_of(&step), [Endpoint.type_url(), Route.type_url()]);
    assert_eq!(items(&step.responses[0]), ["b@1"]);
    assert_eq!(items(&step.responses[1]), ["r@2"]);
    assert!(ack(&mut s, &cds).responses.is_empty());
    assert!(!s.waiting());
}

#[test]
fn a_route_waits_until_the_proxy_asked_for_every_new_clusters_endpoints() {
    let now = Instant::now();
    let mut s = synced();
    let step = s.on_snapshot(route_to_new_b_and_c(&["a", "b", "c"]), now);
    assert_eq!(items(&step.responses[0]), ["b@1", "c@1"]);
    let step = s.on_request(&delta(Endpoint, &["b"], ""), now);
    assert_eq!(types_of(&step), [Endpoint.type_url()], "c not taken yet");
    let eds_b = step.responses[0].clone();
    assert!(
        s.on_request(&delta(Endpoint, &["c"], ""), now)
            .responses
            .is_empty()
    );
    let step = ack(&mut s, &eds_b);
    assert_eq!(types_of(&step), [Endpoint.type_url(), Route.type_url()]);
    assert_eq!(items(&step.responses[0]), ["c@1"]);
    assert_eq!(items(&step.responses[1]), ["r@2"]);
}

#[test]
fn a_changed_cluster_beside_a_new_one_keeps_the_wait_for_the_ack() {
    // a re-warms beside its old self: nothing the proxy asks for shows it took it.
    let now = Instant::now();
    let mut s = synced();
    let step = s.on_snapshot(route_to_new_b("2", "1"), now);
    assert_eq!(types_of(&step), [Cluster.type_url(), Endpoint.type_url()]);
    let (cds, eds_a) = (step.responses[0].clone(), step.responses[1].clone());
    assert!(
        s.on_request(&delta(Endpoint, &["b"], ""), now)
            .responses
            .is_empty()
    );
    let step = ack(&mut s, &eds_a);
    assert_eq!(types_of(&step), [Endpoint.type_url()]);
    assert_eq!(items(&step.responses[0]), ["b@1"]);
    let step = ack(&mut s, &cds);
    assert_eq!(types_of(&step), [Route.type_url()]);
}

#[test]
fn a_rejected_new_cluster_is_never_shown_taken() {
    let now = Instant::now();
    let mut s = synced();
    let step = s.on_snapshot(route_to_new_b_and_c(&["a", "b", "c"]), now);
    let cds = step.responses[0].clone();
    // Envoy took b and refused c: it asks for b's endpoints only, then NACKs.
    let step = s.on_request(&delta(Endpoint, &["b"], ""), now);
    assert_eq!(types_of(&step), [Endpoint.type_url()]);
    let eds_b = step.responses[0].clone();
    assert!(ack(&mut s, &eds_b).responses.is_empty());
    let nack = delta_nack(Cluster, &cds.nonce, "bad cluster c");
    assert!(
        s.on_request(&nack, now).responses.is_empty(),
        "the route still waits for c"
    );
    assert!(s.waiting());
}

#[test]
fn new_clusters_sharing_endpoints_are_not_shown_taken_by_one_ask() {
    // b and c share endpoints s; Envoy takes b and refuses c: it asks for s once, which
    // says nothing of c.
    let now = Instant::now();
    let mut s = synced();
    let step = s.on_snapshot(
        snap(&[
            cluster("a", "1"),
            cla("a", "1"),
            res(Cluster, "b", "1", &["s"]),
            res(Cluster, "c", "1", &["s"]),
            cla("s", "1"),
            route("r", "2", &["a", "c"]),
        ]),
        now,
    );
    assert_eq!(items(&step.responses[0]), ["b@1", "c@1"]);
    let step = s.on_request(&delta(Endpoint, &["s"], ""), now);
    assert_eq!(types_of(&step), [Endpoint.type_url()], "the route waits");
}

#[test]
fn endpoints_asked_for_before_their_cluster_came_show_nothing() {
    // The proxy asked for b's endpoints before b existed: it cannot ask anew, so the
    // route waits for the Clusters' ACK.
    let now = Instant::now();
    let mut s = synced();
    let step = s.on_request(&delta(Endpoint, &["b"], ""), now);
    for r in step.responses {
        ack(&mut s, &r);
    }
    let step = s.on_snapshot(route_to_new_b("1", "1"), now);
    let cds = step.responses[0].clone();
    assert_eq!(items(&cds), ["b@1"]);
    assert!(!types_of(&step).contains(&Route.type_url()));
    let step = s.on_request(&delta(Endpoint, &["b"], ""), now);
    assert!(!types_of(&step).contains(&Route.type_url()));
    for r in step.responses {
        ack(&mut s, &r);
    }
    let step = ack(&mut s, &cds);
    assert_eq!(types_of(&step), [Route.type_url()]);
}

#[test]
fn every_new_cluster_of_the_response_must_be_asked_for_not_only_the_routes() {
    // The route needs b only, but c came in the same response: until the proxy asks for
    // c's endpoints too, nothing shows it took the response's Clusters.
    let now = Instant::now();
    let mut s = synced();
    let step = s.on_snapshot(route_to_new_b_and_c(&["a", "b"]), now);
    assert_eq!(items(&step.responses[0]), ["b@1", "c@1"]);
    let step = s.on_request(&delta(Endpoint, &["b"], ""), now);
    assert_eq!(types_of(&step), [Endpoint.type_url()], "c not asked for");
    // Once c is asked for, the route goes behind b's endpoints (in flight); c's wait
    // for their ACK.
    let step = s.on_request(&delta(Endpoint, &["c"], ""), now);
    assert_eq!(types_of(&step), [Route.type_url()]);
    assert_eq!(items(&step.responses[0]), ["r@2"]);
}
