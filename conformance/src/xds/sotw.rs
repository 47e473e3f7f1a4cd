//! The state-of-the-world ADS client as a pure machine: the requests to send on a new
//! stream, and for each response the ACK or NACK, the subscription updates it causes,
//! and the changes to publish. No sockets: the shell in `client` moves the messages.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use xds_types::{PerType, XdsType};

use super::core::{ConvertFn, Core, Incoming, nack_status};
use super::held::Change;
use crate::stats::Stats;

/// What one response asks of the shell.
#[derive(Debug, Default)]
pub(crate) struct Step<R> {
    /// Requests to send, in order: what the new resources name, then the ACK or NACK.
    pub(crate) requests: Vec<R>,
    /// Changes to publish.
    pub(crate) changes: Vec<Change>,
}

/// The SotW client's state; it survives reconnects.
#[derive(Debug)]
pub(crate) struct Sotw {
    pub(crate) core: Core,
    node: Node,
    node_sent: bool,
    /// The last accepted `version_info` per type.
    accepted: PerType<String>,
    /// The one before it (what a NACK after the fact reports).
    previous: PerType<String>,
    /// The last nonce per type on this stream.
    nonce: PerType<String>,
    /// The names last requested per non-wildcard type (none: never requested).
    requested: PerType<Option<BTreeSet<String>>>,
    stats: Arc<Stats>,
}

impl Sotw {
    pub(crate) fn new(node: Node, convert: ConvertFn, stats: Arc<Stats>) -> Self {
        Sotw {
            core: Core::new(convert, stats.clone()),
            node,
            node_sent: false,
            accepted: PerType::default(),
            previous: PerType::default(),
            nonce: PerType::default(),
            requested: PerType::default(),
            stats,
        }
    }

    /// The requests that open a stream: CDS and LDS wildcard, then every named type
    /// with names, each with the version held.
    pub(crate) fn connect(&mut self) -> Vec<DiscoveryRequest> {
        self.node_sent = false;
        self.nonce = PerType::default();
        self.requested = PerType::default();
        let mut out = vec![
            self.request(XdsType::Cluster, Vec::new()),
            self.request(XdsType::Listener, Vec::new()),
        ];
        out.extend(self.follow_ups());
        out
    }

    /// Handles one response.
    pub(crate) fn on_response(&mut self, resp: DiscoveryResponse) -> Step<DiscoveryRequest> {
        let Some(ty) = XdsType::from_type_url(&resp.type_url).filter(|t| self.subscribed(*t))
        else {
            self.stats.counter("control_plane.rudder_nacks_total").inc();
            return Step {
                requests: vec![DiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce,
                    error_detail: Some(nack_status(
                        &resp.type_url,
                        &[format!("type {} was not subscribed", resp.type_url)],
                    )),
                    ..DiscoveryRequest::default()
                }],
                changes: Vec::new(),
            };
        };
        self.nonce[ty] = resp.nonce.clone();
        let items = resp
            .resources
            .into_iter()
            .map(|any| Incoming {
                name: None,
                version: resp.version_info.clone(),
                any: Some(any),
            })
            .collect();
        let applied = self
            .core
            .apply(ty, items, &[], ty.full_set(), SystemTime::now());
        let (refused, changes) = match applied {
            Ok(o) => (o.refused, o.changes),
            Err(why) => (vec![why], Vec::new()),
        };
        let names = self.current_names(ty);
        let mut answer = self.request(ty, names);
        if refused.is_empty() {
            self.previous[ty] = std::mem::replace(&mut self.accepted[ty], resp.version_info);
            answer.version_info = self.accepted[ty].clone();
        } else {
            self.stats.counter("control_plane.rudder_nacks_total").inc();
            answer.error_detail = Some(nack_status(ty.short(), &refused));
        }
        // What the new resources name is requested before the answer, as Envoy does:
        // a control plane seeing the ACK then knows more is wanted.
        let mut requests = self.follow_ups();
        requests.push(answer);
        Step { requests, changes }
    }

    /// Turns `answer`, the ACK just built for a response of `ty`, into its NACK: what
    /// was applied could not be used (a listener that cannot bind, as Envoy reports it),
    /// so the accepted version stays the one before.
    pub(crate) fn refuse_applied(
        &mut self,
        ty: XdsType,
        answer: &mut DiscoveryRequest,
        reasons: &[String],
    ) {
        self.accepted[ty] = self.previous[ty].clone();
        answer.version_info = self.accepted[ty].clone();
        answer.error_detail = Some(nack_status(ty.short(), reasons));
        self.stats.counter("control_plane.rudder_nacks_total").inc();
    }

    /// Whether the initial configuration is complete.
    pub(crate) fn ready(&self) -> bool {
        self.core.ready()
    }

    fn subscribed(&self, ty: XdsType) -> bool {
        self.core.wildcard(ty) || self.requested[ty].is_some()
    }

    fn current_names(&self, ty: XdsType) -> Vec<String> {
        self.requested[ty]
            .iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
    }

    /// Requests for the named types whose wanted names differ from those requested.
    fn follow_ups(&mut self) -> Vec<DiscoveryRequest> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        let mut out = Vec::new();
        for ty in [XdsType::Endpoint, XdsType::Route, XdsType::Secret] {
            // Compared in place, cloned only when changed (10,000 names per response).
            let wanted = self.core.wanted(ty).unwrap_or(&NONE);
            let changed = match &self.requested[ty] {
                None => !wanted.is_empty(),
                Some(had) => had != wanted,
            };
            if changed {
                let names = wanted.iter().cloned().collect();
                self.requested[ty] = Some(wanted.clone());
                out.push(self.request(ty, names));
            }
        }
        out
    }

    /// A request for `ty` with `names`, the version held and the last nonce.
    fn request(&mut self, ty: XdsType, names: Vec<String>) -> DiscoveryRequest {
        let node = (!self.node_sent).then(|| self.node.clone());
        self.node_sent = true;
        DiscoveryRequest {
            version_info: self.accepted[ty].clone(),
            node,
            resource_names: names,
            type_url: ty.type_url().to_string(),
            response_nonce: self.nonce[ty].clone(),
            ..DiscoveryRequest::default()
        }
    }
}
