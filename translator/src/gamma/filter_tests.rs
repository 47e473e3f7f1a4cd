//! Redirects, rewrites and consumer routes: what Envoy and proxyless gRPC clients are
//! sent, and the routes' status.

use envoy_types::pb::envoy::config::route::v3::{
    RedirectAction, RouteAction, RouteConfiguration, VirtualHost,
    redirect_action::{PathRewriteSpecifier, SchemeRewriteSpecifier},
    route::Action,
    route_action::{ClusterSpecifier, HostRewriteSpecifier},
};

use crate::model::{Excluded, Kind, Model, ObjectKey, parse_manifest};
use crate::output::Body;
use crate::policy::context::PolicyContext;
use crate::status::routes::route_status;

/// Services echo (port 80), echo-v1 (port 80) and api (port 8080) in namespace shop.
const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: shop}\nspec:\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: echo-v1, namespace: shop}\nspec:\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec:\n  ports: [{name: http, port: 8080}]\n";

fn model(extra: &str) -> Model {
    let mut m = Model::new();
    let parsed = parse_manifest(&format!("{SERVICES}---\n{extra}")).expect("manifest");
    for o in &parsed.objects {
        m.apply(o).expect("valid");
    }
    m
}

/// An HTTPRoute `name` in `ns` with `parents` and `rules` (YAML flow lists).
fn route(ns: &str, name: &str, parents: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: {parents}\n  rules: {rules}\n"
    )
}

/// The virtual host of `svc:port` in the route table of callers in `client_ns`.
fn vhost(m: &Model, client_ns: &str, svc: &str, port: u16) -> VirtualHost {
    let policy = PolicyContext::new(m, &Default::default(), &Excluded::new());
    let out = crate::oracle::outbound_routes(m, &policy, client_ns);
    let Some(Body::Route(rc)) = out.resources.first().map(|r| &r.body) else {
        panic!("no route table")
    };
    let rc: &RouteConfiguration = rc;
    let name = format!("{svc}.shop.svc.cluster.local:{port}");
    rc.virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name}"))
}

fn redirect(v: &VirtualHost, i: usize) -> RedirectAction {
    match &v.routes[i].action {
        Some(Action::Redirect(r)) => r.clone(),
        other => panic!("route {i}: {other:?}"),
    }
}

fn forward(v: &VirtualHost, i: usize) -> RouteAction {
    match &v.routes[i].action {
        Some(Action::Route(r)) => r.clone(),
        other => panic!("route {i}: {other:?}"),
    }
}

const ECHO: &str = "[{group: \"\", kind: Service, name: echo, port: 80}]";
const API: &str = "[{group: \"\", kind: Service, name: api}]";

#[test]
fn a_redirect_answers_with_the_location_the_spec_gives() {
    let rules = "
    - {matches: [{path: {value: /scheme}}], filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]}
    - {matches: [{path: {value: /host-port}}], filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 8083, statusCode: 301}}]}
    - {matches: [{path: {value: /old}}], filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 308}}]}
    - {matches: [{path: {value: /drop}}], filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}, statusCode: 303}}]}
    - {matches: [{path: {value: /full}}], filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}, statusCode: 307}}]}";
    let m = model(&route("shop", "r", ECHO, rules));
    let v = vhost(&m, "shop", "echo", 80);
    // Routes sort by prefix length: /host-port, /scheme, /drop, /full, /old.
    let by_prefix = |p: &str| {
        let i = v
            .routes
            .iter()
            .position(|r| format!("{:?}", r.r#match).contains(&format!("\"{p}\"")))
            .unwrap_or_else(|| panic!("{p}"));
        redirect(&v, i)
    };
    let r = by_prefix("/scheme");
    assert_eq!(
        r.scheme_rewrite_specifier,
        Some(SchemeRewriteSpecifier::SchemeRedirect("https".into()))
    );
    // https on its well-known port: the Location names no port.
    assert_eq!((r.port_redirect, r.response_code), (0, 1));
    let r = by_prefix("/host-port");
    assert_eq!(
        (r.host_redirect.as_str(), r.port_redirect, r.response_code),
        ("example.org", 8083, 0)
    );
    let r = by_prefix("/old");
    assert_eq!(
        (r.path_rewrite_specifier, r.response_code),
        (Some(PathRewriteSpecifier::PrefixRewrite("/new".into())), 4)
    );
    let r = by_prefix("/drop");
    let Some(PathRewriteSpecifier::RegexRewrite(re)) = r.path_rewrite_specifier else {
        panic!("{r:?}")
    };
    assert_eq!(
        (re.pattern.map(|p| p.regex), re.substitution.as_str()),
        (Some("^/drop/*".to_string()), "/")
    );
    assert_eq!(r.response_code, 2);
    let r = by_prefix("/full");
    assert_eq!(
        (r.path_rewrite_specifier, r.response_code),
        (
            Some(PathRewriteSpecifier::PathRedirect("/elsewhere".into())),
            3
        )
    );
}

#[test]
fn a_redirect_names_the_service_port_unless_told_otherwise() {
    let rules = "
    - {matches: [{path: {value: /host}}], filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]}
    - {matches: [{path: {value: /https}}], filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]}
    - {matches: [{path: {value: /p80}}], filters: [{type: RequestRedirect, requestRedirect: {port: 80}}]}";
    let m = model(&route("shop", "r", API, rules));
    let v = vhost(&m, "shop", "api", 8080);
    let ports: Vec<(String, u32)> = (0..3)
        .map(|i| {
            let r = redirect(&v, i);
            (format!("{:?}", v.routes[i].r#match), r.port_redirect)
        })
        .collect();
    // A host alone keeps the port the request named (the Service port); a scheme or a
    // port that differs from the Service port is named, even a well-known one.
    let port_of = |p: &str| {
        ports
            .iter()
            .find(|(m, _)| m.contains(&format!("\"{p}\"")))
            .map(|(_, port)| *port)
    };
    assert_eq!(port_of("/host"), Some(0));
    assert_eq!(port_of("/https"), Some(443));
    assert_eq!(port_of("/p80"), Some(80));
}

#[test]
fn a_rewrite_changes_host_and_path_and_still_forwards() {
    let rules = "
    - {matches: [{path: {value: /prefix/one}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}], backendRefs: [{name: echo-v1, port: 80}]}
    - {matches: [{path: {value: /strip-prefix}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}], backendRefs: [{name: echo-v1, port: 80}]}
    - {matches: [{path: {value: /full}}], filters: [{type: URLRewrite, urlRewrite: {hostname: h.example, path: {type: ReplaceFullPath, replaceFullPath: /test}}}], backendRefs: [{name: echo-v1, port: 80}]}
    - {filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /root/}}}], backendRefs: [{name: echo-v1, port: 80}]}";
    let m = model(&route("shop", "r", ECHO, rules));
    let v = vhost(&m, "shop", "echo", 80);
    // Routes sort by prefix length: /strip-prefix, /prefix/one, /full, /.
    let a = forward(&v, 1);
    assert_eq!(a.prefix_rewrite, "/one");
    assert_eq!(
        a.cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|80||echo-v1.shop.svc.cluster.local".into()
        ))
    );
    let a = forward(&v, 0);
    let re = a.regex_rewrite.expect("strip");
    assert_eq!(
        (re.pattern.map(|p| p.regex), re.substitution.as_str()),
        (Some("^/strip-prefix/*".to_string()), "/")
    );
    let a = forward(&v, 2);
    assert_eq!(
        a.host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral("h.example".into()))
    );
    let re = a.regex_rewrite.expect("full");
    assert_eq!(
        (re.pattern.map(|p| p.regex), re.substitution.as_str()),
        (Some("^.*$".to_string()), "/test")
    );
    // The prefix `/` (no match) gets the replacement before the rest of the path.
    assert_eq!(forward(&v, 3).prefix_rewrite, "/root/");
}

#[test]
fn grpc_clients_get_neither_and_a_diagnostic_names_the_filter() {
    let rules = "
    - {matches: [{path: {value: /moved}}], filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]}
    - {matches: [{path: {value: /re}}], filters: [{type: URLRewrite, urlRewrite: {hostname: h.example}}], backendRefs: [{name: echo-v1, port: 80}]}
    - {backendRefs: [{name: echo-v1, port: 80}]}";
    let m = model(&route("shop", "r", ECHO, rules));
    let policy = PolicyContext::new(&m, &Default::default(), &Excluded::new());
    let out = crate::oracle::translate_grpc(&m, &crate::mesh::MeshConfig::default(), &policy, None);
    let rc = out
        .resources
        .iter()
        .find_map(|r| match &r.body {
            Body::Route(rc) if rc.name == "echo.shop.svc.cluster.local:80" => Some(rc.clone()),
            _ => None,
        })
        .expect("gRPC route");
    let routes = &rc.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 3, "every rule is kept: {routes:?}");
    for r in routes {
        let Some(Action::Route(a)) = &r.action else {
            panic!("gRPC is sent a route action only: {r:?}")
        };
        assert!(a.host_rewrite_specifier.is_none() && a.prefix_rewrite.is_empty());
        assert!(a.regex_rewrite.is_none());
    }
    // The redirect rule's calls fail at once (the void cluster); the rewrite rule's go on.
    let cluster = |i: usize| match &routes[i].action {
        Some(Action::Route(a)) => a.cluster_specifier.clone(),
        _ => None,
    };
    assert_eq!(
        cluster(0),
        Some(ClusterSpecifier::Cluster(
            "rudder-no-backend|echo.shop.svc.cluster.local:80".into()
        ))
    );
    assert_eq!(
        cluster(1),
        Some(ClusterSpecifier::Cluster(
            "outbound|80||echo-v1.shop.svc.cluster.local".into()
        ))
    );
    let said: Vec<(String, String)> = out
        .diagnostics
        .iter()
        .map(|d| (d.field.clone(), d.message.clone()))
        .collect();
    assert!(
        said.iter()
            .any(|(f, m)| f == "spec.rules[0].filters[0].type"
                && m.contains("RequestRedirect is not supported by proxyless gRPC clients")
                && m.contains("UNAVAILABLE")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|(f, m)| f == "spec.rules[1].filters[0].type"
                && m.contains("URLRewrite is not supported by proxyless gRPC clients")),
        "{said:?}"
    );
}

const CONSUMER: &str = "[{group: \"\", kind: Service, name: echo, namespace: shop}]";

#[test]
fn a_consumer_route_changes_only_its_namespaces_callers_and_beats_producer_routes() {
    let producer = route(
        "shop",
        "producer",
        ECHO,
        "[{filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-by, value: producer}]}}], backendRefs: [{name: echo-v1, port: 80}]}]",
    );
    let consumer = route(
        "consumer",
        "mine",
        CONSUMER,
        "[{filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-by, value: consumer}]}}], backendRefs: [{name: echo, namespace: shop, port: 80}]}]",
    );
    let m = model(&format!("{producer}---\n{consumer}"));
    let header = |ns: &str| {
        let v = vhost(&m, ns, "echo", 80);
        assert_eq!(v.routes.len(), 1, "{ns}: {v:?}");
        let r = &v.routes[0];
        let value = r.response_headers_to_add[0]
            .header
            .as_ref()
            .map(|h| h.value.clone());
        (value, forward(&v, 0).cluster_specifier)
    };
    let to = |s: &str| {
        Some(ClusterSpecifier::Cluster(format!(
            "outbound|80||{s}.shop.svc.cluster.local"
        )))
    };
    assert_eq!(header("consumer"), (Some("consumer".into()), to("echo")));
    assert_eq!(header("shop"), (Some("producer".into()), to("echo-v1")));
    assert_eq!(header("other"), (Some("producer".into()), to("echo-v1")));
    // Status: accepted, saying whom it applies to; its backend (the parent) resolves.
    let status = route_status(&m);
    let parents = &status[&ObjectKey::new(Kind::HTTPRoute, "consumer", "mine")].parents;
    let c = &parents[0].1;
    assert_eq!(
        (c[0].status.as_str(), c[0].reason.as_str()),
        ("True", "Accepted")
    );
    assert!(
        c[0].message
            .contains("applies to callers in namespace consumer"),
        "{c:?}"
    );
    assert_eq!(
        (c[1].status.as_str(), c[1].reason.as_str()),
        ("True", "ResolvedRefs")
    );
}

#[test]
fn a_consumer_route_may_send_callers_only_to_the_service_it_routes() {
    let consumer = route(
        "consumer",
        "mine",
        CONSUMER,
        "[{backendRefs: [{name: echo-v1, namespace: shop, port: 80}]}]",
    );
    let m = model(&consumer);
    let status = route_status(&m);
    let c = &status[&ObjectKey::new(Kind::HTTPRoute, "consumer", "mine")].parents[0].1;
    assert_eq!(c[0].reason, "Accepted");
    assert_eq!(
        (c[1].status.as_str(), c[1].reason.as_str()),
        ("False", "RefNotPermitted"),
        "{c:?}"
    );
    // Its callers' share fails (500); other namespaces keep the Service itself.
    let v = vhost(&m, "consumer", "echo", 80);
    assert!(
        matches!(&v.routes[0].action, Some(Action::DirectResponse(d)) if d.status == 500),
        "{v:?}"
    );
    let v = vhost(&m, "shop", "echo", 80);
    assert_eq!(
        forward(&v, 0).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|80||echo.shop.svc.cluster.local".into()
        ))
    );
    // gRPC clients alike: the callers' calls fail (a void cluster), others keep echo.
    assert_eq!(
        grpc_echo_backend(&m, "consumer"),
        Some(ClusterSpecifier::Cluster(
            "rudder-no-backend|echo.shop.svc.cluster.local:80".into()
        ))
    );
    assert_eq!(
        grpc_echo_backend(&m, "shop"),
        Some(ClusterSpecifier::Cluster(
            "outbound|80||echo.shop.svc.cluster.local".into()
        ))
    );
}

#[test]
fn a_consumer_route_of_a_missing_service_has_no_matching_parent() {
    let consumer = route(
        "consumer",
        "mine",
        "[{group: \"\", kind: Service, name: nope, namespace: shop}]",
        "[{backendRefs: [{name: nope, namespace: shop, port: 80}]}]",
    );
    let m = model(&consumer);
    let status = route_status(&m);
    let c = &status[&ObjectKey::new(Kind::HTTPRoute, "consumer", "mine")].parents[0].1;
    assert_eq!(
        (c[0].status.as_str(), c[0].reason.as_str()),
        ("False", "NoMatchingParent")
    );
}

/// The cluster `echo:80`'s single gRPC route sends to, for clients in `client_ns`: from
/// the oracle and from a gRPC view of the incremental builder (which must agree).
fn grpc_echo_backend(m: &Model, client_ns: &str) -> Option<ClusterSpecifier> {
    use prost::Message as _;
    let first_route = |rc: &RouteConfiguration| match &rc.virtual_hosts[0].routes[..] {
        [r] => match &r.action {
            Some(Action::Route(a)) => a.cluster_specifier.clone(),
            other => panic!("{client_ns}: {other:?}"),
        },
        rs => panic!("{client_ns}: one route, got {rs:?}"),
    };
    let name = "echo.shop.svc.cluster.local:80";
    let policy = PolicyContext::new(m, &Default::default(), &Excluded::new());
    let mesh = crate::mesh::MeshConfig::default();
    let out = crate::oracle::translate_grpc(m, &mesh, &policy, Some(client_ns));
    let oracle = out
        .resources
        .iter()
        .find_map(|r| match &r.body {
            Body::Route(rc) if rc.name == name => Some(first_route(rc)),
            _ => None,
        })
        .expect("gRPC route");
    let mut builder = crate::incremental::Builder::new(mesh);
    // The first build translates the whole model.
    builder.update(m, &Default::default(), &Default::default());
    let view = crate::model::ViewKey {
        vhds: false,
        namespace: client_ns.into(),
        egress: crate::model::Egress::All,
        grpc: true,
        variant: None,
    };
    let maps = builder.view(m, &view);
    let rc = RouteConfiguration::decode(maps.routes[name].any.value.as_slice()).expect("decode");
    assert_eq!(first_route(&rc), oracle, "{client_ns}: builder and oracle");
    if let Some(ClusterSpecifier::Cluster(c)) = &oracle {
        assert!(
            maps.clusters.contains_key(c.as_str()),
            "{client_ns}: no {c}"
        );
    }
    oracle
}

#[test]
fn grpc_clients_in_a_consumer_namespace_get_its_route_and_others_the_producers() {
    let producer = route(
        "shop",
        "producer",
        ECHO,
        "[{backendRefs: [{name: echo-v1, port: 80}]}]",
    );
    let consumer = route(
        "consumer",
        "mine",
        CONSUMER,
        "[{backendRefs: [{name: echo, namespace: shop, port: 80}]}]",
    );
    let m = model(&format!("{producer}---\n{consumer}"));
    let to = |s: &str| {
        Some(ClusterSpecifier::Cluster(format!(
            "outbound|80||{s}.shop.svc.cluster.local"
        )))
    };
    assert_eq!(grpc_echo_backend(&m, "consumer"), to("echo"));
    assert_eq!(grpc_echo_backend(&m, "shop"), to("echo-v1"));
    assert_eq!(grpc_echo_backend(&m, "other"), to("echo-v1"));
}
