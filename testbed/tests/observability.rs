//! xdsctl, CSDS and metrics against real Envoy.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{CONVERGE, Mesh, ip};
use testbed::procs::{DataPlane, Stream, free_port, wait_until, workspace_bin};

fn xdsctl(mesh: &Mesh, args: &[&str]) -> anyhow::Result<(i32, String)> {
    mesh.xdsctl(args)
}

async fn all_synced(mesh: &Mesh) -> anyhow::Result<()> {
    wait_until(CONVERGE, "every proxy SYNCED", || async move {
        let (code, out) = xdsctl(mesh, &["status", "-o", "json"])?;
        let rows: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        Ok(code == 0
            && rows.as_array().is_some_and(|r| {
                r.len() == 4
                    && r.iter().all(|p| {
                        // A SotW stream has no VHDS: nothing of it is sent.
                        let sotw = p["stream"] == "sotw";
                        p["types"].as_object().is_some_and(|t| {
                            t.iter().all(|(k, v)| {
                                v == "SYNCED" || (sotw && k == "VHDS" && v == "NOT SENT")
                            })
                        })
                    })
            }))
    })
    .await
    .map_err(|e| {
        let now = xdsctl(mesh, &["status"])
            .map(|(_, t)| t)
            .unwrap_or_default();
        e.context(format!("xdsctl status:\n{now}"))
    })?;
    Ok(())
}

async fn status_and_dump_match_envoy(stream: Stream) -> anyhow::Result<()> {
    let mesh = Mesh::start(DataPlane::Envoy, stream).await?;
    all_synced(&mesh).await?;
    let (code, table) = xdsctl(&mesh, &["status"])?;
    eprintln!("xdsctl status:\n{table}");
    assert_eq!(code, 0);
    let line = table
        .lines()
        .find(|l| l.starts_with("client-0.default"))
        .unwrap_or_default();
    assert!(
        line.contains("spiffe://cluster.local/ns/default/sa/client"),
        "{line}"
    );
    let want = if stream == Stream::Delta {
        "delta"
    } else {
        "sotw"
    };
    // Every type SYNCED; a SotW stream has no VHDS.
    let synced = if stream == Stream::Delta { 6 } else { 5 };
    assert!(
        line.contains(want) && line.matches("SYNCED").count() == synced,
        "{line}"
    );

    // The dump shows the clusters Envoy's own config_dump shows.
    let (code, dump) = xdsctl(
        &mesh,
        &["dump", "client-0.default", "--type", "cds", "-o", "json"],
    )?;
    assert_eq!(code, 0, "{dump}");
    let dump: serde_json::Value = serde_json::from_str(&dump)?;
    let mut ours: Vec<String> = dump["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect();
    ours.sort();
    let mut envoys: Vec<String> = mesh
        .client
        .cluster_names()
        .await?
        .into_iter()
        .filter(|c| c != "rudder-xds" && c != "rudder-agent-sds")
        .collect();
    envoys.sort();
    assert_eq!(ours, envoys);
    assert!(
        dump["resources"][0]["config"]["@type"]
            .as_str()
            .unwrap_or_default()
            .ends_with("Cluster")
    );
    // Rudder sends the trust bundle only: no workload certificate, never a key.
    let (_, secrets) = xdsctl(
        &mesh,
        &["dump", "client-0.default", "--type", "sds", "-o", "json"],
    )?;
    assert!(
        secrets.contains("trustedCa")
            && !secrets.contains("certificateChain")
            && !secrets.contains("privateKey"),
        "{secrets}"
    );
    // And the live Envoy holds exactly that.
    let admin = format!("http://{}", mesh.client.admin);
    let (code, diff) = xdsctl(
        &mesh,
        &["dump", "client-0.default", "--envoy-admin", &admin],
    )?;
    assert_eq!(code, 0, "{diff}");
    let admin = format!("http://{}", mesh.sidecars["web-1"].admin);
    let (code, diff) = xdsctl(&mesh, &["dump", "web-1.default", "--envoy-admin", &admin])?;
    assert_eq!(code, 0, "a pod with inbound listeners too: {diff}");
    // Errors scripts can use.
    assert_eq!(xdsctl(&mesh, &["dump", "nobody.default"])?.0, 2);
    let out = Command::new(workspace_bin("xdsctl")?)
        .args([
            "--server",
            &format!("127.0.0.1:{}", free_port()?),
            "--insecure",
            "status",
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the control plane"));
    Ok(())
}

#[tokio::test]
async fn delta_xdsctl_status_and_dump_match_envoy() -> anyhow::Result<()> {
    status_and_dump_match_envoy(Stream::Delta).await
}

#[tokio::test]
async fn sotw_xdsctl_status_and_dump_match_envoy() -> anyhow::Result<()> {
    status_and_dump_match_envoy(Stream::Sotw).await
}

#[tokio::test]
async fn a_nack_shows_in_xdsctl_and_metrics() -> anyhow::Result<()> {
    let mesh = Mesh::start(DataPlane::Envoy, Stream::Delta).await?;
    all_synced(&mesh).await?;
    let (_squatter, port) = mesh.occupy_client_inbound_port()?;
    wait_until(CONVERGE, "NACKED in xdsctl status", || async {
        let (code, out) = xdsctl(&mesh, &["status"])?;
        Ok(code == 3
            && out
                .lines()
                .any(|l| l.starts_with("client-0.default") && l.contains("NACKED")))
    })
    .await?;
    let (code, dump) = xdsctl(
        &mesh,
        &["dump", "client-0.default", "--type", "lds", "-o", "table"],
    )?;
    eprintln!("xdsctl dump (LDS):\n{dump}");
    assert_eq!(code, 3);
    let row = dump
        .lines()
        .find(|l| l.contains(&format!("inbound|{port}")))
        .unwrap_or_default();
    assert!(
        row.contains("NACKED") && row.contains(&format!("{}:{port}", ip(21))),
        "Envoy's error text: {row}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = testbed::http::get_ok(mesh.cp.admin, "/metrics").await?;
    let nacks = metrics
        .lines()
        .find(|l| l.starts_with("rudder_xds_nacks_total{type=\"LDS\"}"))
        .unwrap_or_default();
    assert!(nacks.ends_with(" 1"), "counted once: {nacks}");
    Ok(())
}

#[tokio::test]
async fn metrics_health_and_readiness() -> anyhow::Result<()> {
    let mesh = Mesh::start(DataPlane::Envoy, Stream::Sotw).await?;
    all_synced(&mesh).await?;
    assert_eq!(
        testbed::http::get_ok(mesh.cp.admin, "/healthz")
            .await?
            .trim(),
        "ok"
    );
    assert_eq!(
        testbed::http::get_ok(mesh.cp.admin, "/readyz")
            .await?
            .trim(),
        "ready"
    );
    let text = testbed::http::get_ok(mesh.cp.admin, "/metrics").await?;
    // Prometheus text: every sample line is `name{labels} value` with a numeric value.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
    }
    let sample = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        sample("rudder_connected_proxies{kind=\"envoy\",stream=\"sotw\"}"),
        4.0,
        "{text}"
    );
    assert!(sample("rudder_xds_pushes_total{type=\"CDS\"}") >= 4.0);
    // SDS over ADS is the trust bundle only: one per proxy.
    assert!(sample("rudder_xds_resources_sent_total{type=\"SDS\"}") >= 4.0);
    assert!(sample("rudder_convergence_seconds_count") >= 4.0);
    assert!(
        sample("rudder_translation_seconds_count") >= 1.0,
        "builds are timed"
    );
    assert!(
        sample("rudder_snapshot_resources") >= 4.0,
        "two services, a cluster and endpoints each"
    );
    // Certificates are signed only for agents' requests: none has renewed yet (the
    // sidecars' first certificates come from the development bootstrap).
    assert_eq!(sample("rudder_certificates_issued"), 0.0, "{text}");
    Ok(())
}

#[tokio::test]
async fn a_rejected_route_is_traced_to_its_traffic_split() -> anyhow::Result<()> {
    // Objects Envoy would reject are refused before they reach a proxy, so the rejection
    // here comes from a proxy whose operator tightened Envoy's regex limit (runtime
    // `re2.max_program_size.error_level`, default 100) below what the model checks.
    let mesh = Mesh::start_custom(DataPlane::Envoy, Stream::Delta, &[], |boot| {
        boot["layered_runtime"] = serde_json::json!({"layers": [
            {"name": "tight", "static_layer": {"re2.max_program_size.error_level": 10}}
        ]});
    })
    .await?;
    all_synced(&mesh).await?;
    // A path regex valid for the model (about 23 RE2 instructions) that this proxy
    // cannot take: the virtual host of web (apart from the table: a delta Envoy 1.37+)
    // is rejected.
    let port = mesh.web_port;
    let svc = |n: &str, last: u8| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {n}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: {port}}}]\n---\n{}",
            testbed::manifests::slice(&format!("{n}-x"), n, "http", port, &[ip(last)])
        )
    };
    let policy = format!(
        "{}---\n{}---\napiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {{name: bad, namespace: default}}\nspec:\n  matches:\n    - {{name: broken, pathRegex: \"/api/v[0-9]+/users/[a-z0-9-]+\"}}\n---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: web-split, namespace: default}}\nspec:\n  service: web\n  backends: [{{service: web-a, weight: 50}}, {{service: web-b, weight: 50}}]\n  matches: [{{kind: HTTPRouteGroup, name: bad}}]\n",
        svc("web-a", 22),
        svc("web-b", 23)
    );
    mesh.write("policy.yaml", &policy)?;
    let cp = &mesh.cp;
    wait_until(
        CONVERGE,
        "the rejection traced to the TrafficSplit",
        || async move {
            let log = cp.log_text();
            Ok(log.lines().any(|l| {
                l.contains("TrafficSplit default/web-split")
                    && l.contains("Rejected")
                    && l.contains("rejected VHDS")
                    && l.contains("outbound-vhds/web.default.svc.cluster.local:80")
            }))
        },
    )
    .await?;
    let log = mesh.cp.log_text();
    let nack = log
        .lines()
        .find(|l| l.contains("proxy rejected config"))
        .unwrap_or_default();
    assert!(
        nack.contains("TrafficSplit default/web-split"),
        "the NACK names its origin: {nack}"
    );
    // Traffic keeps flowing on the last good routes.
    assert_eq!(mesh.answering("web", 20).await?.len(), 2);
    // Only the tightened sidecar rejected it, once; no resend loop adds more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = testbed::http::get_ok(mesh.cp.admin, "/metrics").await?;
    let nacks = metrics
        .lines()
        .filter(|l| l.starts_with("rudder_xds_nacks_total{"))
        .collect::<Vec<_>>();
    assert_eq!(
        nacks,
        ["rudder_xds_nacks_total{type=\"VHDS\"} 1"],
        "one NACK, of the host apart, from the one proxy that rejects it"
    );
    // Containment shows: one identity with what is left out for it.
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.split(' ').next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(sample("rudder_containment_identities"), 1.0, "{metrics}");
    assert!(sample("rudder_containment_objects") >= 1.0, "{metrics}");
    Ok(())
}

#[tokio::test]
async fn csds_streams_an_answer_per_request_and_refuses_workload_identities() -> anyhow::Result<()>
{
    use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
    use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
    let mesh = Mesh::start(DataPlane::Envoy, Stream::Delta).await?;
    all_synced(&mesh).await?;
    xdsctl(&mesh, &["status"])?; // writes the admin credentials
    let connect = |dir: std::path::PathBuf| {
        let server = mesh.cp.xds;
        async move {
            let read = |f: &str| std::fs::read_to_string(dir.join(f));
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read("xds-ca.crt")?))
                .identity(tonic::transport::Identity::from_pem(
                    read("xds-client.crt")?,
                    read("xds-client.key")?,
                ))
                .domain_name("127.0.0.1");
            let channel = tonic::transport::Endpoint::from_shared(format!("https://{server}"))?
                .tls_config(tls)?
                .connect()
                .await?;
            anyhow::Ok(ClientStatusDiscoveryServiceClient::new(channel))
        }
    };
    let mut admin = connect(mesh.work.path().join("xdsctl-creds")).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut answers = admin
        .stream_client_status(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    for _ in 0..2 {
        tx.send(ClientStatusRequest {
            exclude_resource_contents: true,
            ..Default::default()
        })
        .await?;
        let answer = answers
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        assert_eq!(answer.config.len(), 4, "one config per connected proxy");
        assert!(
            answer
                .config
                .iter()
                .flat_map(|c| &c.generic_xds_configs)
                .all(|g| g.xds_config.is_none())
        );
    }
    // A workload's own credentials may not read every proxy's config.
    let mut workload = connect(mesh.work.path().join("certs-client-0.default")).await?;
    let refused = workload
        .fetch_client_status(ClientStatusRequest::default())
        .await;
    assert_eq!(
        refused.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::PermissionDenied)
    );
    Ok(())
}

/// Status tells the truth: after a control-plane restart (proxies reconnect holding the
/// current config), after the object behind a NACK is removed, and after a Service is
/// removed (it leaves the record, so the dump shows no drift against Envoy).
async fn status_after_restart_cleared_nack_and_removal(stream: Stream) -> anyhow::Result<()> {
    let mut mesh = Mesh::start(DataPlane::Envoy, stream).await?;
    all_synced(&mesh).await?;

    mesh.cp.restart_same_addresses().await?;
    all_synced(&mesh).await.map_err(|e| {
        e.context(format!(
            "after a restart, reconnected proxies are SYNCED; control plane log:\n{}",
            mesh.cp.log_text()
        ))
    })?;

    let services = std::fs::read_to_string(mesh.manifests().join("services.yaml"))?;
    let (_squatter, _) = mesh.occupy_client_inbound_port()?;
    wait_until(CONVERGE, "NACKED in xdsctl status", || async {
        let (code, out) = xdsctl(&mesh, &["status"])?;
        Ok(code == 3
            && out
                .lines()
                .any(|l| l.starts_with("client-0.default") && l.contains("NACKED")))
    })
    .await?;
    mesh.write("services.yaml", &services)?;
    all_synced(&mesh)
        .await
        .map_err(|e| e.context("with the NACKed object removed, the proxy is SYNCED"))?;

    mesh.write(
        "extra.yaml",
        &testbed::manifests::service("gone", "http", 80, mesh.web_port, None),
    )?;
    let cluster = "outbound|80||gone.default.svc.cluster.local";
    let client = &mesh.client;
    wait_until(CONVERGE, "the extra Service in Envoy", || async move {
        Ok(client.cluster_names().await?.iter().any(|c| c == cluster))
    })
    .await?;
    mesh.write("extra.yaml", "")?;
    wait_until(
        CONVERGE,
        "the extra Service gone from Envoy",
        || async move { Ok(!client.cluster_names().await?.iter().any(|c| c == cluster)) },
    )
    .await?;
    all_synced(&mesh).await?;
    let admin = format!("http://{}", mesh.client.admin);
    wait_until(CONVERGE, "no drift between the record and Envoy", || {
        let admin = admin.clone();
        let mesh = &mesh;
        async move {
            let (code, diff) =
                xdsctl(mesh, &["dump", "client-0.default", "--envoy-admin", &admin])?;
            if code != 0 {
                eprintln!("drift: {diff}");
            }
            Ok(code == 0)
        }
    })
    .await?;
    let (_, eds) = xdsctl(
        &mesh,
        &["dump", "client-0.default", "--type", "eds", "-o", "json"],
    )?;
    assert!(
        !eds.contains("gone.default"),
        "removed endpoints left the record: {eds}"
    );
    Ok(())
}

#[tokio::test]
async fn delta_status_after_restart_cleared_nack_and_removal() -> anyhow::Result<()> {
    status_after_restart_cleared_nack_and_removal(Stream::Delta).await
}

#[tokio::test]
async fn sotw_status_after_restart_cleared_nack_and_removal() -> anyhow::Result<()> {
    status_after_restart_cleared_nack_and_removal(Stream::Sotw).await
}
