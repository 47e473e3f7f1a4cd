//! Gateway API routes for the mesh (GAMMA) in the data path with real Envoy: weights,
//! a header match with a request header filter, a live weight change, timeouts and
//! retries, and an HTTPRoute exactly as Flagger's `gatewayapi` provider writes it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{CONVERGE, Mesh, Traffic, backend_count, backend_pod, settled_shares, wait_for_route};
use testbed::procs::{DataPlane, Stream, wait_until};

/// An HTTPRoute `NAME` for Service `parent` port 80 with `rules` (YAML, indented 4).
fn route(name: &str, parent: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs:\n    - {{group: \"\", kind: Service, name: {parent}, port: 80}}\n  rules:\n{rules}"
    )
}

fn weighted(a: u32, b: u32) -> String {
    route(
        "web",
        "web",
        &format!(
            "    - backendRefs:\n        - {{name: web-a, port: 80, weight: {a}}}\n        - {{name: web-b, port: 80, weight: {b}}}\n"
        ),
    )
}

fn near(s: &BTreeMap<String, f64>, pod: &str, want: f64, tolerance: f64) -> bool {
    (s.get(pod).copied().unwrap_or(0.0) - want).abs() <= tolerance
}

async fn http_route_weights_hold_and_shift_live_without_errors(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    mesh.write_ab_backends()?;
    mesh.write("route.yaml", &weighted(90, 10))?;
    wait_for_route(&mesh, "outbound|80||web-b.default.svc.cluster.local").await?;
    let s = settled_shares(&mesh, "web", 2000, ("web-1", 90.0, 3.0)).await?;
    eprintln!("HTTPRoute 90/10: {s:?}");
    assert!(
        near(&s, "web-1", 90.0, 3.0) && near(&s, "web-2", 10.0, 3.0),
        "{s:?}"
    );

    let traffic = Traffic::start(mesh.client.outbound, "web");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    mesh.write("route.yaml", &weighted(50, 50))?;
    wait_for_route(&mesh, "\"weight\": 50").await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = traffic.stop().await;
    eprintln!(
        "during the live weight change: {} requests, {} failed",
        during.by_pod.values().sum::<u64>(),
        during.failures.len()
    );
    assert!(
        during.failures.is_empty(),
        "requests failed during the weight change: {:?}",
        during.failures
    );
    let s = settled_shares(&mesh, "web", 2000, ("web-1", 50.0, 3.0)).await?;
    eprintln!("HTTPRoute 50/50: {s:?}");
    assert!(
        near(&s, "web-1", 50.0, 3.0) && near(&s, "web-2", 50.0, 3.0),
        "{s:?}"
    );
    // The route's status goes to the log in manifest mode.
    let cp = &mesh.cp;
    wait_until(
        CONVERGE,
        "the route's conditions in the log",
        || async move {
            Ok(cp
                .log_text()
                .lines()
                .any(|l| l.contains("HTTPRoute default/web") && l.contains("Accepted")))
        },
    )
    .await?;
    Ok(())
}

async fn a_header_match_sends_only_matching_requests_to_the_canary(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Sotw).await?;
    mesh.write_ab_backends()?;
    mesh.write(
        "route.yaml",
        &route(
            "web",
            "web",
            "    - matches:\n        - headers: [{name: x-canary, value: \"yes\"}]\n      filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier:\n            set: [{name: x-echo-routed, value: canary}]\n      backendRefs: [{name: web-b, port: 80}]\n    - backendRefs: [{name: web-a, port: 80}]\n",
        ),
    )?;
    wait_for_route(&mesh, "x-canary").await?;
    let mut matching = BTreeMap::new();
    let mut others = BTreeMap::new();
    for _ in 0..50 {
        let r = testbed::http::get_via_with(
            mesh.client.outbound,
            "http://web/",
            &[("x-canary", "yes")],
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.contains("x-echo-routed=canary"),
            "the filter set the header: {}",
            r.body
        );
        *matching
            .entry(
                r.body
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_insert(0) += 1;
        let r =
            testbed::http::get_via_with(mesh.client.outbound, "http://web/", &[("x-canary", "no")])
                .await?;
        assert!(!r.body.contains("x-echo-routed"), "{}", r.body);
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
    eprintln!("header match: matching {matching:?}, others {others:?}");
    assert_eq!(matching.keys().collect::<Vec<_>>(), ["web-2"]);
    assert_eq!(others.keys().collect::<Vec<_>>(), ["web-1"]);
    Ok(())
}

async fn route_timeouts_and_retries(proxy: DataPlane) -> anyhow::Result<()> {
    let mut mesh = Mesh::start(proxy, Stream::Delta).await?;
    let slow = backend_pod(&mut mesh, "slow", 28, &["--delay-ms", "1500"]).await?;
    // timeouts.request bounds the whole request.
    mesh.write(
        "route.yaml",
        &route(
            "slow",
            "slow",
            "    - backendRefs: [{name: slow, port: 80}]\n      timeouts: {request: 300ms}\n",
        ),
    )?;
    wait_for_route(&mesh, "\"timeout\": \"0.300s\"").await?;
    let start = Instant::now();
    let (status, _) = mesh.call("slow").await?;
    let took = start.elapsed();
    eprintln!("timeouts.request 300ms: status {status} after {took:?}");
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1000),
        "{took:?}"
    );
    // timeouts.backendRequest bounds each attempt; retries on 504 try again.
    mesh.write(
        "route.yaml",
        &route(
            "slow",
            "slow",
            "    - backendRefs: [{name: slow, port: 80}]\n      timeouts: {request: 5s, backendRequest: 200ms}\n      retry: {attempts: 2, codes: [504], backoff: 10ms}\n",
        ),
    )?;
    wait_for_route(&mesh, "\"per_try_timeout\": \"0.200s\"").await?;
    let before = backend_count(slow).await?;
    let start = Instant::now();
    let (status, _) = mesh.call("slow").await?;
    let took = start.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let attempts = backend_count(slow).await? - before;
    eprintln!(
        "backendRequest 200ms, 2 retries: status {status} after {took:?}, {attempts} attempts"
    );
    assert_eq!(status, 504);
    assert_eq!(
        attempts, 3,
        "each attempt timed out after 200ms and was retried"
    );
    assert!(took < Duration::from_millis(1200), "{took:?}");

    // Retries on the codes the route names hide a flaky backend.
    backend_pod(&mut mesh, "flaky", 26, &["--fail-every", "2"]).await?;
    mesh.write(
        "flaky-route.yaml",
        &route(
            "flaky",
            "flaky",
            "    - backendRefs: [{name: flaky, port: 80}]\n      retry: {attempts: 3, codes: [503]}\n",
        ),
    )?;
    wait_for_route(&mesh, "\"num_retries\": 3").await?;
    let mut good = 0;
    for _ in 0..200 {
        if mesh.call("flaky").await?.0 == 200 {
            good += 1;
        }
    }
    eprintln!("flaky backend behind route retries: {good}/200");
    assert_eq!(good, 200);
    Ok(())
}

/// An HTTPRoute exactly as Flagger's `gatewayapi` provider writes it for a mesh canary
/// (`gatewayRefs` naming the apex Service with `group: core`, as in Flagger's GAMMA
/// tutorials): named after the apex, owned by the Canary, one rule matching every path,
/// primary and canary weighted.
fn flagger_route(primary: u32, canary: u32) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: default
  annotations:
    helm.toolkit.fluxcd.io/driftDetection: disabled
  ownerReferences:
    - apiVersion: flagger.app/v1beta1
      kind: Canary
      name: web
      uid: 6a1c1f2e-0b7a-4e43-9d2f-3c1f0e6d9b21
      controller: true
      blockOwnerDeletion: true
spec:
  parentRefs:
    - group: core
      kind: Service
      name: web
      namespace: default
      port: 80
  rules:
    - matches:
        - path:
            type: PathPrefix
            value: /
      backendRefs:
        - group: ""
          kind: Service
          name: web-primary
          port: 80
          weight: {primary}
        - group: ""
          kind: Service
          name: web-canary
          port: 80
          weight: {canary}
      timeouts:
        request: 15s
"#
    )
}

async fn a_flagger_gatewayapi_canary_step_routes_its_weights(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Sotw).await?;
    mesh.write_backends("web-primary", "web-canary")?;
    mesh.write("route.yaml", &flagger_route(90, 10))?;
    wait_for_route(&mesh, "outbound|80||web-canary.default.svc.cluster.local").await?;
    let s = settled_shares(&mesh, "web", 1000, ("web-1", 90.0, 4.0)).await?;
    eprintln!("flagger gatewayapi 90/10: {s:?}");
    assert!(near(&s, "web-1", 90.0, 4.0), "{s:?}");
    // The next analysis step, with traffic flowing.
    let traffic = Traffic::start(mesh.client.outbound, "web");
    mesh.write("route.yaml", &flagger_route(60, 40))?;
    wait_for_route(&mesh, "\"weight\": 40").await?;
    let during = traffic.stop().await;
    assert!(during.failures.is_empty(), "{:?}", during.failures);
    let s = settled_shares(&mesh, "web", 1000, ("web-2", 40.0, 4.0)).await?;
    eprintln!("flagger gatewayapi 60/40: {s:?}");
    assert!(near(&s, "web-2", 40.0, 4.0), "{s:?}");
    // Promotion: all to primary.
    mesh.write("route.yaml", &flagger_route(100, 0))?;
    wait_until(CONVERGE, "the canary drained", || {
        let mesh = &mesh;
        async move {
            Ok(mesh
                .answering("web", 50)
                .await?
                .keys()
                .all(|k| k == "web-1"))
        }
    })
    .await?;
    Ok(())
}

async fn per_backend_header_filters_and_request_mirrors(proxy: DataPlane) -> anyhow::Result<()> {
    let mut mesh = Mesh::start(proxy, Stream::Delta).await?;
    let shadow = backend_pod(&mut mesh, "shadow", 24, &[]).await?;
    mesh.write_ab_backends()?;
    let pool = |p: &str| {
        format!(
            "filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-echo-pool, value: {p}}}]}}}}]"
        )
    };
    mesh.write(
        "route.yaml",
        &route(
            "web",
            "web",
            &format!(
                "    - backendRefs:\n        - {{name: web-a, port: 80, weight: 1, {}}}\n        - {{name: web-b, port: 80, weight: 1, {}}}\n      filters:\n        - {{type: RequestMirror, requestMirror: {{backendRef: {{name: shadow, port: 80}}}}}}\n",
                pool("a"),
                pool("b")
            ),
        ),
    )?;
    wait_for_route(&mesh, "request_mirror_policies").await?;
    let before = backend_count(shadow).await?;
    let mut seen = BTreeMap::new();
    for _ in 0..100 {
        let r = testbed::http::get_via(mesh.client.outbound, "http://web/").await?;
        assert_eq!(r.status, 200, "{}", r.body);
        let pod = r
            .body
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let want = if pod == "web-1" {
            "x-echo-pool=a"
        } else {
            "x-echo-pool=b"
        };
        assert!(
            r.body.contains(want),
            "{pod} got the other backend's header: {}",
            r.body
        );
        *seen.entry(pod).or_insert(0) += 1;
    }
    eprintln!("per-backend filters: {seen:?}");
    assert_eq!(seen.len(), 2, "both backends answered: {seen:?}");
    // Every request was copied to the mirror (copies are sent in the background).
    wait_until(CONVERGE, "100 mirrored requests", || async move {
        Ok(backend_count(shadow).await? - before >= 100)
    })
    .await?;
    let mirrored = backend_count(shadow).await? - before;
    eprintln!("request mirror: {mirrored} copies of 100 requests");
    assert_eq!(mirrored, 100);
    Ok(())
}

async fn a_backend_that_does_not_resolve_keeps_its_share_and_fails_it(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Sotw).await?;
    mesh.write_ab_backends()?;
    mesh.write(
        "route.yaml",
        &route(
            "web",
            "web",
            "    - backendRefs:\n        - {name: web-a, port: 80, weight: 1}\n        - {name: web-gone, port: 80, weight: 1}\n",
        ),
    )?;
    wait_for_route(&mesh, "rudder-no-backend").await?;
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for _ in 0..400 {
        let (status, _) = mesh.call("web").await?;
        *by_status.entry(status).or_insert(0) += 1;
    }
    eprintln!("a missing backend's share: {by_status:?}");
    assert_eq!(
        by_status.keys().collect::<Vec<_>>(),
        [&200, &500],
        "{by_status:?}"
    );
    let failed = by_status[&500] as f64 / 4.0;
    assert!(
        (40.0..=60.0).contains(&failed),
        "{failed}% failed, want 50 +- 10"
    );
    Ok(())
}

common::on_each_proxy!(
    http_route_weights_hold_and_shift_live_without_errors,
    a_header_match_sends_only_matching_requests_to_the_canary,
    route_timeouts_and_retries,
    a_flagger_gatewayapi_canary_step_routes_its_weights,
    per_backend_header_filters_and_request_mirrors,
    a_backend_that_does_not_resolve_keeps_its_share_and_fails_it,
);
