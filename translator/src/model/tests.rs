use super::*;
use crate::status::policy_status;

fn parse_one(yaml: &str) -> Result<Object, ManifestError> {
    let parsed = parse_manifest(yaml)?;
    Ok(parsed.objects.into_iter().next().expect("one object"))
}

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 80, targetPort: 9080}]\n";

#[test]
fn parses_multi_document_files_and_skips_unknown_kinds() {
    let text =
        format!("{SVC}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\n---\n");
    let parsed = parse_manifest(&text).expect("parses");
    assert_eq!(parsed.objects.len(), 1);
    assert_eq!(parsed.skipped, vec![(1, "apps/v1/Deployment".to_string())]);
    assert_eq!(parsed.objects[0].key().to_string(), "Service shop/reviews");
}

#[test]
fn list_items_are_read() {
    let text = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: p}\n    status: {podIP: 10.0.0.1}\n";
    let parsed = parse_manifest(text).expect("parses");
    assert_eq!(parsed.objects[0].key().to_string(), "Pod default/p");
}

#[test]
fn syntax_errors_carry_the_line() {
    let err = parse_manifest("apiVersion: v1\nkind: Service\nmetadata: {name: [\n")
        .expect_err("bad yaml");
    let ManifestError::Syntax { message } = err else {
        panic!("expected syntax error, got {err}")
    };
    assert!(
        message.contains("line") || message.contains('3'),
        "{message}"
    );
}

#[test]
fn schema_errors_carry_document_index_and_field_path() {
    let text = format!(
        "{SVC}---\napiVersion: v1\nkind: Service\nmetadata: {{name: bad}}\nspec:\n  ports: [{{port: 80}}, {{name: b, port: \"eighty\"}}]\n"
    );
    let err = parse_manifest(&text).expect_err("bad port type");
    match err {
        ManifestError::Document {
            index,
            field,
            object,
            ..
        } => {
            assert_eq!(index, 1);
            assert_eq!(field, "spec.ports[1].port");
            assert_eq!(object.as_deref(), Some("Service default/bad"));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn validation_errors_name_object_and_field() {
    let cases = [
        (SVC.replace("port: 80,", "port: 70000,"), "spec.ports[0].port", "70000"),
        (SVC.replace("targetPort: 9080", "targetPort: -1"), "spec.ports[0].targetPort", "-1"),
        (SVC.replace("name: reviews", "name: Reviews"), "metadata.name", "DNS"),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: [{addresses: [\"10.0.0.300\"]}]\n".to_string(),
            "metadata.labels[\"kubernetes.io/service-name\"]",
            "required",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: [\"10.0.0.1\"]}, {addresses: [\"10.0.0.300\"]}]\n".to_string(),
            "endpoints[1].addresses[0]",
            "10.0.0.300",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: nope}\n".to_string(),
            "status.podIP",
            "nope",
        ),
        (
            SVC.replace("namespace: shop}", "namespace: shop, annotations: {rudder.dev/upstream-tls: tls}}"),
            "metadata.annotations[\"rudder.dev/upstream-tls\"]",
            "not auto, mesh or plain",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {rudder.dev/inject: maybe}}\n".to_string(),
            "metadata.annotations[\"rudder.dev/inject\"]",
            "maybe",
        ),
        (
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: [\"10.0.0.1\"], hostname: Kafka_0}]\n".to_string(),
            "endpoints[0].hostname",
            "",
        ),
    ];
    for (yaml, want_field, want_text) in cases {
        match parse_one(&yaml) {
            Err(ManifestError::Document { field, message, .. }) => {
                assert_eq!(field, want_field, "{yaml}");
                assert!(
                    message.contains(want_text),
                    "{message} should mention {want_text}"
                );
            }
            other => panic!("{yaml}: expected a document error, got {other:?}"),
        }
    }
}

#[test]
fn apply_keeps_last_good_version_on_error() {
    let mut model = Model::new();
    let good = parse_one(SVC).expect("valid");
    model.apply(&good).expect("applies");
    let Object::Service(mut bad) = good.clone() else {
        panic!()
    };
    bad.spec
        .as_mut()
        .expect("spec")
        .ports
        .as_mut()
        .expect("ports")[0]
        .port = 0;
    let err = model.apply(&Object::Service(bad)).expect_err("refused");
    assert_eq!(err.field, "spec.ports[0].port");
    let svc = model.services().next().expect("still there");
    assert_eq!(svc.ports[0].port, 80);
    assert!(model.delete(&good.key()));
    assert_eq!(model.services().count(), 0);
}

#[test]
fn protocol_comes_from_app_protocol_then_port_name() {
    use convert::protocol_of;
    assert_eq!(
        protocol_of(Some("kubernetes.io/h2c"), "web"),
        Protocol::Http2
    );
    assert_eq!(protocol_of(None, "grpc-api"), Protocol::Grpc);
    assert_eq!(protocol_of(None, "http2"), Protocol::Http2);
    assert_eq!(protocol_of(None, "tcp-db"), Protocol::Tcp);
    assert_eq!(protocol_of(None, "web"), Protocol::Http);
    assert_eq!(protocol_of(Some("http"), "grpc"), Protocol::Http);
}

#[test]
fn services_select_pods_by_labels_in_their_namespace() {
    let mut model = Model::new();
    model.apply(&parse_one(SVC).expect("svc")).expect("apply");
    let pod = |ns: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: r, namespace: {ns}, labels: {{app: reviews}}}}\n"
        )
    };
    model
        .apply(&parse_one(&pod("shop")).expect("pod"))
        .expect("apply");
    model
        .apply(&parse_one(&pod("other")).expect("pod"))
        .expect("apply");
    let shop = model.pod("shop", "r").expect("pod");
    assert_eq!(model.services_selecting(shop).count(), 1);
    let other = model.pod("other", "r").expect("pod");
    assert_eq!(model.services_selecting(other).count(), 0);
}

#[test]
fn services_selecting_a_pod_follow_selector_changes_and_come_in_name_order() {
    let svc = |name: &str, selector: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{{selector}ports: [{{port: 80}}]}}\n"
        )
    };
    let apply = |model: &mut Model, yaml: &str| {
        model
            .apply(&parse_one(yaml).expect("parses"))
            .expect("apply");
    };
    let mut model = Model::new();
    apply(
        &mut model,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: r, namespace: shop, labels: {app: reviews, version: v1}}\n",
    );
    apply(&mut model, &svc("zeta", "selector: {app: reviews}, "));
    apply(&mut model, &svc("alpha", "selector: {version: v1}, "));
    // Its first label matches, its second does not.
    apply(
        &mut model,
        &svc("beta", "selector: {app: reviews, version: v2}, "),
    );
    // No selector, and an empty one: they select nothing.
    apply(&mut model, &svc("none", ""));
    apply(&mut model, &svc("empty", "selector: {}, "));
    let names = |model: &Model| -> Vec<String> {
        let pod = model.pod("shop", "r").expect("pod");
        model
            .services_selecting(pod)
            .map(|s| s.name.clone())
            .collect()
    };
    assert_eq!(names(&model), ["alpha", "zeta"]);
    // A changed selector is looked up by its new labels, not its old ones.
    apply(
        &mut model,
        &svc("beta", "selector: {app: reviews, version: v1}, "),
    );
    apply(&mut model, &svc("zeta", "selector: {app: ratings}, "));
    apply(&mut model, &svc("gamma", "selector: {app: ratings}, "));
    assert_eq!(names(&model), ["alpha", "beta"]);
    // Its first label moves onto one the pod carries.
    apply(&mut model, &svc("gamma", "selector: {version: v1}, "));
    assert_eq!(names(&model), ["alpha", "beta", "gamma"]);
    assert!(model.delete(&ObjectKey::new(Kind::Service, "shop", "alpha")));
    assert_eq!(names(&model), ["beta", "gamma"]);
    // Nothing is left of the labels the Services moved off: the indexes are those of a
    // model given only the objects as they are now.
    let mut fresh = Model::new();
    apply(
        &mut fresh,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: r, namespace: shop, labels: {app: reviews, version: v1}}\n",
    );
    for (name, selector) in [
        ("beta", "selector: {app: reviews, version: v1}, "),
        ("gamma", "selector: {version: v1}, "),
        ("zeta", "selector: {app: ratings}, "),
        ("none", ""),
        ("empty", "selector: {}, "),
    ] {
        apply(&mut fresh, &svc(name, selector));
    }
    assert_eq!(model.index, fresh.index);
}

#[test]
fn what_a_pod_says_of_its_place_in_the_mesh_is_read() {
    let mut model = Model::new();
    for (name, spec, status) in [
        (
            "plain",
            "{containers: [{name: app, image: x, ports: [{name: http, containerPort: 8080}]}]}",
            "{podIP: 10.0.0.1, phase: Running}",
        ),
        (
            "host",
            "{hostNetwork: true, containers: [{name: app}]}",
            "{podIP: 10.0.0.2}",
        ),
        (
            "done",
            "{containers: [{name: app}]}",
            "{podIP: 10.0.0.3, phase: Succeeded}",
        ),
    ] {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\nstatus: {status}\n"
        );
        model.apply(&parse_one(&yaml).expect("pod")).expect("apply");
    }
    let plain = model.pod("shop", "plain").expect("plain");
    assert!(plain.in_mesh && !plain.finished);
    assert_eq!(plain.container_ports.get("http"), Some(&8080));
    assert!(
        !model.pod("shop", "host").expect("host").in_mesh,
        "hostNetwork: never injected"
    );
    assert!(model.pod("shop", "done").expect("done").finished);
}

const SPLIT: &str = "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: canary, namespace: shop, generation: 3}\nspec:\n  service: reviews\n  backends:\n    - {service: reviews, weight: 90}\n    - {service: reviews-v3, weight: 10}\n";

fn conditions(
    model: &Model,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Vec<(String, String, String, String)> {
    let key = ObjectKey {
        kind,
        namespace: ns.into(),
        name: name.into(),
    };
    policy_status(model)[&key]
        .conditions
        .iter()
        .map(|c| {
            (
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            )
        })
        .collect()
}

#[test]
fn traffic_split_status_names_the_missing_backend() {
    let mut model = Model::new();
    model.apply(&parse_one(SVC).expect("svc")).expect("apply");
    model
        .apply(&parse_one(SPLIT).expect("split"))
        .expect("apply");
    let c = conditions(&model, Kind::TrafficSplit, "shop", "canary");
    assert_eq!(c[0].1, "True", "still routable through reviews: {c:?}");
    assert_eq!(c[1].1, "False");
    assert_eq!(c[1].2, "BackendNotFound");
    assert_eq!(
        c[1].3,
        "spec.backends[1].service: Service shop/reviews-v3 not found"
    );
    assert_eq!(
        policy_status(&model)
            .values()
            .next()
            .expect("one")
            .generation,
        Some(3)
    );
}

#[test]
fn traffic_split_with_all_zero_weights_or_unsupported_matches_is_not_accepted() {
    let mut model = Model::new();
    model.apply(&parse_one(SVC).expect("svc")).expect("apply");
    let zero = SPLIT
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 0");
    model
        .apply(&parse_one(&zero).expect("split"))
        .expect("all-zero is kept, for its status");
    let c = conditions(&model, Kind::TrafficSplit, "shop", "canary");
    assert_eq!((c[0].1.as_str(), c[0].2.as_str()), ("False", "Invalid"));
    assert!(c[0].3.contains("every weight is 0"), "{}", c[0].3);
    let other = format!("{SPLIT}  matches:\n    - {{kind: TCPRoute, name: x}}\n");
    model
        .apply(&parse_one(&other).expect("split"))
        .expect("apply");
    let c = conditions(&model, Kind::TrafficSplit, "shop", "canary");
    assert_eq!(c[0].2, "Unsupported");
    assert!(c[0].3.starts_with("spec.matches[0].kind"), "{}", c[0].3);
}

#[test]
fn oldest_retry_policy_wins_and_missing_ports_are_named() {
    let mut model = Model::new();
    model.apply(&parse_one(SVC).expect("svc")).expect("apply");
    let rp = |name: &str, created: &str, port: &str| {
        format!(
            "apiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: \"{created}\"}}\nspec:\n  targetRef: {{kind: Service, name: reviews{port}}}\n  retryOn: [5xx]\n  numRetries: 3\n"
        )
    };
    model
        .apply(&parse_one(&rp("newer", "2026-02-01T00:00:00Z", "")).expect("rp"))
        .expect("apply");
    model
        .apply(&parse_one(&rp("older", "2026-01-01T00:00:00Z", "")).expect("rp"))
        .expect("apply");
    model
        .apply(&parse_one(&rp("port", "2026-01-01T00:00:00Z", ", port: 8080")).expect("rp"))
        .expect("apply");
    assert_eq!(
        conditions(&model, Kind::RetryPolicy, "shop", "older")[0].1,
        "True"
    );
    let newer = conditions(&model, Kind::RetryPolicy, "shop", "newer");
    assert_eq!(
        (newer[0].1.as_str(), newer[0].2.as_str()),
        ("False", "Conflicted")
    );
    assert!(newer[0].3.contains("shop/older"), "{}", newer[0].3);
    let port = conditions(&model, Kind::RetryPolicy, "shop", "port");
    assert_eq!(
        port[1].3,
        "spec.targetRef.port: Service shop/reviews has no port 8080"
    );
}

#[test]
fn invalid_policies_are_refused_with_the_field() {
    let bad = "apiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {name: x}\nspec:\n  targetRef: {name: a}\n  numRetries: 11\n";
    match parse_one(bad) {
        Err(ManifestError::Document { field, .. }) => assert_eq!(field, "spec.numRetries"),
        other => panic!("{other:?}"),
    }
    let missing = "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: x}\nspec:\n  backends: []\n";
    match parse_one(missing) {
        Err(ManifestError::Document { field, message, .. }) => {
            assert_eq!(field, "spec");
            assert!(message.contains("missing field `service`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn long_names_are_refused_for_their_length_in_a_short_message() {
    let name = "a".repeat(65536);
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80}}]\n"
    );
    let err = parse_one(&yaml).expect_err("refused").to_string();
    assert!(err.len() < 700, "{} bytes: {}", err.len(), &err[..200]);
    assert!(
        err.contains("metadata.name: is 65536 characters long; at most 63 are allowed"),
        "{err}"
    );
    let bad =
        "apiVersion: v1\nkind: Service\nmetadata: {name: Web_1}\nspec:\n  ports: [{port: 80}]\n";
    let err = parse_one(bad).expect_err("refused").to_string();
    assert!(err.contains("\"Web_1\" is not a valid DNS name"), "{err}");
}

#[test]
fn values_in_messages_are_cut() {
    let ip = "9".repeat(10_000);
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  clusterIP: \"{ip}\"\n  ports: [{{port: 80}}]\n"
    );
    let err = parse_one(&yaml).expect_err("refused").to_string();
    assert!(err.len() < 300, "{err}");
    assert!(err.contains("(10000 bytes)"), "{err}");
    // A deserializer's message that quotes a value is bounded too.
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  ports: [{{port: \"{ip}\"}}]\n"
    );
    let err = parse_one(&yaml).expect_err("refused").to_string();
    assert!(err.len() < 800, "{} bytes", err.len());
}

#[test]
fn syntax_errors_quote_at_most_the_offending_line() {
    let secret = "password: hunter2-".repeat(20);
    let yaml =
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web\n# {secret}\nspec: [\n");
    let err = parse_one(&yaml).expect_err("refused").to_string();
    assert!(err.len() < 700, "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn large_exports_parse() {
    let svc = |i: usize| {
        format!(
            "- apiVersion: v1\n  kind: Service\n  metadata: {{name: svc-{i}, namespace: shop}}\n  spec:\n    clusterIP: 10.0.{}.{}\n    selector: {{app: svc-{i}}}\n    ports:\n    - {{name: http, port: 80, targetPort: 8080}}\n",
            i / 250,
            i % 250
        )
    };
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        (0..10_000).map(svc).collect::<String>()
    );
    let parsed = parse_manifest(&list).expect("a 10k-object List parses");
    assert_eq!(parsed.objects.len(), 10_000);
    let docs = (0..2_000)
        .map(|i| svc(i).replacen("- ", "", 1).replace("\n  ", "\n"))
        .collect::<Vec<_>>()
        .join("---\n");
    let parsed = parse_manifest(&docs).expect("2000 documents parse");
    assert_eq!(parsed.objects.len(), 2_000);
}

#[test]
fn object_fields_are_bounded_by_their_kubernetes_limits() {
    let pod = |extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{extra}}}\nspec:\n  containers: []\n"
        )
    };
    let cases = [
        (
            pod(", labels: {app: \"bad value!\"}"),
            "metadata.labels[\"app\"]",
        ),
        (
            pod(&format!(", labels: {{app: {}}}", "v".repeat(64))),
            "metadata.labels[\"app\"]",
        ),
        (
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  serviceAccountName: {}\n  containers: []\n", "s".repeat(254)),
            "spec.serviceAccountName",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  serviceAccountName: Not_Valid\n  containers: []\n".to_string(),
            "spec.serviceAccountName",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, ports: [{name: a-very-long-port-name, containerPort: 80}]}]\n".to_string(),
            "spec.containers[0].ports[0].name",
        ),
        (
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n  ports: [{{name: {}, port: 80}}]\n", "n".repeat(64)),
            "spec.ports[0].name",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  selector: {\"a/b/c\": x}\n  ports: [{port: 80}]\n".to_string(),
            "spec.selector[\"a/b/c\"]",
        ),
    ];
    for (yaml, want) in cases {
        match parse_one(&yaml) {
            Err(ManifestError::Document { field, message, .. }) => {
                assert_eq!(field, want, "{message}");
                assert!(message.len() < 300, "{message}");
            }
            other => panic!("{yaml}: expected a refusal of {want}, got {other:?}"),
        }
    }
    let ok = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app.kubernetes.io/name: web, tier: \"\"}}\nspec:\n  serviceAccountName: web.reader\n  containers: [{name: c, ports: [{name: http-alt, containerPort: 80}]}]\n";
    parse_one(ok).expect("valid labels, account and port name");
}

#[test]
fn a_split_revision_covers_its_route_groups() {
    let mut model = Model::new();
    let split = "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: ab}\nspec:\n  service: web\n  backends: [{service: web, weight: 1}]\n  matches: [{kind: HTTPRouteGroup, name: beta}]\n";
    let group = |re: &str| {
        format!(
            "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {{name: beta}}\nspec:\n  matches: [{{name: m, pathRegex: \"{re}\"}}]\n"
        )
    };
    model
        .apply(&parse_one(split).expect("split"))
        .expect("apply");
    model
        .apply(&parse_one(&group("/a.*")).expect("group"))
        .expect("apply");
    let key = ObjectKey::new(Kind::TrafficSplit, "default", "ab");
    let r1 = model.rev(&key).expect("rev");
    model
        .apply(&parse_one(&group("/a.*")).expect("group"))
        .expect("apply");
    assert_eq!(
        model.rev(&key),
        Some(r1),
        "an unchanged group changes nothing"
    );
    model
        .apply(&parse_one(&group("/b.*")).expect("group"))
        .expect("apply");
    let r2 = model.rev(&key).expect("rev");
    assert!(r2 > r1, "a changed group is a changed split");
    model.delete(&ObjectKey::new(Kind::HTTPRouteGroup, "default", "beta"));
    assert!(model.rev(&key).expect("rev") > r2, "so is a deleted one");
}

#[test]
fn slice_and_selector_indexes_follow_moves_relabels_and_deletes() {
    let mut m = Model::new();
    let apply =
        |m: &mut Model, yaml: &str| m.apply(&parse_one(yaml).expect("parses")).expect("valid");
    let svc = |name: &str, selector: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {selector}\n  ports: [{{name: http, port: 80, targetPort: 9080}}]\n"
        )
    };
    let slice = |owner: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s1, namespace: shop, labels: {{kubernetes.io/service-name: {owner}}}}}\naddressType: IPv4\nports: [{{name: http, port: 9080}}]\nendpoints: [{{addresses: [10.0.0.9]}}]\n"
        )
    };
    let pod = |labels: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p1, namespace: shop, labels: {labels}}}\nstatus: {{podIP: 10.0.0.9}}\n"
        )
    };
    apply(&mut m, &svc("a", "{app: x, tier: web}"));
    apply(&mut m, &svc("b", "{app: bee}"));
    apply(&mut m, &svc("c", "{}"));
    let service = |m: &Model, n: &str| m.service("shop", n).expect("service").clone();
    let slices = |m: &Model, n: &str| {
        let s = service(m, n);
        m.slices_of(&s).map(|s| s.name.clone()).collect::<Vec<_>>()
    };
    let pods = |m: &Model, n: &str| {
        let s = service(m, n);
        m.pods_selected_by(&s)
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    };
    apply(&mut m, &slice("a"));
    assert_eq!(slices(&m, "a"), ["s1"]);
    // The slice moves to another Service.
    apply(&mut m, &slice("b"));
    assert!(slices(&m, "a").is_empty());
    assert_eq!(slices(&m, "b"), ["s1"]);
    // A pod with only the first label is not selected; all labels, it is.
    apply(&mut m, &pod("{app: x}"));
    assert!(pods(&m, "a").is_empty());
    apply(&mut m, &pod("{app: x, tier: web}"));
    assert_eq!(pods(&m, "a"), ["p1"]);
    // Relabelled away, then to another Service; an empty selector selects nothing.
    apply(&mut m, &pod("{app: bee}"));
    assert!(pods(&m, "a").is_empty());
    assert_eq!(pods(&m, "b"), ["p1"]);
    assert!(pods(&m, "c").is_empty());
    assert!(m.delete(&ObjectKey::new(Kind::Pod, "shop", "p1")));
    assert!(m.delete(&ObjectKey::new(Kind::EndpointSlice, "shop", "s1")));
    assert!(pods(&m, "b").is_empty());
    assert!(slices(&m, "b").is_empty());
    for n in ["a", "b", "c"] {
        assert!(m.delete(&ObjectKey::new(Kind::Service, "shop", n)));
    }
    assert_eq!(
        m.index,
        index::Indexes::default(),
        "the indexes keep nothing of deleted objects"
    );
}

#[test]
fn an_external_name_must_be_a_dns_name() {
    let ext = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: ext, namespace: shop}}\nspec:\n  type: ExternalName\n  externalName: \"{name}\"\n  ports: [{{name: http, port: 80}}]\n"
        )
    };
    let mut model = Model::new();
    model
        .apply(&parse_one(&ext("db.example.com.")).expect("parses"))
        .expect("a DNS name, trailing dot allowed");
    assert_eq!(
        model
            .service("shop", "ext")
            .and_then(|s| s.external_name.as_deref()),
        Some("db.example.com")
    );
    for bad in ["", "not a name", "-x.example.com"] {
        let err = match parse_one(&ext(bad)) {
            Ok(o) => model.apply(&o).expect_err(bad).field,
            Err(ManifestError::Document { field, .. }) => field,
            Err(e) => panic!("{bad}: {e}"),
        };
        assert_eq!(err, "spec.externalName", "{bad}");
    }
}

#[test]
fn every_smi_version_parses_as_v1alpha4() {
    for v in ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"] {
        let ts = format!(
            "apiVersion: split.smi-spec.io/{v}\nkind: TrafficSplit\nmetadata: {{name: s}}\nspec:\n  service: web\n  backends: [{{service: a, weight: \"750m\"}}, {{service: b, weight: \"250m\"}}]\n"
        );
        let Ok(Object::TrafficSplit(t)) = parse_one(&ts) else {
            panic!("{v}: not a TrafficSplit");
        };
        assert_eq!(t.spec.weights(), Ok(vec![750, 250]), "{v}");
        let g = format!(
            "apiVersion: specs.smi-spec.io/{v}\nkind: HTTPRouteGroup\nmetadata: {{name: g}}\nspec:\n  matches: [{{name: m, pathRegex: /api}}]\n"
        );
        assert!(
            matches!(parse_one(&g), Ok(Object::HTTPRouteGroup(_))),
            "{v}: not an HTTPRouteGroup"
        );
    }
    // A version no tool writes is refused, naming the accepted ones (it was skipped).
    let err = parse_manifest(
        "apiVersion: split.smi-spec.io/v1alpha5\nkind: TrafficSplit\nmetadata: {name: s}\nspec: {}\n",
    )
    .expect_err("an unaccepted version");
    assert!(err.to_string().contains("apiVersion"), "{err}");
}
