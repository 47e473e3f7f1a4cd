//! What a run measured: one `Recorder` per worker (latency histogram in microseconds,
//! counts of ok, failed by kind and unsent requests), merged into the `Report`.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::conn::Failure;

/// The largest latency the histogram tells apart (an hour, in microseconds); longer
/// ones are recorded as this.
const HIGHEST_US: u64 = 3_600_000_000;

/// One worker's counts.
pub(crate) struct Recorder {
    hist: Histogram<u64>,
    ok: u64,
    failed: u64,
    unsent: u64,
    response_bytes: u64,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub(crate) fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Recorder {
            hist: Histogram::new_with_bounds(1, HIGHEST_US, 3)?,
            ok: 0,
            failed: 0,
            unsent: 0,
            response_bytes: 0,
            errors: BTreeMap::new(),
        })
    }

    pub(crate) fn ok(&mut self, latency: Duration, body_bytes: u64) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.hist.saturating_record(us.clamp(1, HIGHEST_US));
        self.ok += 1;
        self.response_bytes += body_bytes;
    }

    pub(crate) fn failed(&mut self, failure: Failure) {
        self.failed += 1;
        let kind = failure.kind();
        match self.errors.get_mut(kind.as_ref()) {
            Some(n) => *n += 1,
            None => {
                self.errors.insert(kind.into_owned(), 1);
            }
        }
    }

    pub(crate) fn unsent(&mut self, n: u64) {
        self.unsent += n;
    }

    pub(crate) fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.ok += other.ok;
        self.failed += other.failed;
        self.unsent += other.unsent;
        self.response_bytes += other.response_bytes;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
    }
}

/// Which loop ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    /// Open loop at a fixed rate.
    Open,
    /// Closed loop, back to back.
    Max,
}

/// Latency percentiles of the ok requests, in microseconds (0 when none).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// A run's result, as the JSON output.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub mode: ModeName,
    pub http2: bool,
    pub connections: usize,
    /// The open loop's rate; `null` for `max`.
    pub target_rps: Option<f64>,
    /// Ok requests per second of the measured window.
    pub achieved_rps: f64,
    /// The measured window, in seconds.
    pub duration_s: f64,
    /// Requests of the measured window that were sent: `ok + failed`.
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Requests of the measured window never sent because the generator fell behind
    /// (every connection busy until the window closed).
    pub unsent: u64,
    /// Failures by kind: `status_NNN`, `connect`, `tls`, `timeout`, `reset`, `closed`,
    /// `http`.
    pub errors: BTreeMap<String, u64>,
    pub latency_us: Latency,
    /// Bytes of ok response bodies read.
    pub response_bytes: u64,
}

impl Report {
    pub(crate) fn new(
        rec: &Recorder,
        mode: ModeName,
        http2: bool,
        connections: usize,
        target_rps: Option<f64>,
        duration: Duration,
    ) -> Self {
        let h = &rec.hist;
        let latency = if h.is_empty() {
            Latency::default()
        } else {
            let at = |q: f64| h.value_at_quantile(q) as f64;
            Latency {
                p50: at(0.5),
                p90: at(0.9),
                p99: at(0.99),
                p999: at(0.999),
                max: h.max() as f64,
                mean: h.mean(),
            }
        };
        let duration_s = duration.as_secs_f64();
        Report {
            mode,
            http2,
            connections,
            target_rps,
            achieved_rps: if duration_s > 0.0 {
                rec.ok as f64 / duration_s
            } else {
                0.0
            },
            duration_s,
            requests: rec.ok + rec.failed,
            ok: rec.ok,
            failed: rec.failed,
            unsent: rec.unsent,
            errors: rec.errors.clone(),
            latency_us: latency,
            response_bytes: rec.response_bytes,
        }
    }

    /// One line for a human.
    pub fn summary(&self) -> String {
        let target = self
            .target_rps
            .map(|r| format!(" target {r:.0}/s"))
            .unwrap_or_default();
        format!(
            "{mode:?} {proto} {conns} conns{target}: {rps:.0} ok/s over {dur:.1}s, {req} requests, \
             {ok} ok, {failed} failed {errors:?}, {unsent} unsent; latency us p50 {p50:.0} p90 \
             {p90:.0} p99 {p99:.0} p99.9 {p999:.0} max {max:.0}",
            mode = self.mode,
            proto = if self.http2 { "h2" } else { "h1" },
            conns = self.connections,
            rps = self.achieved_rps,
            dur = self.duration_s,
            req = self.requests,
            ok = self.ok,
            failed = self.failed,
            errors = self.errors,
            unsent = self.unsent,
            p50 = self.latency_us.p50,
            p90 = self.latency_us.p90,
            p99 = self.latency_us.p99,
            p999 = self.latency_us.p999,
            max = self.latency_us.max,
        )
    }
}
