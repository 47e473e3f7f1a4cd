//! Golden tests: manifests in -> every resource the translator emits, as a reviewed
//! snapshot. Run with `UPDATE_GOLDEN=1` to rewrite the snapshots, then review the diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use translator::encoded::Encoded;
use translator::identity::{DEFAULT_OUTBOUND_PORT, ProxyIdentity, ProxyKind};
use translator::model::{Model, parse_manifest};
use translator::policy::PolicyContext;
use translator::{MeshConfig, Output, outbound_routes, translate_mesh, translate_proxy};

fn load(dir: &Path) -> Model {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read case dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut model = Model::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read manifest");
        let parsed = parse_manifest(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for o in &parsed.objects {
            model.apply(o).expect("valid object");
        }
    }
    model
}

/// An EDS Cluster points at its endpoints by its `service_name` (its one ref), and the
/// output that carries endpoints carries those, named so.
fn eds_names_agree(out: &Output, title: &str) {
    use translator::Body;
    let endpoints: std::collections::BTreeMap<&str, &str> = out
        .resources
        .iter()
        .filter_map(|r| match &r.body {
            Body::Endpoint(cla) => Some((r.name.as_str(), cla.cluster_name.as_str())),
            _ => None,
        })
        .collect();
    for r in &out.resources {
        let Body::Cluster(c) = &r.body else { continue };
        let Some(eds) = &c.eds_cluster_config else {
            continue;
        };
        assert_eq!(
            r.refs,
            std::slice::from_ref(&eds.service_name),
            "{title}: {}",
            r.name
        );
        if !endpoints.is_empty() {
            assert_eq!(
                endpoints.get(eds.service_name.as_str()),
                Some(&eds.service_name.as_str()),
                "{title}: the endpoints of {}",
                r.name
            );
        }
    }
}

fn render(out: &Output, title: &str, text: &mut String) {
    eds_names_agree(out, title);
    writeln!(text, "=== {title}").expect("write");
    for d in &out.diagnostics {
        writeln!(text, "! {d}").expect("write");
    }
    for r in &out.resources {
        let json = translator::json::any_to_json(&r.body.to_any()).expect("renders as JSON");
        let pretty = serde_json::to_string_pretty(&json).expect("json");
        writeln!(
            text,
            "--- {} {} refs={:?} sources={:?}\n{pretty}",
            r.kind,
            r.name,
            r.refs,
            r.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        )
        .expect("write");
    }
}

/// The proxy beside `pod`, as the node `POD.NS`.
fn proxy_of(pod: &translator::model::MeshPod, kind: ProxyKind, intercepted: bool) -> ProxyIdentity {
    ProxyIdentity {
        vhds: false,
        node_id: format!("{}.{}", pod.name, pod.namespace),
        kind,
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        service_account: pod.service_account.clone(),
        pod_ip: None,
        outbound_port: DEFAULT_OUTBOUND_PORT,
        // As the node metadata's defaults have it: an intercepted pod's app at the pod's
        // own address.
        app_address: if intercepted {
            translator::identity::POD_ADDRESS
        } else {
            "127.0.0.1".parse().expect("ip")
        },
        intercepted,
        inbound_port: translator::identity::DEFAULT_INBOUND_PORT,
    }
}

fn snapshot(model: &Model) -> String {
    let mut text = String::new();
    let mesh = MeshConfig::default();
    let policy = PolicyContext::new(model, &Default::default(), &Default::default());
    render(&translate_mesh(model, &mesh, &policy), "mesh", &mut text);
    let mut namespaces: Vec<&str> = model.pods().map(|p| p.namespace.as_str()).collect();
    namespaces.dedup();
    for ns in namespaces {
        render(
            &outbound_routes(model, &policy, ns),
            &format!("routes for namespace {ns}"),
            &mut text,
        );
    }
    for pod in model.pods() {
        // Pods labelled golden/intercepted: "true" are rendered as injected pods.
        let intercepted = pod
            .labels
            .get("golden/intercepted")
            .is_some_and(|v| v == "true");
        let proxy = proxy_of(pod, ProxyKind::Envoy, intercepted);
        render(
            &translate_proxy(model, &mesh, &proxy),
            &format!("proxy {}", proxy.node_id),
            &mut text,
        );
    }
    text
}

/// What proxyless gRPC clients get: the shared gRPC resources and each pod as a gRPC
/// client and server.
fn snapshot_grpc(model: &Model) -> String {
    let mut text = String::new();
    let mesh = MeshConfig::default();
    let policy = PolicyContext::new(model, &Default::default(), &Default::default());
    let shared = translator::translate_grpc(model, &mesh, &policy, None);
    render(&shared, "grpc", &mut text);
    // A namespace with consumer routes: what its clients get instead of the shared parts.
    let mut namespaces: Vec<&str> = model.pods().map(|p| p.namespace.as_str()).collect();
    namespaces.dedup();
    for ns in namespaces {
        let mut own = translator::translate_grpc(model, &mesh, &policy, Some(ns));
        own.resources.retain(|r| {
            let e = Encoded::new(r);
            !shared
                .resources
                .iter()
                .any(|s| s.kind == r.kind && s.name == r.name && Encoded::new(s).same_as(&e))
        });
        own.diagnostics.retain(|d| !shared.diagnostics.contains(d));
        if !own.resources.is_empty() {
            render(
                &own,
                &format!("grpc for namespace {ns}, where it differs"),
                &mut text,
            );
        }
    }
    for pod in model.pods() {
        let proxy = proxy_of(pod, ProxyKind::Grpc, false);
        render(
            &translate_proxy(model, &mesh, &proxy),
            &format!("gRPC proxy {}", proxy.node_id),
            &mut text,
        );
    }
    text
}

fn check(case: &str, input: &Path) {
    let model = load(input);
    let actual = match case {
        "grpc" => snapshot_grpc(&model),
        // Both client kinds.
        "gamma" | "gamma-filters" | "authz" => snapshot(&model) + &snapshot_grpc(&model),
        _ => snapshot(&model),
    };
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{case}.golden"));
    #[allow(clippy::disallowed_methods, reason = "the golden update switch")]
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    if update {
        std::fs::write(&golden, &actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|_| panic!("{} is missing: run with UPDATE_GOLDEN=1", golden.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{case}: translation differs from {} at line {}:\n  expected: {:?}\n  actual:   {:?}\n(UPDATE_GOLDEN=1 rewrites it; review the diff)",
            golden.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn golden_examples() {
    check(
        "examples",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"),
    );
}

#[test]
fn golden_grpc() {
    check(
        "grpc",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/grpc"),
    );
}

#[test]
fn golden_edge_cases() {
    check(
        "edge-cases",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/edge-cases"),
    );
}

#[test]
fn golden_traffic_policy() {
    check(
        "traffic-policy",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/traffic-policy"),
    );
}

#[test]
fn translation_is_deterministic() {
    let model = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"));
    assert_eq!(snapshot(&model), snapshot(&model.clone()));
}

#[test]
fn golden_gamma() {
    check(
        "gamma",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gamma"),
    );
}

#[test]
fn golden_gamma_filters() {
    check(
        "gamma-filters",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gamma-filters"),
    );
}

#[test]
fn golden_intercepted() {
    check(
        "intercepted",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/intercepted"),
    );
}

#[test]
fn golden_authz() {
    check(
        "authz",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/authz"),
    );
}

#[test]
fn golden_outside_mesh() {
    check(
        "outside-mesh",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/outside-mesh"),
    );
}
