//! A scripted ADS server: the test decides every response, byte for byte, and reads every
//! request a proxy sends (SotW or delta), so protocol cases (subscriptions, NACKs,
//! removals, reconnects, hostile responses) are driven from the control plane's side
//! against any proxy. Plain text on a loopback port; the proxy's bootstrap comes from
//! [`bootstrap`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, bail};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// One request a proxy sent.
#[derive(Clone, Debug)]
pub enum Request {
    /// State of the world.
    Sotw(DiscoveryRequest),
    /// Delta.
    Delta(DeltaDiscoveryRequest),
}

impl Request {
    /// Its type URL.
    pub fn type_url(&self) -> &str {
        match self {
            Request::Sotw(r) => &r.type_url,
            Request::Delta(r) => &r.type_url,
        }
    }

    /// The nonce it answers.
    pub fn nonce(&self) -> &str {
        match self {
            Request::Sotw(r) => &r.response_nonce,
            Request::Delta(r) => &r.response_nonce,
        }
    }

    /// Its NACK text, if it is a NACK.
    pub fn nack(&self) -> Option<&str> {
        match self {
            Request::Sotw(r) => r.error_detail.as_ref().map(|s| s.message.as_str()),
            Request::Delta(r) => r.error_detail.as_ref().map(|s| s.message.as_str()),
        }
    }

    /// The names it subscribes to: SotW's whole list, delta's additions.
    pub fn names(&self) -> Vec<String> {
        let mut n = match self {
            Request::Sotw(r) => r.resource_names.clone(),
            Request::Delta(r) => r.resource_names_subscribe.clone(),
        };
        n.sort();
        n
    }
}

/// What the scripted server sends.
pub enum Response {
    /// State of the world.
    Sotw(DiscoveryResponse),
    /// Delta.
    Delta(DeltaDiscoveryResponse),
}

/// One ADS stream a proxy opened.
pub struct Conn {
    /// Whether it is delta.
    pub delta: bool,
    requests: mpsc::UnboundedReceiver<Request>,
    sotw: Option<mpsc::UnboundedSender<Result<DiscoveryResponse, tonic::Status>>>,
    delta_tx: Option<mpsc::UnboundedSender<Result<DeltaDiscoveryResponse, tonic::Status>>>,
    nonce: u64,
    /// Requests read while waiting for another, in order: the protocol does not order
    /// an ACK against the subscriptions the acknowledged response leads to.
    backlog: Vec<Request>,
}

impl Conn {
    /// The next request, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Request> {
        tokio::time::timeout(timeout, self.requests.recv())
            .await
            .context("no request from the proxy in time")?
            .context("the proxy closed the stream")
    }

    /// The first request, among those read earlier and not yet taken and then new ones,
    /// that satisfies `want`, within `timeout`; returns it and the requests before it
    /// (which stay for later calls).
    pub async fn until(
        &mut self,
        timeout: Duration,
        what: &str,
        want: impl Fn(&Request) -> bool,
    ) -> anyhow::Result<(Request, Vec<Request>)> {
        if let Some(i) = self.backlog.iter().position(&want) {
            let r = self.backlog.remove(i);
            return Ok((r, self.backlog[..i].to_vec()));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Ok(r) if want(&r) => return Ok((r, self.backlog.clone())),
                Ok(r) => self.backlog.push(r),
                Err(e) => bail!("{what}: {e:#}; requests seen: {:#?}", self.backlog),
            }
        }
    }

    /// Forgets the requests read and not taken.
    pub fn clear_backlog(&mut self) {
        self.backlog.clear();
    }

    /// Sends `resources` of `type_url` at `version` (SotW: the response's whole list;
    /// delta: these added or changed, `removed` removed). Returns the nonce.
    pub fn send(
        &mut self,
        type_url: &str,
        version: &str,
        resources: Vec<(String, Any)>,
        removed: &[&str],
    ) -> anyhow::Result<String> {
        self.nonce += 1;
        let nonce = format!("n{}", self.nonce);
        if let Some(tx) = &self.sotw {
            tx.send(Ok(DiscoveryResponse {
                version_info: version.into(),
                resources: resources.into_iter().map(|(_, a)| a).collect(),
                type_url: type_url.into(),
                nonce: nonce.clone(),
                ..Default::default()
            }))
            .ok()
            .context("the stream is gone")?;
        } else if let Some(tx) = &self.delta_tx {
            tx.send(Ok(DeltaDiscoveryResponse {
                system_version_info: version.into(),
                resources: resources
                    .into_iter()
                    .map(|(name, a)| Resource {
                        name,
                        version: version.into(),
                        resource: Some(a),
                        ..Default::default()
                    })
                    .collect(),
                type_url: type_url.into(),
                removed_resources: removed.iter().map(|s| s.to_string()).collect(),
                nonce: nonce.clone(),
                ..Default::default()
            }))
            .ok()
            .context("the stream is gone")?;
        }
        Ok(nonce)
    }

    /// Ends the stream from the server's side with UNAVAILABLE (the proxy reconnects).
    pub fn close(mut self) {
        if let Some(tx) = self.sotw.take() {
            let _ = tx.send(Err(tonic::Status::unavailable("scripted close")));
        }
        if let Some(tx) = self.delta_tx.take() {
            let _ = tx.send(Err(tonic::Status::unavailable("scripted close")));
        }
    }
}

/// The scripted server.
pub struct ScriptedAds {
    /// Where it listens.
    pub addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<Conn>,
    _task: tokio::task::JoinHandle<()>,
}

impl ScriptedAds {
    /// Starts on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, conns) = mpsc::unbounded_channel();
        let svc = AggregatedDiscoveryServiceServer::new(Script { conns: tx })
            .max_decoding_message_size(64 << 20);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(ScriptedAds {
            addr,
            conns,
            _task: task,
        })
    }

    /// The next stream a proxy opens, within `timeout`.
    pub async fn accept(&mut self, timeout: Duration) -> anyhow::Result<Conn> {
        tokio::time::timeout(timeout, self.conns.recv())
            .await
            .context("no ADS stream in time")?
            .context("the server stopped")
    }
}

struct Script {
    conns: mpsc::UnboundedSender<Conn>,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Script {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (req_tx, requests) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                if req_tx.send(Request::Sotw(r)).is_err() {
                    break;
                }
            }
        });
        let _ = self.conns.send(Conn {
            delta: false,
            requests,
            sotw: Some(tx),
            delta_tx: None,
            nonce: 0,
            backlog: Vec::new(),
        });
        Ok(tonic::Response::new(Box::pin(
            UnboundedReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (req_tx, requests) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                if req_tx.send(Request::Delta(r)).is_err() {
                    break;
                }
            }
        });
        let _ = self.conns.send(Conn {
            delta: true,
            requests,
            sotw: None,
            delta_tx: Some(tx),
            nonce: 0,
            backlog: Vec::new(),
        });
        Ok(tonic::Response::new(Box::pin(
            UnboundedReceiverStream::new(rx),
        )))
    }
}

/// A sidecar bootstrap (the shape `xds-server bootstrap` writes) for a proxy of node
/// `node_id` fetching everything over plain-text ADS from `ads`.
pub fn bootstrap(node_id: &str, ads: SocketAddr, delta: bool) -> serde_json::Value {
    let ads_source = serde_json::json!({"ads": {}, "resource_api_version": "V3"});
    serde_json::json!({
        "node": {"id": node_id, "cluster": "script.default", "metadata": {}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_flush_on_admin": true,
        "dynamic_resources": {
            "ads_config": {
                "api_type": if delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "rudder-xds"}}]
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "static_resources": {"clusters": [{
            "name": "rudder-xds",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            },
            "load_assignment": {
                "cluster_name": "rudder-xds",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": ads.ip().to_string(), "port_value": ads.port()
                }}}}]}]
            }
        }]}
    })
}
