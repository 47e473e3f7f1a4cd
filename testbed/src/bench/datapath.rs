//! One data-path measurement: a `loadgen run` process (pinned like the sinks) against a
//! target, with the CPU time and peak resident memory of the proxies it goes through
//! read from /proc around it. The CPU window starts when the load generator's warm-up
//! ends, so CPU per request divides by the requests it recorded.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use super::procstat;
use crate::procs::workspace_bin;

/// What load to offer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Load {
    /// Open loop at this many requests per second over HTTP/1.1.
    Rate(u32),
    /// Closed loop, as fast as it goes, over HTTP/1.1 or HTTP/2.
    Max {
        /// HTTP/2 (h2c to the first hop).
        http2: bool,
    },
}

impl Load {
    /// A short label for tables.
    pub fn label(self) -> String {
        match self {
            Load::Rate(r) => format!("{r} rps"),
            Load::Max { http2: false } => "max, HTTP/1.1".into(),
            Load::Max { http2: true } => "max, HTTP/2".into(),
        }
    }
}

/// Where the load goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// The address the load generator connects to.
    pub connect: SocketAddr,
    /// Host / :authority.
    pub authority: String,
    /// Send absolute-form requests (to an explicit proxy).
    pub absolute_form: bool,
}

/// Run shape shared by every measurement.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Connections the load generator opens.
    pub connections: usize,
    /// Measured window.
    pub duration: Duration,
    /// Warm-up before it (sent, not recorded).
    pub warmup: Duration,
    /// Request body bytes.
    pub body_bytes: usize,
    /// CPU for the load generator.
    pub cpu: Option<usize>,
}

/// The load generator's report (its JSON) plus the proxies' costs.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// Requests recorded in the window.
    pub requests: u64,
    /// Failed ones.
    pub failed: u64,
    /// Never sent because the generator fell behind the schedule.
    pub unsent: u64,
    /// Achieved requests per second.
    pub achieved_rps: f64,
    /// Latency percentiles in microseconds: p50, p90, p99, p99.9, max.
    pub latency_us: [f64; 5],
    /// Failures by kind.
    pub errors: serde_json::Value,
    /// CPU nanoseconds of each watched process over the window.
    pub cpu_ns: Vec<u64>,
    /// Peak RSS bytes of each watched process during the run.
    pub rss_peak: Vec<u64>,
}

impl Measurement {
    /// CPU microseconds per request of watched process `i`.
    pub fn cpu_us_per_request(&self, i: usize) -> f64 {
        self.cpu_ns.get(i).copied().unwrap_or(0) as f64 / 1e3 / self.requests.max(1) as f64
    }
}

/// Runs the load generator once against `target` while watching `pids`.
pub async fn measure(
    target: &Target,
    load: Load,
    shape: Shape,
    pids: &[u32],
) -> anyhow::Result<Measurement> {
    let mut cmd = match shape.cpu {
        Some(cpu) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", &cpu.to_string()])
                .arg(workspace_bin("loadgen")?);
            c
        }
        None => tokio::process::Command::new(workspace_bin("loadgen")?),
    };
    cmd.args(["run", "--connect", &target.connect.to_string()])
        .args(["--target", &target.authority, "--path", "/bench"])
        .args(["--connections", &shape.connections.to_string()])
        .args(["--duration-s", &shape.duration.as_secs_f64().to_string()])
        .args(["--warmup-s", &shape.warmup.as_secs_f64().to_string()])
        .args(["--body-bytes", &shape.body_bytes.to_string()])
        .args(["--json", "-"]);
    if target.absolute_form {
        cmd.arg("--proxy");
    }
    match load {
        Load::Rate(r) => {
            cmd.args(["--rate", &r.to_string()]);
        }
        Load::Max { http2 } => {
            cmd.arg("--max");
            if http2 {
                cmd.arg("--http2");
            }
        }
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().context("starting loadgen")?;
    let watch = procstat::PeakRss::start(pids, Duration::from_millis(50));
    tokio::time::sleep(shape.warmup).await;
    let cpu_start: Vec<u64> = pids
        .iter()
        .map(|p| procstat::cpu_ns(*p).unwrap_or(0))
        .collect();
    let out = child.wait_with_output().await?;
    let cpu_end: Vec<u64> = pids
        .iter()
        .map(|p| procstat::cpu_ns(*p).unwrap_or(0))
        .collect();
    let rss_peak = watch.stop();
    if !out.status.success() {
        bail!(
            "loadgen failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("loadgen's JSON report")?;
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let lat = &json["latency_us"];
    Ok(Measurement {
        requests: json["requests"].as_u64().unwrap_or(0),
        failed: json["failed"].as_u64().unwrap_or(0),
        unsent: json["unsent"].as_u64().unwrap_or(0),
        achieved_rps: num(&json["achieved_rps"]),
        latency_us: [
            num(&lat["p50"]),
            num(&lat["p90"]),
            num(&lat["p99"]),
            num(&lat["p999"]),
            num(&lat["max"]),
        ],
        errors: json["errors"].clone(),
        cpu_ns: cpu_start
            .iter()
            .zip(&cpu_end)
            .map(|(a, b)| b.saturating_sub(*a))
            .collect(),
        rss_peak,
    })
}
