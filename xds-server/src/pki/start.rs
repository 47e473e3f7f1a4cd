//! Start-up of the CA side of the control plane: the authority (from the operator's
//! files, the CA directory, or the Kubernetes Secret), the control plane's serving
//! certificate, and the certificate endpoint agents renew from.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ca::Authority;

use crate::config::{ConnLimits, Security};
use crate::net::front_door::{ServingKey, ServingTls};
use crate::observability::metrics::Metrics;
use crate::pki::ca_service::{self, CaService, PodsIn};
use crate::pki::ca_store;
use crate::pki::certs::{self, CertManager};
use crate::runtime::{Stop, control_plane_id};

/// Loads the CA from operator-supplied files or the CA directory, which must hold one.
pub(crate) fn load_ca_files(sec: &Security) -> anyhow::Result<Authority> {
    match (&sec.ca_cert, &sec.ca_key) {
        (Some(cert), Some(key)) => {
            ca_store::from_files(cert, key, sec.ca_chain.as_deref(), &sec.trust_domain)
        }
        _ => ca_store::from_dir(&sec.ca_dir, &sec.trust_domain),
    }
}

/// The CA as `run` finds it.
pub(crate) struct Opened {
    /// Signs workload certificates.
    pub(crate) certs: Arc<CertManager>,
    /// During a rotation overlap: the previous root, which signs the serving certificate.
    previous_signer: Option<Arc<Authority>>,
}

/// Opens the CA: the Secret in `namespace` in cluster mode (unless the operator supplied
/// one), else the operator's files or the CA directory (created on first start).
pub(crate) async fn open(
    client: Option<&kube::Client>,
    namespace: &str,
    sec: &Security,
) -> anyhow::Result<Opened> {
    let (authority, previous_signer) = match (client, &sec.ca_cert) {
        (Some(client), None) => (
            ca_store::from_kubernetes(client.clone(), namespace, &sec.trust_domain).await?,
            None,
        ),
        _ => {
            let authority = match (&sec.ca_cert, &sec.ca_key) {
                (Some(_), Some(_)) => load_ca_files(sec)?,
                _ => ca_store::open_or_create(&sec.ca_dir, &sec.trust_domain)?,
            };
            // During a rotation overlap the previous root signs our serving certificate.
            let previous = match &sec.ca_cert {
                None => ca_store::serving_authority(&sec.ca_dir, &sec.trust_domain, &authority)?,
                Some(_) => None,
            };
            certs::forget_kept_keys(&sec.ca_dir.join("issued"));
            (authority, previous)
        }
    };
    Ok(Opened {
        certs: Arc::new(CertManager::new(authority)),
        previous_signer: previous_signer.map(Arc::new),
    })
}

/// How long the control plane's serving certificate lives. It is renewed in-process
/// once two thirds of that have passed, so a control plane that runs for months keeps
/// serving.
pub(crate) const SERVING_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Retry delay after a failed renewal.
const SERVING_RETRY: Duration = Duration::from_secs(60);

impl Opened {
    /// Issues the control plane's serving certificates for the given DNS names and
    /// addresses.
    pub(crate) fn serving_issuer(
        &self,
        trust_domain: &str,
        names: &[String],
    ) -> anyhow::Result<ServingIssuer> {
        Ok(ServingIssuer {
            certs: self.certs.clone(),
            previous_signer: self.previous_signer.clone(),
            id: control_plane_id(trust_domain)?,
            names: names.to_vec(),
            lifetime: SERVING_LIFETIME,
        })
    }

    /// The control plane's serving certificate for the given DNS names and addresses.
    pub(crate) fn serving_tls(
        &self,
        trust_domain: &str,
        names: &[String],
    ) -> anyhow::Result<(ServingTls, ServingIssuer)> {
        let issuer = self.serving_issuer(trust_domain, names)?;
        let (chain, key) = issuer.issue()?;
        let tls = ServingTls::from_pem(
            &chain,
            &key,
            self.certs.issuer_anchors(),
            trust_domain.to_string(),
        )?;
        Ok((tls, issuer))
    }
}

/// Issues the control plane's serving certificate: its key made here, where it is used.
pub(crate) struct ServingIssuer {
    certs: Arc<CertManager>,
    previous_signer: Option<Arc<Authority>>,
    id: ca::SpiffeId,
    names: Vec<String>,
    pub(crate) lifetime: Duration,
}

impl ServingIssuer {
    /// A new serving chain and key (PEM).
    pub(crate) fn issue(&self) -> anyhow::Result<(String, String)> {
        let serving = match &self.previous_signer {
            Some(prev) => {
                prev.issue_server(&self.id, &self.names, self.lifetime, SystemTime::now())
            }
            None => self
                .certs
                .issue_server(&self.id, &self.names, self.lifetime),
        }
        .context("issuing the control plane's serving certificate")?;
        Ok((
            serving.cert_chain_pem.clone(),
            serving.private_key_pem().to_string(),
        ))
    }
}

/// When a serving certificate that expires at `not_after` is renewed: once two thirds
/// of `lifetime` have passed (at once if that is past).
pub(crate) fn renewal_due(not_after: SystemTime, lifetime: Duration) -> SystemTime {
    not_after.checked_sub(lifetime / 3).unwrap_or(not_after)
}

/// Keeps `key` fresh: renews it with `issuer` when due, for as long as the control plane
/// runs; a failed renewal is logged and retried every minute while the old certificate
/// still serves.
pub(crate) async fn keep_serving_fresh(issuer: ServingIssuer, key: ServingKey) {
    loop {
        // Unreadable (it never is: we made it): renew, but not in a tight loop.
        let due = key.not_after().map_or_else(
            || SystemTime::now() + SERVING_RETRY,
            |t| renewal_due(t, issuer.lifetime),
        );
        let wait = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        match issuer
            .issue()
            .and_then(|(chain, k)| key.replace_pem(&chain, &k))
        {
            Ok(()) => tracing::info!(
                expires = ?key.not_after(),
                "renewed the control plane's serving certificate"
            ),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "renewing the control plane's serving certificate failed; the current one keeps serving; retrying in a minute");
                tokio::time::sleep(SERVING_RETRY).await;
            }
        }
    }
}

/// What the certificate endpoint is started with.
pub(crate) struct CaEndpoint {
    /// Where it listens.
    pub(crate) listener: tokio::net::TcpListener,
    /// Signs what it issues.
    pub(crate) certs: Arc<CertManager>,
    /// Checks tokens in cluster mode.
    pub(crate) client: Option<kube::Client>,
    /// The pods of a namespace, for the liveness check.
    pub(crate) pods_in: PodsIn,
}

/// Starts the certificate endpoint on `endpoint.listener`.
pub(crate) fn start_ca_service(
    endpoint: CaEndpoint,
    tls: &ServingTls,
    sec: &Security,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    stop: Stop,
) -> anyhow::Result<()> {
    let setup = tls
        .setup()
        .context("configuring TLS for the certificate endpoint")?;
    let service = Arc::new(CaService::new(
        endpoint.certs,
        sec.cert_lifetime,
        sec.trust_domain.clone(),
        endpoint.client,
        metrics,
        endpoint.pods_in,
    ));
    tokio::spawn(ca_service::serve(
        endpoint.listener,
        setup,
        limits,
        service,
        stop,
    ));
    Ok(())
}

/// Binds the certificate endpoint's address.
pub(crate) fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    crate::net::front_door::bind(addr)
        .with_context(|| format!("binding the certificate endpoint {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(renewal_due(t, 90 * day), t - 30 * day);
        assert_eq!(renewal_due(t, 3 * day), t - day);
    }

    #[tokio::test]
    async fn the_serving_certificate_is_renewed_in_place_for_every_port() {
        let authority = Authority::generate_root("cluster.local", SystemTime::now()).expect("ca");
        let opened = Opened {
            certs: Arc::new(CertManager::new(authority)),
            previous_signer: None,
        };
        let (tls, mut issuer) = opened
            .serving_tls("cluster.local", &["localhost".into()])
            .expect("serving");
        assert!(
            tls.key.not_after().expect("expiry") > SystemTime::now() + SERVING_LIFETIME / 2,
            "issued for SERVING_LIFETIME"
        );
        // A short-lived one, due for renewal within a second or two.
        issuer.lifetime = Duration::from_secs(3);
        let (chain, key) = issuer.issue().expect("issue");
        tls.key.replace_pem(&chain, &key).expect("replace");
        // A port set up before the renewal presents the renewed certificate.
        let port = tls.setup().expect("setup");
        let first = port.certified_key.current().cert.clone();
        let first_expiry = tls.key.not_after().expect("expiry");
        tokio::spawn(keep_serving_fresh(issuer, tls.key.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while port.certified_key.current().cert == first {
            assert!(tokio::time::Instant::now() < deadline, "never renewed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(tls.key.not_after().expect("expiry") > first_expiry);
    }
}
