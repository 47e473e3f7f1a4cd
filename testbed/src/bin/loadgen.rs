//! `loadgen`: the data-path benchmark's load generator and sink.
//!
//! - `loadgen run --target HOST:PORT (--rate R | --max) ...`: open-loop load at a fixed
//!   rate with coordinated-omission correction, or closed-loop throughput; prints one
//!   line on stderr and, with `--json PATH|-`, the report as JSON (testbed::bench::load).
//! - `loadgen serve --listen ADDR`: the sink, HTTP/1.1 and h2c on one port, answering
//!   200 with a fixed body (testbed::bench::sink).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use testbed::bench::load::{self, Config, Mode, TlsFiles};
use testbed::bench::sink;

#[derive(Parser, Debug)]
#[command(about = "HTTP load generator (open loop, coordinated-omission corrected) and sink")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send load and report latency and throughput.
    Run(Box<RunArgs>),
    /// Serve as the sink: 200 with a fixed body to every request.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The authority (`host:port`): Host header (HTTP/1.1) or :authority (HTTP/2).
    #[arg(long)]
    target: String,
    /// Where to connect (`host:port`), e.g. a sidecar's outbound port; default: --target.
    #[arg(long)]
    connect: Option<String>,
    /// Send HTTP/1.1 requests in absolute-form (`http://TARGET/PATH`), as to an explicit
    /// HTTP proxy at --connect.
    #[arg(long)]
    proxy: bool,
    /// The request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// HTTP/2 with prior knowledge (h2c, or ALPN h2 over TLS).
    #[arg(long)]
    http2: bool,
    /// Open loop: requests per second (required unless --max).
    #[arg(long, required_unless_present = "max", conflicts_with = "max")]
    rate: Option<f64>,
    /// Closed loop: every connection (times --streams for HTTP/2) sends back to back.
    #[arg(long)]
    max: bool,
    /// Connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Closed loop, HTTP/2: requests in flight per connection [default: 8; HTTP/1.1: 1].
    #[arg(long)]
    streams: Option<usize>,
    /// Open loop, HTTP/2: the most requests in flight per connection.
    #[arg(long, default_value_t = 256)]
    max_inflight: usize,
    /// Request body size (POST).
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// A request without a whole answer after this long fails as `timeout`.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Warm-up: requests due in it are sent but not recorded.
    #[arg(long, default_value_t = 1.0)]
    warmup_s: f64,
    /// The measured window.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Worker threads (each a single-threaded runtime with its share of connections).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CA certificates (PEM): use TLS, verifying the server against them.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for mutual TLS.
    #[arg(long, requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// The name the server's certificate must carry [default: --target's host].
    #[arg(long, requires = "ca")]
    server_name: Option<String>,
    /// Write the report as JSON to this file, or `-` for stdout.
    #[arg(long)]
    json: Option<String>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Response body size.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Threads, each a single-threaded runtime accepting on the same socket.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => sink::run(args.listen, args.body_bytes, args.threads),
        Command::Run(args) => run(*args),
    }
}

fn seconds(flag: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{flag} {s}: not a duration"))
}

fn host_of(target: &str) -> anyhow::Result<String> {
    let authority: http::uri::Authority = target
        .parse()
        .with_context(|| format!("--target {target:?}: not host:port"))?;
    Ok(authority.host().trim_matches(['[', ']']).to_string())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let tls = match args.ca {
        Some(ca) => Some(TlsFiles {
            ca,
            cert: args.cert,
            key: args.key,
            server_name: match args.server_name {
                Some(name) => name,
                None => host_of(&args.target)?,
            },
        }),
        None => None,
    };
    let cfg = Config {
        target: args.target,
        path: args.path,
        connect: args.connect,
        proxy: args.proxy,
        http2: args.http2,
        tls,
        connections: args.connections,
        mode: match args.rate {
            Some(rate) if !args.max => Mode::Open { rate },
            _ => Mode::Max,
        },
        streams: args.streams,
        max_inflight: args.max_inflight,
        body_bytes: args.body_bytes,
        timeout: Duration::from_millis(args.timeout_ms),
        warmup: seconds("--warmup-s", args.warmup_s)?,
        duration: seconds("--duration-s", args.duration_s)?,
        threads: args.threads,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(load::run(&cfg))?;
    eprintln!("{}", report.summary());
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&report)?;
        if path == "-" {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{json}")?;
        } else {
            std::fs::write(&path, json + "\n").with_context(|| format!("--json {path}"))?;
        }
    }
    Ok(())
}
