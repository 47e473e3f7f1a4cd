//! Command-line interface of the `xds-server` binary: parses one configuration at start
//! and runs the chosen command.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tokio_stream::wrappers::TcpListenerStream;

use crate::bootstrap::{BootstrapParams, bootstrap};
use crate::cache::{Cache, CacheConfig};
use crate::grpc::AdsService;
use crate::nack::NackLog;
use crate::source::manifest::{self, ManifestDir};

/// Rudder: a service-mesh control plane that drives Envoy over xDS.
#[derive(Debug, Parser)]
#[command(name = "xds-server", version)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json, env = "RUDDER_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane.
    Run(RunArgs),
    /// Print an Envoy bootstrap (JSON) for one pod's sidecar.
    Bootstrap(BootstrapArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["manifests", "kubernetes"])))]
struct RunArgs {
    /// Directory of Kubernetes YAML manifests (Services, EndpointSlices, Pods,
    /// TrafficSplits, RetryPolicies), watched live.
    #[arg(long, env = "RUDDER_MANIFESTS")]
    manifests: Option<PathBuf>,
    /// Watch a Kubernetes cluster (in-cluster config, or $KUBECONFIG / ~/.kube/config).
    #[arg(long)]
    kubernetes: bool,
    /// With --kubernetes: watch only these namespaces (repeat; default all).
    #[arg(long = "namespace")]
    namespaces: Vec<String>,
    /// With --kubernetes: namespace of the Lease that elects the status writer.
    #[arg(long, default_value = "rudder-system", env = "POD_NAMESPACE")]
    lease_namespace: String,
    /// With --kubernetes: this replica's identity in the Lease (default: hostname + random).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address the xDS (ADS) server listens on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:15010", env = "RUDDER_XDS_ADDRESS")]
    xds_address: SocketAddr,
    /// Once serving, write the bound addresses here as JSON: {"xds": "IP:PORT"}.
    #[arg(long, env = "RUDDER_READY_FILE")]
    ready_file: Option<PathBuf>,
    /// Quiet time after a change before proxies are pushed (milliseconds).
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
}

#[derive(Debug, clap::Args)]
struct BootstrapArgs {
    /// The pod's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The pod's name.
    #[arg(long)]
    pod: String,
    /// The pod's service account.
    #[arg(long, default_value = "default")]
    service_account: String,
    /// Node id (default POD.NAMESPACE).
    #[arg(long)]
    node_id: Option<String>,
    /// The pod IP the sidecar listens on (default: the Pod's status.podIP).
    #[arg(long)]
    pod_ip: Option<IpAddr>,
    /// The app-facing outbound port (default 15001).
    #[arg(long)]
    outbound_port: Option<u16>,
    /// Where the local app listens (default 127.0.0.1).
    #[arg(long)]
    app_address: Option<IpAddr>,
    /// The control plane's xDS address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:15010")]
    xds_address: String,
    /// Use delta (incremental) ADS.
    #[arg(long, conflicts_with = "sotw")]
    delta: bool,
    /// Use state-of-the-world ADS (the default).
    #[arg(long)]
    sotw: bool,
    /// Envoy's admin address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_address: SocketAddr,
}

impl Args {
    /// Parses the command line and runs.
    pub fn parse_and_run() -> anyhow::Result<()> {
        let args = Args::parse();
        init_logging(args.log_format);
        match args.command {
            Command::Run(run) => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?;
                rt.block_on(serve(run))
            }
            Command::Bootstrap(b) => print_bootstrap(b),
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUDDER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn print_bootstrap(b: BootstrapArgs) -> anyhow::Result<()> {
    let (host, port) = b
        .xds_address
        .rsplit_once(':')
        .context("--xds-address must be HOST:PORT")?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--xds-address: {port:?} is not a port"))?;
    let params = BootstrapParams {
        node_id: b.node_id,
        namespace: b.namespace,
        pod: b.pod,
        service_account: b.service_account,
        pod_ip: b.pod_ip,
        outbound_port: b.outbound_port,
        app_address: b.app_address,
        xds_host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        xds_port: port,
        delta: b.delta && !b.sotw,
        admin: b.admin_address,
    };
    println!("{}", serde_json::to_string_pretty(&bootstrap(&params))?);
    Ok(())
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let cache = Cache::new(CacheConfig {
        debounce: Duration::from_millis(args.debounce_ms),
        ..CacheConfig::default()
    });
    let nacks = Arc::new(NackLog::default());
    if let Some(dir) = &args.manifests {
        let mut source = ManifestDir::new(dir);
        manifest::apply(&cache, source.scan());
        tokio::spawn(manifest::run(source, cache.clone()));
        tokio::spawn(crate::status::log_changes(cache.clone()));
        tracing::info!(dir = %dir.display(), "manifests loaded");
    } else {
        let client = kube::Client::try_default()
            .await
            .context("connecting to Kubernetes (in-cluster config or kubeconfig)")?;
        let identity = args.identity.clone().unwrap_or_else(default_identity);
        let lease = crate::lease::LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: "rudder-status-writer".into(),
            identity,
        };
        let scope = crate::source::kube::KubeScope {
            namespaces: args.namespaces.clone(),
        };
        let sync = start_kubernetes(client, cache.clone(), &scope, lease);
        sync.wait().await;
        tracing::info!("Kubernetes objects listed");
    }
    let report = cache.rebuild_now();
    tracing::info!(shared_resources = report.resources, "initial sync done");

    let listener = tokio::net::TcpListener::bind(args.xds_address)
        .await
        .with_context(|| format!("binding the xDS address {}", args.xds_address))?;
    let bound = listener
        .local_addr()
        .context("reading the bound xDS address")?;
    tokio::spawn(cache.clone().run_pusher());

    let server = serve_ads(listener, cache, nacks, shutdown());
    if let Some(path) = &args.ready_file {
        write_ready(path, bound).with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(xds = %bound, "serving xDS");
    server.await?;
    tracing::info!("shut down");
    Ok(())
}

/// Serves ADS on `listener` until `shutdown` completes.
pub async fn serve_ads(
    listener: tokio::net::TcpListener,
    cache: Arc<Cache>,
    nacks: Arc<NackLog>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let ads = AggregatedDiscoveryServiceServer::new(AdsService::new(cache, nacks))
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(ads)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .context("xDS server failed")
}

/// Starts the Kubernetes watchers, the Lease election and the status writer.
pub fn start_kubernetes(
    client: kube::Client,
    cache: Arc<Cache>,
    scope: &crate::source::kube::KubeScope,
    lease: crate::lease::LeaseConfig,
) -> crate::source::kube::SyncState {
    let (rejected, sync) = crate::source::kube::spawn(client.clone(), cache.clone(), scope);
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    let field_manager = format!("rudder/{}", lease.identity);
    tokio::spawn(crate::lease::run(client.clone(), lease, leader_tx));
    tokio::spawn(crate::status::run(
        client,
        cache,
        rejected,
        leader_rx,
        field_manager,
    ));
    sync
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "rudder".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

fn write_ready(path: &std::path::Path, xds: SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::json!({ "xds": xds.to_string() }).to_string(),
    )?;
    std::fs::rename(tmp, path)
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
