//! The ADS client's shell: connects to the control plane (plain text, or mTLS with the
//! credentials read at each connect), runs the SotW or delta machine over one stream,
//! publishes what it accepts, reconnects with backoff (0.1 s to 1 s) keeping the last
//! configuration, and marks the proxy ready when the initial configuration is complete
//! or the initial-fetch timeout passes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use xds_types::XdsType;

use super::bootstrap::{Bootstrap, XdsServer};
use super::core::ConvertFn;
use super::delta::Delta;
use super::held::{Change, Publisher};
use super::sotw::{Sotw, Step};
use crate::stats::Stats;

/// The largest message accepted from the control plane.
pub(crate) const MAX_MESSAGE: usize = 16 << 20;
/// Envoy's initial fetch timeout: past it the proxy is ready with what it has.
pub(crate) const INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Reconnect backoff bounds.
pub(crate) const BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(1));
/// The longest a connect (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests queued towards the control plane.
const QUEUE: usize = 64;

/// What the ADS client needs.
#[derive(Debug)]
pub struct AdsClient {
    /// The bootstrap.
    pub bootstrap: Bootstrap,
    /// The converter.
    pub convert: ConvertFn,
    /// Metrics.
    pub stats: Arc<Stats>,
    /// Where accepted resources go.
    pub publisher: Arc<Publisher>,
    /// The secret names the agent must serve, as the listeners and clusters name them.
    pub agent_names: watch::Sender<BTreeSet<String>>,
}

/// One of the two machines.
#[derive(Debug)]
enum Machine {
    Sotw(Box<Sotw>),
    Delta(Box<Delta>),
}

impl AdsClient {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let node = self.bootstrap.node.clone();
        let mut machine = if self.bootstrap.delta {
            Machine::Delta(Box::new(Delta::new(node, self.convert, self.stats.clone())))
        } else {
            Machine::Sotw(Box::new(Sotw::new(node, self.convert, self.stats.clone())))
        };
        let live = self.publisher.live().clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(INITIAL_FETCH_TIMEOUT).await;
            live.set_ready();
        });
        let connected = self.stats.gauge("control_plane.connected_state");
        let mut backoff = BACKOFF.0;
        loop {
            let session = self.session(&mut machine);
            let result = tokio::select! {
                r = session => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            connected.set(0);
            match result {
                // It was up: start the backoff over.
                Err((true, e)) => {
                    backoff = BACKOFF.0;
                    tracing::warn!(error = %e, "xDS stream ended");
                }
                Err((false, e)) => tracing::warn!(error = %e, "xDS connect failed"),
                Ok(()) => {}
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
        timer.abort();
    }

    /// One connection and stream, until it fails: (whether a response came, why).
    async fn session(&self, machine: &mut Machine) -> Result<(), (bool, String)> {
        let mut heard = false;
        self.stream(machine, &mut heard)
            .await
            .map_err(|e| (heard, e))
    }

    async fn stream(&self, machine: &mut Machine, heard: &mut bool) -> Result<(), String> {
        let channel = connect(&self.bootstrap.xds).await?;
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        self.stats.gauge("control_plane.connected_state").set(1);
        match machine {
            Machine::Sotw(m) => {
                let (tx, rx) = mpsc::channel::<DiscoveryRequest>(QUEUE);
                for r in m.connect() {
                    tx.send(r).await.map_err(|e| e.to_string())?;
                }
                let stream = client
                    .stream_aggregated_resources(ReceiverStream::new(rx))
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                self.pump(&mut **m, &tx, stream, heard).await?;
            }
            Machine::Delta(m) => {
                let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(QUEUE);
                for r in m.connect() {
                    tx.send(r).await.map_err(|e| e.to_string())?;
                }
                let stream = client
                    .delta_aggregated_resources(ReceiverStream::new(rx))
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                self.pump(&mut **m, &tx, stream, heard).await?;
            }
        }
        Err("the control plane closed the stream".into())
    }

    /// Feeds each response of `stream` to the machine, publishes what it applied, turns
    /// the ACK of a listener update the data path could not bind into a NACK, and sends
    /// the requests, until the stream ends.
    async fn pump<M: Variant>(
        &self,
        m: &mut M,
        tx: &mpsc::Sender<M::Req>,
        mut stream: tonic::Streaming<M::Resp>,
        heard: &mut bool,
    ) -> Result<(), String> {
        while let Some(resp) = stream.message().await.map_err(|e| e.to_string())? {
            *heard = true;
            let mut step = m.on_response(resp);
            let unbound = self
                .after(&step.changes, m.ready(), m.agent_secrets())
                .await;
            if let (false, Some(answer)) = (unbound.is_empty(), step.requests.last_mut()) {
                m.refuse_applied(XdsType::Listener, answer, &unbound);
            }
            send_all(tx, step).await?;
        }
        Ok(())
    }

    /// Publishes, marks readiness and tells the agent client which secrets are named.
    /// Returns why each added or changed listener could not be bound, as the listener
    /// manager reports it (empty when all are bound or no listener changed).
    async fn after(&self, changes: &[Change], ready: bool, agent: BTreeSet<String>) -> Vec<String> {
        let version = self.publisher.apply(changes);
        self.publisher.set_init(ready, agent.clone());
        self.agent_names.send_if_modified(|names| {
            let changed = *names != agent;
            *names = agent;
            changed
        });
        let added: BTreeSet<&str> = changes
            .iter()
            .filter(|c| c.ty == XdsType::Listener && c.value.is_some())
            .map(|c| c.name.as_str())
            .collect();
        let Some(version) = version.filter(|_| !added.is_empty()) else {
            return Vec::new();
        };
        let Some(binds) = self.publisher.live().binds_after(version, BIND_WAIT).await else {
            return Vec::new();
        };
        let unbound: Vec<String> = binds
            .failed
            .iter()
            .filter(|(name, _)| added.contains(name.as_str()))
            .map(|(name, why)| format!("{name}: {why}"))
            .collect();
        if !unbound.is_empty() {
            self.stats
                .counter("listener_manager.lds.update_rejected")
                .inc();
        }
        unbound
    }
}

async fn send_all<R>(tx: &mpsc::Sender<R>, step: Step<R>) -> Result<(), String> {
    for r in step.requests {
        tx.send(r)
            .await
            .map_err(|_| "the request stream closed".to_string())?;
    }
    Ok(())
}

/// How long a listener update waits for the listener manager's bind report before it
/// is acknowledged anyway.
const BIND_WAIT: Duration = Duration::from_secs(2);

/// A channel to the control plane.
async fn connect(server: &XdsServer) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{}", authority(server)))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(5));
    let Some(files) = server.tls.clone() else {
        return endpoint.connect().await.map_err(|e| e.to_string());
    };
    let host = server.host.clone();
    let port = server.port;
    let connector = tower::service_fn(move |_: http::Uri| {
        let files = files.clone();
        let host = host.clone();
        async move {
            let io = |e: String| std::io::Error::other(e);
            let config = super::tls::client_config(&files).await.map_err(io)?;
            let tcp = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|_| io("connect timed out".into()))??;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| io(e.to_string()))?;
            let tls = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(config).connect(name, tcp),
            )
            .await
            .map_err(|_| io("TLS handshake timed out".into()))??;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("{e}: {}", source_chain(&e)))
}

fn authority(server: &XdsServer) -> String {
    if server.host.contains(':') {
        format!("[{}]:{}", server.host, server.port)
    } else {
        format!("{}:{}", server.host, server.port)
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut at = e.source();
    while let Some(s) = at {
        out.push(s.to_string());
        at = s.source();
    }
    out.join(": ")
}

/// What the shell needs of a client machine, state-of-the-world or delta.
trait Variant {
    type Req;
    type Resp;
    fn on_response(&mut self, resp: Self::Resp) -> Step<Self::Req>;
    fn ready(&self) -> bool;
    fn agent_secrets(&self) -> BTreeSet<String>;
    fn refuse_applied(&mut self, ty: XdsType, answer: &mut Self::Req, reasons: &[String]);
}

impl Variant for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    fn on_response(&mut self, resp: DiscoveryResponse) -> Step<DiscoveryRequest> {
        Sotw::on_response(self, resp)
    }
    fn ready(&self) -> bool {
        Sotw::ready(self)
    }
    fn agent_secrets(&self) -> BTreeSet<String> {
        self.core.refs.agent_secrets.clone()
    }
    fn refuse_applied(&mut self, ty: XdsType, answer: &mut DiscoveryRequest, reasons: &[String]) {
        Sotw::refuse_applied(self, ty, answer, reasons);
    }
}

impl Variant for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    fn on_response(&mut self, resp: DeltaDiscoveryResponse) -> Step<DeltaDiscoveryRequest> {
        Delta::on_response(self, resp)
    }
    fn ready(&self) -> bool {
        Delta::ready(self)
    }
    fn agent_secrets(&self) -> BTreeSet<String> {
        self.core.refs.agent_secrets.clone()
    }
    fn refuse_applied(
        &mut self,
        ty: XdsType,
        answer: &mut DeltaDiscoveryRequest,
        reasons: &[String],
    ) {
        Delta::refuse_applied(self, ty, answer, reasons);
    }
}
