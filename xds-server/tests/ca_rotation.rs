//! Root rotation in cluster mode, step by step on the Secret rudder-ca in the fake API
//! server, as replicas restarting after each step load it: at no step does a certificate
//! issued at an earlier step stop verifying against the bundle of a later one, and a
//! proxy that holds only the bundle of the step before trusts what the control plane
//! signs now (the "new trust bundle first, then new issuer" order).

use std::time::{Duration, SystemTime};

use ca::{Authority, SpiffeId};
use testbed::fake_kube::FakeKube;
use xds_server::pki::ca_store::from_kubernetes;
use xds_server::pki::secret_rotation::{Step, rotate_secret};

const HOUR: Duration = Duration::from_secs(3600);

async fn load(fake: &FakeKube) -> anyhow::Result<Authority> {
    from_kubernetes(fake.client(), "rudder-system", "cluster.local").await
}

/// An authority that trusts exactly `bundle` (what a proxy holding it verifies with).
fn verifier(bundle: &str) -> anyhow::Result<Authority> {
    // A fresh root (which signed nothing, so it verifies nothing here) that also trusts
    // the bundle's roots.
    Ok(Authority::generate_root("cluster.local", SystemTime::now())?.with_previous_roots(bundle))
}

#[tokio::test]
async fn each_step_keeps_every_certificate_verifiable() -> anyhow::Result<()> {
    let fake = FakeKube::new();
    let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/web".parse()?;
    let now = SystemTime::now();
    let start = load(&fake).await?;
    let bundle0 = start.trust_bundle_pem();
    let cert0 = start.issue(&id, HOUR, now)?;

    rotate_secret(
        fake.client(),
        "rudder-system",
        "cluster.local",
        Step::Prepare,
    )
    .await?;
    let prepared = load(&fake).await?;
    let bundle1 = prepared.trust_bundle_pem();
    assert_eq!(
        bundle1.matches("BEGIN CERTIFICATE").count(),
        2,
        "the next root joins the bundle"
    );
    assert_eq!(
        prepared.files().cert_pem,
        start.files().cert_pem,
        "the old root still signs"
    );
    let cert1 = prepared.issue(&id, HOUR, now)?;
    // A proxy still on the first bundle verifies what the prepared control plane signs.
    verifier(&bundle0)?.verify_issued(&cert1, now)?;

    rotate_secret(
        fake.client(),
        "rudder-system",
        "cluster.local",
        Step::Activate,
    )
    .await?;
    let active = load(&fake).await?;
    assert_ne!(
        active.files().cert_pem,
        start.files().cert_pem,
        "the new root signs"
    );
    let cert2 = active.issue(&id, HOUR, now)?;
    // A proxy holding the prepared bundle trusts the new issuer; certificates issued
    // before still verify under the active bundle.
    verifier(&bundle1)?.verify_issued(&cert2, now)?;
    let bundle2 = active.trust_bundle_pem();
    for (step, cert) in [("start", &cert0), ("prepare", &cert1)] {
        verifier(&bundle2)?
            .verify_issued(cert, now)
            .map_err(|e| anyhow::anyhow!("{step}'s certificate after activate: {e}"))?;
    }

    rotate_secret(
        fake.client(),
        "rudder-system",
        "cluster.local",
        Step::Finish,
    )
    .await?;
    let finished = load(&fake).await?;
    let bundle3 = finished.trust_bundle_pem();
    assert_eq!(bundle3.matches("BEGIN CERTIFICATE").count(), 1);
    verifier(&bundle3)?.verify_issued(&cert2, now)?;
    assert!(
        verifier(&bundle3)?.verify_issued(&cert0, now).is_err(),
        "the old root is no longer trusted"
    );
    // Out of order: refused, and the Secret is unchanged.
    let before = fake.get("v1", "Secret", "rudder-system", "rudder-ca");
    assert!(
        rotate_secret(
            fake.client(),
            "rudder-system",
            "cluster.local",
            Step::Activate
        )
        .await
        .is_err()
    );
    assert_eq!(
        fake.get("v1", "Secret", "rudder-system", "rudder-ca"),
        before
    );
    Ok(())
}
