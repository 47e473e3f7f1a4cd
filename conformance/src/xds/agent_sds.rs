//! The agent's SDS client: state-of-the-world SDS over the agent's Unix socket for the
//! secrets the listeners and clusters name with the agent as source (`default`, the
//! workload certificate). Each pushed secret (a renewal) replaces the held one; an
//! invalid one is NACKed and the last good kept. [`AgentSds`] is the pure machine; the
//! shell reconnects with backoff and keeps what it holds while disconnected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use xds_types::XdsType;

use super::client::{BACKOFF, MAX_MESSAGE};
use super::core::{ConvertFn, MAX_NAME, nack_status};
use super::held::{Change, Held, Publisher, RawEntry};
use crate::stats::Stats;

/// The SDS machine for the agent's secrets.
#[derive(Debug)]
pub(crate) struct AgentSds {
    convert: ConvertFn,
    stats: Arc<Stats>,
    node: Node,
    node_sent: bool,
    wanted: BTreeSet<String>,
    held: BTreeMap<String, String>,
    version: String,
    nonce: String,
}

impl AgentSds {
    pub(crate) fn new(node: Node, convert: ConvertFn, stats: Arc<Stats>) -> Self {
        AgentSds {
            convert,
            stats,
            node,
            node_sent: false,
            wanted: BTreeSet::new(),
            held: BTreeMap::new(),
            version: String::new(),
            nonce: String::new(),
        }
    }

    /// The request that opens a stream.
    pub(crate) fn connect(&mut self) -> DiscoveryRequest {
        self.node_sent = false;
        self.nonce.clear();
        self.request()
    }

    /// New wanted names: the request to send (if they changed) and the removals.
    pub(crate) fn want(
        &mut self,
        names: BTreeSet<String>,
    ) -> (Option<DiscoveryRequest>, Vec<Change>) {
        if names == self.wanted {
            return (None, Vec::new());
        }
        self.wanted = names;
        let gone: Vec<String> = self
            .held
            .keys()
            .filter(|n| !self.wanted.contains(*n))
            .cloned()
            .collect();
        let changes = gone
            .into_iter()
            .map(|name| {
                self.held.remove(&name);
                Change {
                    ty: XdsType::Secret,
                    name,
                    value: None,
                }
            })
            .collect();
        (Some(self.request()), changes)
    }

    /// Handles one response: (the ACK or NACK, the changes).
    pub(crate) fn on_response(
        &mut self,
        resp: DiscoveryResponse,
    ) -> (DiscoveryRequest, Vec<Change>) {
        self.nonce = resp.nonce.clone();
        let mut refused = Vec::new();
        let mut changes = Vec::new();
        let mut seen = BTreeSet::new();
        let right_type = resp.type_url == XdsType::Secret.type_url();
        if !right_type {
            refused.push(format!("type {} in an SDS stream", resp.type_url));
        }
        for any in resp.resources.iter().filter(|_| right_type) {
            match (self.convert)(XdsType::Secret, any) {
                Ok((name, _)) if name.len() > MAX_NAME => {
                    refused.push(format!("a secret name longer than {MAX_NAME} bytes"));
                }
                Ok((name, _)) if !seen.insert(name.clone()) => {
                    refused = vec![format!("duplicate resource name {name} in one response")];
                    changes.clear();
                    break;
                }
                Ok((name, value)) => {
                    if !self.wanted.contains(&name) {
                        continue;
                    }
                    self.stats
                        .counter(&format!("sds.{name}.update_success"))
                        .inc();
                    let raw = RawEntry {
                        any: any.clone(),
                        version: resp.version_info.clone(),
                        updated: SystemTime::now(),
                    };
                    changes.push(Change {
                        ty: XdsType::Secret,
                        name,
                        value: Some(Held { raw, value }),
                    });
                }
                Err(e) => {
                    self.stats
                        .counter(&format!("sds.{}.update_rejected", e.resource))
                        .inc();
                    refused.push(e.to_string());
                }
            }
        }
        for c in &changes {
            self.held.insert(c.name.clone(), resp.version_info.clone());
        }
        let mut answer = self.request();
        if refused.is_empty() {
            self.version = resp.version_info;
            answer.version_info = self.version.clone();
        } else {
            self.stats.counter("control_plane.rudder_nacks_total").inc();
            answer.error_detail = Some(nack_status("SDS", &refused));
        }
        (answer, changes)
    }

    fn request(&mut self) -> DiscoveryRequest {
        let node = (!self.node_sent).then(|| self.node.clone());
        self.node_sent = true;
        DiscoveryRequest {
            version_info: self.version.clone(),
            node,
            resource_names: self.wanted.iter().cloned().collect(),
            type_url: XdsType::Secret.type_url().to_string(),
            response_nonce: self.nonce.clone(),
            ..DiscoveryRequest::default()
        }
    }
}

/// The agent SDS client's shell.
#[derive(Debug)]
pub struct AgentSdsClient {
    /// The agent's socket.
    pub socket: PathBuf,
    /// The node.
    pub node: Node,
    /// The converter.
    pub convert: ConvertFn,
    /// Metrics.
    pub stats: Arc<Stats>,
    /// Where secrets go.
    pub publisher: Arc<Publisher>,
}

impl AgentSdsClient {
    /// Runs until `stop`, following the names `names` carries.
    pub async fn run(
        self,
        mut names: watch::Receiver<BTreeSet<String>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut machine = AgentSds::new(self.node.clone(), self.convert, self.stats.clone());
        let mut backoff = BACKOFF.0;
        loop {
            let wanted = names.borrow_and_update().clone();
            let (_, removed) = machine.want(wanted);
            self.publisher.apply(&removed);
            if machine.wanted.is_empty() {
                tokio::select! {
                    r = names.changed() => if r.is_err() { break },
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            }
            let result = tokio::select! {
                r = self.session(&mut machine, &mut names) => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, socket = %self.socket.display(), "agent SDS stream ended");
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    async fn session(
        &self,
        machine: &mut AgentSds,
        names: &mut watch::Receiver<BTreeSet<String>>,
    ) -> Result<(), String> {
        let socket = self.socket.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                let s = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        });
        let channel = Endpoint::from_static("http://agent.sds")
            .connect_with_connector(connector)
            .await
            .map_err(|e| e.to_string())?;
        let mut client =
            SecretDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
        let closed = |_| "the request stream closed".to_string();
        tx.send(machine.connect()).await.map_err(closed)?;
        let mut stream = client
            .stream_secrets(ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let Some(resp) = msg.map_err(|e| e.to_string())? else {
                        return Err("the agent closed the stream".into());
                    };
                    let (answer, changes) = machine.on_response(resp);
                    self.publisher.apply(&changes);
                    tx.send(answer).await.map_err(closed)?;
                }
                r = names.changed() => {
                    r.map_err(|_| "no more names".to_string())?;
                    let wanted = names.borrow_and_update().clone();
                    let (req, removed) = machine.want(wanted);
                    self.publisher.apply(&removed);
                    if let Some(req) = req {
                        tx.send(req).await.map_err(closed)?;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::fake;

    fn resp(version: &str, nonce: &str, texts: &[&str]) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            resources: texts
                .iter()
                .map(|t| fake::any(XdsType::Secret, t))
                .collect(),
            type_url: XdsType::Secret.type_url().into(),
            nonce: nonce.into(),
            ..DiscoveryResponse::default()
        }
    }

    #[test]
    fn follows_the_names_and_takes_each_renewal() {
        let stats = Arc::new(Stats::default());
        let mut m = AgentSds::new(Node::default(), fake::convert, stats.clone());
        let (req, removed) = m.want(["default".to_string()].into());
        let req = req.expect("a request for the new name");
        assert_eq!(req.resource_names, ["default"]);
        assert!(removed.is_empty());
        let first = m.connect();
        assert!(first.node.is_some());

        let (ack, changes) = m.on_response(resp("1", "a", &["default"]));
        assert_eq!(
            (ack.version_info.as_str(), ack.response_nonce.as_str()),
            ("1", "a")
        );
        assert!(ack.error_detail.is_none());
        assert_eq!(changes.len(), 1);
        // A renewal replaces it.
        let (ack, changes) = m.on_response(resp("2", "b", &["default"]));
        assert_eq!(ack.version_info, "2");
        assert_eq!(
            changes[0].value.as_ref().map(|h| h.raw.version.as_str()),
            Some("2")
        );
        assert_eq!(stats.counter("sds.default.update_success").get(), 2);

        // A broken one is NACKed and the last good kept.
        let (nack, changes) = m.on_response(resp("3", "c", &["bad:default"]));
        assert_eq!(nack.version_info, "2");
        assert!(nack.error_detail.is_some());
        assert!(changes.is_empty());
        assert_eq!(stats.counter("sds.default.update_rejected").get(), 1);

        // No longer named: removed.
        let (req, removed) = m.want(BTreeSet::new());
        assert!(req.is_some_and(|r| r.resource_names.is_empty()));
        assert_eq!(removed.len(), 1);
        assert!(removed[0].value.is_none());
    }
}
