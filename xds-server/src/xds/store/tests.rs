use std::time::Duration;

use translator::identity::{ProxyIdentity, ProxyKind};
use translator::model::parse_manifest;
use xds_types::XdsType;

use super::*;
use crate::xds::stream::Rejection;

fn identity(pod: &str) -> ProxyIdentity {
    ProxyIdentity {
        vhds: false,
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
    let mut a1 = store
        .attach("spiffe://x/ns/default/sa/default", &identity("p1"))
        .expect("attached");
    let mut a2 = store
        .attach("spiffe://x/ns/default/sa/default", &identity("p2"))
        .expect("attached");
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
    let mut a = store.attach("s", &identity("p1")).expect("attached");
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
    let a1 = store.attach("s", &identity("p1")).expect("attached");
    let a2 = store.attach("s", &identity("p1")).expect("attached");
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
    let _a = store
        .attach("spiffe://td/ns/default/sa/a", &identity("p1"))
        .expect("attached");
    let _b = store
        .attach("spiffe://td/ns/evil/sa/b", &identity("p1"))
        .expect("attached");
    assert_eq!(store.rebuild_now().proxies, 2);
}

/// A store batching bursts with `debounce`, for at most `max_delay`.
fn batching(debounce: Duration, max_delay: Duration) -> Arc<Store> {
    Store::new(
        StoreConfig {
            debounce,
            max_delay,
            full_resend: false,
            vhds: true,
            require_live_pod: false,
        },
        MeshConfig::default(),
        None,
    )
}

#[tokio::test(start_paused = true)]
async fn a_burst_after_a_quiet_period_is_two_builds() {
    let store = batching(Duration::from_millis(100), Duration::from_secs(1));
    let mut a = store.attach("s", &identity("p1")).expect("attached");
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
    assert_eq!(
        pushes, 2,
        "the first edit to a quiet store is pushed at once, the other four of the burst together"
    );
    assert_eq!(a.desired().view.maps.clusters.len(), 5);
}

#[tokio::test]
async fn a_change_to_a_quiet_store_is_pushed_without_waiting_for_the_debounce() {
    let hour = Duration::from_secs(3600);
    let store = batching(hour, hour);
    let mut a = store.attach("s", &identity("p1")).expect("attached");
    a.desired();
    tokio::spawn(store.clone().run_pusher());
    load(&store, SVC);
    tokio::time::timeout(Duration::from_secs(30), a.view.changed())
        .await
        .expect("a lone change is pushed at once, not after the hour-long debounce")
        .expect("open");
    assert_eq!(a.desired().view.maps.clusters.len(), 1);
    // A change right after that push is a burst: it waits for the debounce.
    load(&store, &SVC.replace("name: a}", "name: b}"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), a.view.changed())
            .await
            .is_err(),
        "a change following a push closely is batched"
    );
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: default}\nspec: {serviceAccountName: default, containers: [{name: app, image: x}]}\nstatus: {podIP: 127.0.0.5}\n";

fn cluster_store() -> Arc<Store> {
    Store::new(
        StoreConfig {
            require_live_pod: true,
            ..StoreConfig::default()
        },
        MeshConfig::default(),
        None,
    )
}

fn delete_pod(store: &Store, name: &str) {
    store.update(|m| {
        m.delete(&ObjectKey::new(
            translator::model::Kind::Pod,
            "default",
            name,
        ))
    });
    store.rebuild_now();
}

fn ended(a: &mut Attachment) -> Option<String> {
    a.own.borrow_and_update().ended.as_deref().map(String::from)
}

/// Cluster mode: a proxy is served only while the pod it claims runs, and its streams are
/// told to end when that pod is deleted or finishes (finding 3 of the second security
/// review). Manifest mode serves whatever the pods.
#[test]
fn a_proxy_whose_pod_is_gone_or_finished_is_ended_in_cluster_mode() {
    let store = cluster_store();
    let scope = "spiffe://x/ns/default/sa/default";
    let err = store.attach(scope, &identity("p1")).err();
    assert!(
        err.as_deref().is_some_and(|e| e.contains("does not exist")),
        "{err:?}"
    );
    load(&store, POD);
    store.rebuild_now();
    let mut a = store.attach(scope, &identity("p1")).expect("its pod runs");
    assert!(ended(&mut a).is_none());
    // Another account's claim on the pod, or a pod that does not exist, is refused.
    let mut other = identity("p1");
    other.service_account = "admin".into();
    assert!(
        store
            .attach("spiffe://x/ns/default/sa/admin", &other)
            .is_err()
    );
    assert!(store.attach(scope, &identity("p2")).is_err());
    // An unrelated change does not end it.
    load(&store, SVC);
    store.rebuild_now();
    assert!(ended(&mut a).is_none());
    delete_pod(&store, "p1");
    assert!(
        ended(&mut a).is_some_and(|w| w.contains("default/p1")),
        "ended"
    );
    // A finished pod (a completed Job, an evicted pod) vouches for nothing either.
    load(
        &store,
        &POD.replace("podIP: 127.0.0.5", "podIP: 127.0.0.5, phase: Failed"),
    );
    store.rebuild_now();
    let refused = store.attach(scope, &identity("p1")).err();
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("finished")),
        "{refused:?}"
    );
    // Manifest mode keeps serving proxies whatever the pods.
    let manifest = self::store();
    assert!(manifest.attach(scope, &identity("p1")).is_ok());
}

/// A stream of an ended slot and a new stream of a re-created pod of the same name (a
/// StatefulSet) share the slot: the new pod's stream is served, and when that pod goes
/// too, both are told to end again.
#[test]
fn a_slot_reused_by_a_recreated_pod_ends_again_when_it_goes() {
    let store = cluster_store();
    let scope = "spiffe://x/ns/default/sa/default";
    load(&store, POD);
    store.rebuild_now();
    let mut first = store.attach(scope, &identity("p1")).expect("runs");
    delete_pod(&store, "p1");
    assert!(ended(&mut first).is_some());
    load(&store, POD);
    store.rebuild_now();
    let mut second = store.attach(scope, &identity("p1")).expect("runs again");
    assert!(ended(&mut second).is_none(), "served again");
    delete_pod(&store, "p1");
    assert!(ended(&mut second).is_some(), "ended again");
    assert!(ended(&mut first).is_some());
}

/// Deleting one pod ends its own proxy's streams, never its neighbours'.
#[test]
fn a_deleted_pod_ends_only_the_proxies_that_claim_it() {
    let store = cluster_store();
    let scope = "spiffe://x/ns/default/sa/default";
    load(&store, POD);
    load(&store, &POD.replace("name: p1", "name: p2"));
    store.rebuild_now();
    let mut p1 = store.attach(scope, &identity("p1")).expect("runs");
    let mut p2 = store.attach(scope, &identity("p2")).expect("runs");
    delete_pod(&store, "p2");
    assert!(ended(&mut p2).is_some());
    assert!(ended(&mut p1).is_none(), "its neighbour is served on");
    delete_pod(&store, "p1");
    assert!(ended(&mut p1).is_some());
}

/// A proxy of service account `sa` in namespace `ns`.
fn proxy_of(ns: &str, sa: &str, node: &str) -> ProxyIdentity {
    ProxyIdentity {
        node_id: node.into(),
        namespace: ns.into(),
        pod: node.into(),
        service_account: sa.into(),
        ..identity(node)
    }
}

/// Follows the view the proxy's own version names, as the server's stream loop does.
fn follow(a: &mut Attachment) {
    let view = a.own.borrow_and_update().view.clone();
    if let Some(v) = view {
        a.switch_view(v);
    }
}

/// Whether a proxy's current view holds a route made from `object`.
fn holds(a: &mut Attachment, object: &ObjectKey) -> bool {
    a.desired()
        .view
        .maps
        .routes
        .values()
        .any(|r| r.sources.iter().any(|s| s.key == *object))
}

#[test]
fn a_rejection_leaves_the_object_out_for_the_rejecting_identity_only_until_it_leaves() {
    // Issue 21, finding 4: a proxy in `evil` rejects every route table holding a policy
    // of `default`.
    let store = store();
    load(
        &store,
        &format!(
            "{SVC}---\napiVersion: policy.rudder.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {{name: r}}\nspec:\n  targetRef: {{name: a}}\n  timeout: 9s\n"
        ),
    );
    store.rebuild_now();
    let retry = ObjectKey::new(translator::model::Kind::RetryPolicy, "default", "r");
    let rev = store.read(|m| m.rev(&retry)).expect("rev");
    let attacker_id = "spiffe://cluster.local/ns/evil/sa/attacker";
    let mut attacker = store
        .attach(attacker_id, &proxy_of("evil", "attacker", "x"))
        .expect("attached");
    let mut twin = store
        .attach(attacker_id, &proxy_of("evil", "attacker", "twin"))
        .expect("attached");
    let mut neighbour = store
        .attach(
            "spiffe://cluster.local/ns/evil/sa/neighbour",
            &proxy_of("evil", "neighbour", "n"),
        )
        .expect("attached");
    let shared = attacker.view_key().clone();
    assert!(holds(&mut neighbour, &retry) && holds(&mut twin, &retry));
    store.on_nack(
        &shared,
        &stream_tag(attacker_id, "x"),
        attacker_id,
        &Rejection {
            kind: XdsType::Route,
            version: "v1".into(),
            resources: vec!["outbound".into()],
            error: "no".into(),
            sources: Vec::new(),
            suspects: vec![translator::encoded::Source {
                key: retry.clone(),
                rev,
            }],
            precise: true,
        },
    );
    store.rebuild_now();
    // The streams follow their proxy's view as the server's stream loop does.
    for a in [&mut attacker, &mut twin, &mut neighbour] {
        follow(a);
    }
    assert_eq!(*attacker.view_key(), shared.variant_for(attacker_id));
    assert_eq!(
        *twin.view_key(),
        shared.variant_for(attacker_id),
        "a proxy of the same identity under another node id follows the variant"
    );
    assert!(!holds(&mut attacker, &retry) && !holds(&mut twin, &retry));
    assert_eq!(
        *neighbour.view_key(),
        shared,
        "the neighbour stays on the shared view"
    );
    assert!(
        holds(&mut neighbour, &retry),
        "the neighbour keeps the object"
    );
    assert_eq!(store.contained().len(), 1);
    // The rejecting proxy leaves: lifted for its identity; the twin gets it back.
    drop(attacker);
    store.rebuild_now();
    follow(&mut twin);
    assert_eq!(*twin.view_key(), shared);
    assert!(holds(&mut twin, &retry));
    assert!(store.contained().is_empty());
    let r = store.rebuild_now();
    assert_eq!(r.views, 1, "the variant is forgotten");
}
