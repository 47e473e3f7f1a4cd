//! The Kubernetes path end to end, without a cluster: the real kube-runtime watchers
//! against the in-process fake API server (real LIST/WATCH protocol), the real ADS server,
//! and an xDS client that checks what a proxy receives; status written back through the
//! status subresource by the Lease holder.
#![allow(clippy::disallowed_methods, reason = "the opt-in real-cluster switch")]

mod kube_common;

use kube_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_feed_xds_and_write_status() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("xds_server=debug")
        .with_test_writer()
        .try_init();
    let fake = FakeKube::new();
    fake.apply(service("web", &[80]));
    fake.apply(slice("web-1", "web", &["10.0.0.1"]));
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client-0", "namespace": "default", "labels": {"app": "client"}},
                      "spec": {"containers": [{"name": "app", "image": "x", "env": [{"name": "A", "value": "B"}]}]}, "status": {"podIP": "127.0.0.9"}}));
    fake.apply(split(&[("web", 90), ("web-v2", 10)]));
    fake.apply(retry("good", "5xx"));
    fake.apply(retry("bad", "teapot"));

    let (cache, mut xds) = serve(&fake).await?;
    xds.until("web's cluster and endpoints", |c| {
        c.endpoints(WEB_ENDPOINTS) == ["10.0.0.1"]
    })
    .await?;

    // Status written back, naming the field.
    eventually("TrafficSplit ResolvedRefs=False", || {
        condition(
            &fake,
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            "canary",
            "ResolvedRefs",
        ) == Some((
            "False".into(),
            "BackendNotFound".into(),
            "spec.backends[1].service: Service default/web-v2 not found".into(),
        ))
    })
    .await?;
    eventually("bad RetryPolicy Accepted=False", || {
        condition(
            &fake,
            "policy.rudder.dev/v1alpha1",
            "RetryPolicy",
            "bad",
            "Accepted",
        )
        .is_some_and(|(s, r, m)| {
            s == "False" && r == "Invalid" && m.starts_with("spec.retryOn[0]: \"teapot\"")
        })
    })
    .await?;
    eventually("good RetryPolicy Accepted=True", || {
        condition(
            &fake,
            "policy.rudder.dev/v1alpha1",
            "RetryPolicy",
            "good",
            "Accepted",
        )
        .is_some_and(|(s, _, _)| s == "True")
    })
    .await?;
    let ts = fake
        .get(
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            "default",
            "canary",
        )
        .expect("split");
    assert_eq!(ts["status"]["observedGeneration"], 1);
    assert!(ts["status"]["conditions"][0]["lastTransitionTime"].is_string());

    // The missing backend appears: the condition flips.
    fake.apply(service("web-v2", &[80]));
    eventually("TrafficSplit ResolvedRefs=True", || {
        condition(
            &fake,
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            "canary",
            "ResolvedRefs",
        )
        .is_some_and(|(s, _, _)| s == "True")
    })
    .await?;

    // Live changes reach the proxy: a new port, new endpoints, a deleted Service.
    fake.apply(service("web", &[80, 9090]));
    xds.until("the new port's cluster", |c| {
        c.has(
            XdsType::Cluster,
            "outbound|9090||web.default.svc.cluster.local",
        )
    })
    .await?;
    fake.apply(slice("web-1", "web", &["10.0.0.1", "10.0.0.2"]));
    xds.until("the second endpoint", |c| {
        c.endpoints(WEB_ENDPOINTS) == ["10.0.0.1", "10.0.0.2"]
    })
    .await?;
    fake.bookmark();
    fake.delete("v1", "Service", "default", "web-v2");
    xds.until("web-v2's cluster removed", |c| {
        !c.has(
            XdsType::Cluster,
            "outbound|80||web-v2.default.svc.cluster.local",
        )
    })
    .await?;

    // Pods: a Service selecting the client's pod gives it an inbound listener; changing
    // the pod's labels or deleting the pod takes it away.
    let client_pod = |app: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client-0", "namespace": "default", "labels": {"app": app}},
                                        "spec": {"containers": [{"name": "app"}]}, "status": {"podIP": "127.0.0.9"}})
    };
    fake.apply(service("client", &[80]));
    xds.until("the client's inbound listener", |c| {
        c.has(XdsType::Listener, "inbound|8080")
    })
    .await?;
    fake.apply(client_pod("other"));
    xds.until("the inbound listener gone after a label change", |c| {
        !c.has(XdsType::Listener, "inbound|8080")
    })
    .await?;
    fake.apply(client_pod("client"));
    xds.until("the inbound listener back", |c| {
        c.has(XdsType::Listener, "inbound|8080")
    })
    .await?;
    fake.delete("v1", "Pod", "default", "client-0");
    xds.until("the inbound listener gone with the pod", |c| {
        !c.has(XdsType::Listener, "inbound|8080")
    })
    .await?;

    // TrafficSplits: a modified spec is a new generation, and deletion is seen.
    fake.apply(split(&[("web", 50), ("nope", 50)]));
    eventually("observedGeneration 2 with the new missing backend", || {
        let Some(ts) = fake.get(
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            "default",
            "canary",
        ) else {
            return false;
        };
        ts["status"]["observedGeneration"] == 2
            && condition(
                &fake,
                "split.smi-spec.io/v1alpha4",
                "TrafficSplit",
                "canary",
                "ResolvedRefs",
            )
            .is_some_and(|(_, _, m)| m.contains("Service default/nope not found"))
    })
    .await?;
    fake.delete(
        "split.smi-spec.io/v1alpha4",
        "TrafficSplit",
        "default",
        "canary",
    );
    eventually("the split gone from the model", || {
        cache.read(|m| m.traffic_splits().count() == 0)
    })
    .await?;

    // Watches fail, history is compacted, and changes happen meanwhile: the watchers
    // get 410 Gone, re-list, and lose nothing (not even the deletion).
    let lists_before = fake
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/discovery.k8s.io/v1/endpointslices?")
                && !r.contains("watch=true")
        })
        .count();
    fake.fail_next_watches(1_000);
    fake.break_watches();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.apply(slice("web-1", "web", &["10.0.0.3"]));
    fake.delete(
        "policy.rudder.dev/v1alpha1",
        "RetryPolicy",
        "default",
        "bad",
    );
    fake.apply(service("api", &[80]));
    fake.compact();
    fake.fail_next_watches(0);
    xds.until("the endpoint changed while disconnected", |c| {
        c.endpoints(WEB_ENDPOINTS) == ["10.0.0.3"]
    })
    .await?;
    xds.until("the Service created while disconnected", |c| {
        c.has(
            XdsType::Cluster,
            "outbound|80||api.default.svc.cluster.local",
        )
    })
    .await?;
    let lists_after = fake
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/discovery.k8s.io/v1/endpointslices?")
                && !r.contains("watch=true")
        })
        .count();
    assert!(
        lists_after > lists_before,
        "a 410 leads to a re-list ({lists_before} -> {lists_after})"
    );
    assert!(cache.read(|m| {
        m.retry_policies()
            .all(|p| p.metadata.name.as_deref() != Some("bad"))
    }));

    // Only the Lease holder wrote status.
    let patches = fake.status_patches();
    assert!(!patches.is_empty());
    assert!(
        patches.iter().all(|(_, m)| m == "rudder/replica-a"),
        "{patches:?}"
    );
    Ok(())
}

#[tokio::test]
async fn only_one_replica_holds_the_lease_until_it_expires() -> anyhow::Result<()> {
    let fake = FakeKube::new();
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(fake.client(), "rudder-system");
    assert!(
        try_acquire(&api, &lease("a")).await?,
        "first replica creates and holds it"
    );
    assert!(
        !try_acquire(&api, &lease("b")).await?,
        "second replica waits"
    );
    assert!(try_acquire(&api, &lease("a")).await?, "holder renews");
    // The holder stops renewing: after the lease duration, another takes over.
    let mut stale = fake
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "rudder-system",
            "rudder-status-writer",
        )
        .expect("lease");
    stale["spec"]["renewTime"] = json!("2020-01-01T00:00:00.000000Z");
    fake.apply(stale);
    assert!(
        try_acquire(&api, &lease("b")).await?,
        "expired lease is taken over"
    );
    assert!(
        !try_acquire(&api, &lease("a")).await?,
        "old holder steps down"
    );
    let l = fake
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "rudder-system",
            "rudder-status-writer",
        )
        .expect("lease");
    assert_eq!(l["spec"]["holderIdentity"], "b");
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    Ok(())
}

#[tokio::test]
async fn watch_errors_are_retried_and_the_namespace_scope_holds() -> anyhow::Result<()> {
    let fake = FakeKube::new();
    fake.fail_next_watches(2);
    let cache = Store::new(StoreConfig::default(), Default::default(), None);
    let (_rejected, sync) = xds_server::k8s::watch::spawn(
        fake.client(),
        cache.clone(),
        &KubeScope {
            namespaces: vec!["default".into()],
        },
    );
    tokio::time::timeout(WAIT, sync.wait()).await?;
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "status": {"podIP": "10.1.1.1"}}));
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other-ns", "namespace": "kube-system"}, "status": {"podIP": "10.1.1.2"}}));
    eventually("the pod in the model", || {
        cache.read(|m| m.pod("default", "p").is_some())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        cache.read(|m| m.pod("kube-system", "other-ns").is_none()),
        "namespaces outside the scope are not watched"
    );
    Ok(())
}

/// Opt-in: against a real cluster from $KUBECONFIG. Run with
/// `RUDDER_REAL_CLUSTER=1 cargo nextest run -p xds-server --run-ignored only real_cluster`.
#[tokio::test]
#[ignore = "needs a real cluster (RUDDER_REAL_CLUSTER=1 and a kubeconfig)"]
async fn real_cluster_lists_services() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::env::var_os("RUDDER_REAL_CLUSTER").is_some(),
        "set RUDDER_REAL_CLUSTER=1 to run against a real cluster"
    );
    let client = kube::Client::try_default().await?;
    let cache = Store::new(StoreConfig::default(), Default::default(), None);
    let (_rejected, sync) =
        xds_server::k8s::watch::spawn(client, cache.clone(), &KubeScope::default());
    tokio::time::timeout(Duration::from_secs(60), sync.wait()).await?;
    assert!(
        cache.read(|m| m.services().count()) > 0,
        "a cluster has at least the kubernetes Service"
    );
    Ok(())
}

#[tokio::test]
async fn the_ca_lives_in_a_secret_and_every_replica_reuses_it() -> anyhow::Result<()> {
    let fake = FakeKube::new();
    let first =
        xds_server::pki::ca_store::from_kubernetes(fake.client(), "rudder-system", "cluster.local")
            .await?;
    let second =
        xds_server::pki::ca_store::from_kubernetes(fake.client(), "rudder-system", "cluster.local")
            .await?;
    assert_eq!(
        first.trust_bundle_pem(),
        second.trust_bundle_pem(),
        "the second replica loads the first one's root"
    );
    let secret = fake
        .get("v1", "Secret", "rudder-system", "rudder-ca")
        .expect("secret");
    assert!(
        secret["data"]["ca.key"].is_string(),
        "stored as Secret data"
    );
    Ok(())
}

/// The share of each backend cluster in the weighted route for `host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_splits_of_every_smi_version_route_as_their_v1alpha4_twin() -> anyhow::Result<()> {
    let fake = FakeKube::new();
    for s in ["a", "b", "apex1", "apex2", "apex3", "apex4"] {
        fake.apply(service(s, &[80]));
    }
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client-0", "namespace": "default", "labels": {"app": "client"}},
                      "spec": {"containers": [{"name": "app"}]}, "status": {"podIP": "127.0.0.9"}}));
    // As Flagger's smi:v1alpha1 provider writes weights (quantities), and v1alpha2 and
    // v1alpha3 (integers), each next to its v1alpha4 twin's 3:1.
    let ts = |api: &str, name: &str, apex: &str, wa: Value, wb: Value| {
        json!({"apiVersion": api, "kind": "TrafficSplit",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"service": apex, "backends": [{"service": "a", "weight": wa}, {"service": "b", "weight": wb}]}})
    };
    fake.apply(ts(
        "split.smi-spec.io/v1alpha1",
        "s1",
        "apex1",
        json!("750m"),
        json!("250m"),
    ));
    fake.apply(ts(
        "split.smi-spec.io/v1alpha2",
        "s2",
        "apex2",
        json!(30),
        json!(10),
    ));
    fake.apply(ts(
        "split.smi-spec.io/v1alpha3",
        "s3",
        "apex3",
        json!(75),
        json!(25),
    ));
    fake.apply(ts(
        "split.smi-spec.io/v1alpha4",
        "s4",
        "apex4",
        json!(3),
        json!(1),
    ));
    let (_store, mut xds) = serve(&fake).await?;
    xds.subscribe(XdsType::Route, vec![translator::OUTBOUND_ROUTE.into()])
        .await?;
    let route = |c: &XdsClient| {
        c.held
            .get(&XdsType::Route)
            .and_then(|m| m.get(translator::OUTBOUND_ROUTE))
            .cloned()
            .unwrap_or_default()
    };
    xds.until("all four splits routed", |c| {
        (1..=4).all(|i| shares(&route(c), &format!("apex{i}:80")).len() == 2)
    })
    .await?;
    let twin = shares(&route(&xds), "apex4:80");
    assert_eq!(twin["a"], 0.75, "{twin:?}");
    for i in 1..=3 {
        let got = shares(&route(&xds), &format!("apex{i}:80"));
        assert_eq!(
            got, twin,
            "the v1alpha{i} split routes as its v1alpha4 twin"
        );
    }
    // Status is written to each, whatever version it was created with.
    for name in ["s1", "s2", "s3"] {
        eventually(&format!("{name} Accepted"), || {
            condition(
                &fake,
                "split.smi-spec.io/v1alpha4",
                "TrafficSplit",
                name,
                "Accepted",
            )
            .is_some_and(|(status, _, _)| status == "True")
        })
        .await?;
    }
    // A quantity Rudder does not read is refused naming the field, as in any version.
    fake.apply(ts(
        "split.smi-spec.io/v1alpha1",
        "s1",
        "apex1",
        json!("1e3"),
        json!("250m"),
    ));
    eventually("s1 refused", || {
        condition(
            &fake,
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            "s1",
            "Accepted",
        )
        .is_some_and(|(status, _, msg)| {
            status == "False" && msg.contains("spec.backends[0].weight")
        })
    })
    .await?;
    Ok(())
}

/// Cluster mode: a proxy is served only while the pod it claims runs. When the pod is
/// deleted, its stream ends at once (its certificate may live on for a day) and a new
/// stream is refused.
#[tokio::test]
async fn a_stream_ends_when_its_pod_is_deleted() -> anyhow::Result<()> {
    let fake = FakeKube::new();
    fake.apply(service("web", &[80]));
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client-0", "namespace": "default"},
        "spec": {"serviceAccountName": "default", "containers": [{"name": "app"}]},
        "status": {"podIP": "127.0.0.9"}}));
    let config = StoreConfig {
        require_live_pod: true,
        ..StoreConfig::default()
    };
    let (cache, mut xds) = serve_with(&fake, config).await?;
    xds.until("the web cluster", |c| c.has(XdsType::Cluster, WEB))
        .await?;
    fake.delete("v1", "Pod", "default", "client-0");
    let ended = loop {
        match tokio::time::timeout(WAIT, xds.rx.message()).await? {
            Ok(Some(_)) => continue,
            Ok(None) => anyhow::bail!("the stream closed without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended:?}");
    assert!(
        ended
            .message()
            .contains("pod default/client-0 does not exist"),
        "{ended:?}"
    );
    // And it cannot come back while no pod runs as it.
    let addr = start_server(cache).await?;
    let mut again = XdsClient::connect(addr).await?;
    let refused = again.until("a refusal", |_| false).await;
    let msg = format!("{refused:?}");
    assert!(msg.contains("default/client-0 does not exist"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxys_rejection_adds_a_condition_and_never_flips_accepted() -> anyhow::Result<()> {
    // Issue 21, finding 4: a proxy of another namespace rejects the owner's RetryPolicy.
    use translator::identity::{
        DEFAULT_INBOUND_PORT, DEFAULT_OUTBOUND_PORT, ProxyIdentity, ProxyKind,
    };
    use xds_server::xds::store::stream_tag;
    use xds_server::xds::stream::Rejection;
    let fake = FakeKube::new();
    fake.apply(service("web", &[80]));
    fake.apply(retry("good", "5xx"));
    let (cache, _xds) = serve(&fake).await?;
    let get = |type_: &str| {
        condition(
            &fake,
            "policy.rudder.dev/v1alpha1",
            "RetryPolicy",
            "good",
            type_,
        )
    };
    eventually("good RetryPolicy Accepted=True", || {
        get("Accepted").is_some_and(|(s, _, _)| s == "True")
    })
    .await?;
    let scope = "spiffe://cluster.local/ns/evil/sa/attacker";
    let attacker = cache
        .attach(
            scope,
            &ProxyIdentity {
                vhds: false,
                node_id: "x.evil".into(),
                kind: ProxyKind::Envoy,
                namespace: "evil".into(),
                pod: "x".into(),
                service_account: "attacker".into(),
                pod_ip: None,
                outbound_port: DEFAULT_OUTBOUND_PORT,
                app_address: "127.0.0.1".parse()?,
                intercepted: false,
                inbound_port: DEFAULT_INBOUND_PORT,
            },
        )
        .map_err(anyhow::Error::msg)?;
    let key =
        translator::model::ObjectKey::new(translator::model::Kind::RetryPolicy, "default", "good");
    // A proxy rejects the object each time it is sent it, so the rejection names the
    // object's current revision: our own status write gives it a new one, after which
    // the first rejection no longer applies and the proxy is sent the object again.
    let view = attacker.view_key().clone();
    let mut named = None;
    eventually("RejectedByProxies naming the identity", || {
        let rev = cache.read(|m| m.rev(&key));
        if rev != named
            && let Some(rev) = rev
        {
            named = Some(rev);
            cache.on_nack(
                &view,
                &stream_tag(scope, "x.evil"),
                scope,
                &Rejection {
                    kind: XdsType::Route,
                    version: "v1".into(),
                    resources: vec!["outbound".into()],
                    error: "rejected".into(),
                    sources: Vec::new(),
                    suspects: vec![translator::encoded::Source {
                        key: key.clone(),
                        rev,
                    }],
                    precise: true,
                },
            );
        }
        get("RejectedByProxies").is_some_and(|(s, r, m)| {
            s == "True" && r == "Rejected" && m.contains(scope) && m.contains("namespace evil")
        })
    })
    .await?;
    assert_eq!(
        get("Accepted").map(|(s, r, _)| (s, r)),
        Some(("True".into(), "Accepted".into())),
        "the owner's object keeps Accepted on a proxy's word"
    );
    // The proxy leaves: the condition is removed from the object.
    drop(attacker);
    eventually("RejectedByProxies removed", || {
        get("RejectedByProxies").is_none()
    })
    .await?;
    assert!(get("Accepted").is_some_and(|(s, _, _)| s == "True"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_targets_of_every_version_are_read_and_get_status() -> anyhow::Result<()> {
    let fake = FakeKube::new();
    fake.apply(service("web", &[80]));
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}},
                      "spec": {"serviceAccountName": "web", "containers": [{"name": "app"}]}, "status": {"podIP": "127.0.0.8"}}));
    fake.apply(
        json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
                      "metadata": {"name": "all", "namespace": "default"},
                      "spec": {"matches": [{"name": "all", "pathRegex": "/.*"}]}}),
    );
    // Flagger-era v1alpha1: the fields at the top level, the rules called `specs`.
    fake.apply(json!({"apiVersion": "access.smi-spec.io/v1alpha1", "kind": "TrafficTarget",
                      "metadata": {"name": "old", "namespace": "default"},
                      "destination": {"kind": "ServiceAccount", "name": "web", "namespace": "default", "port": "80"},
                      "specs": [{"kind": "HTTPRouteGroup", "name": "all", "matches": ["all"]}],
                      "sources": [{"kind": "ServiceAccount", "name": "client", "namespace": "default"}]}));
    fake.apply(
        json!({"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
                      "metadata": {"name": "new", "namespace": "default"},
                      "spec": {"destination": {"kind": "ServiceAccount", "name": "web"},
                               "rules": [{"kind": "TCPRoute", "name": "missing"}],
                               "sources": [{"kind": "ServiceAccount", "name": "client"}]}}),
    );
    let (cache, _xds) = serve(&fake).await?;
    eventually("the v1alpha1 target accepted", || {
        condition(
            &fake,
            "access.smi-spec.io/v1alpha3",
            "TrafficTarget",
            "old",
            "Accepted",
        )
        .is_some_and(|(s, _, _)| s == "True")
    })
    .await?;
    eventually("the missing TCPRoute named", || {
        condition(
            &fake,
            "access.smi-spec.io/v1alpha3",
            "TrafficTarget",
            "new",
            "ResolvedRefs",
        )
        .is_some_and(|(s, _, m)| {
            s == "False" && m.contains("spec.rules[0]: TCPRoute default/missing does not exist")
        })
    })
    .await?;
    let old = cache.read(|m| {
        m.traffic_targets_in("default")
            .find(|t| t.metadata.name.as_deref() == Some("old"))
            .map(|t| t.effective().into_owned())
    });
    let old = old.expect("the v1alpha1 target is in the model");
    assert_eq!(old.rules[0].name, "all");
    assert_eq!(old.sources[0].name, "client");
    Ok(())
}
