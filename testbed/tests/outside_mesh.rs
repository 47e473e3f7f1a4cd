//! Destinations beyond one Service name, with real Envoy: endpoints that are not mesh
//! pods (plain) next to pods (mTLS) and the per-Service override, TCP ports through
//! HTTP CONNECT carried as TCP over mTLS, and the pods of a headless Service called by
//! their own address or StatefulSet name.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::{CONVERGE, Mesh, connect, echo_server, ip, placement};
use testbed::manifests::{app_ip, pod, service};
use testbed::procs::{Backend, DataPlane, Sidecar, Stream, free_port, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Calls `host` `n` times: answering pod -> count, and how many calls failed.
async fn spread(mesh: &Mesh, host: &str, n: usize) -> (BTreeMap<String, usize>, usize) {
    let mut seen = BTreeMap::new();
    let mut failed = 0;
    for _ in 0..n {
        match mesh.call(host).await {
            Ok((200, who)) => *seen.entry(who).or_insert(0) += 1,
            _ => failed += 1,
        }
    }
    (seen, failed)
}

/// A selector-less Service whose hand-made slice lists `ips` on `port`; `annotation`
/// is its `rudder.dev/upstream-tls`, if any.
fn mixed_service(port: u16, ips: &[std::net::IpAddr], annotation: Option<&str>) -> String {
    let ann = annotation
        .map(|a| format!("  annotations: {{rudder.dev/upstream-tls: {a}}}\n"))
        .unwrap_or_default();
    let eps: String = ips
        .iter()
        .map(|ip| format!("  - addresses: [\"{ip}\"]\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: mixed\n  namespace: default\n{ann}spec:\n  ports: [{{name: http, port: 80, targetPort: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: mixed-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: mixed}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n{eps}"
    )
}

async fn endpoints_outside_the_mesh_get_plain_connections_and_pods_get_mtls(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    // A "VM": a plain HTTP server at an address no pod has, on the web pods' port.
    let vm = ip(40);
    let _vm = Backend::start(SocketAddr::new(vm, mesh.web_port), "vm", mesh.work.path()).await?;
    // The Service lists the VM and pod web-1 (by address, as a hand-made slice does).
    let ips = [vm, ip(22)];
    mesh.write("mixed.yaml", &mixed_service(mesh.web_port, &ips, None))?;
    // auto: both answer; web-1's sidecar is STRICT, so that hop is mTLS, and the VM
    // only speaks plain HTTP.
    let both = wait_until(CONVERGE, "the VM and the pod to both answer", || {
        let mesh = &mesh;
        async move {
            let (seen, failed) = spread(mesh, "mixed", 20).await;
            Ok(failed == 0 && seen.contains_key("vm") && seen.contains_key("web-1"))
        }
    })
    .await;
    if let Err(e) = both {
        anyhow::bail!("{e:#}\n{}", mesh.cp.log_text());
    }
    let handshakes = mesh
        .sidecars
        .get("web-1")
        .ok_or_else(|| anyhow::anyhow!("no web-1 sidecar"))?
        .admin_get("/stats?filter=ssl.handshake$")
        .await?;
    assert!(
        handshakes
            .lines()
            .any(|l| l.starts_with("listener.") && !l.ends_with(": 0")),
        "web-1 accepted no TLS handshakes: {handshakes}"
    );

    // Forced mesh mTLS: the VM cannot present a mesh certificate, only web-1 answers.
    mesh.write(
        "mixed.yaml",
        &mixed_service(mesh.web_port, &ips, Some("mesh")),
    )?;
    wait_until(CONVERGE, "only the pod to answer under mesh", || {
        let mesh = &mesh;
        async move {
            let (seen, _) = spread(mesh, "mixed", 20).await;
            Ok(seen.keys().collect::<Vec<_>>() == ["web-1"])
        }
    })
    .await?;

    // Forced plain: web-1's STRICT sidecar refuses plain text, only the VM answers.
    mesh.write(
        "mixed.yaml",
        &mixed_service(mesh.web_port, &ips, Some("plain")),
    )?;
    wait_until(CONVERGE, "only the VM to answer under plain", || {
        let mesh = &mesh;
        async move {
            let (seen, _) = spread(mesh, "mixed", 20).await;
            Ok(seen.keys().collect::<Vec<_>>() == ["vm"])
        }
    })
    .await?;

    // A bad override value is refused by name, and the last good Service keeps serving.
    mesh.write(
        "mixed.yaml",
        &mixed_service(mesh.web_port, &ips, Some("sometimes")),
    )?;
    wait_until(CONVERGE, "the bad annotation to be logged", || {
        let log = mesh.cp.log_text();
        async move {
            Ok(log.lines().any(|l| {
                l.contains("Service default/mixed")
                    && l.contains("rudder.dev/upstream-tls")
                    && l.contains("sometimes")
            }))
        }
    })
    .await?;
    // Still plain (auto would let web-1 answer too).
    let (seen, _) = spread(&mesh, "mixed", 20).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["vm"]);
    Ok(())
}

async fn a_tcp_port_is_reached_by_http_connect_as_tcp_over_mtls(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    // Pod db-1 serves a TCP echo (a stand-in for a database) behind its own sidecar.
    let target = free_port()?;
    let _echo = echo_server(SocketAddr::new(app_ip(ip(30)), target)).await?;
    mesh.write(
        "db.yaml",
        &[
            service("db", "tcp-pg", 5432, target, None),
            pod("db-1", "db", ip(30), "db"),
            testbed::manifests::slice("db-abc", "db", "tcp-pg", target, &[ip(30)]),
        ]
        .join("---\n"),
    )?;
    let mut db = Sidecar::start_on(
        proxy,
        &placement("db-1", 30),
        &mesh.cp,
        Stream::Delta,
        mesh.work.path(),
    )
    .await?;
    db.wait_live(common::LIVE).await?;
    let proxy = mesh.client.outbound;
    let opened = wait_until(
        CONVERGE,
        "CONNECT db:5432 to open a tunnel",
        || async move { Ok(matches!(connect(proxy, "db:5432").await, Ok((200, _)))) },
    )
    .await;
    if let Err(e) = opened {
        anyhow::bail!("{e:#}\n{}", mesh.cp.log_text());
    }
    // Bytes go both ways, on every name a client may use.
    for authority in ["db:5432", "db.default.svc.cluster.local:5432"] {
        let (status, mut tunnel) = connect(proxy, authority).await?;
        assert_eq!(status, 200, "{authority}");
        for msg in ["SELECT 1;\n", "SELECT 2;\n"] {
            tunnel.write_all(msg.as_bytes()).await?;
            let mut back = vec![0u8; msg.len()];
            tunnel.read_exact(&mut back).await?;
            assert_eq!(String::from_utf8_lossy(&back), msg, "{authority}");
        }
    }
    // The hop between sidecars was mTLS: db-1's inbound listener (STRICT) did the
    // handshakes, and its TCP proxy carried the connections.
    let stats = db
        .admin_get("/stats?filter=(ssl.handshake|downstream_cx_total)$")
        .await?;
    let nonzero = |pat: &str| {
        stats
            .lines()
            .any(|l| l.contains(pat) && !l.ends_with(": 0"))
    };
    assert!(nonzero("ssl.handshake"), "{stats}");
    assert!(nonzero("tcp.inbound|"), "{stats}");
    // A TCP port is not an HTTP route: a plain request to it is not served.
    let (status, _) = mesh.call("db:5432").await?;
    assert_eq!(status, 404);
    Ok(())
}

async fn a_headless_service_pod_is_called_by_its_address_and_hostname(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    let port = mesh.web_port;
    let (a, b) = (ip(22), ip(23));
    // Before: a mesh pod's address already reaches that pod (the pod-address cluster),
    // its hostname is no route.
    assert_eq!(
        mesh.call(&format!("{a}:{port}")).await?,
        (200, "web-1".into())
    );
    assert_eq!(mesh.call(&format!("web-1.peers:{port}")).await?.0, 404);
    mesh.write(
        "peers.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: peers, namespace: default}}\nspec:\n  clusterIP: None\n  selector: {{app: web}}\n  ports: [{{name: http, port: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: peers-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: peers}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n  - addresses: [\"{a}\"]\n    hostname: web-1\n    targetRef: {{kind: Pod, name: web-1, namespace: default}}\n  - addresses: [\"{b}\"]\n    hostname: web-2\n    targetRef: {{kind: Pod, name: web-2, namespace: default}}\n"
        ),
    )?;
    let routed = wait_until(CONVERGE, "the pod addresses to be routed", || {
        let mesh = &mesh;
        async move {
            Ok(matches!(mesh.call(&format!("web-2.peers:{port}")).await, Ok((200, who)) if who == "web-2"))
        }
    })
    .await;
    if let Err(e) = routed {
        anyhow::bail!("{e:#}\n{}", mesh.cp.log_text());
    }
    // Each name reaches that pod alone, every time; the Service name still balances.
    for (host, pod) in [
        (format!("{a}:{port}"), "web-1"),
        (format!("{b}:{port}"), "web-2"),
        (format!("web-1.peers:{port}"), "web-1"),
        (
            format!("web-2.peers.default.svc.cluster.local:{port}"),
            "web-2",
        ),
    ] {
        let (seen, failed) = spread(&mesh, &host, 10).await;
        assert_eq!(failed, 0, "{host}");
        assert_eq!(seen.keys().collect::<Vec<_>>(), [pod], "{host}");
    }
    let (seen, failed) = spread(&mesh, &format!("peers:{port}"), 20).await;
    assert_eq!(failed, 0);
    assert_eq!(seen.len(), 2, "{seen:?}");
    // A pod that leaves the slice stops being routed by its hostname (its address,
    // a mesh pod's, still reaches it).
    mesh.write(
        "peers.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: peers, namespace: default}}\nspec:\n  clusterIP: None\n  selector: {{app: web}}\n  ports: [{{name: http, port: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: peers-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: peers}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n  - addresses: [\"{a}\"]\n    hostname: web-1\n"
        ),
    )?;
    wait_until(CONVERGE, "web-2's hostname to stop being routed", || {
        let (mesh, host) = (&mesh, format!("web-2.peers:{port}"));
        async move { Ok(matches!(mesh.call(&host).await, Ok((404, _)))) }
    })
    .await?;
    assert_eq!(
        mesh.call(&format!("{a}:{port}")).await?,
        (200, "web-1".into())
    );
    Ok(())
}

common::on_each_proxy!(
    endpoints_outside_the_mesh_get_plain_connections_and_pods_get_mtls,
    a_tcp_port_is_reached_by_http_connect_as_tcp_over_mtls,
    a_headless_service_pod_is_called_by_its_address_and_hostname,
);
