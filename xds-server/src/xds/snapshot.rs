//! Encoded resources and per-proxy snapshots.
//!
//! A resource is encoded once per translation into an [`Encoded`] behind an `Arc`, and
//! every proxy whose snapshot holds it shares that allocation. Versions are content
//! hashes, so the same config has the same version across restarts of the control
//! plane: a reconnecting proxy that already holds it is not sent it again.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use sha2::{Digest, Sha256};
use translator::XdsType;
use translator::model::ObjectKey;

/// One resource, encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// Its type.
    pub kind: XdsType,
    /// Its name.
    pub name: String,
    /// Content hash (16 hex digits).
    pub version: String,
    /// The encoded message.
    pub any: Any,
    /// Names of the resources of the previous stage it points at.
    pub refs: Vec<String>,
    /// The objects it was made from, with their revisions when it was made.
    pub sources: Vec<Source>,
}

/// An object a resource was made from, at a revision.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The object.
    pub key: ObjectKey,
    /// Its revision ([`translator::model::Model::rev`]).
    pub rev: u64,
}

impl Encoded {
    /// Encodes a translator resource (sources at revision 0).
    pub fn new(resource: &translator::Resource) -> Self {
        Self::with_revs(resource, |_| 0)
    }

    /// Encodes a translator resource; `rev` gives each source's revision.
    pub fn with_revs(resource: &translator::Resource, rev: impl Fn(&ObjectKey) -> u64) -> Self {
        let any = resource.body.to_any();
        let version = short_hash([any.value.as_slice()]);
        Encoded {
            kind: resource.kind,
            name: resource.name.clone(),
            version,
            any,
            refs: resource.refs.clone(),
            sources: resource
                .sources
                .iter()
                .map(|k| Source {
                    key: k.clone(),
                    rev: rev(k),
                })
                .collect(),
        }
    }
}

/// 16 hex digits of SHA-256 over the parts (each followed by a zero byte).
pub(crate) fn short_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0u8]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Resources of one type by name.
pub type Resources = BTreeMap<String, Arc<Encoded>>;

/// Everything one proxy should hold, per type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    by_type: [Resources; 5],
    /// When the source change that led to this snapshot was seen (for convergence time).
    pub changed_at: Option<std::time::Instant>,
}

fn index(kind: XdsType) -> usize {
    match kind {
        XdsType::Secret => 0,
        XdsType::Cluster => 1,
        XdsType::Endpoint => 2,
        XdsType::Listener => 3,
        XdsType::Route => 4,
    }
}

impl Snapshot {
    /// Resources of one type.
    pub fn get(&self, kind: XdsType) -> &Resources {
        &self.by_type[index(kind)]
    }

    /// Adds a resource (a later one with the same type and name replaces it).
    pub fn insert(&mut self, resource: Arc<Encoded>) {
        self.by_type[index(resource.kind)].insert(resource.name.clone(), resource);
    }

    /// Number of resources of all types.
    pub fn len(&self) -> usize {
        self.by_type.iter().map(BTreeMap::len).sum()
    }

    /// Whether the snapshot is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether two snapshots hold the same versions of the same resources.
    pub fn same_versions(&self, other: &Snapshot) -> bool {
        self.by_type.iter().zip(other.by_type.iter()).all(|(a, b)| {
            a.len() == b.len()
                && a.iter()
                    .zip(b.iter())
                    .all(|((na, ra), (nb, rb))| na == nb && ra.version == rb.version)
        })
    }
}
