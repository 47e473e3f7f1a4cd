//! Command-line interface of the `xds-server` binary: parses one configuration at start
//! and runs the chosen command, turning its flags into [`crate::config`] settings.
//! Bootstraps come from [`crate::agent::bootstrap`]. (`xdsctl` is its own crate.)

mod ca_cmd;
mod limits;
mod security;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::agent::bootstrap::{BootstrapParams, BootstrapTls, bootstrap};
use crate::cli::limits::LimitArgs;
use crate::cli::security::SecurityArgs;

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
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane.
    Run(Box<RunArgs>),
    /// Print an Envoy bootstrap (JSON) for one pod's sidecar.
    Bootstrap(BootstrapArgs),
    /// Manage the CA directory (manifest mode).
    #[command(subcommand)]
    Ca(ca_cmd::CaCommand),
    /// Issue client credentials for an identity (e.g. xdsctl in namespace rudder-system).
    Credentials(CredentialsArgs),
    /// Run the proxy agent beside a proxy: obtain and renew its credentials.
    Agent(AgentArgs),
    /// Print, or install (the injected init container), the pod's interception rules.
    Iptables(IptablesArgs),
}

#[derive(Debug, clap::Args)]
struct IptablesArgs {
    /// Install the rules (iptables-restore; ip6tables-restore and `::6` on `lo` too when
    /// there are IPv6 exclusions or IPv6 is enabled, and then their failure fails the
    /// command: IPv6 never bypasses the sidecar) instead of printing them.
    #[arg(long)]
    apply: bool,
    #[command(flatten)]
    interception: InterceptionArgs,
}

/// The sidecar injector (cluster installs; the chart sets these from its values).
#[derive(Clone, Debug, clap::Args)]
struct InjectArgs {
    /// Serve the sidecar injector webhook (HTTPS) here; off when unset.
    #[arg(long, env = "RUDDER_INJECTOR_ADDRESS")]
    injector_address: Option<SocketAddr>,
    /// Envoy's image for injected sidecars.
    #[arg(
        long,
        default_value = "envoyproxy/envoy:v1.40.0",
        env = "RUDDER_PROXY_IMAGE"
    )]
    proxy_image: String,
    /// The agent's image (the control plane's own, distroless).
    #[arg(long, default_value = concat!("ghcr.io/rudder-mesh/rudder:", env!("CARGO_PKG_VERSION")), env = "RUDDER_AGENT_IMAGE")]
    agent_image: String,
    /// The interception init container's image: the same binary with iptables beside it
    /// (the Dockerfile's `init` target).
    #[arg(long, default_value = concat!("ghcr.io/rudder-mesh/rudder-init:", env!("CARGO_PKG_VERSION")), env = "RUDDER_INIT_IMAGE")]
    init_image: String,
    /// The xDS address injected sidecars use.
    #[arg(
        long,
        default_value = "rudder.rudder-system.svc:15010",
        env = "RUDDER_SIDECAR_XDS_ADDRESS"
    )]
    sidecar_xds_address: String,
    /// The certificate endpoint injected agents use.
    #[arg(
        long,
        default_value = "rudder.rudder-system.svc:15012",
        env = "RUDDER_SIDECAR_CA_ADDRESS"
    )]
    sidecar_ca_address: String,
    /// Injected sidecars use state-of-the-world ADS instead of delta.
    #[arg(long)]
    sidecar_sotw: bool,
    /// Injected Envoy's resources (a Kubernetes ResourceRequirements, JSON).
    #[arg(long, default_value = r#"{"requests":{"cpu":"50m","memory":"64Mi"},"limits":{"cpu":"1","memory":"256Mi"}}"#, value_parser = parse_resources)]
    proxy_resources: serde_json::Value,
    /// Injected Envoy's drain time on shutdown.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    sidecar_drain_time: Duration,
    /// No init container: the rudder-cni plugin on each node installs injected pods'
    /// interception rules (no privileged container in the pod).
    #[arg(long, env = "RUDDER_SIDECAR_CNI")]
    sidecar_cni: bool,
    /// Injected agents relay their proxy's stats on the status port (for a PodMonitor);
    /// off by default: the status port is reachable by every pod.
    #[arg(long)]
    sidecar_proxy_stats: bool,
    /// The MutatingWebhookConfiguration whose caBundle this control plane keeps (one per
    /// revision).
    #[arg(long, default_value = crate::k8s::inject::webhook::WEBHOOK_CONFIG)]
    webhook_name: String,
    #[command(flatten)]
    interception: InterceptionArgs,
}

fn parse_resources(s: &str) -> Result<serde_json::Value, String> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))?;
    let ok = v.as_object().is_some_and(|o| {
        o.keys().all(|k| k == "requests" || k == "limits")
            && o.values().all(|q| {
                q.as_object()
                    .is_some_and(|q| q.values().all(|x| x.is_string()))
            })
    });
    if !ok {
        return Err("expected {\"requests\": {\"cpu\": \"50m\", ...}, \"limits\": {...}}".into());
    }
    Ok(v)
}

impl InjectArgs {
    fn config(
        &self,
        log_format: LogFormat,
    ) -> Option<(SocketAddr, crate::k8s::inject::InjectConfig)> {
        let addr = self.injector_address?;
        // The control plane's own ports are never intercepted (the proxy's UID already
        // goes straight out; this also covers an app that talks to it, such as xdsctl).
        let mut interception = self.interception.settings();
        for a in [&self.sidecar_xds_address, &self.sidecar_ca_address] {
            if let Some(port) = a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
                interception.exclude_outbound_ports.push(port);
            }
        }
        interception.exclude_outbound_ports.sort_unstable();
        interception.exclude_outbound_ports.dedup();
        Some((
            addr,
            crate::k8s::inject::InjectConfig {
                proxy_image: self.proxy_image.clone(),
                agent_image: self.agent_image.clone(),
                init_image: self.init_image.clone(),
                xds_address: self.sidecar_xds_address.clone(),
                ca_address: self.sidecar_ca_address.clone(),
                trust_domain: String::new(),
                trust_bundle_pem: String::new(),
                delta: !self.sidecar_sotw,
                proxy_resources: self.proxy_resources.clone(),
                drain_seconds: u32::try_from(self.sidecar_drain_time.as_secs()).unwrap_or(5),
                interception,
                log_format: match log_format {
                    LogFormat::Json => "json".into(),
                    LogFormat::Text => "text".into(),
                },
                // Set from the watched namespaces when the injector starts.
                namespaces: Vec::new(),
                webhook_name: self.webhook_name.clone(),
                proxy_stats: self.sidecar_proxy_stats,
                mode: match self.sidecar_cni {
                    true => crate::k8s::inject::InterceptionMode::Cni,
                    false => crate::k8s::inject::InterceptionMode::InitContainer,
                },
            },
        ))
    }
}

/// Interception settings shared by `iptables` and the injector.
#[derive(Clone, Debug, clap::Args)]
struct InterceptionArgs {
    /// Envoy's outbound (original destination) port.
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    /// Envoy's inbound port.
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    /// The UID Envoy and the agent run as (their traffic is not intercepted).
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    /// The agent's status port (not intercepted inbound).
    #[arg(long, default_value_t = 15021)]
    agent_status_port: u16,
    /// Outbound destination ports not intercepted (repeat).
    #[arg(long = "exclude-outbound-port")]
    exclude_outbound_ports: Vec<u16>,
    /// Inbound ports not intercepted (repeat).
    #[arg(long = "exclude-inbound-port")]
    exclude_inbound_ports: Vec<u16>,
    /// Outbound destination networks not intercepted, ADDR/LEN (repeat).
    #[arg(long = "exclude-cidr", value_parser = crate::k8s::inject::iptables::parse_cidr)]
    exclude_cidrs: Vec<(IpAddr, u8)>,
}

impl InterceptionArgs {
    fn settings(&self) -> crate::k8s::inject::iptables::Interception {
        crate::k8s::inject::iptables::Interception {
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            proxy_uid: self.proxy_uid,
            agent_status_port: self.agent_status_port,
            exclude_outbound_ports: self.exclude_outbound_ports.clone(),
            exclude_inbound_ports: self.exclude_inbound_ports.clone(),
            exclude_cidrs: self.exclude_cidrs.clone(),
        }
    }
}

#[derive(Debug, clap::Args)]
struct AgentArgs {
    /// The directory shared with the proxy (xds-client.crt, .key, xds-ca.crt, SDS files).
    #[arg(long, env = "RUDDER_CERT_DIR")]
    cert_dir: PathBuf,
    /// The control plane's certificate endpoint, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:15012", env = "RUDDER_CA_ADDRESS")]
    ca_address: String,
    /// A projected ServiceAccount token (audience rudder) to authenticate with when no
    /// valid certificate is installed.
    #[arg(long, env = "RUDDER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The trust bundle to check the control plane with before credentials are installed.
    #[arg(long, env = "RUDDER_TRUST_BUNDLE")]
    trust_bundle: Option<PathBuf>,
    /// The identity to hold, as namespace/serviceaccount (refuses anything else).
    #[arg(long, env = "RUDDER_IDENTITY")]
    identity: Option<String>,
    /// SPIFFE trust domain (with --identity).
    #[arg(long, default_value = "cluster.local", env = "RUDDER_TRUST_DOMAIN")]
    trust_domain: String,
    /// Where /ready and /status are served (port 0 picks a free port).
    #[arg(
        long,
        default_value = "127.0.0.1:15021",
        env = "RUDDER_AGENT_STATUS_ADDRESS"
    )]
    status_address: SocketAddr,
    /// Once serving, write {"status": "IP:PORT"} here.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// The trust bundle itself, PEM (the injector passes it in the environment).
    #[arg(long, env = "RUDDER_TRUST_BUNDLE_PEM", hide_env_values = true)]
    trust_bundle_pem: Option<String>,
    /// Write the proxy's Envoy bootstrap here once credentials are installed.
    #[arg(long, requires = "pod")]
    bootstrap_out: Option<PathBuf>,
    /// With --bootstrap-out: the pod's name.
    #[arg(long, env = "POD_NAME")]
    pod: Option<String>,
    /// With --bootstrap-out: the pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// With --bootstrap-out: the pod's service account.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// With --bootstrap-out: the pod IP the sidecar listens on.
    #[arg(long, env = "POD_IP")]
    pod_ip: Option<IpAddr>,
    /// With --bootstrap-out: the app-facing outbound port.
    #[arg(long)]
    outbound_port: Option<u16>,
    /// With --bootstrap-out: where the local app listens (default 127.0.0.1).
    #[arg(long)]
    app_address: Option<IpAddr>,
    /// With --bootstrap-out: the control plane's xDS address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:15010", env = "RUDDER_XDS_ADDRESS")]
    xds_address: String,
    /// With --bootstrap-out: use delta (incremental) ADS.
    #[arg(long)]
    delta: bool,
    /// App probes to forward to the app on loopback (JSON; the injector sets it).
    #[arg(long, env = "RUDDER_APP_PROBES", value_parser = crate::agent::probe_port::parse_app_probes)]
    app_probes: Option<std::collections::BTreeMap<String, crate::agent::probe_port::AppProbe>>,
    /// Relay the proxy's Prometheus stats on the status port (`/stats/prometheus`), for a
    /// PodMonitor; off, that path answers 404.
    #[arg(long, env = "RUDDER_PROXY_STATS")]
    proxy_stats: bool,
    /// The token the proxy's preStop hook sends to `/drain` (the injector sets it);
    /// without one, `/drain` is refused.
    #[arg(long, env = "RUDDER_DRAIN_TOKEN", hide_env_values = true)]
    drain_token: Option<String>,
    /// How long `/drain` waits after asking the proxy to drain (seconds, at most 300).
    #[arg(long, env = "RUDDER_DRAIN_SECONDS", default_value_t = 5)]
    drain_seconds: u64,
    /// With --bootstrap-out: the pod's traffic is intercepted by iptables (injected pods).
    #[arg(long)]
    intercepted: bool,
    /// With --intercepted: the port inbound traffic is redirected to.
    #[arg(long, default_value_t = translator::identity::DEFAULT_INBOUND_PORT)]
    inbound_port: u16,
    /// With --bootstrap-out: Envoy's admin address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    envoy_admin_address: SocketAddr,
    /// With --bootstrap-out: write a proxyless gRPC app's bootstrap instead of Envoy's.
    #[arg(long, conflicts_with_all = ["delta", "intercepted"])]
    grpc: bool,
    /// With --grpc: serve the app xDS in plain text on a Unix socket in --cert-dir
    /// (xds.sock, this user only) and forward it to --xds-address over mTLS with the
    /// pod's certificate; the app's bootstrap points there. For gRPC implementations
    /// without gRFC A65 `tls` channel credentials (grpc-js).
    #[arg(long, requires = "grpc")]
    xds_proxy: bool,
}

#[derive(Debug, clap::Args)]
struct CredentialsArgs {
    /// Namespace of the identity.
    #[arg(long, default_value = "rudder-system")]
    namespace: String,
    /// Service account of the identity.
    #[arg(long, default_value = "xdsctl")]
    service_account: String,
    /// Where to write xds-client.crt, xds-client.key and xds-ca.crt.
    #[arg(long)]
    cert_dir: PathBuf,
    #[command(flatten)]
    security: SecurityArgs,
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
    /// Inbound mTLS mode for every workload (a pod may override it with the
    /// rudder.dev/mtls-mode annotation): strict or permissive.
    #[arg(long, default_value = "strict", value_parser = parse_mode)]
    mtls_mode: translator::tls::MtlsMode,
    /// What a destination without a TrafficTarget allows: allow (every caller) or deny
    /// (only the control plane). A namespace (--namespace-inbound-policy) or a pod
    /// (the rudder.dev/default-inbound-policy annotation) may choose otherwise.
    #[arg(long, default_value = "allow", value_parser = parse_inbound)]
    default_inbound_policy: translator::mesh::InboundDefault,
    /// NAMESPACE=allow|deny: the default of one namespace (repeat for more).
    #[arg(long = "namespace-inbound-policy", value_parser = parse_namespace_inbound)]
    namespace_inbound_policy: Vec<(String, translator::mesh::InboundDefault)>,
    /// Extra DNS names in the control plane's serving certificate.
    #[arg(long = "xds-dns-name", default_values_t = ["localhost".to_string(), "rudder.rudder-system.svc".to_string()])]
    xds_dns_names: Vec<String>,
    /// Address the xDS (ADS) server listens on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:15010", env = "RUDDER_XDS_ADDRESS")]
    xds_address: SocketAddr,
    /// The certificate endpoint, where proxy agents obtain and renew certificates (HTTPS;
    /// port 0 picks a free port). Not served with --insecure-xds.
    #[arg(long, default_value = "127.0.0.1:15012", env = "RUDDER_CA_ADDRESS")]
    ca_address: SocketAddr,
    /// Do not serve the certificate endpoint.
    #[arg(long)]
    no_ca_endpoint: bool,
    /// Admin address serving /metrics, /healthz and /readyz; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:15014", env = "RUDDER_ADMIN_ADDRESS")]
    admin_address: SocketAddr,
    /// Once serving, write the bound addresses here as JSON: {"xds": "IP:PORT", "admin":
    /// "IP:PORT", "ca": "IP:PORT"}.
    #[arg(long, env = "RUDDER_READY_FILE")]
    ready_file: Option<PathBuf>,
    /// Burst window (milliseconds): a change after this much quiet is pushed at once;
    /// changes that follow a push closer than this wait for this much quiet (at most 1 s).
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// How long a manifest file still open for writing may stay quiet before it is read
    /// anyway (milliseconds). A file that was renamed into place, closed or removed is
    /// read at once.
    #[arg(long, default_value_t = 50)]
    manifest_debounce_ms: u64,
    /// On SIGTERM or Ctrl-C: the longest to wait for connections to close after every
    /// stream was ended (proxies reconnect elsewhere and keep their config meanwhile).
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "RUDDER_DRAIN_TIME")]
    drain_time: Duration,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    inject: InjectArgs,
    /// Benchmark baseline only: resend every resource of a type on any change instead of
    /// what changed.
    #[arg(long, hide = true)]
    full_resend: bool,
    /// Send a delta Envoy 1.37 or later the outbound table's virtual hosts apart (VHDS),
    /// so a change to one Service sends that Service's hosts, not the whole table.
    /// `false`: every proxy gets the whole table (older Envoys, SotW streams,
    /// rudder-proxy and gRPC always do).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "RUDDER_VHDS")]
    vhds: bool,
    #[command(flatten)]
    security: SecurityArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crds::duration::parse(s)
}

fn parse_inbound(s: &str) -> Result<translator::mesh::InboundDefault, String> {
    translator::mesh::InboundDefault::parse(s).ok_or_else(|| format!("{s:?} is not allow or deny"))
}

fn parse_namespace_inbound(s: &str) -> Result<(String, translator::mesh::InboundDefault), String> {
    let (ns, policy) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAMESPACE=allow|deny"))?;
    if !crds::text::is_dns_label(ns) {
        return Err(format!("{ns:?} is not a namespace name"));
    }
    Ok((ns.to_string(), parse_inbound(policy)?))
}

fn parse_mode(s: &str) -> Result<translator::tls::MtlsMode, String> {
    translator::tls::MtlsMode::parse(s).ok_or_else(|| format!("{s:?} is not strict or permissive"))
}

#[derive(Debug, clap::Args)]
struct BootstrapArgs {
    /// Where to write the sidecar's first certificate, key and CA bundle (its xDS client
    /// credentials, and what its agent serves it for mesh mTLS).
    #[arg(long, default_value = "rudder-certs")]
    cert_dir: PathBuf,
    #[command(flatten)]
    security: SecurityArgs,
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
    /// The pod's traffic is intercepted by iptables: listeners take it by original
    /// destination.
    #[arg(long)]
    intercepted: bool,
    /// Write a proxyless gRPC app's bootstrap (for GRPC_XDS_BOOTSTRAP) instead of
    /// Envoy's: certificates from files in --cert-dir, xDS over state-of-the-world ADS.
    #[arg(long, conflicts_with_all = ["delta", "intercepted"])]
    grpc: bool,
}

impl Args {
    /// Parses the command line and runs.
    pub fn parse_and_run() -> anyhow::Result<()> {
        let args = Args::parse();
        init_logging(args.log_format);
        match args.command {
            Command::Run(run) => run_server(*run, args.log_format),
            Command::Bootstrap(b) => print_bootstrap(b),
            Command::Iptables(i) => iptables(i),
            Command::Agent(a) => run_agent(a),
            Command::Ca(c) => ca_cmd::ca(c),
            Command::Credentials(c) => credentials(c),
        }
    }
}

/// `xds-server run`.
fn run_server(run: RunArgs, log_format: LogFormat) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(crate::server::serve(crate::server::ServeConfig {
        manifests: run.manifests,
        kubernetes: run.kubernetes,
        namespaces: run.namespaces,
        lease_namespace: run.lease_namespace,
        identity: run.identity,
        xds_address: run.xds_address,
        inject: run.inject.config(log_format),
        ca_address: (!run.no_ca_endpoint).then_some(run.ca_address),
        ready_file: run.ready_file,
        admin_address: run.admin_address,
        debounce: Duration::from_millis(run.debounce_ms),
        mtls_mode: run.mtls_mode,
        inbound: (
            run.default_inbound_policy,
            run.namespace_inbound_policy.into_iter().collect(),
        ),
        xds_dns_names: run.xds_dns_names,
        security: run.security.into(),
        drain: run.drain_time,
        limits: run.limits.into(),
        full_resend: run.full_resend,
        vhds: run.vhds,
        manifest_debounce: Duration::from_millis(run.manifest_debounce_ms),
    }));
    // Background tasks (watchers, the pusher) do not hold up the exit.
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

/// `xds-server iptables`: prints the pod's interception rules, or installs them.
fn iptables(i: IptablesArgs) -> anyhow::Result<()> {
    use crate::k8s::inject::iptables;
    let s = i.interception.settings();
    if !i.apply {
        print!("{}", iptables::rules(&s));
        return Ok(());
    }
    iptables::apply(&iptables::rules(&s), false)?;
    let v6 = s.exclude_cidrs.iter().any(|(ip, _)| ip.is_ipv6())
        || std::path::Path::new("/proc/net/if_inet6").exists();
    if v6 {
        // Without them the pod's IPv6 traffic would bypass the proxy: the
        // pod must not start half intercepted.
        let refused = "IPv6 is enabled in this pod but its interception rules could not be installed (its IPv6 traffic would bypass the proxy)";
        iptables::apply(&iptables::rules_v6(&s), true).context(refused)?;
        iptables::add_inbound_source_v6().context(refused)?;
    }
    println!("interception rules installed");
    Ok(())
}

/// `dir` as an absolute path: the sockets and files the agent names in bootstraps are
/// read by other processes from other working directories (grpc-js reads `unix://rel/x`
/// as authority `rel` and path `/x`).
fn absolute_cert_dir(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(dir).with_context(|| format!("--cert-dir {}", dir.display()))
}

/// `xds-server agent`.
fn run_agent(mut a: AgentArgs) -> anyhow::Result<()> {
    a.cert_dir = absolute_cert_dir(&a.cert_dir)?;
    let expected_identity = a
        .identity
        .as_deref()
        .map(|s| {
            let (ns, sa) = s
                .split_once('/')
                .context("--identity must be NAMESPACE/SERVICE_ACCOUNT")?;
            ca::SpiffeId::new(&a.trust_domain, ns, sa).context("--identity")
        })
        .transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let bootstrap = agent_bootstrap(&a)?;
    let xds_proxy = a
        .xds_proxy
        .then(|| -> anyhow::Result<_> {
            let (host, port) = split_host_port(&a.xds_address)?;
            Ok(crate::agent::xds_proxy::Upstream {
                dir: a.cert_dir.clone(),
                host,
                port,
                server_id: crate::runtime::control_plane_id(&a.trust_domain)?.to_string(),
            })
        })
        .transpose()?;
    rt.block_on(crate::agent::renewal::run(
        crate::agent::renewal::AgentConfig {
            trust_domain: a.trust_domain.clone(),
            trust_bundle_pem: a.trust_bundle_pem,
            bootstrap,
            intercepted: a.intercepted.then_some(a.inbound_port),
            grpc: a.grpc,
            xds_proxy,
            app_probes: a.app_probes.unwrap_or_default(),
            proxy_stats: a.proxy_stats,
            drain: a
                .drain_token
                .clone()
                .filter(|t| t.len() >= 16)
                .map(|token| crate::agent::probe_port::Drain {
                    token,
                    seconds: a.drain_seconds,
                }),
            cert_dir: a.cert_dir,
            endpoint: a.ca_address,
            token_file: a.token_file,
            trust_bundle: a.trust_bundle,
            expected_identity,
            status_address: a.status_address,
            ready_file: a.ready_file,
        },
    ))
}

/// Where the agent writes the proxy's bootstrap, and its parameters (with
/// `--bootstrap-out` and `--pod`).
fn agent_bootstrap(a: &AgentArgs) -> anyhow::Result<Option<(PathBuf, BootstrapParams)>> {
    let (Some(path), Some(pod)) = (&a.bootstrap_out, &a.pod) else {
        return Ok(None);
    };
    let (host, port) = split_host_port(&a.xds_address)?;
    Ok(Some((
        path.clone(),
        BootstrapParams {
            node_id: None,
            namespace: a.namespace.clone(),
            pod: pod.clone(),
            service_account: a.service_account.clone(),
            pod_ip: a.pod_ip,
            outbound_port: a.outbound_port,
            app_address: a.app_address,
            xds_host: host,
            xds_port: port,
            delta: a.delta,
            admin: a.envoy_admin_address,
            tls: None,
            agent_sds: None,
        },
    )))
}

/// `xds-server credentials`.
fn credentials(c: CredentialsArgs) -> anyhow::Result<()> {
    let params = BootstrapParams {
        node_id: None,
        namespace: c.namespace,
        pod: "credentials".into(),
        service_account: c.service_account,
        pod_ip: None,
        outbound_port: None,
        app_address: None,
        xds_host: String::new(),
        xds_port: 0,
        delta: false,
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: None,
        agent_sds: None,
    };
    let tls = write_client_credentials(&c.security, &c.cert_dir, &params)?;
    println!("wrote {} and its key", tls.cert_file.display());
    Ok(())
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

/// `HOST:PORT` (`[V6]:PORT` too) -> (host, port).
fn split_host_port(addr: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .context("--xds-address must be HOST:PORT")?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--xds-address: {port:?} is not a port"))?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

fn print_bootstrap(b: BootstrapArgs) -> anyhow::Result<()> {
    let intercepted = b.intercepted;
    let (host, port) = split_host_port(&b.xds_address)?;
    let params = BootstrapParams {
        node_id: b.node_id,
        namespace: b.namespace,
        pod: b.pod,
        service_account: b.service_account,
        pod_ip: b.pod_ip,
        outbound_port: b.outbound_port,
        app_address: b.app_address,
        xds_host: host,
        xds_port: port,
        delta: b.delta && !b.sotw,
        admin: b.admin_address,
        tls: None,
        agent_sds: None,
    };
    if b.grpc {
        // Mesh mTLS needs the files even where the xDS port is plain text. The app may
        // run elsewhere: the bootstrap names them by absolute path.
        let dir = std::path::absolute(&b.cert_dir)
            .with_context(|| format!("--cert-dir {}", b.cert_dir.display()))?;
        let tls = write_client_credentials(&b.security, &dir, &params)?;
        let params = BootstrapParams {
            tls: (!b.security.insecure_xds).then(|| tls.clone()),
            delta: false,
            ..params
        };
        let out = crate::agent::bootstrap::grpc_bootstrap(&params, &tls);
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    // The first key and certificate are made here, where the CA is (a development
    // tool): the agent renews them and serves them to Envoy. Plain-text xDS too gets
    // them, for mesh mTLS.
    let dir = std::path::absolute(&b.cert_dir)
        .with_context(|| format!("--cert-dir {}", b.cert_dir.display()))?;
    let tls = write_client_credentials(&b.security, &dir, &params)?;
    let params = BootstrapParams {
        agent_sds: Some(tls.dir.clone()),
        tls: (!b.security.insecure_xds).then_some(tls),
        ..params
    };
    let mut b = bootstrap(&params);
    if intercepted {
        crate::agent::bootstrap::mark_intercepted(
            &mut b,
            translator::identity::DEFAULT_INBOUND_PORT,
        );
    }
    println!("{}", serde_json::to_string_pretty(&b)?);
    Ok(())
}

/// Issues the sidecar's xDS client certificate (its own identity) and writes it, its
/// key and the trust bundle into `dir`.
fn write_client_credentials(
    sec: &SecurityArgs,
    dir: &std::path::Path,
    p: &BootstrapParams,
) -> anyhow::Result<BootstrapTls> {
    let authority = crate::pki::start::load_ca_files(&sec.clone().into())?;
    let id = ca::SpiffeId::new(&sec.trust_domain, &p.namespace, &p.service_account)
        .context("the pod's identity")?;
    let cert = authority
        .issue(&id, sec.cert_lifetime, std::time::SystemTime::now())
        .context("issuing the xDS client certificate")?;
    use crate::agent::files;
    files::install(
        dir,
        &files::Credentials {
            chain_pem: &cert.cert_chain_pem,
            key_pem: cert.private_key_pem(),
            bundle_pem: &authority.trust_bundle_pem(),
        },
    )?;
    Ok(BootstrapTls {
        dir: dir.to_path_buf(),
        cert_file: files::path(dir, files::CERT),
        key_file: files::path(dir, files::KEY),
        ca_file: files::path(dir, files::BUNDLE),
        server_id: crate::runtime::control_plane_id(&sec.trust_domain)?.to_string(),
    })
}

#[cfg(test)]
mod tests;
