//! The agent's xDS bridge (`xds-server agent --grpc --xds-proxy`), for gRPC apps that
//! cannot authenticate to the control plane themselves: grpc-js has no gRFC A65 `tls`
//! channel credentials, only `insecure` and `google_default`. The agent serves
//! plain-text xDS on a Unix socket in the credential directory ([`files::XDS_SOCKET`],
//! mode 0600 in a 0700 directory: only the pod's own user reaches it, nothing outside
//! the pod can) and forwards each connection to the control plane's xDS port over
//! mutual TLS with the pod's workload certificate, as Istio's pilot-agent does for its
//! proxyless gRPC apps. The stream's identity at the control plane is that certificate:
//! the pod's own.
//!
//! The forwarding is byte for byte (the app's HTTP/2 carried whole inside TLS), not a
//! gRPC proxy: nothing is parsed or re-framed, so the control plane's own limits
//! (streams, frame sizes, the memory budget of the identity) apply to the app's
//! connection unchanged, the agent holds two fixed buffers per connection whatever the
//! size of a response, and there is no second HTTP/2 implementation to keep in step
//! with the first. Bounds: [`MAX_CONNECTIONS`] local connections at once (more are
//! closed at once), [`BUFFER_BYTES`] per direction, [`CONNECT_TIMEOUT`] for TCP and the
//! TLS handshake. Each connection reads the credential files anew, so a renewal reaches
//! the next connection; the server is checked against the trust bundle, by its address
//! and by the control plane's SPIFFE ID.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::UnixListener;

use crate::agent::files;

/// Most local connections forwarded at once (an app holds one xDS channel; a few apps
/// may share a pod).
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// Bytes buffered per direction of one connection.
pub(crate) const BUFFER_BYTES: usize = 16 << 10;
/// Longest the TCP connect plus the TLS handshake to the control plane may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom the bridge connects.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The credential directory: the client certificate, its key and the trust bundle.
    pub dir: PathBuf,
    /// The control plane's xDS host (IP or DNS name).
    pub host: String,
    /// Its xDS port.
    pub port: u16,
    /// The control plane's SPIFFE ID, required in its certificate.
    pub server_id: String,
}

/// The bridge's socket in `dir`.
pub fn socket(dir: &Path) -> PathBuf {
    files::path(dir, files::XDS_SOCKET)
}

/// Binds the bridge's socket (replacing a stale one; this user only).
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    files::bind_private_socket(path, "xDS bridge")
}

/// Forwards every connection on `listener` to `upstream`, at most `limit` at once,
/// until the process ends.
pub async fn serve(listener: UnixListener, upstream: Arc<Upstream>, limit: usize) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    loop {
        let local = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "xDS bridge: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                limit,
                "xDS bridge: too many local connections; closing the new one"
            );
            drop(local);
            continue;
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Err(e) = forward(local, &upstream).await {
                tracing::warn!(error = %format!("{e:#}"), "xDS bridge: connection ended");
            }
            drop(permit);
        });
    }
}

/// One connection: TLS to the control plane with the current certificate, then bytes
/// both ways until either side closes.
async fn forward(mut local: tokio::net::UnixStream, up: &Upstream) -> anyhow::Result<()> {
    let config = client_config(up)?;
    let name = ServerName::try_from(up.host.clone())
        .with_context(|| format!("{:?} is not a host name or address", up.host))?;
    let mut tls = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect((up.host.as_str(), up.port))
            .await
            .with_context(|| format!("connecting to {}:{}", up.host, up.port))?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {}:{}", up.host, up.port))
    })
    .await
    .with_context(|| {
        format!(
            "{}:{} did not answer within {CONNECT_TIMEOUT:?}",
            up.host, up.port
        )
    })??;
    let (to_up, to_local) =
        tokio::io::copy_bidirectional_with_sizes(&mut local, &mut tls, BUFFER_BYTES, BUFFER_BYTES)
            .await
            .context("forwarding")?;
    tracing::debug!(to_up, to_local, "xDS bridge: connection closed");
    Ok(())
}

/// A TLS client configuration from the files installed now: the certificate and key
/// (read until they match: a renewal may swap them between two reads), the server
/// checked against the bundle and by [`Upstream::server_id`], ALPN h2.
fn client_config(up: &Upstream) -> anyhow::Result<rustls::ClientConfig> {
    let mut last = None;
    for _ in 0..3 {
        let (chain, key, bundle) = files::read(&up.dir)
            .with_context(|| format!("no credentials in {} yet", up.dir.display()))?;
        match ca::key_belongs_to(&chain, &key) {
            Ok(()) => return build_config(&chain, &key, &bundle, &up.server_id),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "the certificate and key in {} do not match: {last:?}",
        up.dir.display()
    ))
}

fn build_config(
    chain: &str,
    key: &str,
    bundle: &str,
    server_id: &str,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots
            .add(cert.context("a trust bundle certificate")?)
            .context("adding a trust anchor")?;
    }
    anyhow::ensure!(!roots.is_empty(), "the trust bundle holds no certificate");
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .context("the server verifier")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .context("the workload certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("the workload key")?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServer {
            webpki,
            id: server_id.to_string(),
        }))
        .with_client_auth_cert(chain, key)
        .context("the workload certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The bundle's usual checks (chain, validity, the address dialled), plus the control
/// plane's SPIFFE ID among the leaf's URI SANs.
#[derive(Debug)]
struct SpiffeServer {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    id: String,
}

impl ServerCertVerifier for SpiffeServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if names_uri(end_entity, &self.id) {
            Ok(verified)
        } else {
            Err(rustls::Error::General(format!(
                "the xDS server's certificate does not name {}",
                self.id
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Whether the certificate `der` carries `uri` among its URI SANs.
fn names_uri(der: &[u8], uri: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(u) if *u == uri))
        })
}

#[cfg(test)]
#[path = "xds_proxy_tests.rs"]
mod tests;
