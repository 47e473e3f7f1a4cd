//! Attachment, precedence and status of Gateway API routes.

use crate::gamma::resolve::*;
use crate::model::parse_manifest;
use crate::model::{Excluded, Kind, Model, ObjectKey};
use crate::policy::context::PolicyContext;
use crate::routing::ir::{Backend, Dest};
use crate::routing::ir::{PathMatch, StrMatch};
use crate::status::routes::route_status;

const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{name: http, port: 80}, {name: db, port: 5432, appProtocol: tcp}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web-v2}\nspec:\n  ports: [{name: http, port: 80}, {name: db, port: 5432, appProtocol: tcp}]\n";

fn model(extra: &str) -> Model {
    let mut m = Model::new();
    let parsed = parse_manifest(&format!("{SERVICES}---\n{extra}")).expect("manifest");
    for o in &parsed.objects {
        m.apply(o).expect("valid");
    }
    m
}

fn conditions(m: &Model, name: &str) -> Vec<Vec<(String, String, String)>> {
    let status = route_status(m);
    let key = ObjectKey::new(Kind::HTTPRoute, "default", name);
    status
        .get(&key)
        .map(|r| {
            r.parents
                .iter()
                .map(|(_, cs)| {
                    cs.iter()
                        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn route(name: &str, parents: &str, backends: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: {parents}\n  rules:\n    - backendRefs: {backends}\n"
    )
}

fn triple(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.into(), s.into(), r.into())
}

#[test]
fn each_service_parent_gets_accepted_and_resolved_refs_with_gateway_reasons() {
    let m = model(&route(
        "r",
        "[{group: \"\", kind: Service, name: web, port: 80}, {group: \"\", kind: Service, name: nope}, {group: \"\", kind: Service, name: web, port: 81}, {group: \"\", kind: Service, name: web, namespace: other}, {group: \"\", kind: Service, name: web, port: 5432}, {name: some-gateway}]",
        "[{name: web-v2, port: 80}]",
    ));
    let c = conditions(&m, "r");
    // The Gateway parent is not Rudder's: five entries, not six.
    assert_eq!(c.len(), 5, "{c:?}");
    assert_eq!(c[0][0], triple("Accepted", "True", "Accepted"));
    assert_eq!(c[0][1], triple("ResolvedRefs", "True", "ResolvedRefs"));
    assert_eq!(c[1][0], triple("Accepted", "False", "NoMatchingParent"));
    assert_eq!(c[2][0], triple("Accepted", "False", "NoMatchingParent"));
    // A consumer route of a Service that does not exist.
    assert_eq!(c[3][0], triple("Accepted", "False", "NoMatchingParent"));
    assert_eq!(c[4][0], triple("Accepted", "False", "NoMatchingParent"));
}

#[test]
fn unresolved_backends_say_why_and_the_rule_answers_500_when_nothing_is_left() {
    for (backends, reason) in [
        ("[{name: missing, port: 80}]", "BackendNotFound"),
        ("[{name: web-v2, port: 81}]", "BackendNotFound"),
        ("[{name: web-v2, port: 5432}]", "UnsupportedProtocol"),
        (
            "[{name: web-v2, port: 80, namespace: other}]",
            "RefNotPermitted",
        ),
        (
            "[{name: web-v2, group: example.com, kind: Backend}]",
            "InvalidKind",
        ),
    ] {
        let m = model(&route(
            "r",
            "[{group: \"\", kind: Service, name: web}]",
            backends,
        ));
        let c = conditions(&m, "r");
        assert_eq!(
            c[0][0],
            triple("Accepted", "True", "Accepted"),
            "{backends}"
        );
        assert_eq!(
            c[0][1],
            triple("ResolvedRefs", "False", reason),
            "{backends}"
        );
        let (state, _) = resolve(&m, &Excluded::new());
        let rules = &state[&("default".to_string(), "web".to_string())].rules;
        assert_eq!(rules[0].rule.dest, Dest::Status(500), "{backends}");
    }
    // Weights of 0 only: 500 as well, but every reference resolved.
    let m = model(&route(
        "r",
        "[{group: \"\", kind: Service, name: web}]",
        "[{name: web-v2, port: 80, weight: 0}]",
    ));
    assert_eq!(
        conditions(&m, "r")[0][1],
        triple("ResolvedRefs", "True", "ResolvedRefs")
    );
    let (state, _) = resolve(&m, &Excluded::new());
    assert_eq!(
        state[&("default".to_string(), "web".to_string())].rules[0]
            .rule
            .dest,
        Dest::Status(500)
    );
}

#[test]
fn a_routed_service_is_not_split_and_its_traffic_split_is_conflicted() {
    // api has HTTP ports only: routes take all of them.
    let m = model(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: api}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: ts}}\nspec:\n  service: api\n  backends: [{{service: web-v2, weight: 1}}]\n---\n{}",
        route(
            "r",
            "[{group: \"\", kind: Service, name: api}]",
            "[{name: web-v2, port: 80}]"
        )
    ));
    let policy = PolicyContext::new(&m, &Default::default(), &Excluded::new());
    let svc = m.service("default", "api").expect("api");
    let routing = port_routing(
        (&policy.routes, &policy.consumers),
        None,
        svc,
        &svc.ports[0],
        None,
    )
    .expect("routed");
    assert_eq!(
        routing.rules[0].dest,
        Dest::Cluster(crate::names::outbound_cluster(
            m.service("default", "web-v2").expect("web-v2"),
            80
        ))
    );
    let status = crate::status::policy_status(&m);
    let ts = &status[&ObjectKey::new(Kind::TrafficSplit, "default", "ts")];
    assert_eq!(ts.conditions[0].reason, "Conflicted");
    assert!(
        ts.conditions[0].message.contains("HTTPRoute default/r"),
        "{}",
        ts.conditions[0].message
    );
}

#[test]
fn rules_of_several_routes_merge_by_precedence_and_ties_go_to_the_oldest() {
    let newer = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: a-newer, creationTimestamp: \"2026-02-01T00:00:00Z\"}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: web}]\n  rules:\n    - matches: [{path: {type: PathPrefix, value: /x}}]\n      backendRefs: [{name: web-v2, port: 80}]\n    - matches: [{path: {type: Exact, value: /x/y}}]\n      backendRefs: [{name: web-v2, port: 80}]\n";
    let older = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: z-older, creationTimestamp: \"2026-01-01T00:00:00Z\"}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: web}]\n  rules:\n    - matches: [{path: {type: PathPrefix, value: /x}}]\n      backendRefs: [{name: web, port: 80}]\n    - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: a, value: b}]}]\n      backendRefs: [{name: web, port: 80}]\n";
    let m = model(&format!("{newer}---\n{older}"));
    let (state, _) = resolve(&m, &Excluded::new());
    let rules: Vec<(String, String)> = state[&("default".to_string(), "web".to_string())]
        .rules
        .iter()
        .map(|a| {
            let path = match &a.rule.matches.as_ref().expect("match").path {
                PathMatch::Exact(p) => format!("={p}"),
                PathMatch::Segments(p) | PathMatch::Prefix(p) => p.clone(),
                PathMatch::Regex(p) => format!("~{p}"),
            };
            let src = a
                .rule
                .extra
                .as_ref()
                .and_then(|e| e.source.clone())
                .expect("source");
            (path, src.name)
        })
        .collect();
    assert_eq!(
        rules,
        vec![
            ("=/x/y".to_string(), "a-newer".to_string()),
            ("/x".to_string(), "z-older".to_string()),
            ("/x".to_string(), "a-newer".to_string()),
            ("/".to_string(), "z-older".to_string()),
        ]
    );
}

#[test]
fn invalid_and_unsupported_routes_are_refused_with_the_field() {
    let cases = [
        (
            "filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /}}}]",
            "spec.rules[0].backendRefs",
            false,
        ),
        (
            "filters: [{type: CORS, cors: {}}]",
            "spec.rules[0].filters[0].type",
            true,
        ),
        (
            "filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}}}, {type: ExtensionRef, extensionRef: {group: g, kind: K, name: e}}]",
            "spec.rules[0].filters[1].type",
            true,
        ),
        (
            "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Host, value: x}]}}]",
            "spec.rules[0].filters[0].requestHeaderModifier",
            true,
        ),
        (
            "filters: [{type: RequestHeaderModifier}]",
            "spec.rules[0].filters[0]",
            false,
        ),
        (
            "timeouts: {request: 1s, backendRequest: 2s}",
            "spec.rules[0].timeouts.backendRequest",
            false,
        ),
        (
            "timeouts: {request: 1.5s}",
            "spec.rules[0].timeouts.request",
            false,
        ),
        (
            "matches: [{path: {type: PathPrefix, value: /a//b}}]",
            "spec.rules[0].matches[0].path.value",
            false,
        ),
        (
            "matches: [{path: {type: RegularExpression, value: \"(a\"}}]",
            "spec.rules[0].matches[0].path.value",
            false,
        ),
        (
            "matches: [{method: FETCH}]",
            "spec.rules[0].matches[0].method",
            false,
        ),
        (
            "sessionPersistence: {type: Cookie}",
            "spec.rules[0].sessionPersistence",
            true,
        ),
        (
            "retry: {codes: [200]}",
            "spec.rules[0].retry.codes[0]",
            false,
        ),
    ];
    for (rule, field, unsupported) in cases {
        let yaml = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: web}}]\n  rules:\n    - backendRefs: [{{name: web, port: 80}}]\n      {rule}\n"
        );
        let route: crds::HTTPRoute = serde_saphyr::from_str(&yaml).expect("yaml");
        let e = Model::new()
            .apply(&crate::model::Object::HTTPRoute(Box::new(route)))
            .expect_err(rule);
        assert_eq!(e.field, field, "{rule}: {e}");
        assert_eq!(e.unsupported, unsupported, "{rule}: {e}");
    }
    // A backend without a port is refused (the upstream CEL rule).
    let yaml = route(
        "r",
        "[{group: \"\", kind: Service, name: web}]",
        "[{name: web}]",
    );
    let route: crds::HTTPRoute = serde_saphyr::from_str(&yaml).expect("yaml");
    let e = Model::new()
        .apply(&crate::model::Object::HTTPRoute(Box::new(route)))
        .expect_err("no port");
    assert_eq!(e.field, "spec.rules[0].backendRefs[0].port");
}

#[test]
fn grpc_method_matches_become_paths() {
    use crds::gateway::GRPCMethodMatch;
    use crds::gateway_validate::{GrpcPath, grpc_method_path};
    let m = |t: Option<&str>, s: Option<&str>, me: Option<&str>| GRPCMethodMatch {
        type_: t.map(str::to_string),
        service: s.map(str::to_string),
        method: me.map(str::to_string),
    };
    assert_eq!(
        grpc_method_path(&m(None, Some("pkg.Svc"), Some("Get"))),
        GrpcPath::Exact("/pkg.Svc/Get".into())
    );
    assert_eq!(
        grpc_method_path(&m(None, Some(".pkg.Svc"), None)),
        GrpcPath::Prefix("/pkg.Svc/".into()),
        "a leading dot is not part of the path"
    );
    assert_eq!(
        grpc_method_path(&m(None, None, Some("Get"))),
        GrpcPath::Regex("/[^/]+/Get".into())
    );
    // Alternatives stay inside their part of the path.
    assert_eq!(
        grpc_method_path(&m(Some("RegularExpression"), Some("a|b"), None)),
        GrpcPath::Regex("/(?:a|b)/(?:[^/]+)".into())
    );
}

fn grpc_route(name: &str, created: &str, parents: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, creationTimestamp: \"{created}\"}}\nspec:\n  parentRefs: {parents}\n  rules:\n{rules}"
    )
}

#[test]
fn on_a_port_a_grpc_route_routes_http_routes_do_not_apply_and_say_so() {
    let grpc = grpc_route(
        "g",
        "2026-01-01T00:00:00Z",
        "[{group: \"\", kind: Service, name: web, port: 80}]",
        "    - backendRefs: [{name: web-v2, port: 80}]\n",
    );
    let m = model(&format!(
        "{}---\n{grpc}",
        route(
            "r",
            "[{group: \"\", kind: Service, name: web}]",
            "[{name: web, port: 80}]"
        )
    ));
    let (state, _) = resolve(&m, &Excluded::new());
    let rules = &state[&("default".to_string(), "web".to_string())];
    assert_eq!(
        rules.sources,
        vec![ObjectKey::new(Kind::GRPCRoute, "default", "g")]
    );
    assert_eq!(
        conditions(&m, "r")[0][0],
        triple("Accepted", "False", "Conflicted")
    );
}

#[test]
fn grpc_routes_rank_by_service_then_method_then_headers() {
    let m = model(&grpc_route(
        "g",
        "2026-01-01T00:00:00Z",
        "[{group: \"\", kind: Service, name: web}]",
        "    - matches: [{method: {method: Get}}]\n      backendRefs: [{name: web, port: 80}]\n    - matches: [{method: {service: pkg.Svc}}]\n      backendRefs: [{name: web-v2, port: 80}]\n    - matches: [{method: {service: pkg.Svc, method: Get}, headers: [{name: a, value: b}]}]\n      backendRefs: [{name: web-v2, port: 80}]\n",
    ));
    let (state, _) = resolve(&m, &Excluded::new());
    let paths: Vec<PathMatch> = state[&("default".to_string(), "web".to_string())]
        .rules
        .iter()
        .map(|a| a.rule.matches.as_ref().expect("match").path.clone())
        .collect();
    assert_eq!(
        paths,
        vec![
            PathMatch::Exact("/pkg.Svc/Get".into()),
            PathMatch::Prefix("/pkg.Svc/".into()),
            PathMatch::Regex("/[^/]+/Get".into()),
        ]
    );
}

#[test]
fn an_unresolved_backend_keeps_its_share_and_fails_it() {
    let m = model(&route(
        "r",
        "[{group: \"\", kind: Service, name: web}]",
        "[{name: web-v2, port: 80, weight: 3}, {name: missing, port: 80, weight: 1}]",
    ));
    let (state, _) = resolve(&m, &Excluded::new());
    let a = &state[&("default".to_string(), "web".to_string())].rules[0];
    let Dest::Weighted(w) = &a.rule.dest else {
        panic!("{:?}", a.rule.dest)
    };
    assert_eq!(w[1], (Backend::Missing, 1));
    assert_eq!(
        a.rule.extra.as_ref().map(|e| e.no_backend_status),
        Some(500)
    );
    assert_eq!(
        conditions(&m, "r")[0][1],
        triple("ResolvedRefs", "False", "BackendNotFound")
    );
}

#[test]
fn equivalent_header_names_keep_the_first_match() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: web}]\n  rules:\n    - matches: [{headers: [{name: X-A, value: '1'}, {name: x-a, value: '2'}]}]\n      backendRefs: [{name: web, port: 80}]\n";
    let m = model(yaml);
    let (state, _) = resolve(&m, &Excluded::new());
    let a = &state[&("default".to_string(), "web".to_string())].rules[0];
    let headers = &a.rule.matches.as_ref().expect("match").headers;
    assert_eq!(
        headers,
        &vec![("X-A".to_string(), StrMatch::Exact("1".into()))]
    );
}

#[test]
fn a_parent_ref_to_the_whole_service_covers_those_to_its_ports() {
    let m = model(&route(
        "r",
        "[{group: \"\", kind: Service, name: web, port: 80}, {group: core, kind: Service, name: web}]",
        "[{name: web-v2, port: 80}]",
    ));
    let (state, _) = resolve(&m, &Excluded::new());
    let rules = &state[&("default".to_string(), "web".to_string())].rules;
    assert_eq!(rules.len(), 1, "one rule, not one per parentRef: {rules:?}");
    assert_eq!(rules[0].port, 80);
}

#[test]
fn an_unresolved_mirror_is_left_out_and_reported() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: web}]\n  rules:\n    - filters:\n        - {type: RequestMirror, requestMirror: {backendRef: {name: gone, port: 80}}}\n        - {type: RequestMirror, requestMirror: {backendRef: {name: web-v2, port: 80}, percent: 5}}\n      backendRefs: [{name: web, port: 80}]\n";
    let m = model(yaml);
    let (state, _) = resolve(&m, &Excluded::new());
    let a = &state[&("default".to_string(), "web".to_string())].rules[0];
    let mirrors = &a.rule.extra.as_ref().expect("extra").mirrors;
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    assert_eq!(mirrors[0].1, 50_000, "5% in millionths");
    let status = route_status(&m);
    let resolved = &status[&ObjectKey::new(Kind::HTTPRoute, "default", "r")].parents[0].1[1];
    assert_eq!(resolved.reason, "BackendNotFound");
    assert!(
        resolved.message.contains("requestMirror") && resolved.message.contains("left out"),
        "{}",
        resolved.message
    );
}

#[test]
fn a_traffic_split_keeps_the_ports_routes_do_not_take() {
    // web has an HTTP port (routed) and a TCP port (still split, as a tunnel).
    let m = model(&format!(
        "{}---\napiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: ts}}\nspec:\n  service: web\n  backends: [{{service: web-v2, weight: 1}}]\n",
        route(
            "r",
            "[{group: \"\", kind: Service, name: web}]",
            "[{name: web-v2, port: 80}]"
        )
    ));
    let status = crate::status::policy_status(&m);
    let ts = &status[&ObjectKey::new(Kind::TrafficSplit, "default", "ts")];
    assert_eq!(ts.conditions[0].status, "True", "{:?}", ts.conditions[0]);
    assert!(
        ts.conditions[0].message.contains("port(s) 80"),
        "{}",
        ts.conditions[0].message
    );
    let policy = PolicyContext::new(&m, &Default::default(), &Excluded::new());
    assert!(
        policy
            .splits
            .contains_key(&("default".to_string(), "web".to_string()))
    );
}

#[test]
fn a_route_too_large_for_the_ports_it_covers_attaches_nowhere() {
    // About 780 KiB per copy: within the limit for one parentRef (validation), over it
    // for the two HTTP ports a parentRef without a port covers.
    let value = "v".repeat(4000);
    let headers: String = (0..16)
        .map(|i| format!("{{name: x-{i}, value: {value}}}, "))
        .collect();
    let adds: String = (0..16)
        .map(|i| format!("{{name: y-{i}, value: {value}}}, "))
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: multi}}\nspec:\n  ports: [{{name: a, port: 80}}, {{name: b, port: 8080}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: big}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: multi}}]\n  rules:\n    - matches: [{{path: {{value: /a}}}}, {{path: {{value: /b}}}}, {{path: {{value: /c}}}}]\n      filters:\n        - {{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{headers}], add: [{adds}]}}}}\n        - {{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{headers}], add: [{adds}]}}}}\n      backendRefs: [{{name: web, port: 80}}]\n"
    );
    let m = model(&yaml);
    let (state, _) = resolve(&m, &Excluded::new());
    assert!(
        !state.contains_key(&("default".to_string(), "multi".to_string())),
        "not attached"
    );
    let c = conditions(&m, "big");
    assert_eq!(c[0][0], triple("Accepted", "False", "UnsupportedValue"));
    // Naming one port, it fits.
    let one = yaml.replace("name: multi}]", "name: multi, port: 80}]");
    let m = model(&one);
    assert!(
        resolve(&m, &Excluded::new())
            .0
            .contains_key(&("default".to_string(), "multi".to_string()))
    );
}
