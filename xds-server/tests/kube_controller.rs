//! The Kubernetes path end to end, without a cluster: the real kube-runtime watchers
//! against the in-process fake API server (real LIST/WATCH protocol), the real ADS server,
//! and an xDS client that checks what a proxy receives; status written back through the
//! status subresource by the Lease holder.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind as PbKind};
use prost::Message;
use serde_json::{Value, json};
use testbed::fake_kube::FakeKube;
use tokio::sync::mpsc;
use translator::XdsType;
use xds_server::k8s::lease::{LeaseConfig, try_acquire};
use xds_server::k8s::watch::KubeScope;
use xds_server::xds::store::{Store, StoreConfig};

const WAIT: Duration = Duration::from_secs(20);
const WEB: &str = "outbound|80||web.default.svc.cluster.local";

fn service(name: &str, ports: &[u16]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": format!("http-{p}"), "port": p, "targetPort": 8080}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default",
           "managedFields": [{"manager": "kubectl"}]},
           "spec": {"selector": {"app": name}, "ports": ports}})
}

fn slice(name: &str, svc: &str, ips: &[&str]) -> Value {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4", "ports": [{"name": "http-80", "port": 8080}], "endpoints": eps})
}

fn split(backends: &[(&str, i64)]) -> Value {
    let b: Vec<Value> = backends
        .iter()
        .map(|(s, w)| json!({"service": s, "weight": w}))
        .collect();
    json!({"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
           "metadata": {"name": "canary", "namespace": "default"}, "spec": {"service": "web", "backends": b}})
}

fn retry(name: &str, retry_on: &str) -> Value {
    json!({"apiVersion": "policy.rudder.dev/v1alpha1", "kind": "RetryPolicy",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"targetRef": {"kind": "Service", "name": "web"}, "retryOn": [retry_on], "numRetries": 2}})
}

fn node() -> Node {
    let s = |v: &str| PbValue {
        kind: Some(PbKind::StringValue(v.into())),
    };
    let fields = [
        ("rudder.dev/namespace", "default"),
        ("rudder.dev/pod", "client-0"),
        ("rudder.dev/pod-ip", "127.0.0.9"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), s(v)))
    .collect();
    Node {
        id: "client-0.default".into(),
        user_agent_name: "envoy".into(),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

/// A delta ADS client that ACKs everything and keeps what it holds.
struct XdsClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<DeltaDiscoveryResponse>,
    held: BTreeMap<XdsType, BTreeMap<String, Vec<u8>>>,
}

impl XdsClient {
    async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await?;
        let (tx, rx) = mpsc::channel(16);
        let stream = client
            .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        tx.send(DeltaDiscoveryRequest {
            node: Some(node()),
            type_url: XdsType::Cluster.type_url().into(),
            ..Default::default()
        })
        .await?;
        tx.send(DeltaDiscoveryRequest {
            type_url: XdsType::Listener.type_url().into(),
            ..Default::default()
        })
        .await?;
        Ok(XdsClient {
            tx,
            rx: stream,
            held: BTreeMap::new(),
        })
    }

    async fn subscribe(&self, kind: XdsType, names: Vec<String>) -> anyhow::Result<()> {
        self.tx
            .send(DeltaDiscoveryRequest {
                type_url: kind.type_url().into(),
                resource_names_subscribe: names,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Reads responses (ACKing each) until `done` holds.
    async fn until(&mut self, what: &str, done: impl Fn(&Self) -> bool) -> anyhow::Result<()> {
        self.until_within(what, WAIT, done).await
    }

    async fn until_within(
        &mut self,
        what: &str,
        wait: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        while !done(self) {
            let resp = tokio::time::timeout_at(deadline, self.rx.message())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("timed out waiting for {what}; holding {:?}", self.names())
                })??
                .ok_or_else(|| anyhow::anyhow!("stream closed"))?;
            let kind =
                XdsType::from_type_url(&resp.type_url).ok_or_else(|| anyhow::anyhow!("type"))?;
            let held = self.held.entry(kind).or_default();
            for r in &resp.resources {
                held.insert(
                    r.name.clone(),
                    r.resource
                        .as_ref()
                        .map(|a| a.value.clone())
                        .unwrap_or_default(),
                );
            }
            for name in &resp.removed_resources {
                held.remove(name);
            }
            self.tx
                .send(DeltaDiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce.clone(),
                    ..Default::default()
                })
                .await?;
            if kind == XdsType::Cluster {
                let names: Vec<String> = resp.resources.iter().map(|r| r.name.clone()).collect();
                if !names.is_empty() {
                    self.subscribe(XdsType::Endpoint, names).await?;
                }
            }
        }
        Ok(())
    }

    fn has(&self, kind: XdsType, name: &str) -> bool {
        self.held.get(&kind).is_some_and(|m| m.contains_key(name))
    }

    fn endpoints(&self, cluster: &str) -> Vec<String> {
        let Some(bytes) = self
            .held
            .get(&XdsType::Endpoint)
            .and_then(|m| m.get(cluster))
        else {
            return vec![];
        };
        let Ok(cla) = ClusterLoadAssignment::decode(bytes.as_slice()) else {
            return vec![];
        };
        let mut out: Vec<String> = cla
            .endpoints
            .iter()
            .flat_map(|l| l.lb_endpoints.iter())
            .filter_map(|e| match &e.host_identifier {
                Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                    match ep.address.as_ref()?.address.as_ref()? {
                        envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s) => Some(s.address.clone()),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    fn names(&self) -> Vec<String> {
        self.held.values().flat_map(|m| m.keys().cloned()).collect()
    }
}

fn condition(
    fake: &FakeKube,
    api: &str,
    kind: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let obj = fake.get(api, kind, "default", name)?;
    let c = obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    Some((
        c["status"].as_str()?.into(),
        c["reason"].as_str()?.into(),
        c["message"].as_str()?.into(),
    ))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    while !check() {
        anyhow::ensure!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn start_server(cache: Arc<Store>) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(xds_server::server::serve_ads(
        listener,
        xds_server::server::Shared::new(cache),
        None,
        xds_server::server::Limits::default(),
    ));
    Ok(addr)
}

/// A store fed by watchers of `fake` (holding the status Lease), serving ADS, synced, and
/// a delta client connected to it.
async fn serve(fake: &FakeKube) -> anyhow::Result<(Arc<Store>, XdsClient)> {
    let cache = Store::new(
        StoreConfig {
            debounce: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            ..StoreConfig::default()
        },
        Default::default(),
        None,
    );
    tokio::spawn(cache.clone().run_pusher());
    let sync = xds_server::server::start_kubernetes(
        fake.client(),
        cache.clone(),
        &KubeScope::default(),
        lease("replica-a"),
    );
    tokio::time::timeout(WAIT, sync.wait()).await?;
    cache.rebuild_now();
    let addr = start_server(cache.clone()).await?;
    let xds = XdsClient::connect(addr).await?;
    Ok((cache, xds))
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "rudder-system".into(),
        name: "rudder-status-writer".into(),
        identity: identity.into(),
    }
}

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
        c.endpoints(WEB) == ["10.0.0.1"]
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
        c.endpoints(WEB) == ["10.0.0.1", "10.0.0.2"]
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
        c.endpoints(WEB) == ["10.0.0.3"]
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
    let first = xds_server::identity::ca_store::from_kubernetes(
        fake.client(),
        "rudder-system",
        "cluster.local",
    )
    .await?;
    let second = xds_server::identity::ca_store::from_kubernetes(
        fake.client(),
        "rudder-system",
        "cluster.local",
    )
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
fn shares(route: &[u8], host: &str) -> BTreeMap<String, f64> {
    use envoy_types::pb::envoy::config::route::v3::{
        RouteConfiguration, route::Action, route_action::ClusterSpecifier,
    };
    let Ok(rc) = RouteConfiguration::decode(route) else {
        return BTreeMap::new();
    };
    let Some(vh) = rc
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d == host))
    else {
        return BTreeMap::new();
    };
    let Some(Action::Route(action)) = vh.routes.last().and_then(|r| r.action.as_ref()) else {
        return BTreeMap::new();
    };
    let Some(ClusterSpecifier::WeightedClusters(w)) = &action.cluster_specifier else {
        return BTreeMap::new();
    };
    let total: f64 = w
        .clusters
        .iter()
        .filter_map(|c| c.weight.map(|x| f64::from(x.value)))
        .sum();
    w.clusters
        .iter()
        .map(|c| {
            let short = c.name.rsplit('|').next().unwrap_or_default();
            let svc = short.split('.').next().unwrap_or_default().to_string();
            (
                svc,
                c.weight.map(|x| f64::from(x.value)).unwrap_or(0.0) / total,
            )
        })
        .collect()
}

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

/// Rudder's entry in a route's `status.parents` for `parent`: (type, status, reason).
fn route_conditions(fake: &FakeKube, kind: &str, name: &str) -> Vec<(String, String, String)> {
    let Some(obj) = fake.get("gateway.networking.k8s.io/v1", kind, "default", name) else {
        return Vec::new();
    };
    obj["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] == "rudder.dev/mesh")
        .flat_map(|p| p["conditions"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn http_route(name: &str, parent: &str, backends: Value) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": parent, "port": 80},
                                   {"name": "public-gateway"}],
                    "rules": [{"backendRefs": backends}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_route_their_service_and_report_status_per_parent() -> anyhow::Result<()> {
    let fake = FakeKube::new();
    for s in ["web", "web-v1", "web-v2"] {
        fake.apply(service(s, &[80]));
    }
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client-0", "namespace": "default", "labels": {"app": "client"}},
                      "spec": {"containers": [{"name": "app"}]}, "status": {"podIP": "127.0.0.9"}}));
    fake.apply(split(&[("web-v1", 1)]));
    let mut route = http_route(
        "web",
        "web",
        json!([{"name": "web-v1", "port": 80, "weight": 3}, {"name": "web-v2", "port": 80, "weight": 1},
               {"name": "web-v3", "port": 80}]),
    );
    // Another controller's entry (the gateway parent's) must survive Rudder's writes.
    route["status"] = json!({"parents": [{"parentRef": {"name": "public-gateway"}, "controllerName": "example.com/gateway",
                                          "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]});
    fake.apply(route);
    let (_store, mut xds) = serve(&fake).await?;
    xds.subscribe(XdsType::Route, vec![translator::OUTBOUND_ROUTE.into()])
        .await?;
    let held = |c: &XdsClient| {
        c.held
            .get(&XdsType::Route)
            .and_then(|m| m.get(translator::OUTBOUND_ROUTE))
            .cloned()
            .unwrap_or_default()
    };
    xds.until("the route's weights", |c| {
        shares(&held(c), "web:80").len() == 3
    })
    .await?;
    // The missing backend keeps its share, which fails.
    let got = shares(&held(&xds), "web:80");
    assert_eq!(got["web-v1"], 0.6, "{got:?}");
    assert_eq!(got["rudder-no-backend"], 0.2, "{got:?}");
    eventually("route status", || {
        route_conditions(&fake, "HTTPRoute", "web")
            == vec![
                ("Accepted".into(), "True".into(), "Accepted".into()),
                (
                    "ResolvedRefs".into(),
                    "False".into(),
                    "BackendNotFound".into(),
                ),
            ]
    })
    .await?;
    let obj = fake
        .get(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "default",
            "web",
        )
        .expect("route");
    let parents = obj["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(parents.len(), 2, "{parents:?}");
    assert_eq!(parents[0]["controllerName"], "example.com/gateway");
    assert_eq!(
        parents[1]["parentRef"],
        json!({"group": "", "kind": "Service", "name": "web", "port": 80})
    );
    eventually("the TrafficSplit is Conflicted", || {
        condition(
            &fake,
            "split.smi-spec.io/v1alpha4",
            "TrafficSplit",
            "canary",
            "Accepted",
        )
        .is_some_and(|(s, r, m)| {
            s == "False" && r == "Conflicted" && m.contains("HTTPRoute default/web")
        })
    })
    .await?;
    // A route using a filter Rudder does not implement is refused by name, for every
    // Service parent; the last good version keeps routing.
    let mut bad = http_route("web", "web", json!([{"name": "web-v2", "port": 80}]));
    bad["spec"]["rules"][0]["filters"] =
        json!([{"type": "URLRewrite", "urlRewrite": {"hostname": "x"}}]);
    fake.apply(bad);
    eventually("UnsupportedValue", || {
        route_conditions(&fake, "HTTPRoute", "web")
            .first()
            .is_some_and(|c| c.1 == "False" && c.2 == "UnsupportedValue")
    })
    .await?;
    // Whatever the control plane sends in the next second is read: the last good route
    // is what the client still holds.
    let _ = xds
        .until_within("anything more", Duration::from_secs(1), |_| false)
        .await;
    assert_eq!(shares(&held(&xds), "web:80")["web-v1"], 0.6);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gateway_api_crds_rudder_runs_and_picks_them_up_once_installed()
-> anyhow::Result<()> {
    let fake = FakeKube::new();
    fake.set_gateway_api(false);
    for s in ["web", "web-v2"] {
        fake.apply(service(s, &[80]));
    }
    fake.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client-0", "namespace": "default", "labels": {"app": "client"}},
                      "spec": {"containers": [{"name": "app"}]}, "status": {"podIP": "127.0.0.9"}}));
    // `serve` waits for every watcher's first list: it returns although two of them
    // get 404.
    let (_store, mut xds) = serve(&fake).await?;
    xds.subscribe(XdsType::Route, vec![translator::OUTBOUND_ROUTE.into()])
        .await?;
    xds.until("routes served", |c| {
        c.held
            .get(&XdsType::Route)
            .is_some_and(|m| m.contains_key(translator::OUTBOUND_ROUTE))
    })
    .await?;
    // Installed later, with a route: it takes effect without a restart (the watchers
    // retry with backoff, up to about 30 s).
    fake.set_gateway_api(true);
    fake.apply(http_route(
        "web",
        "web",
        json!([{"name": "web", "port": 80, "weight": 1}, {"name": "web-v2", "port": 80, "weight": 1}]),
    ));
    xds.until_within(
        "the route after the CRDs were installed",
        Duration::from_secs(60),
        |c| {
            let route = c
                .held
                .get(&XdsType::Route)
                .and_then(|m| m.get(translator::OUTBOUND_ROUTE))
                .cloned()
                .unwrap_or_default();
            shares(&route, "web:80").len() == 2
        },
    )
    .await?;
    Ok(())
}
