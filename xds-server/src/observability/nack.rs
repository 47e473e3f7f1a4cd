//! The record of rejected config: every NACK with the proxy, type, resources and the
//! proxy's own error text. Each rejection is logged once; the record is kept (bounded)
//! for `xdsctl` and CRD status to show.

use parking_lot::Mutex;
use std::collections::{HashSet, VecDeque};
use std::time::SystemTime;

use xds_types::XdsType;

use crate::xds::stream::Rejection;

/// How many rejections are kept.
const KEEP: usize = 1024;

/// One rejection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NackRecord {
    /// The proxy's node id.
    pub node: String,
    /// The type.
    pub kind: XdsType,
    /// The rejected version.
    pub version: String,
    /// The resources in the rejected response.
    pub resources: Vec<String>,
    /// The proxy's error text.
    pub error: String,
    /// When it arrived.
    pub at: SystemTime,
}

/// (node, type, version): one rejection, for logging it once.
type NackKey = (String, XdsType, String);

/// The bounded NACK record.
#[derive(Default)]
pub struct NackLog {
    inner: Mutex<(VecDeque<NackRecord>, HashSet<NackKey>)>,
}

impl NackLog {
    /// Records a rejection; logs it unless this exact one (node, type, version) was
    /// already seen.
    pub(crate) fn record(&self, node: &str, identity: &str, rejection: &Rejection) {
        let mut guard = self.inner.lock();
        let (records, seen) = &mut *guard;
        let key = (node.to_string(), rejection.kind, rejection.version.clone());
        if seen.insert(key) {
            tracing::warn!(
                node,
                identity,
                r#type = %rejection.kind,
                version = %rejection.version,
                resources = ?rejection.resources.iter().take(16).collect::<Vec<_>>(),
                resource_count = rejection.resources.len(),
                origin = ?rejection.sources,
                error = ?rejection.error,
                "proxy rejected config (NACK); it keeps its last good config"
            );
        }
        if records.len() == KEEP
            && let Some(old) = records.pop_front()
        {
            seen.remove(&(old.node, old.kind, old.version));
        }
        const NAMES_KEPT: usize = 16;
        let mut resources: Vec<String> = rejection
            .resources
            .iter()
            .take(NAMES_KEPT)
            .cloned()
            .collect();
        if rejection.resources.len() > NAMES_KEPT {
            resources.push(format!(
                "... and {} more",
                rejection.resources.len() - NAMES_KEPT
            ));
        }
        records.push_back(NackRecord {
            node: node.to_string(),
            kind: rejection.kind,
            version: rejection.version.clone(),
            resources,
            error: rejection.error.clone(),
            at: SystemTime::now(),
        });
    }

    /// Every kept rejection, oldest first.
    pub fn all(&self) -> Vec<NackRecord> {
        let guard = self.inner.lock();
        guard.0.iter().cloned().collect()
    }
}
