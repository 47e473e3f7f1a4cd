use std::time::Duration;

use translator::XdsType;
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
        intercepted: false,
        inbound_port: translator::identity::DEFAULT_INBOUND_PORT,
    }
}

fn load(store: &Store, yaml: &str) {
    let parsed = parse_manifest(yaml).expect("valid yaml");
    store.update(|m| {
        for o in &parsed.objects {
            m.apply(o).expect("valid object");
        }
    });
}

fn store() -> Arc<Store> {
    Store::new(StoreConfig::default(), MeshConfig::default(), None)
}

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{name: http, port: 80}]\n";
// The endpoint is a pod's (as the EndpointSlice controller writes it): a mesh endpoint.
const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [10.0.0.1], targetRef: {kind: Pod, name: a-0}}]\n";

#[test]
fn proxies_of_a_view_share_one_allocation_of_its_resources() {
    let store = store();
    load(&store, SVC);
    store.rebuild_now();
    let mut a1 = store.attach("spiffe://x/ns/default/sa/default", &identity("p1"));
    let mut a2 = store.attach("spiffe://x/ns/default/sa/default", &identity("p2"));
    let (d1, d2) = (a1.desired(), a2.desired());
    assert!(Arc::ptr_eq(&d1.view, &d2.view), "one view version, shared");
    let name = "outbound|80||a.default.svc.cluster.local";
    assert!(Arc::ptr_eq(
        d1.get(XdsType::Cluster, name).expect("cluster"),
        d2.get(XdsType::Cluster, name).expect("cluster")
    ));
    assert!(
        !Arc::ptr_eq(&d1.own, &d2.own),
        "own resources are per proxy"
    );
}

#[test]
fn a_change_publishes_only_what_changed_to_the_views_that_see_it() {
    let store = store();
    load(&store, SVC);
    store.rebuild_now();
    let mut a = store.attach("s", &identity("p1"));
    let before = a.desired();
    // A rebuild with no model change publishes nothing.
    let report = store.rebuild_now();
    assert_eq!((report.views_changed, report.proxies_changed), (0, 0));
    assert!(!a.view.has_changed().expect("open"));
    load(&store, SLICE);
    let report = store.rebuild_now();
    assert_eq!(report.views_changed, 1);
    assert_eq!(
        report.proxies_changed, 0,
        "no proxy's own resources changed"
    );
    let after = a.desired();
    let name = "outbound|80||a.default.svc.cluster.local";
    assert!(Arc::ptr_eq(
        before.get(XdsType::Cluster, name).expect("c"),
        after.get(XdsType::Cluster, name).expect("c")
    ));
    let changed = after
        .view
        .changed_since(before.view.version)
        .expect("history");
    assert_eq!(changed[0].len(), 0, "no cluster changed");
    assert_eq!(changed[1].len(), 1, "one endpoint set changed");
    assert_eq!(changed[2].len(), 0, "no route changed");
}

#[test]
fn dropping_the_last_stream_forgets_the_proxy_and_its_view() {
    let store = store();
    let a1 = store.attach("s", &identity("p1"));
    let a2 = store.attach("s", &identity("p1"));
    drop(a1);
    let r = store.rebuild_now();
    assert_eq!((r.proxies, r.views), (1, 1));
    drop(a2);
    let r = store.rebuild_now();
    assert_eq!((r.proxies, r.views), (0, 0));
}

#[test]
fn the_same_node_under_two_certificates_is_two_proxies() {
    let store = store();
    let _a = store.attach("spiffe://td/ns/default/sa/a", &identity("p1"));
    let _b = store.attach("spiffe://td/ns/evil/sa/b", &identity("p1"));
    assert_eq!(store.rebuild_now().proxies, 2);
}

#[tokio::test(start_paused = true)]
async fn bursts_of_changes_are_one_build() {
    let store = Store::new(
        StoreConfig {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            full_resend: false,
            require_live_pod: false,
        },
        MeshConfig::default(),
        None,
    );
    let mut a = store.attach("s", &identity("p1"));
    a.desired();
    tokio::spawn(store.clone().run_pusher());
    for i in 0..5 {
        let yaml = SVC.replace("name: a}", &format!("name: a{i}}}"));
        load(&store, &yaml);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut pushes = 0;
    while tokio::time::timeout(Duration::from_millis(500), a.view.changed())
        .await
        .is_ok()
    {
        a.view.borrow_and_update();
        pushes += 1;
    }
    assert_eq!(pushes, 1, "five edits within the debounce are one push");
    assert_eq!(a.desired().view.maps.clusters.len(), 5);
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: default}\nspec: {serviceAccountName: default, containers: [{name: app, image: x}]}\nstatus: {podIP: 127.0.0.5}\n";

/// Cluster mode: a proxy is served only while a pod of its service account exists, and
/// its streams are told to end when the last one is deleted (finding 3 of the second
/// security review).
#[test]
fn a_proxy_whose_last_pod_is_deleted_is_ended_in_cluster_mode() {
    let store = Store::new(
        StoreConfig {
            require_live_pod: true,
            ..StoreConfig::default()
        },
        MeshConfig::default(),
        None,
    );
    assert!(!store.live("default", "default"), "no pod yet");
    load(&store, POD);
    store.rebuild_now();
    assert!(store.live("default", "default"));
    assert!(!store.live("default", "other"));
    let mut a = store.attach("spiffe://x/ns/default/sa/default", &identity("p1"));
    assert!(a.desired().own.ended.is_none());
    // An unrelated change does not end it.
    load(&store, SVC);
    store.rebuild_now();
    assert!(a.own.borrow_and_update().ended.is_none());
    store.update(|m| {
        m.delete(&ObjectKey::new(
            translator::model::Kind::Pod,
            "default",
            "p1",
        ))
    });
    store.rebuild_now();
    let ended = a.own.borrow_and_update().ended.clone();
    assert!(
        ended
            .as_deref()
            .is_some_and(|why| why.contains("default/default")),
        "{ended:?}"
    );
    // Manifest mode keeps serving proxies whatever the pods.
    let manifest = store_with_pod_then_none();
    assert!(manifest.live("default", "default"));
}

fn store_with_pod_then_none() -> Arc<Store> {
    let s = store();
    load(&s, POD);
    s.update(|m| {
        m.delete(&ObjectKey::new(
            translator::model::Kind::Pod,
            "default",
            "p1",
        ))
    });
    s.rebuild_now();
    s
}
