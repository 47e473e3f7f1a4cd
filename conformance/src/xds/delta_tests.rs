//! The delta machine against a fake converter: subscriptions, ACK/NACK, removals,
//! reconnect with initial versions.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use xds_types::XdsType;

use super::delta::Delta;
use super::fake;
use crate::stats::Stats;

fn machine() -> (Delta, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let node = Node {
        id: "p0.ns".into(),
        ..Node::default()
    };
    (Delta::new(node, fake::convert, stats.clone()), stats)
}

fn resp(
    ty: XdsType,
    nonce: &str,
    items: &[(&str, &str, &str)],
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        resources: items
            .iter()
            .map(|(name, version, text)| Resource {
                name: (*name).into(),
                version: (*version).into(),
                resource: Some(fake::any(ty, text)),
                ..Resource::default()
            })
            .collect(),
        type_url: ty.type_url().into(),
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        nonce: nonce.into(),
        ..DeltaDiscoveryResponse::default()
    }
}

fn of(reqs: &[DeltaDiscoveryRequest], ty: XdsType) -> Vec<&DeltaDiscoveryRequest> {
    reqs.iter()
        .filter(|r| r.type_url == ty.type_url())
        .collect()
}

fn held(m: &Delta, ty: XdsType) -> Vec<String> {
    m.core.held[ty].keys().cloned().collect()
}

#[test]
fn subscribes_wildcard_then_named_and_unsubscribes_what_is_no_longer_named() {
    let (mut m, _) = machine();
    let first = m.connect();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|r| r.resource_names_subscribe.is_empty()));
    assert!(first[0].node.is_some() && first[1].node.is_none());

    let step = m.on_response(resp(
        XdsType::Listener,
        "n1",
        &[("L", "1", "L|rds=R1,R2"), ("M", "1", "M|rds=R3")],
        &[],
    ));
    // What the listeners name is subscribed before the ACK, as Envoy sends them.
    let ack = step.requests.last().expect("an answer");
    assert_eq!(ack.response_nonce, "n1");
    assert!(ack.error_detail.is_none());
    assert_eq!(step.requests[0].type_url, XdsType::Route.type_url());
    assert_eq!(
        of(&step.requests, XdsType::Route)[0].resource_names_subscribe,
        ["R1", "R2", "R3"]
    );
    m.on_response(resp(
        XdsType::Route,
        "n2",
        &[("R1", "1", "R1"), ("R2", "1", "R2"), ("R3", "1", "R3")],
        &[],
    ));
    let step = m.on_response(resp(XdsType::Listener, "n3", &[], &["M"]));
    assert_eq!(held(&m, XdsType::Listener), ["L"]);
    assert_eq!(held(&m, XdsType::Route), ["R1", "R2"]);
    let rds = of(&step.requests, XdsType::Route)[0];
    assert!(rds.resource_names_subscribe.is_empty());
    assert_eq!(rds.resource_names_unsubscribe, ["R3"]);

    let step = m.on_response(resp(XdsType::Cluster, "n4", &[("C", "1", "C|eds=S")], &[]));
    assert_eq!(
        of(&step.requests, XdsType::Endpoint)[0].resource_names_subscribe,
        ["S"]
    );
    assert!(!m.ready());
    m.on_response(resp(XdsType::Endpoint, "n5", &[("S", "1", "S")], &[]));
    assert!(m.ready());
}

#[test]
fn nack_keeps_the_last_good_and_duplicates_or_wrong_types_are_refused() {
    let (mut m, stats) = machine();
    m.connect();
    m.on_response(resp(XdsType::Cluster, "n1", &[("A", "1", "A")], &[]));
    let step = m.on_response(resp(
        XdsType::Cluster,
        "n2",
        &[("A", "2", "bad:A"), ("B", "1", "B")],
        &[],
    ));
    let detail = step.requests[0].error_detail.as_ref().expect("a NACK");
    assert!(
        detail.message.contains("A: field: refused"),
        "{}",
        detail.message
    );
    assert_eq!(step.requests[0].response_nonce, "n2");
    assert_eq!(held(&m, XdsType::Cluster), ["A", "B"]);
    assert_eq!(m.core.held[XdsType::Cluster]["A"].raw.version, "1");

    let step = m.on_response(resp(
        XdsType::Cluster,
        "n3",
        &[("D", "1", "D"), ("D", "2", "D")],
        &[],
    ));
    assert!(step.requests[0].error_detail.is_some());
    assert!(!held(&m, XdsType::Cluster).contains(&"D".to_string()));

    // The envelope's name must be the resource's.
    let step = m.on_response(resp(XdsType::Cluster, "n4", &[("E", "1", "F")], &[]));
    assert!(step.requests[0].error_detail.is_some());

    let mut wrong = resp(XdsType::Cluster, "n5", &[], &[]);
    wrong.type_url = "type.googleapis.com/x.Y".into();
    assert!(m.on_response(wrong).requests[0].error_detail.is_some());
    assert_eq!(stats.counter("control_plane.rudder_nacks_total").get(), 4);
}

#[test]
fn a_reconnect_sends_initial_resource_versions() {
    let (mut m, _) = machine();
    m.connect();
    m.on_response(resp(
        XdsType::Listener,
        "n1",
        &[("L", "v3", "L|rds=R1")],
        &[],
    ));
    m.on_response(resp(XdsType::Route, "n2", &[("R1", "v9", "R1")], &[]));
    let again = m.connect();
    let lds = of(&again, XdsType::Listener)[0];
    assert_eq!(
        lds.initial_resource_versions.get("L").map(String::as_str),
        Some("v3")
    );
    let rds = of(&again, XdsType::Route)[0];
    assert_eq!(rds.resource_names_subscribe, ["R1"]);
    assert_eq!(
        rds.initial_resource_versions.get("R1").map(String::as_str),
        Some("v9")
    );
    assert!(again[0].node.is_some());
}
