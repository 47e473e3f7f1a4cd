//! Every Envoy resource Rudder emits for the translator's golden inputs converts into
//! the proxy's configuration, with a few converted values checked; and the secrets
//! Rudder (the trust bundle) and the agent (the workload certificate) send.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use conformance::config::cluster::{Discovery, Transport, UpstreamProtocol};
use conformance::config::listener::{SecretSource, Terminal};
use conformance::config::route::{Action, Destination, RedirectPath};
use conformance::config::secret::Secret;
use conformance::convert::{Converted, convert};
use translator::identity::{DEFAULT_INBOUND_PORT, DEFAULT_OUTBOUND_PORT, ProxyIdentity, ProxyKind};
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

/// Every golden input directory (the examples and translator/tests/golden/*/).
fn inputs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = vec![root.join("examples")];
    let golden = root.join("translator/tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&golden)
        .expect("golden dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    dirs.extend(cases);
    dirs
}

/// Everything the oracle gives Envoy proxies for `model`.
fn outputs(model: &Model) -> Vec<(String, Output)> {
    let mesh = MeshConfig::default();
    let policy = PolicyContext::new(model, &Default::default(), &Default::default());
    let mut out = vec![("mesh".to_string(), translate_mesh(model, &mesh, &policy))];
    let mut namespaces: Vec<&str> = model.pods().map(|p| p.namespace.as_str()).collect();
    namespaces.dedup();
    for ns in namespaces {
        out.push((format!("routes {ns}"), outbound_routes(model, &policy, ns)));
    }
    for pod in model.pods() {
        for intercepted in [false, true] {
            let proxy = ProxyIdentity {
                vhds: false,
                node_id: format!("{}.{}", pod.name, pod.namespace),
                kind: ProxyKind::Envoy,
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                service_account: pod.service_account.clone(),
                pod_ip: None,
                outbound_port: DEFAULT_OUTBOUND_PORT,
                app_address: "127.0.0.1".parse().expect("ip"),
                intercepted,
                inbound_port: DEFAULT_INBOUND_PORT,
            };
            out.push((
                format!("proxy {} intercepted={intercepted}", proxy.node_id),
                translate_proxy(model, &mesh, &proxy),
            ));
        }
    }
    out
}

/// Converts everything; returns each converted resource with where it came from.
fn convert_all() -> Vec<(String, Converted)> {
    let mut converted = Vec::new();
    let mut failures = Vec::new();
    for dir in inputs() {
        let model = load(&dir);
        for (title, output) in outputs(&model) {
            for r in &output.resources {
                let any = r.body.to_any();
                match convert(r.kind, &any) {
                    Ok((name, c)) => {
                        assert_eq!(name, r.name, "{}: {title}", dir.display());
                        converted.push((
                            format!("{} {title} {} {}", dir.display(), r.kind, r.name),
                            c,
                        ));
                    }
                    Err(e) => failures.push(format!("{} {title}: {e}", dir.display())),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    converted
}

#[test]
fn every_golden_resource_converts() {
    let all = convert_all();
    assert!(all.len() > 200, "only {} resources", all.len());
    let count = |f: fn(&Converted) -> bool| all.iter().filter(|(_, c)| f(c)).count();
    assert!(count(|c| matches!(c, Converted::Listener(_))) > 10);
    assert!(count(|c| matches!(c, Converted::Route(_))) > 10);
    assert!(count(|c| matches!(c, Converted::Cluster(_))) > 10);
    assert!(count(|c| matches!(c, Converted::Endpoints(_))) > 10);

    let routes = all.iter().filter_map(|(_, c)| match c {
        Converted::Route(r) => Some(r),
        _ => None,
    });
    let route_actions: Vec<_> = routes
        .flat_map(|r| r.virtual_hosts.iter())
        .flat_map(|h| h.routes.iter())
        .collect();

    // A weighted split: two backends whose weights are the split's.
    let weighted: Vec<Vec<(String, u32)>> = route_actions
        .iter()
        .filter_map(|r| match &r.action {
            Action::Route(a) => match &a.destination {
                Destination::Weighted(w) => {
                    Some(w.iter().map(|c| (c.name.clone(), c.weight)).collect())
                }
                Destination::Cluster(_) => None,
            },
            _ => None,
        })
        .collect();
    println!("weighted: {weighted:?}");
    assert!(!weighted.is_empty(), "no weighted split");
    let reviews = vec![
        (
            "outbound|80||reviews-v1.default.svc.cluster.local".to_string(),
            90,
        ),
        (
            "outbound|80||reviews-v2.default.svc.cluster.local".to_string(),
            10,
        ),
    ];
    assert!(weighted.contains(&reviews), "no 90/10 reviews split");
    assert!(weighted.iter().all(|w| w.iter().any(|(_, x)| *x > 0)));

    // Retry policies: conditions and counts as emitted.
    let retries: Vec<_> = route_actions
        .iter()
        .filter_map(|r| match &r.action {
            Action::Route(a) => a.retry.clone(),
            _ => None,
        })
        .collect();
    println!("retries: {retries:?}");
    assert!(!retries.is_empty(), "no retry policy");
    // traffic-policy's RetryPolicy on reviews: 5xx, reset and 503, three retries.
    let reviews = retries
        .iter()
        .find(|r| r.on.retriable_status_codes && r.on.five_xx)
        .expect("a retry on status codes");
    assert!(reviews.on.five_xx && reviews.on.reset && !reviews.on.gateway_error);
    assert_eq!(reviews.num_retries, 3);
    assert_eq!(reviews.retriable_status_codes, vec![503]);
    assert_eq!(reviews.per_try_timeout, Some(Duration::from_millis(250)));
    assert_eq!(reviews.backoff.base, Duration::from_millis(25));
    assert_eq!(reviews.backoff.max, Duration::from_millis(250));
    // Rudder's default: connection-level failures, twice.
    assert!(retries.iter().any(|r| r.on.connect_failure
        && r.on.refused_stream
        && r.on.reset_before_request
        && !r.on.five_xx
        && r.num_retries == 2));
    // gRPC conditions.
    assert!(
        retries
            .iter()
            .any(|r| r.on.grpc.unavailable && r.on.grpc.deadline_exceeded)
    );

    // Redirects.
    let redirects: Vec<_> = route_actions
        .iter()
        .filter_map(|r| match &r.action {
            Action::Redirect(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    println!("redirects: {redirects:?}");
    assert!(!redirects.is_empty(), "no redirect");
    assert!(
        redirects
            .iter()
            .all(|r| [301, 302, 303, 307, 308].contains(&r.status))
    );
    assert!(
        redirects
            .iter()
            .any(|r| r.scheme.as_deref() == Some("https")
                && r.port == Some(443)
                && r.status == 302)
    );
    assert!(redirects.iter().any(
        |r| matches!(&r.path, RedirectPath::Prefix(p) if p == "/replacement-prefix")
            && r.status == 308
    ));
    assert!(redirects.iter().any(
        |r| matches!(&r.path, RedirectPath::Full(p) if p == "/full-path-replacement")
            && r.status == 303
    ));

    // Transport socket matches: plain text to endpoints outside the mesh.
    let matches: Vec<_> = all
        .iter()
        .filter_map(|(_, c)| match c {
            Converted::Cluster(c) => Some(c),
            _ => None,
        })
        .flat_map(|c| c.transport_matches.iter())
        .collect();
    println!(
        "transport matches: {:?}",
        matches.iter().take(2).collect::<Vec<_>>()
    );
    assert!(!matches.is_empty(), "no transport match");
    assert!(
        matches
            .iter()
            .all(|m| matches!(m.transport, Transport::Plain)
                && m.when == vec![("rudder.dev/tls".to_string(), "plain".to_string())])
    );

    // Listeners: the inbound chain terminates TLS with the agent's certificate, and
    // clusters name their protocol and discovery.
    let listeners: Vec<_> = all
        .iter()
        .filter_map(|(_, c)| match c {
            Converted::Listener(l) => Some(l),
            _ => None,
        })
        .collect();
    let tls = listeners
        .iter()
        .flat_map(|l| l.chains.iter())
        .find_map(|c| c.tls.as_ref())
        .expect("a TLS chain");
    assert_eq!(tls.certificate.name, "default");
    assert_eq!(
        tls.certificate.source,
        SecretSource::AgentCluster("rudder-agent-sds".into())
    );
    assert!(tls.require_client_certificate);
    assert!(listeners.iter().any(|l| l.original_dst && l.tls_inspector));
    assert!(
        listeners
            .iter()
            .flat_map(|l| l.chains.iter())
            .any(|c| matches!(
                &c.terminal,
                Terminal::Http(m) if m.connect
            ))
    );
    let clusters: Vec<_> = all
        .iter()
        .filter_map(|(_, c)| match c {
            Converted::Cluster(c) => Some(c),
            _ => None,
        })
        .collect();
    assert!(
        clusters
            .iter()
            .any(|c| c.protocol == UpstreamProtocol::Http2)
    );
    assert!(
        clusters
            .iter()
            .any(|c| c.protocol == UpstreamProtocol::Downstream)
    );
    assert!(
        clusters
            .iter()
            .any(|c| matches!(c.discovery, Discovery::Dns { .. }))
    );
    assert!(clusters.iter().any(
        |c| matches!(&c.discovery, Discovery::OriginalDst { header: Some(h) } if h == ":authority")
    ));
    assert!(
        clusters
            .iter()
            .any(|c| c.retry_budget.is_some_and(|b| b.min_concurrency == 2))
    );
}

#[test]
fn rudder_and_agent_secrets_convert() {
    let now = SystemTime::now();
    let authority = ca::Authority::generate_root("cluster.local", now).expect("root");
    let root = translator::tls::root_secret(&authority.trust_bundle_pem());
    let (name, converted) = convert(root.kind, &root.body.to_any()).expect("ROOTCA converts");
    assert_eq!(name, "ROOTCA");
    let Converted::Secret(Secret::Bundle(bundle)) = converted else {
        panic!("not a bundle: {converted:?}");
    };
    assert_eq!(bundle.anchors.len(), 1);

    let id = ca::SpiffeId::new("cluster.local", "shop", "web").expect("id");
    let cert = authority
        .issue(&id, Duration::from_secs(3600), now)
        .expect("issue");
    let default = translator::tls::cert_secret(&cert.cert_chain_pem, cert.private_key_pem());
    let (name, converted) =
        convert(default.kind, &default.body.to_any()).expect("default converts");
    assert_eq!(name, "default");
    let Converted::Secret(Secret::Certificate(key)) = converted else {
        panic!("not a certificate: {converted:?}");
    };
    assert_eq!(
        key.uris,
        vec!["spiffe://cluster.local/ns/shop/sa/web".to_string()]
    );
    assert!(!key.chain.is_empty() && !key.key.is_empty());
}
