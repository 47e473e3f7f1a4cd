//! The delta (incremental) ADS client as a pure machine: the requests that open a stream
//! (with `initial_resource_versions` of what is held), and for each response the ACK or
//! NACK, the subscribe/unsubscribe requests it causes, and the changes to publish.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use xds_types::{PerType, XdsType};

use super::core::{ConvertFn, Core, Incoming, nack_status};
use super::sotw::Step;
use crate::stats::Stats;

/// The delta client's state; it survives reconnects.
#[derive(Debug)]
pub(crate) struct Delta {
    pub(crate) core: Core,
    node: Node,
    node_sent: bool,
    /// The names subscribed per named type (none: never subscribed on this stream).
    subscribed: PerType<Option<BTreeSet<String>>>,
    stats: Arc<Stats>,
}

impl Delta {
    pub(crate) fn new(node: Node, convert: ConvertFn, stats: Arc<Stats>) -> Self {
        Delta {
            core: Core::new(convert, stats.clone()),
            node,
            node_sent: false,
            subscribed: PerType::default(),
            stats,
        }
    }

    /// The requests that open a stream: CDS and LDS wildcard, then every named type
    /// with names, each with the versions held.
    pub(crate) fn connect(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.node_sent = false;
        self.subscribed = PerType::default();
        let mut out = Vec::new();
        for ty in [XdsType::Cluster, XdsType::Listener] {
            let mut r = self.request(ty);
            r.initial_resource_versions = self
                .core
                .versions(ty)
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            out.push(r);
        }
        out.extend(self.follow_ups(true));
        out
    }

    /// Handles one response.
    pub(crate) fn on_response(
        &mut self,
        resp: DeltaDiscoveryResponse,
    ) -> Step<DeltaDiscoveryRequest> {
        let Some(ty) = XdsType::from_type_url(&resp.type_url).filter(|t| self.subscribed(*t))
        else {
            self.stats.counter("control_plane.rudder_nacks_total").inc();
            return Step {
                requests: vec![DeltaDiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce,
                    error_detail: Some(nack_status(
                        &resp.type_url,
                        &[format!("type {} was not subscribed", resp.type_url)],
                    )),
                    ..DeltaDiscoveryRequest::default()
                }],
                changes: Vec::new(),
            };
        };
        let items = resp
            .resources
            .into_iter()
            .map(|r| Incoming {
                name: Some(r.name),
                version: r.version,
                any: r.resource,
            })
            .collect();
        let applied = self
            .core
            .apply(ty, items, &resp.removed_resources, false, SystemTime::now());
        let (refused, changes) = match applied {
            Ok(o) => (o.refused, o.changes),
            Err(why) => (vec![why], Vec::new()),
        };
        let mut answer = self.request(ty);
        answer.response_nonce = resp.nonce;
        if !refused.is_empty() {
            self.stats.counter("control_plane.rudder_nacks_total").inc();
            answer.error_detail = Some(nack_status(ty.short(), &refused));
        }
        // What the new resources name is subscribed before the answer, as Envoy does:
        // a control plane seeing the ACK then knows more is wanted.
        let mut requests = self.follow_ups(false);
        requests.push(answer);
        Step { requests, changes }
    }

    /// Turns `answer`, the ACK just built for a response, into its NACK: what was
    /// applied could not be used (a listener that cannot bind, as Envoy reports it).
    pub(crate) fn refuse_applied(
        &mut self,
        ty: XdsType,
        answer: &mut DeltaDiscoveryRequest,
        reasons: &[String],
    ) {
        answer.error_detail = Some(nack_status(ty.short(), reasons));
        self.stats.counter("control_plane.rudder_nacks_total").inc();
    }

    /// Whether the initial configuration is complete.
    pub(crate) fn ready(&self) -> bool {
        self.core.ready()
    }

    fn subscribed(&self, ty: XdsType) -> bool {
        self.core.wildcard(ty) || self.subscribed[ty].is_some()
    }

    /// Subscribe/unsubscribe requests for the named types whose wanted names changed;
    /// on a new stream (`initial`), with the versions held.
    fn follow_ups(&mut self, initial: bool) -> Vec<DeltaDiscoveryRequest> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        let mut out = Vec::new();
        for ty in [XdsType::Endpoint, XdsType::Route, XdsType::Secret] {
            // Compared in place: cloning 10,000 names twice per response was most of
            // an endpoint change's cost at that size.
            let wanted = self.core.wanted(ty).unwrap_or(&NONE);
            let had = self.subscribed[ty].as_ref();
            if had.map_or(wanted.is_empty(), |h| h == wanted) {
                continue;
            }
            let had = had.unwrap_or(&NONE);
            let subscribe = wanted.difference(had).cloned().collect();
            let unsubscribe = had.difference(wanted).cloned().collect();
            let versions = if initial {
                self.core
                    .versions(ty)
                    .filter(|(n, _)| wanted.contains(*n))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect()
            } else {
                Default::default()
            };
            self.subscribed[ty] = Some(wanted.clone());
            let mut r = self.request(ty);
            r.resource_names_subscribe = subscribe;
            r.resource_names_unsubscribe = unsubscribe;
            r.initial_resource_versions = versions;
            out.push(r);
        }
        out
    }

    fn request(&mut self, ty: XdsType) -> DeltaDiscoveryRequest {
        let node = (!self.node_sent).then(|| self.node.clone());
        self.node_sent = true;
        DeltaDiscoveryRequest {
            node,
            type_url: ty.type_url().to_string(),
            ..DeltaDiscoveryRequest::default()
        }
    }
}
