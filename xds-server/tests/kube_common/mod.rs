//! Helpers shared by the Kubernetes end-to-end tests: objects for the fake API server,
//! a store fed by the real watchers and serving ADS, and a delta xDS client.

#![allow(dead_code, unused_imports)]

pub(crate) use std::collections::BTreeMap;
pub(crate) use std::sync::Arc;
pub(crate) use std::time::Duration;

pub(crate) use envoy_types::pb::envoy::config::cluster::v3::Cluster;
pub(crate) use envoy_types::pb::envoy::config::core::v3::Node;
pub(crate) use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
pub(crate) use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
pub(crate) use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
pub(crate) use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind as PbKind};
pub(crate) use prost::Message;
pub(crate) use serde_json::{Value, json};
pub(crate) use testbed::fake_kube::FakeKube;
pub(crate) use tokio::sync::mpsc;
pub(crate) use xds_types::XdsType;
pub(crate) use xds_server::k8s::lease::{LeaseConfig, try_acquire};
pub(crate) use xds_server::k8s::watch::KubeScope;
pub(crate) use xds_server::xds::store::{Store, StoreConfig};

pub(crate) const WAIT: Duration = Duration::from_secs(20);
pub(crate) const WEB: &str = "outbound|80||web.default.svc.cluster.local";
/// The endpoints (EDS name) of [`WEB`].
pub(crate) const WEB_ENDPOINTS: &str = "web.default:80";

pub(crate) fn service(name: &str, ports: &[u16]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": format!("http-{p}"), "port": p, "targetPort": 8080}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default",
           "managedFields": [{"manager": "kubectl"}]},
           "spec": {"selector": {"app": name}, "ports": ports}})
}

pub(crate) fn slice(name: &str, svc: &str, ips: &[&str]) -> Value {
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4", "ports": [{"name": "http-80", "port": 8080}], "endpoints": eps})
}

pub(crate) fn split(backends: &[(&str, i64)]) -> Value {
    let b: Vec<Value> = backends
        .iter()
        .map(|(s, w)| json!({"service": s, "weight": w}))
        .collect();
    json!({"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
           "metadata": {"name": "canary", "namespace": "default"}, "spec": {"service": "web", "backends": b}})
}

pub(crate) fn retry(name: &str, retry_on: &str) -> Value {
    json!({"apiVersion": "policy.rudder.dev/v1alpha1", "kind": "RetryPolicy",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"targetRef": {"kind": "Service", "name": "web"}, "retryOn": [retry_on], "numRetries": 2}})
}

pub(crate) fn node() -> Node {
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
pub(crate) struct XdsClient {
    pub(crate) tx: mpsc::Sender<DeltaDiscoveryRequest>,
    pub(crate) rx: tonic::Streaming<DeltaDiscoveryResponse>,
    pub(crate) held: BTreeMap<XdsType, BTreeMap<String, Vec<u8>>>,
}

impl XdsClient {
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
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

    pub(crate) async fn subscribe(&self, kind: XdsType, names: Vec<String>) -> anyhow::Result<()> {
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
    pub(crate) async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        self.until_within(what, WAIT, done).await
    }

    pub(crate) async fn until_within(
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
                // As Envoy does: each EDS cluster's endpoints, by its service name.
                let names: Vec<String> = resp
                    .resources
                    .iter()
                    .filter_map(|r| r.resource.as_ref())
                    .filter_map(|any| Cluster::decode(any.value.as_slice()).ok())
                    .filter_map(|c| c.eds_cluster_config.map(|e| e.service_name))
                    .collect();
                if !names.is_empty() {
                    self.subscribe(XdsType::Endpoint, names).await?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn has(&self, kind: XdsType, name: &str) -> bool {
        self.held.get(&kind).is_some_and(|m| m.contains_key(name))
    }

    pub(crate) fn endpoints(&self, eds_name: &str) -> Vec<String> {
        let Some(bytes) = self
            .held
            .get(&XdsType::Endpoint)
            .and_then(|m| m.get(eds_name))
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

    pub(crate) fn names(&self) -> Vec<String> {
        self.held.values().flat_map(|m| m.keys().cloned()).collect()
    }
}

pub(crate) fn condition(
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

pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    while !check() {
        anyhow::ensure!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub(crate) async fn start_server(cache: Arc<Store>) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(xds_server::xds::serve::serve_ads(
        listener,
        xds_server::xds::serve::XdsState::new(cache),
        None,
        xds_server::config::Limits::default(),
    ));
    Ok(addr)
}

/// A store fed by watchers of `fake` (holding the status Lease), serving ADS, synced, and
/// a delta client connected to it.
pub(crate) async fn serve(fake: &FakeKube) -> anyhow::Result<(Arc<Store>, XdsClient)> {
    serve_with(fake, StoreConfig::default()).await
}

/// [`serve`] with store settings (the debounces are made short).
pub(crate) async fn serve_with(
    fake: &FakeKube,
    config: StoreConfig,
) -> anyhow::Result<(Arc<Store>, XdsClient)> {
    let cache = Store::new(
        StoreConfig {
            debounce: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            ..config
        },
        Default::default(),
        None,
    );
    tokio::spawn(cache.clone().run_pusher());
    let sync = xds_server::k8s::start::start_kubernetes(
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

pub(crate) fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "rudder-system".into(),
        name: "rudder-status-writer".into(),
        identity: identity.into(),
    }
}

pub(crate) fn shares(route: &[u8], host: &str) -> BTreeMap<String, f64> {
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
