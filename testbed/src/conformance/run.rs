//! Running one test on the shared world: its routes replace the previous test's (in a
//! file of its own), the sidecars' route configuration changes, then the cases are sent until they all pass
//! twice in a row or the time for convergence is up (upstream's "eventually
//! consistent"), and a weighted distribution, if any, is checked as upstream does.

use std::time::{Duration, Instant};

use super::check::{Observed, compare, compare_weights};
use super::data::{Case, Test};
use super::report::Outcome;
use super::world::World;

/// Upstream's weighted distribution: requests per try, tolerance, tries.
const WEIGHT_REQUESTS: usize = 500;
const WEIGHT_TOLERANCE: f64 = 0.05;
const WEIGHT_TRIES: usize = 10;
/// How long the sidecars get to show a route change before the cases start anyway.
const ROUTE_CHANGE: Duration = Duration::from_secs(5);

/// A case's name: upstream's, or made as upstream's `GetTestCaseName` makes it.
pub fn case_name(i: usize, case: &Case) -> String {
    if let Some(n) = &case.name {
        return n.clone();
    }
    let r = &case.request;
    let headers = if r.headers.is_empty() {
        ""
    } else {
        " with headers"
    };
    let req = format!(
        "{i} request to '{}{}'{headers}",
        r.host.as_deref().unwrap_or(""),
        r.path.as_deref().unwrap_or("")
    );
    match &case.backend {
        Some(b) => format!("{req} should go to {b}"),
        None => format!(
            "{req} should receive {}",
            case.response.status.unwrap_or(200)
        ),
    }
}

/// Runs `test`; the cases get `converge` to pass.
pub async fn run_test(world: &World, test: &Test, converge: Duration) -> Outcome {
    let before = world.route_snapshot().await.unwrap_or_default();
    match world.set_routes(&test.short_name, test.routes.as_deref()) {
        Ok(true) => {
            world.wait_routes_change(&before, ROUTE_CHANGE).await;
        }
        Ok(false) => {}
        Err(e) => return Outcome::Failed(vec![format!("writing the routes: {e:#}")]),
    }
    let deadline = Instant::now() + converge;
    let mut passes = 0;
    let diffs = loop {
        let diffs = round(world, test).await;
        if diffs.is_empty() {
            passes += 1;
            if passes == 2 {
                break diffs;
            }
        } else {
            passes = 0;
        }
        if Instant::now() > deadline {
            break diffs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !diffs.is_empty() {
        return Outcome::Failed(diffs);
    }
    match &test.weights {
        Some(w) => weights(world, w).await,
        None => Outcome::Passed,
    }
}

/// Every case once: the differences, each prefixed by its case.
async fn round(world: &World, test: &Test) -> Vec<String> {
    let mut out = Vec::new();
    for (i, case) in test.cases.iter().enumerate() {
        let from = case.from.as_deref().unwrap_or(&world.default_client);
        let path = case.request.path.as_deref().unwrap_or("/");
        let name = case_name(i, case);
        match world.send(from, &case.request).await {
            Ok(seen) => out.extend(
                compare(case, path, &seen)
                    .into_iter()
                    .map(|d| format!("{name}: {d}{}", first_line(&seen))),
            ),
            Err(e) => out.push(format!("{name}: {e:#}")),
        }
    }
    out
}

fn first_line(seen: &Observed) -> String {
    let line = seen.body.lines().next().unwrap_or_default();
    if line.is_empty() {
        String::new()
    } else {
        format!(" [answer: {line}]")
    }
}

async fn weights(world: &World, w: &super::data::Weights) -> Outcome {
    let mut last = Vec::new();
    for try_ in 0..WEIGHT_TRIES {
        let mut pods = Vec::with_capacity(WEIGHT_REQUESTS);
        for _ in 0..WEIGHT_REQUESTS {
            match world.send(&world.default_client, &w.request).await {
                Ok(seen) => pods.push(super::check::parse_echo(&seen.body).hostname),
                Err(e) => pods.push(format!("error: {e:#}")),
            }
        }
        last = compare_weights(&w.expected, &pods, WEIGHT_TOLERANCE);
        if last.is_empty() {
            return Outcome::Passed;
        }
        eprintln!(
            "  weighted distribution try {}/{WEIGHT_TRIES} failed: {last:?}",
            try_ + 1
        );
    }
    Outcome::Failed(
        last.into_iter()
            .map(|d| format!("weighted distribution: {d}"))
            .collect(),
    )
}
