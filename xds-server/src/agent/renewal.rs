//! The agent's loop: what it is told ([`AgentConfig`]), when it renews ([`next_attempt`],
//! at half-life, with backoff after failures), and [`run`], which installs each new
//! certificate, serves it over SDS, reports on the status port and writes the proxy's
//! bootstrap once credentials are in.

use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::agent::probe_port::{self, AppProbe};
use crate::agent::state::{Status, secs};
use crate::agent::{client, files, sds, xds_proxy};

use anyhow::Context;

/// Longest wait between attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Shortest wait between renewals while holding a certificate (a certificate issued
/// already past its half-life must not make the agent spin).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// A certificate this close to expiry is not used to authenticate.
const EXPIRY_MARGIN: Duration = Duration::from_secs(2);

/// What the agent is told.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The directory shared with the proxy.
    pub cert_dir: PathBuf,
    /// The certificate endpoint, `HOST:PORT`.
    pub endpoint: String,
    /// A projected ServiceAccount token (re-read before each use; the kubelet rotates it).
    pub token_file: Option<PathBuf>,
    /// The trust bundle to check the endpoint with before any is installed.
    pub trust_bundle: Option<PathBuf>,
    /// The identity the agent must end up with (refuses anything else); without it,
    /// the installed certificate's, or the pod's (namespace and service account of
    /// `bootstrap`).
    pub expected_identity: Option<ca::SpiffeId>,
    /// Where `/ready` and `/status` are served.
    pub status_address: SocketAddr,
    /// Once serving, the bound status address is written here.
    pub ready_file: Option<PathBuf>,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// The trust bundle itself (PEM), as the injector passes it in the environment.
    pub trust_bundle_pem: Option<String>,
    /// Write the proxy's Envoy bootstrap here once credentials are installed (the
    /// injected sidecar starts from it).
    pub bootstrap: Option<(PathBuf, crate::agent::bootstrap::BootstrapParams)>,
    /// The pod's traffic is intercepted, arriving inbound on this port (marked in the
    /// bootstrap's node metadata).
    pub intercepted: Option<u16>,
    /// The bootstrap is a proxyless gRPC app's, not Envoy's.
    pub grpc: bool,
    /// Serve the app xDS on a Unix socket in the credential directory and forward it to
    /// this upstream with the pod's certificate ([`xds_proxy`]); the gRPC bootstrap
    /// then points there.
    pub xds_proxy: Option<xds_proxy::Upstream>,
    /// App probes the kubelet sends here instead (the injector moved them), run against
    /// the app: agent path -> what to check.
    pub app_probes: std::collections::BTreeMap<String, AppProbe>,
    /// Relay the proxy's stats on the status port.
    pub proxy_stats: bool,
    /// The proxy's preStop drain: the pod's token and the drain time.
    pub drain: Option<probe_port::Drain>,
}

/// Validity and identity of a PEM chain's leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before.
    pub not_before: SystemTime,
    /// Not valid after.
    pub not_after: SystemTime,
    /// Its SPIFFE ID.
    pub identity: Option<ca::SpiffeId>,
}

/// Reads the leaf of a PEM chain.
pub fn validity(chain_pem: &str) -> Option<Validity> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()?
        .ok()?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    let at = |t: i64| UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(t).ok()?));
    let identity = c.subject_alternative_name().ok().flatten().and_then(|san| {
        san.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => u.parse().ok(),
            _ => None,
        })
    });
    Some(Validity {
        not_before: at(c.validity().not_before.timestamp())?,
        not_after: at(c.validity().not_after.timestamp())?,
        identity,
    })
}

/// When to try next: at half-life of the installed certificate, counted from when it
/// was issued (its `notBefore` is backdated by [`ca::BACKDATE`] for clock skew), at once
/// without one, and never sooner than [`MIN_INTERVAL`] with one; after `failures`
/// failures in a row, 1 s doubling up to 30 s, never later than the half-life point.
pub(crate) fn next_attempt(current: Option<&Validity>, now: SystemTime, failures: u32) -> Duration {
    let until_renewal = current
        .map(|v| {
            let issued = (v.not_before + ca::BACKDATE).min(v.not_after);
            let life = v.not_after.duration_since(issued).unwrap_or_default();
            (issued + life / 2).duration_since(now).unwrap_or_default()
        })
        .unwrap_or_default();
    if failures == 0 {
        return if current.is_some() {
            until_renewal.max(MIN_INTERVAL)
        } else {
            until_renewal
        };
    }
    let backoff = Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(MAX_BACKOFF);
    if until_renewal.is_zero() {
        backoff
    } else {
        backoff.min(until_renewal)
    }
}

/// Runs the agent until the process is stopped.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let status = Arc::new(Mutex::new(Status::default()));
    let (served, _) = tokio::sync::watch::channel(sds::Served::default());
    if let Some((chain, key, _)) = files::read(&cfg.cert_dir) {
        served.send_modify(|s| *s = s.next(&chain, &key));
    }
    if !cfg.grpc {
        let socket = sds::socket(&cfg.cert_dir);
        let listener = sds::bind(&cfg.cert_dir)?;
        tokio::spawn(sds::serve(listener, served.subscribe()));
        tracing::info!(socket = %socket.display(), "serving the workload certificate over SDS");
    }
    if let Some(up) = &cfg.xds_proxy {
        let socket = xds_proxy::socket(&cfg.cert_dir);
        let listener = xds_proxy::bind(&cfg.cert_dir)?;
        tokio::spawn(xds_proxy::serve(
            listener,
            std::sync::Arc::new(up.clone()),
            xds_proxy::Limits::default(),
        ));
        tracing::info!(socket = %socket.display(), upstream = %format!("{}:{}", up.host, up.port), "serving xDS to the app (forwarded over mTLS)");
    }
    let listener = tokio::net::TcpListener::bind(cfg.status_address)
        .await
        .with_context(|| format!("binding the status address {}", cfg.status_address))?;
    let bound = listener.local_addr()?;
    tokio::spawn(probe_port::serve_status(
        listener,
        status.clone(),
        Arc::new(status_config(&cfg)),
    ));
    if let Some(path) = &cfg.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::json!({"status": bound.to_string()}).to_string(),
        )
        .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(status = %bound, endpoint = %cfg.endpoint, dir = %cfg.cert_dir.display(), "agent started");
    let mut failures = 0u32;
    let mut bootstrap_written = false;
    loop {
        if !bootstrap_written
            && files::read(&cfg.cert_dir).is_some()
            && let Some((path, params)) = &cfg.bootstrap
        {
            write_bootstrap(path, params, &cfg)?;
            bootstrap_written = true;
            tracing::info!(path = %path.display(), grpc = cfg.grpc, "wrote the bootstrap");
        }
        let current = files::read(&cfg.cert_dir);
        let valid = current.as_ref().and_then(|(c, _, _)| validity(c));
        // ±10% jitter, so agents that failed together do not retry in step.
        let wait = next_attempt(valid.as_ref(), SystemTime::now(), failures)
            .mul_f64(rand::random_range(0.9..1.1));
        {
            let mut s = status.lock();
            s.identity = valid
                .as_ref()
                .and_then(|v| v.identity.as_ref().map(ToString::to_string));
            s.not_after = valid.as_ref().map(|v| secs(v.not_after));
            s.next_attempt = Some(secs(SystemTime::now() + wait));
        }
        tokio::time::sleep(wait).await;
        match renew(&cfg, current.as_ref(), valid.as_ref()).await {
            Ok((issued, key_pem)) => {
                served.send_modify(|s| *s = s.next(&issued.cert_chain_pem, &key_pem));
                failures = 0;
                let mut s = status.lock();
                s.last_renewal = Some(secs(SystemTime::now()));
                s.renewals += 1;
                s.last_error = None;
                s.failures = 0;
                tracing::info!(identity = %issued.spiffe_id, not_after = issued.not_after, "credentials renewed");
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let mut s = status.lock();
                s.failures = failures;
                s.last_error = Some(format!("{e:#}"));
                tracing::warn!(error = %format!("{e:#}"), failures, "renewing credentials failed; retrying with backoff");
            }
        }
    }
}

/// Writes the proxy's bootstrap (the same generator as `xds-server bootstrap`), reading
/// its xDS client certificate from the credential directory through file-based SDS (a
/// gRPC app: from the files, or through the agent's xDS bridge).
/// The status port's probes, where they reach the app, and the proxy's admin address
/// (when the bootstrap fixes it) for `/proxy-ready`.
fn status_config(cfg: &AgentConfig) -> probe_port::StatusConfig {
    let params = cfg.bootstrap.as_ref().map(|(_, p)| p);
    probe_port::StatusConfig {
        probes: cfg.app_probes.clone(),
        target: probe_port::ProbeTarget::of(
            cfg.intercepted.is_some(),
            params.and_then(|p| p.pod_ip),
            params.and_then(|p| p.app_address),
        ),
        proxy_admin: params.map(|p| p.admin).filter(|a| a.port() != 0),
        proxy_stats: cfg.proxy_stats,
        drain: cfg.drain.clone(),
    }
}

fn write_bootstrap(
    path: &std::path::Path,
    params: &crate::agent::bootstrap::BootstrapParams,
    cfg: &AgentConfig,
) -> anyhow::Result<()> {
    let (dir, trust_domain) = (cfg.cert_dir.as_path(), cfg.trust_domain.as_str());
    let params = crate::agent::bootstrap::BootstrapParams {
        tls: Some(crate::agent::bootstrap::BootstrapTls {
            dir: dir.to_path_buf(),
            cert_file: files::path(dir, files::CERT),
            key_file: files::path(dir, files::KEY),
            ca_file: files::path(dir, files::BUNDLE),
            server_id: crate::runtime::control_plane_id(trust_domain)?.to_string(),
        }),
        agent_sds: Some(dir.to_path_buf()),
        ..params.clone()
    };
    let mut b = match &params.tls {
        Some(tls) if cfg.grpc && cfg.xds_proxy.is_some() => {
            crate::agent::bootstrap::grpc_bootstrap_via_agent(&params, tls, &xds_proxy::socket(dir))
        }
        Some(tls) if cfg.grpc => crate::agent::bootstrap::grpc_bootstrap(&params, tls),
        _ => crate::agent::bootstrap::bootstrap(&params),
    };
    if let Some(port) = cfg.intercepted {
        crate::agent::bootstrap::mark_intercepted(&mut b, port);
    }
    let text = serde_json::to_string_pretty(&b)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The identity to ask for: the one the agent was told, else the installed
/// certificate's, else the pod's.
fn identity_to_request(
    cfg: &AgentConfig,
    valid: Option<&Validity>,
) -> anyhow::Result<ca::SpiffeId> {
    if let Some(id) = cfg
        .expected_identity
        .clone()
        .or_else(|| valid.and_then(|v| v.identity.clone()))
    {
        return Ok(id);
    }
    let (_, params) = cfg.bootstrap.as_ref().context(
        "the agent does not know which identity to ask for: pass --identity NAMESPACE/SERVICE_ACCOUNT",
    )?;
    ca::SpiffeId::new(
        &cfg.trust_domain,
        &params.namespace,
        &params.service_account,
    )
    .context("the pod's namespace and service account")
}

/// One renewal: a new key made here, and a request for it authenticated with the token
/// (in a cluster) or the current certificate while it is valid; what comes back is
/// checked (the identity, and that it certifies this key) and installed with the key.
/// Returns what was issued and the new key.
async fn renew(
    cfg: &AgentConfig,
    current: Option<&(String, String, String)>,
    valid: Option<&Validity>,
) -> anyhow::Result<(crate::pki::issuer::Issued, String)> {
    let bundle = match (current, &cfg.trust_bundle, &cfg.trust_bundle_pem) {
        (Some((_, _, b)), _, _) => b.clone(),
        (None, Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the trust bundle {}", path.display()))?,
        (None, None, Some(pem)) => pem.clone(),
        (None, None, None) => anyhow::bail!(
            "no credentials in {} and no trust bundle to check the control plane with",
            cfg.cert_dir.display()
        ),
    };
    let usable = valid.is_some_and(|v| {
        v.not_after
            .duration_since(SystemTime::now())
            .is_ok_and(|left| left > EXPIRY_MARGIN)
    });
    let want = identity_to_request(cfg, valid)?;
    let made = ca::csr::KeyAndRequest::generate(&want).context("making a key")?;
    let mut errors = Vec::new();
    let mut issued = None;
    // With a token (in a cluster) the token first: the control plane requires it there.
    if let Some(path) = &cfg.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token {}", path.display()))?;
        let credential = client::Credential::Token(&token);
        match client::request(&cfg.endpoint, &bundle, credential, &made.csr_pem).await {
            Ok(i) => issued = Some(i),
            Err(e) => errors.push(format!("with the token: {e:#}")),
        }
    }
    if let (None, true, Some((chain, key, _))) = (&issued, usable, current) {
        let credential = client::Credential::Certificate { chain, key };
        match client::request(&cfg.endpoint, &bundle, credential, &made.csr_pem).await {
            Ok(i) => issued = Some(i),
            Err(e) => errors.push(format!("with the current certificate: {e:#}")),
        }
    }
    let Some(issued) = issued else {
        if errors.is_empty() {
            anyhow::bail!(
                "the certificate in {} has expired and there is no --token-file to start over with",
                cfg.cert_dir.display()
            );
        }
        anyhow::bail!("{}", errors.join("; "));
    };
    let got = validity(&issued.cert_chain_pem).context("the issued certificate does not parse")?;
    anyhow::ensure!(
        got.identity.as_ref() == Some(&want),
        "the control plane issued {:?}, not {want}; not installed",
        got.identity.map(|i| i.to_string())
    );
    ca::key_belongs_to(&issued.cert_chain_pem, &made.key_pem)
        .context("the issued certificate is not for the key made here; not installed")?;
    files::install(
        &cfg.cert_dir,
        &files::Credentials {
            chain_pem: &issued.cert_chain_pem,
            key_pem: &made.key_pem,
            bundle_pem: &issued.trust_bundle_pem,
        },
    )?;
    Ok((issued, made.key_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(from: u64, to: u64) -> Validity {
        Validity {
            not_before: UNIX_EPOCH + Duration::from_secs(from),
            not_after: UNIX_EPOCH + Duration::from_secs(to),
            identity: None,
        }
    }

    #[test]
    fn renewal_is_at_half_life_and_failures_back_off_without_passing_it() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        // A 60 s certificate issued at 990 (notBefore backdated 60 s): half-life at 1020.
        assert_eq!(
            next_attempt(Some(&v(930, 1050)), now, 0),
            Duration::from_secs(20)
        );
        // Past half-life: soon, but not in a spin; no certificate: now.
        assert_eq!(
            next_attempt(Some(&v(840, 1050)), now, 0),
            Duration::from_secs(1)
        );
        assert_eq!(next_attempt(None, now, 0), Duration::ZERO);
        // Failures: 1, 2, 4 ... capped at 30 s.
        let backoffs: Vec<u64> = (1..=8)
            .map(|f| next_attempt(None, now, f).as_secs())
            .collect();
        assert_eq!(backoffs, [1, 2, 4, 8, 16, 30, 30, 30]);
        // Past half-life, failures still back off (a fleet must not retry every second
        // through an outage).
        assert_eq!(
            next_attempt(Some(&v(840, 1050)), now, 3),
            Duration::from_secs(4)
        );
        assert_eq!(
            next_attempt(Some(&v(840, 1050)), now, 9),
            Duration::from_secs(30)
        );
        // A failure long before half-life still retries at half-life at the latest.
        assert_eq!(
            next_attempt(Some(&v(930, 1050)), now, 6),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn ready_means_a_valid_certificate() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let mut s = Status::default();
        assert!(!s.ready(now));
        s.not_after = Some(1001);
        assert!(s.ready(now));
        s.not_after = Some(1000);
        assert!(!s.ready(now));
    }
}
