//! One tenant's bad policy stays its own problem. A real Envoy rejects a route made from
//! a valid TrafficSplit (this Envoy's runtime allows only tiny regexes); the control
//! plane leaves that split out, re-sends the rest, and a live route change for another
//! Service reaches every proxy, the strict one included, with no failed requests.

mod common;

use std::time::Duration;

use common::{CONVERGE, Mesh, Traffic};
use testbed::procs::{Envoy, Stream, wait_until};

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

async fn route_dump(envoy: &Envoy) -> anyhow::Result<String> {
    envoy
        .admin_get("/config_dump?resource=dynamic_route_configs")
        .await
}

async fn a_rejected_split_is_left_out_and_other_routes_flow(stream: Stream) -> anyhow::Result<()> {
    let mesh = Mesh::start_custom(stream, &[], strict_regexes).await?;
    let traffic = Traffic::start(mesh.client.outbound, "web");
    let client = &mesh.client;
    let rejected_before = client
        .stat("http.outbound.rds.outbound.update_rejected")
        .await?;

    mesh.write("ab-test.yaml", AB_TEST)?;
    wait_until(
        CONVERGE,
        "the strict client to reject the split",
        || async move {
            Ok(client
                .stat("http.outbound.rds.outbound.update_rejected")
                .await?
                > rejected_before)
        },
    )
    .await?;
    let cp = &mesh.cp;
    wait_until(CONVERGE, "the split to be left out", || async move {
        Ok(cp.log_text().contains("leaves it out until it changes"))
    })
    .await?;
    // The others accepted it; everyone converges on config without it.
    let log = mesh.cp.log_text();
    assert!(log.contains("TrafficSplit default/web-ab"), "{log}");

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
    let cp = &mesh.cp;
    wait_until(
        CONVERGE,
        "the split's Rejected condition in the log",
        || async move {
            let log = cp.log_text();
            Ok(log.contains("\"reason\":\"Rejected\"") && log.contains("web-ab"))
        },
    )
    .await?;

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
    let mesh = Mesh::start_custom(Stream::Delta, &[], strict_regexes).await?;
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
        Ok(cp.log_text().contains("leaves it out until it changes"))
    })
    .await?;
    let log = mesh.cp.log_text();
    assert!(log.contains("TrafficSplit default/web-ab"), "{log}");
    // Only the split is blamed: the good policy was at most implicated while the search
    // ran, never Accepted=False/Rejected.
    let blamed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("RetryPolicy default/fast") && l.contains("Rejected"))
        .filter(|l| !l.contains("SharesRejectedResource"))
        .collect();
    assert!(
        blamed.is_empty(),
        "the unrelated policy was blamed: {blamed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_workload_that_rejects_everything_hurts_only_its_own_namespace() -> anyhow::Result<()> {
    use testbed::xds_client::{Creds, ROUTE, RawAds, node};
    let mesh = Mesh::start(Stream::Delta).await?;
    mesh.write("ab-test.yaml", AB_TEST)?;
    let web1 = &mesh.sidecars["web-1"];
    wait_until(CONVERGE, "the split on the sidecars", || async move {
        Ok(route_dump(web1).await?.contains("weighted_clusters"))
    })
    .await?;
    // A hostile workload in another namespace rejects every route table it is sent.
    let creds = Creds::issue(
        &mesh.cp.ca_dir(),
        "evil",
        "attacker",
        &mesh.work.path().join("evil"),
    )?;
    let evil = RawAds::delta_rejecting(
        creds.channel(mesh.cp.xds).await?,
        node("x.evil", "evil", "x", "attacker"),
        ROUTE,
    );
    evil.wait_for(CONVERGE, "route tables to reject", |r| {
        r.names(ROUTE).len() == 1
    })
    .await?;
    let cp = &mesh.cp;
    wait_until(CONVERGE, "its rejection to be contained", || async move {
        Ok(cp.log_text().contains("its view leaves it out"))
    })
    .await?;
    // Another change after it: everyone in default still gets the split.
    mesh.write(
        "fast-retries.yaml",
        "apiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {name: fast}\nspec:\n  targetRef: {name: fast}\n  timeout: 7s\n",
    )?;
    for envoy in std::iter::once(&mesh.client).chain(mesh.sidecars.values()) {
        wait_until(CONVERGE, "the change in default", || async move {
            let dump = route_dump(envoy).await?;
            Ok(dump.contains("\"timeout\": \"7s\"") && dump.contains("weighted_clusters"))
        })
        .await?;
    }
    // The status of the split does not carry the intruder's text.
    let log = mesh.cp.log_text();
    assert!(log.contains("proxies in namespace evil reject"), "{log}");
    assert!(
        !log.contains("\"message\":\"proxy spiffe://cluster.local/ns/evil"),
        "{log}"
    );
    Ok(())
}
