//! Every CRD kind may be missing, or installed without the version Rudder reads: the real
//! watchers against the fake API server hiding one kind at a time. The control plane still
//! lists (so it binds and serves), says which kind it cannot watch in
//! `rudder_kube_kind_unavailable`, and picks the kind up once it is served, without a
//! restart.

mod kube_common;

use crds::kinds::{KindInfo, Provider};
use kube_common::*;
use translator::model::Kind;
use xds_server::xds::serve::XdsState;

/// One valid object of each CRD kind the control plane watches. A new kind without one
/// fails [`every_crd_kind_may_be_missing_and_is_picked_up_once_served`].
fn sample(info: &KindInfo) -> Option<Value> {
    let meta = json!({"name": "sample", "namespace": "default"});
    let api = info.api_version();
    let spec = match info.kind {
        "TrafficSplit" => json!({"service": "web", "backends": [{"service": "web", "weight": 1}]}),
        "HTTPRouteGroup" => json!({"matches": [{"name": "all", "pathRegex": "/.*"}]}),
        "RetryPolicy" => {
            json!({"targetRef": {"kind": "Service", "name": "web"}, "retryOn": ["5xx"], "numRetries": 2})
        }
        "TrafficTarget" => json!({
            "destination": {"kind": "ServiceAccount", "name": "web"},
            "rules": [{"kind": "HTTPRouteGroup", "name": "all"}],
            "sources": [{"kind": "ServiceAccount", "name": "client"}]}),
        "TCPRoute" => json!({"matches": {"ports": [5432]}}),
        "HTTPRoute" | "GRPCRoute" => json!({
            "parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
        _ => return None,
    };
    Some(json!({"apiVersion": api, "kind": info.kind, "metadata": meta, "spec": spec}))
}

/// The watched kinds that come from a CRD.
fn crd_kinds() -> Vec<Kind> {
    Kind::ALL
        .into_iter()
        .filter(|k| k.info().watched && k.info().provider != Provider::BuiltIn)
        .collect()
}

/// A store fed by the real watchers of `fake`, once every watcher has listed.
async fn listed(
    fake: &FakeKube,
) -> anyhow::Result<(Arc<Store>, xds_server::k8s::watch::SyncState)> {
    let cache = Store::new(StoreConfig::default(), Default::default(), None);
    let sync = listed_into(fake, cache.clone()).await?;
    Ok((cache, sync))
}

/// The watchers of `fake` feeding `cache`, once every one has listed.
async fn listed_into(
    fake: &FakeKube,
    cache: Arc<Store>,
) -> anyhow::Result<xds_server::k8s::watch::SyncState> {
    let sync = xds_server::k8s::start::start_kubernetes(
        fake.client(),
        cache.clone(),
        &KubeScope::default(),
        lease("replica-a"),
    );
    tokio::time::timeout(WAIT, sync.wait()).await?;
    Ok(sync)
}

/// The metric's line for `kind`, if any.
fn unavailable_metric(state: &XdsState, kind: Kind) -> Option<String> {
    let text = state.metrics.encode(&BTreeMap::new(), None);
    let prefix = format!("rudder_kube_kind_unavailable{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// Hides `kind` (at `version`, or entirely), lists, and checks that everything else is
/// served and the kind is reported; then serves it and checks its object arrives.
async fn hide_then_serve(kind: Kind, version: Option<&str>) -> anyhow::Result<()> {
    let info = kind.info();
    let fake = FakeKube::new();
    fake.set_served(info.plural, version, false);
    fake.apply(service("web", &[80]));
    let Some(object) = sample(info) else {
        anyhow::bail!("no sample object for {kind}: add one to sample()");
    };
    fake.apply(object);
    let cache = Store::new(StoreConfig::default(), Default::default(), None);
    let state = XdsState::new(cache.clone());
    let sync = listed_into(&fake, cache.clone()).await.map_err(|e| {
        anyhow::anyhow!("{kind} hidden ({version:?}): the watchers never listed: {e}")
    })?;
    let held = |c: &Store| c.read(|m| m.keys(kind).len());
    anyhow::ensure!(held(&cache) == 0, "{kind}: nothing listed, nothing held");
    anyhow::ensure!(
        cache.read(|m| m.keys(Kind::Service).len()) == 1,
        "{kind} hidden: the other kinds are still watched"
    );
    anyhow::ensure!(
        sync.unavailable() == [kind.to_string()].into(),
        "{kind}: unavailable says {:?}",
        sync.unavailable()
    );
    anyhow::ensure!(
        unavailable_metric(&state, kind).as_deref() == Some("1"),
        "{kind}: the metric says {:?}",
        unavailable_metric(&state, kind)
    );
    // Served later: picked up by the watcher's retry (backoff up to about 30 s).
    fake.set_served(info.plural, version, true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while held(&cache) == 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{kind}: not picked up once served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(sync.unavailable().is_empty(), "{kind}: still unavailable");
    anyhow::ensure!(
        unavailable_metric(&state, kind).as_deref() == Some("0"),
        "{kind}: the metric says {:?} once served",
        unavailable_metric(&state, kind)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crd_kind_may_be_missing_and_is_picked_up_once_served() -> anyhow::Result<()> {
    let kinds = crd_kinds();
    assert!(
        kinds.contains(&Kind::TrafficSplit) && kinds.contains(&Kind::RetryPolicy),
        "{kinds:?}"
    );
    let runs = kinds.iter().map(|k| hide_then_serve(*k, None));
    for r in futures::future::join_all(runs).await {
        r?;
    }
    Ok(())
}

/// A CRD that serves only older versions (the SMI CRDs other meshes install): the kind is
/// read at the newest of them, and is unavailable only when none is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_without_the_stored_version_is_read_at_an_older_served_one() -> anyhow::Result<()> {
    for kind in crd_kinds() {
        let info = kind.info();
        if info.versions.len() < 2 {
            continue;
        }
        let fake = FakeKube::new();
        fake.set_served(info.plural, Some(info.storage_version), false);
        fake.apply(service("web", &[80]));
        let Some(object) = sample(info) else {
            anyhow::bail!("no sample object for {kind}");
        };
        fake.apply(object);
        let (cache, sync) = listed(&fake).await?;
        anyhow::ensure!(
            cache.read(|m| m.keys(kind).len()) == 1,
            "{kind}: read at an older version"
        );
        anyhow::ensure!(
            sync.unavailable().is_empty(),
            "{kind}: {:?}",
            sync.unavailable()
        );
        let older = fake
            .requests()
            .into_iter()
            .filter(|r| r.contains(&format!("/{}?", info.plural)))
            .filter(|r| !r.contains(&format!("/{}/", info.storage_version)))
            .count();
        anyhow::ensure!(older > 0, "{kind}: no request at an older version");
    }
    // No version served at all: unavailable, and picked up once one is.
    let info = Kind::TrafficSplit.info();
    let fake = FakeKube::new();
    for v in info.versions {
        fake.set_served(info.plural, Some(v), false);
    }
    let (_cache, sync) = listed(&fake).await?;
    anyhow::ensure!(sync.unavailable() == ["TrafficSplit".to_string()].into());
    fake.set_served(info.plural, Some(info.versions[0]), true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !sync.unavailable().is_empty() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Read at an older version while the stored one is not served, then the CRD is upgraded:
/// the watcher goes back to the stored version (checked every 30 s), and nothing it held
/// is dropped on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_crd_is_read_at_the_stored_version_again() -> anyhow::Result<()> {
    let info = Kind::TrafficSplit.info();
    let fake = FakeKube::new();
    fake.set_served(info.plural, Some(info.storage_version), false);
    fake.apply(service("web", &[80]));
    let Some(object) = sample(info) else {
        anyhow::bail!("no sample");
    };
    fake.apply(object);
    let (cache, _sync) = listed(&fake).await?;
    let held = || cache.read(|m| m.keys(Kind::TrafficSplit).len());
    anyhow::ensure!(held() == 1);
    fake.set_served(info.plural, Some(info.storage_version), true);
    let stored_watch = format!("/{}/{}?", info.storage_version, info.plural);
    let before = fake.requests().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let watched = fake.requests()[before..]
            .iter()
            .any(|r| r.contains(&stored_watch) && r.contains("watch=true"));
        if watched {
            break;
        }
        anyhow::ensure!(held() == 1, "the object was dropped while switching");
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never went back to the stored version"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(held() == 1);
    Ok(())
}
