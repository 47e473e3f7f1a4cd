//! The markdown tables of a run: medians over the repetitions, and the ratios of each
//! proxy to the floor and to Envoy.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use testbed::bench::datapath::{Load, Measurement};
use testbed::bench::pair::{Hop, PairMesh, Placement};
use testbed::procs::DataPlane;

use super::Samples;

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn med(runs: &[Measurement], f: impl Fn(&Measurement) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

/// Every table of the run.
pub(crate) fn render(
    mesh: &PairMesh,
    samples: &Samples,
    loads: &[Load],
    idle: &BTreeMap<String, u64>,
    cpus: usize,
    place: Placement,
) -> String {
    let mut out = String::new();
    let reps = samples.values().map(Vec::len).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "\n{cpus} CPUs, placement {place:?}, medians of {reps} repetitions; HTTP/1.1 at fixed rates, 1 KB bodies each way.\n"
    );
    let configs = config_labels(mesh);
    latency_table(&mut out, samples, loads, &configs);
    throughput_table(&mut out, samples, loads, &configs);
    memory_table(&mut out, samples, loads, mesh, idle);
    out
}

fn config_labels(mesh: &PairMesh) -> Vec<String> {
    let mut v = vec!["direct".to_string()];
    for hop in [Hop::Mtls, Hop::Plain] {
        for p in &mesh.pairs {
            v.push(format!("{} {}", p.proxy.name(), hop.name()));
        }
    }
    v
}

fn runs<'a>(samples: &'a Samples, load: Load, config: &str) -> &'a [Measurement] {
    samples
        .get(&(load.label(), config.to_string()))
        .map_or(&[], Vec::as_slice)
}

fn latency_table(out: &mut String, samples: &Samples, loads: &[Load], configs: &[String]) {
    let _ = writeln!(
        out,
        "| load | config | achieved rps | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | added p99 over direct ms | vs Envoy | failed / unsent (sum of runs) | CPU us/req client + server |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for load in loads.iter().filter(|l| matches!(l, Load::Rate(_))) {
        let direct_p99 = med(runs(samples, *load, "direct"), |m| m.latency_us[2]);
        for config in configs {
            let r = runs(samples, *load, config);
            if r.is_empty() {
                continue;
            }
            let ms = |i: usize| med(r, |m| m.latency_us[i]) / 1e3;
            let added =
                |c: &str| (med(runs(samples, *load, c), |m| m.latency_us[2]) - direct_p99) / 1e3;
            // Not a ratio when Envoy fell behind the rate or added nothing.
            let vs = envoy_of(config)
                .map(|e| {
                    let behind = runs(samples, *load, &e).iter().any(|m| m.unsent > 0);
                    if behind || added(&e) <= 0.0 {
                        "n/a".to_string()
                    } else {
                        format!("{:.2}x", added(config) / added(&e))
                    }
                })
                .unwrap_or_default();
            let failed: u64 = r.iter().map(|m| m.failed).sum();
            let unsent: u64 = r.iter().map(|m| m.unsent).sum();
            let cpu = if config == "direct" {
                String::new()
            } else {
                format!(
                    "{:.0} + {:.0}",
                    med(r, |m| m.cpu_us_per_request(0)),
                    med(r, |m| m.cpu_us_per_request(1))
                )
            };
            let added_s = if config == "direct" {
                String::new()
            } else {
                format!("{:.2}", added(config))
            };
            let _ = writeln!(
                out,
                "| {} | {config} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {added_s} | {vs} | {failed} / {unsent} | {cpu} |",
                load.label(),
                med(r, |m| m.achieved_rps),
                ms(0),
                ms(1),
                ms(2),
                ms(3),
                ms(4),
            );
        }
    }
    out.push('\n');
}

/// The Envoy row matching a rudder-proxy row (same hop), if `config` is rudder-proxy's.
fn envoy_of(config: &str) -> Option<String> {
    let rest = config.strip_prefix(&format!("{} ", DataPlane::RudderProxy.name()))?;
    Some(format!("{} {rest}", DataPlane::Envoy.name()))
}

fn throughput_table(out: &mut String, samples: &Samples, loads: &[Load], configs: &[String]) {
    let _ = writeln!(
        out,
        "| load | config | achieved rps | p50 ms | p99 ms | CPU us/req client | CPU us/req server | requests per proxy CPU-second | vs Envoy | failed (sum of runs) |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let per_core = |r: &[Measurement]| {
        // Both proxies carry every request: a proxy's CPU second serves 1e6 / (mean of
        // the two per-request costs) requests.
        let us = med(r, |m| {
            (m.cpu_us_per_request(0) + m.cpu_us_per_request(1)) / 2.0
        });
        1e6 / us
    };
    for load in loads.iter().filter(|l| matches!(l, Load::Max { .. })) {
        for config in configs {
            let r = runs(samples, *load, config);
            if r.is_empty() {
                continue;
            }
            let (cpu_c, cpu_s, core, vs) = if config == "direct" {
                (String::new(), String::new(), String::new(), String::new())
            } else {
                let vs = envoy_of(config)
                    .map(|e| format!("{:.2}x", per_core(r) / per_core(runs(samples, *load, &e))))
                    .unwrap_or_default();
                (
                    format!("{:.1}", med(r, |m| m.cpu_us_per_request(0))),
                    format!("{:.1}", med(r, |m| m.cpu_us_per_request(1))),
                    format!("{:.0}", per_core(r)),
                    vs,
                )
            };
            let failed: u64 = r.iter().map(|m| m.failed).sum();
            let _ = writeln!(
                out,
                "| {} | {config} | {:.0} | {:.2} | {:.2} | {cpu_c} | {cpu_s} | {core} | {vs} | {failed} |",
                load.label(),
                med(r, |m| m.achieved_rps),
                med(r, |m| m.latency_us[0]) / 1e3,
                med(r, |m| m.latency_us[2]) / 1e3,
            );
        }
    }
    out.push('\n');
}

fn memory_table(
    out: &mut String,
    samples: &Samples,
    loads: &[Load],
    mesh: &PairMesh,
    idle: &BTreeMap<String, u64>,
) {
    let _ = writeln!(
        out,
        "| proxy | idle RSS client / server MB | idle private client / server MB | peak RSS under load client / server MB |\n|---|---|---|---|"
    );
    for pair in &mesh.pairs {
        let name = pair.proxy.name();
        let mb = |b: u64| b as f64 / 1e6;
        let mut peak = [0u64; 2];
        for load in loads {
            for hop in [Hop::Mtls, Hop::Plain] {
                for m in runs(samples, *load, &format!("{name} {}", hop.name())) {
                    for (i, p) in peak.iter_mut().enumerate() {
                        *p = (*p).max(m.rss_peak.get(i).copied().unwrap_or(0));
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "| {name} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} |",
            mb(idle.get(&format!("{name} client")).copied().unwrap_or(0)),
            mb(idle.get(&format!("{name} server")).copied().unwrap_or(0)),
            mb(idle
                .get(&format!("{name} client private"))
                .copied()
                .unwrap_or(0)),
            mb(idle
                .get(&format!("{name} server private"))
                .copied()
                .unwrap_or(0)),
            mb(peak[0]),
            mb(peak[1]),
        );
    }
}
