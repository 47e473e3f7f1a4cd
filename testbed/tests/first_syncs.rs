//! First syncs take turns (`--max-first-syncs`, half of them at most per identity): a
//! proxy that never answers holds its turn only for `--first-sync-hold`, another
//! identity goes ahead of an identity at its share, and a proxy that answered all it
//! asked for gives its turn back at once; one that leaves while it waits gives up its
//! place. Seen through the control plane's own gauges.

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use testbed::procs::{ControlPlane, wait_until};
use testbed::xds_client::{CLUSTER, RawAds, node};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

const WAIT: Duration = Duration::from_secs(15);

/// `rudder_xds_first_syncs_{running,waiting}` now.
async fn gauges(cp: &ControlPlane) -> anyhow::Result<(u64, u64)> {
    let text = testbed::http::get_ok(cp.admin, "/metrics").await?;
    let read = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((
        read("rudder_xds_first_syncs_running"),
        read("rudder_xds_first_syncs_waiting"),
    ))
}

async fn channel(cp: &ControlPlane) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{}", cp.xds))?
        .connect()
        .await?)
}

/// A delta stream of `sa` that asks for clusters and never answers what it is sent.
async fn silent(
    cp: &ControlPlane,
    sa: &str,
    n: usize,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(node(
            &format!("{sa}-{n}.default"),
            "default",
            &format!("{sa}-{n}"),
            sa,
        )),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel(cp).await?);
    Ok(tokio::spawn(async move {
        let _keep = tx;
        if let Ok(resp) = client
            .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            let mut inbound = resp.into_inner();
            while inbound.next().await.is_some() {}
        }
    }))
}

#[tokio::test]
async fn first_syncs_take_turns_and_give_them_back_once_answered() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    // One Service, so that every first sync has a cluster to send.
    std::fs::write(
        manifests.join("web.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  ports: [{name: http, port: 80}]\n",
    )?;
    let cp = ControlPlane::start_with(
        &manifests,
        work.path(),
        &[
            "--insecure-xds",
            "--max-first-syncs",
            "4",
            "--first-sync-hold",
            "60s",
        ],
    )
    .await?;
    // Three proxies of one identity that never answer, one after another: two run (half
    // of 4), the third waits.
    let mut held = Vec::new();
    for (n, now) in [(1, 0), (2, 0), (2, 1)].into_iter().enumerate() {
        held.push(silent(&cp, "quiet", n).await?);
        wait_until(WAIT, &format!("{now:?} running and waiting"), || async {
            Ok(gauges(&cp).await? == now)
        })
        .await?;
    }

    // Another identity goes ahead of the one at its share, and gives its turn back once
    // it answered all it asked for (long before the 60 s hold).
    let other = RawAds::delta(
        channel(&cp).await?,
        node("busy-0.default", "default", "busy-0", "busy"),
    );
    other
        .wait_for(WAIT, "the other identity's clusters", |r| r.responses > 0)
        .await?;
    wait_until(WAIT, "its turn given back", || async {
        Ok(gauges(&cp).await? == (2, 1))
    })
    .await?;
    assert!(
        other.received().ended.is_none(),
        "{:?}",
        other.received().ended
    );

    // A proxy that leaves while it waits gives up its place: it is neither counted nor
    // handed a turn.
    if let Some(h) = held.pop() {
        h.abort();
    }
    wait_until(WAIT, "the one that left no longer waiting", || async {
        Ok(gauges(&cp).await? == (2, 0))
    })
    .await?;

    // A silent proxy that goes away gives its turn to the one waiting.
    held.push(silent(&cp, "quiet", 3).await?);
    wait_until(WAIT, "a new one waiting", || async {
        Ok(gauges(&cp).await? == (2, 1))
    })
    .await?;
    held.remove(0).abort();
    wait_until(WAIT, "the waiting one running", || async {
        Ok(gauges(&cp).await? == (2, 0))
    })
    .await?;
    for h in held {
        h.abort();
    }
    Ok(())
}
