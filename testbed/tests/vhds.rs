//! Virtual hosts apart (VHDS) with real Envoy on delta ADS: the outbound table carries
//! no Service's virtual host; each comes as its own resource, so a canary step sends
//! that Service's host alone, and a removed Service's host goes before its cluster.
//! A SotW Envoy, and the control plane run with `--vhds false`, keep the whole table; a
//! running Envoy moved from one to the other by a control-plane rollout fails no request.

mod common;

use common::{CONVERGE, Mesh, Traffic, ip, plain_service, shares, wait_for_route, web_split};
use testbed::procs::{DataPlane, Stream, wait_until};

const RDS_UPDATES: &str = "http.outbound.rds.outbound-vhds.update_success";
const VHDS_UPDATES: &str = "http.outbound.rds.vhds.outbound-vhds.update_success";
const WEB_VHOST: &str = "outbound-vhds/web.default.svc.cluster.local:80";

/// The client's `xdsctl status` line.
fn status_line(mesh: &Mesh) -> anyhow::Result<String> {
    let (code, out) = mesh.xdsctl(&["status"])?;
    anyhow::ensure!(code == 0, "xdsctl status: {code}: {out}");
    let header = out.lines().next().unwrap_or_default().to_string();
    let line = out
        .lines()
        .find(|l| l.starts_with("client-0.default"))
        .unwrap_or_default();
    Ok(format!("{header}\n{line}"))
}

async fn backends(mesh: &Mesh) -> anyhow::Result<()> {
    mesh.write_ab_backends()?;
    mesh.write("split.yaml", &web_split(90, 10))?;
    wait_for_route(mesh, "outbound|80||web-b.default.svc.cluster.local").await
}

#[tokio::test]
async fn a_canary_step_sends_one_virtual_host_and_a_removed_service_leaves() -> anyhow::Result<()> {
    let mesh = Mesh::start(DataPlane::Envoy, Stream::Delta).await?;
    backends(&mesh).await?;
    let s = shares(&mesh, "web", 400).await?;
    assert!(
        (s.get("web-1").copied().unwrap_or(0.0) - 90.0).abs() <= 8.0,
        "{s:?}"
    );
    // The table asks for its hosts apart; they are held, ACKed and what Envoy holds.
    let tables = mesh
        .client
        .admin_get("/config_dump?resource=dynamic_route_configs")
        .await?;
    assert!(
        tables.contains("\"vhds\"") && tables.contains(WEB_VHOST),
        "{tables}"
    );
    let status = status_line(&mesh)?;
    let vhds_column = status
        .lines()
        .map(|l| l.split_whitespace().nth(9).unwrap_or_default().to_string())
        .collect::<Vec<_>>();
    assert_eq!(vhds_column, ["VHDS", "SYNCED"], "{status}");
    let (code, dump) =
        mesh.xdsctl(&["dump", "client-0.default", "--type", "vhds", "-o", "json"])?;
    assert_eq!(code, 0, "{dump}");
    let dump: serde_json::Value = serde_json::from_str(&dump)?;
    let held: Vec<(&str, &str, &str)> = dump["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default();
            (s("type"), s("name"), s("status"))
        })
        .filter(|(_, n, _)| *n == WEB_VHOST)
        .collect();
    assert_eq!(held, [("VHDS", WEB_VHOST, "ACKED")], "{dump}");
    let admin = format!("http://{}", mesh.client.admin);
    let (code, diff) = mesh.xdsctl(&["dump", "client-0.default", "--envoy-admin", &admin])?;
    assert_eq!(code, 0, "Envoy holds what it ACKed: {diff}");

    // A canary step: one virtual host, not the table.
    let rds_before = mesh.client.stat(RDS_UPDATES).await?;
    let vhds_before = mesh.client.stat(VHDS_UPDATES).await?.unwrap_or(0);
    mesh.write("split.yaml", &web_split(50, 50))?;
    wait_for_route(&mesh, "\"weight\": 50").await?;
    let s = shares(&mesh, "web", 400).await?;
    for pod in ["web-1", "web-2"] {
        assert!(
            (s.get(pod).copied().unwrap_or(0.0) - 50.0).abs() <= 10.0,
            "{s:?}"
        );
    }
    assert_eq!(
        mesh.client.stat(RDS_UPDATES).await?,
        rds_before,
        "the route table is not sent again"
    );
    assert!(mesh.client.stat(VHDS_UPDATES).await?.unwrap_or(0) > vhds_before);

    // A removed Service: its host goes, then its cluster; the name is unknown (404).
    mesh.write("split.yaml", "")?;
    mesh.write(
        "backends.yaml",
        &plain_service("web-a", mesh.web_port, &[ip(22)]),
    )?;
    let client = &mesh.client;
    wait_until(CONVERGE, "web-b's cluster to be removed", || async move {
        Ok(!client
            .cluster_names()
            .await?
            .iter()
            .any(|c| c == "outbound|80||web-b.default.svc.cluster.local"))
    })
    .await?;
    assert_eq!(mesh.call("web-b").await?.0, 404);
    assert_eq!(mesh.call("web-a").await?.0, 200);
    let (code, diff) = mesh.xdsctl(&["dump", "client-0.default", "--envoy-admin", &admin])?;
    assert_eq!(code, 0, "after the removal: {diff}");
    Ok(())
}

/// Where VHDS is not taken, the table holds every host: SotW streams, and a control
/// plane run with `--vhds false`.
async fn whole_table(stream: Stream, cp_args: &[&str]) -> anyhow::Result<()> {
    let mesh = Mesh::start_with(DataPlane::Envoy, stream, cp_args).await?;
    backends(&mesh).await?;
    let tables = mesh
        .client
        .admin_get("/config_dump?resource=dynamic_route_configs")
        .await?;
    assert!(
        !tables.contains("\"vhds\"") && tables.contains("\"web.default.svc.cluster.local:80\""),
        "{tables}"
    );
    let status = status_line(&mesh)?;
    assert!(status.contains("NOT SENT"), "no VHDS: {status}");
    assert_eq!(mesh.client.stat(VHDS_UPDATES).await?, None);
    let s = shares(&mesh, "web", 400).await?;
    assert!(
        (s.get("web-1").copied().unwrap_or(0.0) - 90.0).abs() <= 8.0,
        "{s:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_sotw_envoy_gets_the_whole_table() -> anyhow::Result<()> {
    whole_table(Stream::Sotw, &[]).await
}

#[tokio::test]
async fn vhds_false_gives_a_delta_envoy_the_whole_table() -> anyhow::Result<()> {
    whole_table(Stream::Delta, &["--vhds", "false"]).await
}

/// Whether the client's outbound table asks for its hosts apart.
async fn apart(mesh: &Mesh) -> anyhow::Result<bool> {
    Ok(mesh
        .client
        .admin_get("/config_dump?resource=dynamic_route_configs")
        .await?
        .contains("\"vhds\""))
}

/// A rollout that turns VHDS on, and one that turns it off, under traffic (several
/// callers, so a short gap between the table and its hosts would be hit): every request
/// is answered by the Service.
#[tokio::test]
async fn a_rollout_that_turns_vhds_on_or_off_fails_no_request() -> anyhow::Result<()> {
    let mut mesh = Mesh::start_with(DataPlane::Envoy, Stream::Delta, &["--vhds", "false"]).await?;
    assert!(!apart(&mesh).await?);
    for (flag, want) in [("true", true), ("false", false), ("true", true)] {
        let traffic: Vec<Traffic> = (0..4)
            .map(|_| Traffic::start(mesh.client.outbound, "web"))
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        mesh.cp.restart_with(&["--vhds", flag]).await?;
        let m = &mesh;
        wait_until(CONVERGE, "the table to change shape", || async move {
            Ok(apart(m).await? == want)
        })
        .await?;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (mut ok, mut failures) = (0, Vec::new());
        for t in traffic {
            let r = t.stop().await;
            ok += r.ok;
            failures.extend(r.failures);
        }
        assert!(
            failures.is_empty(),
            "--vhds {flag}: requests failed: {failures:?}"
        );
        assert!(ok > 100, "--vhds {flag}: traffic flowed ({ok})");
        assert_eq!(mesh.call("web").await?.0, 200);
        // Everything was taken: no host of the other shape is left to clash.
        let m = &mesh;
        wait_until(CONVERGE, "every type synced", || async move {
            let line = status_line(m)?;
            anyhow::ensure!(!line.contains("NACKED"), "--vhds {flag}: {line}");
            Ok(!line.contains("STALE"))
        })
        .await?;
        let tables = mesh
            .client
            .admin_get("/config_dump?resource=dynamic_route_configs")
            .await?;
        assert_eq!(tables.contains(WEB_VHOST), want, "--vhds {flag}: {tables}");
    }
    Ok(())
}
