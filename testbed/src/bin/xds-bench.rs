//! `xds-bench`: the control plane under load. It generates a mesh (S services, E endpoints
//! each, one pod per proxy), starts `xds-server` on core 0 in manifest mode, opens P
//! simulated Envoy streams (delta or SotW) from core 1, and measures initial sync,
//! convergence of changes (one endpoint, a 100-endpoint rollout, a canary step: a
//! TrafficSplit's weights; a new service with its cluster, endpoints and route), server
//! CPU and bytes per change, memory at steady state and per added proxy, idle CPU, a
//! reconnect storm, and the floor: the same bytes written to P plain TCP connections, at
//! the end of the run once the proxies and the control plane are gone.
//! Results print as a table and, with --json, as one JSON object.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::json;
use testbed::bench::client::{ProxyStats, Shared, run_delta, run_sotw};
use testbed::bench::wire::encode_names;
use testbed::bench::{floor, mesh, percentiles, procstat};
use testbed::procs::{Proc, wait_until, workspace_bin};
use tonic::transport::Endpoint;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    Delta,
    Sotw,
}

#[derive(Parser, Debug)]
struct Args {
    /// Services in the mesh.
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Endpoints per service.
    #[arg(long, default_value_t = 3)]
    endpoints: usize,
    /// Simulated proxies.
    #[arg(long, default_value_t = 100)]
    proxies: usize,
    /// Stream type of the simulated proxies.
    #[arg(long, value_enum, default_value_t = Kind::Delta)]
    stream: Kind,
    /// Repetitions of each change.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Workloads to run (endpoint, rollout, canary, service).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "endpoint,rollout,service"
    )]
    workloads: Vec<String>,
    /// The full-snapshot baseline: the control plane resends every resource of a type.
    #[arg(long)]
    full_resend: bool,
    /// The control plane's `--vhds`: delta proxies (which say they are Envoy 1.40) take
    /// virtual hosts apart; `false`: the whole table, the previous behaviour.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    vhds: bool,
    /// Also measure the floor (plain TCP fan-out of the same bytes).
    #[arg(long)]
    floor: bool,
    /// Also run a reconnect storm of all proxies.
    #[arg(long)]
    storm: bool,
    /// The control plane's push debounce (milliseconds; its default is 100).
    #[arg(long, default_value_t = 0)]
    debounce_ms: u64,
    /// The control plane's manifest debounce (milliseconds; its default is 50).
    #[arg(long, default_value_t = 0)]
    manifest_debounce_ms: u64,
    /// Write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run the control plane under this program (e.g. `heaptrack`), for profiling.
    #[arg(long, hide = true)]
    cp_wrapper: Option<String>,
    /// Internal: serve the floor for this many proxies (prints its port).
    #[arg(long, hide = true)]
    floor_server: Option<usize>,
}

/// The floor for `size` bytes to each of `proxies` connections: (p50, p99) in ms, from a
/// floor server of its own on the control plane's core.
async fn measure_floor(proxies: usize, size: u64) -> anyhow::Result<(f64, f64)> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["--floor-server", &proxies.to_string()])
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = child.stdout.take().context("floor stdout")?;
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    let port: u16 = line.trim().parse().context("floor port")?;
    let times = floor::measure(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        proxies,
        usize::try_from(size).unwrap_or(1),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (p50, p99, _) = percentiles(times?);
    Ok((p50, p99))
}

/// The route resource that carries service `i`'s routing to the proxies: its virtual
/// host apart on delta with VHDS, else the whole outbound table.
fn route_of(args: &Args, i: usize) -> String {
    let table = route_table(args);
    if hosts_apart(args) {
        format!("{table}/{}", mesh::vhost_name(i))
    } else {
        table.to_string()
    }
}

/// Whether the proxies take their virtual hosts apart: delta, with VHDS on.
fn hosts_apart(args: &Args) -> bool {
    args.vhds && matches!(args.stream, Kind::Delta)
}

/// The outbound route table every simulated proxy subscribes to, as its listener names.
fn route_table(args: &Args) -> &'static str {
    xds_types::names::outbound_route(hosts_apart(args))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.floor_server {
        procstat::pin_self(0);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        return rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("{}", listener.local_addr()?.port());
            floor::serve(listener, n).await
        });
    }
    // The load runs on core 1, the control plane on core 0.
    procstat::pin_self(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

struct Fleet {
    stats: Vec<Arc<ProxyStats>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn connect(
    addr: std::net::SocketAddr,
    kind: Kind,
    range: std::ops::Range<usize>,
    shared: &Arc<Shared>,
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    for p in range {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .connect_lazy();
        let stats = Arc::new(ProxyStats::default());
        fleet.stats.push(stats.clone());
        let shared = shared.clone();
        fleet.tasks.push(tokio::spawn(async move {
            match kind {
                Kind::Delta => run_delta(channel, p, shared, stats).await,
                Kind::Sotw => run_sotw(channel, p, shared, stats).await,
            }
        }));
    }
    Ok(())
}

fn synced(s: &ProxyStats, services: usize) -> bool {
    s.eds.load(Ordering::Relaxed) >= services
        && s.rds.load(Ordering::Relaxed)
        && s.lds.load(Ordering::Relaxed)
        && s.sds.load(Ordering::Relaxed)
}

async fn wait_synced(fleet: &Fleet, from: usize, services: usize) -> anyhow::Result<Duration> {
    let stats = &fleet.stats[from..];
    let start = Instant::now();
    loop {
        let failed = stats
            .iter()
            .filter(|s| s.failed.load(Ordering::Relaxed))
            .count();
        if failed > 0 {
            bail!("{failed} streams failed during sync");
        }
        if stats.iter().all(|s| synced(s, services)) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("not every proxy synced within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The end of the control plane's log, for an error.
fn cp_tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "control plane log (last lines):\n{}",
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}

fn bytes(fleet: &Fleet) -> u64 {
    fleet
        .stats
        .iter()
        .map(|s| s.bytes.load(Ordering::Relaxed))
        .sum()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let dir = work.path().join("manifests");
    std::fs::create_dir(&dir)?;
    mesh::write(&dir, args.services, args.endpoints, args.proxies * 2)?;
    let ready = work.path().join("ready.json");
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", "0"]);
    if let Some(w) = &args.cp_wrapper {
        cmd.args(w.split_whitespace());
    }
    cmd.arg(workspace_bin("xds-server")?)
        .args(["run", "--manifests"])
        .arg(&dir)
        .arg("--ca-dir")
        .arg(work.path().join("ca"))
        .args(["--insecure-xds", "--xds-address", "127.0.0.1:0"])
        .args(["--admin-address", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .args(["--debounce-ms", &args.debounce_ms.to_string()])
        .args([
            "--manifest-debounce-ms",
            &args.manifest_debounce_ms.to_string(),
        ])
        .args([
            "--max-connections",
            "100000",
            "--max-connections-per-peer",
            "100000",
        ])
        .args(["--max-subscribed-names", "1000000"])
        // Every simulated proxy is one plain-text peer on one address: one account.
        .args([
            "--xds-memory-budget",
            "64Gi",
            "--identity-memory-share",
            "64Gi",
        ])
        .env("RUDDER_LOG", "warn");
    if args.full_resend {
        cmd.arg("--full-resend");
    }
    cmd.args(["--vhds", if args.vhds { "true" } else { "false" }]);
    let log = work.path().join("cp.log");
    let mut cp = Proc::spawn_logged("xds-server", cmd, &log)?;
    let mut addr = None;
    wait_until(Duration::from_secs(120), "the control plane", || {
        addr = std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["xds"].as_str()?.parse::<std::net::SocketAddr>().ok());
        let running = cp.check_running();
        let ok = addr.is_some();
        async move { running.map(|()| ok) }
    })
    .await
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    let addr = addr.context("no address")?;
    let pid = cp.pid().context("pid")?;
    let rss_empty = procstat::rss_bytes(pid).unwrap_or(0);

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        eds_names_wire: encode_names((0..args.services).map(mesh::eds_name)),
        clusters: Arc::new((0..args.services).map(mesh::cluster_name).collect()),
        watch: RwLock::new(Vec::new()),
        route_name: route_table(&args),
    });
    let mut fleet = Fleet {
        stats: Vec::new(),
        tasks: Vec::new(),
    };
    let cpu0 = procstat::cpu_ns(pid).unwrap_or(0);
    connect(addr, args.stream, 0..args.proxies, &shared, &mut fleet).await?;
    let sync = wait_synced(&fleet, 0, args.services).await;
    if let Err(e) = cp.check_running() {
        bail!("{e:#}\n{}", cp_tail(&log));
    }
    let sync = sync.with_context(|| cp_tail(&log))?;
    let sync_cpu = procstat::cpu_ns(pid).unwrap_or(0).saturating_sub(cpu0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = procstat::rss_bytes(pid).unwrap_or(0);
    // Idle: nothing changes for five seconds.
    let (c0, t0) = (procstat::cpu_ns(pid).unwrap_or(0), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_share = (procstat::cpu_ns(pid).unwrap_or(0).saturating_sub(c0)) as f64
        / t0.elapsed().as_nanos() as f64;
    println!(
        "{} services x {} endpoints, {} {:?} proxies{}: initial sync {:.0} ms ({:.2} CPU-s), RSS {:.0} MB, idle {:.2}% of a core",
        args.services,
        args.endpoints,
        args.proxies,
        args.stream,
        if args.full_resend {
            " (full resend)"
        } else {
            ""
        },
        sync.as_secs_f64() * 1e3,
        sync_cpu as f64 / 1e9,
        rss as f64 / 1e6,
        idle_share * 100.0
    );

    let mut results = BTreeMap::new();
    let mut endpoint_bytes = 0u64;
    for workload in &args.workloads {
        let mut conv = Vec::new();
        let mut cpu = Vec::new();
        let mut load_cpu = Vec::new();
        let mut per_proxy_bytes = Vec::new();
        for k in 0..args.changes {
            let generation = k + 1;
            let (files, watch): (Vec<(String, String)>, Vec<String>) = match workload.as_str() {
                "endpoint" => {
                    let i = 7 % args.services;
                    (
                        vec![(
                            format!("slice-{i}.yaml"),
                            mesh::slice(i, args.endpoints, |j| if j == 0 { generation } else { 0 }),
                        )],
                        vec![mesh::eds_name(i)],
                    )
                }
                "rollout" => {
                    // Replace 100 endpoints: every endpoint of enough services.
                    let n = (100 / args.endpoints.max(1)).clamp(1, args.services);
                    let first = (k * n) % args.services;
                    let ids: Vec<usize> = (0..n).map(|x| (first + x) % args.services).collect();
                    (
                        ids.iter()
                            .map(|i| {
                                (
                                    format!("slice-{i}.yaml"),
                                    mesh::slice(*i, args.endpoints, |_| generation),
                                )
                            })
                            .collect(),
                        ids.iter().map(|i| mesh::eds_name(*i)).collect(),
                    )
                }
                "canary" => (
                    vec![("split.yaml".to_string(), mesh::split(generation))],
                    vec![route_of(&args, 0)],
                ),
                "service" => {
                    let i = args.services + k;
                    (
                        vec![(
                            format!("new-{i}.yaml"),
                            format!(
                                "{}---\n{}",
                                mesh::service(i),
                                mesh::slice(i, args.endpoints, |_| 0)
                            ),
                        )],
                        vec![mesh::eds_name(i), route_of(&args, i)],
                    )
                }
                other => bail!("unknown workload {other}"),
            };
            for s in &fleet.stats {
                s.hits.store(0, Ordering::Relaxed);
                s.done_at.store(0, Ordering::Relaxed);
            }
            *shared.watch.write() = watch;
            let bytes_before = bytes(&fleet);
            let cpu_before = procstat::cpu_ns(pid).unwrap_or(0);
            let load_before = procstat::cpu_ns(std::process::id()).unwrap_or(0);
            let start = Instant::now();
            let t0 = u64::try_from(shared.epoch.elapsed().as_nanos()).unwrap_or(0);
            for (name, text) in &files {
                mesh::replace(&dir, name, text)?;
            }
            let times = arrived(&fleet.stats, t0, "the change on every proxy").await?;
            // The simulated proxies' own work until the last of them had the change (they
            // share one core: what they spend there delays the later ones).
            load_cpu.push(Duration::from_nanos(
                procstat::cpu_ns(std::process::id())
                    .unwrap_or(0)
                    .saturating_sub(load_before),
            ));
            let elapsed = start.elapsed();
            // Let the ACKs land before reading the CPU.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let window = start.elapsed();
            let used = procstat::cpu_ns(pid)
                .unwrap_or(0)
                .saturating_sub(cpu_before) as f64
                - idle_share * window.as_nanos() as f64;
            cpu.push(Duration::from_nanos(used.max(0.0) as u64));
            conv.extend(times);
            per_proxy_bytes.push((bytes(&fleet) - bytes_before) / fleet.stats.len() as u64);
            let _ = elapsed;
        }
        shared.watch.write().clear();
        let (p50, p99, max) = percentiles(conv);
        let (cpu50, _, cpu_max) = percentiles(cpu);
        let (load50, _, _) = percentiles(load_cpu);
        per_proxy_bytes.sort();
        let bytes_med = per_proxy_bytes
            .get(per_proxy_bytes.len() / 2)
            .copied()
            .unwrap_or(0);
        if workload == "endpoint" {
            endpoint_bytes = bytes_med;
        }
        println!(
            "  {workload:>8}: convergence p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; server CPU {cpu50:.1} ms (max {cpu_max:.1}); {bytes_med} bytes per proxy; the simulated proxies' CPU until converged {load50:.1} ms"
        );
        results.insert(
            workload.clone(),
            json!({"p50_ms": p50, "p99_ms": p99, "max_ms": max, "cpu_ms": cpu50, "cpu_max_ms": cpu_max, "load_cpu_ms": load50, "bytes_per_proxy": bytes_med}),
        );
    }

    // Memory per added proxy: 10% more.
    let extra = (args.proxies / 10).max(1);
    let before = procstat::rss_bytes(pid).unwrap_or(0);
    connect(
        addr,
        args.stream,
        args.proxies..args.proxies + extra,
        &shared,
        &mut fleet,
    )
    .await?;
    wait_synced(&fleet, args.proxies, args.services)
        .await
        .with_context(|| cp_tail(&log))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_proxy = (procstat::rss_bytes(pid).unwrap_or(0).saturating_sub(before)) / extra as u64;
    println!(
        "  {extra} more proxies: {:.1} KB each",
        per_proxy as f64 / 1e3
    );

    let mut storm = serde_json::Value::Null;
    if args.storm {
        storm = run_storm(&args, addr, pid, &shared, &mut fleet, &dir, &log).await?;
    }

    // The proxies and the control plane go before the floor, so that its connections fit
    // under the file-descriptor limit beside 10,000 proxies' (and it runs on a quiet core).
    for t in fleet.tasks.drain(..) {
        t.abort();
    }
    cp.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The floor of each workload: its median bytes per proxy, written the same way.
    let mut floor_result = serde_json::Value::Null;
    let mut floors = serde_json::Map::new();
    if args.floor {
        for (workload, r) in &results {
            let size = r["bytes_per_proxy"].as_u64().unwrap_or(0);
            if size == 0 {
                continue;
            }
            let (p50, p99) = measure_floor(args.proxies, size).await?;
            println!(
                "  floor of {workload} ({size} bytes to each of {} TCP connections): p50 {p50:.1} ms, p99 {p99:.1} ms",
                args.proxies
            );
            let f = json!({"p50_ms": p50, "p99_ms": p99, "bytes": size});
            if size == endpoint_bytes && floor_result.is_null() {
                floor_result = f.clone();
            }
            floors.insert(workload.clone(), f);
        }
    }

    let out = json!({
        "services": args.services,
        "endpoints": args.endpoints,
        "proxies": args.proxies,
        "stream": format!("{:?}", args.stream),
        "full_resend": args.full_resend,
        "vhds": args.vhds,
        "initial_sync_ms": sync.as_secs_f64() * 1e3,
        "initial_sync_cpu_s": sync_cpu as f64 / 1e9,
        "rss_empty_mb": rss_empty as f64 / 1e6,
        "rss_mb": rss as f64 / 1e6,
        "rss_per_added_proxy_kb": per_proxy as f64 / 1e3,
        "idle_core_percent": idle_share * 100.0,
        "changes": results,
        "storm": storm,
        "floor": floor_result,
        "floors": floors,
    });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}

/// Waits until every proxy of `stats` has the watched change; how long each took from
/// `t0` (ns since the bench's epoch).
async fn arrived(stats: &[Arc<ProxyStats>], t0: u64, what: &str) -> anyhow::Result<Vec<Duration>> {
    wait_until(Duration::from_secs(120), what, || {
        let done = stats.iter().all(|s| s.done_at.load(Ordering::Relaxed) > 0);
        async move { Ok(done) }
    })
    .await?;
    Ok(stats
        .iter()
        .map(|s| Duration::from_nanos(s.done_at.load(Ordering::Relaxed).saturating_sub(t0)))
        .collect())
}

/// The reconnect storm: the second half of the proxies drop their streams and reconnect
/// at once while the first half stay synced; 200 ms in, one endpoint changes. Measures
/// the storm's sync time, server CPU and peak RSS, and how fast the change reaches the
/// proxies that stayed synced.
async fn run_storm(
    args: &Args,
    addr: std::net::SocketAddr,
    pid: u32,
    shared: &Arc<Shared>,
    fleet: &mut Fleet,
    dir: &std::path::Path,
    log: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let n = fleet.stats.len();
    let keep = n / 2;
    for t in fleet.tasks.drain(keep..) {
        t.abort();
    }
    fleet.stats.truncate(keep);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = procstat::PeakRss::start(&[pid], Duration::from_millis(50));
    let cpu0 = procstat::cpu_ns(pid).unwrap_or(0);
    let started = Instant::now();
    connect(addr, args.stream, keep..n, shared, fleet).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The change during the storm, timed on the proxies that stayed synced.
    let i = 11 % args.services;
    for s in &fleet.stats[..keep] {
        s.hits.store(0, Ordering::Relaxed);
        s.done_at.store(0, Ordering::Relaxed);
    }
    *shared.watch.write() = vec![mesh::eds_name(i)];
    let t0 = u64::try_from(shared.epoch.elapsed().as_nanos()).unwrap_or(0);
    mesh::replace(
        dir,
        &format!("slice-{i}.yaml"),
        &mesh::slice(i, args.endpoints, |j| if j == 0 { 1_000 } else { 0 }),
    )?;
    let conv = arrived(
        &fleet.stats[..keep],
        t0,
        "the change on the synced proxies during the storm",
    )
    .await?;
    shared.watch.write().clear();
    wait_synced(fleet, keep, args.services)
        .await
        .with_context(|| cp_tail(log))?;
    let took = started.elapsed();
    let cpu = procstat::cpu_ns(pid).unwrap_or(0).saturating_sub(cpu0) as f64 / 1e9;
    let peak_mb = peak.stop().first().copied().unwrap_or(0) as f64 / 1e6;
    let failed = fleet
        .stats
        .iter()
        .filter(|s| s.failed.load(Ordering::Relaxed))
        .count();
    let (p50, p99, _) = percentiles(conv);
    println!(
        "  storm: {} of {n} proxies reconnecting at once synced in {:.0} ms ({cpu:.2} CPU-s, {:.2} ms per proxy), {failed} streams dropped, peak RSS {peak_mb:.0} MB; a change during it reached the {keep} synced proxies in p50 {p50:.1} ms, p99 {p99:.1} ms",
        n - keep,
        took.as_secs_f64() * 1e3,
        cpu * 1e3 / (n - keep).max(1) as f64,
    );
    Ok(json!({
        "proxies": n - keep,
        "stayed": keep,
        "sync_ms": took.as_secs_f64() * 1e3,
        "cpu_s": cpu,
        "dropped": failed,
        "peak_rss_mb": peak_mb,
        "change_p50_ms": p50,
        "change_p99_ms": p99,
    }))
}
