//! Proxyless gRPC end to end on grpc-js (@grpc/grpc-js-xds 1.14,
//! `testbed/grpc-js/mesh_app.js`): grpc-js cannot present a client certificate to the
//! xDS server (no gRFC A65 `tls` channel creds), so every pod's agent bridges xDS
//! (`xds-server agent --grpc --xds-proxy`: plain text on a Unix socket in the pod,
//! mTLS with the pod's certificate to Rudder). Weighted splits, mesh mTLS between
//! grpc-js apps (gRFC A29) and retries (A44), every resource checked ACKED in the apps'
//! own CSDS; a grpc-js xDS server enforcing a TrafficTarget (A41: PERMISSION_DENIED for
//! an identity it does not list); and a grpc-js xDS server without
//! GRPC_XDS_EXPERIMENTAL_RBAC, whose NACK the control plane explains. Node or the
//! packages missing fails the tests.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use testbed::grpc_app;
use testbed::grpc_js::{self, JsServer};
use testbed::procs::{ControlPlane, free_port, wait_until};

const RBAC_ON: &[(&str, &str)] = &[("GRPC_XDS_EXPERIMENTAL_RBAC", "true")];

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 4, last])
}

/// A pod with labels, service account and IP.
fn pod(name: &str, labels: &str, sa: &str, ip: IpAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{{labels}}}}}\nspec: {{serviceAccountName: {sa}, containers: [{{name: app}}]}}\nstatus: {{podIP: \"{ip}\"}}\n"
    )
}

/// A Service on port 50051 (gRPC) to `target` on pods matching `selector`.
fn service(name: &str, selector: &str, target: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  selector: {{{selector}}}\n  ports: [{{name: grpc, port: 50051, targetPort: {target}}}]\n"
    )
}

/// EndpointSlice `service-N` of `service` listing one pod on `port`.
fn slice(service: &str, n: u8, port: u16, pod: &str, ip: IpAddr) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-{n}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: grpc, port: {port}}}]\nendpoints:\n  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n    targetRef: {{kind: Pod, name: {pod}}}\n"
    )
}

fn write(dir: &Path, docs: &[String]) -> anyhow::Result<()> {
    std::fs::write(dir.join("mesh.yaml"), docs.join("---\n"))?;
    Ok(())
}

/// A scenario's start: node and the packages are there (or the test fails), a work
/// directory with an empty manifest directory.
fn scenario() -> anyhow::Result<(tempfile::TempDir, std::path::PathBuf)> {
    grpc_js::node()?;
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(&manifests)?;
    Ok((work, manifests))
}

async fn wait_server_acked(server: &JsServer, name: &str) -> anyhow::Result<()> {
    let waited = wait_until(
        Duration::from_secs(20),
        &format!("grpc-js server {name}'s listener ACKED"),
        || {
            let csds = server.csds();
            let ok = csds.iter().any(|e| e["type"] == "Listener")
                && grpc_app::not_acked(&csds).is_empty();
            async move { Ok(ok) }
        },
    )
    .await;
    if let Err(e) = waited {
        anyhow::bail!(
            "{e:#}\ncsds: {:?}\nlog:\n{}",
            server.csds(),
            server.log_text()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_apps_split_retry_and_use_mtls_through_the_agents_xds_bridge() -> anyhow::Result<()>
{
    let (work, manifests) = scenario()?;
    let w = work.path();
    // grpc-js servers bind their port on every address: one port each.
    let (p1, p2, p3) = (free_port()?, free_port()?, free_port()?);
    let (v1, v2, flaky, client, py) = (ip(2), ip(3), ip(4), ip(1), ip(5));
    write(
        &manifests,
        &[
            service("greeter", "app: greeter", p1),
            service("greeter-v1", "app: greeter, version: v1", p1),
            service("greeter-v2", "app: greeter, version: v2", p2),
            service("flaky", "app: flaky", p3),
            pod("greeter-v1-a", "app: greeter, version: v1", "greeter", v1),
            pod("greeter-v2-a", "app: greeter, version: v2", "greeter", v2),
            pod("flaky-a", "app: flaky", "flaky", flaky),
            pod("client", "app: client", "client", client),
            pod("py-client", "app: py-client", "client", py),
            slice("greeter", 1, p1, "greeter-v1-a", v1),
            slice("greeter", 2, p2, "greeter-v2-a", v2),
            slice("greeter-v1", 1, p1, "greeter-v1-a", v1),
            slice("greeter-v2", 1, p2, "greeter-v2-a", v2),
            slice("flaky", 1, p3, "flaky-a", flaky),
            "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: greeter-canary, namespace: default}\nspec:\n  service: greeter\n  backends:\n    - {service: greeter-v1, weight: 80}\n    - {service: greeter-v2, weight: 20}\n".into(),
            "apiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {name: flaky-retries, namespace: default}\nspec:\n  targetRef: {kind: Service, name: flaky}\n  retryOn: [unavailable]\n  numRetries: 4\n  backoff: {baseInterval: 5ms, maxInterval: 50ms}\n".into(),
        ],
    )?;
    let cp = ControlPlane::start(&manifests, w).await?;
    let mut pods = Vec::new();
    let mut servers = Vec::new();
    for (pod, sa, name, at, extra) in [
        (
            "greeter-v1-a",
            "greeter",
            "v1",
            SocketAddr::new(v1, p1),
            &[][..],
        ),
        (
            "greeter-v2-a",
            "greeter",
            "v2",
            SocketAddr::new(v2, p2),
            &[][..],
        ),
        (
            "flaky-a",
            "flaky",
            "flaky",
            SocketAddr::new(flaky, p3),
            &["--fail-every", "2"][..],
        ),
    ] {
        let bridged = grpc_js::bridged_pod(&cp, w, pod, sa, &[]).await?;
        servers.push((
            name,
            JsServer::start(&bridged.bootstrap, w, name, at, extra, RBAC_ON)?,
        ));
        pods.push(bridged);
    }
    for (name, s) in &servers {
        wait_server_acked(s, name).await?;
    }
    let me = grpc_js::bridged_pod(&cp, w, "client", "client", &[]).await?;
    let boot: Value = serde_json::from_str(&std::fs::read_to_string(&me.bootstrap)?)?;
    assert_eq!(
        boot["xds_servers"][0]["channel_creds"][0]["type"], "insecure",
        "the app speaks plain text to its agent: {boot}"
    );
    // An absolute path (grpc-js reads `unix://a/b` as authority `a`) to the socket in
    // the agent's private directory.
    assert!(
        boot["xds_servers"][0]["server_uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("unix:///") && u.ends_with("/.agent/xds.sock")),
        "{boot}"
    );

    // An 80/20 TrafficSplit over 1,000 RPCs, grpc-js client to grpc-js servers, mTLS.
    let r = grpc_js::client(
        &me.bootstrap,
        &[
            "--target",
            "xds:///greeter.default.svc.cluster.local:50051",
            "--calls",
            "1000",
        ],
    )
    .await?;
    assert_eq!(r["ok"], 1000, "split run: {r}");
    let share = r["answers"]["v1"].as_u64().unwrap_or(0) as f64 / 10.0;
    assert!(
        (76.0..=84.0).contains(&share),
        "v1 got {share}% of 1,000 RPCs, want 80 +- 4: {r}"
    );
    grpc_app::assert_all_acked(&r, "split run");
    eprintln!("measured: greeter-v1 got {share}% of 1,000 RPCs (weight 80) from grpc-js");

    // Retries (A44): an xDS grpc-js server failing every other RPC with UNAVAILABLE.
    let r = grpc_js::client(
        &me.bootstrap,
        &["--target", "xds:///flaky:50051", "--calls", "200"],
    )
    .await?;
    let ok = r["ok"].as_u64().unwrap_or(0);
    assert!(
        ok >= 198,
        "with retries {ok}/200 succeeded, want >= 99%: {r}"
    );
    grpc_app::assert_all_acked(&r, "retry run");

    // The grpc-js servers serve mesh mTLS (A29): plain text is refused, and a grpcio
    // client (A65 tls creds straight to Rudder) gets through with its certificate.
    grpc_app::python()?;
    let plain = grpc_app::direct(SocketAddr::new(v1, p1)).await?;
    assert_eq!(
        plain["ok"], false,
        "plain text reached an mTLS server: {plain}"
    );
    let py_boot = grpc_app::bootstrap(&cp, w, "py-client", "client", &[])?;
    let r = grpc_app::client(
        &py_boot,
        &["--target", "xds:///greeter-v2:50051", "--calls", "20"],
    )
    .await?;
    assert_eq!(r["ok"], 20, "grpcio to a grpc-js server: {r}");
    assert_eq!(r["answers"]["v2"], 20, "{r}");

    for (name, s) in &servers {
        let bad = grpc_app::not_acked(&s.csds());
        assert!(bad.is_empty(), "server {name}: {bad:?}");
    }
    let mut me = me;
    for p in pods.iter_mut().chain(std::iter::once(&mut me)) {
        p.agent.check_running()?;
    }
    let metrics = testbed::http::get_ok(cp.admin, "/metrics").await?;
    let nacks: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("rudder_xds_nacks_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(
        nacks.is_empty(),
        "the control plane counted NACKs: {nacks:?}"
    );
    Ok(())
}

/// A grpc-js xDS server without GRPC_XDS_EXPERIMENTAL_RBAC does not know the RBAC filter
/// Rudder marks required on its Listener: it NACKs, and the control plane's log names
/// the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_js_server_without_the_rbac_filter_nacks_and_is_told_the_fix() -> anyhow::Result<()>
{
    let (work, manifests) = scenario()?;
    let w = work.path();
    let (port, at) = (free_port()?, ip(12));
    write(
        &manifests,
        &[
            service("echo", "app: echo", port),
            pod("echo-a", "app: echo", "echo", at),
            slice("echo", 1, port, "echo-a", at),
        ],
    )?;
    let cp = ControlPlane::start(&manifests, w).await?;
    let bridged = grpc_js::bridged_pod(&cp, w, "echo-a", "echo", &[]).await?;
    let server = JsServer::start(
        &bridged.bootstrap,
        w,
        "echo",
        SocketAddr::new(at, port),
        &[],
        &[],
    )?;
    let waited = wait_until(Duration::from_secs(20), "the server's NACK", || {
        let nacked = server
            .csds()
            .iter()
            .any(|e| e["type"] == "Listener" && e["status"] == "NACKED");
        async move { Ok(nacked) }
    })
    .await;
    if let Err(e) = waited {
        anyhow::bail!(
            "{e:#}\ncsds: {:?}\nlog:\n{}",
            server.csds(),
            server.log_text()
        );
    }
    let csds = server.csds();
    assert!(
        csds.iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|t| t.contains("envoy.filters.http.rbac"))),
        "grpc-js names the RBAC filter: {csds:?}"
    );
    wait_until(
        Duration::from_secs(10),
        "the hint in the control plane's log",
        || {
            let ok = cp.log_text().contains("GRPC_XDS_EXPERIMENTAL_RBAC=true");
            async move { Ok(ok) }
        },
    )
    .await?;
    Ok(())
}

/// gRFC A41 on grpc-js: a server under a TrafficTarget serves the listed source and
/// answers another identity PERMISSION_DENIED, with its listener ACKED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_js_server_enforces_traffic_targets() -> anyhow::Result<()> {
    let (work, manifests) = scenario()?;
    let w = work.path();
    let (port, server, client, intruder) = (free_port()?, ip(22), ip(21), ip(23));
    write(
        &manifests,
        &[
            service("greeter", "app: greeter", port),
            pod("greeter-a", "app: greeter", "greeter", server),
            pod("client", "app: client", "client", client),
            pod("intruder", "app: intruder", "intruder", intruder),
            slice("greeter", 1, port, "greeter-a", server),
            "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: echo, namespace: default}\nspec:\n  matches: [{name: calls, pathRegex: \"/rudder[.]test[.]Echo/.*\", methods: [\"*\"]}]\n".into(),
            "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: greeter-callers, namespace: default}\nspec:\n  destination: {kind: ServiceAccount, name: greeter, namespace: default}\n  rules: [{kind: HTTPRouteGroup, name: echo}]\n  sources: [{kind: ServiceAccount, name: client, namespace: default}]\n".into(),
        ],
    )?;
    let cp = ControlPlane::start(&manifests, w).await?;
    let bridged = grpc_js::bridged_pod(&cp, w, "greeter-a", "greeter", &[]).await?;
    let srv = JsServer::start(
        &bridged.bootstrap,
        w,
        "greeter",
        SocketAddr::new(server, port),
        &[],
        RBAC_ON,
    )?;
    wait_server_acked(&srv, "greeter").await?;
    let target = "xds:///greeter.default.svc.cluster.local:50051";
    let me = grpc_js::bridged_pod(&cp, w, "client", "client", &[]).await?;
    let r = grpc_js::client(&me.bootstrap, &["--target", target, "--calls", "20"]).await?;
    assert_eq!(r["ok"], 20, "the listed source: {r}");
    let other = grpc_js::bridged_pod(&cp, w, "intruder", "intruder", &[]).await?;
    let r = grpc_js::client(
        &other.bootstrap,
        &["--target", target, "--calls", "20", "--wait", "2"],
    )
    .await?;
    let refused = r["unreachable"]
        .as_str()
        .is_some_and(|e| e.starts_with("PERMISSION_DENIED"))
        || r["failed"]["PERMISSION_DENIED"] == 20;
    assert!(
        r["ok"] == 0 && refused,
        "another identity gets PERMISSION_DENIED: {r}"
    );
    grpc_app::assert_all_acked(&r, "a denied grpc-js client");
    let bad = grpc_app::not_acked(&srv.csds());
    assert!(bad.is_empty(), "the server took its RBAC: {bad:?}");
    drop((me, other, bridged));
    Ok(())
}
