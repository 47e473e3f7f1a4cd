//! Incremental (delta) ADS: responses carry only resources whose version the proxy
//! does not hold, plus the names it must drop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use translator::XdsType;

use super::{Event, OrderWait, Readiness, Rejection, pinned};
use crate::xds::snapshot::{Encoded, Snapshot, short_hash};

/// What the proxy holds of one resource.
#[derive(Clone, Debug)]
struct Held {
    version: String,
    /// Unknown for resources a reconnecting proxy reported by version only.
    resource: Option<Arc<Encoded>>,
}

#[derive(Clone, Debug)]
struct Sent {
    nonce: String,
    resources: Vec<Arc<Encoded>>,
    removed: Vec<String>,
}

#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    responded: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    held: BTreeMap<String, Held>,
    inflight: Option<Sent>,
    /// name -> version the proxy rejected; not re-sent.
    rejected: BTreeMap<String, String>,
}

impl TypeState {
    fn held_resources(&self) -> impl Iterator<Item = &Arc<Encoded>> {
        self.held
            .values()
            .filter_map(|h| h.resource.as_ref())
            .chain(self.inflight.iter().flat_map(|s| s.resources.iter()))
    }

    fn in_scope(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct Step {
    /// Responses to send, in order.
    pub responses: Vec<DeltaDiscoveryResponse>,
    /// What happened.
    pub events: Vec<Event>,
}

/// One delta ADS stream.
#[derive(Debug)]
pub struct DeltaStream {
    snapshot: Arc<Snapshot>,
    types: BTreeMap<XdsType, TypeState>,
    next_nonce: u64,
    wait: OrderWait,
    /// Most names a stream may subscribe to, per type.
    name_limit: usize,
    /// Set when a request broke a limit; the stream must end.
    refusal: Option<String>,
}

impl DeltaStream {
    /// A stream that will serve `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        DeltaStream {
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

    /// Versions the proxy holds, per type and name.
    pub fn held_versions(&self) -> BTreeMap<XdsType, BTreeMap<String, String>> {
        self.types
            .iter()
            .map(|(t, s)| {
                let v = s
                    .held
                    .iter()
                    .map(|(n, h)| (n.clone(), h.version.clone()))
                    .collect();
                (*t, v)
            })
            .collect()
    }

    /// Handles one request from the proxy.
    pub fn on_request(&mut self, req: &DeltaDiscoveryRequest, now: Instant) -> Step {
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
        let sizes = super::check_request_sizes(
            kind,
            req.resource_names_subscribe
                .iter()
                .chain(req.initial_resource_versions.keys()),
            req.initial_resource_versions
                .values()
                .chain(std::iter::once(&req.response_nonce)),
            if req.resource_names_subscribe.is_empty() && req.initial_resource_versions.is_empty() {
                0
            } else {
                state.names.iter().map(String::len).sum()
            },
        );
        if let Err(e) = sizes {
            self.refusal = Some(e);
            return step;
        }
        let asked = req.resource_names_subscribe.len() + req.initial_resource_versions.len();
        if state.names.len().saturating_add(asked) > self.name_limit {
            self.refusal = Some(format!(
                "{kind}: subscribing to {} more names would exceed {} (--max-subscribed-names)",
                asked, self.name_limit
            ));
            return step;
        }
        if !state.subscribed {
            state.subscribed = true;
            // A fresh subscription gets an answer even when there is nothing to send;
            // a reconnecting proxy that already holds everything does not.
            state.responded = !req.initial_resource_versions.is_empty();
            state.wildcard = req.resource_names_subscribe.is_empty() && kind.wildcard_by_default();
            for (name, version) in &req.initial_resource_versions {
                state.held.insert(
                    name.clone(),
                    Held {
                        version: version.clone(),
                        resource: None,
                    },
                );
            }
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else {
                state.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(name);
                state.held.remove(name);
            }
        }
        if !req.response_nonce.is_empty() {
            match state.inflight.take() {
                Some(sent) if sent.nonce == req.response_nonce => match &req.error_detail {
                    None => {
                        for r in &sent.resources {
                            state.held.insert(
                                r.name.clone(),
                                Held {
                                    version: r.version.clone(),
                                    resource: Some(r.clone()),
                                },
                            );
                            state.rejected.remove(&r.name);
                        }
                        for name in &sent.removed {
                            state.held.remove(name);
                        }
                        step.events.push(Event::Ack {
                            kind,
                            version: response_version(&sent),
                            accepted: super::policy_sources(kind, sent.resources.iter()),
                        });
                    }
                    Some(status) => {
                        for r in &sent.resources {
                            state.rejected.insert(r.name.clone(), r.version.clone());
                        }
                        let held = &state.held;
                        let (suspects, precise) =
                            super::suspects(kind, sent.resources.iter(), |name| {
                                held.get(name).and_then(|h| h.resource.as_ref())
                            });
                        step.events.push(Event::Nack(Rejection {
                            kind,
                            version: response_version(&sent),
                            resources: sent.resources.iter().map(|r| r.name.clone()).collect(),
                            error: super::bound_nack_text(&status.message),
                            sources: super::sources_of(sent.resources.iter()),
                            suspects,
                            precise,
                        }));
                    }
                },
                other => {
                    state.inflight = other;
                    step.events.push(Event::Ignored {
                        type_url: req.type_url.clone(),
                        reason: format!("stale nonce {}", req.response_nonce),
                    });
                }
            }
        }
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
        &self.types[&kind]
    }

    /// (resources to send, names to remove) for `kind`, ignoring ordering.
    fn candidate(&self, kind: XdsType, keep: &BTreeSet<String>) -> Option<Sent> {
        let state = self.state(kind);
        if !state.subscribed || state.inflight.is_some() {
            return None;
        }
        let all = self.snapshot.get(kind);
        let resources: Vec<Arc<Encoded>> = all
            .values()
            .filter(|r| state.in_scope(&r.name))
            .filter(|r| {
                state
                    .held
                    .get(&r.name)
                    .is_none_or(|h| h.version != r.version)
            })
            .filter(|r| state.rejected.get(&r.name) != Some(&r.version))
            .cloned()
            .collect();
        let removed: Vec<String> = state
            .held
            .keys()
            .filter(|n| !all.contains_key(*n) && !keep.contains(*n))
            .cloned()
            .collect();
        if resources.is_empty() && removed.is_empty() && state.responded {
            return None;
        }
        Some(Sent {
            nonce: String::new(),
            resources,
            removed,
        })
    }

    fn flush(&mut self, now: Instant, step: &mut Step) {
        let keep_clusters = pinned(
            self.state(XdsType::Listener)
                .held_resources()
                .chain(self.state(XdsType::Route).held_resources()),
        );
        let keep_endpoints = pinned(
            self.state(XdsType::Cluster)
                .held_resources()
                .chain(self.snapshot.get(XdsType::Cluster).values()),
        );
        let mut lower_busy = false;
        let mut blocked = false;
        for kind in XdsType::ALL {
            let stage_one = matches!(kind, XdsType::Listener | XdsType::Route);
            let keep = match kind {
                XdsType::Cluster => &keep_clusters,
                XdsType::Endpoint => &keep_endpoints,
                _ => &BTreeSet::new(),
            };
            let Some(mut sent) = self.candidate(kind, keep) else {
                if !stage_one && self.state(kind).inflight.is_some() {
                    lower_busy = true;
                }
                continue;
            };
            if stage_one {
                if lower_busy {
                    continue;
                }
                let held = |t: XdsType| self.state(t).held.keys().cloned().collect::<BTreeSet<_>>();
                let (held_clusters, held_endpoints) =
                    (held(XdsType::Cluster), held(XdsType::Endpoint));
                let readiness = Readiness {
                    held_clusters: &held_clusters,
                    held_endpoints: &held_endpoints,
                    desired_clusters: self.snapshot.get(XdsType::Cluster),
                    desired_endpoints: self.snapshot.get(XdsType::Endpoint),
                };
                if !readiness.ready(sent.resources.iter().flat_map(|r| r.refs.iter()))
                    && !self.wait.expired(now)
                {
                    blocked = true;
                    continue;
                }
            } else {
                lower_busy = true;
            }
            self.next_nonce += 1;
            sent.nonce = self.next_nonce.to_string();
            step.responses.push(DeltaDiscoveryResponse {
                system_version_info: response_version(&sent),
                resources: sent
                    .resources
                    .iter()
                    .map(|r| DeltaResource {
                        name: r.name.clone(),
                        version: r.version.clone(),
                        resource: Some(r.any.clone()),
                        ..Default::default()
                    })
                    .collect(),
                type_url: kind.type_url().to_string(),
                removed_resources: sent.removed.clone(),
                nonce: sent.nonce.clone(),
                ..Default::default()
            });
            // Envoy re-warms a changed Cluster and waits for its endpoints: send them
            // again even though they did not change.
            let rewarm: Vec<String> = if kind == XdsType::Cluster {
                let held = &self.state(XdsType::Cluster).held;
                sent.resources
                    .iter()
                    .filter(|r| held.contains_key(&r.name))
                    .flat_map(|r| r.refs.iter().cloned())
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(eds) = self.types.get_mut(&XdsType::Endpoint) {
                for name in &rewarm {
                    eds.held.remove(name);
                }
            }
            step.events.push(Event::Sent {
                kind,
                version: response_version(&sent),
                resources: sent.resources.clone(),
                removed: Some(sent.removed.clone()),
            });
            if let Some(state) = self.types.get_mut(&kind) {
                state.responded = true;
                state.inflight = Some(sent);
            }
        }
        if !blocked {
            self.wait.clear();
        }
    }
}

/// A version naming one delta response: a hash of what it carried.
fn response_version(sent: &Sent) -> String {
    short_hash(
        sent.resources
            .iter()
            .flat_map(|r| [r.name.as_bytes(), r.version.as_bytes()])
            .chain(sent.removed.iter().map(|n| n.as_bytes())),
    )
}
