//! The flags that say where the CA is, what it issues and whether xDS is served with
//! TLS, shared by `run`, `bootstrap` and `credentials`; `run` hands them down as
//! [`crate::config::Security`].

use std::path::PathBuf;
use std::time::Duration;

/// Identity and mutual TLS settings shared by `run` and `bootstrap`.
#[derive(Clone, Debug, clap::Args)]
pub(super) struct SecurityArgs {
    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local", env = "RUDDER_TRUST_DOMAIN")]
    pub(super) trust_domain: String,
    /// Directory holding the CA (created on first start). Manifest mode; in cluster mode
    /// the CA lives in Secret rudder-ca.
    #[arg(long, default_value = "rudder-ca", env = "RUDDER_CA_DIR")]
    pub(super) ca_dir: PathBuf,
    /// Use this CA certificate (a root, or an intermediate with --ca-chain) instead.
    #[arg(long, requires = "ca_key")]
    pub(super) ca_cert: Option<PathBuf>,
    /// The key of --ca-cert.
    #[arg(long, requires = "ca_cert")]
    pub(super) ca_key: Option<PathBuf>,
    /// Certificates above --ca-cert, up to the root.
    #[arg(long, requires = "ca_cert")]
    pub(super) ca_chain: Option<PathBuf>,
    /// Workload certificate lifetime (renewed at half-life), from 10s to 366 days, e.g.
    /// 24h or 60s.
    #[arg(long, default_value = "24h", value_parser = parse_lifetime)]
    pub(super) cert_lifetime: Duration,
    /// Serve xDS in plain text, without authentication, on a loopback address only.
    /// DANGEROUS: any local process may then claim any identity (any namespace and
    /// service account, the control plane's own excepted) and is sent that identity's
    /// config, and may read every proxy's config over CSDS.
    #[arg(long)]
    pub(super) insecure_xds: bool,
}

impl From<SecurityArgs> for crate::config::Security {
    fn from(args: SecurityArgs) -> Self {
        let SecurityArgs {
            trust_domain,
            ca_dir,
            ca_cert,
            ca_key,
            ca_chain,
            cert_lifetime,
            insecure_xds,
        } = args;
        crate::config::Security {
            trust_domain,
            ca_dir,
            ca_cert,
            ca_key,
            ca_chain,
            cert_lifetime,
            insecure_xds,
        }
    }
}

/// Shortest and longest workload certificate lifetime.
const LIFETIME_RANGE: (Duration, Duration) = (
    Duration::from_secs(10),
    Duration::from_secs(366 * 24 * 3600),
);

fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let d = crds::duration::parse(s)?;
    let (min, max) = LIFETIME_RANGE;
    if d < min || d > max {
        return Err(format!(
            "{s} is outside the supported lifetimes ({}s to {} days)",
            min.as_secs(),
            max.as_secs() / 86400
        ));
    }
    Ok(d)
}
