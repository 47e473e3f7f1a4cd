//! The generator's client TLS: trust anchors from `--ca`, an optional client
//! certificate (`--cert`, `--key`) for mutual TLS, ALPN `h2` or `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

/// PEM files and the name to verify.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// CA certificates the server's chain must end in.
    pub ca: PathBuf,
    /// The client certificate chain; none: no client certificate.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (required with `cert`).
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry (DNS name or IP address).
    pub server_name: String,
}

/// A connector and the server name to present, for `http2` (ALPN h2) or HTTP/1.1.
pub(crate) fn connector(
    files: &TlsFiles,
    http2: bool,
) -> anyhow::Result<(TlsConnector, ServerName<'static>)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(&files.ca, "--ca")? {
        roots
            .add(cert)
            .with_context(|| format!("--ca {}: not a usable CA certificate", files.ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS: the ring provider offers no protocol version")?
        .with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "--cert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("--key {}: no PEM private key", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("--cert/--key: the key does not fit the certificate")?
        }
        _ => bail!("--cert and --key go together"),
    };
    config.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let name = ServerName::try_from(files.server_name.clone()).with_context(|| {
        format!(
            "--server-name {:?}: not a DNS name or IP",
            files.server_name
        )
    })?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}

fn certs(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("{flag} {}: cannot read", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{flag} {}: bad PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{flag} {}: no certificate in the file", path.display());
    }
    Ok(certs)
}
