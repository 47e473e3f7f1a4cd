//! Gateway API routes (GAMMA) through the Kubernetes path: the real watchers against the
//! fake API server (with and without the Gateway API CRDs), routes in what a proxy receives,
//! and status written per Service parent.

mod kube_common;

use kube_common::*;

/// Rudder's entries in a route's `status.parents`: (type, status, reason).
fn route_conditions(fake: &FakeKube, kind: &str, name: &str) -> Vec<(String, String, String)> {
    let Some(obj) = fake.get("gateway.networking.k8s.io/v1", kind, "default", name) else {
        return Vec::new();
    };
    obj["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] == "rudder.dev/mesh")
        .flat_map(|p| p["conditions"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn http_route(name: &str, parent: &str, backends: Value) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": parent, "port": 80},
                                   {"name": "public-gateway"}],
                    "rules": [{"backendRefs": backends}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_route_their_service_and_report_status_per_parent() -> anyhow::Result<()> {
    let fake = FakeKube::new();
    for s in ["web", "web-v1", "web-v2"] {
        fake.apply(service(s, &[80]));
    }
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client-0", "namespace": "default", "labels": {"app": "client"}},
                      "spec": {"containers": [{"name": "app"}]}, "status": {"podIP": "127.0.0.9"}}));
    fake.apply(split(&[("web-v1", 1)]));
    let mut route = http_route(
        "web",
        "web",
        json!([{"name": "web-v1", "port": 80, "weight": 3}, {"name": "web-v2", "port": 80, "weight": 1},
               {"name": "web-v3", "port": 80}]),
    );
    // Another controller's entry (the gateway parent's) must survive Rudder's writes.
    route["status"] = json!({"parents": [{"parentRef": {"name": "public-gateway"}, "controllerName": "example.com/gateway",
                                          "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]});
    fake.apply(route);
    let (_store, mut xds) = serve(&fake).await?;
    xds.subscribe(XdsType::Route, vec![translator::OUTBOUND_ROUTE.into()])
        .await?;
    let held = |c: &XdsClient| {
        c.held
            .get(&XdsType::Route)
            .and_then(|m| m.get(translator::OUTBOUND_ROUTE))
            .cloned()
            .unwrap_or_default()
    };
    xds.until("the route's weights", |c| {
        shares(&held(c), "web:80").len() == 3
    })
    .await?;
    // The missing backend keeps its share, which fails.
    let got = shares(&held(&xds), "web:80");
    assert_eq!(got["web-v1"], 0.6, "{got:?}");
    assert_eq!(got["rudder-no-backend"], 0.2, "{got:?}");
    eventually("route status", || {
        route_conditions(&fake, "HTTPRoute", "web")
            == vec![
                ("Accepted".into(), "True".into(), "Accepted".into()),
                (
                    "ResolvedRefs".into(),
                    "False".into(),
                    "BackendNotFound".into(),
                ),
            ]
    })
    .await?;
    let obj = fake
        .get(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "default",
            "web",
        )
        .expect("route");
    let parents = obj["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(parents.len(), 2, "{parents:?}");
    assert_eq!(parents[0]["controllerName"], "example.com/gateway");
    assert_eq!(
        parents[1]["parentRef"],
        json!({"group": "", "kind": "Service", "name": "web", "port": 80})
    );
    eventually("the TrafficSplit is Conflicted", || {
        condition(
            &fake,
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            "canary",
            "Accepted",
        )
        .is_some_and(|(s, r, m)| {
            s == "False" && r == "Conflicted" && m.contains("HTTPRoute default/web")
        })
    })
    .await?;
    // A route using a filter Rudder does not implement is refused by name, for every
    // Service parent; the last good version keeps routing.
    let mut bad = http_route("web", "web", json!([{"name": "web-v2", "port": 80}]));
    bad["spec"]["rules"][0]["filters"] =
        json!([{"type": "ExtensionRef", "extensionRef": {"group": "g", "kind": "K", "name": "e"}}]);
    fake.apply(bad);
    eventually("UnsupportedValue", || {
        route_conditions(&fake, "HTTPRoute", "web")
            .first()
            .is_some_and(|c| c.1 == "False" && c.2 == "UnsupportedValue")
    })
    .await?;
    // Whatever the control plane sends in the next second is read: the last good route
    // is what the client still holds.
    let _ = xds
        .until_within("anything more", Duration::from_secs(1), |_| false)
        .await;
    assert_eq!(shares(&held(&xds), "web:80")["web-v1"], 0.6);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gateway_api_crds_rudder_runs_and_picks_them_up_once_installed()
-> anyhow::Result<()> {
    let fake = FakeKube::new();
    fake.set_gateway_api(false);
    for s in ["web", "web-v2"] {
        fake.apply(service(s, &[80]));
    }
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client-0", "namespace": "default", "labels": {"app": "client"}},
                      "spec": {"containers": [{"name": "app"}]}, "status": {"podIP": "127.0.0.9"}}));
    // `serve` waits for every watcher's first list: it returns although two of them
    // get 404.
    let (_store, mut xds) = serve(&fake).await?;
    xds.subscribe(XdsType::Route, vec![translator::OUTBOUND_ROUTE.into()])
        .await?;
    xds.until("routes served", |c| {
        c.held
            .get(&XdsType::Route)
            .is_some_and(|m| m.contains_key(translator::OUTBOUND_ROUTE))
    })
    .await?;
    // Installed later, with a route: it takes effect without a restart (the watchers
    // retry with backoff, up to about 30 s).
    fake.set_gateway_api(true);
    fake.apply(http_route(
        "web",
        "web",
        json!([{"name": "web", "port": 80, "weight": 1}, {"name": "web-v2", "port": 80, "weight": 1}]),
    ));
    xds.until_within(
        "the route after the CRDs were installed",
        Duration::from_secs(60),
        |c| {
            let route = c
                .held
                .get(&XdsType::Route)
                .and_then(|m| m.get(translator::OUTBOUND_ROUTE))
                .cloned()
                .unwrap_or_default();
            shares(&route, "web:80").len() == 2
        },
    )
    .await?;
    Ok(())
}
