//! Start-up of the CA side of the control plane: the authority (from the operator's
//! files, the CA directory, or the Kubernetes Secret), the control plane's serving
//! certificate, and the certificate endpoint agents renew from.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ca::Authority;

use crate::config::{ConnLimits, Security};
use crate::net::front_door::ServingTls;
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
    previous_signer: Option<Authority>,
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
        previous_signer,
    })
}

impl Opened {
    /// The control plane's serving certificate for the given DNS names and addresses.
    pub(crate) fn serving_tls(
        &self,
        trust_domain: &str,
        names: &[String],
    ) -> anyhow::Result<ServingTls> {
        let id = control_plane_id(trust_domain)?;
        let lifetime = Duration::from_secs(365 * 24 * 3600);
        let serving = match &self.previous_signer {
            Some(prev) => prev.issue_server(&id, names, lifetime, SystemTime::now()),
            None => self.certs.issue_server(&id, names, lifetime),
        }
        .context("issuing the control plane's serving certificate")?;
        Ok(ServingTls {
            cert_pem: serving.cert_chain_pem.clone(),
            key_pem: serving.private_key_pem().to_string(),
            client_anchors: self.certs.issuer_anchors(),
            trust_domain: trust_domain.to_string(),
        })
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
