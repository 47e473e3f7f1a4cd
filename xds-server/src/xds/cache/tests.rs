use std::time::Duration;

use translator::identity::{ProxyIdentity, ProxyKind};
use translator::model::parse_manifest;

use super::*;

fn identity(pod: &str) -> ProxyIdentity {
    ProxyIdentity {
        node_id: format!("{pod}.default"),
        kind: ProxyKind::Envoy,
        namespace: "default".into(),
        pod: pod.into(),
        service_account: "default".into(),
        pod_ip: Some("127.0.0.5".parse().expect("ip")),
        outbound_port: 15001,
        app_address: "127.0.0.1".parse().expect("ip"),
    }
}

fn load(cache: &Cache, yaml: &str) {
    let parsed = parse_manifest(yaml).expect("valid yaml");
    cache.update(|m| {
        for o in &parsed.objects {
            m.apply(o).expect("valid object");
        }
    });
}

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{name: http, port: 80}]\n";
const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [10.0.0.1]}]\n";

#[test]
fn shared_resources_are_one_allocation_across_proxies() {
    let cache = Cache::new(CacheConfig::default());
    load(&cache, SVC);
    cache.rebuild_now();
    let w1 = cache.subscribe("scope", &identity("p1"));
    let w2 = cache.subscribe("scope", &identity("p2"));
    let (s1, s2) = (w1.rx.borrow().clone(), w2.rx.borrow().clone());
    let c1 = s1.get(XdsType::Cluster).values().next().expect("cluster");
    let c2 = s2.get(XdsType::Cluster).values().next().expect("cluster");
    assert!(Arc::ptr_eq(c1, c2));
    let r1 = &s1.get(XdsType::Route)["outbound"];
    let r2 = &s2.get(XdsType::Route)["outbound"];
    assert!(
        Arc::ptr_eq(r1, r2),
        "same namespace, same route table allocation"
    );
}

#[test]
fn only_changed_snapshots_are_pushed() {
    let cache = Cache::new(CacheConfig::default());
    load(&cache, SVC);
    cache.rebuild_now();
    let mut w = cache.subscribe("scope", &identity("p1"));
    w.rx.borrow_and_update();
    let before = w.rx.borrow().clone();
    // A rebuild with no model change pushes nothing.
    assert_eq!(cache.rebuild_now().proxies_pushed, 0);
    assert!(!w.rx.has_changed().expect("open"));
    load(&cache, SLICE);
    let report = cache.rebuild_now();
    assert_eq!(report.proxies_pushed, 1);
    assert!(w.rx.has_changed().expect("open"));
    let after = w.rx.borrow_and_update().clone();
    // The cluster did not change, so it is the very same allocation; EDS did.
    let name = "outbound|80||a.default.svc.cluster.local";
    assert!(Arc::ptr_eq(
        &before.get(XdsType::Cluster)[name],
        &after.get(XdsType::Cluster)[name]
    ));
    assert_ne!(
        before.get(XdsType::Endpoint)[name].version,
        after.get(XdsType::Endpoint)[name].version
    );
}

#[test]
fn dropping_the_last_stream_forgets_the_node() {
    let cache = Cache::new(CacheConfig::default());
    let w1 = cache.subscribe("scope", &identity("p1"));
    let w2 = cache.subscribe("scope", &identity("p1"));
    drop(w1);
    assert_eq!(cache.rebuild_now().proxies, 1);
    drop(w2);
    assert_eq!(cache.rebuild_now().proxies, 0);
}

#[tokio::test(start_paused = true)]
async fn bursts_of_changes_are_one_build() {
    let cache = Cache::new(CacheConfig {
        debounce: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    });
    let mut w = cache.subscribe("scope", &identity("p1"));
    w.rx.borrow_and_update();
    tokio::spawn(cache.clone().run_pusher());
    for i in 0..5 {
        let yaml = SVC.replace("name: a}", &format!("name: a{i}}}"));
        load(&cache, &yaml);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut pushes = 0;
    while tokio::time::timeout(Duration::from_millis(500), w.rx.changed())
        .await
        .is_ok()
    {
        w.rx.borrow_and_update();
        pushes += 1;
    }
    assert_eq!(pushes, 1, "five edits within the debounce are one push");
    assert_eq!(w.rx.borrow().get(XdsType::Cluster).len(), 5);
}
