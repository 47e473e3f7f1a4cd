//! The admin port's plain pages in Envoy's formats: `/stats` (`name: value`, sorted),
//! `/stats/prometheus`, `/clusters` (`NAME::IP:PORT::cx_total::N` per endpoint),
//! `/listeners` (`NAME::ADDRESS`), and `/certs` (JSON).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Value, json};

use super::dump::rfc3339;
use crate::config::Snapshot;
use crate::config::cluster::{Discovery, LoadAssignment};
use crate::config::secret::Secret;
use crate::stats::{BUCKETS_US, Metric, Stats, sanitize};

/// `/stats`: every counter and gauge (and a histogram summary) as `name: value`,
/// sorted, optionally only names matching `filter`.
pub(crate) fn stats(stats: &Stats, filter: Option<&regex::Regex>) -> String {
    let mut out = String::new();
    for (name, m) in stats.all() {
        if filter.is_some_and(|f| !f.is_match(&name)) {
            continue;
        }
        let _ = match m {
            Metric::Counter(c) => writeln!(out, "{name}: {}", c.get()),
            Metric::Gauge(g) => writeln!(out, "{name}: {}", g.get()),
            Metric::Histogram(h) => {
                let (_, count, sum) = h.read();
                if count == 0 {
                    writeln!(out, "{name}: No recorded values")
                } else {
                    writeln!(out, "{name}: count({count}) sum_us({sum})")
                }
            }
        };
    }
    out
}

/// `/stats/prometheus`: `envoy_` names with every other character an underscore;
/// histograms in milliseconds as Envoy's.
pub(crate) fn prometheus(stats: &Stats) -> String {
    let mut out = String::new();
    for (name, m) in stats.all() {
        let p: String = std::iter::once("envoy_".to_string())
            .chain(
                name.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }.to_string()),
            )
            .collect();
        let _ = match m {
            Metric::Counter(c) => writeln!(out, "# TYPE {p} counter\n{p} {}", c.get()),
            Metric::Gauge(g) => writeln!(out, "# TYPE {p} gauge\n{p} {}", g.get()),
            Metric::Histogram(h) => {
                let (buckets, count, sum) = h.read();
                let _ = writeln!(out, "# TYPE {p} histogram");
                let mut cumulative = 0;
                for (i, bound) in BUCKETS_US.iter().enumerate() {
                    cumulative += buckets.get(i).copied().unwrap_or(0);
                    let ms = *bound as f64 / 1000.0;
                    let _ = writeln!(out, "{p}_bucket{{le=\"{ms}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{p}_bucket{{le=\"+Inf\"}} {count}");
                writeln!(out, "{p}_sum {}\n{p}_count {count}", sum as f64 / 1000.0)
            }
        };
    }
    out
}

/// `/clusters`: each cluster's observability name, then per endpoint its counters,
/// weight and health.
pub(crate) fn clusters(snapshot: &Snapshot, stats: &Stats) -> String {
    let counters: BTreeMap<String, u64> = stats
        .all()
        .into_iter()
        .filter_map(|(n, m)| match m {
            Metric::Counter(c) => Some((n, c.get())),
            _ => None,
        })
        .collect();
    let mut out = String::new();
    for (name, c) in snapshot.clusters.iter() {
        let _ = writeln!(out, "{name}::observability_name::{name}");
        let assignment: Option<&LoadAssignment> = match &c.discovery {
            Discovery::Eds { service_name } => snapshot.endpoints(service_name).map(|a| &**a),
            Discovery::Static(a) => Some(a),
            Discovery::Dns { host, port } => {
                let _ = writeln!(out, "{name}::{host}:{port}::cx_total::0");
                None
            }
            Discovery::OriginalDst { .. } => None,
        };
        for e in assignment.into_iter().flat_map(LoadAssignment::endpoints) {
            let a = e.address;
            let get = |what: &str| {
                counters
                    .get(&*sanitize(&format!("cluster.{name}.endpoint.{a}.{what}")))
                    .copied()
                    .unwrap_or(0)
            };
            let _ = writeln!(out, "{name}::{a}::cx_total::{}", get("cx_total"));
            let _ = writeln!(out, "{name}::{a}::rq_total::{}", get("rq_total"));
            let _ = writeln!(out, "{name}::{a}::weight::{}", e.weight);
            let health = if e.healthy {
                "healthy"
            } else {
                "/failed_eds_health"
            };
            let _ = writeln!(out, "{name}::{a}::health_flags::{health}");
        }
    }
    out
}

/// `/listeners`: `NAME::ADDRESS` per listener.
pub(crate) fn listeners(snapshot: &Snapshot) -> String {
    snapshot
        .listeners
        .iter()
        .map(|(name, l)| format!("{name}::{}\n", l.address))
        .collect()
}

/// `/certs`: the certificates and trust anchors held, with their SANs and expiry.
pub(crate) fn certs(snapshot: &Snapshot) -> Value {
    let mut certificates = Vec::new();
    for (name, s) in snapshot.secrets.iter() {
        let (ca, chain): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) = match &**s {
            Secret::Certificate(k) => (Vec::new(), k.chain.iter().take(1).collect()),
            Secret::Bundle(b) => (b.anchors.iter().collect(), Vec::new()),
        };
        certificates.push(json!({
            "ca_cert": ca.iter().map(|d| describe(name, d)).collect::<Vec<_>>(),
            "cert_chain": chain.iter().map(|d| describe(name, d)).collect::<Vec<_>>(),
        }));
    }
    json!({"certificates": certificates})
}

fn describe(secret: &str, der: &[u8]) -> Value {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return json!({"path": format!("<secret {secret}>"), "error": "unparsable"});
    };
    let sans: Vec<Value> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some(json!({"uri": u})),
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(json!({"dns": d})),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let not_after = cert.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    json!({
        "path": format!("<secret {secret}>"),
        "serial_number": cert.raw_serial_as_string().replace(':', ""),
        "subject_alt_names": sans,
        "days_until_expiration": ((not_after - now) / 86_400).to_string(),
        "valid_from": rfc3339(cert.validity().not_before.timestamp(), 0),
        "expiration_time": rfc3339(not_after, 0),
    })
}
