//! `xdsctl`: see what every proxy was sent, whether it accepted it, and why not.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
mod authz;
mod views;

use xds_types::XdsType;

/// Inspect the xDS config Rudder sends to each proxy, and what each proxy did with it.
///
/// Exit codes: 0 all good; 1 error (e.g. control plane unreachable); 2 proxy unknown;
/// 3 a proxy rejected config (NACKED) or drifted from what Rudder sent; 4 `authz check`
/// answered deny.
#[derive(Parser)]
#[command(name = "xdsctl", version)]
struct Args {
    /// The control plane's xDS address (CSDS is served on the same port).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:15010",
        env = "RUDDER_XDS_ADDRESS"
    )]
    server: String,
    /// Directory with xds-client.crt, xds-client.key and xds-ca.crt (from `xds-server
    /// credentials`); the identity must be in namespace rudder-system.
    #[arg(long, global = true, env = "XDSCTL_CERT_DIR")]
    cert_dir: Option<PathBuf>,
    /// Plain text (only against `xds-server run --insecure-xds`).
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Cmd {
    /// One line per proxy. Columns: NODE (xDS node id), IDENTITY (its SPIFFE ID), KIND,
    /// STREAM (sotw or delta), then per type SDS/CDS/EDS/LDS/RDS/VHDS: SYNCED (it ACKed the
    /// current version of everything), NOT SENT (nothing of that type sent), STALE (sent
    /// but not yet ACKed, or ACKed an older version), NACKED (it rejected something:
    /// see `xdsctl dump`); LAST ACK (time since its last ACK).
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Everything one proxy was sent, with each resource's status and the proxy's error
    /// text for rejected ones.
    Dump {
        /// The proxy's node id (see `xdsctl status`).
        proxy: String,
        /// Only these types: sds, cds, eds, lds, rds, vhds (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Only this resource.
        #[arg(long)]
        name: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Json)]
        output: Output,
        /// Compare with a live Envoy's admin endpoint (e.g. http://127.0.0.1:15000) and
        /// print what differs.
        #[arg(long)]
        envoy_admin: Option<String>,
    },
    /// Authorization (SMI TrafficTarget) answers from the control plane's model,
    /// without sending traffic.
    Authz {
        #[command(subcommand)]
        command: authz::AuthzCmd,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xdsctl: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xdsctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn connect(args: &Args) -> anyhow::Result<tonic::transport::Channel> {
    let host = args
        .server
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&args.server)
        .trim_matches(['[', ']']);
    let endpoint = if args.insecure {
        tonic::transport::Endpoint::from_shared(format!("http://{}", args.server))?
    } else {
        let dir = args
            .cert_dir
            .as_ref()
            .context("--cert-dir is required unless --insecure (see `xds-server credentials`)")?;
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .with_context(|| format!("reading {}", dir.join(f).display()))
        };
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read("xds-ca.crt")?))
            .identity(tonic::transport::Identity::from_pem(
                read("xds-client.crt")?,
                read("xds-client.key")?,
            ))
            .domain_name(host.to_string());
        tonic::transport::Endpoint::from_shared(format!("https://{}", args.server))?
            .tls_config(tls)?
    };
    endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the control plane at {}", args.server))
}

fn print(
    value: &serde_json::Value,
    output: Output,
    table: impl Fn() -> String,
) -> anyhow::Result<()> {
    let text = match output {
        Output::Table => table(),
        Output::Json => serde_json::to_string_pretty(value)? + "\n",
        Output::Yaml => serde_saphyr::to_string(value).map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<u8> {
    if let Cmd::Completion { shell } = &args.command {
        clap_complete::generate(
            *shell,
            &mut Args::command(),
            "xdsctl",
            &mut std::io::stdout(),
        );
        return Ok(0);
    }
    let channel = connect(&args).await?;
    if let Cmd::Authz { command } = &args.command {
        return authz::run(channel, command).await;
    }
    let mut client =
        ClientStatusDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let response = client
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .map_err(|s| anyhow::anyhow!("CSDS: {}", s.message()))?
        .into_inner();
    match &args.command {
        Cmd::Status { output } => {
            let rows: Vec<views::StatusRow> = response
                .config
                .iter()
                .map(|c| views::status_row(c, SystemTime::now()))
                .collect();
            print(&views::status_json(&rows), *output, || {
                views::status_table(&rows)
            })?;
            let bad = rows
                .iter()
                .any(|r| r.types.values().any(|s| *s == "NACKED"));
            Ok(if bad { 3 } else { 0 })
        }
        Cmd::Dump {
            proxy,
            types,
            name,
            output,
            envoy_admin,
        } => {
            let Some(config) = response
                .config
                .iter()
                .find(|c| c.node.as_ref().is_some_and(|n| n.id == *proxy))
            else {
                eprintln!("xdsctl: no connected proxy {proxy:?} (see `xdsctl status`)");
                return Ok(2);
            };
            let types = types
                .iter()
                .map(|t| {
                    XdsType::from_short(t)
                        .with_context(|| format!("--type {t}: expected one of {}", type_names()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let filter = views::DumpFilter {
                types,
                name: name.clone(),
            };
            if let Some(url) = envoy_admin {
                let dump = fetch_config_dump(url).await?;
                let delta = views::status_row(config, SystemTime::now()).stream == "delta";
                let diffs = views::drift(config, &views::envoy_holds(&dump), delta);
                if diffs.is_empty() {
                    println!("{proxy}: Envoy holds exactly what it ACKed from Rudder");
                    return Ok(0);
                }
                for d in &diffs {
                    println!("{d}");
                }
                return Ok(3);
            }
            let dump = views::dump_json(config, &filter);
            print(&dump, *output, || views::dump_table(&dump))?;
            let nacked = dump["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["status"] == "NACKED");
            Ok(if nacked { 3 } else { 0 })
        }
        Cmd::Completion { .. } | Cmd::Authz { .. } => Ok(0),
    }
}

async fn fetch_config_dump(url: &str) -> anyhow::Result<serde_json::Value> {
    let uri: hyper::Uri =
        format!("{}/config_dump?include_eds", url.trim_end_matches('/')).parse()?;
    let host = uri
        .host()
        .context("--envoy-admin needs a host")?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot reach Envoy admin at {url}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let req = hyper::Request::get(path)
        .header("host", format!("{host}:{port}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("Envoy admin answered {}", resp.status());
    }
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    serde_json::from_slice(&body).context("Envoy's config_dump is not JSON")
}

/// The short names `--type` takes, lower case.
fn type_names() -> String {
    let names: Vec<String> = XdsType::ALL
        .iter()
        .map(|t| t.short().to_lowercase())
        .collect();
    names.join(", ")
}
