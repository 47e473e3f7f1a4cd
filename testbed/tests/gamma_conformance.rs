//! The Gateway API mesh conformance run: every upstream mesh test transcribed in
//! `testbed/conformance/` runs, one after another, against the real control plane and
//! real Envoy sidecars on one shared world (the routes of one test replace the last's).
//! The run writes its `ConformanceReport`, which must equal
//! `docs/conformance/gamma-report.yaml` but for the date (`UPDATE_CONFORMANCE=1`
//! rewrites it), and it fails when a test whose features `suite.yaml` claims fails.
//! Run it alone: `cargo build --workspace --bins && cargo nextest run -p testbed --test
//! gamma_conformance`.
//!
//! It runs once per proxy: Envoy's report is `gamma-report.yaml` (mode `default`),
//! rudder-proxy's `gamma-report-rudder-proxy.yaml` (mode `rudder-proxy`).

mod common;

use std::time::{Duration, Instant};

use testbed::conformance::report::{self, Outcome, TestResult};
use testbed::conformance::{data, run, world::World};
use testbed::procs::{DataPlane, Stream, workspace_root};

/// How long a test's cases get to pass after its routes changed the sidecars.
const CONVERGE: Duration = Duration::from_secs(5);

#[allow(clippy::disallowed_methods, reason = "the test's own switch")]
fn updating() -> bool {
    std::env::var_os("UPDATE_CONFORMANCE").is_some_and(|v| v == "1")
}

#[test]
fn the_data_is_complete_and_every_route_document_parses() -> anyhow::Result<()> {
    let data = data::load(&data::data_dir())?;
    assert_eq!(data.tests.len(), 23, "upstream has 23 mesh tests");
    for test in &data.tests {
        let Some(routes) = &test.routes else { continue };
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(routes)
            .map_err(|e| anyhow::anyhow!("{}: routes: {e}", test.short_name))?;
        for d in docs {
            assert!(
                d["kind"].as_str().is_some() && d["metadata"]["name"].as_str().is_some(),
                "{}: a route document without kind or name",
                test.short_name
            );
        }
    }
    Ok(())
}

async fn mesh_conformance_passes_what_is_claimed_and_the_report_is_current(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    let data = data::load(&data::data_dir())?;
    let world = World::start(&data.base, proxy, Stream::Delta).await?;
    let known = |name: &str| data.suite.known_failures.iter().any(|k| k.test == name);
    let mut results = Vec::new();
    for test in &data.tests {
        let started = Instant::now();
        let outcome = run::run_test(&world, test, CONVERGE).await;
        let result = TestResult::of(test, outcome);
        let verdict = match (&result.outcome, result.claimed(&data.suite)) {
            (Outcome::Passed, true) => "PASS".to_string(),
            (Outcome::Failed(_), true) if known(&result.short_name) => {
                "FAIL (claimed; a known failure, suite.yaml)".to_string()
            }
            (Outcome::Failed(_), true) => "FAIL (claimed)".to_string(),
            (Outcome::Passed, false) => format!(
                "SKIP, but it passed: claim {:?} in suite.yaml",
                unclaimed(&result, &data.suite)
            ),
            (Outcome::Failed(_), false) => {
                format!("SKIP (unclaimed: {:?})", unclaimed(&result, &data.suite))
            }
        };
        eprintln!(
            "{} {verdict} ({:.1}s)",
            test.short_name,
            started.elapsed().as_secs_f64()
        );
        if let Outcome::Failed(diffs) = &result.outcome {
            for d in diffs {
                eprintln!("    {d}");
            }
        }
        results.push(result);
    }
    world.set_routes("", None)?;

    let made = report::to_yaml(
        &report::build(&data.suite, &results, report::now_rfc3339(), mode(proxy)),
        &data.suite,
    )?;
    let path = workspace_root().join(match proxy {
        DataPlane::Envoy => "docs/conformance/gamma-report.yaml",
        DataPlane::RudderProxy => "docs/conformance/gamma-report-rudder-proxy.yaml",
    });
    if updating() {
        std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
        std::fs::write(&path, &made)?;
    } else {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            report::without_date(&committed),
            report::without_date(&made),
            "{} is not what this run reports; rerun with UPDATE_CONFORMANCE=1 and review the diff",
            path.display()
        );
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.claimed(&data.suite) && r.outcome != Outcome::Passed)
        .map(|r| r.short_name.as_str())
        .filter(|name| !known(name))
        .collect();
    assert!(
        failed.is_empty(),
        "tests of claimed features failed (differences above): {failed:?}"
    );
    let lifted: Vec<&str> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed && known(&r.short_name))
        .map(|r| r.short_name.as_str())
        .collect();
    assert!(
        lifted.is_empty(),
        "listed in suite.yaml's knownFailures but passed: remove them and rerun with \
         UPDATE_CONFORMANCE=1: {lifted:?}"
    );
    Ok(())
}

fn mode(proxy: DataPlane) -> &'static str {
    match proxy {
        DataPlane::Envoy => "default",
        DataPlane::RudderProxy => "rudder-proxy",
    }
}

common::on_each_proxy!(mesh_conformance_passes_what_is_claimed_and_the_report_is_current);

fn unclaimed(r: &TestResult, suite: &data::Suite) -> Vec<String> {
    r.features
        .iter()
        .filter(|f| !suite.supported_features.contains(f))
        .cloned()
        .collect()
}
