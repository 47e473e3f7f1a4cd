//! The committed CRD YAML matches the Rust types, and the schema pins what the API
//! server must enforce.

use kube::CustomResourceExt;
use serde_json::Value;

#[test]
fn committed_crd_yaml_has_not_drifted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in crds::CHART_CRD_DIRS {
        for (name, yaml) in crds::crd_documents() {
            let committed = std::fs::read_to_string(root.join(dir).join(name)).unwrap_or_default();
            assert!(
                committed == yaml,
                "{dir}/{name} differs from the Rust types: run `cargo run -p crds --bin crdgen` and commit"
            );
        }
    }
}

fn spec_schema(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let v = serde_json::to_value(crd).expect("crd json");
    v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

#[test]
fn traffic_split_schema_is_smi_v1alpha4() {
    let crd = crds::TrafficSplit::crd();
    assert_eq!(crd.spec.group, "split.smi-spec.io");
    assert_eq!(crd.spec.versions[0].name, "v1alpha4");
    assert!(
        crd.spec.versions[0]
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    let spec = spec_schema(&crd);
    assert_eq!(spec["required"], serde_json::json!(["backends", "service"]));
    let backend = &spec["properties"]["backends"]["items"];
    assert_eq!(
        backend["required"],
        serde_json::json!(["service", "weight"])
    );
    assert_eq!(backend["properties"]["weight"]["minimum"], 0.0);
    assert_eq!(
        spec["properties"]["matches"]["items"]["required"],
        serde_json::json!(["kind", "name"])
    );
}

#[test]
fn retry_policy_schema_bounds_what_it_can() {
    let crd = crds::RetryPolicy::crd();
    assert_eq!(crd.spec.group, "policy.rudder.dev");
    assert_eq!(crd.spec.versions[0].name, "v1alpha1");
    let spec = spec_schema(&crd);
    assert_eq!(spec["required"], serde_json::json!(["targetRef"]));
    let p = &spec["properties"];
    assert_eq!(p["numRetries"]["maximum"], 10.0);
    assert_eq!(p["numRetries"]["minimum"], 0.0);
    assert_eq!(p["timeout"]["pattern"], crds::duration::PATTERN);
    assert_eq!(p["perTryTimeout"]["pattern"], crds::duration::PATTERN);
    assert!(
        p["retryOn"]["items"]["pattern"]
            .as_str()
            .unwrap_or_default()
            .contains("gateway-error")
    );
    assert_eq!(p["targetRef"]["required"], serde_json::json!(["name"]));
    assert_eq!(p["budget"]["properties"]["retryPercent"]["maximum"], 100.0);
    assert!(
        p["backoff"]["x-kubernetes-validations"]
            .to_string()
            .contains("maxInterval")
    );
    assert!(
        spec["x-kubernetes-validations"]
            .to_string()
            .contains("perTryTimeout")
    );
}

#[test]
fn smi_manifests_from_flagger_parse_unchanged() {
    // The shape Flagger writes for a canary.
    let yaml = r#"
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: podinfo, namespace: test}
spec:
  service: podinfo
  backends:
    - {service: podinfo-primary, weight: 90}
    - {service: podinfo-canary, weight: 10}
  matches:
    - {kind: HTTPRouteGroup, name: podinfo-canary, apiGroup: specs.smi-spec.io}
"#;
    let ts: crds::TrafficSplit = serde_saphyr::from_str(yaml).expect("parses");
    assert_eq!(ts.spec.backends[1].weight, crds::SplitWeight::Int(10));
    assert!(ts.spec.validate().is_ok());
    assert!(ts.spec.unsupported_matches().is_empty());
    let back = serde_json::to_value(&ts).expect("json");
    assert_eq!(back["spec"]["matches"][0]["apiGroup"], "specs.smi-spec.io");
}

#[test]
fn validation_names_the_field() {
    let mut ts: crds::TrafficSplitSpec = serde_json::from_value(serde_json::json!({
        "service": "a", "backends": [{"service": "b", "weight": 1}, {"service": "c", "weight": -1}]
    }))
    .expect("parses");
    assert_eq!(
        ts.validate().expect_err("negative").field,
        "spec.backends[1].weight"
    );
    ts.backends[1].weight = crds::SplitWeight::Int(0);
    ts.backends[0].weight = crds::SplitWeight::Int(0);
    assert!(
        ts.validate().is_ok(),
        "all-zero weights are a status condition, not a rejection"
    );
    assert!(ts.all_weights_zero());
    let rp: crds::RetryPolicySpec = serde_json::from_value(serde_json::json!({
        "targetRef": {"name": "a"}, "retryOn": ["5xx", "teapot"], "timeout": "1s", "perTryTimeout": "2s"
    }))
    .expect("parses");
    assert_eq!(rp.validate().expect_err("bad").field, "spec.retryOn[1]");
    let rp: crds::RetryPolicySpec = serde_json::from_value(serde_json::json!({
        "targetRef": {"name": "a"}, "retryOn": ["503", "unavailable"], "timeout": "1s", "perTryTimeout": "2s"
    }))
    .expect("parses");
    assert_eq!(rp.validate().expect_err("bad").field, "spec.perTryTimeout");
}

#[test]
fn smi_crds_serve_every_version_flagger_writes_with_v1alpha4_stored() {
    for (name, yaml) in crds::crd_documents() {
        // The access group has its own versions (`crds::ACCESS_VERSIONS`, tested beside
        // the type).
        if !name.contains("smi-spec.io") || name.contains(crds::ACCESS_GROUP) {
            continue;
        }
        let v: Value = serde_saphyr::from_str(&yaml).expect("yaml");
        let versions = v["spec"]["versions"].as_array().expect("versions");
        let names: Vec<&str> = versions.iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(
            names,
            ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"],
            "{name}"
        );
        for ver in versions {
            assert_eq!(ver["served"], true, "{name}");
            assert_eq!(ver["storage"], ver["name"] == "v1alpha4", "{name}");
            assert_eq!(
                ver["schema"], versions[3]["schema"],
                "{name}: one schema for every version (conversion None)"
            );
        }
        assert_eq!(v["spec"]["conversion"]["strategy"], "None", "{name}");
    }
}

#[test]
fn weights_read_as_integers_or_v1alpha1_quantities() {
    let spec = |weights: &[Value]| -> crds::TrafficSplitSpec {
        let backends: Vec<Value> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| serde_json::json!({"service": format!("b{i}"), "weight": w}))
            .collect();
        serde_json::from_value(serde_json::json!({"service": "apex", "backends": backends}))
            .expect("spec")
    };
    use serde_json::json;
    assert_eq!(spec(&[json!(90), json!(10)]).weights(), Ok(vec![90, 10]));
    // v1alpha1: quantities, mixed with plain numbers, counted in thousandths.
    assert_eq!(
        spec(&[json!("500m"), json!(1), json!("1.5"), json!("2k")]).weights(),
        Ok(vec![500, 1000, 1500, 2_000_000])
    );
    assert_eq!(spec(&[json!("1Ki")]).weights(), Ok(vec![1_024_000]));
    for bad in ["1e3", "-1", "0.0001", "abc", "", "5Ti"] {
        let err = spec(&[json!(bad)]).validate().expect_err(bad);
        assert_eq!(err.field, "spec.backends[0].weight", "{bad}");
    }
    // Envoy's limit holds in thousandths too.
    let err = spec(&[json!("4294968")]).validate().expect_err("too large");
    assert!(err.message.contains("Envoy"), "{err}");
    assert!(spec(&[json!("0m"), json!(0)]).all_weights_zero());
}
