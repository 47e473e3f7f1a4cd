//! One tenant's bad policy stays its own problem, and one proxy's word stays its own. A
//! real Envoy rejects a route made from a valid TrafficSplit (this Envoy's runtime allows
//! only tiny regexes); the control plane leaves that split out for that proxy's identity
//! only, re-sends the rest, and a live route change for another Service reaches every
//! proxy, the strict one included, with no failed requests. A hostile proxy that rejects
//! another namespace's policy loses it alone, and only while it is connected.

mod common;

use std::time::Duration;

use common::{CONVERGE, Mesh, Traffic};
use testbed::procs::{DataPlane, Sidecar, Stream, wait_until};

/// A route group and a split that use a regex this test's client Envoy refuses (its
/// runtime sets `re2.max_program_size.error_level` to 3; the default is 100).
const AB_TEST: &str = "apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: beta}
spec:
  matches: [{name: beta, pathRegex: \"/beta/[a-z]+[0-9]*\"}]
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: web-ab}
spec:
  service: web
  backends: [{service: web, weight: 100}]
  matches: [{kind: HTTPRouteGroup, name: beta, apiGroup: specs.smi-spec.io}]
";

fn strict_regexes(bootstrap: &mut serde_json::Value) {
    bootstrap["layered_runtime"] = serde_json::json!({
        "layers": [{"name": "strict", "static_layer": {"re2.max_program_size.error_level": 3}}]
    });
}

async fn route_dump(envoy: &Sidecar) -> anyhow::Result<String> {
    envoy
        .admin_get("/config_dump?resource=dynamic_route_configs")
        .await
}

/// Route updates the sidecar refused: of its outbound table (whole, or apart), and of
/// the table's virtual hosts apart (VHDS, delta).
async fn routes_rejected(envoy: &testbed::procs::Sidecar) -> anyhow::Result<u64> {
    let mut n = 0;
    for stat in [
        "http.outbound.rds.outbound.update_rejected",
        "http.outbound.rds.outbound-vhds.update_rejected",
        "http.outbound.rds.vhds.outbound-vhds.update_rejected",
    ] {
        n += envoy.stat(stat).await?.unwrap_or(0);
    }
    Ok(n)
}

async fn a_rejected_split_is_left_out_and_other_routes_flow(stream: Stream) -> anyhow::Result<()> {
    let mesh = Mesh::start_custom(DataPlane::Envoy, stream, &[], strict_regexes).await?;
    let traffic = Traffic::start(mesh.client.outbound, "web");
    let client = &mesh.client;
    let rejected_before = routes_rejected(client).await?;

    mesh.write("ab-test.yaml", AB_TEST)?;
    wait_until(
        CONVERGE,
        "the strict client to reject the split",
        || async move { Ok(routes_rejected(client).await? > rejected_before) },
    )
    .await?;
    let cp = &mesh.cp;
    wait_until(CONVERGE, "the split to be left out", || async move {
        Ok(rejected_by_proxies(
            &cp.log_text(),
            "TrafficSplit default/web-ab",
        ))
    })
    .await?;

    // A live change for another Service reaches every proxy, the strict one included.
    mesh.write(
        "fast-retries.yaml",
        "apiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {name: fast}\nspec:\n  targetRef: {name: fast}\n  timeout: 7s\n",
    )?;
    for envoy in std::iter::once(&mesh.client).chain(mesh.sidecars.values()) {
        let waited = wait_until(
            CONVERGE,
            "the fast route change everywhere",
            || async move { Ok(route_dump(envoy).await?.contains("\"timeout\": \"7s\"")) },
        )
        .await;
        if let Err(e) = waited {
            anyhow::bail!(
                "{e:#}\n{}\ncontrol plane log:\n{}",
                route_dump(envoy).await?,
                mesh.cp.log_text()
            );
        }
    }
    assert!(
        !route_dump(&mesh.client).await?.contains("/beta/"),
        "the strict client holds no route from the left-out split"
    );
    // Only the strict client's identity left it out: the sidecars (other identities,
    // default limits) accepted it and keep it.
    for envoy in mesh.sidecars.values() {
        assert!(
            route_dump(envoy).await?.contains("/beta/"),
            "a sidecar that accepted the split keeps it"
        );
    }

    // Fixing the object (no regex) brings it back for everyone.
    mesh.write(
        "ab-test.yaml",
        &AB_TEST.replace(
            "  matches: [{kind: HTTPRouteGroup, name: beta, apiGroup: specs.smi-spec.io}]\n",
            "",
        ),
    )?;
    let client = &mesh.client;
    wait_until(
        CONVERGE,
        "the fixed split on the strict client",
        || async move { Ok(route_dump(client).await?.contains("weighted_clusters")) },
    )
    .await?;

    tokio::time::sleep(Duration::from_millis(200)).await;
    let results = traffic.stop().await;
    assert!(
        results.failures.is_empty(),
        "requests failed: {:?}",
        results.failures
    );
    assert!(results.ok > 20, "traffic flowed: {results:?}");
    Ok(())
}

#[tokio::test]
async fn delta_a_rejected_split_is_left_out_and_other_routes_flow() -> anyhow::Result<()> {
    a_rejected_split_is_left_out_and_other_routes_flow(Stream::Delta).await
}

#[tokio::test]
async fn sotw_a_rejected_split_is_left_out_and_other_routes_flow() -> anyhow::Result<()> {
    a_rejected_split_is_left_out_and_other_routes_flow(Stream::Sotw).await
}

#[tokio::test]
async fn a_bad_split_present_at_start_is_found_by_search() -> anyhow::Result<()> {
    // The bad split and a good policy are there before any proxy connects: no proxy
    // holds an accepted route to diff against, so the control plane has to search.
    let mesh = Mesh::start_custom(DataPlane::Envoy, Stream::Delta, &[], strict_regexes).await?;
    mesh.write(
        "all.yaml",
        &format!(
            "{AB_TEST}---\napiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {{name: fast}}\nspec:\n  targetRef: {{name: fast}}\n  timeout: 7s\n"
        ),
    )?;
    let client = &mesh.client;
    let held = wait_until(
        CONVERGE,
        "the client to hold the good policy and not the bad one",
        || async move {
            let dump = route_dump(client).await?;
            Ok(dump.contains("\"timeout\": \"7s\"") && !dump.contains("/beta/"))
        },
    )
    .await;
    if let Err(e) = held {
        anyhow::bail!("{e:#}\n{}", mesh.cp.log_text());
    }
    let cp = &mesh.cp;
    wait_until(CONVERGE, "the split to be named", || async move {
        Ok(rejected_by_proxies(
            &cp.log_text(),
            "TrafficSplit default/web-ab",
        ))
    })
    .await?;
    // Only the split is blamed: the good policy was at most implicated while the search
    // ran, and never lost Accepted.
    let log = mesh.cp.log_text();
    let blamed: Vec<_> = log_lines(&log, "RetryPolicy default/fast")
        .into_iter()
        .filter(|l| {
            l["condition"] == "RejectedByProxies"
                || (l["condition"] == "Accepted" && l["reason"] != "Accepted")
        })
        .collect();
    assert!(
        blamed.is_empty(),
        "the unrelated policy was blamed: {blamed:?}"
    );
    Ok(())
}

/// The owner's policies in `default`: a retry timeout and a header filter on `web`.
const OWNER_POLICY: &str = "apiVersion: policy.rudder.dev/v1alpha1
kind: RetryPolicy
metadata: {name: web-retries, namespace: default}
spec:
  targetRef: {kind: Service, name: web}
  timeout: 9s
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-headers, namespace: default}
spec:
  parentRefs:
    - {group: \"\", kind: Service, name: web, port: 80}
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            add: [{name: x-owner, value: default-team}]
      backendRefs:
        - {name: web, port: 80}
";

/// Whether a raw client's route table holds both of the owner's policies.
fn holds_owner_policy(r: &testbed::xds_client::Received) -> bool {
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use prost::Message;
    let text = r
        .resources
        .get(&(
            testbed::xds_client::ROUTE.to_string(),
            "outbound".to_string(),
        ))
        .and_then(|a| RouteConfiguration::decode(a.value.as_slice()).ok())
        .map(|rc| format!("{rc:?}"))
        .unwrap_or_default();
    text.contains("x-owner") && text.contains("seconds: 9,")
}

/// Whether the log says `object` has a `RejectedByProxies` condition.
fn rejected_by_proxies(log: &str, object: &str) -> bool {
    log_lines(log, object)
        .iter()
        .any(|l| l["condition"] == "RejectedByProxies" && l["reason"] == "Rejected")
}

/// The control plane's JSON log lines about `object`.
fn log_lines(log: &str, object: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["object"] == object)
        .collect()
}

#[tokio::test]
async fn a_proxy_rejecting_another_namespaces_policy_cannot_take_it_from_its_neighbours()
-> anyhow::Result<()> {
    // Issue 21, finding 4: a proxy in `evil` with its own valid certificate NACKs every
    // route table holding the owner's RetryPolicy and HTTPRoute header filter.
    use testbed::xds_client::{Creds, ROUTE, RawAds, node};
    let mesh = Mesh::start(DataPlane::Envoy, Stream::Delta).await?;
    mesh.write("owner.yaml", OWNER_POLICY)?;
    let web1 = &mesh.sidecars["web-1"];
    wait_until(
        CONVERGE,
        "the owner's policy on the sidecars",
        || async move {
            let dump = route_dump(web1).await?;
            Ok(dump.contains("x-owner") && dump.contains("\"timeout\": \"9s\""))
        },
    )
    .await?;
    let creds = |sa: &str| {
        Creds::issue(
            &mesh.cp.ca_dir(),
            "evil",
            sa,
            &mesh.work.path().join(format!("evil-{sa}")),
        )
    };
    let (attacker, other) = (creds("attacker")?, creds("neighbour")?);
    // Its neighbours in `evil`: another service account, and one with the attacker's
    // own identity under another node id.
    let neighbour = RawAds::delta(
        other.channel(mesh.cp.xds).await?,
        node("n.evil", "evil", "n", "neighbour"),
    );
    let twin = RawAds::delta(
        attacker.channel(mesh.cp.xds).await?,
        node("twin.evil", "evil", "twin", "attacker"),
    );
    for (who, ads) in [("neighbour", &neighbour), ("twin", &twin)] {
        ads.wait_for(
            CONVERGE,
            &format!("the {who} to hold the policy"),
            holds_owner_policy,
        )
        .await?;
    }
    let evil = RawAds::delta_rejecting(
        attacker.channel(mesh.cp.xds).await?,
        node("x.evil", "evil", "x", "attacker"),
        ROUTE,
    );
    evil.wait_for(CONVERGE, "route tables to reject", |r| {
        r.names(ROUTE).len() == 1
    })
    .await?;
    // The rejecting identity's proxies stop getting the policy (the twin shares the
    // attacker's certificate identity: it could have sent the same NACKs).
    twin.wait_for(
        CONVERGE,
        "the policy left out for the attacker's identity",
        |r| !holds_owner_policy(r),
    )
    .await?;
    // A change after it reaches everyone; the neighbour still holds the owner's policy.
    mesh.write(
        "fast-retries.yaml",
        "apiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {name: fast}\nspec:\n  targetRef: {name: fast}\n  timeout: 7s\n",
    )?;
    let fast_seen = |r: &testbed::xds_client::Received| {
        r.resources
            .get(&(ROUTE.to_string(), "outbound".to_string()))
            .is_some_and(|a| {
                use prost::Message;
                envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(
                    a.value.as_slice(),
                )
                .is_ok_and(|rc| format!("{rc:?}").contains("seconds: 7,"))
            })
    };
    neighbour
        .wait_for(CONVERGE, "the later change on the neighbour", fast_seen)
        .await?;
    assert!(
        holds_owner_policy(&neighbour.received()),
        "the neighbour in evil (another service account) lost the owner's policy on the attacker's word\ncontrol plane log:\n{}",
        mesh.cp.log_text()
    );
    for envoy in std::iter::once(&mesh.client).chain(mesh.sidecars.values()) {
        wait_until(CONVERGE, "the change in default", || async move {
            let dump = route_dump(envoy).await?;
            Ok(dump.contains("\"timeout\": \"7s\"") && dump.contains("x-owner"))
        })
        .await?;
    }
    // The owner's objects keep Accepted as validation decided, and say where they were
    // rejected in a condition of their own.
    let cp = &mesh.cp;
    for object in [
        "RetryPolicy default/web-retries",
        "HTTPRoute default/web-headers",
    ] {
        wait_until(CONVERGE, "the RejectedByProxies condition", || async move {
            Ok(log_lines(&cp.log_text(), object).iter().any(|l| {
                l["condition"] == "RejectedByProxies"
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("spiffe://cluster.local/ns/evil/sa/attacker"))
            }))
        })
        .await?;
        let log = mesh.cp.log_text();
        let flipped: Vec<_> = log_lines(&log, object)
            .into_iter()
            .filter(|l| l["condition"] == "Accepted" && l["reason"] == "Rejected")
            .collect();
        assert!(flipped.is_empty(), "{object} lost Accepted: {flipped:?}");
    }
    // The attacker leaves: nothing stays excluded, the condition goes away.
    drop(evil);
    twin.wait_for(
        CONVERGE,
        "the policy back for the attacker's identity",
        holds_owner_policy,
    )
    .await?;
    let cp = &mesh.cp;
    wait_until(CONVERGE, "the condition cleared", || async move {
        Ok(log_lines(&cp.log_text(), "RetryPolicy default/web-retries")
            .iter()
            .any(|l| l["condition"] == "RejectedByProxies" && l["cleared"] == true))
    })
    .await?;
    Ok(())
}
