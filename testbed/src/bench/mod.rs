//! The benchmarks' parts. Control plane: the generated mesh, simulated proxies and the
//! floor (plain TCP fan-out of the same bytes), run by `xds-bench`. Data path: the load
//! generator (`load`) and sink (`sink`) the `loadgen` binary runs, the sidecar-pair mesh
//! (`pair`) and one measured load run (`datapath`), driven by `dataplane-bench`. Both
//! read process statistics from /proc. docs/benchmarks.md has the results and commands.

pub mod client;
pub mod datapath;
pub mod floor;
pub mod load;
pub mod mesh;
pub mod pair;
pub mod procstat;
pub mod sink;
pub mod wire;

use std::time::Duration;

/// p50, p99 and max of a set of durations, in milliseconds.
pub fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)].as_secs_f64() * 1e3
    };
    (at(0.5), at(0.99), at(1.0))
}
