//! `apply-bench`: how fast a real proxy (Envoy, rudder-proxy, or both, alternating) takes
//! a mesh of N clusters from Rudder, what it holds in memory, and how long a one-endpoint
//! change takes to be ACKed.
//!
//! For each mesh size and repetition, each proxy gets a fresh control plane (from its
//! binary, manifest mode, mutual TLS) and is started beside it with the same bootstrap and
//! flags (`--concurrency 1`), neither pinned. The order of the proxies alternates from one
//! size (or repetition) to the next, so that drift of the machine hits both. Measured:
//! - **full-set apply**: from the control plane's first response on the proxy's stream to
//!   the proxy having answered everything it was sent, listeners included
//!   (`rudder_initial_sync_seconds`, recorded by the control plane);
//! - **LIVE**: from the proxy process's start to its `/ready` saying LIVE;
//! - **one-endpoint change**: from the control plane seeing the change to the proxy's ACK
//!   (`rudder_convergence_seconds`, one sample per change), and from the manifest file's
//!   rename to that sample appearing;
//! - **memory**: the proxy's and its agent's RSS once the sync has settled (2 s idle), the
//!   proxy's peak RSS during the sync (sampled every 10 ms, and the kernel's high-water
//!   mark), and the proxy's CPU time from its start to the end of the sync.
//!
//! At the end the proxy's `/clusters` is checked for the last changed address, so the
//! numbers are for a change the proxy really applied. Not a test: nothing is asserted on
//! times.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use testbed::bench::{mesh, percentiles, procstat};
use testbed::procs::{
    ControlPlane, DataPlane, PodPlacement, Sidecar, Stream, free_port, wait_until,
};

#[derive(Parser, Debug)]
struct Args {
    /// Which proxy: envoy, rudder-proxy or both (alternating).
    #[arg(long, default_value = "both", value_parser = ["envoy", "rudder-proxy", "both"])]
    proxy: String,
    /// Mesh sizes: Services (one cluster each), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    clusters: Vec<usize>,
    /// Endpoints per service.
    #[arg(long, default_value_t = 3)]
    endpoints: usize,
    /// One-endpoint changes to measure per run.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Runs per proxy and size (the order of the proxies alternates between them).
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// The proxies' stream type.
    #[arg(long, default_value = "delta", value_parser = ["delta", "sotw"])]
    stream: String,
    /// Write every run's results here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One proxy's run at one size.
#[derive(Debug)]
struct Run {
    proxy: DataPlane,
    services: usize,
    rep: usize,
    /// Control plane's first response to the proxy's last answer of the initial sync.
    full_sync: Duration,
    /// Proxy process start to LIVE.
    live: Duration,
    server_to_ack: Vec<Duration>,
    file_to_ack: Vec<Duration>,
    rss_idle: u64,
    agent_rss_idle: u64,
    rss_peak_sampled: u64,
    rss_hwm: u64,
    sync_cpu: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let proxies: Vec<DataPlane> = match args.proxy.as_str() {
        "envoy" => vec![DataPlane::Envoy],
        "rudder-proxy" => vec![DataPlane::RudderProxy],
        _ => DataPlane::ALL.to_vec(),
    };
    let mut runs = Vec::new();
    for (i, &services) in args.clusters.iter().enumerate() {
        for rep in 0..args.reps {
            let mut order = proxies.clone();
            if (i + rep) % 2 == 1 {
                order.reverse();
            }
            for proxy in order {
                let r = run_one(&args, proxy, services, rep)
                    .await
                    .with_context(|| format!("{} with {services} clusters", proxy.name()))?;
                print_run(&r);
                runs.push(r);
            }
        }
    }
    println!();
    print!("{}", table(&runs, &args.clusters, &proxies));
    if let Some(path) = &args.json {
        let out = json!({
            "endpoints": args.endpoints,
            "stream": args.stream,
            "changes": args.changes,
            "runs": runs.iter().map(|r| run_json(r, &args)).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A fresh control plane and `proxy` on a mesh of `services` Services.
async fn run_one(
    args: &Args,
    proxy: DataPlane,
    services: usize,
    rep: usize,
) -> anyhow::Result<Run> {
    let work = tempfile::tempdir()?;
    let dir = work.path().join("manifests");
    std::fs::create_dir(&dir)?;
    mesh::write(&dir, services, args.endpoints, 0)?;
    let pod = write_own_pod(&dir)?;
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
    let stream = if args.stream == "sotw" {
        Stream::Sotw
    } else {
        Stream::Delta
    };
    let mut sidecar = Sidecar::start_on(proxy, &pod, &cp, stream, work.path()).await?;
    let pid = sidecar.pid().context("the proxy has exited")?;
    let sampler = procstat::PeakRss::start(&[pid], Duration::from_millis(10));
    sidecar.wait_live(Duration::from_secs(300)).await?;
    let live = sidecar.launched.elapsed();
    wait_until(
        Duration::from_secs(300),
        "the proxy's initial sync",
        || async { Ok(histogram(&cp, "rudder_initial_sync_seconds").await?.0 >= 1) },
    )
    .await?;
    let sync_cpu = Duration::from_nanos(procstat::cpu_ns(pid).unwrap_or(0));
    let rss_peak_sampled = sampler.stop().first().copied().unwrap_or(0);
    // One stream, one sample; a reconnect would add a second (take the mean).
    let (syncs, sync_sum) = histogram(&cp, "rudder_initial_sync_seconds").await?;
    let full_sync = Duration::from_secs_f64(sync_sum / syncs.max(1) as f64);
    // Idle: let the proxy settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sidecar.check_running()?;
    let rss_idle = procstat::rss_bytes(pid).unwrap_or(0);
    let rss_hwm = procstat::peak_rss_bytes(pid).unwrap_or(0);
    let agent_rss_idle = sidecar
        .agent
        .as_ref()
        .and_then(|a| a.pid())
        .and_then(procstat::rss_bytes)
        .unwrap_or(0);
    let (server_to_ack, file_to_ack) = changes(args, &cp, &dir, services).await?;
    let target = 7 % services;
    let last = mesh::endpoint_ip(target, 0, args.changes);
    if args.changes > 0 && !sidecar.admin_get("/clusters").await?.contains(&last) {
        bail!("the proxy's /clusters does not show the last change ({last})");
    }
    Ok(Run {
        proxy,
        services,
        rep,
        full_sync,
        live,
        server_to_ack,
        file_to_ack,
        rss_idle,
        agent_rss_idle,
        rss_peak_sampled,
        rss_hwm,
        sync_cpu,
    })
}

/// The proxy's own pod and the Service selecting it, on a loopback address of this
/// machine; returns its placement.
fn write_own_pod(dir: &Path) -> anyhow::Result<PodPlacement> {
    let pid = std::process::id();
    let ip = IpAddr::V4(Ipv4Addr::new(
        127,
        100 + (pid % 100) as u8,
        ((pid / 100) % 250) as u8 + 1,
        2,
    ));
    let app_port = free_port()?;
    std::fs::write(
        dir.join("proxy.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: proxy-0, namespace: {ns}, labels: {{app: proxy-app}}}}\nspec:\n  serviceAccountName: bench\n  containers: [{{name: app, ports: [{{name: http, containerPort: {app_port}}}]}}]\nstatus: {{podIP: \"{ip}\"}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: proxy-app, namespace: {ns}}}\nspec:\n  selector: {{app: proxy-app}}\n  ports: [{{name: http, port: 80, targetPort: {app_port}}}]\n",
            ns = mesh::NAMESPACE
        ),
    )?;
    Ok(PodPlacement {
        namespace: mesh::NAMESPACE.to_string(),
        pod: "proxy-0".to_string(),
        service_account: "bench".to_string(),
        ip,
        app_ip: testbed::manifests::app_ip(ip),
    })
}

/// `--changes` one-endpoint changes to service 7 (mod the size): server -> ACK and
/// file -> ACK of each.
async fn changes(
    args: &Args,
    cp: &ControlPlane,
    dir: &Path,
    services: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let target = 7 % services;
    let mut server_to_ack = Vec::new();
    let mut file_to_ack = Vec::new();
    for k in 0..args.changes {
        let generation = k + 1;
        let (count, sum) = histogram(cp, "rudder_convergence_seconds").await?;
        let start = Instant::now();
        mesh::replace(
            dir,
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
                bail!("the proxy did not ACK change {k} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            after = histogram(cp, "rudder_convergence_seconds").await?;
        }
        file_to_ack.push(start.elapsed());
        server_to_ack.push(Duration::from_secs_f64(
            ((after.1 - sum) / (after.0 - count) as f64).max(0.0),
        ));
        // Let the proxy settle between changes.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((server_to_ack, file_to_ack))
}

/// A histogram's count and sum from the control plane's /metrics.
async fn histogram(cp: &ControlPlane, name: &str) -> anyhow::Result<(u64, f64)> {
    let text = testbed::http::get_ok(cp.admin, "/metrics").await?;
    let value = |suffix: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(suffix)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    Ok((
        value("_count").unwrap_or(0.0) as u64,
        value("_sum").unwrap_or(0.0),
    ))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_run(r: &Run) {
    let (s50, s99, _) = percentiles(r.server_to_ack.clone());
    println!(
        "{} with {} clusters (rep {}): full-set apply {:.1} ms, LIVE {:.0} ms, change p50/p99 {s50:.2}/{s99:.2} ms, RSS idle {:.1} MB (agent {:.1} MB), peak {:.1} MB (high-water {:.1} MB), sync CPU {:.2} s",
        r.proxy.name(),
        r.services,
        r.rep,
        ms(r.full_sync),
        ms(r.live),
        mb(r.rss_idle),
        mb(r.agent_rss_idle),
        mb(r.rss_peak_sampled),
        mb(r.rss_hwm),
        r.sync_cpu.as_secs_f64(),
    );
}

fn run_json(r: &Run, args: &Args) -> Value {
    let (s50, s99, smax) = percentiles(r.server_to_ack.clone());
    let (f50, f99, fmax) = percentiles(r.file_to_ack.clone());
    json!({
        "proxy": r.proxy.name(),
        "services": r.services,
        "clusters": r.services + 1,
        "endpoints": args.endpoints,
        "stream": args.stream,
        "rep": r.rep,
        "full_sync_ms": ms(r.full_sync),
        "initial_live_ms": ms(r.live),
        "server_to_ack_ms": {"p50": s50, "p99": s99, "max": smax},
        "file_to_ack_ms": {"p50": f50, "p99": f99, "max": fmax},
        "server_to_ack_samples_ms": r.server_to_ack.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        "rss_idle_mb": mb(r.rss_idle),
        "agent_rss_idle_mb": mb(r.agent_rss_idle),
        "rss_peak_sampled_mb": mb(r.rss_peak_sampled),
        "rss_high_water_mb": mb(r.rss_hwm),
        "sync_cpu_s": r.sync_cpu.as_secs_f64(),
    })
}

/// One row's numbers: medians over repetitions, change percentiles over every sample.
struct Row {
    full_sync: f64,
    live: f64,
    p50: f64,
    p99: f64,
    rss_idle: f64,
    rss_peak: f64,
    cpu: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn row(runs: &[&Run]) -> Row {
    let med = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(|r| f(r)).collect());
    let samples = runs
        .iter()
        .flat_map(|r| r.server_to_ack.iter().copied())
        .collect();
    let (p50, p99, _) = percentiles(samples);
    Row {
        full_sync: med(&|r| ms(r.full_sync)),
        live: med(&|r| ms(r.live)),
        p50,
        p99,
        rss_idle: med(&|r| mb(r.rss_idle)),
        rss_peak: med(&|r| mb(r.rss_peak_sampled.max(r.rss_hwm))),
        cpu: med(&|r| r.sync_cpu.as_secs_f64()),
    }
}

/// The markdown table: a row per proxy and size, then rudder-proxy / Envoy per size.
fn table(runs: &[Run], sizes: &[usize], proxies: &[DataPlane]) -> String {
    let mut out = String::from(
        "| proxy | clusters | full-set apply (ms) | LIVE (ms) | 1-endpoint change p50/p99 (ms) | RSS idle (MB) | RSS peak (MB) | sync CPU (s) |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut ratios = String::new();
    for &size in sizes {
        let mut rows = Vec::new();
        for &proxy in proxies {
            let of: Vec<&Run> = runs
                .iter()
                .filter(|r| r.proxy == proxy && r.services == size)
                .collect();
            let r = row(&of);
            out.push_str(&format!(
                "| {} | {size} | {:.1} | {:.0} | {:.2} / {:.2} | {:.1} | {:.1} | {:.2} |\n",
                proxy.name(),
                r.full_sync,
                r.live,
                r.p50,
                r.p99,
                r.rss_idle,
                r.rss_peak,
                r.cpu
            ));
            rows.push(r);
        }
        if let [e, p] = rows.as_slice() {
            ratios.push_str(&format!(
                "| rudder-proxy / Envoy | {size} | {:.2} | {:.2} | {:.2} / {:.2} | {:.2} | {:.2} | {:.2} |\n",
                p.full_sync / e.full_sync,
                p.live / e.live,
                p.p50 / e.p50,
                p.p99 / e.p99,
                p.rss_idle / e.rss_idle,
                p.rss_peak / e.rss_peak,
                p.cpu / e.cpu
            ));
        }
    }
    out + &ratios
}
