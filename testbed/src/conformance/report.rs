//! The Gateway API `ConformanceReport` (upstream conformance/apis/v1) made from a run:
//! per profile, core and extended results with statistics, the features claimed and not
//! claimed, and the tests skipped or failed. A test counts only when every feature it
//! needs is claimed in `suite.yaml`; otherwise it is skipped (it still ran, and the
//! runner says when it passed).

use std::collections::BTreeSet;

use serde::Serialize;

use super::data::{Profile, Suite, Test};

/// How one test went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every case passed.
    Passed,
    /// Something differed (the diffs, one a line).
    Failed(Vec<String>),
}

/// A test and how it went.
#[derive(Clone, Debug)]
pub struct TestResult {
    /// Upstream's ShortName.
    pub short_name: String,
    /// Its features.
    pub features: Vec<String>,
    /// Upstream marks it provisional.
    pub provisional: bool,
    /// The outcome.
    pub outcome: Outcome,
}

impl TestResult {
    /// A result for `test`.
    pub fn of(test: &Test, outcome: Outcome) -> Self {
        TestResult {
            short_name: test.short_name.clone(),
            features: test.features.clone(),
            provisional: test.provisional,
            outcome,
        }
    }

    /// Every feature it needs is claimed.
    pub fn claimed(&self, suite: &Suite) -> bool {
        self.features
            .iter()
            .all(|f| suite.supported_features.contains(f))
    }
}

/// The report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    api_version: &'static str,
    date: String,
    #[serde(rename = "gatewayAPIChannel")]
    gateway_api_channel: String,
    #[serde(rename = "gatewayAPIVersion")]
    gateway_api_version: String,
    implementation: Implementation,
    kind: &'static str,
    mode: &'static str,
    profiles: Vec<ProfileReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    succeeded_provisional_tests: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
struct Implementation {
    contact: Vec<String>,
    organization: String,
    project: String,
    version: String,
}

#[derive(Clone, Debug, Serialize)]
struct ProfileReport {
    core: Status,
    extended: Extended,
    name: String,
    summary: String,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed_tests: Vec<String>,
    result: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped_tests: Vec<String>,
    statistics: Statistics,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Extended {
    #[serde(flatten)]
    status: Status,
    supported_features: Vec<String>,
    unsupported_features: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Statistics {
    failed: u32,
    passed: u32,
    skipped: u32,
}

/// The tests of `profile`: those needing its route kind, and those needing only `Mesh`.
fn in_profile(profile: &Profile, r: &TestResult) -> bool {
    r.features.contains(&profile.route) || r.features.iter().all(|f| f == "Mesh")
}

fn core_test(profile: &Profile, r: &TestResult) -> bool {
    r.features.iter().all(|f| profile.core.contains(f))
}

fn status(results: &[&TestResult], suite: &Suite) -> Status {
    let mut s = Status::default();
    for r in results {
        if !r.claimed(suite) {
            s.statistics.skipped += 1;
            s.skipped_tests.push(r.short_name.clone());
        } else if r.outcome == Outcome::Passed {
            s.statistics.passed += 1;
        } else {
            s.statistics.failed += 1;
            s.failed_tests.push(r.short_name.clone());
        }
    }
    s.result = if s.statistics.failed > 0 {
        "failure"
    } else if s.statistics.skipped > 0 {
        "partial"
    } else {
        "success"
    }
    .into();
    s
}

fn summary(what: &str, s: &Status) -> String {
    match s.result.as_str() {
        "success" => format!("{what} tests succeeded."),
        "partial" => format!(
            "{what} tests partially succeeded with {} test skips.",
            s.statistics.skipped
        ),
        _ => format!(
            "{what} tests failed with {} test failures.",
            s.statistics.failed
        ),
    }
}

fn profile_report(profile: &Profile, suite: &Suite, results: &[TestResult]) -> ProfileReport {
    let members: Vec<&TestResult> = results.iter().filter(|r| in_profile(profile, r)).collect();
    let (core, extended): (Vec<&TestResult>, Vec<&TestResult>) =
        members.iter().partition(|r| core_test(profile, r));
    let relevant: BTreeSet<&String> = profile
        .extended
        .iter()
        .chain(members.iter().flat_map(|r| &r.features))
        .filter(|f| !profile.core.contains(f))
        .collect();
    let (supported, unsupported): (Vec<&String>, Vec<&String>) = relevant
        .into_iter()
        .partition(|f| suite.supported_features.contains(f));
    let core = status(&core, suite);
    let extended = Extended {
        status: status(&extended, suite),
        supported_features: supported.into_iter().cloned().collect(),
        unsupported_features: unsupported.into_iter().cloned().collect(),
    };
    let summary = format!(
        "{} {}",
        summary("Core", &core),
        summary("Extended", &extended.status)
    );
    ProfileReport {
        core,
        extended,
        name: profile.name.clone(),
        summary,
    }
}

/// The report of a run, dated `date`.
pub fn build(suite: &Suite, results: &[TestResult], date: String, mode: &'static str) -> Report {
    let mut provisional: Vec<String> = results
        .iter()
        .filter(|r| r.provisional && r.claimed(suite) && r.outcome == Outcome::Passed)
        .map(|r| r.short_name.clone())
        .collect();
    provisional.sort();
    Report {
        api_version: "gateway.networking.k8s.io/v1",
        date,
        gateway_api_channel: suite.gateway_api_channel.clone(),
        gateway_api_version: suite.gateway_api_version.clone(),
        implementation: Implementation {
            contact: suite.implementation.contact.clone(),
            organization: suite.implementation.organization.clone(),
            project: suite.implementation.project.clone(),
            version: suite.implementation.version.clone(),
        },
        kind: "ConformanceReport",
        mode,
        profiles: suite
            .profiles
            .iter()
            .map(|p| profile_report(p, suite, results))
            .collect(),
        succeeded_provisional_tests: provisional,
    }
}

/// The report as YAML, with a header saying where it comes from.
pub fn to_yaml(report: &Report, suite: &Suite) -> anyhow::Result<String> {
    let body = serde_saphyr::to_string(report).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!(
        "# Generated by testbed/tests/gamma_conformance.rs from testbed/conformance/\n\
         # (upstream {} at {}, {}).\n\
         # Do not edit: `UPDATE_CONFORMANCE=1` rewrites it (docs/conformance/README.md).\n{body}",
        suite.upstream.repository, suite.upstream.commit, suite.upstream.version
    ))
}

/// The text without its `date:` line, to compare two reports.
pub fn without_date(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Now as RFC 3339 UTC (`2026-05-20T23:56:32Z`).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::data::{Implementation as Imp, Upstream};

    fn suite(claimed: &[&str]) -> Suite {
        Suite {
            upstream: Upstream {
                repository: "r".into(),
                commit: "c".into(),
                version: "v".into(),
            },
            gateway_api_version: "v1.6.0".into(),
            gateway_api_channel: "standard".into(),
            implementation: Imp {
                organization: "o".into(),
                project: "p".into(),
                version: "v".into(),
                contact: vec![],
            },
            supported_features: claimed.iter().map(|s| s.to_string()).collect(),
            known_failures: vec![],
            profiles: vec![Profile {
                name: "MESH-HTTP".into(),
                route: "HTTPRoute".into(),
                core: vec!["Mesh".into(), "HTTPRoute".into()],
                extended: vec!["MeshConsumerRoute".into()],
            }],
        }
    }

    fn result(name: &str, features: &[&str], outcome: Outcome) -> TestResult {
        TestResult {
            short_name: name.into(),
            features: features.iter().map(|s| s.to_string()).collect(),
            provisional: false,
            outcome,
        }
    }

    #[test]
    fn unclaimed_tests_are_skipped_and_claimed_failures_fail_the_profile() {
        let results = [
            result("MeshBasic", &["Mesh"], Outcome::Passed),
            result(
                "Split",
                &["Mesh", "HTTPRoute"],
                Outcome::Failed(vec!["x".into()]),
            ),
            result(
                "Consumer",
                &["Mesh", "HTTPRoute", "MeshConsumerRoute"],
                Outcome::Passed,
            ),
            result("Grpc", &["Mesh", "GRPCRoute"], Outcome::Passed),
        ];
        let r = build(
            &suite(&["Mesh", "HTTPRoute"]),
            &results,
            "d".into(),
            "default",
        );
        let p = &r.profiles[0];
        assert_eq!((p.core.statistics.passed, p.core.statistics.failed), (1, 1));
        assert_eq!(p.core.result, "failure");
        assert_eq!(p.core.failed_tests, vec!["Split"]);
        assert_eq!(p.extended.status.skipped_tests, vec!["Consumer"]);
        assert_eq!(p.extended.status.result, "partial");
        assert_eq!(p.extended.unsupported_features, vec!["MeshConsumerRoute"]);
        let r = build(
            &suite(&["Mesh", "HTTPRoute", "MeshConsumerRoute"]),
            &results,
            "d".into(),
            "default",
        );
        assert_eq!(r.profiles[0].extended.status.result, "success");
        assert_eq!(
            r.profiles[0].extended.supported_features,
            vec!["MeshConsumerRoute"]
        );
    }

    #[test]
    fn dates_are_rfc3339_and_ignored_when_comparing() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_779_321_392), "2026-05-20T23:56:32Z");
        assert_eq!(
            without_date("a: 1\ndate: x\nb: 2"),
            without_date("a: 1\ndate: y\nb: 2")
        );
    }
}
