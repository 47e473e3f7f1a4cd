//! Authorization on an intercepted pod's ports that no Service names (its inbound
//! passthrough), with the init container's rules installed for real in a network
//! namespace and the proxy as the proxy UID: a TrafficTarget naming one such port closes
//! that port to every caller it does not list (here a plain-text caller under
//! PERMISSIVE), before the app is connected (the app there speaks first, and a denied
//! caller must not be greeted), and the pod's other unserved ports keep the default
//! allow. Before, a target naming a port was dropped on the passthrough and left the
//! port open.
//!
//! Needs root (network namespaces, iptables): without them the test fails.

use std::net::SocketAddr;
use std::time::Duration;

use testbed::procs::{ControlPlane, DataPlane, wait_until};

mod common;

use common::netns::{PodNet, pod_workdir};

/// The target of port 9090 of service account `server`, with its TCPRoute.
const TARGET: &str = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {name: admin-port, namespace: default}\nspec:\n  matches: {ports: [9090]}\n---\napiVersion: access.smi-spec.io/v1alpha2\nkind: TrafficTarget\nmetadata: {name: admin, namespace: default}\nspec:\n  destination: {kind: ServiceAccount, name: server, namespace: default, port: 9090}\n  rules: [{kind: TCPRoute, name: admin-port}]\n  sources: [{kind: ServiceAccount, name: ops}]\n";

/// What a plain-text caller from the host that sends a line is told by `addr` within a
/// second (a caller must speak first under PERMISSIVE, and enough for the proxy to tell
/// TLS from plain text).
async fn greeting(addr: SocketAddr) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return Vec::new();
    };
    if s.write_all(b"hello, server\n").await.is_err() {
        return Vec::new();
    }
    let mut got = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(1), s.read(&mut got)).await {
        Ok(Ok(n)) => got[..n].to_vec(),
        _ => Vec::new(),
    }
}

/// Whether a plain-text GET of `addr` from the host is answered by the app.
async fn answered(addr: SocketAddr) -> bool {
    testbed::http::get_via(addr, &format!("http://{addr}/"))
        .await
        .is_ok_and(|r| r.status == 200 && r.body.starts_with("app-"))
}

async fn a_target_closes_an_unserved_port_and_leaves_the_others(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mut net = PodNet::new(if proxy == DataPlane::Envoy { 241 } else { 240 })?;
    net.proxy = proxy;
    let server = net.add_pod("server-0")?;
    let (work, manifests) = pod_workdir()?;
    std::fs::write(
        manifests.join("mesh.yaml"),
        testbed::manifests::pod("server-0", "server", server.ip, "server"),
    )?;
    let cp = ControlPlane::start_on(
        &manifests,
        work.path(),
        net.host,
        &["--mtls-mode", "permissive"],
    )
    .await?;
    let (admin, other) = (
        SocketAddr::new(server.ip, 9090),
        SocketAddr::new(server.ip, 9091),
    );
    // The app on 9090 greets each connection and notes it.
    let accepts = work.path().join("accepts-9090");
    std::fs::write(&accepts, "")?;
    let connections = || std::fs::read_to_string(&accepts).map(|t| t.lines().count());
    net.spawn_in(
        &server,
        "app-9090",
        &[
            "/usr/bin/python3",
            "-c",
            &format!("import socketserver\nclass H(socketserver.StreamRequestHandler):\n  def handle(self):\n    open('{}','a').write('accept\\n')\n    self.wfile.write(b'hi\\n')\n    self.rfile.readline()\nsocketserver.ThreadingTCPServer.allow_reuse_address=True\nsocketserver.ThreadingTCPServer(('0.0.0.0',9090),H).serve_forever()\n", accepts.display()),
        ],
        work.path(),
    )?;
    net.echo_at(&server, "0.0.0.0:9091".parse()?, "app-9091", work.path())?;
    net.inject(&server, "server", &cp, work.path()).await?;

    // No Service names either port: both pass through, open under PERMISSIVE.
    let open = wait_until(Duration::from_secs(20), "both ports open", || async move {
        Ok(greeting(admin).await == b"hi\n" && answered(other).await)
    })
    .await;
    if let Err(e) = open {
        anyhow::bail!("{e:#}\n{}", net.logs(work.path()));
    }
    std::fs::write(manifests.join("authz.yaml"), TARGET)?;
    wait_until(Duration::from_secs(20), "port 9090 closed", || async move {
        Ok(greeting(admin).await.is_empty())
    })
    .await?;
    let before = connections()?;
    for _ in 0..5 {
        let leaked = greeting(admin).await;
        assert!(
            leaked.is_empty(),
            "the target's port stays closed: {:?}",
            String::from_utf8_lossy(&leaked)
        );
        assert!(answered(other).await, "the other port keeps the default");
    }
    assert_eq!(
        connections()?,
        before,
        "a refused caller's connection never reaches the app"
    );
    let closed = net.stats(&server, "tcp.blackhole.downstream_cx_total$")?;
    assert!(
        closed.lines().any(|l| !l.ends_with(": 0")),
        "plain text to the target's port is closed: {closed}"
    );
    // The target gone, the port opens again.
    std::fs::remove_file(manifests.join("authz.yaml"))?;
    wait_until(
        Duration::from_secs(20),
        "port 9090 open again",
        || async move { Ok(greeting(admin).await == b"hi\n") },
    )
    .await?;
    net.check_running()?;
    drop(net);
    Ok(())
}

common::on_each_proxy!(a_target_closes_an_unserved_port_and_leaves_the_others);
