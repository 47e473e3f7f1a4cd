//! Who the xDS port trusts: only leaves the control plane's own CA issued (never a
//! sibling under a shared root), never expired ones, and refusals are logged with what
//! the peer claimed and counted.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ca::{Authority, CaFiles, SpiffeId};
use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use testbed::procs::{ControlPlane, wait_until};
use testbed::xds_client::{Creds, RawAds, node};

const WAIT: Duration = Duration::from_secs(15);

/// Writes client credentials for `id`, issued by `issuer`, as `xds-server credentials`
/// would; the trust bundle is `bundle`.
fn write_creds(
    dir: &Path,
    issuer: &Authority,
    id: &SpiffeId,
    at: SystemTime,
    life: Duration,
    bundle: &str,
) -> anyhow::Result<Creds> {
    std::fs::create_dir_all(dir)?;
    let cert = issuer.issue(id, life, at)?;
    std::fs::write(dir.join("xds-client.crt"), &cert.cert_chain_pem)?;
    std::fs::write(dir.join("xds-client.key"), cert.private_key_pem())?;
    std::fs::write(dir.join("xds-ca.crt"), bundle)?;
    Ok(Creds {
        dir: dir.to_path_buf(),
    })
}

async fn csds(creds: &Creds, cp: &ControlPlane) -> anyhow::Result<usize> {
    let channel = creds.channel(cp.xds).await?;
    let mut client = ClientStatusDiscoveryServiceClient::new(channel);
    let resp = client
        .fetch_client_status(ClientStatusRequest::default())
        .await?;
    Ok(resp.into_inner().config.len())
}

fn save(dir: &Path, name: &str, files: &CaFiles) -> anyhow::Result<()> {
    std::fs::write(dir.join(format!("{name}.crt")), &files.cert_pem)?;
    std::fs::write(dir.join(format!("{name}-chain.crt")), &files.chain_pem)?;
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&key, &files.key_pem)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[tokio::test]
async fn with_a_supplied_intermediate_only_its_own_leaves_are_trusted() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let pki = work.path().join("pki");
    std::fs::create_dir(&pki)?;
    let now = SystemTime::now();
    let root = Authority::generate_root("cluster.local", now)?;
    let ours = root.issue_intermediate("mesh A", now)?;
    let sibling = root.issue_intermediate("mesh B", now)?;
    save(&pki, "ours", &ours)?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let cp = ControlPlane::start_with(
        &manifests,
        work.path(),
        &[
            "--ca-cert",
            &pki.join("ours.crt").display().to_string(),
            "--ca-key",
            &pki.join("ours.key").display().to_string(),
            "--ca-chain",
            &pki.join("ours-chain.crt").display().to_string(),
        ],
    )
    .await?;
    let bundle = root.trust_bundle_pem();
    let ours = Authority::from_files("cluster.local", &ours)?;
    // The sibling issues in the same trust domain: only the anchoring can refuse it.
    let sibling = Authority::from_files("cluster.local", &sibling)?;
    let admin = |td: &str| SpiffeId::new(td, "rudder-system", "xdsctl");

    // A leaf of our intermediate reads CSDS.
    let good = write_creds(
        &work.path().join("good"),
        &ours,
        &admin("cluster.local")?,
        now,
        Duration::from_secs(3600),
        &bundle,
    )?;
    csds(&good, &cp).await?;

    // A sibling's leaf, under the same root, is refused at the handshake: no CSDS, no ADS.
    let bad = write_creds(
        &work.path().join("bad"),
        &sibling,
        &admin("cluster.local")?,
        now,
        Duration::from_secs(3600),
        &bundle,
    )?;
    assert!(
        csds(&bad, &cp).await.is_err(),
        "a sibling's leaf must not read CSDS"
    );
    let workload = write_creds(
        &work.path().join("w"),
        &sibling,
        &SpiffeId::new("cluster.local", "default", "web")?,
        now,
        Duration::from_secs(3600),
        &bundle,
    )?;
    // The handshake fails (on connect, or on the first read with TLS 1.3): either way no
    // stream is served.
    match workload.channel(cp.xds).await {
        Err(_) => {}
        Ok(channel) => {
            let c = RawAds::delta(channel, node("web-1.default", "default", "web-1", "web"));
            c.wait_for(WAIT, "the stream to fail", |r| r.ended.is_some())
                .await?;
            let r = c.received();
            assert!(
                r.responses == 0 && r.certificate_identities().is_empty(),
                "{r:?}"
            );
        }
    }
    let cp_ref = &cp;
    wait_until(WAIT, "the refusal in the log", || async move {
        Ok(cp_ref
            .log_text()
            .contains("refused an xDS client certificate"))
    })
    .await?;
    let log = cp.log_text();
    assert!(
        log.contains("\"claimed_identity\":\"spiffe://cluster.local/ns/rudder-system/sa/xdsctl\""),
        "{log}"
    );
    assert!(log.contains("\"level\":\"WARN\""));
    let metrics = testbed::http::get_ok(cp.admin, "/metrics").await?;
    assert!(
        metrics.contains("rudder_xds_handshake_failures_total{reason=\"unknown_issuer\"}"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn expired_and_other_trust_domain_certificates_are_refused() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    let dir = cp.ca_dir();
    let ca = Authority::from_files(
        "cluster.local",
        &CaFiles {
            cert_pem: std::fs::read_to_string(dir.join("ca.crt"))?,
            key_pem: std::fs::read_to_string(dir.join("ca.key"))?,
            chain_pem: String::new(),
        },
    )?;
    let bundle = ca.trust_bundle_pem();
    let admin = SpiffeId::new("cluster.local", "rudder-system", "xdsctl")?;
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
    let expired = write_creds(
        &work.path().join("old"),
        &ca,
        &admin,
        two_days_ago,
        Duration::from_secs(86400),
        &bundle,
    )?;
    assert!(
        csds(&expired, &cp).await.is_err(),
        "an expired certificate is refused"
    );
    let cp_ref = &cp;
    wait_until(WAIT, "the refusal in the log", || async move {
        Ok(cp_ref.log_text().contains("\"reason\":\"expired\""))
    })
    .await?;
    let log = cp.log_text();
    assert!(log.contains("\"not_after\":"), "{log}");
    // Our CA, another trust domain: the handshake passes, CSDS says no.
    let foreign = SpiffeId::new("other.domain", "rudder-system", "xdsctl")?;
    let other = write_creds(
        &work.path().join("td"),
        &ca,
        &foreign,
        SystemTime::now(),
        Duration::from_secs(3600),
        &bundle,
    )?;
    let err = csds(&other, &cp)
        .await
        .expect_err("another trust domain may not read");
    assert!(
        format!("{err:#}").contains("may not read proxy status"),
        "{err:#}"
    );
    Ok(())
}

#[tokio::test]
async fn a_stream_ends_when_its_client_certificate_expires() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    let dir = cp.ca_dir();
    let ca = Authority::from_files(
        "cluster.local",
        &CaFiles {
            cert_pem: std::fs::read_to_string(dir.join("ca.crt"))?,
            key_pem: std::fs::read_to_string(dir.join("ca.key"))?,
            chain_pem: String::new(),
        },
    )?;
    let id = SpiffeId::new("cluster.local", "default", "web")?;
    // Certificates are back-dated a minute: this one is valid for about 3 more seconds.
    let issued = SystemTime::now() - Duration::from_secs(60);
    let creds = write_creds(
        &work.path().join("c"),
        &ca,
        &id,
        issued,
        Duration::from_secs(63),
        &ca.trust_bundle_pem(),
    )?;
    let c = RawAds::delta(
        creds.channel(cp.xds).await?,
        node("web-1.default", "default", "web-1", "web"),
    );
    c.wait_for(WAIT, "the trust bundle", |r| r.has_trust_bundle())
        .await?;
    c.wait_for(WAIT, "the stream to end", |r| r.ended.is_some())
        .await?;
    let ended = c.received().ended.unwrap_or_default();
    assert!(ended.contains("client certificate expired"), "{ended}");
    Ok(())
}
