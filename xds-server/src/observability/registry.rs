//! Every connected proxy: who it is, and a handle on its stream's state machine. CSDS,
//! `xdsctl status`, `xdsctl dump` and metrics read the machines' own state on demand (what
//! each proxy should hold, what it holds, what is in flight, what it rejected), so the
//! registry keeps nothing per resource and nothing is copied until someone asks.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::Node;
use xds_types::XdsType;

use crate::xds::stream::ResourceView;

/// A stream's state as readers see it.
pub trait StreamView: Send + Sync {
    /// What the proxy should hold of `kind` (and holds but should drop), and where each
    /// resource stands.
    fn resources(&self, kind: XdsType) -> Vec<ResourceView>;
    /// Types the proxy subscribed to.
    fn subscribed(&self) -> Vec<XdsType>;
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
    pub(crate) fn to_node(&self) -> Node {
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
pub struct ProxyInfo {
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
    /// Its stream's state.
    pub state: Arc<dyn StreamView>,
}

impl std::fmt::Debug for ProxyInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyInfo")
            .field("node", &self.node)
            .field("identity", &self.identity)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// A registered proxy.
#[derive(Debug)]
pub struct Proxy {
    /// Who it is.
    pub info: ProxyInfo,
    /// Its last answer that left nothing in flight (milliseconds since the epoch).
    last_ack: AtomicU64,
}

impl Proxy {
    /// When it last had everything it was sent answered.
    pub(crate) fn last_ack(&self) -> Option<SystemTime> {
        match self.last_ack.load(Ordering::Relaxed) {
            0 => None,
            ms => UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
        }
    }

    /// How `kind` stands.
    pub fn sync(&self, kind: XdsType) -> TypeSync {
        sync_of(
            &self.info.state.resources(kind),
            self.info.state.subscribed().contains(&kind),
        )
    }
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
    /// The proxy rejected the version it should hold.
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

/// The state of a type from its resources.
pub(crate) fn sync_of(resources: &[ResourceView], subscribed: bool) -> TypeSync {
    if resources.iter().any(|r| r.rejected.is_some()) {
        return TypeSync::Nacked;
    }
    let current = |r: &ResourceView| match &r.want {
        Some(w) => r.held.as_deref() == Some(w.version.as_str()) && !r.inflight,
        None => false,
    };
    if resources.iter().all(current) {
        return if subscribed || !resources.is_empty() {
            TypeSync::Synced
        } else {
            TypeSync::NotSent
        };
    }
    if resources.iter().all(|r| r.held.is_none() && !r.inflight) {
        TypeSync::NotSent
    } else {
        TypeSync::Stale
    }
}

/// Every connected proxy.
#[derive(Default)]
pub struct ProxyRegistry {
    next: AtomicU64,
    proxies: Mutex<BTreeMap<u64, Arc<Proxy>>>,
}

impl ProxyRegistry {
    fn lock(&self) -> parking_lot::MutexGuard<'_, BTreeMap<u64, Arc<Proxy>>> {
        self.proxies.lock()
    }

    /// Registers a stream; returns its id.
    pub fn connect(&self, info: ProxyInfo) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Arc::new(Proxy {
                info,
                last_ack: AtomicU64::new(0),
            }),
        );
        id
    }

    /// Forgets a stream.
    pub(crate) fn disconnect(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// A stream's proxy answered everything in flight.
    pub(crate) fn acked(&self, id: u64) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        if let Some(p) = self.lock().get(&id) {
            p.last_ack.store(ms, Ordering::Relaxed);
        }
    }

    /// Every connected proxy (handles, not copies).
    pub fn all(&self) -> Vec<Arc<Proxy>> {
        self.lock().values().cloned().collect()
    }

    /// Connected proxies by (kind, stream), for metrics.
    pub fn counts(&self) -> BTreeMap<(&'static str, &'static str), i64> {
        let mut out = BTreeMap::new();
        for p in self.lock().values() {
            *out.entry((p.info.kind, p.info.stream)).or_insert(0) += 1;
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
