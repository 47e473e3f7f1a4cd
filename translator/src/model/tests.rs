use super::*;

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
