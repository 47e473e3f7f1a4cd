//! The glue's sending of one response: a shared body goes with its head, in order, and
//! the identity's charge comes back once HTTP/2 has taken both.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use tokio::sync::mpsc;

use super::Out;
use crate::config::BudgetConfig;
use crate::xds::stream::test_support::cla;
use crate::xds::wire::ads_server::{Outbound, drain};
use crate::xds::wire::budget::{Budget, Queued};
use crate::xds::wire::frames::{DeltaResponse, Response};
use crate::xds::wire::shared_body::{Bodies, SharedBodies};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use xds_types::XdsType;

#[tokio::test]
async fn a_shared_body_follows_its_head_and_the_charge_comes_back() {
    let budget = Budget::new(
        BudgetConfig {
            total: 1 << 30,
            share: 1 << 20,
            per_pod: 0,
        },
        Gauge::default(),
    );
    let q = Queued::new(budget.account("id", None));
    let (tx, rx) = mpsc::channel(4);
    let out = Out {
        tx,
        queued: Some(q.clone()),
        stop: crate::runtime::Stop::default(),
    };
    let cache = Arc::new(SharedBodies::default());
    let resp = |nonce: &str| DeltaResponse {
        system_version_info: "v".into(),
        type_url: XdsType::Endpoint.type_url(),
        resources: (0..20)
            .map(|i| cla(&format!("e{i:02}"), "1"))
            .collect::<Vec<_>>()
            .into(),
        nonce: nonce.into(),
        bodies: Bodies(Some(cache.clone())),
        ..Default::default()
    };
    // Seen twice: the third goes out with the kept body.
    resp("1").framed();
    resp("2").framed();
    let third = resp("3");
    assert!(matches!(
        third.kept_body(),
        crate::xds::wire::frames::KeptBody::Kept(_)
    ));
    assert!(out.send(&third).await);
    drop(out);

    let mut body = Outbound::new(crate::xds::ads::Frames {
        rx,
        queued: Some(q.clone()),
        open: None,
    });
    let mut wire = Vec::new();
    drain(&mut body, |d| wire.extend_from_slice(&d)).await;
    assert_eq!(
        wire.len(),
        5 + third.encoded_len(),
        "head and body, once each"
    );
    let got = DeltaDiscoveryResponse::decode(&wire[5..]).expect("one message");
    assert_eq!(got.nonce, "3");
    assert_eq!(got.resources.len(), 20);
    assert_eq!((q.held(), budget.used()), (0, 0), "the charge came back");
}
