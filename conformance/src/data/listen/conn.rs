//! One accepted connection: the listener version it was accepted under, its original
//! destination, TLS inspection, the filter chain, TLS termination, the chain's RBAC
//! filters, then the terminal, which the chain's drain closes at its deadline.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::Snapshot;
use crate::config::listener::{FilterChain, NetworkFilter, Terminal};
use crate::config::rbac::Subject;
use crate::data::ctx::{ConnInfo, Ctx};
use crate::data::rbac;
use crate::data::tls::{PeerInfo, TlsCache};
use crate::data::upstream::io::UpstreamIo;

use super::chain::{self, ConnFacts};
use super::inspect::{self, Prefixed};
use super::shared::stat_prefix;
use super::version::Version;
use super::{origdst, tcp};

/// Serves one connection accepted by the listener `name` under `version`.
pub(crate) async fn handle(
    ctx: Arc<Ctx>,
    name: Arc<str>,
    version: Arc<Version>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let snapshot = ctx.live.load();
    let listener = &version.listener;
    let bound = listener.address;
    let prefix = stat_prefix(bound);
    let local = stream.local_addr().unwrap_or(bound);
    // As Envoy: without a NAT entry the local address stays the destination, and is
    // not "restored" (an original-destination cluster then has no host for it).
    let restored = if listener.original_dst {
        origdst::original_dst(&stream, local).ok()
    } else {
        None
    };
    let destination = restored.unwrap_or(local);
    let _ = stream.set_nodelay(true);
    let limits = ctx.listeners.limits();
    let mut facts = ConnFacts {
        destination,
        source: peer,
        // Envoy's default when no listener filter detected a transport.
        transport: Some("raw_buffer"),
        alpn: Vec::new(),
    };
    let mut read = Vec::new();
    if listener.tls_inspector {
        match timeout(limits.inspect_timeout, inspect::inspect(&mut stream)).await {
            Ok(Ok((v, buf))) => {
                facts.transport = Some(v.transport);
                facts.alpn = v.alpn;
                read = buf;
            }
            Ok(Err(_)) => return,
            Err(_) => {
                ctx.stats
                    .counter(&format!("{prefix}.downstream_pre_cx_timeout"))
                    .inc();
                return;
            }
        }
    }
    let Some(chain) = chain::select(listener, &facts) else {
        ctx.stats
            .counter(&format!("{prefix}.no_filter_chain_match"))
            .inc();
        return;
    };
    let io = Prefixed::new(read, stream);
    let Some((io, tls_peer, own_uri)) = terminate_tls(&ctx, &snapshot, chain, io, &prefix).await
    else {
        return;
    };
    let conn = ConnInfo {
        peer,
        destination,
        destination_restored: restored.is_some(),
        tls: chain.tls.is_some(),
        tls_peer,
        own_uri,
        listener: name,
        drain: version.drain_of(chain),
    };
    if !network_filters_allow(&ctx, chain, &conn) {
        return; // dropping `io` closes the connection
    }
    let drain = conn.drain.clone();
    let terminal = async {
        match &chain.terminal {
            Terminal::Http(hcm) => {
                crate::data::http::serve(ctx.clone(), io, conn, hcm.clone()).await;
            }
            Terminal::Tcp(proxy) => {
                let up = tcp::Upstream {
                    snapshot: snapshot.clone(),
                    proxy,
                };
                tcp::serve(ctx.clone(), up, io, conn).await;
            }
        }
    };
    // The end of the drain time closes what is left (dropping the terminal drops both
    // sides); until then an HTTP connection winds down by itself.
    tokio::select! {
        () = terminal => {}
        () = drain.closed() => {
            tracing::debug!(listener = %version.listener.name, chain = %chain.name, "drained: closed");
        }
    }
}

/// Whether the chain's network filters before the terminal let the connection through:
/// each RBAC filter decides it once, at accept (after TLS, before the terminal connects
/// anywhere), and the first that denies closes it.
fn network_filters_allow(ctx: &Ctx, chain: &FilterChain, conn: &ConnInfo) -> bool {
    chain.filters.iter().all(|f| match f {
        NetworkFilter::Rbac(r) => {
            let subject = Subject {
                request: None,
                destination_port: conn.destination.port(),
                peer: rbac::peer(conn),
            };
            let allowed = rbac::check(
                &ctx.stats,
                &rbac::stat_prefix(&r.stat_prefix),
                &r.rbac,
                &subject,
            );
            if !allowed {
                tracing::debug!(listener = %conn.listener, chain = %chain.name, "RBAC: connection denied");
            }
            allowed
        }
    })
}

/// The chain's TLS, if any, terminated within the handshake deadline: the stream, the
/// verified peer and this proxy's own URI. None when the handshake failed.
async fn terminate_tls(
    ctx: &Ctx,
    snapshot: &Snapshot,
    chain: &FilterChain,
    io: Prefixed<TcpStream>,
    prefix: &str,
) -> Option<(UpstreamIo, Option<PeerInfo>, Option<String>)> {
    let Some(tls) = &chain.tls else {
        return Some((Box::pin(io), None, None));
    };
    let fail = |why: &str| {
        ctx.stats
            .counter(&format!("{prefix}.ssl.connection_error"))
            .inc();
        tracing::debug!(chain = %chain.name, "TLS: {why}");
    };
    let verify_failed = |e: &std::io::Error| {
        if let Some(stat) = verify_stat(e) {
            ctx.stats.counter(&format!("{prefix}.ssl.{stat}")).inc();
        }
    };
    let config = match ctx.tls.server_config(snapshot, tls) {
        Ok(c) => c,
        Err(e) => {
            fail(&e.to_string());
            return None;
        }
    };
    let deadline = ctx.listeners.limits().handshake_timeout;
    let accepted = timeout(deadline, tokio_rustls::TlsAcceptor::from(config).accept(io)).await;
    let stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            verify_failed(&e);
            fail(&e.to_string());
            return None;
        }
        Err(_) => {
            fail("handshake deadline passed");
            return None;
        }
    };
    ctx.stats.counter(&format!("{prefix}.ssl.handshake")).inc();
    ctx.stats.counter("ssl.handshake").inc();
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| PeerInfo::from_leaf(leaf.as_ref()));
    let own = TlsCache::own_uri(snapshot, tls);
    Some((Box::pin(stream), peer, own))
}

/// Envoy's name for why a peer certificate was refused: `fail_verify_no_cert`,
/// `fail_verify_san`, `fail_verify_error`; none for other handshake failures.
fn verify_stat(e: &std::io::Error) -> Option<&'static str> {
    use rustls::{CertificateError, Error};
    match e.get_ref()?.downcast_ref::<Error>()? {
        Error::NoCertificatesPresented => Some("fail_verify_no_cert"),
        Error::InvalidCertificate(CertificateError::NotValidForName) => Some("fail_verify_san"),
        Error::InvalidCertificate(_) => Some("fail_verify_error"),
        _ => None,
    }
}
