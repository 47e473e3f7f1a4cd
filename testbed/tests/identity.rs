//! A stream's identity is its verified certificate. A hostile workload that sends another
//! pod's node id, under its own certificate, never receives that pod's config, and the
//! pod never receives the intruder's, whichever connects first, on SotW and on delta
//! ADS. No stream is ever sent a certificate or a private key (workload keys are made in
//! the pod; ADS carries the trust bundle only), even one that asks for the workload
//! secret by name. Raw ADS clients play both sides, so every byte sent is seen.

use std::net::IpAddr;
use std::time::Duration;

use testbed::manifests::{pod, service, slice};
use testbed::procs::{ControlPlane, free_port};
use testbed::xds_client::{Creds, LISTENER, RawAds, node};

const WAIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sotw,
    Delta,
}

fn open(
    kind: Kind,
    channel: tonic::transport::Channel,
    n: envoy_types::pb::envoy::config::core::v3::Node,
) -> RawAds {
    match kind {
        Kind::Sotw => RawAds::sotw(channel, n),
        Kind::Delta => RawAds::delta(channel, n),
    }
}

async fn has_trust_bundle(c: &RawAds) -> anyhow::Result<()> {
    c.wait_for(WAIT, "the trust bundle", |r| r.has_trust_bundle())
        .await
}

async fn node_id_of_another_pod_gets_nothing_of_it(
    kind: Kind,
    attacker_first: bool,
) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let port = free_port()?;
    let ip: IpAddr = "127.0.0.31".parse()?;
    std::fs::write(
        manifests.join("mesh.yaml"),
        [
            service("ratings", "http", 80, port, None),
            pod("ratings-0", "ratings", ip, "ratings"),
            slice("ratings-a", "ratings", "http", port, &[ip]),
        ]
        .join("---\n"),
    )?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    let victim_creds = Creds::issue(&cp.ca_dir(), "default", "ratings", &work.path().join("v"))?;
    let attacker_creds = Creds::issue(&cp.ca_dir(), "evil", "attacker", &work.path().join("a"))?;
    // The same node id; each claims the namespace and account of its own certificate.
    let victim_node = node("ratings-0.default", "default", "ratings-0", "ratings");
    let attacker_node = node("ratings-0.default", "evil", "ratings-0", "attacker");

    let (victim, attacker) = if attacker_first {
        let a = open(kind, attacker_creds.channel(cp.xds).await?, attacker_node);
        has_trust_bundle(&a).await?;
        let v = open(kind, victim_creds.channel(cp.xds).await?, victim_node);
        has_trust_bundle(&v).await?;
        (v, a)
    } else {
        let v = open(kind, victim_creds.channel(cp.xds).await?, victim_node);
        has_trust_bundle(&v).await?;
        let a = open(kind, attacker_creds.channel(cp.xds).await?, attacker_node);
        has_trust_bundle(&a).await?;
        (v, a)
    };
    let inbound = format!("inbound|{port}");
    victim
        .wait_for(WAIT, "the victim's inbound listener", |r| {
            r.names(LISTENER).contains(&inbound)
        })
        .await?;
    // A change makes the control plane rebuild and push to everyone.
    std::fs::write(
        manifests.join("mesh.yaml"),
        [
            service("ratings", "http", 80, port, None),
            pod("ratings-0", "ratings", ip, "ratings"),
            slice(
                "ratings-a",
                "ratings",
                "http",
                port,
                &[ip, "127.0.0.32".parse()?],
            ),
        ]
        .join("---\n"),
    )?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (v, a) = (victim.received(), attacker.received());
    for r in [&v, &a] {
        assert!(r.certificate_identities().is_empty(), "{r:?}");
        assert_eq!(r.private_keys_seen(), 0, "no key on the wire: {r:?}");
    }
    assert!(
        !a.ever.keys().any(|(t, n)| t == LISTENER && *n == inbound),
        "the intruder never got the pod's inbound listener: {:?}",
        a.names(LISTENER)
    );
    assert!(v.ended.is_none() && a.ended.is_none(), "{v:?} {a:?}");
    Ok(())
}

#[tokio::test]
async fn sotw_intruder_first_gets_nothing_of_the_pod() -> anyhow::Result<()> {
    node_id_of_another_pod_gets_nothing_of_it(Kind::Sotw, true).await
}

#[tokio::test]
async fn sotw_pod_first_gets_nothing_of_the_intruder() -> anyhow::Result<()> {
    node_id_of_another_pod_gets_nothing_of_it(Kind::Sotw, false).await
}

#[tokio::test]
async fn delta_intruder_first_gets_nothing_of_the_pod() -> anyhow::Result<()> {
    node_id_of_another_pod_gets_nothing_of_it(Kind::Delta, true).await
}

#[tokio::test]
async fn delta_pod_first_gets_nothing_of_the_intruder() -> anyhow::Result<()> {
    node_id_of_another_pod_gets_nothing_of_it(Kind::Delta, false).await
}

#[tokio::test]
async fn claiming_another_identity_is_refused() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    let creds = Creds::issue(&cp.ca_dir(), "evil", "attacker", &work.path().join("a"))?;
    for (ns, sa) in [("default", "ratings"), ("rudder-system", "rudder")] {
        let c = RawAds::delta(
            creds.channel(cp.xds).await?,
            node("x.default", ns, "ratings-0", sa),
        );
        c.wait_for(WAIT, "the stream to be refused", |r| r.ended.is_some())
            .await?;
        let r = c.received();
        assert!(
            r.ended
                .as_deref()
                .is_some_and(|e| e.contains("does not have permission")),
            "{r:?}"
        );
        assert!(r.certificate_identities().is_empty());
    }
    // The control plane's own namespace is refused even with a matching certificate.
    let own = Creds::issue(
        &cp.ca_dir(),
        "rudder-system",
        "rudder",
        &work.path().join("o"),
    )?;
    let c = RawAds::sotw(
        own.channel(cp.xds).await?,
        node("cp.rudder-system", "rudder-system", "cp", "rudder"),
    );
    c.wait_for(WAIT, "the stream to be refused", |r| r.ended.is_some())
        .await?;
    assert!(c.received().certificate_identities().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_pod_of_another_service_account_cannot_be_claimed() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let ip: IpAddr = "127.0.0.33".parse()?;
    std::fs::write(
        manifests.join("mesh.yaml"),
        [
            service("ratings", "http", 80, 9080, None),
            pod("ratings-0", "ratings", ip, "ratings"),
        ]
        .join("---\n"),
    )?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    // Same namespace, another account: it may not pose as ratings-0.
    let creds = Creds::issue(&cp.ca_dir(), "default", "reviews", &work.path().join("r"))?;
    let c = RawAds::sotw(
        creds.channel(cp.xds).await?,
        node("ratings-0.default", "default", "ratings-0", "reviews"),
    );
    c.wait_for(WAIT, "the stream to be refused", |r| r.ended.is_some())
        .await?;
    let r = c.received();
    assert!(
        r.ended
            .as_deref()
            .is_some_and(|e| e.contains("runs as service account ratings")),
        "{r:?}"
    );
    assert!(r.names(LISTENER).is_empty() && r.certificate_identities().is_empty());
    Ok(())
}
