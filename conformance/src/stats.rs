//! Counters, gauges and latency histograms by Envoy's stat names (`cluster.NAME.
//! upstream_rq_total`, `http.PREFIX.downstream_rq_total`, `listener_manager.lds.
//! update_rejected`, ...), so scenarios and dashboards read both proxies alike. The
//! admin port prints them as `/stats` text and `/stats/prometheus`.
//!
//! A metric is looked up once by name and kept (`Arc`); increments are atomic adds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::RwLock;

/// Latency histogram bucket upper bounds, in microseconds.
pub const BUCKETS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets it.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds `d` (negative to subtract).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    /// The value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram over [`BUCKETS_US`] (plus overflow), with count and sum.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..=BUCKETS_US.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one value in microseconds.
    pub fn record_us(&self, us: u64) {
        let i = BUCKETS_US.partition_point(|b| *b < us);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
    /// (per-bucket counts, not cumulative; the last is overflow), count, sum in us.
    pub fn read(&self) -> (Vec<u64>, u64, u64) {
        (
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.count.load(Ordering::Relaxed),
            self.sum_us.load(Ordering::Relaxed),
        )
    }
}

/// One registered metric.
#[derive(Clone, Debug)]
pub enum Metric {
    /// A counter.
    Counter(Arc<Counter>),
    /// A gauge.
    Gauge(Arc<Gauge>),
    /// A histogram.
    Histogram(Arc<Histogram>),
}

/// A stat name as Envoy writes it: `:` (a port in a stat prefix or an address) becomes
/// `_`, so `tcp.db.default.svc.cluster.local:5432.x` reads
/// `tcp.db.default.svc.cluster.local_5432.x` on both proxies.
pub fn sanitize(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains(':') {
        std::borrow::Cow::Owned(name.replace(':', "_"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// Every metric by its Envoy-style dotted name.
#[derive(Debug, Default)]
pub struct Stats {
    metrics: RwLock<BTreeMap<String, Metric>>,
}

impl Stats {
    /// The counter `name`, registered on first use.
    pub fn counter(&self, name: &str) -> Arc<Counter> {
        let name = &*sanitize(name);
        if let Some(Metric::Counter(c)) = self.metrics.read().get(name) {
            return c.clone();
        }
        let mut m = self.metrics.write();
        match m
            .entry(name.to_string())
            .or_insert_with(|| Metric::Counter(Arc::default()))
        {
            Metric::Counter(c) => c.clone(),
            // A name used as another kind: a detached counter, so nothing panics.
            _ => Arc::default(),
        }
    }

    /// The gauge `name`, registered on first use.
    pub fn gauge(&self, name: &str) -> Arc<Gauge> {
        let name = &*sanitize(name);
        if let Some(Metric::Gauge(g)) = self.metrics.read().get(name) {
            return g.clone();
        }
        let mut m = self.metrics.write();
        match m
            .entry(name.to_string())
            .or_insert_with(|| Metric::Gauge(Arc::default()))
        {
            Metric::Gauge(g) => g.clone(),
            _ => Arc::default(),
        }
    }

    /// The histogram `name`, registered on first use.
    pub fn histogram(&self, name: &str) -> Arc<Histogram> {
        let name = &*sanitize(name);
        if let Some(Metric::Histogram(h)) = self.metrics.read().get(name) {
            return h.clone();
        }
        let mut m = self.metrics.write();
        match m
            .entry(name.to_string())
            .or_insert_with(|| Metric::Histogram(Arc::default()))
        {
            Metric::Histogram(h) => h.clone(),
            _ => Arc::default(),
        }
    }

    /// Every metric, by name.
    pub fn all(&self) -> Vec<(String, Metric)> {
        self.metrics
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_one_metric_and_a_clash_does_not_panic() {
        let s = Stats::default();
        s.counter("a.b").inc();
        s.counter("a.b").add(2);
        assert_eq!(s.counter("a.b").get(), 3);
        s.gauge("a.b").set(5);
        assert_eq!(s.counter("a.b").get(), 3);
        s.counter("tcp.db:5432.x").inc();
        assert_eq!(
            s.counter("tcp.db_5432.x").get(),
            1,
            "named as Envoy names it"
        );
        s.histogram("h").record_us(300);
        let (b, n, sum) = s.histogram("h").read();
        assert_eq!((n, sum), (1, 300));
        assert_eq!(b[2], 1, "300 us falls in the 500 us bucket");
    }
}
