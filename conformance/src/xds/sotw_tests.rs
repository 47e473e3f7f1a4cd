//! The SotW machine against a fake converter: subscriptions, ACK/NACK, removals.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use xds_types::XdsType;

use super::fake;
use super::sotw::Sotw;
use crate::stats::Stats;

fn machine() -> (Sotw, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let node = Node {
        id: "p0.ns".into(),
        ..Node::default()
    };
    (Sotw::new(node, fake::convert, stats.clone()), stats)
}

fn resp(ty: XdsType, version: &str, nonce: &str, texts: &[&str]) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources: texts.iter().map(|t| fake::any(ty, t)).collect(),
        type_url: ty.type_url().into(),
        nonce: nonce.into(),
        ..DiscoveryResponse::default()
    }
}

fn of(reqs: &[DiscoveryRequest], ty: XdsType) -> Vec<&DiscoveryRequest> {
    reqs.iter()
        .filter(|r| r.type_url == ty.type_url())
        .collect()
}

fn held(m: &Sotw, ty: XdsType) -> Vec<String> {
    m.core.held[ty].keys().cloned().collect()
}

#[test]
fn subscribes_wildcard_then_follows_named_references_until_ready() {
    let (mut m, stats) = machine();
    let first = m.connect();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].type_url, XdsType::Cluster.type_url());
    assert_eq!(first[1].type_url, XdsType::Listener.type_url());
    assert!(first.iter().all(|r| r.resource_names.is_empty()));
    assert!(first[0].node.is_some() && first[1].node.is_none());

    let step = m.on_response(resp(
        XdsType::Listener,
        "l1",
        "n1",
        &["L|rds=R1,R2|agent=default|ads=ROOTCA"],
    ));
    // What the listener names is requested before the ACK, as Envoy sends them.
    let ack = step.requests.last().expect("an answer");
    assert_eq!(ack.type_url, XdsType::Listener.type_url());
    assert_eq!(ack.version_info, "l1");
    assert_eq!(ack.response_nonce, "n1");
    assert!(ack.error_detail.is_none());
    assert_ne!(step.requests[0].type_url, XdsType::Listener.type_url());
    let rds = of(&step.requests, XdsType::Route);
    assert_eq!(rds[0].resource_names, ["R1", "R2"]);
    let sds = of(&step.requests, XdsType::Secret);
    assert_eq!(sds[0].resource_names, ["ROOTCA"]);
    assert_eq!(
        m.core.refs.agent_secrets.iter().collect::<Vec<_>>(),
        ["default"]
    );
    assert_eq!(step.changes.len(), 1);
    assert!(!m.ready());

    m.on_response(resp(XdsType::Route, "r1", "n2", &["R1", "R2", "R3"]));
    assert_eq!(
        held(&m, XdsType::Route),
        ["R1", "R2"],
        "R3 was not asked for"
    );
    m.on_response(resp(XdsType::Secret, "s1", "n3", &["ROOTCA"]));
    let step = m.on_response(resp(XdsType::Cluster, "c1", "n4", &["C|eds=S", "D"]));
    assert_eq!(
        of(&step.requests, XdsType::Endpoint)[0].resource_names,
        ["S"]
    );
    assert_eq!(stats.gauge("cluster_manager.warming_clusters").get(), 1);
    assert!(!m.ready(), "endpoints of C outstanding");
    m.on_response(resp(XdsType::Endpoint, "e1", "n5", &["S"]));
    assert!(m.ready());
    assert_eq!(stats.gauge("cluster_manager.active_clusters").get(), 2);
    assert_eq!(stats.counter("cluster.C.update_success").get(), 1);
    assert_eq!(stats.counter("http.L_http.rds.R1.update_success").get(), 1);
    assert_eq!(stats.counter("sds.ROOTCA.update_success").get(), 1);
    assert_eq!(
        stats.counter("listener_manager.lds.update_success").get(),
        1
    );
    // Initialized once, as Envoy: a later cluster still warming does not undo it, and
    // the warming gauge follows it.
    m.on_response(resp(
        XdsType::Cluster,
        "c2",
        "n6",
        &["C|eds=S", "D", "E|eds=T"],
    ));
    assert!(m.ready());
    assert_eq!(stats.gauge("cluster_manager.warming_clusters").get(), 1);
    m.on_response(resp(XdsType::Endpoint, "e2", "n7", &["S", "T"]));
    assert_eq!(stats.gauge("cluster_manager.warming_clusters").get(), 0);
    assert_eq!(stats.gauge("cluster_manager.active_clusters").get(), 3);
}

#[test]
fn a_listener_removed_from_the_full_set_drops_its_routes() {
    let (mut m, _) = machine();
    m.connect();
    m.on_response(resp(
        XdsType::Listener,
        "l1",
        "n1",
        &["L|rds=R1", "M|rds=R2"],
    ));
    m.on_response(resp(XdsType::Route, "r1", "n2", &["R1", "R2"]));
    let step = m.on_response(resp(XdsType::Listener, "l2", "n3", &["M|rds=R2"]));
    assert_eq!(held(&m, XdsType::Listener), ["M"]);
    assert_eq!(held(&m, XdsType::Route), ["R2"]);
    assert_eq!(of(&step.requests, XdsType::Route)[0].resource_names, ["R2"]);
    let removed: Vec<_> = step
        .changes
        .iter()
        .filter(|c| c.value.is_none())
        .map(|c| (c.ty, c.name.as_str()))
        .collect();
    assert!(removed.contains(&(XdsType::Listener, "L")));
    assert!(removed.contains(&(XdsType::Route, "R1")));
}

#[test]
fn an_invalid_resource_is_nacked_and_its_last_good_version_kept() {
    let (mut m, stats) = machine();
    m.connect();
    m.on_response(resp(XdsType::Cluster, "c1", "n1", &["A", "B"]));
    let step = m.on_response(resp(XdsType::Cluster, "c2", "n2", &["bad:A", "B", "C"]));
    let nack = &step.requests[0];
    assert_eq!(
        nack.version_info, "c1",
        "a NACK names the last accepted version"
    );
    assert_eq!(nack.response_nonce, "n2");
    let detail = nack.error_detail.as_ref().expect("a NACK");
    assert_eq!(detail.code, 3);
    assert!(
        detail.message.contains("A: field: refused"),
        "{}",
        detail.message
    );
    assert_eq!(
        held(&m, XdsType::Cluster),
        ["A", "B", "C"],
        "A keeps its last good"
    );
    assert_eq!(m.core.held[XdsType::Cluster]["A"].raw.version, "c1");
    assert_eq!(m.core.held[XdsType::Cluster]["C"].raw.version, "c2");
    assert_eq!(
        stats.counter("cluster_manager.cds.update_rejected").get(),
        1
    );
    assert_eq!(stats.counter("control_plane.rudder_nacks_total").get(), 1);
}

#[test]
fn duplicate_names_and_unknown_types_are_nacked_whole() {
    let (mut m, stats) = machine();
    m.connect();
    let step = m.on_response(resp(XdsType::Listener, "l1", "n1", &["L", "L"]));
    let detail = step.requests[0].error_detail.as_ref().expect("a NACK");
    assert!(detail.message.contains("duplicate"), "{}", detail.message);
    assert!(held(&m, XdsType::Listener).is_empty());
    assert!(step.changes.is_empty());

    let mut wrong = resp(XdsType::Listener, "x", "n2", &["L"]);
    wrong.type_url = "type.googleapis.com/envoy.config.core.v3.Nothing".into();
    let step = m.on_response(wrong);
    assert!(step.requests[0].error_detail.is_some());
    assert!(held(&m, XdsType::Listener).is_empty());

    // Routes were never subscribed: a response of them is refused too.
    let step = m.on_response(resp(XdsType::Route, "r", "n3", &["R"]));
    assert!(step.requests[0].error_detail.is_some());
    assert_eq!(stats.counter("control_plane.rudder_nacks_total").get(), 3);
}

#[test]
fn a_resource_of_another_type_inside_a_response_refuses_it_whole() {
    let (mut m, _) = machine();
    m.connect();
    m.on_response(resp(XdsType::Listener, "l1", "n1", &["L"]));
    // As Envoy's mux: the response is refused before any resource is applied, so the
    // full set's missing L is not a removal and the new M is not taken.
    let mut r = resp(XdsType::Listener, "l2", "n2", &["M"]);
    r.resources.push(fake::any(XdsType::Cluster, "C"));
    let step = m.on_response(r);
    assert!(step.requests[0].error_detail.is_some());
    assert!(step.changes.is_empty(), "{:?}", step.changes);
    assert_eq!(held(&m, XdsType::Listener), ["L"]);
    // Only a resource of the wrong type: still nothing removed.
    let mut r = resp(XdsType::Listener, "l3", "n3", &[]);
    r.resources.push(fake::any(XdsType::Cluster, "C"));
    let step = m.on_response(r);
    assert!(step.requests[0].error_detail.is_some());
    assert_eq!(held(&m, XdsType::Listener), ["L"]);
}

#[test]
fn a_reconnect_resends_the_versions_and_names_held() {
    let (mut m, _) = machine();
    m.connect();
    m.on_response(resp(XdsType::Listener, "l7", "n1", &["L|rds=R1"]));
    m.on_response(resp(XdsType::Route, "r3", "n2", &["R1"]));
    let again = m.connect();
    let lds = of(&again, XdsType::Listener)[0];
    assert_eq!(lds.version_info, "l7");
    assert_eq!(lds.response_nonce, "", "nonces do not survive a stream");
    let rds = of(&again, XdsType::Route)[0];
    assert_eq!(
        (rds.version_info.as_str(), rds.resource_names.clone()),
        ("r3", vec!["R1".to_string()])
    );
    assert!(again[0].node.is_some(), "the node again on a new stream");
    assert_eq!(held(&m, XdsType::Route), ["R1"], "kept while disconnected");
}
