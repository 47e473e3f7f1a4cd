use super::*;
use crate::k8s::inject::{INTERCEPTION_ANNOTATION, PROXY, STATUS_ANNOTATION};
use parking_lot::Mutex;
use serde_json::json;

/// A node whose API server holds `pod` (or fails) and whose installs are recorded.
#[derive(Default)]
struct FakeNode {
    pod: Option<Value>,
    fail_install: bool,
    installed: Mutex<Vec<(bool, String)>>,
    asked: Mutex<Vec<String>>,
}

impl Node for FakeNode {
    async fn pod(&self, _: &NetConf, _: &Path, pod: &PodRef) -> Result<Value, String> {
        self.asked
            .lock()
            .push(format!("{}/{}", pod.namespace, pod.name));
        self.pod.clone().ok_or_else(|| "connection refused".into())
    }
    async fn install(&self, _: &NetConf, _: &Path, rules: &str, v6: bool) -> Result<(), String> {
        if self.fail_install {
            return Err("iptables-restore failed".into());
        }
        self.installed.lock().push((v6, rules.to_string()));
        Ok(())
    }
    async fn installed(&self, _: &NetConf, _: &Path, v6: bool) -> Result<bool, String> {
        Ok(self.installed.lock().iter().any(|(f, _)| *f == v6))
    }
}

fn meshed(annotations: Value) -> Value {
    json!({"metadata": {"annotations": annotations},
           "spec": {"initContainers": [{"name": PROXY}], "containers": [{"name": "app"}]}})
}

fn call(command: &str, args: &str) -> Call {
    Call {
        command: command.into(),
        netns: Some("/var/run/netns/x".into()),
        args: args.into(),
    }
}

fn stdin(ips: &[&str]) -> Vec<u8> {
    let ips: Vec<Value> = ips.iter().map(|a| json!({"address": a})).collect();
    json!({"cniVersion": "1.0.0", "name": "k8s", "type": "rudder-cni", "kubeconfig": "/k",
           "prevResult": {"cniVersion": "1.0.0", "ips": ips, "dns": {}}})
    .to_string()
    .into_bytes()
}

const POD: &str = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0";

#[tokio::test]
async fn add_installs_a_meshed_pods_rules_and_passes_the_result_on() {
    let node = FakeNode {
        pod: Some(meshed(json!({STATUS_ANNOTATION: "injected",
            INTERCEPTION_ANNOTATION: r#"{"outboundPort":15001,"inboundPort":15006,"proxyUid":1337,"agentStatusPort":15021,"excludeOutboundPorts":[5432]}"#}))),
        ..Default::default()
    };
    let out = handle(&call("ADD", POD), &stdin(&["10.0.0.5/24"]), &node)
        .await
        .expect("added")
        .expect("a result");
    assert_eq!(out["ips"][0]["address"], "10.0.0.5/24");
    assert_eq!(*node.asked.lock(), ["shop/web-0"]);
    let installed = node.installed.lock().clone();
    assert_eq!(installed.len(), 1, "IPv4 only");
    assert!(installed[0].1.contains("--dport 5432 -j RETURN"));
    // A dual-stack pod gets both.
    let node = FakeNode {
        pod: node.pod.clone(),
        ..Default::default()
    };
    handle(
        &call("ADD", POD),
        &stdin(&["10.0.0.5/24", "fd00::5/64"]),
        &node,
    )
    .await
    .expect("added");
    let v6: Vec<bool> = node.installed.lock().iter().map(|(v6, _)| *v6).collect();
    assert_eq!(v6, [false, true]);
    assert!(
        handle(&call("CHECK", POD), &stdin(&[]), &node)
            .await
            .is_ok()
    );
    // A repeated ADD leaves the namespace as it is.
    handle(
        &call("ADD", POD),
        &stdin(&["10.0.0.5/24", "fd00::5/64"]),
        &node,
    )
    .await
    .expect("added again");
    assert_eq!(node.installed.lock().len(), 2);
}

#[tokio::test]
async fn other_pods_pass_through_without_rules() {
    let plain = FakeNode {
        pod: Some(json!({"metadata": {}, "spec": {"containers": [{"name": "app"}]}})),
        ..Default::default()
    };
    let out = handle(&call("ADD", POD), &stdin(&[]), &plain)
        .await
        .expect("ok");
    assert!(out.is_some());
    assert!(plain.installed.lock().is_empty());
    // Skipped namespaces and calls for no Kubernetes pod do not ask the API server.
    let down = FakeNode::default();
    for args in [
        "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns",
        "IgnoreUnknown=1",
    ] {
        handle(&call("ADD", args), &stdin(&[]), &down)
            .await
            .expect(args);
    }
    assert!(down.asked.lock().is_empty());
}

#[tokio::test]
async fn failures_of_a_meshed_pod_fail_the_add() {
    let (version, e) = handle(&call("ADD", POD), &stdin(&[]), &FakeNode::default())
        .await
        .expect_err("API server down");
    assert_eq!((version.as_str(), e.code), ("1.0.0", Code::TryAgainLater));
    assert!(e.msg.contains("shop/web-0"), "{e}");
    let broken = FakeNode {
        pod: Some(meshed(json!({}))),
        fail_install: true,
        ..Default::default()
    };
    let (_, e) = handle(&call("ADD", POD), &stdin(&[]), &broken)
        .await
        .expect_err("rules not installed");
    assert_eq!(e.code, Code::Intercept);
    let no_ns = Call {
        netns: None,
        ..call("ADD", POD)
    };
    let meshed_pod = FakeNode {
        pod: Some(meshed(json!({}))),
        ..Default::default()
    };
    let (_, e) = handle(&no_ns, &stdin(&[]), &meshed_pod)
        .await
        .expect_err("no netns");
    assert_eq!(e.code, Code::InvalidEnvironment);
    let (_, e) = handle(&call("CHECK", POD), &stdin(&[]), &meshed_pod)
        .await
        .expect_err("not installed");
    assert_eq!(e.code, Code::Intercept);
}

#[tokio::test]
async fn del_and_version_always_answer() {
    let down = FakeNode::default();
    assert_eq!(
        handle(&call("DEL", POD), b"garbage", &down)
            .await
            .expect("del"),
        None
    );
    let v = handle(&call("VERSION", ""), br#"{"cniVersion":"0.4.0"}"#, &down)
        .await
        .expect("version")
        .expect("printed");
    assert_eq!(v["cniVersion"], "0.4.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("1.0.0")))
    );
    let (_, e) = handle(&call("GC", POD), b"{}", &down)
        .await
        .expect_err("unknown");
    assert_eq!(e.code, Code::InvalidEnvironment);
}

/// The annotation can be edited after admission: one naming another proxy UID (the
/// app's, so its traffic would bypass the proxy) fails the ADD instead of installing it.
#[tokio::test]
async fn an_annotation_naming_another_proxy_uid_fails_the_add() {
    let node = FakeNode {
        pod: Some(meshed(json!({STATUS_ANNOTATION: "injected",
            INTERCEPTION_ANNOTATION: r#"{"outboundPort":15001,"inboundPort":15006,"proxyUid":1000,"agentStatusPort":15021}"#}))),
        ..Default::default()
    };
    let (_, err) = handle(&call("ADD", POD), &stdin(&["10.0.0.5/24"]), &node)
        .await
        .expect_err("refused");
    assert!(err.details.contains("proxyUid 1000"), "{err:?}");
    assert!(node.installed.lock().is_empty());
}

/// IPv4 rules already there say nothing of IPv6's: a repeated ADD for a dual-stack pod
/// installs the missing family, and CHECK fails while it is missing.
#[tokio::test]
async fn each_address_family_is_checked_on_its_own() {
    let node = FakeNode {
        pod: Some(meshed(json!({STATUS_ANNOTATION: "injected",
            INTERCEPTION_ANNOTATION: r#"{"outboundPort":15001,"inboundPort":15006,"proxyUid":1337,"agentStatusPort":15021}"#}))),
        ..Default::default()
    };
    node.installed.lock().push((false, "v4 rules".into()));
    let dual = stdin(&["10.0.0.5/24", "fd00::5/64"]);
    assert!(handle(&call("CHECK", POD), &dual, &node).await.is_err());
    handle(&call("ADD", POD), &dual, &node)
        .await
        .expect("added");
    let families: Vec<bool> = node.installed.lock().iter().map(|(v6, _)| *v6).collect();
    assert_eq!(families, [false, true], "only IPv6 was added");
    assert!(handle(&call("CHECK", POD), &dual, &node).await.is_ok());
}
