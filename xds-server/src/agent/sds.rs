//! The agent's SDS server: the proxy's workload certificate and key (secret `default`,
//! [`translator::tls::CERT_SECRET`]) served on a Unix socket in the credential directory
//! ([`super::files::SDS_SOCKET`]), so the key made in the pod reaches Envoy without
//! crossing the network. Each renewal is pushed to every open stream.
//!
//! [`SdsStream`] is the protocol as a pure state machine (state of the world, one
//! resource); the tonic service around it only moves messages.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use translator::tls::CERT_SECRET;
use xds_types::XdsType;

/// The credentials the agent holds now, as the SDS resource (None before the first).
#[derive(Clone, Debug, Default)]
pub struct Served {
    /// Increases with every installed set.
    pub version: u64,
    /// The `default` Secret, packed.
    pub secret: Option<Any>,
}

impl Served {
    /// The next version, holding `chain_pem` and `key_pem`.
    pub fn next(&self, chain_pem: &str, key_pem: &str) -> Served {
        Served {
            version: self.version + 1,
            secret: Some(
                translator::tls::cert_secret(chain_pem, key_pem)
                    .body
                    .to_any(),
            ),
        }
    }
}

/// One SDS stream (state of the world): what the proxy asked for and what it was sent.
#[derive(Debug, Default)]
pub struct SdsStream {
    /// The proxy asked for the workload certificate.
    wants: bool,
    /// The version last sent, and its nonce.
    sent: Option<(u64, String)>,
    nonce: u64,
}

/// What a request told the agent.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// A subscription (first request, or a change of names).
    Subscribe,
    /// The proxy took the version sent.
    Ack,
    /// The proxy refused it, with its reason.
    Nack(String),
    /// Nothing new (a stale nonce).
    Nothing,
}

impl SdsStream {
    /// Takes a request; answers with the current version if the proxy needs it.
    pub(crate) fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        now: &Served,
    ) -> (Heard, Option<DiscoveryResponse>) {
        let answers_ours = self
            .sent
            .as_ref()
            .is_some_and(|(_, n)| *n == req.response_nonce);
        let wants = req.resource_names.iter().any(|n| n == CERT_SECRET);
        if !req.response_nonce.is_empty() && !answers_ours {
            return (Heard::Nothing, None);
        }
        let heard = match (&req.error_detail, answers_ours) {
            (Some(e), true) => Heard::Nack(crds::text::clip(&e.message, 512)),
            (None, true) if wants == self.wants => Heard::Ack,
            _ => Heard::Subscribe,
        };
        let changed = wants != self.wants;
        self.wants = wants;
        let resp = match heard {
            Heard::Subscribe if changed || self.sent.is_none() => self.respond(now),
            _ => None,
        };
        (heard, resp)
    }

    /// Credentials changed: the new version, if the proxy asked for it.
    pub(crate) fn on_served(&mut self, now: &Served) -> Option<DiscoveryResponse> {
        if !self.wants || self.sent.as_ref().is_some_and(|(v, _)| *v == now.version) {
            return None;
        }
        self.respond(now)
    }

    fn respond(&mut self, now: &Served) -> Option<DiscoveryResponse> {
        let secret = now.secret.as_ref()?;
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let resources = if self.wants {
            vec![secret.clone()]
        } else {
            Vec::new()
        };
        self.sent = Some((now.version, nonce.clone()));
        Some(DiscoveryResponse {
            version_info: now.version.to_string(),
            resources,
            type_url: XdsType::Secret.type_url().into(),
            nonce,
            ..Default::default()
        })
    }
}

/// The tonic service.
struct Sds {
    served: watch::Receiver<Served>,
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponses = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = DeltaResponses;
    type StreamSecretsStream = Responses;

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponses>, Status> {
        Err(Status::unimplemented(
            "the agent serves SDS as state of the world (api_type GRPC)",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let mut inbound = request.into_inner();
        let mut served = self.served.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut stream = SdsStream::default();
            loop {
                let resp = tokio::select! {
                    req = inbound.message() => match req {
                        Ok(Some(req)) => {
                            let now = served.borrow_and_update().clone();
                            let (heard, resp) = stream.on_request(&req, &now);
                            if let Heard::Nack(why) = heard {
                                tracing::warn!(error = %why, "the proxy refused its workload certificate");
                            }
                            resp
                        }
                        _ => return,
                    },
                    changed = served.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now = served.borrow_and_update().clone();
                        stream.on_served(&now)
                    }
                };
                if let Some(r) = resp
                    && tx.send(Ok(r)).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let now = self.served.borrow().clone();
        let mut stream = SdsStream::default();
        let (_, resp) = stream.on_request(request.get_ref(), &now);
        resp.map(Response::new)
            .ok_or_else(|| Status::unavailable("no certificate installed yet"))
    }
}

/// Binds the SDS socket of `cert_dir` ([`socket`]; a stale one is replaced, anything
/// else refused; this user only, made in the agent's private directory and moved into
/// place: [`super::sockets`]).
pub fn bind(cert_dir: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    let private = super::sockets::private_dir(cert_dir)?;
    super::sockets::bind(&private, &socket(cert_dir), "SDS")
}

/// Serves SDS on `listener` with what `served` holds, until the process ends.
pub async fn serve(listener: tokio::net::UnixListener, served: watch::Receiver<Served>) {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .add_service(SecretDiscoveryServiceServer::new(Sds { served }))
        .serve_with_incoming(incoming)
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the SDS server stopped");
    }
}

/// Where the SDS socket of `dir` is.
pub fn socket(dir: &Path) -> PathBuf {
    super::files::path(dir, super::files::SDS_SOCKET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::rpc;

    fn req(names: &[&str], nonce: &str, nack: bool) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            type_url: XdsType::Secret.type_url().into(),
            error_detail: nack.then(|| rpc::Status {
                message: "bad key".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn served(v: u64) -> Served {
        Served::default().next("CHAIN", "KEY").with_version(v)
    }

    impl Served {
        fn with_version(mut self, v: u64) -> Self {
            self.version = v;
            self
        }
    }

    #[test]
    fn the_certificate_is_sent_when_asked_and_again_when_renewed() {
        let mut s = SdsStream::default();
        let (heard, resp) = s.on_request(&req(&["default"], "", false), &served(1));
        assert_eq!(heard, Heard::Subscribe);
        let resp = resp.expect("sent");
        assert_eq!(resp.resources.len(), 1);
        assert_eq!(resp.version_info, "1");
        // The ACK asks for nothing more; an unchanged version is not re-sent.
        let (heard, none) = s.on_request(&req(&["default"], &resp.nonce, false), &served(1));
        assert_eq!((heard, none), (Heard::Ack, None));
        assert!(s.on_served(&served(1)).is_none());
        // A renewal is pushed.
        let pushed = s.on_served(&served(2)).expect("pushed");
        assert_eq!(pushed.version_info, "2");
        // A NACK is heard and not answered with the same version again.
        let (heard, none) = s.on_request(&req(&["default"], &pushed.nonce, true), &served(2));
        assert_eq!((heard, none), (Heard::Nack("bad key".into()), None));
        // A stale nonce is ignored.
        let (heard, none) = s.on_request(&req(&["default"], "1", false), &served(2));
        assert_eq!((heard, none), (Heard::Nothing, None));
    }

    #[test]
    fn nothing_is_sent_before_credentials_exist_or_for_other_names() {
        let mut s = SdsStream::default();
        let (_, none) = s.on_request(&req(&["default"], "", false), &Served::default());
        assert!(none.is_none(), "no certificate yet");
        let first = s.on_served(&served(1)).expect("sent once installed");
        assert_eq!(first.resources.len(), 1);
        let mut other = SdsStream::default();
        let (_, resp) = other.on_request(&req(&["ROOTCA"], "", false), &served(1));
        let resp = resp.expect("answered");
        assert!(resp.resources.is_empty(), "only the workload certificate");
        assert!(other.on_served(&served(2)).is_none());
    }
}
