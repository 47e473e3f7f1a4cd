//! Start-up of the xDS port: ADS and CSDS on one listener behind the front door, with
//! what peers make it hold charged to their identities ([`serve_ads`]), and the state the
//! two services share ([`XdsState`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer;

use crate::config::Limits;
use crate::net::front_door::{self, ServingTls};
use crate::observability::authz_check::AuthzCheck;
use crate::observability::csds::CsdsService;
use crate::observability::metrics::Metrics;
use crate::observability::nack::NackLog;
use crate::observability::registry::ProxyRegistry;
use crate::runtime::{CONTROL_PLANE_NS, Stop};
use crate::xds::ads::AdsService;
use crate::xds::store::Store;
use crate::xds::wire::ads_server::AdsServer;
use crate::xds::wire::budget::{Budget, PodCounts};
use crate::xds::wire::http2;

/// Largest CSDS request decoded (a few node matchers), in bytes.
const CSDS_MESSAGE_BYTES: usize = 64 * 1024;

/// What the ADS and CSDS services share: the store they serve, the record of what
/// proxies were sent and rejected, the metrics, and the stop signal.
#[derive(Clone)]
pub struct XdsState {
    /// Snapshots.
    pub cache: Arc<Store>,
    /// Rejections.
    pub nacks: Arc<NackLog>,
    /// Connected proxies and what they were sent.
    pub proxies: Arc<ProxyRegistry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The shutdown signal: streams end when it fires.
    pub stop: Stop,
}

impl XdsState {
    /// Fresh registries around `cache`.
    pub fn new(cache: Arc<Store>) -> Self {
        let metrics = Arc::new(Metrics::new());
        cache.set_metrics(metrics.clone());
        let proxies: Arc<ProxyRegistry> = Arc::default();
        XdsState {
            cache,
            nacks: Arc::default(),
            proxies,
            metrics,
            stop: Stop::default(),
        }
    }
}

/// Running pods per `namespace/serviceaccount`: what raises an identity's memory
/// allowance (a finished pod runs nothing, as for certificates and streams).
fn pods_per_account(model: &translator::model::Model) -> PodCounts {
    let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
    for p in model.pods().filter(|p| !p.finished) {
        *counts
            .entry((p.namespace.as_str(), p.service_account.as_str()))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((ns, sa), n)| (format!("{ns}/{sa}"), n))
        .collect()
}

/// Keeps `budget`'s pod counts up to date: counted again after a build in which a Pod
/// changed, not after every build.
async fn feed_pod_counts(store: Arc<Store>, budget: Arc<Budget>) {
    let mut pod_builds = store.pod_builds();
    loop {
        budget.set_pods(store.read(pods_per_account));
        if pod_builds.changed().await.is_err() {
            return;
        }
    }
}

/// Serves ADS and CSDS on `listener` until `state.stop` fires; with `tls`, every peer
/// must present a client certificate our CA issued: a proxy's stream acts as that
/// certificate's identity, and CSDS readers must be in the control plane's namespace and
/// trust domain (checked before a request is read). What peers make the server hold is
/// charged to their identities within `limits.budget`.
pub async fn serve_ads(
    listener: tokio::net::TcpListener,
    state: XdsState,
    tls: Option<ServingTls>,
    limits: Limits,
) -> anyhow::Result<()> {
    let verify = tls.as_ref().map(|t| t.trust_domain.clone());
    let setup = tls
        .map(|t| t.setup())
        .transpose()
        .context("configuring TLS for xDS")?
        .map(Arc::new);
    let budget = Budget::new(limits.budget, state.metrics.xds_memory_charged.clone());
    state
        .metrics
        .xds_memory_budget
        .set(i64::try_from(limits.budget.total).unwrap_or(i64::MAX));
    tokio::spawn(feed_pod_counts(state.cache.clone(), budget.clone()));
    let authz = AuthzCheck::new(
        state.cache.clone(),
        CsdsService::new(
            state.proxies.clone(),
            verify.clone().map(|td| (td, CONTROL_PLANE_NS.to_string())),
            state.stop.clone(),
        ),
    );
    let ads = AdsServer::new(
        AdsService::new(
            state.cache,
            state.nacks,
            state.proxies.clone(),
            state.metrics.clone(),
            verify.clone(),
            state.stop.clone(),
            limits.stream,
        ),
        limits.message_bytes,
    );
    let csds = CsdsService::new(
        state.proxies,
        verify.map(|td| (td, CONTROL_PLANE_NS.to_string())),
        state.stop.clone(),
    );
    // Callers are checked before their request is read (tonic reads a unary request
    // whole, reserving its declared length, before the handler runs).
    let guard = csds.clone();
    let csds = tonic::service::interceptor::InterceptedService::new(
        ClientStatusDiscoveryServiceServer::new(csds)
            .max_decoding_message_size(CSDS_MESSAGE_BYTES.min(limits.message_bytes))
            .max_encoding_message_size(usize::MAX),
        move |req: tonic::Request<()>| guard.authorize(&req).map(|()| req),
    );
    // HTTP/2 backstop; the ADS service refuses streams over the limit with a status. Each
    // slot may hold a finished stream's unread responses (charged to the connection), so
    // there are only a few more than ADS may use: CSDS and a refusal.
    let h2_streams =
        u32::try_from(limits.stream.streams_per_connection.saturating_add(2)).unwrap_or(u32::MAX);
    let charging = http2::Charging {
        budget,
        metrics: state.metrics.clone(),
    };
    let incoming = front_door::incoming(
        listener,
        setup,
        limits.conn,
        state.metrics,
        state.stop.clone(),
    );
    let routes = tonic::service::Routes::new(ads)
        .add_service(csds)
        .add_service(authz)
        .prepare();
    http2::serve(
        incoming,
        routes,
        http2::Settings {
            max_streams: h2_streams,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        },
        charging,
        state.stop.clone(),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_allowances_count_running_pods_per_service_account() {
        let pod = |name: &str, sa: &str, phase: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{serviceAccountName: {sa}, containers: [{{name: app}}]}}\nstatus: {{podIP: 10.0.0.1, phase: {phase}}}\n"
            )
        };
        let yaml = [
            pod("a-1", "a", "Running"),
            pod("a-2", "a", "Running"),
            pod("a-3", "a", "Succeeded"),
            pod("b-1", "b", "Failed"),
        ]
        .join("---\n");
        let mut model = translator::model::Model::new();
        for o in &translator::model::parse_manifest(&yaml)
            .expect("yaml")
            .objects
        {
            model.apply(o).expect("valid");
        }
        let counts = super::pods_per_account(&model);
        assert_eq!(counts.get("shop/a"), Some(&2));
        assert_eq!(counts.get("shop/b"), None, "a finished pod runs nothing");
    }
}
