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
        port,
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
        port: 8080,
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

/// Whether `from` may open a connection to `port` through an intercepted pod's
/// passthrough (ports no Service names).
fn ask_passthrough(m: &Model, mesh: &MeshConfig, from: Option<&str>, port: u16) -> bool {
    let caller = from.map(|f| format!("{TD}/{f}"));
    let dest = Destination {
        namespace: "shop",
        service_account: "api",
        pod_default: None,
        port: super::authz::PASSTHROUGH,
        protocol: Protocol::Tcp,
    };
    let req = Request {
        caller: caller.as_deref(),
        http: None,
        headers: &[],
        port,
    };
    check(m, mesh, &dest, &req).0.allowed
}

const P5000: &str = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata: {name: p5000, namespace: shop}\nspec:\n  matches: {ports: [5000]}\n---\n";

#[test]
fn a_port_no_service_names_is_enforced_on_the_passthrough() {
    // v1alpha2: the destination names its port.
    let t = "apiVersion: access.smi-spec.io/v1alpha2\nkind: TrafficTarget\nmetadata: {name: admin-port, namespace: shop}\nspec:\n  destination: {kind: ServiceAccount, name: api, namespace: shop, port: 5000}\n  rules: [{kind: TCPRoute, name: p5000}]\n  sources: [{kind: ServiceAccount, name: web}]\n---\n";
    let m = model(&format!("{BASE}{P5000}{t}"));
    let mut mesh = MeshConfig::default();
    let web = Some("shop/sa/web");
    let other = Some("shop/sa/other");
    assert!(ask_passthrough(&m, &mesh, web, 5000));
    assert!(
        !ask_passthrough(&m, &mesh, other, 5000),
        "the target's port is closed to others"
    );
    assert!(!ask_passthrough(&m, &mesh, None, 5000), "and to plain text");
    assert!(
        ask_passthrough(&m, &mesh, other, 6000),
        "other ports follow the default allow"
    );
    assert!(ask_passthrough(&m, &mesh, None, 6000));
    assert!(ask_passthrough(&m, &mesh, Some("rudder-system/sa/x"), 5000));
    mesh.inbound_default = InboundDefault::Deny;
    assert!(
        !ask_passthrough(&m, &mesh, other, 6000),
        "or the default deny"
    );
    assert!(ask_passthrough(&m, &mesh, web, 5000));
}

#[test]
fn a_tcp_route_opens_its_unserved_port_on_the_passthrough() {
    let m = model(&format!(
        "{BASE}{P5000}{}",
        target("p", "[{kind: TCPRoute, name: p5000}]", &["web"], "")
    ));
    let mesh = MeshConfig::default();
    let web = Some("shop/sa/web");
    assert!(
        ask_passthrough(&m, &mesh, web, 5000),
        "its port is open to it"
    );
    assert!(
        !ask_passthrough(&m, &mesh, web, 6000),
        "a target without a port encloses every port"
    );
    assert!(!ask_passthrough(&m, &mesh, Some("shop/sa/other"), 5000));
}

/// `yaml`'s one object, made invalid (a UDPRoute rule) as the model is sent it.
fn broken(yaml: &str) -> crate::model::Object {
    let mut objects = parse_manifest(yaml).expect("parses").objects;
    let mut o = objects.remove(0);
    if let crate::model::Object::TrafficTarget(t) = &mut o
        && let Some(spec) = t.spec.as_mut()
    {
        spec.rules[0].kind = "UDPRoute".into();
    }
    o
}

#[test]
fn an_invalid_target_never_seen_valid_closes_its_destination() {
    let mesh = MeshConfig::default();
    let web = Some("shop/sa/web");
    let get = Some(("GET", "/items"));
    // Its dry-run annotation is not "true": enforced, allowing nothing.
    let bad_annotation = target(
        "t",
        "[{kind: HTTPRouteGroup, name: routes}]",
        &["web"],
        ", annotations: {rudder.dev/dry-run: \"yes\"}",
    );
    let mut m = model(BASE);
    let objects = parse_manifest(&bad_annotation).map(|p| p.objects);
    assert!(objects.is_err(), "refused");
    m.apply(&broken(&target(
        "t",
        "[{kind: HTTPRouteGroup, name: routes}]",
        &["web"],
        "",
    )))
    .expect_err("invalid");
    assert!(!ask(&m, &mesh, web, 8080, get).0, "fails closed");
    // An invalid dry run stays a dry run: it closes nothing.
    let dry = target(
        "t",
        "[{kind: HTTPRouteGroup, name: routes}]",
        &["web"],
        ", annotations: {rudder.dev/dry-run: \"true\"}",
    );
    let mut m = model(BASE);
    m.apply(&broken(&dry)).expect_err("invalid");
    assert!(ask(&m, &mesh, Some("shop/sa/other"), 8080, get).0);
    // An update that breaks a good version keeps the good one.
    let good = target("t", "[{kind: HTTPRouteGroup, name: routes}]", &["web"], "");
    let mut m = model(&format!("{BASE}{good}"));
    m.apply(&broken(&good)).expect_err("invalid");
    assert!(ask(&m, &mesh, web, 8080, get).0);
    assert!(!ask(&m, &mesh, Some("shop/sa/other"), 8080, get).0);
}

#[test]
fn targets_past_the_limit_still_enforce_their_destination() {
    // Dry runs first in name order, then one enforced target past the limit.
    let mut yaml = BASE.to_string();
    for i in 0..super::authz::MAX_TARGETS_PER_DESTINATION {
        yaml.push_str(&target(
            &format!("a{i:02}"),
            "[{kind: HTTPRouteGroup, name: routes}]",
            &["web"],
            ", annotations: {rudder.dev/dry-run: \"true\"}",
        ));
    }
    yaml.push_str(&target(
        "z",
        "[{kind: HTTPRouteGroup, name: routes}]",
        &["web"],
        "",
    ));
    let m = model(&yaml);
    let mesh = MeshConfig::default();
    assert!(
        !ask(
            &m,
            &mesh,
            Some("shop/sa/other"),
            8080,
            Some(("GET", "/items"))
        )
        .0,
        "enforced, not open"
    );
    assert!(
        !ask(
            &m,
            &mesh,
            Some("shop/sa/web"),
            8080,
            Some(("GET", "/items"))
        )
        .0,
        "and the target past the limit allows nothing"
    );
}

#[test]
fn a_target_over_the_limits_allows_nothing_and_says_so() {
    let matches: Vec<String> = (0..=super::authz::MAX_MATCHES_PER_TARGET)
        .map(|i| format!("  - {{name: m{i}, pathRegex: \"/p{i}\"}}"))
        .collect();
    let big = format!(
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {{name: big, namespace: shop}}\nspec:\n  matches:\n{}\n---\n",
        matches.join("\n")
    );
    let m = model(&format!(
        "{BASE}{big}{}",
        target("wide", "[{kind: HTTPRouteGroup, name: big}]", &["web"], "")
    ));
    let mesh = MeshConfig::default();
    assert!(!ask(&m, &mesh, Some("shop/sa/web"), 8080, Some(("GET", "/p1"))).0);
    let status = policy_status(&m);
    let s = &status[&ObjectKey::new(Kind::TrafficTarget, "shop", "wide")];
    let refs = s
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .expect("condition");
    assert!(refs.message.contains("more than 128"), "{}", refs.message);
}

#[test]
fn answers_decide_on_the_normalized_path_and_the_headers_given() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec:\n  selector: {app: api}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\n";
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: api-1, namespace: shop, labels: {app: api}, annotations: {rudder.dev/inject: \"true\"}}\nspec:\n  serviceAccountName: api\n  containers: [{name: app, ports: [{containerPort: 8080}]}]\nstatus: {podIP: 10.0.0.3}\n---\n";
    let group = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: pub, namespace: shop}\nspec:\n  matches:\n  - {name: public, pathRegex: \"/public(/.*)?\", headers: {x-env: prod}}\n---\n";
    let m = model(&format!(
        "{BASE}{svc}{pod}{group}{}",
        target("p", "[{kind: HTTPRouteGroup, name: pub}]", &["web"], "")
    ));
    let mesh = MeshConfig::default();
    let ask = |path: &str, headers: &[&str]| {
        let req = super::authz::CheckRequest {
            from_namespace: "shop".into(),
            from_service_account: "web".into(),
            to_namespace: "shop".into(),
            to_service: "api".into(),
            path: path.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        };
        super::authz::check_service(&m, &mesh, &req)
            .expect("answers")
            .answers
            .iter()
            .all(|a| a.allowed)
    };
    assert!(ask("/public/x", &["X-Env: prod"]));
    assert!(!ask("/public/x", &[]), "the header rule");
    assert!(!ask("/public/../admin", &["x-env:prod"]));
    assert!(!ask("/public%2F..%2Fadmin", &["x-env:prod"]));
}

#[test]
fn unserved_named_ports_get_their_own_rules_and_leave_the_passthrough_guarded() {
    let t = "apiVersion: access.smi-spec.io/v1alpha2\nkind: TrafficTarget\nmetadata: {name: admin-port, namespace: shop}\nspec:\n  destination: {kind: ServiceAccount, name: api, namespace: shop, port: 5000}\n  rules: [{kind: TCPRoute, name: p5000}]\n  sources: [{kind: ServiceAccount, name: web}]\n---\n";
    let m = model(&format!("{BASE}{P5000}{t}"));
    let mesh = MeshConfig {
        inbound_default: InboundDefault::Deny,
        ..Default::default()
    };
    let pod = m.pod("shop", "api-0").expect("pod");
    let (named, rest) = super::authz::unserved(&m, &mesh, pod, &[8080]);
    assert_eq!(named.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [5000]);
    assert!(
        named[0].1.handshake_callers().is_some(),
        "the named port decides on callers alone"
    );
    let guard = rest
        .handshake_callers()
        .expect("the passthrough is guarded");
    assert_eq!(
        guard.len(),
        1,
        "only the control plane: the named port's policy is its chain's: {guard:?}"
    );
    // Served ports are left to their own listeners.
    let (named, _) = super::authz::unserved(&m, &mesh, pod, &[5000, 8080]);
    assert!(named.is_empty());
}
