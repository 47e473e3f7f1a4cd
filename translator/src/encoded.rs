//! Resources encoded once. A translated resource becomes an [`Encoded`] behind an `Arc`
//! and every proxy that should hold it shares that allocation. Versions are content
//! hashes, so the same config has the same version across restarts of the control plane:
//! a reconnecting proxy that already holds it is not sent it again.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use sha2::{Digest, Sha256};

use crate::model::ObjectKey;
use xds_types::XdsType;

/// One resource, encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// Its type.
    pub kind: XdsType,
    /// Its name.
    pub name: Arc<str>,
    /// Content hash (16 hex digits), the xDS version.
    pub version: String,
    /// The same hash as a number, for cheap comparisons and set digests.
    pub hash: u64,
    /// The encoded message.
    pub any: Any,
    /// Names of the resources of the previous stage it points at.
    pub refs: Vec<Arc<str>>,
    /// The objects it was made from, with their revisions when it was made.
    pub sources: Vec<Source>,
}

/// An object a resource was made from, at a revision.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The object.
    pub key: ObjectKey,
    /// Its revision ([`crate::model::Model::rev`]).
    pub rev: u64,
}

/// Resources of one type by name.
pub type TypeMap = BTreeMap<Arc<str>, Arc<Encoded>>;

impl Encoded {
    /// Encodes a translator resource (sources at revision 0).
    pub fn new(resource: &crate::output::Resource) -> Self {
        Self::with_revs(resource, |_| 0)
    }

    /// Encodes a translator resource; `rev` gives each source's revision.
    pub fn with_revs(resource: &crate::output::Resource, rev: impl Fn(&ObjectKey) -> u64) -> Self {
        let any = resource.body.to_any();
        let digest = Sha256::digest(&any.value);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Encoded {
            kind: resource.kind,
            name: Arc::from(resource.name.as_str()),
            version: hex(&first),
            hash: u64::from_be_bytes(first),
            any,
            refs: resource
                .refs
                .iter()
                .map(|r| Arc::from(r.as_str()))
                .collect(),
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

    /// A synthetic resource (tests and benchmarks): `body` stands in for the message.
    pub fn synthetic(kind: XdsType, name: &str, version: &str, refs: &[&str]) -> Self {
        let hash = short_hash_u64([name.as_bytes(), version.as_bytes()]);
        Encoded {
            kind,
            name: Arc::from(name),
            version: version.to_string(),
            hash,
            any: Any {
                type_url: kind.type_url().into(),
                value: format!("{name}@{version}").into_bytes(),
            },
            refs: refs.iter().map(|s| Arc::from(*s)).collect(),
            sources: Vec::new(),
        }
    }

    /// Whether two encodings are the same resource made from the same object revisions
    /// (so the older `Arc` can be kept).
    pub fn same_as(&self, other: &Encoded) -> bool {
        self.hash == other.hash && self.version == other.version && self.sources == other.sources
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 hex digits of SHA-256 over the parts (each followed by a zero byte).
pub fn short_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    format!("{:016x}", short_hash_u64(parts))
}

/// The first 8 bytes of SHA-256 over the parts (each followed by a zero byte).
pub fn short_hash_u64<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// An order-independent digest of a set of (name, version) pairs: XOR of a hash of each.
/// Adding, removing or changing one element updates it in O(1), so a stream keeps the
/// version of everything it holds without walking it.
pub fn element_digest(name: &str, hash: u64) -> u64 {
    short_hash_u64([name.as_bytes(), &hash.to_be_bytes()])
}
