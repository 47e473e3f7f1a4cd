//! `envoy-bench`: one real Envoy holding many clusters (10,000 by default) receives a
//! one-endpoint change; how long until it has ACKed it?
//!
//! The control plane runs from its binary in manifest mode with mutual TLS, and Envoy
//! (bootstrapped by `xds-server bootstrap`, `--concurrency 1`) beside it, neither pinned. Each
//! change rewrites one EndpointSlice file. Two times are reported per change:
//! - **server to ACK**: from the control plane seeing the change to Envoy's ACK of
//!   everything it was sent (`rudder_convergence_seconds`, one sample per change);
//! - **file to ACK**: from the file's rename to that sample appearing (adds the manifest
//!   watch and this tool's 2 ms polling).
//!
//! At the end Envoy's `/clusters` is checked for the last changed address, so the number is
//! for a change Envoy really applied.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;
use testbed::bench::{mesh, percentiles};
use testbed::procs::{ControlPlane, PodPlacement, Sidecar, Stream, free_port, wait_until};

#[derive(Parser, Debug)]
struct Args {
    /// Services (one cluster each) in the mesh.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoints per service.
    #[arg(long, default_value_t = 3)]
    endpoints: usize,
    /// One-endpoint changes to measure.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Envoy's stream type.
    #[arg(long, default_value = "delta", value_parser = ["delta", "sotw"])]
    stream: String,
    /// Write the results here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// `rudder_convergence_seconds` count and sum from the control plane's /metrics.
async fn convergence(cp: &ControlPlane) -> anyhow::Result<(u64, f64)> {
    let text = testbed::http::get_ok(cp.admin, "/metrics").await?;
    let value = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    Ok((
        value("rudder_convergence_seconds_count").unwrap_or(0.0) as u64,
        value("rudder_convergence_seconds_sum").unwrap_or(0.0),
    ))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let dir = work.path().join("manifests");
    std::fs::create_dir(&dir)?;
    mesh::write(&dir, args.services, args.endpoints, 0)?;
    // Envoy's own pod and the service selecting it, on a loopback address of this machine.
    let pid = std::process::id();
    let ip = IpAddr::V4(Ipv4Addr::new(
        127,
        100 + (pid % 100) as u8,
        ((pid / 100) % 250) as u8 + 1,
        2,
    ));
    let app_port = free_port()?;
    std::fs::write(
        dir.join("envoy.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: envoy-0, namespace: {ns}, labels: {{app: envoy-app}}}}\nspec:\n  serviceAccountName: bench\n  containers: [{{name: app, ports: [{{name: http, containerPort: {app_port}}}]}}]\nstatus: {{podIP: \"{ip}\"}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: envoy-app, namespace: {ns}}}\nspec:\n  selector: {{app: envoy-app}}\n  ports: [{{name: http, port: 80, targetPort: {app_port}}}]\n",
            ns = mesh::NAMESPACE
        ),
    )?;
    let cp = ControlPlane::start_with(
        &dir,
        work.path(),
        &[
            "--manifest-debounce-ms",
            "0",
            "--debounce-ms",
            "0",
            "--max-subscribed-names",
            "1000000",
        ],
    )
    .await?;
    let pod = PodPlacement {
        namespace: mesh::NAMESPACE.to_string(),
        pod: "envoy-0".to_string(),
        service_account: "bench".to_string(),
        ip,
        app_ip: testbed::manifests::app_ip(ip),
    };
    let stream = if args.stream == "sotw" {
        Stream::Sotw
    } else {
        Stream::Delta
    };
    let started = Instant::now();
    let mut envoy = Sidecar::start(&pod, &cp, stream, work.path()).await?;
    envoy.wait_live(Duration::from_secs(300)).await?;
    // LIVE means listeners are warm; wait for the first ACK of everything too.
    wait_until(
        Duration::from_secs(300),
        "Envoy's first full ACK",
        || async {
            Ok(convergence(&cp).await?.0 >= 1
                || envoy_clusters_ready(&envoy, args.services).await?)
        },
    )
    .await?;
    let initial = started.elapsed();
    println!(
        "Envoy with {} clusters ({} endpoints each, {}): LIVE in {:.0} ms",
        args.services + 1,
        args.endpoints,
        args.stream,
        initial.as_secs_f64() * 1e3
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let target = 7 % args.services;
    let mut server_to_ack = Vec::new();
    let mut file_to_ack = Vec::new();
    for k in 0..args.changes {
        let generation = k + 1;
        let (count, sum) = convergence(&cp).await?;
        let start = Instant::now();
        mesh::replace(
            &dir,
            &format!("slice-{target}.yaml"),
            &mesh::slice(
                target,
                args.endpoints,
                |j| if j == 0 { generation } else { 0 },
            ),
        )?;
        let mut after = (count, sum);
        while after.0 == count {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("Envoy did not ACK change {k} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            after = convergence(&cp).await?;
        }
        file_to_ack.push(start.elapsed());
        server_to_ack.push(Duration::from_secs_f64(
            ((after.1 - sum) / (after.0 - count) as f64).max(0.0),
        ));
        // Let Envoy settle between changes.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = mesh::endpoint_ip(target, 0, args.changes);
    let clusters = envoy.admin_get("/clusters").await?;
    if !clusters.contains(&last) {
        bail!("Envoy's /clusters does not show the last change ({last})");
    }
    let (s50, s99, smax) = percentiles(server_to_ack.clone());
    let (f50, f99, fmax) = percentiles(file_to_ack.clone());
    println!(
        "  one-endpoint change, server to ACK: p50 {s50:.1} ms, p99 {s99:.1} ms, max {smax:.1} ms"
    );
    println!(
        "  one-endpoint change, file to ACK:   p50 {f50:.1} ms, p99 {f99:.1} ms, max {fmax:.1} ms"
    );
    if let Some(path) = &args.json {
        let out = json!({
            "clusters": args.services + 1,
            "endpoints": args.endpoints,
            "stream": args.stream,
            "initial_live_ms": initial.as_secs_f64() * 1e3,
            "server_to_ack_ms": {"p50": s50, "p99": s99, "max": smax},
            "file_to_ack_ms": {"p50": f50, "p99": f99, "max": fmax},
            "server_to_ack_samples_ms": server_to_ack.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Whether Envoy's CDS has delivered every cluster (a fallback when the first ACK came
/// before the metric could see it).
async fn envoy_clusters_ready(envoy: &Sidecar, services: usize) -> anyhow::Result<bool> {
    let active = envoy.stat("cluster_manager.active_clusters").await?;
    let warming = envoy.stat("cluster_manager.warming_clusters").await?;
    Ok(active.unwrap_or(0) as usize > services && warming == Some(0))
}
