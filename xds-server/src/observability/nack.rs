//! The record of rejected config: every NACK with the proxy, type, resources and the
//! proxy's own error text. Each rejection is logged once; the record is kept (bounded)
//! for `xdsctl` and CRD status to show. Rejections whose cause is known to be on the
//! client's side, with a known fix, get a [`hint`] naming it.

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
    /// What to do about it, when the cause is known ([`hint`]).
    pub hint: Option<&'static str>,
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
                hint = hint(&rejection.error).unwrap_or_default(),
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
            hint: hint(&rejection.error),
            at: SystemTime::now(),
        });
    }

    /// Every kept rejection, oldest first.
    pub fn all(&self) -> Vec<NackRecord> {
        let guard = self.inner.lock();
        guard.0.iter().cloned().collect()
    }
}

/// The fix for a client that cannot use the RBAC HTTP filter (gRFC A41).
pub(crate) const RBAC_FILTER_HINT: &str = "this gRPC server does not have the RBAC HTTP filter (gRFC A41) enabled; for grpc-js (@grpc/grpc-js-xds) set GRPC_XDS_EXPERIMENTAL_RBAC=true in the server's environment. Rudder marks the filter required so that authorization is never skipped, so the server keeps its last good Listener (or does not serve) until then";

/// What to do about a rejection, when its error text (untrusted, any case) shows a
/// cause on the client's side with a known fix: today a server-side gRPC library that
/// does not know the RBAC filter type. Only wording about the filter type counts:
/// grpc-js without GRPC_XDS_EXPERIMENTAL_RBAC says `envoy.filters.http.rbac filter
/// validation failed`; C-core-style texts say `unsupported filter type` / `unknown
/// filter type`; others `no filter registered`. A word like "unknown" or "unsupported"
/// elsewhere (a field of the policy, a CEL condition) is the object's fault: no hint.
/// Pure: the text in, the hint out.
pub(crate) fn hint(error: &str) -> Option<&'static str> {
    let text = error.to_ascii_lowercase();
    let names_rbac = text.contains("envoy.filters.http.rbac")
        || text.contains("envoy.extensions.filters.http.rbac.v3.rbac");
    let filter_type_unknown = [
        "envoy.filters.http.rbac filter validation failed",
        "unsupported filter type",
        "unknown filter type",
        "no filter registered",
        "filter type not registered",
        "unregistered filter type",
    ]
    .iter()
    .any(|m| text.contains(m));
    (names_rbac && filter_type_unknown).then_some(RBAC_FILTER_HINT)
}

/// `details`, with the [`hint`] for it appended when there is one.
pub(crate) fn with_hint(details: &str) -> String {
    match hint(details) {
        Some(h) => format!("{details} (hint: {h})"),
        None => details.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_js_without_the_rbac_filter_gets_the_fix() {
        // grpc-js 1.14's words for a server Listener whose required RBAC filter it did
        // not register.
        let grpc_js = "Listener message validation failed: [filter_chains[]: filters[0].typed_config: envoy.filters.http.rbac filter validation failed]";
        let h = hint(grpc_js).expect("a hint");
        assert!(h.contains("GRPC_XDS_EXPERIMENTAL_RBAC=true"), "{h}");
        // Other words for the same cause.
        for text in [
            "http filter envoy.filters.http.rbac: Unknown filter type",
            "no filter registered for type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "envoy.filters.http.rbac: error:UNSUPPORTED FILTER TYPE",
        ] {
            assert_eq!(hint(text), Some(RBAC_FILTER_HINT), "{text}");
        }
    }

    #[test]
    fn other_rejections_get_no_hint() {
        for text in [
            // RBAC understood but the policy refused: the object's fault, not the client's.
            "envoy.filters.http.rbac: [field:rules.policies error:CEL condition not supported]",
            // The RBAC filter known, a field of its config not: no hint.
            "envoy.filters.http.rbac: unknown field in policy",
            "ENVOY.FILTERS.HTTP.RBAC unsupported",
            "envoy.filters.http.rbac: principal kind unsupported; filter validation failed",
            // An unknown filter that is not RBAC.
            "error:unsupported filter type envoy.filters.http.fault_x",
            "route.weighted_clusters error:no valid clusters specified",
            "",
        ] {
            assert_eq!(hint(text), None, "{text}");
        }
        assert_eq!(with_hint("cannot bind"), "cannot bind");
        assert!(
            with_hint("envoy.filters.http.rbac filter validation failed").ends_with("until then)")
        );
    }
}
