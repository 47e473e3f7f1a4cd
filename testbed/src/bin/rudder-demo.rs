//! `rudder-demo`: the control plane on the `examples/` manifests with real sidecars
//! (Envoy by default; `--proxy rudder-proxy` or `--proxy mix` for Rudder's own) and echo
//! backends, one 127.0.0.N address per pod and ports picked at run
//! time. The first pod's app calls every other service through its sidecar by each of
//! its names; the demo prints what happened and exits non-zero if routing is wrong.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use testbed::manifests::{ExampleMesh, render_examples};
use testbed::procs::{Backend, ControlPlane, DataPlane, Sidecar, Stream, workspace_root};

#[derive(Parser)]
struct Args {
    /// Manifest directory to run.
    #[arg(long)]
    examples: Option<PathBuf>,
    /// Keep everything running after the checks until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// The sidecar proxy: `envoy`, `rudder-proxy`, or `mix` (alternating by pod).
    #[arg(long, default_value = "envoy", value_parser = ["envoy", "rudder-proxy", "mix"])]
    proxy: String,
}

/// The proxy of the `i`th pod under `--proxy`.
fn proxy_of(choice: &str, i: usize) -> DataPlane {
    match choice {
        "rudder-proxy" => DataPlane::RudderProxy,
        "mix" if i % 2 == 1 => DataPlane::RudderProxy,
        _ => DataPlane::Envoy,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let examples = args
        .examples
        .unwrap_or_else(|| workspace_root().join("examples"));
    let work = tempfile::tempdir().context("creating a work directory")?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let mesh = render_examples(&examples, &manifests)?;
    println!(
        "rudder-demo: {} pods, {} service ports from {}",
        mesh.pods.len(),
        mesh.services.len(),
        examples.display()
    );

    let cp = ControlPlane::start(&manifests, work.path()).await?;
    println!(
        "control plane serving xDS on {} (log: {})",
        cp.xds,
        cp.log.display()
    );

    let mut backends = Vec::new();
    let mut sidecars = Vec::new();
    for (i, pod) in mesh.pods.iter().enumerate() {
        for port in &pod.app_ports {
            let addr = SocketAddr::new(pod.placement.app_ip, *port);
            backends.push(Backend::start(addr, &pod.placement.pod, work.path()).await?);
        }
        // Half the sidecars use delta ADS, half state-of-the-world.
        let stream = if i % 2 == 0 {
            Stream::Delta
        } else {
            Stream::Sotw
        };
        // With `mix`, pods alternate proxies; streams alternate every two pods, so each
        // proxy runs both stream types.
        let proxy = proxy_of(&args.proxy, i);
        let stream = if args.proxy == "mix" && (i / 2) % 2 == 1 {
            Stream::Sotw
        } else {
            stream
        };
        let envoy = Sidecar::start_on(proxy, &pod.placement, &cp, stream, work.path()).await?;
        println!(
            "  pod {:<12} ip {:<11} app {:<11} sidecar {} {:?} outbound {} admin {}",
            pod.placement.pod,
            pod.placement.ip,
            pod.placement.app_ip,
            proxy.name(),
            stream,
            envoy.outbound,
            envoy.admin
        );
        sidecars.push(envoy);
    }
    for envoy in &mut sidecars {
        envoy.wait_live(Duration::from_secs(30)).await?;
    }
    println!("all {} sidecars are LIVE", sidecars.len());

    let client = mesh.pods.first().context("examples have no pods")?;
    let proxy = sidecars.first().context("no sidecar")?.outbound;
    let failures = check_routing(&mesh, &client.placement.pod, proxy).await;
    println!();
    if failures.is_empty() {
        println!("OK: every service answered through the sidecars by every name.");
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
    }
    if args.keep_running {
        println!(
            "\nStill running. Try: curl -x http://{proxy} http://reviews.default/   (Ctrl-C to stop)"
        );
        tokio::signal::ctrl_c().await?;
    }
    drop(sidecars);
    drop(backends);
    drop(cp);
    if !failures.is_empty() {
        bail!("{} routing checks failed", failures.len());
    }
    Ok(())
}

async fn check_routing(mesh: &ExampleMesh, client: &str, proxy: SocketAddr) -> Vec<String> {
    let mut failures = Vec::new();
    println!("\nfrom {client}'s app through its sidecar ({proxy}):");
    for svc in &mesh.services {
        let backends: BTreeSet<&str> = mesh
            .pods
            .iter()
            .filter(|p| {
                !svc.selector.is_empty()
                    && svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .map(|p| p.placement.pod.as_str())
            .collect();
        if backends.contains(client) {
            continue;
        }
        let (n, ns, port) = (&svc.name, &svc.namespace, svc.port);
        let mut hosts = vec![
            format!("{n}:{port}"),
            format!("{n}.{ns}:{port}"),
            format!("{n}.{ns}.svc.cluster.local:{port}"),
        ];
        if port == 80 || mesh.services.iter().filter(|s| s.name == *n).count() == 1 {
            hosts.extend([
                n.clone(),
                format!("{n}.{ns}"),
                format!("{n}.{ns}.svc.cluster.local"),
            ]);
        }
        let h2 = ["http2", "h2c", "kubernetes.io/h2c", "grpc"].contains(&svc.protocol.as_str())
            || svc.protocol.starts_with("grpc");
        let mut seen = BTreeSet::new();
        for host in &hosts {
            for i in 0..4 {
                let result = if h2 {
                    testbed::http::get_h2c(proxy, host, "/demo").await
                } else {
                    testbed::http::get_via(proxy, &format!("http://{host}/demo")).await
                };
                let line = match result {
                    Ok(r) if r.status == 200 => {
                        let who = r
                            .body
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let proto_ok = !h2 || r.body.contains("proto=HTTP/2.0");
                        if !backends.contains(who.as_str()) {
                            failures.push(format!(
                                "{host}: answered by {who}, expected one of {backends:?}"
                            ));
                        } else if !proto_ok {
                            failures.push(format!(
                                "{host}: backend was not reached over HTTP/2: {}",
                                r.body.trim()
                            ));
                        }
                        seen.insert(who);
                        r.body.lines().next().unwrap_or_default().trim().to_string()
                    }
                    Ok(r) => {
                        failures.push(format!("{host}: status {} {}", r.status, r.body.trim()));
                        format!("status {}", r.status)
                    }
                    Err(e) => {
                        failures.push(format!("{host}: {e:#}"));
                        format!("error {e:#}")
                    }
                };
                if i == 0 {
                    println!(
                        "  {}GET http://{host}/demo -> {line}",
                        if h2 { "h2c " } else { "" }
                    );
                }
            }
        }
        let expected: BTreeSet<String> = backends.iter().map(|s| s.to_string()).collect();
        println!("  {n}: answered by {seen:?} (expected {expected:?})");
        if seen != expected {
            failures.push(format!(
                "{n}: answered by {seen:?}, expected all of {expected:?}"
            ));
        }
    }
    failures
}
