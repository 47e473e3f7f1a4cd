//! Proxyless gRPC end to end: real grpcio clients and xDS-enabled grpcio servers
//! (`testbed/grpc/mesh_app.py`) driven by the real control plane from a manifest
//! directory, with mesh mTLS from certificate files (gRFC A29) and every resource
//! checked ACKED in the apps' own CSDS, not only by RPC success.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use testbed::grpc_app::{self, GrpcServer};
use testbed::procs::{Agent, ControlPlane, free_port, wait_until};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 3, last])
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

/// An EndpointSlice of `service` listing pods (name, IP).
fn slice(service: &str, port: u16, pods: &[(&str, IpAddr)]) -> String {
    let mut eps = String::new();
    for (name, ip) in pods {
        eps.push_str(&format!(
            "  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n    targetRef: {{kind: Pod, name: {name}}}\n"
        ));
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: grpc, port: {port}}}]\nendpoints:\n{eps}"
    )
}

fn count(v: &Value, key: &str, name: &str) -> u64 {
    v[key][name].as_u64().unwrap_or(0)
}

fn failed(v: &Value) -> u64 {
    v["failed"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

async fn wait_server_acked(server: &GrpcServer, name: &str) -> anyhow::Result<()> {
    wait_until(
        Duration::from_secs(20),
        &format!("server {name}'s listener ACKED"),
        || {
            let csds = server.csds();
            let ok = csds.iter().any(|e| e["type"] == "Listener")
                && grpc_app::not_acked(&csds).is_empty();
            async move { Ok(ok) }
        },
    )
    .await?;
    Ok(())
}

/// Credentials for `default/SA` (with `extra` arguments, e.g. another trust domain) from
/// the control plane's CA, in `work/certs-TAG`.
fn credentials(
    cp: &ControlPlane,
    work: &Path,
    tag: &str,
    sa: &str,
    extra: &[&str],
) -> anyhow::Result<std::path::PathBuf> {
    let dir = work.join(format!("certs-{tag}"));
    let out = std::process::Command::new(testbed::procs::workspace_bin("xds-server")?)
        .args([
            "credentials",
            "--namespace",
            "default",
            "--service-account",
            sa,
        ])
        .args(extra)
        .arg("--ca-dir")
        .arg(cp.ca_dir())
        .arg("--cert-dir")
        .arg(&dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "xds-server credentials: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dir)
}

/// A scenario's start: grpcio is there (or the test fails), a work directory with an
/// empty manifest directory, and a free port for its servers.
fn scenario() -> anyhow::Result<(tempfile::TempDir, std::path::PathBuf, u16)> {
    grpc_app::python()?;
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(&manifests)?;
    Ok((work, manifests, free_port()?))
}

fn write(dir: &Path, docs: &[String]) -> anyhow::Result<()> {
    std::fs::write(dir.join("mesh.yaml"), docs.join("---\n"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_route_splits_retry_with_mtls_and_ack_everything() -> anyhow::Result<()> {
    let (work, manifests, port) = scenario()?;
    let (v1, v2, flaky, client, spoofed) = (ip(2), ip(3), ip(4), ip(1), ip(5));
    write(
        &manifests,
        &[
            service("greeter", "app: greeter", port),
            service("greeter-v1", "app: greeter, version: v1", port),
            service("greeter-v2", "app: greeter, version: v2", port),
            service("flaky", "app: flaky", port),
            service("spoofed", "app: spoofed", port),
            pod("spoofed-a", "app: spoofed", "greeter", spoofed),
            slice("spoofed", port, &[("spoofed-a", spoofed)]),
            pod("greeter-v1-a", "app: greeter, version: v1", "greeter", v1),
            pod("greeter-v2-a", "app: greeter, version: v2", "greeter", v2),
            pod("flaky-a", "app: flaky", "flaky", flaky),
            pod("client", "app: client", "client", client),
            slice("greeter", port, &[("greeter-v1-a", v1), ("greeter-v2-a", v2)]),
            slice("greeter-v1", port, &[("greeter-v1-a", v1)]),
            slice("greeter-v2", port, &[("greeter-v2-a", v2)]),
            slice("flaky", port, &[("flaky-a", flaky)]),
            "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: greeter-canary, namespace: default}\nspec:\n  service: greeter\n  backends:\n    - {service: greeter-v1, weight: 80}\n    - {service: greeter-v2, weight: 20}\n".into(),
            "apiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {name: flaky-retries, namespace: default}\nspec:\n  targetRef: {kind: Service, name: flaky}\n  retryOn: [unavailable]\n  numRetries: 4\n  backoff: {baseInterval: 5ms, maxInterval: 50ms}\n".into(),
        ],
    )?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    let w = work.path();
    let mut servers = Vec::new();
    for (pod, sa, name, at) in [
        ("greeter-v1-a", "greeter", "v1", v1),
        ("greeter-v2-a", "greeter", "v2", v2),
    ] {
        let b = grpc_app::bootstrap(&cp, w, pod, sa, &[])?;
        servers.push((
            name,
            GrpcServer::start(&b, w, name, SocketAddr::new(at, port), &[])?,
        ));
    }
    for (name, s) in &servers {
        wait_server_acked(s, name).await?;
    }
    // The failing server serves mTLS with its mesh certificate but is not xDS-enabled
    // (see mesh_app.py: grpcio's xDS server aborts on error statuses).
    let b = grpc_app::bootstrap(&cp, w, "flaky-a", "flaky", &[])?;
    let tls_dir = w.join("certs-flaky-a").display().to_string();
    let _flaky = GrpcServer::start(
        &b,
        w,
        "flaky",
        SocketAddr::new(flaky, port),
        &["--fail-every", "2", "--tls-dir", &tls_dir],
    )?;
    let boot = grpc_app::bootstrap(&cp, w, "client", "client", &[])?;

    // An 80/20 TrafficSplit over 1,000 RPCs, by the full name.
    let r = grpc_app::client(
        &boot,
        &[
            "--target",
            "xds:///greeter.default.svc.cluster.local:50051",
            "--calls",
            "1000",
        ],
    )
    .await?;
    assert_eq!(r["ok"], 1000, "split run: {r}");
    let share = count(&r, "answers", "v1") as f64 / 10.0;
    assert!(
        (76.0..=84.0).contains(&share),
        "v1 got {share}% of 1,000 RPCs, want 80 +- 4: {r}"
    );
    grpc_app::assert_all_acked(&r, "split run");
    eprintln!("measured: greeter-v1 got {share}% of 1,000 RPCs (weight 80)");

    // The short forms a client in the Service's namespace types.
    for target in [
        "xds:///greeter:50051",
        "xds:///greeter.default:50051",
        "xds:///greeter-v2",
    ] {
        let r = grpc_app::client(&boot, &["--target", target, "--calls", "20"]).await?;
        assert_eq!(r["ok"], 20, "{target}: {r}");
        grpc_app::assert_all_acked(&r, target);
    }

    // A Service added while the gRPC view is in use: its client Listener reaches the view
    // (as its own part, not by rebuilding every client), and a client calls it.
    std::fs::write(
        manifests.join("late.yaml"),
        [
            service("greeter-late", "app: greeter, version: v1", port),
            slice("greeter-late", port, &[("greeter-v1-a", v1)]),
        ]
        .join("---\n"),
    )?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut late = serde_json::Value::Null;
    for _ in 0..10 {
        let target = ["--target", "xds:///greeter-late:50051", "--calls", "20"];
        late = grpc_app::client(&boot, &target)
            .await
            .unwrap_or_else(|e| serde_json::json!({ "error": format!("{e:#}") }));
        if late["ok"] == 20 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(late["ok"], 20, "a Service added live: {late}");
    assert_eq!(count(&late, "answers", "v1"), 20, "{late}");
    grpc_app::assert_all_acked(&late, "a Service added live");

    // Retries: a server failing every other RPC with UNAVAILABLE, behind a RetryPolicy.
    let r = grpc_app::client(&boot, &["--target", "xds:///flaky:50051", "--calls", "500"]).await?;
    let ok = r["ok"].as_u64().unwrap_or(0);
    assert!(
        ok >= 495,
        "with retries {ok}/500 succeeded, want >= 99%: {r}"
    );
    eprintln!("measured: {ok}/500 RPCs succeeded against a server failing every other one");
    grpc_app::assert_all_acked(&r, "retry run");

    // The servers hold their listeners ACKED too.
    for (name, s) in &servers {
        let bad = grpc_app::not_acked(&s.csds());
        assert!(bad.is_empty(), "server {name}: {bad:?}");
    }

    // Nothing sent to any of them was rejected, as the control plane counts it too.
    let metrics = testbed::http::get_ok(cp.admin, "/metrics").await?;
    let nacks: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("rudder_xds_nacks_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(
        nacks.is_empty(),
        "the control plane counted NACKs: {nacks:?}"
    );
    assert!(
        metrics.contains("rudder_xds_pushes_total{type=\"RDS\"}"),
        "no xDS counters in /metrics:\n{metrics}"
    );

    // A plain-text client is refused by the mTLS server.
    let plain = grpc_app::direct(SocketAddr::new(v1, port)).await?;
    assert_eq!(
        plain["ok"], false,
        "plain text reached an mTLS server: {plain}"
    );

    // A server presenting another identity than the pods behind its Service run as is
    // refused by the client's SAN check.
    let impostor = credentials(&cp, w, "impostor", "impostor", &[])?;
    let impostor_dir = impostor.display().to_string();
    let _impostor = GrpcServer::start(
        &boot,
        w,
        "impostor",
        SocketAddr::new(spoofed, port),
        &["--tls-dir", &impostor_dir],
    )?;
    let r = grpc_app::client(
        &boot,
        &[
            "--target",
            "xds:///spoofed:50051",
            "--calls",
            "1",
            "--wait",
            "5",
        ],
    )
    .await?;
    assert_eq!(
        r["ok"], 0,
        "a server with the wrong identity was trusted: {r}"
    );
    assert!(
        r["unreachable"].as_str().is_some_and(|e| e.contains("SAN")),
        "want the SAN check's refusal: {r}"
    );
    grpc_app::assert_all_acked(&r, "spoofed run");

    // A client whose mesh certificate chains to the same CA but names another trust
    // domain (as with a root shared between meshes) is refused by the servers' RBAC,
    // while its config comes over its own, valid xDS certificate.
    let evil = credentials(
        &cp,
        w,
        "evil",
        "client",
        &["--trust-domain", "evil.example"],
    )?;
    let mut b: Value = serde_json::from_str(&std::fs::read_to_string(&boot)?)?;
    let provider = &mut b["certificate_providers"]["rudder"]["config"];
    for (key, file) in [
        ("certificate_file", "xds-client.crt"),
        ("private_key_file", "xds-client.key"),
    ] {
        provider[key] = Value::String(evil.join(file).display().to_string());
    }
    let evil_boot = w.join("grpc-bootstrap-evil.json");
    std::fs::write(&evil_boot, serde_json::to_string(&b)?)?;
    let r = grpc_app::client(
        &evil_boot,
        &[
            "--target",
            "xds:///greeter:50051",
            "--calls",
            "1",
            "--wait",
            "5",
        ],
    )
    .await?;
    assert_eq!(r["ok"], 0, "another trust domain got through: {r}");
    assert!(
        r["unreachable"]
            .as_str()
            .is_some_and(|e| e.starts_with("PERMISSION_DENIED")),
        "want PERMISSION_DENIED from the servers' RBAC: {r}"
    );

    // A client whose certificate is another identity's than the one it claims gets no
    // config: the control plane refuses its stream.
    let other = credentials(&cp, w, "other", "other", &[])?;
    let text = std::fs::read_to_string(&boot)?.replace(
        &w.join("certs-client").display().to_string(),
        &other.display().to_string(),
    );
    let wrong = w.join("grpc-bootstrap-wrong.json");
    std::fs::write(&wrong, text)?;
    let r = grpc_app::client(
        &wrong,
        &[
            "--target",
            "xds:///greeter:50051",
            "--calls",
            "1",
            "--wait",
            "5",
        ],
    )
    .await?;
    assert!(
        r["unreachable"].is_string() && r["ok"] == 0,
        "wrong identity got through: {r}"
    );
    assert!(
        cp.log_text()
            .contains("claims default/client but its client certificate is"),
        "no refusal in the control plane's log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_renews_a_grpc_apps_certificates_while_rpcs_flow() -> anyhow::Result<()> {
    let (work, manifests, port) = scenario()?;
    let (server_ip, client_ip) = (ip(12), ip(11));
    write(
        &manifests,
        &[
            service("echo", "app: echo", port),
            pod("echo-a", "app: echo", "echo", server_ip),
            pod("client", "app: client", "client", client_ip),
            slice("echo", port, &[("echo-a", server_ip)]),
        ],
    )?;
    // Certificates live 10 s: the agents renew them every 5 s.
    let cp = ControlPlane::start_with(&manifests, work.path(), &["--cert-lifetime", "10s"]).await?;
    let w = work.path();
    let mut agents = Vec::new();
    let mut boots = Vec::new();
    for (pod, sa) in [("echo-a", "echo"), ("client", "client")] {
        // `bootstrap --grpc` leaves the first credentials; the agent renews them and
        // writes the app's bootstrap.
        grpc_app::bootstrap(&cp, w, pod, sa, &["--cert-lifetime", "10s"])?;
        let out = w.join(format!("agent-bootstrap-{pod}.json"));
        let out_s = out.display().to_string();
        let id = format!("default/{sa}");
        let xds = cp.xds.to_string();
        agents.push(
            Agent::start(
                &w.join(format!("certs-{pod}")),
                &cp,
                w,
                &[
                    "--identity",
                    &id,
                    "--grpc",
                    "--bootstrap-out",
                    &out_s,
                    "--pod",
                    pod,
                    "--service-account",
                    sa,
                    "--xds-address",
                    &xds,
                ],
            )
            .await?,
        );
        wait_until(Duration::from_secs(10), "the agent's bootstrap", || {
            let ok = out.exists();
            async move { Ok(ok) }
        })
        .await?;
        boots.push(out);
    }
    let server = GrpcServer::start(&boots[0], w, "echo", SocketAddr::new(server_ip, port), &[])?;
    wait_server_acked(&server, "echo").await?;
    let r = grpc_app::client(
        &boots[1],
        &["--target", "xds:///echo:50051", "--duration", "16"],
    )
    .await?;
    let mut report = format!("{r}\n");
    for a in &mut agents {
        a.check_running()?;
        report.push_str(&format!("agent {}\n", a.status().await?));
    }
    assert!(r["ok"].as_u64().unwrap_or(0) > 100, "{report}");
    assert_eq!(failed(&r), 0, "RPCs failed across renewals: {report}");
    grpc_app::assert_all_acked(&r, "renewal run");
    for a in &mut agents {
        let s = a.status().await?;
        assert!(
            s["renewals"].as_u64().unwrap_or(0) >= 2,
            "an agent renewed fewer than twice in 16 s: {report}"
        );
    }
    Ok(())
}

/// A GRPCRoute (GAMMA) for proxyless clients: the method and a metadata match choose the
/// backend; a rule whose backend does not exist fails its calls with UNAVAILABLE at once,
/// without holding up the others; everything the control plane sends is ACKed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_match_methods_and_metadata_for_proxyless_clients() -> anyhow::Result<()> {
    let (work, manifests, port) = scenario()?;
    let (v1, v2, client) = (ip(2), ip(3), ip(1));
    write(
        &manifests,
        &[
            service("greeter", "app: greeter", port),
            service("greeter-v1", "app: greeter, version: v1", port),
            service("greeter-v2", "app: greeter, version: v2", port),
            pod("greeter-v1-a", "app: greeter, version: v1", "greeter", v1),
            pod("greeter-v2-a", "app: greeter, version: v2", "greeter", v2),
            pod("client", "app: client", "client", client),
            slice(
                "greeter",
                port,
                &[("greeter-v1-a", v1), ("greeter-v2-a", v2)],
            ),
            slice("greeter-v1", port, &[("greeter-v1-a", v1)]),
            slice("greeter-v2", port, &[("greeter-v2-a", v2)]),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: greeter, namespace: default}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: greeter, port: 50051}]\n  rules:\n    - matches:\n        - method: {service: rudder.test.Echo, method: Call}\n          headers: [{name: x-canary, value: \"yes\"}]\n      backendRefs: [{name: greeter-v2, port: 50051}]\n    - matches:\n        - method: {service: rudder.test.Echo}\n      backendRefs: [{name: greeter-v1, port: 50051}]\n    - matches:\n        - method: {service: rudder.test.Echo, method: Call}\n          headers: [{name: x-broken, value: \"yes\"}]\n      backendRefs: [{name: greeter-gone, port: 50051}]\n"
                .to_string(),
        ],
    )?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    let w = work.path();
    let mut servers = Vec::new();
    for (pod, name, at) in [("greeter-v1-a", "v1", v1), ("greeter-v2-a", "v2", v2)] {
        let b = grpc_app::bootstrap(&cp, w, pod, "greeter", &[])?;
        servers.push((
            name,
            GrpcServer::start(&b, w, name, SocketAddr::new(at, port), &[])?,
        ));
    }
    for (name, s) in &servers {
        wait_server_acked(s, name).await?;
    }
    let boot = grpc_app::bootstrap(&cp, w, "client", "client", &[])?;
    let target = "xds:///greeter:50051".to_string();
    let canary = grpc_app::client(
        &boot,
        &[
            "--target",
            &target,
            "--calls",
            "50",
            "--metadata",
            "x-canary=yes",
        ],
    )
    .await?;
    assert_eq!(canary["ok"], 50, "{canary}");
    assert_eq!(
        count(&canary, "answers", "v2"),
        50,
        "matching RPCs go to v2: {canary}"
    );
    grpc_app::assert_all_acked(&canary, "GRPCRoute with metadata");
    // A new channel: the rule with a missing backend does not hold it up.
    let start = std::time::Instant::now();
    let plain = grpc_app::client(&boot, &["--target", &target, "--calls", "50"]).await?;
    let took = start.elapsed();
    assert_eq!(plain["ok"], 50, "{plain}");
    assert!(
        took < std::time::Duration::from_secs(8),
        "a new channel took {took:?} (a missing cluster's 15 s timer?)"
    );
    assert_eq!(
        count(&plain, "answers", "v1"),
        50,
        "the rest go to v1: {plain}"
    );
    grpc_app::assert_all_acked(&plain, "GRPCRoute without metadata");
    eprintln!(
        "GRPCRoute: with x-canary {:?}, without {:?} ({took:?} for a new channel and 50 calls)",
        canary["answers"], plain["answers"]
    );
    let broken = grpc_app::client(
        &boot,
        &[
            "--target",
            &target,
            "--calls",
            "1",
            "--wait",
            "3",
            "--metadata",
            "x-broken=yes",
        ],
    )
    .await?;
    assert_eq!(broken["ok"], 0, "{broken}");
    assert!(
        broken["unreachable"]
            .as_str()
            .is_some_and(|e| e.starts_with("UNAVAILABLE")),
        "calls to a missing backend fail with UNAVAILABLE, not a deadline: {broken}"
    );
    grpc_app::assert_all_acked(&broken, "GRPCRoute with a missing backend");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_servers_enforce_traffic_targets() -> anyhow::Result<()> {
    let (work, manifests, port) = scenario()?;
    let (server, client, intruder) = (ip(2), ip(1), ip(6));
    let base = [
        service("greeter", "app: greeter", port),
        pod("greeter-a", "app: greeter", "greeter", server),
        pod("client", "app: client", "client", client),
        pod("intruder", "app: intruder", "intruder", intruder),
        slice("greeter", port, &[("greeter-a", server)]),
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: echo, namespace: default}\nspec:\n  matches: [{name: calls, pathRegex: \"/rudder[.]test[.]Echo/.*\", methods: [\"*\"]}]\n".to_string(),
    ];
    let target = "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: greeter-callers, namespace: default}\nspec:\n  destination: {kind: ServiceAccount, name: greeter, namespace: default}\n  rules: [{kind: HTTPRouteGroup, name: echo}]\n  sources: [{kind: ServiceAccount, name: client, namespace: default}]\n".to_string();
    let mut docs = base.to_vec();
    docs.push(target);
    write(&manifests, &docs)?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    let w = work.path();
    let b = grpc_app::bootstrap(&cp, w, "greeter-a", "greeter", &[])?;
    let srv = GrpcServer::start(&b, w, "greeter", SocketAddr::new(server, port), &[])?;
    wait_server_acked(&srv, "greeter").await?;
    let calls = |boot: std::path::PathBuf| async move {
        // A denied first call is retried for `--wait` seconds before the client gives up.
        let args = [
            "--target",
            "xds:///greeter:50051",
            "--calls",
            "20",
            "--wait",
            "2",
        ];
        grpc_app::client(&boot, &args).await
    };
    let allowed = grpc_app::bootstrap(&cp, w, "client", "client", &[])?;
    let denied = grpc_app::bootstrap(&cp, w, "intruder", "intruder", &[])?;
    let r = calls(allowed.clone()).await?;
    assert_eq!(r["ok"], 20, "the allowed source: {r}");
    let r = calls(denied.clone()).await?;
    // The client's first call (waiting for the channel) reports it, or every call.
    let refused = r["unreachable"]
        .as_str()
        .is_some_and(|e| e.starts_with("PERMISSION_DENIED"))
        || count(&r, "failed", "PERMISSION_DENIED") == 20;
    assert!(
        r["ok"] == 0 && refused,
        "another identity gets PERMISSION_DENIED: {r}"
    );
    grpc_app::assert_all_acked(&r, "a denied client");
    // The server took its RBAC: its listener is ACKED.
    let bad = grpc_app::not_acked(&srv.csds());
    assert!(bad.is_empty(), "server: {bad:?}");

    // Without the target the mesh default (allow) serves the other identity again.
    write(&manifests, &base)?;
    let (denied_ref, calls_ref) = (&denied, &calls);
    wait_until(
        Duration::from_secs(20),
        "the intruder served",
        || async move { Ok(calls_ref(denied_ref.clone()).await?["ok"] == 20) },
    )
    .await?;
    Ok(())
}
