//! A raw ADS client for tests: it connects with a client certificate of its own choosing,
//! sends whatever node it is told to, subscribes to every type, ACKs everything and
//! records every resource it is sent. Security tests use it to play a hostile workload;
//! limit tests use it to send what a real proxy never would.
//!
//! One client skeleton ([`RawAds`]) runs both ADS variants; what differs (the messages,
//! how a response is recorded and answered) is a small `Variant`.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value::Kind};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Status, Streaming};
use xds_types::XdsType;

/// Type URL of clusters.
pub const CLUSTER: &str = XdsType::Cluster.type_url();
/// Type URL of endpoints.
pub const ENDPOINT: &str = XdsType::Endpoint.type_url();
/// Type URL of listeners.
pub const LISTENER: &str = XdsType::Listener.type_url();
/// Type URL of routes.
pub const ROUTE: &str = XdsType::Route.type_url();
/// Type URL of secrets.
pub const SECRET: &str = XdsType::Secret.type_url();
/// Type URL of virtual hosts served apart (VHDS).
pub const VIRTUAL_HOST: &str = XdsType::VirtualHost.type_url();

/// Client credentials in a directory: `xds-client.crt`, `xds-client.key`, `xds-ca.crt`.
#[derive(Clone, Debug)]
pub struct Creds {
    /// The directory.
    pub dir: PathBuf,
}

impl Creds {
    /// Issues credentials for `namespace`/`service_account` from the CA in `ca_dir` with
    /// `xds-server credentials`.
    pub fn issue(
        ca_dir: &Path,
        namespace: &str,
        service_account: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let out = Command::new(crate::procs::workspace_bin("xds-server")?)
            .args(["credentials", "--namespace", namespace])
            .args(["--service-account", service_account])
            .arg("--ca-dir")
            .arg(ca_dir)
            .arg("--cert-dir")
            .arg(dir)
            .output()
            .context("running xds-server credentials")?;
        if !out.status.success() {
            bail!(
                "xds-server credentials failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Creds {
            dir: dir.to_path_buf(),
        })
    }

    /// A TLS channel to the control plane at `addr` with these credentials.
    pub async fn channel(&self, addr: SocketAddr) -> anyhow::Result<Channel> {
        self.channel_from(addr, None).await
    }

    /// A TLS channel to `addr` from the local address `from` (e.g. 127.0.0.N, to play
    /// several pods or nodes of one workload).
    pub async fn channel_from(
        &self,
        addr: SocketAddr,
        from: Option<std::net::IpAddr>,
    ) -> anyhow::Result<Channel> {
        let read = |f: &str| {
            std::fs::read_to_string(self.dir.join(f)).with_context(|| format!("reading {f}"))
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("xds-ca.crt")?))
            .identity(Identity::from_pem(
                read("xds-client.crt")?,
                read("xds-client.key")?,
            ))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .local_address(from)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .context("connecting to the control plane")?;
        Ok(channel)
    }
}

/// A node as `xds-server bootstrap` writes it, with any id and identity claims.
pub fn node(id: &str, namespace: &str, pod: &str, service_account: &str) -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    Node {
        id: id.to_string(),
        user_agent_name: "envoy".into(),
        metadata: Some(Struct {
            fields: [
                ("rudder.dev/namespace", namespace),
                ("rudder.dev/pod", pod),
                ("rudder.dev/service-account", service_account),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), s(v)))
            .collect(),
        }),
        ..Default::default()
    }
}

/// What a raw client has been sent.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// The latest version of every resource, by (type URL, name).
    pub resources: BTreeMap<(String, String), Any>,
    /// Every resource ever received, by (type URL, name).
    pub ever: BTreeMap<(String, String), Vec<Any>>,
    /// Responses received.
    pub responses: usize,
    /// How the stream ended, if it did.
    pub ended: Option<String>,
}

impl Received {
    /// Names of the resources of `type_url` held now.
    pub fn names(&self, type_url: &str) -> Vec<String> {
        self.resources
            .keys()
            .filter(|(t, _)| t == type_url)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Whether the trust bundle (`ROOTCA`) was received.
    pub fn has_trust_bundle(&self) -> bool {
        self.resources
            .keys()
            .any(|(t, n)| t == SECRET && n == "ROOTCA")
    }

    /// How many resources ever received carry private key material: a Secret with a
    /// private key, or any resource whose bytes hold a PEM private key.
    pub fn private_keys_seen(&self) -> usize {
        self.ever
            .iter()
            .flat_map(|((t, _), anys)| anys.iter().map(move |a| (t, a)))
            .filter(|(t, any)| {
                let pem = any
                    .value
                    .windows(b"PRIVATE KEY".len())
                    .any(|w| w == b"PRIVATE KEY");
                let secret = *t == SECRET
                    && Secret::decode(any.value.as_slice()).is_ok_and(|s| {
                        matches!(s.r#type, Some(secret::Type::TlsCertificate(c)) if c.private_key.is_some())
                    });
                pem || secret
            })
            .count()
    }

    /// The SPIFFE IDs of every certificate Secret ever received.
    pub fn certificate_identities(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ever
            .iter()
            .filter(|((t, _), _)| t == SECRET)
            .flat_map(|(_, anys)| anys.iter())
            .filter_map(|any| Secret::decode(any.value.as_slice()).ok())
            .filter_map(|s| match s.r#type {
                Some(secret::Type::TlsCertificate(c)) => c.certificate_chain,
                _ => None,
            })
            .filter_map(|ds| match ds.specifier {
                Some(
                    envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(
                        b,
                    ),
                ) => Some(b),
                _ => None,
            })
            .filter_map(|pem| spiffe_of_pem(&pem))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The URI SAN of the first certificate in a PEM chain.
pub fn spiffe_of_pem(pem: &[u8]) -> Option<String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = p.parse_x509().ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
        _ => None,
    })
}

/// One raw ADS stream running in the background.
pub struct RawAds {
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawAds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const TYPES: [(&str, &[&str]); 5] = [
    (CLUSTER, &[]),
    (ENDPOINT, &["*"]),
    (LISTENER, &[]),
    (ROUTE, &["*"]),
    (SECRET, &["default", "ROOTCA"]),
];

/// The names the client subscribes to for `type_url`.
fn names_of(type_url: &str) -> Vec<String> {
    TYPES
        .iter()
        .find(|(u, _)| *u == type_url)
        .map(|(_, n)| n.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

/// The inbound half of a stream, once open.
type Opened<R> = Pin<Box<dyn Future<Output = Result<Streaming<R>, Status>> + Send>>;

/// What the SotW and delta clients do differently: their messages, how a response is
/// recorded and how it is answered.
trait Variant: Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    /// The request that subscribes to `names` of `type_url`.
    fn subscribe(type_url: &str, names: &[&str]) -> Self::Req;
    fn set_node(req: &mut Self::Req, node: Option<Node>);
    /// Opens the stream that sends what `rx` yields.
    fn open(channel: Channel, rx: ReceiverStream<Self::Req>) -> Opened<Self::Resp>;
    /// Records what a response holds.
    fn record(r: &mut Received, resp: &Self::Resp);
    /// The answer to a response.
    fn answer(&self, resp: &Self::Resp) -> Self::Req;
}

/// The state-of-the-world client: ACKs every response with its whole subscription.
struct Sotw;

impl Variant for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;

    fn subscribe(type_url: &str, names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    fn set_node(req: &mut DiscoveryRequest, node: Option<Node>) {
        req.node = node;
    }

    fn open(channel: Channel, rx: ReceiverStream<DiscoveryRequest>) -> Opened<DiscoveryResponse> {
        Box::pin(async move {
            let mut client = AggregatedDiscoveryServiceClient::new(channel)
                .max_decoding_message_size(usize::MAX);
            Ok(client.stream_aggregated_resources(rx).await?.into_inner())
        })
    }

    /// A response holds every resource of its type the client has.
    fn record(r: &mut Received, resp: &DiscoveryResponse) {
        r.resources.retain(|(t, _), _| *t != resp.type_url);
        for any in &resp.resources {
            let name = resource_name(&resp.type_url, any);
            r.insert(&resp.type_url, name, any);
        }
    }

    fn answer(&self, resp: &DiscoveryResponse) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            type_url: resp.type_url.clone(),
            resource_names: names_of(&resp.type_url),
            ..Default::default()
        }
    }
}

/// The delta client: ACKs every response, or NACKs every response of one type.
struct Delta {
    reject: Option<&'static str>,
}

impl Variant for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;

    fn subscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    fn set_node(req: &mut DeltaDiscoveryRequest, node: Option<Node>) {
        req.node = node;
    }

    fn open(
        channel: Channel,
        rx: ReceiverStream<DeltaDiscoveryRequest>,
    ) -> Opened<DeltaDiscoveryResponse> {
        Box::pin(async move {
            let mut client = AggregatedDiscoveryServiceClient::new(channel)
                .max_decoding_message_size(usize::MAX);
            Ok(client.delta_aggregated_resources(rx).await?.into_inner())
        })
    }

    /// A response holds what changed: resources added or updated, names removed.
    fn record(r: &mut Received, resp: &DeltaDiscoveryResponse) {
        for name in &resp.removed_resources {
            r.resources.remove(&(resp.type_url.clone(), name.clone()));
        }
        for res in &resp.resources {
            if let Some(any) = &res.resource {
                r.insert(&resp.type_url, res.name.clone(), any);
            }
        }
    }

    fn answer(&self, resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let error_detail = (self.reject == Some(resp.type_url.as_str())).then(|| {
            envoy_types::pb::google::rpc::Status {
                code: 3,
                message: "rejected by a test client that rejects everything".into(),
                details: Vec::new(),
            }
        });
        DeltaDiscoveryRequest {
            response_nonce: resp.nonce.clone(),
            type_url: resp.type_url.clone(),
            error_detail,
            ..Default::default()
        }
    }
}

impl Received {
    /// Records one resource received.
    fn insert(&mut self, type_url: &str, name: String, any: &Any) {
        let key = (type_url.to_string(), name);
        self.ever.entry(key.clone()).or_default().push(any.clone());
        self.resources.insert(key, any.clone());
    }
}

impl RawAds {
    /// A state-of-the-world stream for `node`.
    pub fn sotw(channel: Channel, node: Node) -> Self {
        Self::start(channel, node, Sotw, Vec::new())
    }

    /// A delta stream for `node`.
    pub fn delta(channel: Channel, node: Node) -> Self {
        Self::delta_with(channel, node, Vec::new())
    }

    /// A delta stream for `node` whose first requests are `first` (each with its type),
    /// followed by the usual subscriptions.
    pub fn delta_with(channel: Channel, node: Node, first: Vec<DeltaDiscoveryRequest>) -> Self {
        Self::start(channel, node, Delta { reject: None }, first)
    }

    /// A delta stream for `node` that rejects (NACKs) every response of `type_url`, as a
    /// hostile or broken proxy might.
    pub fn delta_rejecting(channel: Channel, node: Node, type_url: &'static str) -> Self {
        Self::start(
            channel,
            node,
            Delta {
                reject: Some(type_url),
            },
            Vec::new(),
        )
    }

    /// Runs a stream in the background: sends `first`, then a subscription to every
    /// type (the node on the first request only), and answers every response.
    fn start<V: Variant>(channel: Channel, node: Node, variant: V, first: Vec<V::Req>) -> Self {
        let received: Arc<Mutex<Received>> = Arc::default();
        let rec = received.clone();
        let mut requests = first;
        requests.extend(TYPES.iter().map(|(url, names)| V::subscribe(url, names)));
        for (i, req) in requests.iter_mut().enumerate() {
            V::set_node(req, (i == 0).then(|| node.clone()));
        }
        let task = tokio::spawn(async move {
            let (tx, rx) = mpsc::channel::<V::Req>(64);
            for req in requests {
                let _ = tx.send(req).await;
            }
            let ended = match V::open(channel, ReceiverStream::new(rx)).await {
                Err(status) => status.to_string(),
                Ok(mut inbound) => loop {
                    let resp = match inbound.next().await {
                        Some(Ok(resp)) => resp,
                        Some(Err(status)) => break status.to_string(),
                        None => break "closed".to_string(),
                    };
                    {
                        let mut r = rec.lock();
                        r.responses += 1;
                        V::record(&mut r, &resp);
                    }
                    let _ = tx.send(variant.answer(&resp)).await;
                },
            };
            rec.lock().ended = Some(ended);
        });
        RawAds { received, task }
    }

    /// A copy of what it has been sent.
    pub fn received(&self) -> Received {
        self.received.lock().clone()
    }

    /// Waits until `check` holds for what was received.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Received) -> bool,
    ) -> anyhow::Result<()> {
        let rec = self.received.clone();
        crate::procs::wait_until(timeout, what, || {
            let ok = check(&rec.lock());
            async move { Ok(ok) }
        })
        .await
        .map(|_| ())
        .with_context(|| format!("received so far: {:?}", summary(&self.received())))
    }
}

fn summary(r: &Received) -> Vec<String> {
    r.resources
        .keys()
        .map(|(t, n)| format!("{}:{n}", t.rsplit('.').next().unwrap_or(t)))
        .chain(r.ended.iter().map(|e| format!("ended: {e}")))
        .collect()
}

/// The name inside a SotW resource.
fn resource_name(type_url: &str, any: &Any) -> String {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    };
    let b = any.value.as_slice();
    match type_url {
        CLUSTER => Cluster::decode(b).map(|m| m.name).unwrap_or_default(),
        ENDPOINT => ClusterLoadAssignment::decode(b)
            .map(|m| m.cluster_name)
            .unwrap_or_default(),
        LISTENER => Listener::decode(b).map(|m| m.name).unwrap_or_default(),
        ROUTE => RouteConfiguration::decode(b)
            .map(|m| m.name)
            .unwrap_or_default(),
        SECRET => Secret::decode(b).map(|m| m.name).unwrap_or_default(),
        _ => String::new(),
    }
}
