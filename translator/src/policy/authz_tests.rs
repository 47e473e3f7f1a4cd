//! TrafficTargets resolved per destination port: enforcement, rules by kind, missing
//! references, dry runs, the default per mesh, namespace and pod, and the status.

use super::authz::{DEFAULT_ALLOW, Destination, check, inbound};
use crate::mesh::{InboundDefault, MeshConfig};
use crate::model::{Kind, Model, ObjectKey, Protocol, parse_manifest};
use crate::routing::authz::Request;
use crate::status::policy_status;

const BASE: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: api-0, namespace: shop}\nspec:\n  serviceAccountName: api\n  containers: [{name: app, ports: [{containerPort: 8080}]}]\nstatus: {podIP: 10.0.0.2}\n---\napiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: routes, namespace: shop}\nspec:\n  matches:\n  - {name: read, methods: [GET], pathRegex: \"/items.*\"}\n  - {name: write, methods: [POST, PUT], pathRegex: \"/items.*\"}\n---\napiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {name: db, namespace: shop}\nspec:\n  matches: {ports: [5432]}\n---\n";

fn target(name: &str, rules: &str, sources: &[&str], extra_meta: &str) -> String {
    let sources: Vec<String> = sources
        .iter()
        .map(|s| {
            let (ns, sa) = s.split_once('/').unwrap_or(("shop", s));
            format!("{{kind: ServiceAccount, name: {sa}, namespace: {ns}}}")
        })
        .collect();
    format!(
        "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {{name: {name}, namespace: shop{extra_meta}}}\nspec:\n  destination: {{kind: ServiceAccount, name: api, namespace: shop}}\n  rules: {rules}\n  sources: [{}]\n---\n",
        sources.join(", ")
    )
}

fn model(yaml: &str) -> Model {
    let mut m = Model::new();
    for o in parse_manifest(yaml).expect("parses").objects {
        m.apply(&o).expect("valid object");
    }
    m
}

const TD: &str = "spiffe://cluster.local/ns";

fn ask(
    m: &Model,
    mesh: &MeshConfig,
    from: Option<&str>,
    port: u16,
    http: Option<(&str, &str)>,
) -> (bool, Vec<String>) {
    let caller = from.map(|f| format!("{TD}/{f}"));
    let protocol = if http.is_some() {
        Protocol::Http
    } else {
        Protocol::Tcp
    };
    let dest = Destination {
        namespace: "shop",
        service_account: "api",
        pod_default: None,
        port,
        protocol,
    };
    let req = Request {
        caller: caller.as_deref(),
        http,
        headers: &[],
    };
    let (d, _) = check(m, mesh, &dest, &req);
    (d.allowed, d.by)
}

#[test]
fn a_targeted_destination_allows_only_its_sources_and_rules() {
    let m = model(&format!(
        "{BASE}{}",
        target(
            "readers",
            "[{kind: HTTPRouteGroup, name: routes, matches: [read]}]",
            &["web", "ops/audit"],
            ""
        )
    ));
    let mesh = MeshConfig::default();
    let web = Some("shop/sa/web");
    assert_eq!(
        ask(&m, &mesh, web, 8080, Some(("GET", "/items/1"))),
        (true, vec!["TrafficTarget shop/readers".to_string()])
    );
    assert!(
        ask(
            &m,
            &mesh,
            Some("ops/sa/audit"),
            8080,
            Some(("GET", "/items"))
        )
        .0
    );
    assert!(
        !ask(&m, &mesh, web, 8080, Some(("POST", "/items"))).0,
        "not a listed match"
    );
    assert!(
        !ask(
            &m,
            &mesh,
            Some("shop/sa/other"),
            8080,
            Some(("GET", "/items"))
        )
        .0
    );
    assert!(
        !ask(&m, &mesh, None, 8080, Some(("GET", "/items"))).0,
        "plain text"
    );
    assert!(
        !ask(&m, &mesh, web, 9000, None).0,
        "HTTP rules open no TCP port"
    );
    assert_eq!(
        ask(&m, &mesh, Some("rudder-system/sa/rudder"), 9000, None),
        (true, vec!["rudder-control-plane".to_string()]),
        "the control plane is never denied"
    );
}

#[test]
fn tcp_routes_open_their_ports_and_limit_the_http_rules_to_them() {
    let m = model(&format!(
        "{BASE}{}{}",
        target("db", "[{kind: TCPRoute, name: db}]", &["web"], ""),
        target(
            "both",
            "[{kind: TCPRoute, name: db}, {kind: HTTPRouteGroup, name: routes}]",
            &["ops/audit"],
            ""
        ),
    ));
    let mesh = MeshConfig::default();
    assert!(ask(&m, &mesh, Some("shop/sa/web"), 5432, None).0);
    assert!(
        !ask(&m, &mesh, Some("shop/sa/web"), 5433, None).0,
        "not its port"
    );
    assert!(
        !ask(
            &m,
            &mesh,
            Some("ops/sa/audit"),
            8080,
            Some(("GET", "/items"))
        )
        .0,
        "HTTP rules only on the TCPRoute's ports"
    );
}

#[test]
fn a_missing_route_group_allows_nothing_and_the_status_says_so() {
    let m = model(&format!(
        "{BASE}{}",
        target(
            "broken",
            "[{kind: HTTPRouteGroup, name: nope}]",
            &["web"],
            ""
        )
    ));
    let mesh = MeshConfig::default();
    assert!(
        !ask(&m, &mesh, Some("shop/sa/web"), 8080, Some(("GET", "/"))).0,
        "fails closed"
    );
    let status = policy_status(&m);
    let s = &status[&ObjectKey::new(Kind::TrafficTarget, "shop", "broken")];
    let refs = s
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .expect("condition");
    assert_eq!(refs.status, "False");
    assert!(
        refs.message
            .contains("spec.rules[0]: HTTPRouteGroup shop/nope does not exist"),
        "{}",
        refs.message
    );
}

#[test]
fn dry_runs_are_recorded_not_enforced() {
    let m = model(&format!(
        "{BASE}{}",
        target(
            "trial",
            "[{kind: HTTPRouteGroup, name: routes}]",
            &["web"],
            ", annotations: {rudder.dev/dry-run: \"true\"}"
        )
    ));
    let mesh = MeshConfig::default();
    let dest = Destination {
        namespace: "shop",
        service_account: "api",
        pod_default: None,
        port: 8080,
        protocol: Protocol::Http,
    };
    let authz = inbound(&m, &mesh, &dest);
    assert!(
        authz.enforced.is_none(),
        "nothing enforced under the default allow"
    );
    let req = Request {
        caller: Some("spiffe://cluster.local/ns/shop/sa/other"),
        http: Some(("GET", "/items")),
        headers: &[],
    };
    let (now, dry) = check(&m, &mesh, &dest, &req);
    assert_eq!(now.by, [DEFAULT_ALLOW]);
    assert!(!dry.expect("a dry-run answer").allowed);
}

#[test]
fn the_default_is_the_pods_then_the_namespaces_then_the_meshs() {
    let m = model(BASE);
    let mut mesh = MeshConfig::default();
    assert!(ask(&m, &mesh, Some("shop/sa/web"), 8080, Some(("GET", "/"))).0);
    mesh.namespace_inbound
        .insert("shop".into(), InboundDefault::Deny);
    assert!(!ask(&m, &mesh, Some("shop/sa/web"), 8080, Some(("GET", "/"))).0);
    assert!(
        ask(
            &m,
            &mesh,
            Some("rudder-system/sa/rudder"),
            8080,
            Some(("GET", "/"))
        )
        .0
    );
    let dest = Destination {
        namespace: "shop",
        service_account: "api",
        pod_default: Some(InboundDefault::Allow),
        port: 8080,
        protocol: Protocol::Http,
    };
    assert!(
        inbound(&m, &mesh, &dest).is_open(),
        "the pod's annotation wins"
    );
    mesh.namespace_inbound.clear();
    mesh.inbound_default = InboundDefault::Deny;
    assert!(!ask(&m, &mesh, Some("shop/sa/web"), 8080, Some(("GET", "/"))).0);
}

#[test]
fn a_target_cannot_name_another_namespaces_destination() {
    let t = "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: t, namespace: evil}\nspec:\n  destination: {kind: ServiceAccount, name: api, namespace: shop}\n  rules: [{kind: TCPRoute, name: db}]\n  sources: [{kind: ServiceAccount, name: x}]\n";
    let e = parse_manifest(t).expect_err("refused");
    assert!(e.to_string().contains("spec.destination.namespace"), "{e}");
}
