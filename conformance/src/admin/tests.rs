//! The admin pages' text and JSON, from a published snapshot and stats.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as PbCluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
use envoy_types::pb::google::protobuf::Any;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use prost::Message;
use tokio::sync::watch;
use xds_types::XdsType;

use super::Admin;
use crate::config::cluster::{Endpoint, LoadAssignment, Locality};
use crate::convert::Converted;
use crate::live::Live;
use crate::stats::Stats;
use crate::xds::{Change, Dump, Held, Publisher, RawEntry, fake};

fn admin() -> (Admin, Publisher) {
    let live = Arc::new(Live::default());
    let dump = Arc::new(Dump::default());
    let stats = Arc::new(Stats::default());
    let publisher = Publisher::new(live.clone(), dump.clone());
    let admin = Admin {
        live,
        stats,
        dump,
        quit: watch::Sender::new(false),
    };
    (admin, publisher)
}

fn held(any: Any, value: Converted) -> Held {
    Held {
        raw: RawEntry {
            any,
            version: "v1".into(),
            updated: SystemTime::now(),
        },
        value,
    }
}

fn publish(p: &Publisher) {
    let (_, cluster) = fake::convert(
        XdsType::Cluster,
        &fake::any(XdsType::Cluster, "web|eds=web-svc"),
    )
    .expect("fake cluster");
    let pb = PbCluster {
        name: "web".into(),
        eds_cluster_config: Some(EdsClusterConfig {
            service_name: "web-svc".into(),
            ..EdsClusterConfig::default()
        }),
        ..PbCluster::default()
    };
    let any = Any {
        type_url: XdsType::Cluster.type_url().into(),
        value: pb.encode_to_vec(),
    };
    let endpoints = LoadAssignment {
        name: "web-svc".into(),
        localities: vec![Locality {
            weight: 1,
            endpoints: vec![Endpoint {
                address: "10.0.0.7:8080".parse().expect("addr"),
                healthy: true,
                weight: 1,
                transport_match: Vec::new(),
            }],
            ..Locality::default()
        }],
    };
    p.apply(&[
        Change {
            ty: XdsType::Cluster,
            name: "web".into(),
            value: Some(held(any, cluster)),
        },
        Change {
            ty: XdsType::Endpoint,
            name: "web-svc".into(),
            value: Some(held(Any::default(), Converted::Endpoints(endpoints))),
        },
    ]);
}

async fn get(a: &Admin, path_query: &str) -> (StatusCode, String) {
    let (path, q) = path_query.split_once('?').unwrap_or((path_query, ""));
    let query: HashMap<String, String> = super::parse_query(q);
    let r = a.route(&Method::GET, path, &query);
    let status = r.status();
    let body = r.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn ready_says_live_only_once_ready() {
    let (a, _) = admin();
    assert_eq!(
        get(&a, "/ready").await,
        (StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n".into())
    );
    a.live.set_ready();
    assert_eq!(get(&a, "/ready").await, (StatusCode::OK, "LIVE\n".into()));
}

#[tokio::test]
async fn stats_are_sorted_name_value_lines_and_filter_by_regex() {
    let (a, _) = admin();
    a.stats
        .counter("listener_manager.lds.update_success")
        .add(2);
    a.stats.gauge("control_plane.connected_state").set(1);
    a.stats.counter("cluster_manager.cds.update_success").inc();
    let (_, all) = get(&a, "/stats").await;
    assert_eq!(
        all,
        "cluster_manager.cds.update_success: 1\ncontrol_plane.connected_state: 1\nlistener_manager.lds.update_success: 2\n"
    );
    let (_, some) = get(&a, "/stats?filter=%5Elistener_manager%5C.lds%5C..*%24").await;
    assert_eq!(some, "listener_manager.lds.update_success: 2\n");
    let (status, _) = get(&a, "/stats?filter=(").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, prom) = get(&a, "/stats/prometheus").await;
    assert!(prom.contains("# TYPE envoy_control_plane_connected_state gauge\nenvoy_control_plane_connected_state 1\n"), "{prom}");
}

#[tokio::test]
async fn clusters_lists_each_endpoint_as_envoy_does() {
    let (a, p) = admin();
    publish(&p);
    a.stats
        .counter("cluster.web.endpoint.10.0.0.7:8080.cx_total")
        .add(3);
    let (_, text) = get(&a, "/clusters").await;
    assert!(text.starts_with("web::observability_name::web\n"), "{text}");
    assert!(text.contains("web::10.0.0.7:8080::cx_total::3\n"), "{text}");
    assert!(
        text.contains("web::10.0.0.7:8080::health_flags::healthy\n"),
        "{text}"
    );
}

#[tokio::test]
async fn config_dump_has_envoys_shape_and_filters_by_resource() {
    let (a, p) = admin();
    publish(&p);
    let (_, text) = get(&a, "/config_dump").await;
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let clusters = v["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.ClustersConfigDump")
        .expect("a clusters dump");
    let dynamic = &clusters["dynamic_active_clusters"][0];
    assert_eq!(dynamic["version_info"], "v1");
    assert_eq!(dynamic["cluster"]["name"], "web");
    assert_eq!(
        dynamic["cluster"]["eds_cluster_config"]["service_name"], "web-svc",
        "proto field names, as Envoy's dump"
    );
    assert!(
        dynamic["last_updated"]
            .as_str()
            .expect("time")
            .ends_with('Z')
    );
    assert!(
        !text.contains("EndpointsConfigDump"),
        "endpoints only with include_eds"
    );
    let (_, eds) = get(&a, "/config_dump?include_eds").await;
    assert!(eds.contains("EndpointsConfigDump"));
    let (_, one) = get(&a, "/config_dump?resource=dynamic_active_clusters").await;
    let v: serde_json::Value = serde_json::from_str(&one).expect("JSON");
    assert_eq!(
        v["configs"][0]["@type"],
        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster"
    );
    assert!(one.contains("\"cluster\": {"), "pretty-printed as Envoy's");
    let (status, _) = get(&a, "/config_dump?resource=nothing").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[test]
fn timestamps_are_rfc3339() {
    assert_eq!(super::dump::rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        super::dump::rfc3339(1_796_562_812, 985),
        "2026-12-06T13:13:32.985Z"
    );
}

#[tokio::test]
async fn quitquitquit_takes_only_post() {
    let (a, _) = admin();
    let (status, body) = get(&a, "/quitquitquit").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body, "Method GET not allowed, POST required.");
    assert!(!*a.quit.borrow(), "a GET must not stop the proxy");
    let r = a.route(&Method::POST, "/quitquitquit", &HashMap::new());
    assert_eq!(r.status(), StatusCode::OK);
    assert!(*a.quit.borrow());
}
