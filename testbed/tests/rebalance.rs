//! Two control-plane replicas in manifest mode behind a per-connection balancer (what a
//! Kubernetes Service does): after one restarts, every proxy is on the other; the
//! maximum connection age (`--max-connection-age`) spreads them over both again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use testbed::procs::{ControlPlane, wait_until};
use testbed::xds_client::{RawAds, node};
use tokio::net::{TcpListener, TcpStream};

const PROXIES: usize = 20;

/// A TCP balancer: each connection goes to the next backend in turn, or to the other
/// one when that refuses (a replica that is down).
async fn balancer(backends: [SocketAddr; 2]) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let turn = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let first = turn.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                for i in 0..backends.len() {
                    let to = backends[(first + i) % backends.len()];
                    if let Ok(mut server) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A proxy that reconnects (on a new connection) whenever its stream ends.
async fn proxy(via: SocketAddr, n: usize) {
    loop {
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{via}")) {
            Ok(e) => e,
            Err(_) => return,
        };
        if let Ok(channel) = endpoint.connect().await {
            let ads = RawAds::delta(
                channel,
                node(
                    &format!("app-{n}.default"),
                    "default",
                    &format!("app-{n}"),
                    "app",
                ),
            );
            while ads.received().ended.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Proxies connected to `cp`, from its own metrics.
async fn connected(cp: &ControlPlane) -> usize {
    let Ok(text) = testbed::http::get_ok(cp.admin, "/metrics").await else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("rudder_connected_proxies{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

#[tokio::test]
async fn after_a_replica_restarts_proxies_spread_again_within_the_connection_age()
-> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let args = ["--insecure-xds", "--max-connection-age", "2s"];
    let mut replicas = Vec::new();
    for r in ["a", "b"] {
        let dir = work.path().join(r);
        std::fs::create_dir(&dir)?;
        replicas.push(ControlPlane::start_with(&manifests, &dir, &args).await?);
    }
    let (mut b, a) = (replicas.pop().context("b")?, replicas.pop().context("a")?);
    let via = balancer([a.xds, b.xds]).await?;
    let proxies: Vec<_> = (0..PROXIES).map(|n| tokio::spawn(proxy(via, n))).collect();
    let both = |a: usize, b: usize| a + b == PROXIES;
    wait_until(Duration::from_secs(20), "every proxy connected", || async {
        Ok(both(connected(&a).await, connected(&b).await))
    })
    .await?;

    // Replica b goes away: its proxies reconnect to a.
    b.kill();
    wait_until(
        Duration::from_secs(20),
        "every proxy on replica a",
        || async { Ok(connected(&a).await == PROXIES) },
    )
    .await?;
    b.restart_same_addresses().await?;
    let piled = (connected(&a).await, connected(&b).await);

    // Within a few connection ages, both replicas hold at least 40% each.
    let least = PROXIES * 4 / 10;
    let spread = wait_until(
        Duration::from_secs(10),
        "proxies spread 60/40 or better",
        || async {
            let (na, nb) = (connected(&a).await, connected(&b).await);
            Ok(both(na, nb) && na >= least && nb >= least)
        },
    )
    .await;
    let now = (connected(&a).await, connected(&b).await);
    for p in proxies {
        p.abort();
    }
    spread.with_context(|| {
        format!("right after the restart (a, b) = {piled:?}; 10 s later {now:?}")
    })?;
    anyhow::ensure!(
        piled.1 <= 2,
        "the restarted replica starts (nearly) empty: {piled:?}"
    );
    Ok(())
}
