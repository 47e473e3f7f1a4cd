//! Mutual TLS between real Envoy sidecars with certificates from Rudder's CA over SDS.

mod common;

use std::time::Duration;

use common::{CONVERGE, Mesh, Traffic, placement};
use testbed::procs::{DataPlane, Sidecar, Stream, wait_until};

/// Envoy's stat name for a listener on `ip:port`.
fn listener_stat(ip: std::net::IpAddr, port: u16, stat: &str) -> String {
    format!("listener.{ip}_{port}.{stat}")
}

async fn sidecars_talk_mtls_and_the_server_sees_the_callers_spiffe_id(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    let r = testbed::http::get_via(mesh.client.outbound, "http://web/").await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains("URI=spiffe://cluster.local/ns/default/sa/client"),
        "the server-side sidecar forwards the verified caller identity: {}",
        r.body
    );
    // The hop between sidecars was TLS: the server sidecar's inbound listener did
    // handshakes, and its certificate came over SDS.
    let web1 = &mesh.sidecars["web-1"];
    let web2 = &mesh.sidecars["web-2"];
    let mut handshakes = 0;
    for (envoy, last) in [(web1, 22u8), (web2, 23u8)] {
        let ip = common::ip(last);
        handshakes += envoy
            .stat(&listener_stat(ip, mesh.web_port, "ssl.handshake"))
            .await?
            .unwrap_or(0);
        assert!(envoy.stat("sds.default.update_success").await?.unwrap_or(0) >= 1);
    }
    assert!(
        handshakes >= 1,
        "no TLS handshakes on the inbound listeners"
    );
    // And the client sidecar counts them on the cluster, as Envoy does.
    let client_side = mesh
        .client
        .stat(&format!("cluster.{}.ssl.handshake", common::WEB_CLUSTER))
        .await?
        .unwrap_or(0);
    assert!(client_side >= 1, "no TLS handshakes counted on the cluster");
    let certs = web1.admin_get("/certs").await?;
    assert!(
        certs.contains("spiffe://cluster.local/ns/default/sa/web"),
        "{certs}"
    );
    Ok(())
}

async fn strict_refuses_plain_text_and_permissive_accepts_it(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let strict = Mesh::start(proxy, Stream::Delta).await?;
    let inbound = std::net::SocketAddr::new(common::ip(22), strict.web_port);
    let plain = testbed::http::get_via(inbound, "/").await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status != 200),
        "STRICT accepted plain text: {plain:?}"
    );
    // Through the mesh it still works.
    assert_eq!(strict.call("web").await?.0, 200);
    drop(strict);

    let permissive = Mesh::start_with(proxy, Stream::Sotw, &["--mtls-mode", "permissive"]).await?;
    let inbound = std::net::SocketAddr::new(common::ip(22), permissive.web_port);
    let r = testbed::http::get_via(inbound, "/").await?;
    assert_eq!(r.status, 200, "PERMISSIVE accepts plain text: {}", r.body);
    assert!(
        r.body.contains("xfcc=-"),
        "plain text has no verified caller: {}",
        r.body
    );
    let meshed = testbed::http::get_via(permissive.client.outbound, "http://web/").await?;
    assert!(
        meshed.body.contains("URI=spiffe://"),
        "mesh traffic is still mTLS: {}",
        meshed.body
    );
    Ok(())
}

async fn a_proxy_claiming_another_service_account_gets_nothing(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mesh = Mesh::start(proxy, Stream::Delta).await?;
    // The bootstrap claims service account "admin" but its client certificate is for
    // "web": reuse web-1's credentials with a forged node identity.
    let mut forged = placement("web-9", 29);
    forged.service_account = "admin".into();
    let certs = mesh.work.path().join("certs-web-1.default");
    let cert = certs.join("xds-client.crt");
    let key = certs.join("xds-client.key");
    let dir = mesh.work.path().join("forged");
    std::fs::create_dir_all(&dir)?;
    let envoy = Sidecar::start_as(
        proxy,
        &forged,
        &mesh.cp,
        Stream::Delta,
        &dir,
        &[],
        |creds| {
            std::fs::copy(&cert, creds.join("xds-client.crt"))?;
            std::fs::copy(&key, creds.join("xds-client.key"))?;
            Ok(())
        },
    )
    .await?;
    let cp = &mesh.cp;
    wait_until(
        CONVERGE,
        "the refusal in the control-plane log",
        || async move { Ok(cp.log_text().contains("refused xDS stream")) },
    )
    .await?;
    let log = mesh.cp.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("refused xDS stream"))
        .unwrap_or_default();
    assert!(
        line.contains("admin") && line.contains("spiffe://cluster.local/ns/default/sa/web"),
        "{line}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        envoy.stat("sds.default.update_success").await?.unwrap_or(0),
        0,
        "no secrets for a forged identity"
    );
    assert_eq!(envoy.stat("control_plane.connected_state").await?, Some(0));
    Ok(())
}

/// A 1-minute certificate lifetime and 2 minutes of traffic: certificates renew (at
/// half-life), and halfway through the root itself is rotated and the control plane
/// restarted. Not one request fails.
async fn certificates_and_the_root_rotate_under_traffic_without_failures(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let mut mesh = Mesh::start_with(proxy, Stream::Delta, &["--cert-lifetime", "60s"]).await?;
    let traffic = Traffic::start(mesh.client.outbound, "web");
    tokio::time::sleep(Duration::from_secs(45)).await;
    let renewed_before_root_rotation = mesh
        .client
        .stat("sds.default.update_success")
        .await?
        .unwrap_or(0);
    let out = std::process::Command::new(testbed::procs::workspace_bin("xds-server")?)
        .args(["ca", "rotate", "--ca-dir"])
        .arg(mesh.cp.ca_dir())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ca rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    mesh.cp.restart().await?;
    let client = &mesh.client;
    wait_until(
        CONVERGE,
        "the sidecar to reconnect after the root rotation",
        || async move { Ok(client.stat("control_plane.connected_state").await? == Some(1)) },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(75)).await;
    let bundle_updates = mesh
        .client
        .stat("sds.ROOTCA.update_success")
        .await?
        .unwrap_or(0);
    let results = traffic.stop().await;
    let renewals = mesh
        .client
        .stat("sds.default.update_success")
        .await?
        .unwrap_or(0);
    let server = mesh.sidecars["web-1"]
        .stat("sds.default.update_success")
        .await?
        .unwrap_or(0);
    eprintln!(
        "rotation: {} ok, {} failed; client certificate updates {renewed_before_root_rotation} before the root rotation, {renewals} in all; web-1 {server}; bundle updates {bundle_updates}",
        results.ok,
        results.failures.len()
    );
    assert!(
        renewed_before_root_rotation >= 2,
        "renewed at half-life before the root rotation"
    );
    assert!(
        renewals > renewed_before_root_rotation && server >= 3,
        "renewals continue from the new root"
    );
    assert!(bundle_updates >= 2, "the bundle with both roots was pushed");
    assert_eq!(
        mesh.client.stat("control_plane.connected_state").await?,
        Some(1)
    );
    assert!(
        results.failures.is_empty(),
        "requests failed during rotation: {:?}",
        results.failures
    );
    assert!(results.ok > 1000, "traffic flowed: {}", results.ok);
    let certs = mesh.client.admin_get("/certs").await?;
    assert!(certs.matches("\"ca_cert\"").count() >= 1, "{certs}");
    Ok(())
}

common::on_each_proxy!(
    sidecars_talk_mtls_and_the_server_sees_the_callers_spiffe_id,
    strict_refuses_plain_text_and_permissive_accepts_it,
    a_proxy_claiming_another_service_account_gets_nothing,
    certificates_and_the_root_rotate_under_traffic_without_failures,
);
