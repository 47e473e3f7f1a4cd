//! One request to the control plane's certificate endpoint: HTTPS, the server checked
//! against the mesh's trust bundle and the endpoint's host name, authenticated by the
//! current certificate (renewal) or a ServiceAccount token, carrying a certificate
//! request for a key the agent made (the key itself is never sent).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::pki::issuer::{CertRequest, Issued, PATH};

/// Largest answer read, in bytes (a chain, a key and a bundle are a few KiB).
const MAX_ANSWER_BYTES: usize = 256 << 10;
/// Longest one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How the agent proves who it is.
pub enum Credential<'a> {
    /// Its current certificate chain and key (PEM), still valid.
    Certificate { chain: &'a str, key: &'a str },
    /// A ServiceAccount token for audience `rudder`.
    Token(&'a str),
}

/// Asks `endpoint` (`HOST:PORT`) to sign `csr_pem`.
pub async fn request(
    endpoint: &str,
    bundle_pem: &str,
    credential: Credential<'_>,
    csr_pem: &str,
) -> anyhow::Result<Issued> {
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        request_inner(endpoint, bundle_pem, credential, csr_pem),
    )
    .await
    .with_context(|| format!("{endpoint} did not answer within {REQUEST_TIMEOUT:?}"))?
}

async fn request_inner(
    endpoint: &str,
    bundle_pem: &str,
    credential: Credential<'_>,
    csr_pem: &str,
) -> anyhow::Result<Issued> {
    let (host, _) = endpoint
        .rsplit_once(':')
        .with_context(|| format!("{endpoint:?} is not HOST:PORT"))?;
    let host = host.trim_matches(['[', ']']).to_string();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()) {
        roots
            .add(cert.context("a trust bundle certificate")?)
            .context("adding a trust anchor")?;
    }
    anyhow::ensure!(!roots.is_empty(), "the trust bundle holds no certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let mut token = None;
    let config = match credential {
        Credential::Certificate { chain, key } => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .context("the current certificate")?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).context("the current key")?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the current certificate and key")?
        }
        Credential::Token(t) => {
            token = Some(t.trim().to_string());
            builder.with_no_client_auth()
        }
    };
    let name = ServerName::try_from(host.clone()).with_context(|| format!("{host:?}"))?;
    let tcp = tokio::net::TcpStream::connect(endpoint)
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {endpoint}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::post(PATH)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = serde_json::to_vec(&CertRequest {
        csr: csr_pem.to_string(),
    })?;
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let why = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(|s| crds::text::clip(s, 512)))
            .unwrap_or_default();
        bail!("{endpoint} refused: {status} {why}");
    }
    serde_json::from_slice(&body).context("the answer is not a certificate")
}
