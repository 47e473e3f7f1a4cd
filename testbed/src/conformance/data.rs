//! The suite as data (`testbed/conformance/`): the suite file (upstream commit, the
//! claimed features, the profiles), the base manifests, and one file per upstream test
//! with its routes and cases. Loading checks what the runner relies on and names the
//! file and field when something is off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Where the data lives.
pub fn data_dir() -> PathBuf {
    crate::procs::workspace_root().join("testbed/conformance")
}

/// `suite.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Suite {
    /// Where the tests were transcribed from.
    pub upstream: Upstream,
    /// The Gateway API version the report is against.
    #[serde(rename = "gatewayAPIVersion")]
    pub gateway_api_version: String,
    /// Its release channel.
    #[serde(rename = "gatewayAPIChannel")]
    pub gateway_api_channel: String,
    /// Who is tested.
    pub implementation: Implementation,
    /// The features Rudder claims: the one list.
    pub supported_features: Vec<String>,
    /// Tests of claimed features that fail for a known reason: the report shows them
    /// failed, the run does not stop on them, and stops when one of them passes.
    #[serde(default)]
    pub known_failures: Vec<KnownFailure>,
    /// Upstream's mesh conformance profiles.
    pub profiles: Vec<Profile>,
}

/// A test that fails for a known reason.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownFailure {
    /// Its ShortName.
    pub test: String,
    /// Why, and what lifts it.
    pub reason: String,
}

/// The upstream snapshot.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Repository URL.
    pub repository: String,
    /// Commit.
    pub commit: String,
    /// Version line.
    pub version: String,
}

/// The report's `implementation`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Implementation {
    /// Organization.
    pub organization: String,
    /// Project.
    pub project: String,
    /// Version.
    pub version: String,
    /// Contacts.
    pub contact: Vec<String>,
}

/// A conformance profile.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `MESH-HTTP`, `MESH-GRPC`.
    pub name: String,
    /// The route kind feature that puts a test in this profile.
    pub route: String,
    /// Core features.
    pub core: Vec<String>,
    /// Extended features.
    pub extended: Vec<String>,
}

/// `base.yaml`: the pods and the manifests every test runs on.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// The pods (each an echo backend with a sidecar).
    pub pods: Vec<BasePod>,
    /// Namespaces, Services, EndpointSlices; `${HTTP_PORT}`, `${GRPC_PORT}` filled in.
    pub manifests: String,
}

/// A pod of the base.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasePod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its address.
    pub ip: std::net::IpAddr,
    /// Its service account.
    pub service_account: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl BasePod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One upstream test.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Test {
    /// Upstream's ShortName.
    pub short_name: String,
    /// Upstream's description.
    pub description: String,
    /// Upstream's features.
    pub features: Vec<String>,
    /// Upstream marks it provisional.
    #[serde(default)]
    pub provisional: bool,
    /// Where this transcription departs from upstream, and why.
    #[serde(default)]
    pub notes: Option<String>,
    /// The upstream manifest file.
    #[serde(default)]
    pub upstream_manifests: Option<String>,
    /// The routes (upstream's YAML).
    #[serde(default)]
    pub routes: Option<String>,
    /// The cases.
    pub cases: Vec<Case>,
    /// A weighted distribution to check after the cases pass.
    #[serde(default)]
    pub weights: Option<Weights>,
}

/// A request and what must come of it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    /// Upstream's TestCaseName, if it has one.
    #[serde(default)]
    pub name: Option<String>,
    /// The client pod (`namespace/name`); the first pod of the base by default.
    #[serde(default)]
    pub from: Option<String>,
    /// What is sent.
    pub request: Request,
    /// The response.
    #[serde(default)]
    pub response: ResponseExpect,
    /// The pod name must start with this (upstream: `Backend`).
    #[serde(default)]
    pub backend: Option<String>,
    /// The answering pod's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// What the backend saw.
    #[serde(default)]
    pub backend_request: Option<BackendRequest>,
    /// The redirect's `Location`.
    #[serde(default)]
    pub redirect: Option<Redirect>,
}

/// A request.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    /// `http` (default) or `grpc`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The authority (default `echo`); may hold `${POD_IP:ns/name}` and `${HTTP_PORT}`.
    #[serde(default)]
    pub host: Option<String>,
    /// Path and query (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Method (default GET).
    #[serde(default)]
    pub method: Option<String>,
    /// Headers; `Host` replaces the Host header.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A redirect is the answer (always true here: the client never follows).
    #[serde(default)]
    pub unfollow_redirect: bool,
}

impl Request {
    /// A gRPC request.
    pub fn is_grpc(&self) -> bool {
        self.protocol
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("grpc"))
    }
}

/// Expected response fields.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseExpect {
    /// The status (default 200; for gRPC, the HTTP status).
    #[serde(default)]
    pub status: Option<u16>,
    /// Response headers that must have these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response headers that must be absent.
    #[serde(default)]
    pub absent_headers: Vec<String>,
}

/// What the backend must have seen.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRequest {
    /// The path (without query).
    #[serde(default)]
    pub path: Option<String>,
    /// Headers (values of one name joined by `,`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers that must be absent.
    #[serde(default)]
    pub absent_headers: Vec<String>,
}

/// Expected `Location` parts, as upstream's `RedirectRequest`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// Scheme (default: the request's, `http`).
    #[serde(default)]
    pub scheme: Option<String>,
    /// Host (default: anything).
    #[serde(default)]
    pub host: Option<String>,
    /// Port (default: none or the scheme's).
    #[serde(default)]
    pub port: Option<String>,
    /// Path (default: the request's).
    #[serde(default)]
    pub path: Option<String>,
}

/// A weighted-distribution check.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// What is sent.
    pub request: Request,
    /// Backend (pod name without its last `-N`) to share.
    pub expected: BTreeMap<String, f64>,
}

/// The suite, the base and the tests, by file name order.
#[derive(Clone, Debug)]
pub struct Data {
    /// `suite.yaml`.
    pub suite: Suite,
    /// `base.yaml`.
    pub base: Base,
    /// `tests/*.yaml`.
    pub tests: Vec<Test>,
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Loads and checks `dir`.
pub fn load(dir: &Path) -> anyhow::Result<Data> {
    let suite: Suite = read(&dir.join("suite.yaml"))?;
    let base: Base = read(&dir.join("base.yaml"))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut tests = Vec::new();
    for file in files {
        let test: Test = read(&file)?;
        check_test(&test, &base).with_context(|| format!("{}", file.display()))?;
        tests.push(test);
    }
    let data = Data { suite, base, tests };
    check_suite(&data)?;
    Ok(data)
}

fn check_test(test: &Test, base: &Base) -> anyhow::Result<()> {
    if test.cases.is_empty() {
        bail!("{}: cases: none", test.short_name);
    }
    for (i, case) in test.cases.iter().enumerate() {
        if let Some(from) = &case.from
            && !base.pods.iter().any(|p| &p.key() == from)
        {
            bail!(
                "{}: cases[{i}].from: no pod {from} in base.yaml",
                test.short_name
            );
        }
    }
    if let Some(w) = &test.weights {
        let sum: f64 = w.expected.values().sum();
        if (sum - 1.0).abs() > 1e-9 {
            bail!(
                "{}: weights.expected: shares sum to {sum}, not 1",
                test.short_name
            );
        }
    }
    Ok(())
}

fn check_suite(data: &Data) -> anyhow::Result<()> {
    let mut names = std::collections::BTreeSet::new();
    for t in &data.tests {
        if !names.insert(&t.short_name) {
            bail!("tests: {} appears twice", t.short_name);
        }
    }
    let known: std::collections::BTreeSet<&String> = data
        .tests
        .iter()
        .flat_map(|t| &t.features)
        .chain(data.suite.profiles.iter().flat_map(|p| &p.extended))
        .collect();
    for k in &data.suite.known_failures {
        if !names.contains(&k.test) {
            bail!("suite.yaml: knownFailures: no test {}", k.test);
        }
    }
    for f in &data.suite.supported_features {
        if !known.contains(f) {
            bail!("suite.yaml: supportedFeatures: {f} is no feature of any test or profile");
        }
    }
    Ok(())
}
