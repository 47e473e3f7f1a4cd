//! What every connected proxy was sent and what it said back: the source of CSDS,
//! `xdsctl status` and `xdsctl dump`. Each stream records the events of its state
//! machine here; readers take a consistent copy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use translator::XdsType;

use crate::xds::snapshot::{Encoded, Snapshot};
use crate::xds::stream::Event;

/// Where one resource stands with a proxy.
#[derive(Clone, Debug, PartialEq)]
pub enum ResourceStatus {
    /// Sent, no answer yet.
    Requested,
    /// Accepted.
    Acked,
    /// Rejected, with the proxy's error text; it keeps its last good version.
    Nacked(Arc<str>),
}

/// One resource as last sent to a proxy.
#[derive(Clone, Debug)]
pub struct SentResource {
    /// The resource.
    pub resource: Arc<Encoded>,
    /// The version of the response that carried it.
    pub response_version: String,
    /// Its status.
    pub status: ResourceStatus,
    /// When the status last changed.
    pub updated: SystemTime,
    /// The last version the proxy accepted, if any.
    pub last_good: Option<String>,
}

/// What is kept of the node a proxy sent: its id, user agent and the parsed identity,
/// each bounded. Its metadata is not kept (it is untrusted and may be large).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// `node.user_agent_name`.
    pub user_agent: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's service account.
    pub service_account: String,
}

impl NodeInfo {
    /// The bounded part of `node`, with the identity parsed from it.
    pub fn new(node: Option<&Node>, identity: &translator::identity::ProxyIdentity) -> Self {
        let clip = |s: &str| crds::text::clip(s, 256);
        NodeInfo {
            id: clip(&identity.node_id),
            cluster: node.map(|n| clip(&n.cluster)).unwrap_or_default(),
            user_agent: node.map(|n| clip(&n.user_agent_name)).unwrap_or_default(),
            namespace: identity.namespace.clone(),
            pod: identity.pod.clone(),
            service_account: identity.service_account.clone(),
        }
    }

    /// A `Node` for CSDS: the kept fields, the identity as metadata.
    pub fn to_node(&self) -> Node {
        use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.to_string())),
        };
        Node {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            user_agent_name: self.user_agent.clone(),
            metadata: Some(Struct {
                fields: [
                    (translator::identity::META_NAMESPACE, &self.namespace),
                    (translator::identity::META_POD, &self.pod),
                    (
                        translator::identity::META_SERVICE_ACCOUNT,
                        &self.service_account,
                    ),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), s(v)))
                .collect(),
            }),
            ..Default::default()
        }
    }
}

/// One connected proxy (one stream).
#[derive(Clone, Debug)]
pub struct ProxyState {
    /// What is kept of the node it sent.
    pub node: NodeInfo,
    /// Its identity: the SPIFFE ID of its verified certificate (`unverified:NS/SA` with
    /// plain-text xDS).
    pub identity: String,
    /// `envoy` or `grpc`.
    pub kind: &'static str,
    /// `sotw` or `delta`.
    pub stream: &'static str,
    /// When it connected.
    pub connected: SystemTime,
    /// Its last ACK.
    pub last_ack: Option<SystemTime>,
    /// What it was sent, by type and name.
    pub sent: BTreeMap<XdsType, BTreeMap<String, SentResource>>,
    /// Types it subscribed to.
    pub subscribed: Vec<XdsType>,
    /// What it should hold now.
    pub snapshot: Arc<Snapshot>,
}

/// How one type stands for one proxy, as `xdsctl status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeSync {
    /// Everything it should hold is accepted at the current version.
    Synced,
    /// Nothing of this type was sent.
    NotSent,
    /// Sent but not (yet) accepted, or accepted at an older version.
    Stale,
    /// The proxy rejected something of this type.
    Nacked,
}

impl TypeSync {
    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            TypeSync::Synced => "SYNCED",
            TypeSync::NotSent => "NOT SENT",
            TypeSync::Stale => "STALE",
            TypeSync::Nacked => "NACKED",
        }
    }
}

impl ProxyState {
    /// How `kind` stands.
    pub fn sync(&self, kind: XdsType) -> TypeSync {
        let sent = self.sent.get(&kind);
        let Some(sent) = sent.filter(|m| !m.is_empty()) else {
            return if self.subscribed.contains(&kind) && self.snapshot.get(kind).is_empty() {
                TypeSync::Synced
            } else {
                TypeSync::NotSent
            };
        };
        if sent
            .values()
            .any(|r| matches!(r.status, ResourceStatus::Nacked(_)))
        {
            return TypeSync::Nacked;
        }
        let acked_current = sent.values().all(|r| {
            r.status == ResourceStatus::Acked
                && self
                    .snapshot
                    .get(kind)
                    .get(&r.resource.name)
                    .is_none_or(|want| want.version == r.resource.version)
        });
        if acked_current {
            TypeSync::Synced
        } else {
            TypeSync::Stale
        }
    }
}

/// Every connected proxy.
#[derive(Default)]
pub struct ProxyRegistry {
    next: AtomicU64,
    proxies: Mutex<BTreeMap<u64, ProxyState>>,
}

impl ProxyRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ProxyState>> {
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a stream; returns its id.
    pub fn connect(&self, state: ProxyState) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, state);
        id
    }

    /// Forgets a stream.
    pub fn disconnect(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Records a new snapshot for a stream.
    pub fn snapshot(&self, id: u64, snapshot: Arc<Snapshot>) {
        if let Some(p) = self.lock().get_mut(&id) {
            p.snapshot = snapshot;
        }
    }

    /// Records what a stream's state machine did.
    pub fn record(&self, id: u64, events: &[Event], subscribed: Vec<XdsType>) {
        let mut all = self.lock();
        let Some(p) = all.get_mut(&id) else { return };
        p.subscribed = subscribed;
        let now = SystemTime::now();
        for e in events {
            match e {
                Event::Sent {
                    kind,
                    version,
                    resources,
                    removed,
                } => {
                    let map = p.sent.entry(*kind).or_default();
                    let names: Vec<&str> = resources.iter().map(|r| r.name.as_str()).collect();
                    match removed {
                        None => map.retain(|n, _| names.contains(&n.as_str())),
                        Some(gone) => gone.iter().for_each(|n| {
                            map.remove(n);
                        }),
                    }
                    for r in resources {
                        let last_good = map.get(&r.name).and_then(|old| match old.status {
                            ResourceStatus::Acked => Some(old.resource.version.clone()),
                            _ => old.last_good.clone(),
                        });
                        map.insert(
                            r.name.clone(),
                            SentResource {
                                resource: r.clone(),
                                response_version: version.clone(),
                                status: ResourceStatus::Requested,
                                updated: now,
                                last_good,
                            },
                        );
                    }
                }
                Event::Ack { kind, version, .. } => {
                    p.last_ack = Some(now);
                    for r in p.sent.entry(*kind).or_default().values_mut() {
                        if r.response_version == *version {
                            r.status = ResourceStatus::Acked;
                            r.last_good = Some(r.resource.version.clone());
                            r.updated = now;
                        }
                    }
                }
                Event::Nack(rej) => {
                    // One copy of the text, shared by every resource it names.
                    let error: Arc<str> = Arc::from(rej.error.as_str());
                    for r in p.sent.entry(rej.kind).or_default().values_mut() {
                        if r.response_version == rej.version {
                            r.status = ResourceStatus::Nacked(error.clone());
                            r.updated = now;
                        }
                    }
                }
                Event::Ignored { .. } => {}
            }
        }
    }

    /// A copy of every proxy's state.
    pub fn all(&self) -> Vec<ProxyState> {
        self.lock().values().cloned().collect()
    }

    /// Connected proxies by (kind, stream), for metrics.
    pub fn counts(&self) -> BTreeMap<(&'static str, &'static str), i64> {
        let mut out = BTreeMap::new();
        for p in self.lock().values() {
            *out.entry((p.kind, p.stream)).or_insert(0) += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

    #[test]
    fn only_the_parsed_identity_of_a_node_is_kept() {
        let mut fields: std::collections::BTreeMap<String, Value> = [
            ("rudder.dev/namespace", "default"),
            ("rudder.dev/pod", "web-1"),
            ("rudder.dev/service-account", "web"),
        ]
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value {
                    kind: Some(Kind::StringValue(v.into())),
                },
            )
        })
        .collect();
        fields.insert(
            "junk".into(),
            Value {
                kind: Some(Kind::StringValue("x".repeat(1 << 20))),
            },
        );
        let node = Node {
            id: "web-1.default".into(),
            user_agent_name: "u".repeat(10_000),
            metadata: Some(Struct {
                fields: fields.into_iter().collect(),
            }),
            ..Default::default()
        };
        let identity = translator::identity::ProxyIdentity::from_node(Some(&node)).expect("valid");
        let kept = NodeInfo::new(Some(&node), &identity);
        assert!(kept.user_agent.len() < 300);
        let shown = kept.to_node();
        let meta = shown.metadata.expect("metadata");
        assert_eq!(meta.fields.len(), 3, "{:?}", meta.fields.keys());
        assert!(!meta.fields.contains_key("junk"));
    }
}
