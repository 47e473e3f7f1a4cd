//! State-of-the-world ADS: each response carries the whole set of a type the proxy
//! subscribes to, with one version for the set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use translator::XdsType;

use super::{Event, OrderWait, Readiness, Rejection, pinned};
use crate::xds::snapshot::{Resources, Snapshot, short_hash};

/// A response this stream sent.
#[derive(Clone, Debug, Default)]
struct Sent {
    version: String,
    resources: Resources,
}

#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    last_nonce: Option<String>,
    inflight: Option<Sent>,
    acked: Option<Sent>,
    /// Versions the proxy rejected lately (a few: a client alternating between
    /// subscriptions must not get a fresh response to reject every time).
    rejected: std::collections::VecDeque<String>,
    /// Send the next response even if its version is unchanged.
    force: bool,
    /// The version a reconnecting proxy said it holds, until matched.
    client_version: Option<String>,
}

impl TypeState {
    fn held(&self) -> impl Iterator<Item = &Arc<crate::xds::snapshot::Encoded>> {
        self.acked
            .iter()
            .chain(self.inflight.iter())
            .flat_map(|s| s.resources.values())
    }

    fn acked_names(&self) -> BTreeSet<String> {
        self.acked
            .iter()
            .flat_map(|s| s.resources.keys().cloned())
            .collect()
    }

    fn filter(&self, all: &Resources) -> Resources {
        if self.wildcard {
            all.clone()
        } else {
            self.names
                .iter()
                .filter_map(|n| all.get(n).map(|r| (n.clone(), r.clone())))
                .collect()
        }
    }
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct Step {
    /// Responses to send, in order.
    pub responses: Vec<DiscoveryResponse>,
    /// What happened.
    pub events: Vec<Event>,
}

/// One SotW ADS stream.
#[derive(Debug)]
pub struct SotwStream {
    snapshot: Arc<Snapshot>,
    types: BTreeMap<XdsType, TypeState>,
    next_nonce: u64,
    wait: OrderWait,
    /// Most names a stream may subscribe to, per type.
    name_limit: usize,
    /// Set when a request broke a limit; the stream must end.
    refusal: Option<String>,
}

fn set_version(resources: &Resources) -> String {
    short_hash(
        resources
            .values()
            .flat_map(|r| [r.name.as_bytes(), r.version.as_bytes()]),
    )
}

impl SotwStream {
    /// A stream that will serve `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        SotwStream {
            snapshot,
            types: XdsType::ALL
                .iter()
                .map(|t| (*t, TypeState::default()))
                .collect(),
            next_nonce: 0,
            wait: OrderWait::default(),
            name_limit: usize::MAX,
            refusal: None,
        }
    }

    /// Caps the names one type may subscribe to; a request over it sets a refusal.
    pub fn with_name_limit(mut self, limit: usize) -> Self {
        self.name_limit = limit;
        self
    }

    /// Why the stream must end, if a request broke a limit.
    pub fn take_refusal(&mut self) -> Option<String> {
        self.refusal.take()
    }

    /// Types the proxy has asked for.
    pub fn subscribed(&self) -> Vec<XdsType> {
        self.types
            .iter()
            .filter(|(_, s)| s.subscribed)
            .map(|(t, _)| *t)
            .collect()
    }

    /// Whether no response is waiting for an answer.
    pub fn idle(&self) -> bool {
        self.types.values().all(|s| s.inflight.is_none())
    }

    /// Whether an ordering wait is running (the caller should tick).
    pub fn waiting(&self) -> bool {
        self.wait.waiting()
    }

    /// The version the proxy last accepted, per type.
    pub fn acked_versions(&self) -> BTreeMap<XdsType, String> {
        self.types
            .iter()
            .filter_map(|(t, s)| s.acked.as_ref().map(|a| (*t, a.version.clone())))
            .collect()
    }

    /// Handles one request from the proxy.
    pub fn on_request(&mut self, req: &DiscoveryRequest, now: Instant) -> Step {
        let mut step = Step::default();
        let Some(kind) = XdsType::from_type_url(&req.type_url) else {
            step.events.push(Event::Ignored {
                type_url: crds::text::clip(&req.type_url, 256),
                reason: "type not served".into(),
            });
            return step;
        };
        let Some(state) = self.types.get_mut(&kind) else {
            return step;
        };
        if let Err(e) = super::check_request_sizes(
            kind,
            req.resource_names.iter(),
            [&req.version_info, &req.response_nonce],
            0,
        ) {
            self.refusal = Some(e);
            return step;
        }
        if req.resource_names.len() > self.name_limit {
            self.refusal = Some(format!(
                "{kind}: {} resource names exceed {} (--max-subscribed-names)",
                req.resource_names.len(),
                self.name_limit
            ));
            return step;
        }
        if !req.response_nonce.is_empty() {
            if state.last_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                step.events.push(Event::Ignored {
                    type_url: req.type_url.clone(),
                    reason: format!("stale nonce {}", req.response_nonce),
                });
                return step;
            }
            if let Some(sent) = state.inflight.take() {
                match &req.error_detail {
                    None => {
                        step.events.push(Event::Ack {
                            kind,
                            version: sent.version.clone(),
                            accepted: super::policy_sources(kind, sent.resources.values()),
                        });
                        state.acked = Some(sent);
                        state.rejected.clear();
                    }
                    Some(status) => {
                        let acked = state.acked.as_ref().map(|a| &a.resources);
                        let (suspects, precise) =
                            super::suspects(kind, sent.resources.values(), |name| {
                                acked.and_then(|a| a.get(name))
                            });
                        step.events.push(Event::Nack(Rejection {
                            kind,
                            version: sent.version.clone(),
                            resources: sent.resources.keys().cloned().collect(),
                            error: super::bound_nack_text(&status.message),
                            sources: super::sources_of(sent.resources.values()),
                            suspects,
                            precise,
                        }));
                        if state.rejected.len() >= 8 {
                            state.rejected.pop_front();
                        }
                        state.rejected.push_back(sent.version);
                    }
                }
            }
        } else if !state.subscribed && !req.version_info.is_empty() {
            state.client_version = Some(req.version_info.clone());
        }
        state.subscribed = true;
        state.names = req.resource_names.iter().cloned().collect();
        state.wildcard =
            state.names.remove("*") || (state.names.is_empty() && kind.wildcard_by_default());
        self.flush(now, &mut step);
        step
    }

    /// Takes a new snapshot and sends what changed.
    pub fn on_snapshot(&mut self, snapshot: Arc<Snapshot>, now: Instant) -> Step {
        self.snapshot = snapshot;
        let mut step = Step::default();
        self.flush(now, &mut step);
        step
    }

    /// Re-checks waits that may have run out.
    pub fn on_tick(&mut self, now: Instant) -> Step {
        let mut step = Step::default();
        self.flush(now, &mut step);
        step
    }

    fn state(&self, kind: XdsType) -> &TypeState {
        // Every type is inserted in `new`.
        &self.types[&kind]
    }

    /// Everything the proxy should hold per type, before subscription filtering:
    /// the snapshot plus Clusters (and their endpoints) that held routes still use.
    fn desired(&self) -> BTreeMap<XdsType, Resources> {
        let snap = &self.snapshot;
        let mut out: BTreeMap<XdsType, Resources> = XdsType::ALL
            .iter()
            .map(|t| (*t, snap.get(*t).clone()))
            .collect();
        let keep = pinned(
            self.state(XdsType::Listener)
                .held()
                .chain(self.state(XdsType::Route).held()),
        );
        let old_clusters: Resources = self
            .state(XdsType::Cluster)
            .held()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        let clusters = out.entry(XdsType::Cluster).or_default();
        for name in keep {
            if let Some(old) = old_clusters.get(&name) {
                clusters.entry(name).or_insert_with(|| old.clone());
            }
        }
        let eds_keep = pinned(clusters.values());
        let old_eds: Resources = self
            .state(XdsType::Endpoint)
            .held()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        let eds = out.entry(XdsType::Endpoint).or_default();
        for name in eds_keep {
            if let Some(old) = old_eds.get(&name) {
                eds.entry(name).or_insert_with(|| old.clone());
            }
        }
        out
    }

    /// The response set for `kind` if one should be sent (ignoring ordering).
    fn candidate(&mut self, kind: XdsType, all: &Resources) -> Option<(String, Resources)> {
        let state = self.types.get_mut(&kind)?;
        if !state.subscribed || state.inflight.is_some() {
            return None;
        }
        let resources = state.filter(all);
        let version = set_version(&resources);
        if state.acked.is_none() && state.client_version.as_deref() == Some(version.as_str()) {
            // A reconnecting proxy already holds exactly this: nothing to resend.
            state.acked = Some(Sent { version, resources });
            state.client_version = None;
            return None;
        }
        let forced = std::mem::take(&mut state.force);
        if !forced
            && (state.acked.as_ref().is_some_and(|a| a.version == version)
                || state.rejected.contains(&version))
        {
            return None;
        }
        Some((version, resources))
    }

    fn flush(&mut self, now: Instant, step: &mut Step) {
        let desired = self.desired();
        let empty = Resources::new();
        let get = |t: XdsType| desired.get(&t).unwrap_or(&empty);
        let mut lower_busy = false;
        let mut blocked = false;
        for kind in XdsType::ALL {
            let stage_one = matches!(kind, XdsType::Listener | XdsType::Route);
            let Some((version, resources)) = self.candidate(kind, get(kind)) else {
                if !stage_one && self.state(kind).inflight.is_some() {
                    lower_busy = true;
                }
                continue;
            };
            if stage_one {
                if lower_busy {
                    continue;
                }
                let held_clusters = self.state(XdsType::Cluster).acked_names();
                let held_endpoints = self.state(XdsType::Endpoint).acked_names();
                let readiness = Readiness {
                    held_clusters: &held_clusters,
                    held_endpoints: &held_endpoints,
                    desired_clusters: get(XdsType::Cluster),
                    desired_endpoints: get(XdsType::Endpoint),
                };
                if !readiness.ready(resources.values().flat_map(|r| r.refs.iter()))
                    && !self.wait.expired(now)
                {
                    blocked = true;
                    continue;
                }
            } else {
                lower_busy = true;
            }
            self.next_nonce += 1;
            let nonce = self.next_nonce.to_string();
            step.responses.push(DiscoveryResponse {
                version_info: version.clone(),
                resources: resources.values().map(|r| r.any.clone()).collect(),
                type_url: kind.type_url().to_string(),
                nonce: nonce.clone(),
                ..Default::default()
            });
            // Envoy re-warms a changed Cluster and waits for its endpoints: answer the
            // next EDS request even if the endpoints did not change.
            let rewarm = kind == XdsType::Cluster
                && self
                    .state(XdsType::Cluster)
                    .acked
                    .as_ref()
                    .is_some_and(|a| {
                        resources.iter().any(|(n, r)| {
                            a.resources
                                .get(n)
                                .is_some_and(|old| old.version != r.version)
                        })
                    });
            if rewarm && let Some(eds) = self.types.get_mut(&XdsType::Endpoint) {
                eds.force = true;
            }
            step.events.push(Event::Sent {
                kind,
                version: version.clone(),
                resources: resources.values().cloned().collect(),
                removed: None,
            });
            if let Some(state) = self.types.get_mut(&kind) {
                state.last_nonce = Some(nonce);
                state.inflight = Some(Sent { version, resources });
            }
        }
        if !blocked {
            self.wait.clear();
        }
    }
}
