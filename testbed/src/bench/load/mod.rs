//! The data-path load generator behind `loadgen run`: POSTs of a fixed body to one
//! target over N connections, HTTP/1.1 (one request in flight per connection) or HTTP/2
//! with prior knowledge (h2c, or h2 over TLS; many streams per connection), by address
//! (origin-form with `Host`) or through an explicit HTTP proxy (absolute-form).
//!
//! Two loops:
//! - open ([`Mode::Open`]): request i is due at `t0 + i / rate`, and its latency is
//!   measured from that intended time, not from when it was written; while every
//!   connection is busy the due requests wait, and the wait counts (coordinated-omission
//!   correction). Requests still waiting when the window closes are `unsent`.
//! - closed ([`Mode::Max`]): every slot sends back to back; the report's `achieved_rps`
//!   is the throughput.
//!
//! Latencies of ok requests (2xx, whole body read) go into one HDR histogram per worker
//! thread (microseconds, 3 significant figures), merged into the [`Report`]. `oha`
//! (crates.io) can cross-check the open loop: `oha -z 10s -q RATE -c N
//! --latency-correction --no-tui -m POST -D BODY_FILE [--http2] http://TARGET/PATH`.

mod conn;
mod stats;
mod tls;
mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::Uri;
use hyper::header::HeaderValue;
use hyper::http::uri::Authority;
use parking_lot::Mutex;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use stats::{Latency, ModeName, Report};
pub use tls::TlsFiles;

use conn::Dialer;
use stats::Recorder;
use worker::{Schedule, SharedH2, Slot, Template};

/// Which loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Open loop at this many requests per second.
    Open { rate: f64 },
    /// Closed loop: back to back.
    Max,
}

/// A run's settings (the `loadgen run` flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// `host:port`: the `Host` header (HTTP/1.1) or `:authority` (HTTP/2).
    pub target: String,
    /// The request path.
    pub path: String,
    /// Where to connect (`host:port`); default: the target.
    pub connect: Option<String>,
    /// HTTP/1.1 requests in absolute-form (`http://TARGET/PATH`), for an explicit
    /// HTTP proxy at `connect`.
    pub proxy: bool,
    /// HTTP/2 with prior knowledge.
    pub http2: bool,
    /// Client TLS; none: plain TCP.
    pub tls: Option<TlsFiles>,
    pub connections: usize,
    pub mode: Mode,
    /// Closed loop: requests in flight per connection (HTTP/2 only; default 8).
    pub streams: Option<usize>,
    /// Open loop, HTTP/2: the most requests in flight per connection.
    pub max_inflight: usize,
    pub body_bytes: usize,
    pub timeout: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    /// Worker threads, each with its own single-threaded runtime.
    pub threads: usize,
}

impl Config {
    /// The defaults of `loadgen run` for `target`, open loop at 1000/s.
    pub fn new(target: impl Into<String>) -> Self {
        Config {
            target: target.into(),
            path: "/".into(),
            connect: None,
            proxy: false,
            http2: false,
            tls: None,
            connections: 16,
            mode: Mode::Open { rate: 1000.0 },
            streams: None,
            max_inflight: 256,
            body_bytes: 1024,
            timeout: Duration::from_millis(5000),
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            threads: 1,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if let Mode::Open { rate } = self.mode
            && !(rate.is_finite() && rate > 0.0)
        {
            bail!("--rate {rate}: must be a positive number");
        }
        if self.duration.is_zero() {
            bail!("--duration-s must be positive");
        }
        if self.timeout.is_zero() {
            bail!("--timeout-ms must be positive");
        }
        if self.max_inflight == 0 || self.streams == Some(0) {
            bail!("--max-inflight and --streams must be at least 1");
        }
        if !self.http2 && self.streams.is_some_and(|s| s > 1) {
            bail!(
                "--streams: HTTP/1.1 has one request in flight per connection; use more --connections"
            );
        }
        if !self.path.starts_with('/') {
            bail!("--path {:?}: must start with /", self.path);
        }
        Ok(())
    }

    /// Request slots per connection.
    fn slots_per_connection(&self) -> usize {
        match (self.http2, self.mode) {
            (false, _) => 1,
            (true, Mode::Open { .. }) => self.max_inflight,
            (true, Mode::Max) => self.streams.unwrap_or(8),
        }
    }

    fn template(&self) -> anyhow::Result<Template> {
        let authority: Authority = self
            .target
            .parse()
            .with_context(|| format!("--target {:?}: not host:port", self.target))?;
        let scheme = if self.tls.is_some() && self.http2 {
            "https"
        } else {
            "http"
        };
        let absolute = || format!("{scheme}://{authority}{}", self.path);
        let (uri, host) = if self.http2 {
            (absolute(), None)
        } else if self.proxy {
            (absolute(), Some(authority.as_str()))
        } else {
            (self.path.clone(), Some(authority.as_str()))
        };
        let uri: Uri = uri
            .parse()
            .with_context(|| format!("--path {:?}: not a valid request path", self.path))?;
        let host = host
            .map(HeaderValue::from_str)
            .transpose()
            .with_context(|| format!("--target {:?}: not a valid Host", self.target))?;
        Ok(Template {
            uri,
            host,
            body: Bytes::from(vec![b'x'; self.body_bytes]),
            timeout: self.timeout,
        })
    }

    async fn dialer(&self) -> anyhow::Result<Dialer> {
        let connect = self.connect.as_deref().unwrap_or(&self.target);
        let addr: SocketAddr = tokio::net::lookup_host(connect)
            .await
            .with_context(|| format!("--connect {connect:?}: cannot resolve"))?
            .next()
            .with_context(|| format!("--connect {connect:?}: no address"))?;
        let tls = self
            .tls
            .as_ref()
            .map(|files| tls::connector(files, self.http2))
            .transpose()?;
        Ok(Dialer {
            addr,
            tls,
            http2: self.http2,
        })
    }
}

/// What every worker shares.
struct Plan {
    dialer: Dialer,
    template: Arc<Template>,
    workers: usize,
    connections: usize,
    slots_per_connection: usize,
    rate: Option<f64>,
    warmup: Duration,
    duration: Duration,
    /// All workers start their schedule at the same `t0`, once all are connected.
    barrier: tokio::sync::Barrier,
    t0: OnceLock<Instant>,
}

/// Runs the load and reports. One thread: on the caller's runtime; more: each worker
/// on its own thread with a single-threaded runtime.
pub async fn run(cfg: &Config) -> anyhow::Result<Report> {
    cfg.check()?;
    let workers = cfg.threads.min(cfg.connections);
    let plan = Arc::new(Plan {
        dialer: cfg.dialer().await?,
        template: Arc::new(cfg.template()?),
        workers,
        connections: cfg.connections,
        slots_per_connection: cfg.slots_per_connection(),
        rate: match cfg.mode {
            Mode::Open { rate } => Some(rate),
            Mode::Max => None,
        },
        warmup: cfg.warmup,
        duration: cfg.duration,
        barrier: tokio::sync::Barrier::new(workers),
        t0: OnceLock::new(),
    });
    let mut total = Recorder::new()?;
    if workers == 1 {
        total.merge(&worker(plan, 0).await?);
    } else {
        let mut results = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let plan = plan.clone();
            std::thread::Builder::new()
                .name(format!("loadgen-{w}"))
                .spawn(move || {
                    let result = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("worker runtime")
                        .and_then(|rt| rt.block_on(worker(plan, w)));
                    let _ = tx.send(result);
                })
                .context("spawning a worker thread")?;
            results.push(rx);
        }
        for rx in results {
            total.merge(&rx.await.context("a worker thread died")??);
        }
    }
    let mode = match cfg.mode {
        Mode::Open { .. } => ModeName::Open,
        Mode::Max => ModeName::Max,
    };
    let target = match cfg.mode {
        Mode::Open { rate } => Some(rate),
        Mode::Max => None,
    };
    Ok(Report::new(
        &total,
        mode,
        cfg.http2,
        cfg.connections,
        target,
        cfg.duration,
    ))
}

/// Worker `w`: opens its connections, waits for the others, sends its share.
async fn worker(plan: Arc<Plan>, w: usize) -> anyhow::Result<Recorder> {
    let connections =
        plan.connections / plan.workers + usize::from(w < plan.connections % plan.workers);
    let dialer = Arc::new(plan.dialer.clone());
    let mut first = Vec::with_capacity(connections);
    for _ in 0..connections {
        // A connection that fails now is dialed again by its first request.
        first.push(dialer.dial().await.ok());
    }
    let mut slots = Vec::new();
    if plan.dialer.http2 {
        let shared: Vec<Arc<SharedH2>> = first
            .into_iter()
            .map(|s| Arc::new(SharedH2::new(s)))
            .collect();
        // Interleaved, so that the first requests spread over the connections.
        for _ in 0..plan.slots_per_connection {
            for conn in &shared {
                slots.push(Slot {
                    dialer: dialer.clone(),
                    shared: Some(conn.clone()),
                    cached: None,
                });
            }
        }
    } else {
        for sender in first {
            slots.push(Slot {
                dialer: dialer.clone(),
                shared: None,
                cached: sender,
            });
        }
    }
    plan.barrier.wait().await;
    let t0 = *plan.t0.get_or_init(Instant::now);
    let open = plan.rate.map(|rate| (rate, w as u64, plan.workers as u64));
    let schedule = Arc::new(Schedule::new(t0, plan.warmup, plan.duration, open));
    let recorder = Arc::new(Mutex::new(Recorder::new()?));
    let mut tasks = JoinSet::new();
    for slot in slots {
        tasks.spawn(slot.run(schedule.clone(), plan.template.clone(), recorder.clone()));
    }
    while tasks.join_next().await.is_some() {}
    let mut recorder = Arc::into_inner(recorder)
        .context("a request task outlived its worker")?
        .into_inner();
    recorder.unsent(schedule.drain_unsent());
    Ok(recorder)
}
