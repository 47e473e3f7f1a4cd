//! Wiring: the Envoy-compatible command line (so the injector can swap binaries), the
//! bootstrap, stats, the published configuration, the data path's context, the ADS
//! client, the agent's SDS client, the admin port (its bound address written to
//! `--admin-address-path` as Envoy does), the listeners, and a draining shutdown on
//! SIGTERM, SIGINT or `/quitquitquit`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::data::{self, Ctx};
use crate::live::Live;
use crate::stats::Stats;
use crate::xds::{AdsClient, AgentSdsClient, ConvertFn, Dump, Publisher, bootstrap};

/// The command line, as Envoy's for what Rudder passes it.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "rudder-proxy",
    about = "Rudder's own data plane, an Envoy-compatible sidecar"
)]
pub struct Args {
    /// The bootstrap (JSON).
    #[arg(short = 'c', long = "config-path")]
    pub config: PathBuf,
    /// Where to write the bound admin address (`IP:PORT`).
    #[arg(long)]
    pub admin_address_path: Option<PathBuf>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// How long open connections may finish after the listeners close, or after an
    /// update changed or removed their listener or filter chain, in seconds.
    #[arg(long, default_value_t = 5)]
    pub drain_time_s: u64,
    /// `immediate` or `gradual`, as Envoy takes it. rudder-proxy always drains
    /// immediately: every connection of a draining chain is told at once (HTTP/1
    /// `connection: close` on its next response, HTTP/2 GOAWAY).
    #[arg(long, default_value = "gradual", value_parser = ["gradual", "immediate"])]
    pub drain_strategy: String,
    /// Log level (trace, debug, info, warning, error, critical, off).
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
    /// Accepted and ignored (there is no hot restart).
    #[arg(long)]
    pub disable_hot_restart: bool,
}

/// Parses the command line and runs the proxy until it is told to stop.
pub fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    init_logs(&args.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.concurrency.clamp(1, 64))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(args, crate::convert::convert))
}

fn init_logs(level: &str) {
    let level = match level {
        "trace" => "trace",
        "debug" => "debug",
        "warn" | "warning" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        _ => "info",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "{level},h2=warn,hyper=warn,tonic=warn,tower=warn,rustls=warn"
        )))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the proxy with `convert` until SIGTERM, SIGINT or `/quitquitquit`.
pub async fn run(args: Args, convert: ConvertFn) -> anyhow::Result<()> {
    let boot = bootstrap::load(&args.config).context("reading the bootstrap")?;
    let stats = Arc::new(Stats::default());
    let live = Arc::new(Live::default());
    let dump = Arc::new(Dump::default());
    let publisher = Arc::new(Publisher::new(live.clone(), dump.clone()));
    let (quit, _) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let admin = Admin {
        live: live.clone(),
        stats: stats.clone(),
        dump,
        quit: quit.clone(),
    };
    let (bound, admin_server) = admin
        .bind(boot.admin)
        .await
        .with_context(|| format!("binding the admin address {}", boot.admin))?;
    tokio::spawn(admin_server);
    if let Some(path) = &args.admin_address_path {
        write_atomically(path, &bound.to_string())?;
    }
    tracing::info!(admin = %bound, node = %boot.node.id, delta = boot.delta, "rudder-proxy starting");

    let (agent_names, names_rx) = watch::channel(Default::default());
    if let Some(socket) = boot.agent_sds.clone() {
        let sds = AgentSdsClient {
            socket,
            node: boot.node.clone(),
            convert,
            stats: stats.clone(),
            publisher: publisher.clone(),
        };
        tokio::spawn(sds.run(names_rx, stop.clone()));
    }
    let ads = AdsClient {
        bootstrap: boot,
        convert,
        stats: stats.clone(),
        publisher,
        agent_names,
    };
    tokio::spawn(ads.run(stop.clone()));
    let ctx = Ctx::new(live, stats);
    ctx.listeners.set_limits(data::listen::Limits {
        drain_time: Duration::from_secs(args.drain_time_s),
        ..ctx.listeners.limits()
    });
    let (listen_stop_tx, listen_stop) = watch::channel(false);
    let listeners = tokio::spawn(data::listen::run(ctx, listen_stop));

    let why = wait_for_stop(quit.subscribe()).await?;
    tracing::info!(why, drain_s = args.drain_time_s, "draining");
    listen_stop_tx.send_replace(true);
    tokio::time::sleep(Duration::from_secs(args.drain_time_s)).await;
    listeners.abort();
    stop_tx.send_replace(true);
    quit.send_replace(true);
    Ok(())
}

async fn wait_for_stop(mut quit: watch::Receiver<bool>) -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = quit.wait_for(|q| *q) => "quitquitquit",
    })
}

/// Writes `text` to `path` through a temporary file, so a reader never sees half; where
/// the directory is not ours to write (an injected pod's admin file is made for the
/// proxy's user in a directory it cannot write), in place, as Envoy does.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        return std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()));
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
