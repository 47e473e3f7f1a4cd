//! `dataplane-bench`: the data path, side by side in one run. The direct floor (load
//! generator -> sink), an Envoy sidecar pair and a rudder-proxy sidecar pair (client
//! sidecar -> server sidecar -> sink), each with mutual TLS between the sidecars and
//! without, at fixed rates (open loop, coordinated omission corrected) and at maximum
//! throughput (closed loop, HTTP/1.1 and HTTP/2). Every repetition runs every
//! configuration once, in a rotated order, so machine drift hits all of them alike.
//! Then, unless `--churn-s 0`, a fixed-rate run per proxy while the control plane
//! shifts TrafficSplit weights, adds and removes an endpoint and the workload
//! certificates rotate (10 s lifetime): every failed request is counted.
//!
//! Both proxies run with `--concurrency 1`, bootstrapped alike by `xds-server bootstrap`,
//! with the stats flush as the bootstrap sets it. On a machine with two or more CPUs the
//! load generator and the sinks run on CPU 0 and every sidecar on CPU 1.
//!
//! Results: a markdown table on stdout and every sample as JSON (`--json`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;
use testbed::bench::datapath::{Load, Measurement, Shape, Target, measure};
use testbed::bench::pair::{Hop, PairMesh, Placement};
use testbed::bench::procstat;
use testbed::procs::{DataPlane, Stream};

mod churn;
mod table;

#[derive(Parser, Debug)]
struct Args {
    /// Repetitions of the whole matrix.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// The loads, in order: open-loop rates in requests per second over HTTP/1.1, and
    /// `max-h1` / `max-h2` for closed-loop maximum throughput.
    #[arg(long, value_delimiter = ',', default_value = "500,2000,10000,max-h1,max-h2", value_parser = parse_load)]
    loads: Vec<Load>,
    /// Measured seconds per open-loop run.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Measured seconds per maximum-throughput run.
    #[arg(long, default_value_t = 5.0)]
    max_duration_s: f64,
    /// Warm-up seconds before each run.
    #[arg(long, default_value_t = 1.0)]
    warmup_s: f64,
    /// Connections from the load generator.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds of the churn run per proxy (0: none).
    #[arg(long, default_value_t = 30.0)]
    churn_s: f64,
    /// Requests per second during the churn run.
    #[arg(long, default_value_t = 500)]
    churn_rate: u32,
    /// Do not pin processes to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// After the matrix, write every sidecar's `/stats` into this directory.
    #[arg(long)]
    stats_dir: Option<std::path::PathBuf>,
    /// Write every sample here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One configuration of the matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Config {
    Direct,
    Pair(usize, Hop),
}

/// Samples by (load label, config label).
type Samples = BTreeMap<(String, String), Vec<Measurement>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let place = if args.no_pin {
        Placement {
            load: None,
            proxies: None,
        }
    } else {
        Placement::for_machine()
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cpus} CPUs; placement: {place:?}");
    let proxies = DataPlane::ALL;
    let mesh = PairMesh::start(&proxies, Stream::Delta, &[], place).await?;
    // Let the first pushes and handshakes settle before reading idle memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = idle_rss(&mesh);
    for (name, rss) in &idle {
        println!("idle {name}: {:.1} MB", *rss as f64 / 1e6);
    }
    let mut configs = vec![Config::Direct];
    for k in 0..mesh.pairs.len() {
        configs.push(Config::Pair(k, Hop::Mtls));
    }
    for k in 0..mesh.pairs.len() {
        configs.push(Config::Pair(k, Hop::Plain));
    }
    let loads = args.loads.clone();
    let mut samples = Samples::new();
    for rep in 0..args.reps {
        for load in &loads {
            for i in 0..configs.len() {
                let config = configs[(i + rep) % configs.len()];
                let shape = Shape {
                    connections: args.connections,
                    duration: Duration::from_secs_f64(match load {
                        Load::Rate(_) => args.duration_s,
                        Load::Max { .. } => args.max_duration_s,
                    }),
                    warmup: Duration::from_secs_f64(args.warmup_s),
                    body_bytes: testbed::bench::pair::BODY_BYTES,
                    cpu: place.load,
                };
                let (target, pids) = target(&mesh, config, *load)?;
                let m = measure(&target, *load, shape, &pids)
                    .await
                    .with_context(|| format!("{} at {}", label(&mesh, config), load.label()))?;
                println!(
                    "rep {rep} {:>14} {:<20} {:>8.0} rps p50 {:>7.0} us p99 {:>8.0} us failed {} unsent {}",
                    load.label(),
                    label(&mesh, config),
                    m.achieved_rps,
                    m.latency_us[0],
                    m.latency_us[2],
                    m.failed,
                    m.unsent
                );
                samples
                    .entry((load.label(), label(&mesh, config)))
                    .or_default()
                    .push(m);
            }
        }
    }
    check_hops(&mesh).await?;
    if let Some(dir) = &args.stats_dir {
        save_stats(&mesh, dir).await?;
    }
    let table = table::render(&mesh, &samples, &loads, &idle, cpus, place);
    println!("{table}");
    let churn = if args.churn_s > 0.0 {
        drop(mesh);
        churn::run(args.churn_s, args.churn_rate, args.connections, place).await?
    } else {
        Vec::new()
    };
    for c in &churn {
        println!("{}", c.line());
    }
    if let Some(path) = &args.json {
        let out = json!({
            "cpus": cpus,
            "placement": format!("{place:?}"),
            "idle_rss_bytes": idle,
            "samples": samples.iter().map(|((l, c), v)| json!({"load": l, "config": c, "runs": v})).collect::<Vec<_>>(),
            "churn": churn,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if churn.iter().any(|c| c.failed > 0) {
        bail!("requests failed during churn");
    }
    Ok(())
}

fn parse_load(s: &str) -> Result<Load, String> {
    match s {
        "max-h1" => Ok(Load::Max { http2: false }),
        "max-h2" => Ok(Load::Max { http2: true }),
        rate => rate
            .parse::<u32>()
            .ok()
            .filter(|r| *r > 0)
            .map(Load::Rate)
            .ok_or_else(|| format!("{s:?} is not a rate, max-h1 or max-h2")),
    }
}

/// Writes each sidecar's `/stats` to `DIR/PROXY-ROLE.stats`.
async fn save_stats(mesh: &PairMesh, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for pair in &mesh.pairs {
        for (role, s) in [
            ("client", &pair.client),
            ("server", &pair.server),
            ("plain", &pair.plain),
        ] {
            let text = s.admin_get("/stats").await?;
            std::fs::write(
                dir.join(format!("{}-{role}.stats", pair.proxy.name())),
                text,
            )?;
        }
    }
    Ok(())
}

/// The target of `config` and the processes whose cost is read (client, server).
fn target(mesh: &PairMesh, config: Config, load: Load) -> anyhow::Result<(Target, Vec<u32>)> {
    let http2 = matches!(load, Load::Max { http2: true });
    Ok(match config {
        Config::Direct => {
            let sink = mesh.sink(&format!("server-{}", DataPlane::Envoy.name()))?;
            (
                Target {
                    connect: sink,
                    authority: sink.to_string(),
                    absolute_form: false,
                },
                Vec::new(),
            )
        }
        Config::Pair(k, hop) => {
            let pair = &mesh.pairs[k];
            let pids = vec![
                pair.client.pid().context("the client sidecar has exited")?,
                pair.server_for(hop)
                    .pid()
                    .context("the server sidecar has exited")?,
            ];
            (
                Target {
                    connect: pair.client.outbound,
                    authority: pair.host(hop),
                    absolute_form: !http2,
                },
                pids,
            )
        }
    })
}

fn label(mesh: &PairMesh, config: Config) -> String {
    match config {
        Config::Direct => "direct".into(),
        Config::Pair(k, hop) => format!("{} {}", mesh.pairs[k].proxy.name(), hop.name()),
    }
}

/// Idle RSS and private memory of every sidecar, by proxy and role.
fn idle_rss(mesh: &PairMesh) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for pair in &mesh.pairs {
        for (role, s) in [
            ("client", &pair.client),
            ("server", &pair.server),
            ("plain", &pair.plain),
        ] {
            if let Some(pid) = s.pid() {
                let name = format!("{} {role}", pair.proxy.name());
                if let Some(rss) = procstat::rss_bytes(pid) {
                    out.insert(name.clone(), rss);
                }
                if let Some(private) = procstat::private_bytes(pid) {
                    out.insert(format!("{name} private"), private);
                }
            }
        }
    }
    out
}

/// The mTLS rows went over TLS and the plain rows did not: the client sidecar's
/// handshake counter for each server cluster.
async fn check_hops(mesh: &PairMesh) -> anyhow::Result<()> {
    for pair in &mesh.pairs {
        for hop in [Hop::Mtls, Hop::Plain] {
            let stat = format!("cluster.{}.ssl.handshake", pair.cluster(hop));
            let n = pair.client.stat(&stat).await?.unwrap_or(0);
            let ok = match hop {
                Hop::Mtls => n > 0,
                Hop::Plain => n == 0,
            };
            if !ok {
                bail!(
                    "{}: {stat} = {n}: the {} row did not run as labelled",
                    pair.proxy.name(),
                    hop.name()
                );
            }
        }
    }
    Ok(())
}
