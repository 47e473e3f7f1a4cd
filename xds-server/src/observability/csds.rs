//! The Client Status Discovery Service: for every connected proxy, the config it was
//! sent per resource and whether it accepted it. `xdsctl` reads it. Private keys are
//! never included: certificate Secrets are shown with their chain only.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryService;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::{Any, Timestamp, Value, value::Kind as ValueKind};
use futures::Stream;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};
use xds_types::XdsType;
use xds_types::csds::{META_IDENTITY, META_STREAM};

use crate::observability::registry::{Proxy, ProxyRegistry};

/// The CSDS service.
#[derive(Clone)]
pub struct CsdsService {
    proxies: Arc<ProxyRegistry>,
    /// With TLS: callers must hold an identity in this (trust domain, namespace).
    admin: Option<(String, String)>,
    /// Ends streaming reads when the control plane shuts down.
    stop: crate::runtime::Stop,
}

impl CsdsService {
    /// Serves from `proxies`; with `admin` (trust domain, namespace), only callers whose
    /// verified client certificate is in that trust domain and namespace may read.
    pub fn new(
        proxies: Arc<ProxyRegistry>,
        admin: Option<(String, String)>,
        stop: crate::runtime::Stop,
    ) -> Self {
        CsdsService {
            proxies,
            admin,
            stop,
        }
    }

    /// Whether the caller may read proxy status (checked before its request is read).
    pub(crate) fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if let Some(refused) = crate::net::front_door::refusal(req) {
            return Err(refused);
        }
        let Some((td, ns)) = &self.admin else {
            return Ok(());
        };
        match crate::net::front_door::peer_identity(req) {
            Some(id) if id.trust_domain == *td && id.namespace == *ns => Ok(()),
            Some(id) => {
                tracing::warn!(caller = %id, "refused a CSDS read: not an admin identity");
                Err(Status::permission_denied(format!(
                    "{id} may not read proxy status; identities spiffe://{td}/ns/{ns}/... may"
                )))
            }
            None => Err(Status::unauthenticated("a client certificate is required")),
        }
    }
}

fn timestamp(t: std::time::SystemTime) -> Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A Secret without its private key. Fails closed: a Secret that does not decode is
/// not shown at all.
fn redact(any: &Any) -> Option<Any> {
    let mut s = Secret::decode(any.value.as_slice()).ok()?;
    if let Some(secret::Type::TlsCertificate(c)) = s.r#type.as_mut() {
        c.private_key = None;
        c.password = None;
    }
    Some(Any {
        type_url: any.type_url.clone(),
        value: s.encode_to_vec(),
    })
}

fn matches(p: &Proxy, req: &ClientStatusRequest) -> bool {
    req.node_matchers.is_empty()
        || req.node_matchers.iter().any(|m| {
            m.node_id.as_ref().is_none_or(|sm| match &sm.match_pattern {
                Some(MatchPattern::Exact(s)) => p.info.node.id == *s,
                Some(MatchPattern::Prefix(s)) => p.info.node.id.starts_with(s.as_str()),
                _ => true,
            })
        })
}

/// The CSDS view of one proxy, read from its stream's state.
pub(crate) fn client_config(p: &Proxy, with_contents: bool) -> ClientConfig {
    let mut node = p.info.node.to_node();
    let meta = node.metadata.get_or_insert_with(Default::default);
    for (k, v) in [
        (META_STREAM, p.info.stream),
        (META_IDENTITY, p.info.identity.as_str()),
    ] {
        meta.fields.insert(
            k.into(),
            Value {
                kind: Some(ValueKind::StringValue(v.into())),
            },
        );
    }
    let acked = p.last_ack().map(timestamp);
    let mut configs = Vec::new();
    for kind in XdsType::ALL {
        for r in p.info.state.resources(kind) {
            let Some(want) = &r.want else {
                // Held but no longer wanted: on its way out.
                continue;
            };
            let current = r.held.as_deref() == Some(want.version.as_str());
            let (config_status, client_status) = if r.rejected.is_some() {
                (ConfigStatus::Error, ClientResourceStatus::Nacked)
            } else if current && !r.inflight {
                (ConfigStatus::Synced, ClientResourceStatus::Acked)
            } else if r.inflight {
                (ConfigStatus::Stale, ClientResourceStatus::Requested)
            } else if r.held.is_some() {
                (ConfigStatus::Stale, ClientResourceStatus::Acked)
            } else {
                (ConfigStatus::NotSent, ClientResourceStatus::Unknown)
            };
            let contents = if kind == XdsType::Secret {
                redact(&want.any)
            } else {
                Some(want.any.clone())
            };
            configs.push(GenericXdsConfig {
                type_url: kind.type_url().into(),
                name: r.name.to_string(),
                version_info: want.version.clone(),
                xds_config: contents.filter(|_| with_contents),
                last_updated: acked,
                config_status: config_status as i32,
                client_status: client_status as i32,
                error_state: r.rejected.as_ref().map(|details| UpdateFailureState {
                    details: crate::observability::nack::with_hint(details),
                    version_info: r.held.clone().unwrap_or_default(),
                    last_update_attempt: acked,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    ClientConfig {
        node: Some(node),
        generic_xds_configs: configs,
        ..Default::default()
    }
}

impl CsdsService {
    fn answer(&self, req: &ClientStatusRequest) -> ClientStatusResponse {
        ClientStatusResponse {
            config: self
                .proxies
                .all()
                .iter()
                .filter(|p| matches(p, req))
                .map(|p| client_config(p, !req.exclude_resource_contents))
                .collect(),
        }
    }
}

type BoxStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsService {
    type StreamClientStatusStream = BoxStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        self.authorize(&request)?;
        let this = self.clone();
        let mut inbound = request.into_inner();
        let stopped = self.stop.stopped();
        let out = async_stream_like(move |tx| async move {
            tokio::pin!(stopped);
            loop {
                let req = tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(req)) => req,
                        _ => break,
                    },
                    () = &mut stopped => {
                        let _ = tx.send(Err(Status::unavailable("the control plane is shutting down"))).await;
                        break;
                    }
                };
                if tx.send(Ok(this.answer(&req))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(out))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(self.answer(request.get_ref())))
    }
}

fn async_stream_like<F, Fut>(f: F) -> BoxStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ClientStatusResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::front_door::ConnInfo;

    fn request_from(id: Option<&str>) -> Request<ClientStatusRequest> {
        let mut req = Request::new(ClientStatusRequest::default());
        req.extensions_mut().insert(ConnInfo {
            remote: None,
            identity: id.map(|s| s.parse().expect("spiffe id")),
            not_after: None,
            streams: Default::default(),
            refused: None,
            account: None,
            max_age_at: None,
        });
        req
    }

    #[test]
    fn only_admin_identities_of_our_trust_domain_may_read() {
        let svc = CsdsService::new(
            Arc::default(),
            Some(("cluster.local".into(), "rudder-system".into())),
            crate::runtime::Stop::default(),
        );
        assert!(
            svc.authorize(&request_from(Some(
                "spiffe://cluster.local/ns/rudder-system/sa/xdsctl"
            )))
            .is_ok()
        );
        for other in [
            "spiffe://other.domain/ns/rudder-system/sa/xdsctl",
            "spiffe://cluster.local/ns/default/sa/xdsctl",
        ] {
            let err = svc.authorize(&request_from(Some(other))).expect_err(other);
            assert_eq!(err.code(), tonic::Code::PermissionDenied, "{other}");
        }
        assert_eq!(
            svc.authorize(&request_from(None)).expect_err("none").code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn redaction_fails_closed() {
        let garbage = Any {
            type_url: XdsType::Secret.type_url().into(),
            value: vec![0xff; 16],
        };
        assert!(redact(&garbage).is_none());
        let secret = translator::tls::cert_secret("CHAIN", "KEY").body.to_any();
        let shown = redact(&secret).expect("a valid secret is shown");
        let s = Secret::decode(shown.value.as_slice()).expect("decodes");
        let Some(secret::Type::TlsCertificate(c)) = s.r#type else {
            panic!("a certificate")
        };
        assert!(c.private_key.is_none() && c.certificate_chain.is_some());
    }
}
