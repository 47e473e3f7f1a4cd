//! The control plane's life cycle with real Envoy sidecars connected and traffic
//! flowing: SIGTERM ends every stream, the process exits within its drain bound, and a
//! restart on the same addresses works at once; a connection past its maximum age is
//! replaced by a new one without a failed request; and the graceful drain the agent asks
//! of a sidecar Envoy before it stops.

mod common;

use std::time::Duration;

use common::{CONVERGE, Mesh, Traffic, WEB_CLUSTER, ip};
use testbed::manifests::slice;
use testbed::procs::{DataPlane, Stream, wait_until};

/// The drain bound given to the control plane.
const DRAIN: Duration = Duration::from_secs(3);

async fn sigterm_ends_streams_and_exits(stream: Stream) -> anyhow::Result<()> {
    let drain = format!("{}s", DRAIN.as_secs());
    let mut mesh = Mesh::start_with(DataPlane::Envoy, stream, &["--drain-time", &drain]).await?;
    let traffic = Traffic::start(mesh.client.outbound, "web");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for envoy in std::iter::once(&mesh.client).chain(mesh.sidecars.values()) {
        assert_eq!(envoy.stat("control_plane.connected_state").await?, Some(1));
    }

    mesh.cp.terminate()?;
    let (status, took) = mesh.cp.wait_exit(DRAIN * 3).await?;
    eprintln!("SIGTERM -> exit: {took:?} ({status})");
    assert!(status.success(), "exit status {status}");
    assert!(
        took < DRAIN,
        "exited after {took:?}, the bound is {DRAIN:?}"
    );
    let log = mesh.cp.log_text();
    assert!(log.contains("ending every xDS stream"), "{log}");
    assert!(log.contains("\"shut down\""), "{log}");

    // Every sidecar lost its stream and keeps serving on its last config.
    for envoy in std::iter::once(&mesh.client).chain(mesh.sidecars.values()) {
        wait_until(CONVERGE, "Envoy to see its stream end", || async move {
            Ok(envoy.stat("control_plane.connected_state").await? == Some(0))
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The same xDS and admin addresses are free again at once.
    mesh.cp.restart_same_addresses().await?;
    let client = &mesh.client;
    let reconnected = wait_until(CONVERGE, "Envoy to reconnect", || async move {
        Ok(client.stat("control_plane.connected_state").await? == Some(1))
    })
    .await?;
    eprintln!("reconnected {reconnected:?} after the restart");
    // It is served again: a change after the restart arrives.
    mesh.write(
        "slice-web.yaml",
        &slice("web-abc", "web", "http", mesh.web_port, &[ip(23)]),
    )?;
    wait_until(CONVERGE, "a change after the restart", || async move {
        Ok(client.endpoints_of(WEB_CLUSTER).await?.len() == 1)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    no_request_failed(traffic).await;
    Ok(())
}

/// Stops the traffic: every request succeeded, and enough of them to mean something.
async fn no_request_failed(traffic: Traffic) {
    let results = traffic.stop().await;
    eprintln!(
        "requests: {} ok, {} failed",
        results.ok,
        results.failures.len()
    );
    assert!(
        results.failures.is_empty(),
        "requests failed: {:?}",
        results.failures
    );
    assert!(results.ok > 50, "traffic flowed: {results:?}");
}

#[tokio::test]
async fn delta_sigterm_ends_streams_and_exits_within_the_drain_bound() -> anyhow::Result<()> {
    sigterm_ends_streams_and_exits(Stream::Delta).await
}

#[tokio::test]
async fn sotw_sigterm_ends_streams_and_exits_within_the_drain_bound() -> anyhow::Result<()> {
    sigterm_ends_streams_and_exits(Stream::Sotw).await
}

/// With a 2 s maximum connection age, Envoy's xDS connection is replaced again and again
/// (a new connection each time), it resends nothing, a change still lands, and traffic
/// never fails.
async fn aged_connections_are_replaced_without_a_failed_request(
    stream: Stream,
) -> anyhow::Result<()> {
    let mesh = Mesh::start_with(DataPlane::Envoy, stream, &["--max-connection-age", "2s"]).await?;
    let traffic = Traffic::start(mesh.client.outbound, "web");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = mesh.update_counters().await?;
    let client = &mesh.client;
    // Each age (2 s, give or take a tenth) ends in GOAWAY: Envoy opens a new connection.
    wait_until(
        Duration::from_secs(20),
        "three xDS connections",
        || async move {
            Ok(client
                .stat("cluster.rudder-xds.upstream_cx_total")
                .await?
                .unwrap_or(0)
                >= 3)
        },
    )
    .await?;
    wait_until(CONVERGE, "Envoy connected", || async move {
        Ok(client.stat("control_plane.connected_state").await? == Some(1))
    })
    .await?;
    assert_eq!(
        before,
        mesh.update_counters().await?,
        "a reconnection resends nothing that did not change"
    );
    mesh.write(
        "slice-web.yaml",
        &slice("web-abc", "web", "http", mesh.web_port, &[ip(23)]),
    )?;
    wait_until(
        CONVERGE,
        "a change after the reconnections",
        || async move { Ok(client.endpoints_of(WEB_CLUSTER).await?.len() == 1) },
    )
    .await?;
    no_request_failed(traffic).await;
    Ok(())
}

#[tokio::test]
async fn delta_aged_connections_are_replaced_without_a_failed_request() -> anyhow::Result<()> {
    aged_connections_are_replaced_without_a_failed_request(Stream::Delta).await
}

#[tokio::test]
async fn sotw_aged_connections_are_replaced_without_a_failed_request() -> anyhow::Result<()> {
    aged_connections_are_replaced_without_a_failed_request(Stream::Sotw).await
}

/// `POST` on an admin endpoint with a raw HTTP/1.1 request: the status code.
async fn admin_post(admin: std::net::SocketAddr, path: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await?;
    s.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await?;
    Ok(std::str::from_utf8(&head[9..12])?.parse()?)
}

/// What the agent's `/drain` (the proxy container's preStop hook, `proxy.drainTime`) asks
/// of real Envoy: `/drain_listeners?graceful` is accepted, and once the drain time (1 s
/// here) has passed the listeners stop, so the proxy takes no new connections before it
/// is stopped.
#[tokio::test]
async fn the_agents_drain_request_drains_real_envoy_gracefully() -> anyhow::Result<()> {
    let mesh = Mesh::start(DataPlane::Envoy, Stream::Delta).await?;
    let client = &mesh.client;
    let url = "http://web.default.svc.cluster.local/";
    assert_eq!(
        testbed::http::get_via(client.outbound, url).await?.status,
        200
    );
    assert_eq!(
        admin_post(client.admin, "/drain_listeners?graceful").await?,
        200
    );
    wait_until(
        CONVERGE,
        "Envoy's listeners to stop after the drain time",
        || async move {
            Ok(client
                .stat("listener_manager.listener_stopped")
                .await?
                .unwrap_or(0)
                > 0)
        },
    )
    .await?;
    assert!(
        testbed::http::get_via(client.outbound, url).await.is_err(),
        "a drained proxy takes no new connection"
    );
    Ok(())
}
