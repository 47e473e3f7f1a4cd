//! Every Prometheus metric of the control plane, registered in one place, and their text
//! exposition, and the per-stream timer behind `rudder_initial_sync_seconds`. The admin
//! endpoint that serves it is [`crate::admin`].

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use ca::SpiffeId;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label: the xDS type (`CDS`, `EDS`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// The type.
    pub r#type: String,
}

/// Label: why a TLS handshake failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `expired`, `unknown_issuer`, `timeout`, ...
    pub reason: String,
}

/// Label: which limit refused something.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// `connections`, `streams_per_connection`, `message_size`, `message_timeout`,
    /// `subscribed_names`, `subscribed_bytes`, `name_size`, `identity_memory`,
    /// `memory_budget`.
    pub limit: String,
}

/// Labels: which HTTP shell refused a request, and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShellLabel {
    /// `injector`, `certificate_endpoint` or `agent_status`.
    pub shell: String,
    /// `body_timeout`, `queue_full`, `queue_timeout`, `idle_connection`, ...
    pub reason: String,
}

/// Label: a kind the control plane watches.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `TrafficSplit`, `HTTPRoute`, ...
    pub kind: String,
}

/// Labels: proxy kind and stream type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabel {
    /// `envoy` or `grpc`.
    pub kind: String,
    /// `sotw` or `delta`.
    pub stream: String,
}

/// The control plane's metrics.
pub struct Metrics {
    registry: Registry,
    /// Connected proxies by kind and stream type.
    pub connected: Family<ProxyLabel, Gauge>,
    /// Responses pushed, by type.
    pub pushes: Family<TypeLabel, Counter>,
    /// Resources carried by pushes, by type.
    pub resources_sent: Family<TypeLabel, Counter>,
    /// NACKs received, by type.
    pub nacks: Family<TypeLabel, Counter>,
    /// Seconds from a source change to a proxy having ACKed everything it was sent.
    pub convergence: Histogram,
    /// Seconds from a stream's first response to its proxy first having answered
    /// everything it was sent, listeners included (one sample per stream).
    pub initial_sync: Histogram,
    /// Seconds to translate and encode one build.
    pub translation: Histogram,
    /// Shared resources in the last build.
    pub snapshot_resources: Gauge,
    /// Certificate identities whose proxies' rejections leave objects out for them.
    pub contained_identities: Gauge,
    /// Objects left out for the proxies of one identity, summed over identities and views.
    pub contained_objects: Gauge,
    /// Workload certificates issued.
    pub certs_issued: Gauge,
    /// TLS handshakes on the xDS port that failed, by reason.
    pub handshake_failures: Family<ReasonLabel, Counter>,
    /// Connections, streams and requests refused by a limit, by limit.
    pub refusals: Family<LimitLabel, Counter>,
    /// Seconds until the earliest workload certificate expires.
    pub cert_expiry: Gauge,
    /// Requests to the certificate endpoint, by result (`issued`, or why refused).
    pub cert_requests: Family<ReasonLabel, Counter>,
    /// Requests and connections the unauthenticated HTTP shells refused or closed.
    pub shell_refusals: Family<ShellLabel, Counter>,
    /// Bytes charged to peers' identities on the xDS port (connections, streams, request
    /// buffers, subscribed names).
    pub xds_memory_charged: Gauge,
    /// `--xds-memory-budget`.
    pub xds_memory_budget: Gauge,
    /// First syncs running with a turn now ([`crate::xds::first_sync`]).
    pub first_syncs_running: Gauge,
    /// First syncs waiting for a turn now.
    pub first_syncs_waiting: Gauge,
    /// 1 while a watched kind is not served by the API server (its CRD missing, or
    /// without the version Rudder reads), by kind.
    pub kube_kind_unavailable: Family<KindLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rudder");
        let m = Metrics {
            connected: Family::default(),
            pushes: Family::default(),
            resources_sent: Family::default(),
            nacks: Family::default(),
            convergence: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            initial_sync: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            translation: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            snapshot_resources: Gauge::default(),
            contained_identities: Gauge::default(),
            contained_objects: Gauge::default(),
            certs_issued: Gauge::default(),
            cert_expiry: Gauge::default(),
            handshake_failures: Family::default(),
            refusals: Family::default(),
            cert_requests: Family::default(),
            shell_refusals: Family::default(),
            xds_memory_charged: Gauge::default(),
            xds_memory_budget: Gauge::default(),
            first_syncs_running: Gauge::default(),
            first_syncs_waiting: Gauge::default(),
            kube_kind_unavailable: Family::default(),
            registry: Registry::default(),
        };
        m.register_xds(&mut registry);
        m.register_builds(&mut registry);
        m.register_ports(&mut registry);
        Metrics { registry, ..m }
    }

    /// The families of what proxies were sent and did with it.
    fn register_xds(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "connected_proxies",
            "Connected proxies by kind and stream type",
            m.connected.clone(),
        );
        registry.register(
            "xds_pushes",
            "xDS responses pushed, by type",
            m.pushes.clone(),
        );
        registry.register(
            "xds_resources_sent",
            "Resources carried by xDS responses, by type",
            m.resources_sent.clone(),
        );
        registry.register(
            "xds_nacks",
            "Responses rejected by proxies, by type",
            m.nacks.clone(),
        );
        registry.register(
            "convergence_seconds",
            "From a source change seen to a proxy having ACKed everything",
            m.convergence.clone(),
        );
        registry.register(
            "initial_sync_seconds",
            "From a stream's first response to its proxy first having answered everything it was sent, listeners included",
            m.initial_sync.clone(),
        );
    }

    /// The families of builds, what the views hold and the certificates issued.
    fn register_builds(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "translation_seconds",
            "Translation and encoding time of one build",
            m.translation.clone(),
        );
        registry.register(
            "kube_kind_unavailable",
            "1 while a watched kind is not served by the API server (CRD missing, or without the version Rudder reads); its objects are ignored until it is",
            m.kube_kind_unavailable.clone(),
        );
        registry.register(
            "snapshot_resources",
            "Resources the views hold (clusters, endpoints, routes), summed over views",
            m.snapshot_resources.clone(),
        );
        registry.register(
            "containment_identities",
            "Certificate identities whose proxies' rejections leave policy objects out for them",
            m.contained_identities.clone(),
        );
        registry.register(
            "containment_objects",
            "Policy objects left out for the proxies of one identity (they rejected config made from them), summed over identities and views",
            m.contained_objects.clone(),
        );
        registry.register(
            "certificates_issued",
            "Identities holding an unexpired certificate the certificate endpoint signed",
            m.certs_issued.clone(),
        );
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until the earliest certificate the certificate endpoint signed expires",
            m.cert_expiry.clone(),
        );
    }

    /// The families of what the ports refused and what peers make the xDS port hold.
    fn register_ports(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "xds_handshake_failures",
            "TLS handshakes on the xDS port that failed (expired, unknown issuer, timeout, ...)",
            m.handshake_failures.clone(),
        );
        registry.register(
            "xds_refusals",
            "Connections, streams and requests refused by a limit",
            m.refusals.clone(),
        );
        registry.register(
            "certificate_requests",
            "Requests to the certificate endpoint, by result (issued, or why refused)",
            m.cert_requests.clone(),
        );
        registry.register(
            "http_shell_refusals",
            "Requests and connections the injector, certificate endpoint and agent status port refused or closed, by shell and reason",
            m.shell_refusals.clone(),
        );
        registry.register(
            "xds_memory_charged_bytes",
            "Bytes peers' identities are charged on the xDS port: connections, streams, request buffers and subscribed names",
            m.xds_memory_charged.clone(),
        );
        registry.register(
            "xds_memory_budget_bytes",
            "What the xDS port may charge in all (--xds-memory-budget)",
            m.xds_memory_budget.clone(),
        );
        registry.register(
            "xds_first_syncs_running",
            "First syncs running with a turn now (--max-first-syncs)",
            m.first_syncs_running.clone(),
        );
        registry.register(
            "xds_first_syncs_waiting",
            "First syncs waiting for a turn now (a reconnect storm queues here)",
            m.first_syncs_waiting.clone(),
        );
    }

    /// Counts a request to the certificate endpoint.
    pub fn cert_request(&self, result: &str) {
        self.cert_requests
            .get_or_create(&ReasonLabel {
                reason: result.to_string(),
            })
            .inc();
    }

    /// Counts a request or connection an HTTP shell refused or closed.
    pub(crate) fn shell_refused(&self, shell: &str, reason: &str) {
        self.shell_refusals
            .get_or_create(&ShellLabel {
                shell: shell.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a failed TLS handshake.
    pub(crate) fn handshake_failed(&self, reason: &str) {
        self.handshake_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a refusal by `limit`.
    pub fn refused(&self, limit: &str) {
        self.refusals
            .get_or_create(&LimitLabel {
                limit: limit.to_string(),
            })
            .inc();
    }

    /// The text exposition, after refreshing the gauges that are read on demand.
    /// `connected` counts proxies by kind and stream; `cert_expiries` are the issued
    /// certificates that are still valid.
    pub fn encode(
        &self,
        connected: &BTreeMap<(&'static str, &'static str), i64>,
        cert_expiries: Option<&[(SpiffeId, SystemTime)]>,
    ) -> String {
        self.connected.clear();
        for (&(kind, stream), &n) in connected {
            self.connected
                .get_or_create(&ProxyLabel {
                    kind: kind.into(),
                    stream: stream.into(),
                })
                .set(n);
        }
        if let Some(expiries) = cert_expiries {
            self.certs_issued
                .set(i64::try_from(expiries.len()).unwrap_or(i64::MAX));
            let now = SystemTime::now();
            let soonest = expiries
                .iter()
                .map(|(_, t)| t.duration_since(now).map(|d| d.as_secs()).unwrap_or(0))
                .min()
                .unwrap_or(0);
            self.cert_expiry
                .set(i64::try_from(soonest).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// A stream's initial sync: from its first response to the first time its proxy has
/// answered everything it was sent with listeners among it (Envoy asks for listeners only
/// once its clusters are warm, so a quiet moment before that is not the end).
#[derive(Debug, Default)]
pub(crate) struct InitialSync {
    first_sent: Option<Instant>,
    done: bool,
}

impl InitialSync {
    /// A response was sent.
    pub(crate) fn sent(&mut self) {
        self.first_sent.get_or_insert_with(Instant::now);
    }

    /// The proxy answered everything in flight; `listeners`: some were sent.
    pub(crate) fn answered(&mut self, listeners: bool, metrics: &Metrics) {
        if self.done || !listeners {
            return;
        }
        if let Some(first) = self.first_sent {
            self.done = true;
            metrics.initial_sync.observe(first.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed() {
        let m = Metrics::new();
        // Labelled families appear once they have a sample (connected proxies are
        // covered end to end).
        let cds = TypeLabel {
            r#type: "CDS".into(),
        };
        m.pushes.get_or_create(&cds).inc();
        m.resources_sent.get_or_create(&cds).inc();
        m.nacks.get_or_create(&cds).inc();
        let text = m.encode(&BTreeMap::new(), None);
        for family in [
            "rudder_xds_pushes_total",
            "rudder_xds_resources_sent_total",
            "rudder_xds_nacks_total",
            "rudder_convergence_seconds",
            "rudder_initial_sync_seconds",
            "rudder_translation_seconds",
            "rudder_snapshot_resources",
            "rudder_containment_identities",
            "rudder_containment_objects",
            "rudder_certificates_issued",
            "rudder_certificate_expiry_seconds",
            "rudder_xds_memory_charged_bytes",
            "rudder_xds_memory_budget_bytes",
            "rudder_xds_first_syncs_running",
            "rudder_xds_first_syncs_waiting",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
    }

    fn samples(m: &Metrics) -> Option<String> {
        m.encode(&BTreeMap::new(), None)
            .lines()
            .find_map(|l| l.strip_prefix("rudder_initial_sync_seconds_count "))
            .map(str::to_string)
    }

    #[test]
    fn the_initial_sync_ends_once_listeners_are_answered_and_is_recorded_once() {
        let m = Metrics::new();
        let mut sync = InitialSync::default();
        // Nothing sent yet; then clusters answered, listeners not asked for yet (Envoy);
        // then listeners; then a later change (convergence, not the initial sync).
        for (sent, listeners, count) in [
            (false, true, "0"),
            (true, false, "0"),
            (true, true, "1"),
            (true, true, "1"),
        ] {
            if sent {
                sync.sent();
            }
            sync.answered(listeners, &m);
            assert_eq!(samples(&m).as_deref(), Some(count));
        }
    }
}
