//! Credential renewal with real Envoy and the proxy agent: with 60-second certificates,
//! traffic flows through two sidecars for three minutes while the agents make a new key
//! and renew the certificate every half-life (Envoy reads it as its xDS client
//! certificate through file-based SDS, and as its mesh certificate from the agent's SDS
//! socket, no restart); the control plane is restarted after the first xDS client
//! certificate has expired. No request fails and every proxy reconnects.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{LIVE, Traffic, ip, placement};
use testbed::manifests::{app_ip, pod, service, slice};
use testbed::procs::{Backend, ControlPlane, DataPlane, Sidecar, Stream, free_port};

const LIFETIME: &str = "60s";
const RUN: Duration = Duration::from_secs(180);

async fn credentials_renew_under_traffic_across_a_control_plane_restart(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let web_port = free_port()?;
    std::fs::write(
        manifests.join("mesh.yaml"),
        [
            service("web", "http", 80, web_port, None),
            pod("client-0", "client", ip(21), "client"),
            pod("web-1", "web", ip(22), "web"),
            slice("web-abc", "web", "http", web_port, &[ip(22)]),
        ]
        .join("---\n"),
    )?;
    let mut cp =
        ControlPlane::start_with(&manifests, work.path(), &["--cert-lifetime", LIFETIME]).await?;
    let _backend = Backend::start(
        SocketAddr::new(app_ip(ip(22)), web_port),
        "web-1",
        work.path(),
    )
    .await?;
    let started = Instant::now();
    let short = ["--cert-lifetime", LIFETIME];
    let mut client = Sidecar::start_as(
        proxy,
        &placement("client-0", 21),
        &cp,
        Stream::Delta,
        work.path(),
        &short,
        |_| Ok(()),
    )
    .await?;
    let mut web = Sidecar::start_as(
        proxy,
        &placement("web-1", 22),
        &cp,
        Stream::Delta,
        work.path(),
        &short,
        |_| Ok(()),
    )
    .await?;
    client.wait_live(LIVE).await?;
    web.wait_live(LIVE).await?;

    let traffic = Traffic::start(client.outbound, "web");
    // The bootstrap's certificates expire 60 s after they were issued; restart the
    // control plane once they have (Envoy must reconnect with a renewed one).
    let restart_at = Duration::from_secs(75);
    tokio::time::sleep(restart_at.saturating_sub(started.elapsed())).await;
    let first_log = cp.log_text();
    cp.restart_same_addresses().await?;
    tokio::time::sleep(RUN.saturating_sub(started.elapsed())).await;
    let results = traffic.stop().await;

    let mut report = format!(
        "ok {} failed {} over {:?}\n",
        results.ok,
        results.failures.len(),
        started.elapsed()
    );
    client.check_running()?;
    web.check_running()?;
    let agents: Vec<&testbed::procs::Agent> = [&client, &web]
        .into_iter()
        .filter_map(|e| e.agent.as_ref())
        .collect();
    assert_eq!(agents.len(), 2, "every sidecar runs its agent");
    for a in &agents {
        let s = a.status().await?;
        report.push_str(&format!("agent {s}\n"));
    }
    println!("{report}");
    assert!(
        results.failures.is_empty(),
        "{report}{:?}\n{}",
        &results.failures[..results.failures.len().min(10)],
        cp.log_text()
    );
    assert!(results.ok > 1000, "{report}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for a in &agents {
        let s = a.status().await?;
        // Renewed at half-life, about every 30 s: four to ten times in three minutes
        // (not in a loop), and holding a certificate well before its expiry now.
        let renewals = s["renewals"].as_u64().unwrap_or(0);
        assert!((4..=10).contains(&renewals), "{report}{}", a.log_text());
        assert_eq!(s["failures"], 0, "{report}{}", a.log_text());
        assert!(s["not_after"].as_u64().unwrap_or(0) > now + 15, "{report}");
    }
    // Every proxy reconnected to the restarted control plane, more than once: a stream
    // ends when the certificate it was opened with expires, and each reconnection
    // presented a renewed one. No expired certificate was ever presented.
    let log = cp.log_text();
    for node in ["client-0.default", "web-1.default"] {
        let connects = log
            .lines()
            .filter(|l| l.contains("proxy connected") && l.contains(node))
            .count();
        assert!(connects >= 2, "{node} connected {connects} times\n{log}");
    }
    for l in [&first_log, &log] {
        assert!(
            !l.contains("refused an xDS client certificate"),
            "{report}{l}"
        );
    }
    // And the workload certificates (SDS) moved on too: traffic is mTLS, and it never
    // stopped while they renewed.
    let expiry = web.admin_get("/certs").await?;
    assert!(
        expiry.contains("spiffe://cluster.local/ns/default/sa/web"),
        "{expiry}"
    );
    // Each renewal reached Envoy's mesh TLS from the agent's SDS socket.
    for e in [&client, &web] {
        let pushed = e.stat("sds.default.update_success").await?.unwrap_or(0);
        assert!(pushed >= 4, "{pushed} SDS updates from the agent\n{report}");
    }
    Ok(())
}

common::on_each_proxy!(credentials_renew_under_traffic_across_a_control_plane_restart,);
