//! `rudder-proxy` against the real control plane: bootstrapped by `xds-server
//! bootstrap` with its agent, as testbed starts Envoy, it connects over mTLS (the
//! client certificate from the agent's files, the server checked by its SPIFFE ID),
//! ACKs what it is sent (the control plane records no NACK), reports LIVE, and lists
//! the listeners and clusters in its `/config_dump` as Envoy does.
//!
//! Needs the workspace binaries: `cargo build --workspace --bins` first.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use testbed::procs::{
    ControlPlane, DataPlane, PodPlacement, Sidecar, Stream, wait_until, workspace_bin,
};

const WAIT: Duration = Duration::from_secs(30);

fn manifests(dir: &Path) -> anyhow::Result<()> {
    let ip: IpAddr = "127.0.0.31".parse()?;
    let web: IpAddr = "127.0.0.32".parse()?;
    let text = [
        testbed::manifests::service("web", "http", 80, 8080, None),
        testbed::manifests::pod("web-0", "web", web, "web"),
        testbed::manifests::slice("web-x", "web", "http", 8080, &[web]),
        testbed::manifests::pod("client-0", "client", ip, "client"),
    ]
    .join("---\n");
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("mesh.yaml"), text)?;
    Ok(())
}

/// rudder-proxy as the client pod's sidecar: bootstrapped by `xds-server bootstrap`,
/// with its agent, as testbed starts every sidecar.
async fn start_proxy(cp: &ControlPlane, stream: Stream, work: &Path) -> anyhow::Result<Sidecar> {
    let ip: IpAddr = "127.0.0.31".parse()?;
    let pod = PodPlacement {
        namespace: "default".into(),
        pod: "client-0".into(),
        service_account: "client".into(),
        ip,
        app_ip: testbed::manifests::app_ip(ip),
    };
    Sidecar::start_on(DataPlane::RudderProxy, &pod, cp, stream, work).await
}

async fn stat(admin: SocketAddr, name: &str) -> anyhow::Result<Option<i64>> {
    let text = testbed::http::get_ok(
        admin,
        &format!("/stats?filter=^{}$", name.replace('.', "\\.")),
    )
    .await?;
    Ok(text.lines().find_map(|l| {
        let (k, v) = l.split_once(": ")?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    }))
}

/// The control plane's NACK count, over every type.
async fn control_plane_nacks(cp: &ControlPlane) -> anyhow::Result<u64> {
    let metrics = testbed::http::get_ok(cp.admin, "/metrics").await?;
    Ok(metrics
        .lines()
        .filter(|l| l.starts_with("rudder_xds_nacks_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

async fn connects_acks_and_dumps(stream: Stream) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    manifests(&work.path().join("manifests"))?;
    let cp = ControlPlane::start(&work.path().join("manifests"), work.path()).await?;
    let proxy = start_proxy(&cp, stream, work.path()).await?;
    let admin = proxy.admin;
    let log = || std::fs::read_to_string(&proxy.log).unwrap_or_default();

    let connected = wait_until(WAIT, "the proxy to connect over mTLS", || async move {
        Ok(
            stat(admin, "control_plane.connected_state").await? == Some(1)
                && stat(admin, "listener_manager.lds.update_attempt")
                    .await?
                    .unwrap_or(0)
                    >= 1,
        )
    })
    .await;
    if let Err(e) = connected {
        bail!("{e:#}\nproxy log:\n{}", log());
    }
    let live = wait_until(WAIT, "the proxy to be LIVE", || async move {
        Ok(testbed::http::get_ok(admin, "/ready").await?.trim() == "LIVE")
    })
    .await;
    if let Err(e) = live {
        bail!("{e:#}\nproxy log:\n{}", log());
    }
    // Everything it was sent is accepted: ACKed, by its stats and by the control plane.
    let stats = testbed::http::get_ok(admin, "/stats").await?;
    for name in [
        "listener_manager.lds.update_rejected",
        "cluster_manager.cds.update_rejected",
        "control_plane.rudder_nacks_total",
    ] {
        assert_eq!(stat(admin, name).await?, Some(0), "{name}\n{stats}");
    }
    assert!(
        stat(admin, "listener_manager.lds.update_success").await? >= Some(1),
        "{stats}"
    );
    assert_eq!(
        control_plane_nacks(&cp).await?,
        0,
        "the control plane saw NACKs\n{stats}"
    );

    let dump = testbed::http::get_ok(admin, "/config_dump?include_eds").await?;
    let v: serde_json::Value = serde_json::from_str(&dump)?;
    let section = |ty: &str, field: &str| -> Vec<serde_json::Value> {
        v["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["@type"] == format!("type.googleapis.com/envoy.admin.v3.{ty}"))
            .and_then(|c| c[field].as_array().cloned())
            .unwrap_or_default()
    };
    let listeners = section("ListenersConfigDump", "dynamic_listeners");
    assert!(!listeners.is_empty(), "no listeners in {dump}");
    assert!(
        listeners
            .iter()
            .all(|l| l["active_state"]["listener"]["name"] == l["name"])
    );
    let clusters = section("ClustersConfigDump", "dynamic_active_clusters");
    assert!(
        clusters.iter().any(|c| c["cluster"]["name"]
            .as_str()
            .is_some_and(|n| n.contains("web"))),
        "no cluster of web in {dump}"
    );
    assert!(
        !section("EndpointsConfigDump", "dynamic_endpoint_configs").is_empty(),
        "{dump}"
    );
    // xdsctl compares what the proxy ACKed with its /config_dump, as for Envoy.
    let ctl = work.path().join("ctl");
    let made = Command::new(workspace_bin("xds-server")?)
        .args(["credentials", "--cert-dir"])
        .arg(&ctl)
        .arg("--ca-dir")
        .arg(cp.ca_dir())
        .output()?;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let out = Command::new(workspace_bin("xdsctl")?)
        .args(["--server", &cp.xds.to_string(), "--cert-dir"])
        .arg(&ctl)
        .args(["dump", "client-0.default", "-o", "table", "--envoy-admin"])
        .arg(format!("http://{admin}"))
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("holds exactly what it ACKed"),
        "{text}"
    );
    let secrets =
        testbed::http::get_ok(admin, "/config_dump?resource=dynamic_active_secrets").await?;
    assert!(
        !secrets.contains("PRIVATE KEY"),
        "a private key in the dump: {secrets}"
    );
    Ok(())
}

#[tokio::test]
async fn sotw_proxy_connects_with_mtls_acks_and_dumps_its_config() -> anyhow::Result<()> {
    connects_acks_and_dumps(Stream::Sotw).await
}

#[tokio::test]
async fn delta_proxy_connects_with_mtls_acks_and_dumps_its_config() -> anyhow::Result<()> {
    connects_acks_and_dumps(Stream::Delta).await
}
