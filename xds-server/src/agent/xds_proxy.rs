//! The agent's xDS bridge (`xds-server agent --grpc --xds-proxy`), for gRPC apps that
//! cannot authenticate to the control plane themselves: grpc-js has no gRFC A65 `tls`
//! channel credentials, only `insecure` and `google_default`. The agent serves
//! plain-text xDS on a Unix socket in its private directory ([`socket`]: mode 0600 in a
//! 0700 directory the agent made and checked, [`crate::agent::sockets`]: only the
//! agent's own user reaches it, so the app must run as that user) and forwards each
//! connection to the control plane's xDS port over mutual TLS with the pod's workload
//! certificate, as Istio's pilot-agent does for its proxyless gRPC apps. The stream's
//! identity at the control plane is that certificate: the pod's own.
//!
//! The forwarding is byte for byte (the app's HTTP/2 carried whole inside TLS), not a
//! gRPC proxy: nothing is parsed or re-framed beyond checking the 24-byte HTTP/2 client
//! preface, so the control plane's own limits (streams, frame sizes, the memory budget
//! of the identity) apply to the app's connection unchanged, the agent holds two fixed
//! buffers per connection whatever the size of a response, and there is no second
//! HTTP/2 implementation to keep in step with the first.
//!
//! Bounds ([`Limits`]): at most [`MAX_CONNECTIONS`] local connections at once; when
//! full, a new one evicts the oldest that has not sent its preface yet (none: the new
//! one is closed), so connections that never speak cannot lock the app out. The
//! preface must arrive within [`PREFACE_TIMEOUT`] or the connection is closed before
//! the control plane is dialled; [`CONNECT_TIMEOUT`] for TCP plus the TLS handshake;
//! once either direction ends, the other gets [`LINGER`] to finish; TCP keepalive finds
//! a vanished control plane. [`BUFFER_BYTES`] per direction. Refusals and failures are
//! logged at most once a second, with counts ([`crate::log_limit::RateLimited`]).
//! Each connection reads the credential files anew, so a renewal reaches the next
//! connection; the server is checked against the trust bundle, by its address and by
//! the control plane's SPIFFE ID.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::agent::files;
use crate::log_limit::RateLimited;

/// Most local connections forwarded at once (an app holds one xDS channel; a few apps
/// may share a pod).
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// Bytes buffered per direction of one connection.
pub(crate) const BUFFER_BYTES: usize = 16 << 10;
/// Longest the TCP connect plus the TLS handshake to the control plane may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a new local connection may take to send the HTTP/2 client preface.
pub(crate) const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// Once one direction has ended, how long the other may go on.
pub(crate) const LINGER: Duration = Duration::from_secs(30);
/// TCP keepalive on the control plane connection: idle time, probe interval, probes.
const KEEPALIVE: (Duration, Duration, u32) = (Duration::from_secs(30), Duration::from_secs(10), 3);
/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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

/// The bridge's bounds (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Local connections at once.
    pub connections: usize,
    /// For the HTTP/2 client preface.
    pub preface: Duration,
    /// For the other direction once one has ended.
    pub linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: MAX_CONNECTIONS,
            preface: PREFACE_TIMEOUT,
            linger: LINGER,
        }
    }
}

/// The bridge's socket for the credential directory `dir`, in the agent's private
/// directory.
pub fn socket(dir: &Path) -> PathBuf {
    dir.join(crate::agent::sockets::PRIVATE_DIR)
        .join(files::XDS_SOCKET)
}

/// Binds the bridge's socket for `cert_dir` ([`socket`]; a stale one is replaced,
/// anything else refused; this user only: [`crate::agent::sockets`]).
pub fn bind(cert_dir: &Path) -> anyhow::Result<UnixListener> {
    let private = crate::agent::sockets::private_dir(cert_dir)?;
    crate::agent::sockets::bind(&private, &socket(cert_dir), "xDS bridge")
}

/// One open local connection.
struct Slot {
    task: tokio::task::AbortHandle,
    /// It sent its preface (the control plane is dialled or being dialled).
    forwarding: bool,
}

/// What the connections of one bridge share: the open ones (oldest first), counts for
/// the logs, and the log limiters.
#[derive(Default)]
struct Shared {
    slots: Mutex<(u64, BTreeMap<u64, Slot>)>,
    refused: AtomicU64,
    evicted: AtomicU64,
    failed: AtomicU64,
    admit_log: RateLimited,
    failure_log: RateLimited,
}

/// Frees a connection's slot when its task ends or is aborted.
struct SlotGuard {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.shared.slots.lock().1.remove(&self.id);
    }
}

impl Shared {
    /// Makes room for one more connection under `limit`: false when every slot is
    /// forwarding (the new one is refused); evicts the oldest that is not.
    fn make_room(&self, limit: usize) -> bool {
        let mut slots = self.slots.lock();
        if slots.1.len() < limit {
            return true;
        }
        let idle = slots
            .1
            .iter()
            .find(|(_, s)| !s.forwarding)
            .map(|(id, _)| *id);
        let victim = idle.and_then(|id| slots.1.remove(&id));
        // Unlocked before aborting: the aborted task's guard takes the lock when dropped.
        drop(slots);
        let Some(victim) = victim else {
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(suppressed) = self.admit_log.allow() {
                tracing::warn!(
                    limit,
                    refused_total = refused,
                    suppressed,
                    "xDS bridge: every connection slot is forwarding; closing the new connection"
                );
            }
            return false;
        };
        victim.task.abort();
        let evicted = self.evicted.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(suppressed) = self.admit_log.allow() {
            tracing::warn!(
                limit,
                evicted_total = evicted,
                suppressed,
                "xDS bridge: connections full; closed the oldest one that had not sent its HTTP/2 preface"
            );
        }
        true
    }

    fn mark_forwarding(&self, id: u64) {
        if let Some(s) = self.slots.lock().1.get_mut(&id) {
            s.forwarding = true;
        }
    }

    fn failed(&self, e: &anyhow::Error) {
        let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(suppressed) = self.failure_log.allow() {
            tracing::warn!(
                error = %format!("{e:#}"),
                failed_total = failed,
                suppressed,
                "xDS bridge: a connection failed"
            );
        }
    }
}

/// Forwards every connection on `listener` to `upstream` within `limits`, until the
/// process ends.
pub async fn serve(listener: UnixListener, upstream: Arc<Upstream>, limits: Limits) {
    let shared = Arc::new(Shared::default());
    loop {
        let local = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                if let Some(suppressed) = shared.failure_log.allow() {
                    tracing::warn!(error = %e, suppressed, "xDS bridge: accepting a connection failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !shared.make_room(limits.connections) {
            drop(local);
            continue;
        }
        let mut slots = shared.slots.lock();
        let id = slots.0;
        slots.0 += 1;
        let guard = SlotGuard {
            id,
            shared: shared.clone(),
        };
        let task = tokio::spawn(connection(local, guard, upstream.clone(), limits));
        slots.1.insert(
            id,
            Slot {
                task: task.abort_handle(),
                forwarding: false,
            },
        );
    }
}

/// One local connection, holding its slot until it ends.
async fn connection(local: UnixStream, slot: SlotGuard, up: Arc<Upstream>, limits: Limits) {
    let result = async {
        let mut local = local;
        let mut preface = [0u8; PREFACE.len()];
        tokio::time::timeout(limits.preface, local.read_exact(&mut preface))
            .await
            .map_err(|_| {
                anyhow::anyhow!("the app sent no HTTP/2 preface within {:?}", limits.preface)
            })?
            .context("reading the HTTP/2 preface")?;
        anyhow::ensure!(
            &preface == PREFACE,
            "the app's first bytes are not the HTTP/2 client preface"
        );
        slot.shared.mark_forwarding(slot.id);
        forward(local, &up, limits.linger).await
    }
    .await;
    if let Err(e) = result {
        slot.shared.failed(&e);
    }
}

/// One connection after its preface: TLS to the control plane with the current
/// certificate, the preface, then bytes both ways until one side ends and the other
/// has ended too or had `linger` to.
async fn forward(local: UnixStream, up: &Upstream, linger: Duration) -> anyhow::Result<()> {
    let mut tls = connect(up).await?;
    tls.write_all(PREFACE).await.context("forwarding")?;
    let (lr, lw) = local.into_split();
    let (ur, uw) = tokio::io::split(tls);
    let to_up = pipe(lr, uw);
    let to_local = pipe(ur, lw);
    tokio::pin!(to_up, to_local);
    let (to_up, to_local) = tokio::select! {
        r = &mut to_up => (Some(r), tokio::time::timeout(linger, &mut to_local).await.ok()),
        r = &mut to_local => (tokio::time::timeout(linger, &mut to_up).await.ok(), Some(r)),
    };
    let to_up = to_up
        .transpose()
        .context("forwarding to the control plane")?;
    let to_local = to_local.transpose().context("forwarding to the app")?;
    tracing::debug!(
        ?to_up,
        ?to_local,
        "xDS bridge: connection closed (None: cut off after the linger)"
    );
    Ok(())
}

/// Copies `r` to `w` through a [`BUFFER_BYTES`] buffer, then shuts `w` down.
async fn pipe<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: R, mut w: W) -> std::io::Result<u64> {
    let mut r = tokio::io::BufReader::with_capacity(BUFFER_BYTES, r);
    let n = tokio::io::copy_buf(&mut r, &mut w).await?;
    w.shutdown().await?;
    Ok(n)
}

/// TCP (with keepalive) and TLS to the control plane, with the certificate installed
/// now, within [`CONNECT_TIMEOUT`].
async fn connect(
    up: &Upstream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = client_config(up).await?;
    let name = ServerName::try_from(up.host.clone())
        .with_context(|| format!("{:?} is not a host name or address", up.host))?;
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect((up.host.as_str(), up.port))
            .await
            .with_context(|| format!("connecting to {}:{}", up.host, up.port))?;
        tcp.set_nodelay(true)?;
        let (idle, interval, probes) = KEEPALIVE;
        socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(
                &socket2::TcpKeepalive::new()
                    .with_time(idle)
                    .with_interval(interval)
                    .with_retries(probes),
            )
            .context("TCP keepalive")?;
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
    })?
}

/// A TLS client configuration from the files installed now: the certificate and key
/// (read until they match: a renewal may swap them between two reads), the server
/// checked against the bundle and by [`Upstream::server_id`], ALPN h2.
async fn client_config(up: &Upstream) -> anyhow::Result<rustls::ClientConfig> {
    let mut last = None;
    for _ in 0..3 {
        let (chain, key, bundle) = files::read_settled(&up.dir)
            .await
            .with_context(|| format!("no credentials in {} yet", up.dir.display()))?;
        match ca::key_belongs_to(&chain, &key) {
            Ok(()) => return build_config(&chain, &key, &bundle, &up.server_id),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
