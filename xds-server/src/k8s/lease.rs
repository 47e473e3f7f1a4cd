//! Leader election over a `coordination.k8s.io/v1` Lease. Every replica serves xDS; only
//! the holder of the Lease writes CRD status, so replicas never fight over it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

/// How long a holder's claim lasts without renewal.
pub(crate) const LEASE_SECONDS: i32 = 15;
/// How often the holder renews (and others check).
pub(crate) const RENEW: Duration = Duration::from_secs(2);

/// Where the Lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One election round: returns whether we hold the Lease now.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    let expired = spec
        .renew_time
        .as_ref()
        .is_none_or(|t| t.0.as_second() + duration < Timestamp::now().as_second());
    if !mine && !expired {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(LEASE_SECONDS);
    // The resourceVersion in metadata makes this a compare-and-swap.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the election forever, publishing whether we lead.
pub async fn run(client: Client, cfg: LeaseConfig, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        let lead = match try_acquire(&api, &cfg).await {
            Ok(lead) => {
                last_ok = tokio::time::Instant::now();
                lead
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease election failed");
                // Without the API server we cannot prove we still hold it: step down
                // once a full lease has passed.
                *leader.borrow() && last_ok.elapsed() < Duration::from_secs(LEASE_SECONDS as u64)
            }
        };
        if *leader.borrow() != lead {
            tracing::info!(identity = %cfg.identity, leader = lead, "status-writer leadership changed");
        }
        leader.send_if_modified(|l| std::mem::replace(l, lead) != lead);
        tokio::time::sleep(RENEW).await;
    }
}
