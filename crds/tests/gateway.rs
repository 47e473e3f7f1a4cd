//! Our HTTPRoute and GRPCRoute subset against the upstream Gateway API v1 shape.
//!
//! The upstream CRD YAML is not copied here (licence and no-copy rule). Instead the
//! manifests below are written by hand in the upstream shape (field names, nesting,
//! enum values), and the limits tested are the ones the upstream schema and CEL rules
//! state: the first value past each limit must be refused, naming the field. Where
//! Rudder deliberately differs, the test says so. Tests named `upstream_gap_*` expect
//! upstream's behaviour where ours does not follow it yet.

use crds::gateway::{GRPCRoute, HTTPRoute, HTTPRouteRule, ParentReference};
use crds::gateway_validate::duration;
use crds::text::clip;
use crds::{BackendRef, FieldError, GRPCRouteSpec, HTTPRouteSpec};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const HTTP_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop}
spec:
  parentRefs:
  - {group: "", kind: Service, namespace: shop, name: reviews, sectionName: http, port: 9080}
  - name: edge
  hostnames: [reviews.shop.example, "*.example.net"]
  rules:
  - name: canary
    matches:
    - path: {type: PathPrefix, value: /api}
      headers:
      - {name: x-canary, value: "yes"}
      - {type: RegularExpression, name: x-user, value: "^tester-[0-9]+$"}
      queryParams: [{type: Exact, name: debug, value: "1"}]
      method: GET
    - path: {type: Exact, value: /healthz}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-route, value: canary}]
        add: [{name: x-trace, value: "on"}]
        remove: [x-internal]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: cache-control, value: no-store}]}
    backendRefs:
    - {group: "", kind: Service, namespace: shop, name: reviews-v2, port: 9080, weight: 90}
    - name: reviews-v1
      port: 9080
      weight: 10
      filters:
      - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-pool, value: stable}]}}
    timeouts: {request: 10s, backendRequest: 2s}
    retry: {codes: [502, 503], attempts: 3, backoff: 100ms}
    sessionPersistence:
      {sessionName: shop, type: Cookie, absoluteTimeout: 1h,
       cookieConfig: {lifetimeType: Permanent}}
  - name: rewrite
    matches: [{path: {type: PathPrefix, value: /v1}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: reviews-shadow, port: 9080}, percent: 10}
    - type: URLRewrite
      urlRewrite:
        hostname: reviews.internal
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}
    - type: ExtensionRef
      extensionRef: {group: filters.example.net, kind: RateLimit, name: slow-down}
    backendRefs: [{name: reviews-v2, port: 9080}]
  - name: moved
    matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        {scheme: https, hostname: reviews.example, port: 443, statusCode: 301,
         path: {type: ReplaceFullPath, replaceFullPath: /new}}
status:
  parents:
  - parentRef:
      {group: "", kind: Service, namespace: shop, name: reviews, sectionName: http, port: 9080}
    controllerName: rudder.dev/mesh
    conditions:
    - type: Accepted
      status: "False"
      reason: UnsupportedValue
      message: "spec.rules[0].backendRefs[1].filters: not supported"
      observedGeneration: 3
      lastTransitionTime: "2025-01-02T03:04:05Z"
    - {type: ResolvedRefs, status: "True", reason: ResolvedRefs, message: resolved}
"#;

const GRPC_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: greeter, port: 50051}]
  hostnames: [greeter.shop.example]
  rules:
  - name: say-hello
    matches:
    - method: {type: Exact, service: helloworld.Greeter, method: SayHello}
      headers:
      - {name: x-tenant, value: blue}
      - {type: RegularExpression, name: x-build, value: "^v[0-9]+$"}
    - method: {type: RegularExpression, service: 'helloworld\..*'}
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-route, value: hello}]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x-debug]}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: greeter-shadow, port: 50051}}}
    - {type: ExtensionRef, extensionRef: {group: filters.example.net, kind: Audit, name: log-all}}
    backendRefs:
    - name: greeter-v2
      namespace: shop
      port: 50051
      weight: 1000000
      filters:
      - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-by, value: v2}]}}
    - {group: "", kind: Service, name: greeter-v1, port: 50051, weight: 0}
    sessionPersistence: {type: Header, sessionName: x-session, idleTimeout: 30m}
status:
  parents:
  - parentRef: {group: "", kind: Service, name: greeter, port: 50051}
    controllerName: rudder.dev/mesh
    conditions:
    - {type: Accepted, status: "True", reason: Accepted, message: ok, observedGeneration: 1}
"#;

/// Each `field => value`: the parsed field holds the value (compared as Debug text).
macro_rules! holds {
    ($($got:expr => $want:expr),* $(,)?) => {
        $(assert_eq!(format!("{:?}", $got), format!("{:?}", $want), "{}", stringify!($got));)*
    };
}

/// Where `got` (our serialization) and `want` (the manifest) differ, by JSON path.
fn diff(path: &str, got: &Value, want: &Value, out: &mut Vec<String>) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for k in g.keys().chain(w.keys().filter(|k| !g.contains_key(*k))) {
                let null = &Value::Null;
                let (a, b) = (g.get(k).unwrap_or(null), w.get(k).unwrap_or(null));
                diff(&format!("{path}.{k}"), a, b, out);
            }
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                diff(&format!("{path}[{i}]"), a, b, out);
            }
        }
        _ if got != want => out.push(format!("{path}: ours {got}, manifest {want}")),
        _ => {}
    }
}

fn assert_round_trip(ours: &impl serde::Serialize, manifest: &str) {
    let want: Value = yaml(manifest);
    let got = serde_json::to_value(ours).expect("serializes");
    let mut out = Vec::new();
    diff("", &got, &want, &mut out);
    assert!(out.is_empty(), "round trip changed:\n{}", out.join("\n"));
}

fn body(v: &Option<Value>) -> Value {
    v.clone().expect("filter body")
}

fn yaml<T: DeserializeOwned>(s: &str) -> T {
    serde_saphyr::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn from<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("deserializes")
}

#[test]
fn http_route_in_upstream_shape_lands_in_our_fields_and_round_trips() {
    let route: HTTPRoute = yaml(HTTP_ROUTE);
    let (s, status) = (&route.spec, route.status.as_ref().expect("status"));
    let (pr, r) = (&s.parent_refs, &s.rules[0]);
    let (m, f, b) = (&r.matches[0], &r.filters, &r.backend_refs);
    let rq = f[0].request_header_modifier.as_ref().expect("body");
    let rs = f[1].response_header_modifier.as_ref().expect("body");
    let t = r.timeouts.as_ref().expect("timeouts");
    let retry = r.retry.as_ref().expect("retry");
    let (other, p) = (&s.rules[1].filters, &status.parents[0]);
    let none = None::<&str>;
    holds! {
        route.metadata.namespace => Some("shop"),
        pr[0].group => Some(""),
        pr[0].kind => Some("Service"),
        pr[0].namespace => Some("shop"),
        pr[0].name => "reviews",
        pr[0].section_name => Some("http"),
        pr[0].port => Some(9080),
        pr[0].is_service() => true,
        // No group and kind: a Gateway.
        (&pr[1].group, &pr[1].kind, pr[1].is_service()) => (none, none, false),
        s.hostnames => ["reviews.shop.example", "*.example.net"],
        s.rules.len() => 3,
        r.name => Some("canary"),
        m.path.as_ref().map(|p| (&p.type_, &p.value)) => Some((Some("PathPrefix"), Some("/api"))),
        (&m.headers[0].type_, &m.headers[0].name, &m.headers[0].value) => (none, "x-canary", "yes"),
        m.headers[1].type_ => Some("RegularExpression"),
        (&m.headers[1].name, &m.headers[1].value) => ("x-user", "^tester-[0-9]+$"),
        m.query_params[0].type_ => Some("Exact"),
        (&m.query_params[0].name, &m.query_params[0].value) => ("debug", "1"),
        m.method => Some("GET"),
        r.matches[1].path.as_ref().map(|p| &p.type_) => Some(Some("Exact")),
        f[0].type_ => "RequestHeaderModifier",
        (&rq.set[0].name, &rq.set[0].value) => ("x-route", "canary"),
        (&rq.add[0].name, &rq.add[0].value) => ("x-trace", "on"),
        rq.remove => ["x-internal"],
        f[1].type_ => "ResponseHeaderModifier",
        (&rs.set[0].name, &rs.set[0].value) => ("cache-control", "no-store"),
        f[1].request_header_modifier => None::<()>,
        (&b[0].group, &b[0].kind, &b[0].namespace) => (Some(""), Some("Service"), Some("shop")),
        (&b[0].name, b[0].port, b[0].weight) => ("reviews-v2", Some(9080), Some(90)),
        (&b[1].group, &b[1].kind, b[1].is_service()) => (none, none, true),
        b[1].filters[0].request_header_modifier.as_ref().map(|h| &h.set[0].value) => Some("stable"),
        (&t.request, &t.backend_request) => (Some("10s"), Some("2s")),
        (&retry.codes, retry.attempts, &retry.backoff) => ([502, 503], Some(3), Some("100ms")),
        body(&r.session_persistence)["cookieConfig"]["lifetimeType"] => json!("Permanent"),
        other[0].request_mirror.as_ref().map(|m| (m.backend_ref.name.as_str(), m.percent))
            => Some(("reviews-shadow", Some(10))),
        other[1].url_rewrite.as_ref().and_then(|r| r.path.as_ref())
            .and_then(|p| p.replace_prefix_match.as_deref()) => Some("/v2"),
        body(&other[2].extension_ref)["kind"] => json!("RateLimit"),
        s.rules[2].filters[0].request_redirect.as_ref().and_then(|r| r.status_code)
            => Some(301),
        p.parent_ref == pr[0] => true,
        p.controller_name => crds::gateway::CONTROLLER_NAME,
        (&p.conditions[0].type_, &p.conditions[0].status) => ("Accepted", "False"),
        p.conditions[0].reason => "UnsupportedValue",
        p.conditions[0].observed_generation => Some(3),
        p.conditions[0].last_transition_time => Some("2025-01-02T03:04:05Z"),
        p.conditions[1].observed_generation => None::<i64>,
    }
    assert_round_trip(&route, HTTP_ROUTE);
    // Valid upstream, but Rudder does not implement session persistence (nor the filter
    // types of the other rules): refused by name, as UnsupportedValue rather than Invalid.
    let e = s.validate().expect_err("unsupported");
    assert_eq!(e.field, "spec.rules[0].sessionPersistence");
    assert!(e.unsupported);
}

#[test]
fn grpc_route_in_upstream_shape_lands_in_our_fields_and_round_trips() {
    let route: GRPCRoute = yaml(GRPC_ROUTE);
    let (s, status) = (&route.spec, route.status.as_ref().expect("status"));
    let (r, p) = (&s.rules[0], &status.parents[0]);
    let (m0, m1) = (&r.matches[0], &r.matches[1]);
    let (f, b) = (&r.filters, &r.backend_refs);
    let types: Vec<&str> = f.iter().map(|f| f.type_.as_str()).collect();
    holds! {
        (s.parent_refs[0].is_service(), s.parent_refs[0].port) => (true, Some(50051)),
        s.hostnames => ["greeter.shop.example"],
        r.name => Some("say-hello"),
        m0.method.as_ref().map(|m| (&m.type_, &m.service, &m.method)) =>
            Some((Some("Exact"), Some("helloworld.Greeter"), Some("SayHello"))),
        (&m0.headers[0].name, &m0.headers[0].value) => ("x-tenant", "blue"),
        m0.headers[1].type_ => Some("RegularExpression"),
        m1.method.as_ref().map(|m| (&m.type_, &m.service, &m.method)) =>
            Some((Some("RegularExpression"), Some(r"helloworld\..*"), None::<()>)),
        types => ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror",
                  "ExtensionRef"],
        f[0].request_header_modifier.as_ref().map(|h| &h.add[0].value) => Some("hello"),
        f[1].response_header_modifier.as_ref().map(|h| &h.remove) => Some(["x-debug"]),
        f[2].request_mirror.as_ref().map(|m| m.backend_ref.port) => Some(Some(50051)),
        body(&f[3].extension_ref)["name"] => json!("log-all"),
        (&b[0].namespace, b[0].weight, b[1].weight) => (Some("shop"), Some(1_000_000), Some(0)),
        b[0].filters[0].type_ => "ResponseHeaderModifier",
        body(&r.session_persistence)["type"] => json!("Header"),
        (&p.controller_name, &p.conditions[0].reason) => ("rudder.dev/mesh", "Accepted"),
    }
    assert_round_trip(&route, GRPC_ROUTE);
    let e = s.validate().expect_err("unsupported");
    assert_eq!(e.field, "spec.rules[0].filters[3].type");
    assert!(e.unsupported);
}

#[test]
fn defaults_follow_upstream() {
    // Upstream defaults an absent `rules` to one rule whose one match is the path prefix
    // `/`; ours is one rule with no matches, which also matches every request.
    let text = "kind: HTTPRoute\nmetadata: {name: a}\nspec: {parentRefs: [{name: a}]}";
    let route: HTTPRoute = yaml(text);
    assert_eq!(route.spec.rules, vec![HTTPRouteRule::default()]);
    assert_eq!(route.spec.validate(), Ok(()));
    // GRPCRoute has no such default upstream.
    let g: GRPCRouteSpec = yaml("{parentRefs: [{name: a}]}");
    assert!(g.rules.is_empty());
    // A path match without type or value is PathPrefix `/`, and what was absent is not
    // written back: Rudder never writes a default the user did not.
    let rules = json!([{"matches": [{"path": {}}]}]);
    let s: HTTPRouteSpec = from(json!({"rules": rules}));
    assert_eq!(s.validate(), Ok(()));
    assert_eq!(serde_json::to_value(&s).expect("json")["rules"], rules);
    // parentRef: group defaults to gateway.networking.k8s.io and kind to Gateway, so a
    // Service parent says `group: ""` (GAMMA implementations also accept `core`).
    let parent = |y| yaml::<ParentReference>(y).is_service();
    let backend = |y| yaml::<BackendRef>(y).is_service();
    holds! {
        parent("{group: '', kind: Service, name: a}") => true,
        parent("{group: core, kind: Service, name: a}") => true,
        parent("{kind: Service, name: a}") => false,
        parent("{group: '', name: a}") => false,
        parent("{name: a}") => false,
        // backendRef: group defaults to "" and kind to Service.
        backend("{name: a}") => true,
        backend("{group: '', name: a}") => true,
        backend("{group: core, kind: Service, name: a}") => true,
        backend("{group: multicluster.x-k8s.io, kind: ServiceImport, name: a}") => false,
    }
    let text = "
        # Only a Service backend needs a port (CEL: Must have port for Service reference).
        {backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: a}]} => ok
        {backendRefs: [{name: a}]} => .backendRefs[0].port
        {backendRefs: [{kind: Service, name: a}]} => .backendRefs[0].port
        # Header matches default to Exact: the value is a literal.
        {matches: [{headers: [{name: x, value: '(a'}]}]} => ok
        {matches: [{headers: [{type: RegularExpression, name: x, value: '(a'}]}]}
            => .matches[0].headers[0].value";
    At::Rule.cases(text);
    let text = "
        # So do gRPC method matches.
        {type: RegularExpression, service: 'hello.*'} => ok
        {service: 'hello.*'} => .service";
    At::GrpcMethod.cases(text);
}

// ---- Cases: `yaml => want` lines, `#` starting a comment. The YAML goes where `At`
// says in an otherwise valid spec, `$(c*N)` standing for `c` N times. Want is `ok`, or
// the field refused after `At`'s prefix (`.` alone: the prefix itself), with a leading
// `!` when refused as unsupported (status reason UnsupportedValue, not Invalid). ----

/// Where a case goes: the whole spec, or one item (the first) of a valid route.
#[derive(Clone, Copy)]
enum At {
    Spec,
    Parent,
    Rule,
    Match,
    RequestHeaders,
    GrpcSpec,
    GrpcRule,
    GrpcMethod,
}

impl At {
    fn prefix(self) -> &'static str {
        match self {
            At::Spec | At::GrpcSpec => "spec",
            At::Parent => "spec.parentRefs[0]",
            At::Rule | At::GrpcRule => "spec.rules[0]",
            At::Match => "spec.rules[0].matches[0]",
            At::RequestHeaders => "spec.rules[0].filters[0].requestHeaderModifier",
            At::GrpcMethod => "spec.rules[0].matches[0].method",
        }
    }

    fn check(self, v: Value) -> Result<(), FieldError> {
        let http = |s| from::<HTTPRouteSpec>(s).validate();
        let grpc = |s| from::<GRPCRouteSpec>(s).validate();
        let parent = json!({"group": "", "kind": "Service", "name": "a"});
        let backend = json!([{"name": "b", "port": 80}]);
        let rule = |mut r: Value| {
            if r.get("backendRefs").is_none() {
                r["backendRefs"] = backend.clone();
            }
            json!({"parentRefs": [parent], "rules": [r]})
        };
        let header_filter = json!({"type": "RequestHeaderModifier", "requestHeaderModifier": v});
        match self {
            At::Spec => http(v),
            At::Parent => http(json!({"parentRefs": [v]})),
            At::Rule => http(rule(v)),
            At::Match => http(rule(json!({"matches": [v]}))),
            At::RequestHeaders => http(rule(json!({"filters": [header_filter]}))),
            At::GrpcSpec => grpc(v),
            At::GrpcRule => grpc(rule(v)),
            At::GrpcMethod => grpc(rule(json!({"matches": [{"method": v}]}))),
        }
    }

    #[track_caller]
    fn expect(self, case: Value, want: &str) {
        let (unsupported, rel) = want.strip_prefix('!').map_or((false, want), |w| (true, w));
        let at = if rel == "." { "" } else { rel };
        let field = format!("{}{at}", self.prefix());
        let what = clip(&case.to_string(), 160);
        match self.check(case) {
            Ok(()) if rel == "ok" => {}
            Ok(()) => panic!("accepted {what}; upstream refuses it ({field})"),
            Err(e) if rel == "ok" => panic!("refused {what}, which upstream allows: {e}"),
            Err(e) => {
                let got = (e.field.as_str(), e.unsupported);
                assert_eq!(got, (field.as_str(), unsupported), "{what}: {e}");
            }
        }
    }

    /// Runs the cases in `text`; a line after one ending in `,`, or starting with `=>`,
    /// continues it.
    #[track_caller]
    fn cases(self, text: &str) {
        let mut all: Vec<String> = Vec::new();
        for line in text.lines().map(str::trim) {
            match all.last_mut() {
                _ if line.is_empty() || line.starts_with('#') => {}
                Some(last) if last.ends_with(',') || line.starts_with("=>") => {
                    *last = format!("{last} {line}");
                }
                _ => all.push(line.to_string()),
            }
        }
        for line in all {
            let (case, want) = line.rsplit_once(" => ").expect(&line);
            let case = expand(case.trim());
            self.expect(yaml(&case), want.trim());
        }
    }
}

fn expand(s: &str) -> String {
    let (mut out, mut rest) = (String::new(), s);
    while let Some(i) = rest.find("$(") {
        let end = i + rest[i..].find(')').expect("$(c*N)");
        let (c, k) = rest[i + 2..end].split_once('*').expect("$(c*N)");
        out = out + &rest[..i] + &c.repeat(k.parse().expect("N"));
        rest = &rest[end + 1..];
    }
    out + rest
}

/// `{key: [item, ...]}` with `count` items; `$i` in `item` becomes the index.
fn list(key: &str, count: usize, item: &str) -> Value {
    let items = (0..count).map(|i| yaml::<Value>(&item.replace("$i", &i.to_string())));
    json!({ key: items.collect::<Value>() })
}

#[test]
fn list_limits_are_upstreams() {
    let header = "{name: h$i, value: v}";
    let limits = [
        (At::Spec, "parentRefs", 32, "{name: p$i}"),
        (At::Spec, "hostnames", 16, "h$i.example"),
        (At::Spec, "rules", 16, "{}"),
        (At::Rule, "matches", 64, "{path: {value: /}}"),
        (At::Rule, "backendRefs", 16, "{name: b, port: 80}"),
        (At::Match, "headers", 16, header),
        (At::Match, "queryParams", 16, header),
        (At::RequestHeaders, "set", 16, header),
        (At::RequestHeaders, "add", 16, header),
        (At::RequestHeaders, "remove", 16, "h$i"),
        (At::GrpcSpec, "rules", 16, "{}"),
    ];
    for (at, key, max, item) in limits {
        at.expect(list(key, max, item), "ok");
        at.expect(list(key, max + 1, item), &format!(".{key}"));
    }
    let grpc_headers = json!({"matches": [list("headers", 17, header)]});
    At::GrpcRule.expect(grpc_headers, ".matches[0].headers");
    // Filters: at most 16 (and no type twice, so 17 valid ones are ExtensionRefs).
    let ext = "{type: ExtensionRef, extensionRef: {group: g, kind: K, name: e$i}}";
    At::Rule.expect(list("filters", 17, ext), ".filters");
    // At most 128 matches in all the rules.
    let rules = |counts: &[usize]| {
        let r = |k: &usize| list("matches", *k, "{path: {value: /}}");
        json!({"rules": counts.iter().map(r).collect::<Value>()})
    };
    At::Spec.expect(rules(&[64, 64]), "ok");
    At::Spec.expect(rules(&[64, 63, 2]), ".rules");
}

#[test]
fn value_limits_are_upstreams() {
    let text = "
        {group: '', kind: Service, name: a, port: 65535} => ok
        {name: a, port: 1} => ok
        {name: $(a*253)} => ok
        {name: a, port: 0} => .port
        {name: a, port: 65536} => .port
        {name: ''} => .name
        {name: $(a*254)} => .name";
    At::Parent.cases(text);
    let text = "
        {backendRefs: [{name: b, port: 1, weight: 0}]} => ok
        {backendRefs: [{name: $(b*253), port: 65535, weight: 1000000}]} => ok
        {backendRefs: [{name: b, port: 80, weight: 1000001}]} => .backendRefs[0].weight
        {backendRefs: [{name: b, port: 80, weight: -1}]} => .backendRefs[0].weight
        {backendRefs: [{name: b, port: 0}]} => .backendRefs[0].port
        {backendRefs: [{name: b, port: 65536}]} => .backendRefs[0].port
        {backendRefs: [{name: $(b*254), port: 80}]} => .backendRefs[0].name";
    At::Rule.cases(text);
    let text = r#"
        # Header and query parameter names: 1 to 256 HTTP token characters.
        {headers: [{name: $(x*256), value: $(v*4096)}]} => ok
        {headers: [{name: "A0!#$%&'*+-.^_`|~", value: v}]} => ok
        {headers: [{name: $(x*257), value: v}]} => .headers[0].name
        {headers: [{name: ':authority', value: v}]} => .headers[0].name
        {headers: [{name: 'x y', value: v}]} => .headers[0].name
        {headers: [{name: x/y, value: v}]} => .headers[0].name
        {headers: [{name: é, value: v}]} => .headers[0].name
        {headers: [{name: '', value: v}]} => .headers[0].name
        {headers: [{name: x, value: $(v*4097)}]} => .headers[0].value
        {headers: [{name: x, value: ''}]} => .headers[0].value
        {headers: [{type: Prefix, name: x, value: v}]} => .headers[0].type
        {queryParams: [{name: q, value: $(v*1024)}]} => ok
        {queryParams: [{type: RegularExpression, name: q, value: '^a+$'}]} => ok
        {queryParams: [{name: q, value: $(v*1025)}]} => .queryParams[0].value
        {queryParams: [{type: Prefix, name: q, value: v}]} => .queryParams[0].type
        # A name twice: refused exactly (a list-map key); names differing in case are
        # allowed (the later one is ignored).
        {headers: [{name: x-a, value: '1'}, {name: x-a, value: '2'}]} => .headers[1].name
        {queryParams: [{name: q, value: '1'}, {name: q, value: '2'}]} => .queryParams[1].name
        {headers: [{name: X-A, value: '1'}, {name: x-a, value: '2'}]} => ok
        # Methods: the upstream enum (below), in upper case.
        {method: get} => .method
        {method: PURGE} => .method
        {method: '*'} => .method
        {path: {type: RegularExpression, value: '^/v[0-9]+/.*$'}} => ok
        {path: {type: RegularExpression, value: '('}} => .path.value
        {path: {type: Prefix, value: /}} => .path.type"#;
    At::Match.cases(text);
    for m in "GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH".split(' ') {
        At::Match.expect(json!({"method": m}), "ok");
    }
    // Exact and PathPrefix values: absolute, at most 1024 characters, without `//`,
    // `/./`, `/../`, `%2f`, `%2F`, `#`, or a trailing `/.` or `/..`.
    let paths = r#"
        {path: {type: TYPE, value: /$(a*1023)}} => ok
        {path: {type: TYPE, value: "/a.b/~c/%2e/x:y@z;w=1,2+3*4$5&6!7'8(9)"}} => ok
        {path: {type: TYPE, value: /$(a*1024)}} => .path.value
        {path: {type: TYPE, value: ''}} => .path.value
        {path: {type: TYPE, value: a/b}} => .path.value
        {path: {type: TYPE, value: //}} => .path.value
        {path: {type: TYPE, value: /a//b}} => .path.value
        {path: {type: TYPE, value: /a/./b}} => .path.value
        {path: {type: TYPE, value: /a/../b}} => .path.value
        {path: {type: TYPE, value: /a%2fb}} => .path.value
        {path: {type: TYPE, value: /a%2Fb}} => .path.value
        {path: {type: TYPE, value: '/a#b'}} => .path.value
        {path: {type: TYPE, value: /a/..}} => .path.value
        {path: {type: TYPE, value: /a/.}} => .path.value
        {path: {type: TYPE, value: /a?b}} => .path.value
        {path: {type: TYPE, value: '/a b'}} => .path.value"#;
    for t in ["Exact", "PathPrefix"] {
        At::Match.cases(&paths.replace("TYPE", t));
    }
}

#[test]
fn durations_are_gep_2257() {
    // `^([0-9]{1,5}(h|m|s|ms)){1,4}$`
    for d in "0s 1ms 99999ms 99999s 99999h 1h30m 1h1m1s1ms 00010s 1m1m".split(' ') {
        assert!(duration(d, "f").is_ok(), "{d} is a Gateway API duration");
    }
    for d in "|100000ms|1.5s|1h1m1s1ms1h|1d|-1s|1|s|ms| 1s|1S|1us|1m30".split('|') {
        assert_eq!(duration(d, "f").expect_err(d).field, "f", "{d:?}");
    }
    let text = "
        {timeouts: {request: 10s, backendRequest: 10s}} => ok
        {timeouts: {request: 0s, backendRequest: 1h}} => ok
        {timeouts: {request: 1m, backendRequest: 0s}} => ok
        {timeouts: {request: 10s, backendRequest: 10001ms}} => .timeouts.backendRequest
        {timeouts: {request: 1.5s}} => .timeouts.request
        {timeouts: {backendRequest: 100000ms}} => .timeouts.backendRequest
        # Experimental `retry`: codes 400 to 599, backoff a duration.
        {retry: {codes: [400, 500, 599], attempts: 0, backoff: 100ms}} => ok
        {retry: {codes: [500, 399]}} => .retry.codes[1]
        {retry: {codes: [600]}} => .retry.codes[0]
        {retry: {backoff: 1.5s}} => .retry.backoff
        # Deliberate: upstream bounds neither; Rudder sends at most 10 retries (as
        # RetryPolicy's numRetries) and Envoy needs a backoff above zero.
        {retry: {attempts: 10}} => ok
        {retry: {attempts: 11}} => !.retry.attempts
        {retry: {backoff: 0s}} => !.retry.backoff";
    At::Rule.cases(text);
}

#[test]
fn filters_follow_upstream_cel_and_rudder_refuses_what_it_does_not_implement() {
    let text = "
        {filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x]}}]} => ok
        # A header modifier at most once (CEL); a filter with the body its type names (CEL).
        {filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x]}},
                   {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x-b]}}]}
            => .filters[1].type
        {filters: [{type: RequestHeaderModifier}]} => .filters[0]
        {filters: [{type: ResponseHeaderModifier, requestHeaderModifier: {}}]} => .filters[0]
        # Deliberate: Envoy refuses a route that modifies the Host header (requests and
        # responses alike); upstream allows it.
        {filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [host]}}]}
            => !.filters[0].requestHeaderModifier
        {filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [Host]}}]}
            => !.filters[0].responseHeaderModifier
        # Mirrors: a Service port, all requests or a share of them; may repeat.
        {filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}}},
                   {type: RequestMirror, requestMirror: {backendRef: {name: m2, port: 80}, percent: 100}}]}
            => ok
        {filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, fraction: {numerator: 1, denominator: 3}}}]}
            => ok
        {filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}}}]}
            => .filters[0].requestMirror.backendRef.port
        {filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 101}}]}
            => .filters[0].requestMirror.percent
        {filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, fraction: {numerator: 4, denominator: 3}}}]}
            => .filters[0].requestMirror.fraction.numerator
        {filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 1, fraction: {numerator: 1}}}]}
            => .filters[0].requestMirror
        # A header modified both by the rule and by a backend is refused (Envoy would
        # silently apply the rule's last); so are two references to one backend when
        # either has filters (they merge into one weighted cluster).
        {filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: r}]}}],
         backendRefs: [{name: b, port: 80, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [x-a]}}]}]}
            => .backendRefs[0].filters
        {filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-a, value: r}]}}],
         backendRefs: [{name: b, port: 80, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [x-a]}}]}]}
            => ok
        {backendRefs: [{name: b, port: 80}, {name: b, port: 80, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [x-a]}}]}]}
            => .backendRefs[1]
        {backendRefs: [{name: b, port: 80, weight: 2}, {name: b, port: 80}]} => ok
        # Per-backend header filters are implemented; other per-backend filters are not.
        {backendRefs: [{name: b, port: 80, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: v}]}}]}]}
            => ok
        {backendRefs: [{name: b, port: 80, filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}}}]}]}
            => !.backendRefs[0].filters[0].type
        # Valid upstream (core, extended, experimental) but not implemented: refused by name.
        {filters: [{type: ExtensionRef, extensionRef: {group: g, kind: K, name: e}}]}
            => !.filters[0].type
        {filters: [{type: CORS, cors: {allowOrigins: ['*']}}]} => !.filters[0].type
        {filters: [{type: ExternalAuth, externalAuth: {protocol: HTTP, http: {}}}]}
            => !.filters[0].type
        {backendRefs: [{name: b, port: 80, filters: [{type: ExtensionRef}]}]}
            => !.backendRefs[0].filters[0].type
        {sessionPersistence: {type: Cookie}} => !.sessionPersistence";
    At::Rule.cases(text);
    let text = "
        {set: [{name: x-a, value: '1'}], add: [{name: x-b, value: '2'}], remove: [x-c]} => ok
        # One action per header name, names compared case-insensitively.
        {set: [{name: X-A, value: '1'}], add: [{name: x-a, value: '2'}]} => .add[0].name
        {remove: ['x y']} => .remove[0]
        {set: [{name: x, value: ''}]} => .set[0].value
        {set: [{name: Host, value: h}]} => !.
        {add: [{name: host, value: h}]} => !.";
    At::RequestHeaders.cases(text);
}

#[test]
fn redirects_and_rewrites_follow_upstream_schema_and_cel() {
    let text = "
        {backendRefs: [], filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]} => ok
        {backendRefs: [], filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 8083, statusCode: 308}}]} => ok
        {filters: [{type: URLRewrite, urlRewrite: {hostname: h}}]} => ok
        {matches: [{path: {type: PathPrefix, value: /a}}],
         filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]} => ok
        # No matches is the default PathPrefix / match.
        {backendRefs: [], filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]} => ok
        # A redirect answers the request: no backendRefs (CEL).
        {filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]} => .backendRefs
        # Each at most once, and not both in one rule (CEL).
        {backendRefs: [], filters: [{type: RequestRedirect, requestRedirect: {scheme: https}},
                                     {type: RequestRedirect, requestRedirect: {port: 81}}]} => .filters[1].type
        {backendRefs: [], filters: [{type: RequestRedirect, requestRedirect: {scheme: https}},
                                     {type: URLRewrite, urlRewrite: {hostname: h}}]} => .filters
        {filters: [{type: URLRewrite, urlRewrite: {hostname: a}}, {type: URLRewrite, urlRewrite: {hostname: b}}]} => .filters[1].type
        # ReplacePrefixMatch needs exactly one PathPrefix match (CEL).
        {matches: [{path: {type: Exact, value: /a}}],
         filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]} => .filters[0].urlRewrite.path
        {matches: [{path: {value: /a}}, {path: {value: /c}}], backendRefs: [],
         filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}
            => .filters[0].requestRedirect.path
        {matches: [{path: {type: Exact, value: /a}}],
         filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /b}}}]} => ok
        # The body: scheme, host name, port, status code, path modifier with its value.
        {backendRefs: [], filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]} => .filters[0].requestRedirect.scheme
        {backendRefs: [], filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]} => .filters[0].requestRedirect.statusCode
        {backendRefs: [], filters: [{type: RequestRedirect, requestRedirect: {port: 0}}]} => .filters[0].requestRedirect.port
        {backendRefs: [], filters: [{type: RequestRedirect, requestRedirect: {hostname: '*.example.org'}}]} => .filters[0].requestRedirect.hostname
        {filters: [{type: URLRewrite, urlRewrite: {hostname: Upper.Example}}]} => .filters[0].urlRewrite.hostname
        {filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]} => .filters[0].urlRewrite.path.replaceFullPath
        {filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /a, replacePrefixMatch: /b}}}]}
            => .filters[0].urlRewrite.path.replacePrefixMatch
        {filters: [{type: URLRewrite, urlRewrite: {path: {type: Replace, replaceFullPath: /a}}}]} => .filters[0].urlRewrite.path.type
        {filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /$(a*1024)}}}]} => .filters[0].urlRewrite.path.replaceFullPath
        {filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: 'a b'}}}]} => .filters[0].urlRewrite.path.replaceFullPath
        # Not on backends, and not on GRPCRoute (upstream defines neither there).
        {backendRefs: [{name: b, port: 80, filters: [{type: URLRewrite, urlRewrite: {hostname: h}}]}]} => !.backendRefs[0].filters[0].type";
    At::Rule.cases(text);
    At::GrpcRule
        .cases("{filters: [{type: URLRewrite, urlRewrite: {hostname: h}}]} => .filters[0].type");
}

#[test]
fn grpc_method_matches_are_upstreams() {
    let text = "
        {service: helloworld.Greeter, method: SayHello} => ok
        {service: .pkg_1.Svc_2} => ok
        {method: _Say2} => ok
        {service: $(a*1024)} => ok
        # One or both of service and method (CEL); Exact names (CEL patterns).
        {} => .
        {type: RegularExpression} => .
        {service: $(a*1025)} => .service
        {service: ''} => .service
        {service: foo/bar} => .service
        {service: 1pkg.Svc} => .service
        {service: pkg..Svc} => .service
        {service: pkg.} => .service
        {service: a.b-c} => .service
        {method: ''} => .method
        {method: Say.Hello} => .method
        {method: 1Say} => .method
        {type: Prefix, service: a} => .type
        {type: RegularExpression, method: '('} => .method";
    At::GrpcMethod.cases(text);
    let text = "
        {matches: [{headers: [{name: x, value: $(v*4096)}]}]} => ok
        {matches: [{headers: [{name: ':path', value: v}]}]} => .matches[0].headers[0].name
        {sessionPersistence: {type: Header}} => !.sessionPersistence";
    At::GrpcRule.cases(text);
}

// ---- Upstream rules found missing by writing these tests (now enforced) ----

#[test]
fn upstream_grpc_route_allows_at_most_8_matches_per_rule() {
    // Upstream GRPCRouteRule.matches has maxItems 8 (HTTPRouteRule's has 64).
    let m = "{method: {service: a.B}}";
    At::GrpcRule.expect(list("matches", 8, m), "ok");
    At::GrpcRule.expect(list("matches", 9, m), ".matches");
}

#[test]
fn upstream_http_route_rules_if_given_are_at_least_one() {
    // Upstream HTTPRouteSpec.rules has minItems 1 (only an absent list is defaulted).
    At::Spec.cases("{parentRefs: [{name: a}], rules: []} => .rules");
}

#[test]
fn upstream_parent_refs_to_one_parent_need_distinct_section_names() {
    // Upstream CEL on parentRefs: references to the same parent must all set
    // sectionName (or, experimental, port), each to a different value.
    let text = "
        {parentRefs: [{name: a, sectionName: http}, {name: a, sectionName: grpc}]} => ok
        {parentRefs: [{name: a}, {name: a}]} => .parentRefs
        {parentRefs: [{name: a, sectionName: http}, {name: a}]} => .parentRefs
        {parentRefs: [{name: a, sectionName: http}, {name: a, sectionName: http}]} => .parentRefs";
    At::Spec.cases(text);
}

#[test]
fn upstream_names_follow_upstream_patterns() {
    // Hostnames: lower-case DNS names, optionally `*.` first; rule names and
    // sectionNames are DNS subdomains, namespaces DNS labels; kinds start with a letter.
    let text = "
        {hostnames: ['*.example.com', a-1.example]} => ok
        {hostnames: [Reviews.example]} => .hostnames[0]
        {hostnames: [foo_bar.example]} => .hostnames[0]
        {hostnames: ['*']} => .hostnames[0]
        {hostnames: [-a.example]} => .hostnames[0]
        {parentRefs: [{name: a, sectionName: http/2}]} => .parentRefs[0].sectionName
        {parentRefs: [{name: a, namespace: Shop.prod}]} => .parentRefs[0].namespace
        {parentRefs: [{name: a, kind: bad/kind}]} => .parentRefs[0].kind
        {rules: [{name: Canary Rule}]} => .rules[0].name";
    At::Spec.cases(text);
    let ns = "{backendRefs: [{name: b, namespace: Shop, port: 80}]} => .backendRefs[0].namespace";
    At::Rule.cases(ns);
}

#[test]
fn upstream_path_values_use_only_upstream_characters() {
    // Upstream CEL for Exact and PathPrefix values:
    // `^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$`.
    let text = r#"
        {path: {value: /caf%C3%A9}} => ok
        {path: {value: /a%zz}} => .path.value
        {path: {value: /a%}} => .path.value
        {path: {value: /a<b}} => .path.value
        {path: {value: '/a"b'}} => .path.value
        {path: {value: /café}} => .path.value
        {path: {value: '/a\b'}} => .path.value
        {path: {value: '/a{b}'}} => .path.value
        {path: {value: '/a|b'}} => .path.value"#;
    At::Match.cases(text);
}

#[test]
fn upstream_header_filter_allows_one_action_per_header() {
    // Upstream HTTPHeaderFilter: "Only one action for a given header name is
    // permitted", and `remove` is a set (no duplicates).
    let text = "
        {set: [{name: x-a, value: '1'}], remove: [x-a]} => .remove[0]
        {remove: [x-a, x-a]} => .remove[1]";
    At::RequestHeaders.cases(text);
    // A filter carries only the body its type names (CEL: filter.responseHeaderModifier
    // must be nil if the filter.type is not ResponseHeaderModifier).
    let both = "{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [x]},
        responseHeaderModifier: {remove: [x-b]}}]} => .filters[0].responseHeaderModifier";
    At::Rule.cases(both);
}
