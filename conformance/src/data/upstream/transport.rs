//! One connection to an endpoint: the transport its metadata selects
//! (`transport_socket_matches`, else the cluster's), TCP within the connect timeout
//! (from the cluster's source address of the endpoint's family, if it names one),
//! then TLS through the cluster's client configuration. Connections are counted
//! (`upstream_cx_total`, `upstream_cx_active`, per endpoint `cx_total`, `cx_active`,
//! except for original-destination clusters).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use super::io::{UpstreamError, UpstreamIo};
use crate::config::Snapshot;
use crate::config::cluster::{Cluster, Discovery, Transport};
use crate::data::ctx::Ctx;
use crate::stats::Gauge;

/// Which transport of a cluster: 0 the cluster's own, `i + 1` its match `i`.
pub(crate) fn transport_index(cluster: &Cluster, metadata: &[(String, String)]) -> usize {
    cluster
        .transport_matches
        .iter()
        .position(|m| m.when.iter().all(|kv| metadata.contains(kv)))
        .map_or(0, |i| i + 1)
}

/// The transport at `index` (see [`transport_index`]).
pub(crate) fn transport(cluster: &Cluster, index: usize) -> &Transport {
    index
        .checked_sub(1)
        .and_then(|i| cluster.transport_matches.get(i))
        .map_or(&cluster.transport, |m| &m.transport)
}

/// Connects to `addr` over the transport at `index` within the cluster's connect
/// timeout (TLS: the handshake too, with the ALPN its client configuration offers).
/// Counts the connection.
pub(crate) async fn dial(
    ctx: &Ctx,
    snapshot: &Snapshot,
    cluster: &Cluster,
    addr: SocketAddr,
    index: usize,
) -> Result<UpstreamIo, UpstreamError> {
    let failed = |reason: String| UpstreamError::ConnectFailure { addr, reason };
    let work = async {
        let tcp = tcp_connect(addr, cluster.source_for(addr.ip()))
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Latency over batching for request/response traffic, as Envoy sets it.
        let _ = tcp.set_nodelay(true);
        match transport(cluster, index) {
            Transport::Plain => Ok(Box::pin(tcp) as UpstreamIo),
            Transport::Tls(tls) => {
                let config = ctx
                    .tls
                    .client_config(snapshot, tls)
                    .map_err(|e| failed(format!("tls: {e}")))?;
                let name = match &tls.sni {
                    Some(sni) => rustls::pki_types::ServerName::try_from(sni.clone())
                        .map_err(|e| failed(format!("sni {sni}: {e}")))?,
                    None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
                };
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(&config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| failed(format!("tls handshake: {e}")))?;
                ctx.stats
                    .counter(&crate::data::tls::cluster_handshake_stat(&cluster.name))
                    .inc();
                Ok(Box::pin(stream) as UpstreamIo)
            }
        }
    };
    let io = tokio::time::timeout(cluster.connect_timeout, work)
        .await
        .map_err(|_| failed("connect timeout".into()))??;
    let c = format!("cluster.{}", cluster.name);
    ctx.stats.counter(&format!("{c}.upstream_cx_total")).inc();
    let mut active = vec![ctx.stats.gauge(&format!("{c}.upstream_cx_active"))];
    if let Some(e) = endpoint_prefix(cluster, addr) {
        ctx.stats.counter(&format!("{e}.cx_total")).inc();
        active.push(ctx.stats.gauge(&format!("{e}.cx_active")));
    }
    for g in &active {
        g.add(1);
    }
    Ok(Box::pin(Counted { io, active }))
}

/// A TCP connection to `addr`, from `source` (any port) when given.
async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// The stat prefix of `addr`'s per-endpoint stats, none for an original-destination
/// cluster: its addresses come from requests, so a client could otherwise grow the
/// stats without bound (Envoy's admin lists no hosts for such clusters either).
pub(crate) fn endpoint_prefix(cluster: &Cluster, addr: SocketAddr) -> Option<String> {
    (!matches!(cluster.discovery, Discovery::OriginalDst { .. }))
        .then(|| format!("cluster.{}.endpoint.{addr}", cluster.name))
}

/// A connection counted in the active gauges until it is dropped.
struct Counted {
    io: UpstreamIo,
    active: Vec<Arc<Gauge>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        for g in &self.active {
            g.add(-1);
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}

/// Whether the transport at `index` is TLS.
pub(crate) fn is_tls(cluster: &Cluster, index: usize) -> bool {
    matches!(transport(cluster, index), Transport::Tls(_))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::cluster::UpstreamTls;
    use crate::config::cluster::{Discovery, LbPolicy, TransportMatch, UpstreamProtocol};
    use crate::config::listener::{SecretRef, SecretSource, Validation};

    #[tokio::test]
    async fn a_source_address_is_bound_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        for (source, seen) in [
            (Some(IpAddr::from([127, 0, 0, 6])), [127, 0, 0, 6]),
            (None, [127, 0, 0, 1]),
        ] {
            let _c = tcp_connect(addr, source).await.expect("connect");
            let (_, peer) = listener.accept().await.expect("accept");
            assert_eq!(peer.ip(), IpAddr::from(seen));
        }
    }

    #[test]
    fn endpoint_metadata_selects_the_first_matching_transport() {
        let tls = Transport::Tls(UpstreamTls {
            certificate: None,
            validation: Validation {
                trust: SecretRef {
                    name: "ROOTCA".into(),
                    source: SecretSource::Ads,
                },
                uri_sans: vec![],
            },
            sni: None,
            alpn: vec![],
        });
        let c = Cluster {
            name: "c".into(),
            discovery: Discovery::Static(Default::default()),
            lb: LbPolicy::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            transport: Transport::Plain,
            transport_matches: vec![TransportMatch {
                name: "mtls".into(),
                when: vec![("tlsMode".into(), "istio".into())],
                transport: tls,
            }],
            protocol: UpstreamProtocol::Http1,
            retry_budget: None,
            max_requests_per_connection: None,
            source: Vec::new(),
        };
        let meta = vec![("tlsMode".to_string(), "istio".to_string())];
        assert_eq!(transport_index(&c, &meta), 1);
        assert!(is_tls(&c, 1));
        assert_eq!(transport_index(&c, &[]), 0);
        assert!(!is_tls(&c, 0));
        assert!(!is_tls(&c, 7));
    }
}
