//! Traffic policy in the data path with real Envoy: TrafficSplit weights, retries,
//! retry budgets and timeouts, and bad policy input.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    CONVERGE, Mesh, Traffic, backend_count, backend_pod, ip, plain_service, settled_shares,
    split_over, wait_for_route, web_split,
};
use testbed::procs::{DataPlane, Stream, wait_until};

fn retry_policy(name: &str, target: &str, body: &str) -> String {
    format!(
        "apiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRef: {{kind: Service, name: {target}}}\n{body}"
    )
}

async fn traffic_split_weights_hold_and_shift_live_without_errors(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    mesh.write_ab_backends()?;
    mesh.write("split.yaml", &web_split(90, 10))?;
    wait_for_route(&mesh, "outbound|80||web-b.default.svc.cluster.local").await?;
    let clusters_before = mesh
        .client
        .stat("cluster_manager.cds.update_success")
        .await?;
    let s = settled_shares(&mesh, "web", 2000, ("web-1", 90.0, 3.0)).await?;
    eprintln!("90/10 split: {s:?}");
    assert!(
        (s.get("web-1").copied().unwrap_or(0.0) - 90.0).abs() <= 3.0,
        "{s:?}"
    );
    assert!(
        (s.get("web-2").copied().unwrap_or(0.0) - 10.0).abs() <= 3.0,
        "{s:?}"
    );

    let traffic = Traffic::start(mesh.client.outbound, "web");
    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.write("split.yaml", &web_split(50, 50))?;
    wait_for_route(&mesh, "\"weight\": 50").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = traffic.stop().await;
    assert!(
        during.failures.is_empty(),
        "requests failed during the weight change: {:?}",
        during.failures
    );
    let s = settled_shares(&mesh, "web", 2000, ("web-1", 50.0, 3.0)).await?;
    eprintln!("50/50 split: {s:?}");
    for pod in ["web-1", "web-2"] {
        assert!(
            (s.get(pod).copied().unwrap_or(0.0) - 50.0).abs() <= 3.0,
            "{s:?}"
        );
    }
    assert_eq!(
        mesh.client
            .stat("cluster_manager.cds.update_success")
            .await?,
        clusters_before,
        "a weight change is a route update only"
    );
    Ok(())
}

/// A TrafficSplit exactly as Flagger's `smi:v1alpha3` provider writes it during a
/// canary analysis step: named after the apex, owned by the Canary, integer weights.
fn flagger_v1alpha3(primary: i64, canary: i64) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha3
kind: TrafficSplit
metadata:
  name: web
  namespace: default
  ownerReferences:
  - apiVersion: flagger.app/v1beta1
    kind: Canary
    name: web
    uid: 6b1e7c1e-2f3a-4d5b-9c8d-0123456789ab
    controller: true
    blockOwnerDeletion: true
spec:
  service: web
  backends:
  - service: web-primary
    weight: {primary}
  - service: web-canary
    weight: {canary}
"
    )
}

async fn a_flagger_smi_v1alpha3_canary_step_routes_its_weights(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Sotw).await?;
    mesh.write_backends("web-primary", "web-canary")?;
    mesh.write("split.yaml", &flagger_v1alpha3(90, 10))?;
    wait_for_route(&mesh, "outbound|80||web-canary.default.svc.cluster.local").await?;
    let s = settled_shares(&mesh, "web", 1000, ("web-1", 90.0, 4.0)).await?;
    eprintln!("flagger v1alpha3 90/10: {s:?}");
    assert!(
        (s.get("web-1").copied().unwrap_or(0.0) - 90.0).abs() <= 4.0,
        "{s:?}"
    );
    // The next analysis step.
    let traffic = Traffic::start(mesh.client.outbound, "web");
    mesh.write("split.yaml", &flagger_v1alpha3(60, 40))?;
    wait_for_route(&mesh, "\"weight\": 40").await?;
    let during = traffic.stop().await;
    assert!(during.failures.is_empty(), "{:?}", during.failures);
    let s = settled_shares(&mesh, "web", 1000, ("web-2", 40.0, 4.0)).await?;
    eprintln!("flagger v1alpha3 60/40: {s:?}");
    assert!(
        (s.get("web-2").copied().unwrap_or(0.0) - 40.0).abs() <= 4.0,
        "{s:?}"
    );
    Ok(())
}

async fn retries_hide_a_flaky_backend_only_with_a_policy(proxy: DataPlane) -> anyhow::Result<()> {
    let mut mesh = Mesh::start(proxy, Stream::Sotw).await?;
    backend_pod(&mut mesh, "flaky", 26, &["--fail-every", "2"]).await?;
    wait_for_route(&mesh, "flaky.default.svc.cluster.local").await?;
    let ok = |n: usize| {
        let mesh = &mesh;
        async move {
            let mut good = 0;
            for _ in 0..n {
                if mesh.call("flaky").await?.0 == 200 {
                    good += 1;
                }
            }
            anyhow::Ok(good as f64 / n as f64)
        }
    };
    let without = ok(200).await?;
    mesh.write(
        "retry.yaml",
        &retry_policy(
            "flaky-retries",
            "flaky",
            "  retryOn: [5xx]\n  numRetries: 3\n",
        ),
    )?;
    wait_for_route(&mesh, "\"num_retries\": 3").await?;
    let with = ok(400).await?;
    eprintln!(
        "flaky backend success: {:.1}% without a policy, {:.2}% with numRetries 3",
        without * 100.0,
        with * 100.0
    );
    assert!(
        (0.35..=0.65).contains(&without),
        "about half fail without retries: {without}"
    );
    assert!(with >= 0.99, "retries give at least 99%: {with}");
    Ok(())
}

async fn the_retry_budget_bounds_upstream_attempts(proxy: DataPlane) -> anyhow::Result<()> {
    let mut mesh = Mesh::start(proxy, Stream::Delta).await?;
    let backend = backend_pod(&mut mesh, "broken", 27, &["--fail-every", "1"]).await?;
    async fn attempts_per_request(mesh: &Mesh, backend: SocketAddr, n: u64) -> anyhow::Result<f64> {
        let before = backend_count(backend).await?;
        for _ in 0..n {
            let (status, _) = mesh.call("broken").await?;
            anyhow::ensure!(status == 503, "the backend always fails: {status}");
        }
        Ok((backend_count(backend).await? - before) as f64 / n as f64)
    }
    mesh.write(
        "retry.yaml",
        &retry_policy(
            "broken-retries",
            "broken",
            "  retryOn: [5xx]\n  numRetries: 3\n",
        ),
    )?;
    wait_for_route(&mesh, "\"num_retries\": 3").await?;
    let unbounded = attempts_per_request(&mesh, backend, 50).await?;
    // 50% of one active request rounds down to no concurrent retry; no minimum.
    mesh.write("retry.yaml", &retry_policy("broken-retries", "broken", "  retryOn: [5xx]\n  numRetries: 3\n  budget: {retryPercent: 50, minRetryConcurrency: 0}\n"))?;
    let client = &mesh.client;
    wait_until(CONVERGE, "the budget on the cluster", || async move {
        Ok(client
            .admin_get("/config_dump?resource=dynamic_active_clusters")
            .await?
            .contains("retry_budget"))
    })
    .await?;
    let budgeted = attempts_per_request(&mesh, backend, 50).await?;
    eprintln!(
        "upstream attempts per client request: {unbounded:.2} without a budget, {budgeted:.2} with retryPercent 50 / minRetryConcurrency 0"
    );
    assert!(
        unbounded >= 3.9,
        "without a budget each request is tried 1 + 3 times: {unbounded}"
    );
    assert!(
        budgeted <= 1.5,
        "the budget allows at most 50% extra attempts: {budgeted}"
    );
    Ok(())
}

async fn per_try_and_overall_timeouts(proxy: DataPlane) -> anyhow::Result<()> {
    let mut mesh = Mesh::start(proxy, Stream::Delta).await?;
    let backend = backend_pod(&mut mesh, "slow", 28, &["--delay-ms", "1500"]).await?;
    mesh.write("retry.yaml", &retry_policy("slow-policy", "slow", "  retryOn: [5xx]\n  numRetries: 2\n  perTryTimeout: 200ms\n  timeout: 5s\n  backoff: {baseInterval: 10ms, maxInterval: 20ms}\n"))?;
    wait_for_route(&mesh, "per_try_timeout").await?;
    let before = backend_count(backend).await?;
    let start = Instant::now();
    let (status, _) = mesh.call("slow").await?;
    let took = start.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let attempts = backend_count(backend).await? - before;
    eprintln!("per-try timeout: status {status} after {took:?}, {attempts} attempts");
    assert_eq!(status, 504);
    assert_eq!(
        attempts, 3,
        "each attempt timed out after 200ms and was retried"
    );
    assert!(took < Duration::from_millis(1200), "{took:?}");

    mesh.write(
        "retry.yaml",
        &retry_policy("slow-policy", "slow", "  numRetries: 0\n  timeout: 300ms\n"),
    )?;
    wait_for_route(&mesh, "\"timeout\": \"0.300s\"").await?;
    let start = Instant::now();
    let (status, _) = mesh.call("slow").await?;
    let took = start.elapsed();
    eprintln!("overall timeout: status {status} after {took:?}");
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1000),
        "{took:?}"
    );
    Ok(())
}

async fn bad_policy_keeps_the_last_good_routes_and_says_why(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    mesh.write_ab_backends()?;
    mesh.write("split.yaml", &web_split(100, 0))?;
    // web-a's own route names its cluster before the split does: wait for the split.
    let m = &mesh;
    wait_until(
        CONVERGE,
        "the 100/0 split routing to web-a alone",
        || async move { Ok(m.answering("web", 50).await?.keys().collect::<Vec<_>>() == ["web-1"]) },
    )
    .await?;
    let traffic = Traffic::start(mesh.client.outbound, "web");
    mesh.write("split.yaml", &web_split(0, 0))?;
    mesh.write(
        "retry.yaml",
        &retry_policy("orphan", "nope", "  retryOn: [5xx]\n  numRetries: 2\n"),
    )?;
    let cp = &mesh.cp;
    wait_until(
        CONVERGE,
        "both problems in the control-plane log",
        || async move {
            let log = cp.log_text();
            Ok(log.contains("every weight is 0")
                && log.contains("spec.targetRef.name: Service default/nope not found"))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    traffic.reset_counts();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let results = traffic.stop().await;
    assert!(results.failures.is_empty(), "{:?}", results.failures);
    assert_eq!(
        results.by_pod.keys().collect::<Vec<_>>(),
        ["web-1"],
        "the last good split (100% web-a) still routes"
    );
    let log = mesh.cp.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("every weight is 0"))
        .unwrap_or_default();
    assert!(
        line.contains("TrafficSplit default/web-split") && line.contains("Accepted"),
        "{line}"
    );
    Ok(())
}

async fn route_group_matches_split_only_matching_requests(proxy: DataPlane) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    mesh.write_ab_backends()?;
    let group = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: beta, namespace: default}\nspec:\n  matches:\n    - {name: beta-users, pathRegex: \"/api/.*\", headers: {x-beta: \"yes\"}}\n";
    let ab = format!(
        "{}  matches:\n    - {{kind: HTTPRouteGroup, name: beta, apiGroup: specs.smi-spec.io}}\n",
        web_split(0, 100)
    );
    mesh.write("split.yaml", &format!("{group}---\n{ab}"))?;
    wait_for_route(&mesh, "x-beta").await?;
    let mut beta = BTreeMap::new();
    let mut others = BTreeMap::new();
    for _ in 0..40 {
        let r = testbed::http::get_via_with(
            mesh.client.outbound,
            "http://web/api/items",
            &[("x-beta", "yes")],
        )
        .await?;
        *beta
            .entry(
                r.body
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_insert(0) += 1;
        let r = testbed::http::get_via(mesh.client.outbound, "http://web/api/items").await?;
        *others
            .entry(
                r.body
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_insert(0) += 1;
    }
    eprintln!("A/B: matching {beta:?}, others {others:?}");
    assert_eq!(
        beta.keys().collect::<Vec<_>>(),
        ["web-2"],
        "matching requests take the split (100% web-b)"
    );
    assert_eq!(
        others.keys().collect::<Vec<_>>(),
        ["web-1", "web-2"],
        "the rest go to the apex Service"
    );
    Ok(())
}

fn named_split(name: &str, created: &str, apex: &str, backends: &[(&str, i64)]) -> String {
    let mut s = format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}\nspec:\n  service: {apex}\n  backends:\n"
    );
    for (b, w) in backends {
        s.push_str(&format!("    - {{service: {b}, weight: {w}}}\n"));
    }
    s
}

async fn nested_splits_compose_and_conflicts_and_cycles_are_refused(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    // web-primary's own endpoint is web-1: a split that bypassed the nested split would
    // send the primary's whole share there.
    mesh.write(
        "backends.yaml",
        &[
            plain_service("web-a", mesh.web_port, &[ip(22)]),
            plain_service("web-b", mesh.web_port, &[ip(23)]),
            plain_service("web-primary", mesh.web_port, &[ip(22)]),
        ]
        .join("---\n"),
    )?;
    // The Flagger layout: web -> primary 80 / web-b 20, primary -> web-a 50 / web-b 50.
    mesh.write(
        "split.yaml",
        &[
            named_split(
                "web",
                "2026-01-01T00:00:00Z",
                "web",
                &[("web-primary", 80), ("web-b", 20)],
            ),
            named_split(
                "primary",
                "2026-01-01T00:00:00Z",
                "web-primary",
                &[("web-a", 50), ("web-b", 50)],
            ),
        ]
        .join("---\n"),
    )?;
    wait_for_route(&mesh, "\"weight\": 600000000").await?;
    let s = settled_shares(&mesh, "web", 2000, ("web-1", 40.0, 4.0)).await?;
    eprintln!("composed 80 x (50/50) + 20: {s:?}");
    assert!(
        (s.get("web-1").copied().unwrap_or(0.0) - 40.0).abs() <= 4.0,
        "{s:?}"
    );
    assert!(
        (s.get("web-2").copied().unwrap_or(0.0) - 60.0).abs() <= 4.0,
        "{s:?}"
    );

    // A newer split on the same apex (named to sort first) loses, and says so.
    let traffic = Traffic::start(mesh.client.outbound, "web");
    let split_yaml = std::fs::read_to_string(mesh.manifests().join("split.yaml"))?;
    mesh.write(
        "split.yaml",
        &format!(
            "{split_yaml}---\n{}",
            named_split("aaa-newer", "2026-06-01T00:00:00Z", "web", &[("web-a", 1)])
        ),
    )?;
    let cp = &mesh.cp;
    wait_until(
        CONVERGE,
        "the conflict in the control-plane log",
        || async move {
            Ok(cp.log_text().lines().any(|l| {
                l.contains("TrafficSplit default/aaa-newer")
                    && l.contains("Conflicted")
                    && l.contains("TrafficSplit default/web already splits Service default/web")
            }))
        },
    )
    .await?;
    // A cycle: primary now also points back at web. Refused with the chain named; the
    // last good (composed) weights keep routing.
    mesh.write(
        "split.yaml",
        &[
            named_split(
                "web",
                "2026-01-01T00:00:00Z",
                "web",
                &[("web-primary", 80), ("web-b", 20)],
            ),
            named_split(
                "primary",
                "2026-01-01T00:00:00Z",
                "web-primary",
                &[("web-a", 50), ("web", 50)],
            ),
        ]
        .join("---\n"),
    )?;
    wait_until(
        CONVERGE,
        "the cycle in the control-plane log",
        || async move {
            Ok(cp
                .log_text()
                .lines()
                .any(|l| l.contains("RefCycle") && l.contains("web -> web-primary -> web")))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = traffic.stop().await;
    assert!(during.failures.is_empty(), "{:?}", during.failures);
    let s = settled_shares(&mesh, "web", 1000, ("web-1", 40.0, 5.0)).await?;
    eprintln!("after the conflict and the cycle: {s:?}");
    assert!(
        (s.get("web-1").copied().unwrap_or(0.0) - 40.0).abs() <= 5.0,
        "{s:?}"
    );
    assert!(
        (s.get("web-2").copied().unwrap_or(0.0) - 60.0).abs() <= 5.0,
        "{s:?}"
    );
    Ok(())
}

/// A TrafficSplit that moves a Service's traffic onto backend Services that are new in
/// the same edit: the route arrives right behind their clusters' endpoints, and no
/// request in flight meets a backend its proxy is still warming.
async fn a_split_onto_new_backends_fails_no_request(
    proxy: DataPlane,
    stream: Stream,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, stream).await?;
    // Several callers, so that a gap of a few milliseconds would be met.
    let traffic: Vec<_> = (0..4)
        .map(|_| Traffic::start(mesh.client.outbound, "web"))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (a, b) in [("web-a", "web-b"), ("web-c", "web-d"), ("web-e", "web-f")] {
        let split = split_over((a, 50), (b, 50));
        mesh.write(
            "split.yaml",
            &format!("{}---\n{split}", mesh.backends(a, b)),
        )?;
        wait_for_route(
            &mesh,
            &format!("outbound|80||{b}.default.svc.cluster.local"),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in traffic {
        let during = t.stop().await;
        assert!(during.ok > 0, "no request went through");
        assert!(
            during.failures.is_empty(),
            "requests failed while the split moved onto new backends: {:?}",
            during.failures
        );
    }
    Ok(())
}

async fn a_delta_split_onto_new_backends_fails_no_request(proxy: DataPlane) -> anyhow::Result<()> {
    a_split_onto_new_backends_fails_no_request(proxy, Stream::Delta).await
}

async fn a_sotw_split_onto_new_backends_fails_no_request(proxy: DataPlane) -> anyhow::Result<()> {
    a_split_onto_new_backends_fails_no_request(proxy, Stream::Sotw).await
}

common::on_each_proxy!(
    a_delta_split_onto_new_backends_fails_no_request,
    a_sotw_split_onto_new_backends_fails_no_request,
    traffic_split_weights_hold_and_shift_live_without_errors,
    a_flagger_smi_v1alpha3_canary_step_routes_its_weights,
    retries_hide_a_flaky_backend_only_with_a_policy,
    the_retry_budget_bounds_upstream_attempts,
    per_try_and_overall_timeouts,
    bad_policy_keeps_the_last_good_routes_and_says_why,
    route_group_matches_split_only_matching_requests,
    nested_splits_compose_and_conflicts_and_cycles_are_refused,
);
