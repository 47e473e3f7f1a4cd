//! Envoy's limits as validation rules. Objects at the edge of what the model accepts
//! (weights summing to exactly u32::MAX, 10,000-year durations, a regex of exactly 100
//! RE2 instructions, nested splits) are translated and the result is checked by Envoy
//! itself (`envoy --mode validate` on a bootstrap holding the translated listeners,
//! routes and clusters as static resources): config made from valid objects is never
//! rejected. One step past each limit, the model refuses the object and names the field.
#![allow(
    clippy::disallowed_methods,
    reason = "dump switches for investigating a failure"
)]

use std::path::Path;

use serde_json::{Value, json};
use translator::identity::{DEFAULT_OUTBOUND_PORT, ProxyIdentity, ProxyKind};
use translator::model::{ManifestError, Model, parse_manifest};
use translator::policy::PolicyContext;
use translator::{MeshConfig, outbound_routes, translate_mesh, translate_proxy};
use xds_types::XdsType;

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80}}, {{name: grpc, port: 9090}}]\n---\n"
    )
}

/// Everything at the limit.
fn boundary() -> String {
    let mut y: String = [
        "api", "a", "b", "c", "d", "primary", "canary", "blue", "green",
    ]
    .iter()
    .map(|s| service(s))
    .collect();
    let path_re = format!("/{}", "p".repeat(95)); // 96 bytes: 100 RE2 instructions
    let header = "h".repeat(256);
    y.push_str(&format!(
        r#"apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {{name: edge, namespace: shop}}
spec:
  matches:
    - name: long
      pathRegex: "{path_re}"
      headers: {{{header}: "[^/]+/[à-ÿ]+(?i:x)[[:alpha:]]{{0,3}}"}}
    - {{name: any, methods: ["*"], pathRegex: "/v[0-9]+/[a-z0-9-]+(/.*)?"}}
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: max-weights, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}}
spec:
  service: api
  backends:
    - {{service: a, weight: 4294967294}}
    - {{service: b, weight: 1}}
    - {{service: c, weight: 0}}
  matches: [{{kind: HTTPRouteGroup, name: edge}}]
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: one-backend, namespace: shop}}
spec:
  service: c
  backends: [{{service: d, weight: 4294967295}}]
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: apex, namespace: shop}}
spec:
  service: canary
  backends: [{{service: primary, weight: 4294967290}}, {{service: blue, weight: 5}}]
---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: primary, namespace: shop}}
spec:
  service: primary
  backends: [{{service: blue, weight: 1}}, {{service: green, weight: 4294967294}}]
---
apiVersion: policy.rudder.dev/v1alpha1
kind: RetryPolicy
metadata: {{name: longest, namespace: shop}}
spec:
  targetRef: {{kind: Service, name: api}}
  retryOn: [5xx, reset, connect-failure, retriable-4xx, gateway-error, "503"]
  numRetries: 10
  perTryTimeout: 9223372035s
  timeout: 9223372035s
  backoff: {{baseInterval: 1ms, maxInterval: 9223372035s}}
  budget: {{retryPercent: 100, minRetryConcurrency: 4294967295}}
---
apiVersion: policy.rudder.dev/v1alpha1
kind: RetryPolicy
metadata: {{name: grpc-edge, namespace: shop}}
spec:
  targetRef: {{kind: Service, name: api, port: 9090}}
  retryOn: [unavailable, cancelled, deadline-exceeded, internal, resource-exhausted]
  numRetries: 0
  perTryTimeout: 1.5ms
  timeout: 1.5ms
  backoff: {{baseInterval: 1.5ms, maxInterval: 1.5ms}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: shop, labels: {{app: api}}}}
spec:
  containers: [{{name: app, ports: [{{name: http, containerPort: 80}}]}}]
status: {{podIP: 10.0.0.1}}
---
"#
    ));
    y
}

fn load(yaml: &str) -> Model {
    let mut m = Model::new();
    for o in parse_manifest(yaml).expect("parses").objects {
        m.apply(&o)
            .unwrap_or_else(|e| panic!("the model refuses a boundary object: {e}"));
    }
    m
}

/// A bootstrap holding what `model` translates to for the client pod: listeners with
/// their routes inlined, every cluster, and an ADS source for endpoints and secrets.
fn bootstrap(model: &Model) -> Value {
    bootstrap_as(model, "client", false)
}

/// The same for pod `pod` of namespace shop, intercepted (injected) or not.
fn bootstrap_as(model: &Model, pod: &str, intercepted: bool) -> Value {
    let mesh = MeshConfig::default();
    let policy = PolicyContext::new(model, &Default::default(), &Default::default());
    let proxy = ProxyIdentity {
        vhds: false,
        node_id: format!("{pod}.shop"),
        kind: ProxyKind::Envoy,
        namespace: "shop".into(),
        pod: pod.into(),
        service_account: "default".into(),
        pod_ip: None,
        outbound_port: DEFAULT_OUTBOUND_PORT,
        app_address: "127.0.0.1".parse().expect("ip"),
        intercepted,
        inbound_port: translator::identity::DEFAULT_INBOUND_PORT,
    };
    let mut resources = translate_mesh(model, &mesh, &policy).resources;
    resources.extend(outbound_routes(model, &policy, "shop").resources);
    resources.extend(translate_proxy(model, &mesh, &proxy).resources);
    let as_json = |r: &translator::Resource| {
        let mut v = translator::json::any_to_json(&r.body.to_any()).expect("renders");
        if let Some(o) = v.as_object_mut() {
            o.remove("@type");
        }
        v
    };
    let routes: serde_json::Map<String, Value> = resources
        .iter()
        .filter(|r| r.kind == XdsType::Route)
        .map(|r| (r.name.clone(), as_json(r)))
        .collect();
    assert!(!routes.is_empty(), "routes were translated");
    let mut listeners: Vec<Value> = resources
        .iter()
        .filter(|r| r.kind == XdsType::Listener)
        .map(as_json)
        .collect();
    let mut inlined = 0;
    for l in &mut listeners {
        inline_routes(l, &routes, &mut inlined);
    }
    assert!(
        inlined > 0 || intercepted,
        "the outbound listener's routes were inlined"
    );
    let mut clusters: Vec<Value> = resources
        .iter()
        .filter(|r| r.kind == XdsType::Cluster)
        .map(as_json)
        .map(original_dst_without_tls)
        .collect();
    clusters.push(json!({
        "name": "xds", "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]}
    }));
    json!({
        "node": {"id": "client.shop", "cluster": "client"},
        "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

/// Replaces every `rds` reference under `v` with the route configuration it names.
fn inline_routes(v: &mut Value, routes: &serde_json::Map<String, Value>, n: &mut usize) {
    match v {
        Value::Object(o) => {
            if let Some(name) = o
                .get("rds")
                .and_then(|r| {
                    r.get("route_config_name")
                        .or_else(|| r.get("routeConfigName"))
                })
                .and_then(Value::as_str)
            {
                let route = routes
                    .get(name)
                    .unwrap_or_else(|| panic!("route {name} was not translated"))
                    .clone();
                o.remove("rds");
                // Delivered by RDS, a route table's clusters are not validated (Envoy's
                // default); inlined, they would be.
                let mut route = route;
                route["validate_clusters"] = json!(false);
                o.insert("route_config".into(), route);
                *n += 1;
            }
            for (_, x) in o.iter_mut() {
                inline_routes(x, routes, n);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| inline_routes(x, routes, n)),
        _ => {}
    }
}

/// The pod-address cluster (ORIGINAL_DST, mTLS) without its transport socket:
/// `envoy --mode validate` crashes on any non-EDS cluster whose TLS context takes secrets
/// over ADS (see [`static_tls_as_eds`]); its socket has the shape every EDS cluster's has
/// (validated there), and a running Envoy takes it whole (`tests/addresses.rs`).
fn original_dst_without_tls(mut c: Value) -> Value {
    if c["type"] == "ORIGINAL_DST"
        && let Some(o) = c.as_object_mut()
    {
        o.remove("transportSocket");
    }
    c
}

/// Turns STATIC clusters with a TLS transport socket into EDS clusters, every other
/// field as translated: `envoy --mode validate` crashes (SIGSEGV) on a STATIC cluster whose
/// TLS context takes secrets over ADS, which a running Envoy accepts. Returns how many.
fn static_tls_as_eds(boot: &mut Value) -> usize {
    let mut converted = 0;
    for c in boot["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
    {
        if c["type"] == "STATIC" && c.get("transportSocket").is_some() {
            c["type"] = json!("EDS");
            c["edsClusterConfig"] = json!({"edsConfig": {"ads": {}, "resourceApiVersion": "V3"}});
            if let Some(o) = c.as_object_mut() {
                o.remove("loadAssignment");
            }
            converted += 1;
        }
    }
    converted
}

/// Envoy's verdict on a bootstrap: Ok, or its error.
fn envoy_validate(dir: &Path, name: &str, boot: &Value) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(boot).expect("json")).expect("write");
    let envoy = testbed::procs::envoy_binary().expect("Envoy is installed (scripts/setup.sh)");
    let out = std::process::Command::new(envoy)
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(&path)
        .output()
        .expect("runs envoy");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(())
    } else {
        Err(text)
    }
}

#[test]
fn config_from_objects_at_every_limit_is_accepted_by_envoy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = load(&boundary());
    let boot = bootstrap(&model);
    let text = boot.to_string();
    // The boundary values made it into the config (not defaulted away).
    for needle in [
        "4294967294",
        "9223372035s",
        &"p".repeat(95),
        "\"numRetries\":10",
    ] {
        assert!(
            text.contains(needle),
            "{needle} is in the translated config"
        );
    }
    // The nested split was composed: canary routes to blue and green directly.
    assert!(text.contains("outbound|80||green.shop"), "{}", &text[..200]);
    if let Some(p) = std::env::var_os("DUMP_BOUNDARY") {
        std::fs::write(p, serde_json::to_vec_pretty(&boot).expect("json")).expect("dump");
    }
    if let Err(e) = envoy_validate(dir.path(), "boundary.json", &boot) {
        panic!("Envoy rejects config made from valid objects (a translator bug):\n{e}");
    }

    // The harness can fail: one weight past the sum limit in the same config is
    // rejected by Envoy.
    let mut bad = boot.clone();
    let mut bumped = false;
    bump_weight(&mut bad, &mut bumped);
    assert!(bumped, "a weighted cluster was found to break");
    let e = envoy_validate(dir.path(), "over.json", &bad).expect_err("Envoy rejects it");
    assert!(e.contains("weight"), "{e}");
}

/// Sets the first weight of a pair of weighted clusters to u32::MAX.
fn bump_weight(v: &mut Value, done: &mut bool) {
    if *done {
        return;
    }
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(cs)) = o.get_mut("clusters")
                && cs.len() > 1
                && cs[0].get("weight").is_some()
            {
                cs[0]["weight"] = json!(u32::MAX);
                *done = true;
                return;
            }
            o.values_mut().for_each(|x| bump_weight(x, done));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| bump_weight(x, done)),
        _ => {}
    }
}

#[test]
fn one_step_past_each_limit_is_refused_naming_the_field() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "kind: TrafficSplit\nspec:\n  service: api\n  backends: [{service: a, weight: 4294967296}]".into(),
            "spec.backends[0].weight",
            "above 4294967295",
        ),
        (
            "kind: TrafficSplit\nspec:\n  service: api\n  backends: [{service: a, weight: 4294967295}, {service: b, weight: 1}]".into(),
            "spec.backends",
            "sum to 4294967296",
        ),
        (
            "kind: RetryPolicy\nspec:\n  targetRef: {kind: Service, name: api}\n  timeout: 9223372036s".into(),
            "spec.timeout",
            "longest duration Envoy accepts",
        ),
        (
            "kind: RetryPolicy\nspec:\n  targetRef: {kind: Service, name: api}\n  backoff: {baseInterval: 0.5ms}".into(),
            "spec.backoff.baseInterval",
            "at least 1ms",
        ),
        (
            "kind: RetryPolicy\nspec:\n  targetRef: {kind: Service, name: api}\n  numRetries: 11".into(),
            "spec.numRetries",
            "above 10",
        ),
        (
            format!("kind: HTTPRouteGroup\nspec:\n  matches: [{{name: m, pathRegex: \"/{}\"}}]", "p".repeat(96)),
            "spec.matches[0].pathRegex",
            "101 RE2 instructions",
        ),
        (
            "kind: HTTPRouteGroup\nspec:\n  matches: [{name: m, pathRegex: \"/a\\\\Z\"}]".into(),
            "spec.matches[0].pathRegex",
            "not a valid RE2",
        ),
        (
            "kind: HTTPRouteGroup\nspec:\n  matches: [{name: m, headers: {x: \"[a-z&&[^q]]\"}}]".into(),
            "spec.matches[0].headers[\"x\"]",
            "RE2",
        ),
        (
            format!("kind: HTTPRouteGroup\nspec:\n  matches: [{{name: m, headers: {{{}: x}}}}]", "h".repeat(257)),
            "spec.matches[0].headers",
            "not a header name",
        ),
    ];
    for (body, field, message) in cases {
        let api = if body.starts_with("kind: TrafficSplit") {
            "split.smi-spec.io/v1alpha4"
        } else if body.starts_with("kind: RetryPolicy") {
            "policy.rudder.dev/v1alpha1"
        } else {
            "specs.smi-spec.io/v1alpha4"
        };
        let yaml = body.replacen(
            "\nspec:",
            "\nmetadata: {name: x, namespace: shop}\nspec:",
            1,
        );
        let yaml = format!("apiVersion: {api}\n{yaml}\n");
        // A manifest is refused as it is read; an object from the API server, as the
        // model takes it. Both name the field.
        let (got_field, got_message) = match parse_manifest(&yaml) {
            Err(ManifestError::Document { field, message, .. }) => (field, message),
            Err(e) => panic!("{yaml}: {e}"),
            Ok(mut parsed) => {
                let e = Model::new()
                    .apply(&parsed.objects.remove(0))
                    .expect_err(&format!("refused: {yaml}"));
                (e.field, e.message)
            }
        };
        assert_eq!(got_field, field, "{yaml}");
        assert!(got_message.contains(message), "{yaml}: {got_message}");
    }
}

#[test]
fn destinations_outside_the_mesh_headless_pods_and_tcp_tunnels_are_accepted_by_envoy() {
    // The outside-mesh golden case (per-endpoint mTLS, overrides, headless pods by
    // address and hostname, CONNECT routes for TCP ports), moved into the client's
    // namespace.
    let input = std::fs::read_to_string(
        testbed::procs::workspace_root().join("translator/tests/golden/outside-mesh/input.yaml"),
    )
    .expect("golden input")
    .replace("namespace: data", "namespace: shop");
    let mut boot = bootstrap(&load(&input));
    let text = boot.to_string();
    for needle in [
        "transportSocketMatches",
        "connectMatcher",
        "kafka-0.kafka:8080",
        "outbound|9092|10.2.1.1|kafka.shop.svc.cluster.local",
    ] {
        assert!(
            text.contains(needle),
            "{needle} is in the translated config"
        );
    }
    // `envoy --mode validate` crashes (SIGSEGV) on a STATIC cluster whose TLS context
    // takes secrets over ADS, which a running Envoy accepts (the headless e2e test calls
    // pods through such clusters over mTLS). For validation they become EDS clusters,
    // every other field as translated.
    let converted = static_tls_as_eds(&mut boot);
    assert_eq!(converted, 3, "the three headless pod clusters");
    if let Some(p) = std::env::var_os("DUMP_OUTSIDE") {
        std::fs::write(p, serde_json::to_vec_pretty(&boot).expect("json")).expect("dump");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    if let Err(e) = envoy_validate(dir.path(), "outside.json", &boot) {
        panic!("Envoy rejects config made from valid objects (a translator bug):\n{e}");
    }
}

#[test]
fn intercepted_listeners_are_accepted_by_envoy() {
    // The intercepted golden case: an injected PERMISSIVE pod with HTTP, TCP and headless
    // destinations, original-destination listeners and passthrough clusters.
    let input = std::fs::read_to_string(
        testbed::procs::workspace_root().join("translator/tests/golden/intercepted/input.yaml"),
    )
    .expect("golden input");
    let mut boot = bootstrap_as(&load(&input), "web-0", true);
    let text = boot.to_string();
    for needle in [
        "envoy.filters.listener.original_dst",
        "ORIGINAL_DST",
        "\"portValue\":15006",
        "10.96.0.20",
    ] {
        assert!(
            text.contains(needle),
            "{needle} is in the translated config"
        );
    }
    // As in the headless case above: STATIC clusters with SDS TLS crash validate mode.
    static_tls_as_eds(&mut boot);
    let dir = tempfile::tempdir().expect("tempdir");
    if let Err(e) = envoy_validate(dir.path(), "intercepted.json", &boot) {
        panic!("Envoy rejects the intercepted listeners:\n{e}");
    }
}

/// Gateway API routes at every limit Rudder validates: 16 rules, 128 matches, 16
/// headers and query parameters per match with names of 256 and values of 4,096 bytes,
/// regular expressions of 100 RE2 instructions, 1,024-byte paths, 16 backends of weight
/// 1,000,000, 16 headers set, added and removed, the longest durations, 10 retries, and
/// a GRPCRoute with regex method matches.
fn gateway_boundary() -> String {
    let mut y: String = (0..16).map(|i| service(&format!("b{i}"))).collect();
    y.push_str(&service("api"));
    let long_name = |c: char| c.to_string().repeat(256);
    let value = "v".repeat(4096);
    let re = format!("/{}", "p".repeat(95));
    let headers: String = (0..16)
        .map(|i| {
            let name = format!("{}{i:02}", "h".repeat(254));
            if i % 2 == 0 {
                format!("{{name: {name}, value: {value}}}, ")
            } else {
                format!("{{name: {name}, type: RegularExpression, value: \"{re}\"}}, ")
            }
        })
        .collect();
    let query: String = (0..16)
        .map(|i| {
            format!(
                "{{name: {}{i:02}, value: {}}}, ",
                "q".repeat(254),
                "w".repeat(1024)
            )
        })
        .collect();
    let path = format!("/{}", "a/".repeat(511))
        .trim_end_matches('/')
        .to_string();
    let mut rules = String::new();
    // Rule 0: one match at every per-match limit, with header filters at every limit
    // (values with `%`, which Envoy would read as a format string unless escaped).
    rules.push_str(&format!(
        "    - matches:\n        - {{path: {{type: Exact, value: \"{path}\"}}, method: PATCH, headers: [{headers}], queryParams: [{query}]}}\n"
    ));
    let pct = format!("100%{}%ENVIRONMENT(HOME)%", "v".repeat(4073));
    let set: String = (0..16)
        .map(|i| format!("{{name: {}{i:02}, value: '{pct}'}}, ", "s".repeat(254)))
        .collect();
    let add: String = (0..16)
        .map(|i| format!("{{name: {}{i:02}, value: {value}}}, ", "a".repeat(254)))
        .collect();
    let remove: String = (0..16)
        .map(|i| format!("{}{i:02}, ", "r".repeat(254)))
        .collect();
    // Every backend with its own header filters.
    let backends: String = (0..16)
        .map(|i| {
            format!(
                "{{name: b{i}, port: 80, weight: 1000000, filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-pool, value: '{i}%'}}], remove: [x-drop]}}}}, {{type: ResponseHeaderModifier, responseHeaderModifier: {{add: [{{name: x-served, value: b{i}}}]}}}}]}}, "
            )
        })
        .collect();
    // Mirrors: every request, a percent, a fraction, and one to a missing Service.
    let mirrors = "        - {type: RequestMirror, requestMirror: {backendRef: {name: b0, port: 80}}}\n        - {type: RequestMirror, requestMirror: {backendRef: {name: b1, port: 80}, percent: 0}}\n        - {type: RequestMirror, requestMirror: {backendRef: {name: b2, port: 80}, fraction: {numerator: 1, denominator: 3}}}\n        - {type: RequestMirror, requestMirror: {backendRef: {name: missing, port: 80}}}\n";
    rules.push_str(&format!(
        "      filters:\n        - {{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{set}], add: [{add}], remove: [{remove}]}}}}\n        - {{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{set}], add: [{add}]}}}}\n{mirrors}      backendRefs: [{backends}]\n      timeouts: {{request: 99999h99999m99999s99999ms, backendRequest: 99999h99999m99999s99999ms}}\n      retry: {{attempts: 10, codes: [400, 500, 503, 504, 599], backoff: 99999h99999m99999s99999ms}}\n"
    ));
    // Rules 1 and 2: 64 and 63 matches of every path kind (128 in all).
    for (n, r) in [(64, 1), (63, 2)] {
        rules.push_str("    - matches:\n");
        for i in 0..n {
            let kind = ["Exact", "PathPrefix", "RegularExpression"][i % 3];
            let v = if kind == "RegularExpression" {
                re.clone()
            } else {
                format!("/r{r}/m{i}")
            };
            rules.push_str(&format!(
                "        - {{path: {{type: {kind}, value: \"{v}\"}}, headers: [{{name: {}, value: x}}]}}\n",
                long_name('x')
            ));
        }
        rules.push_str(&format!(
            "      backendRefs: [{{name: b{r}, port: 80, weight: 0}}]\n      timeouts: {{request: 0s}}\n"
        ));
    }
    // Rules 3..15: every request; a backend present and one missing (its share fails).
    for i in 3..16 {
        rules.push_str(&format!(
            "    - backendRefs: [{{name: b{i}, port: 80}}, {{name: missing, port: 80}}]\n"
        ));
    }
    y.push_str(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: edge, namespace: shop}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: api, port: 80}}]\n  rules:\n{rules}---\n"
    ));
    // Composed as `/(?:S)/(?:M)`: 100 RE2 instructions in all.
    let grpc_re = "p".repeat(47);
    y.push_str(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: edge-grpc, namespace: shop}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: api, port: 9090}}]\n  rules:\n    - matches:\n        - method: {{type: RegularExpression, service: \"{grpc_re}\", method: \"{grpc_re}\"}}\n        - method: {{service: pkg.v1.Svc, method: Get}}\n        - method: {{method: List}}\n        - method: {{service: pkg.v1.Svc}}\n      backendRefs: [{{name: b0, port: 9090}}]\n---\n"
    ));
    y.push_str("apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: shop, labels: {app: api}}\nspec:\n  containers: [{name: app, ports: [{name: http, containerPort: 80}]}]\nstatus: {podIP: 10.0.0.1}\n");
    y
}

#[test]
fn gateway_routes_at_every_limit_are_accepted_by_envoy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = load(&gateway_boundary());
    let boot = bootstrap(&model);
    let text = boot.to_string();
    for needle in [
        "pathSeparatedPrefix",
        "queryParameters",
        "OVERWRITE_IF_EXISTS_OR_ADD",
        "responseHeadersToAdd",
        "directResponse",
        "\"numRetries\":10",
        "/pkg.v1.Svc/Get",
        &"w".repeat(1024),
        "100%%",
        "%%ENVIRONMENT(HOME)%%",
        "rudder-no-backend",
        "INTERNAL_SERVER_ERROR",
        "requestMirrorPolicies",
        "\"numerator\":333333",
        "x-served",
    ] {
        assert!(
            text.contains(needle),
            "{needle} is in the translated config"
        );
    }
    if let Some(p) = std::env::var_os("DUMP_GATEWAY") {
        std::fs::write(p, serde_json::to_vec_pretty(&boot).expect("json")).expect("dump");
    }
    if let Err(e) = envoy_validate(dir.path(), "gateway.json", &boot) {
        panic!("Envoy rejects config made from valid routes (a translator bug):\n{e}");
    }
    // The harness can fail, and the Host rule is Envoy's: the same config with a route
    // that sets the Host header is rejected.
    let mut bad = boot.clone();
    let mut done = false;
    add_host_header(&mut bad, &mut done);
    assert!(done, "a route with request headers to add was found");
    let e = envoy_validate(dir.path(), "host.json", &bad).expect_err("Envoy rejects it");
    assert!(e.contains("host headers may not be modified"), "{e}");
    // And the escape matters: a header value with a bare `%` is rejected.
    let unescaped: Value =
        serde_json::from_str(&boot.to_string().replace("100%%", "100%")).expect("json");
    let e = envoy_validate(dir.path(), "percent.json", &unescaped).expect_err("rejected");
    assert!(e.contains("Couldn't find valid command"), "{e}");
}

/// Adds `host: x` to the first `requestHeadersToAdd` found.
fn add_host_header(v: &mut Value, done: &mut bool) {
    if *done {
        return;
    }
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(a)) = o.get_mut("requestHeadersToAdd") {
                a.push(json!({"header": {"key": "host", "value": "x"}}));
                *done = true;
                return;
            }
            for (_, x) in o.iter_mut() {
                add_host_header(x, done);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| add_host_header(x, done)),
        _ => {}
    }
}
