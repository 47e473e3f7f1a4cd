//! Two control-plane replicas in manifest mode behind a per-connection balancer (what a
//! Kubernetes Service does): after one restarts, every proxy is on the other; the
//! maximum connection age (`--max-connection-age`) spreads them over both again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use testbed::procs::{ControlPlane, wait_until};
use testbed::xds_client::{RawAds, node};
use tokio::net::{TcpListener, TcpStream};

const PROXIES: usize = 20;

/// A TCP balancer: each connection goes to the next ready backend in turn, or to the
/// other one when that refuses. `ready[i]` says whether backend `i` is an endpoint of the
/// Service (a restarted replica is added once it is ready, as Kubernetes does).
async fn balancer(
    backends: [SocketAddr; 2],
    ready: Arc<[AtomicBool; 2]>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let turn = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let first = turn.fetch_add(1, Ordering::Relaxed);
            let ready = ready.clone();
            tokio::spawn(async move {
                for i in 0..backends.len() {
                    let k = (first + i) % backends.len();
                    if !ready[k].load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Ok(mut server) = TcpStream::connect(backends[k]).await {
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
    let ready = Arc::new([AtomicBool::new(true), AtomicBool::new(true)]);
    let via = balancer([a.xds, b.xds], ready.clone()).await?;
    let proxies: Vec<_> = (0..PROXIES).map(|n| tokio::spawn(proxy(via, n))).collect();
    wait_until(Duration::from_secs(20), "every proxy connected", || async {
        Ok(connected(&a).await + connected(&b).await == PROXIES)
    })
    .await?;

    // Replica b goes away (and out of the Service): its proxies reconnect to a.
    ready[1].store(false, Ordering::Relaxed);
    b.kill();
    wait_until(
        Duration::from_secs(20),
        "every proxy on replica a",
        || async { Ok(connected(&a).await == PROXIES) },
    )
    .await?;
    b.restart_same_addresses().await?;
    let piled = (connected(&a).await, connected(&b).await);
    ready[1].store(true, Ordering::Relaxed);

    // Within a few connection ages, both replicas hold at least 40% each (every proxy
    // is briefly away while it reconnects, each 2 s: nearly all are counted).
    let spread = wait_until(
        Duration::from_secs(10),
        "proxies spread 60/40 or better",
        || async {
            let (na, nb) = (connected(&a).await, connected(&b).await);
            Ok(na + nb >= PROXIES - 2 && na.min(nb) * 10 >= (na + nb) * 4)
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
        piled.1 == 0 && piled.0 >= PROXIES - 2,
        "every proxy was on replica a when b came back: {piled:?}"
    );
    Ok(())
}
