//! TLS termination on filter chains: mutual TLS with Rudder's CA, the SPIFFE IDs of
//! both sides in `x-forwarded-client-cert` of an HTTP chain, refusals (no certificate, another CA, a SAN that does
//! not match), rotation without dropping connections, handshake and inspection
//! deadlines, garbage. The client side is the proxy's own `TlsCache::client_config`.

mod net_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use conformance::config::Snapshot;
use conformance::config::listener::{ForwardClientCert, Listener, StringMatch, Terminal};
use conformance::config::secret::Secret;
use conformance::data::listen::{Limits, stat_prefix};
use conformance::data::tls::TlsCache;
use net_support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn tls_listener(addr: SocketAddr, require: bool, sans: Vec<StringMatch>) -> Listener {
    let mut l = tcp_listener("mtls", addr);
    l.chains[0].tls = Some(downstream_tls(require, sans));
    l
}

/// The first line the greeting upstream writes, or an error when the proxy refused.
async fn first_line(s: &mut TlsStream<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(s).read_line(&mut line),
    )
    .await
    .map_err(|_| std::io::Error::other("no answer"))??;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line)
}

/// Whether the proxy served this client: a handshake, then the greeter's line.
async fn served(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    match dial(addr, config).await {
        Ok(mut s) => first_line(&mut s).await.is_ok(),
        Err(_) => false,
    }
}

/// A proxy with `tls_listener` at `addr`, its `tcp_proxy` going to a greeter of `hello`.
async fn mesh_proxy(pki: &Pki, addr: SocketAddr, require: bool, sans: Vec<StringMatch>) -> Proxy {
    let proxy = Proxy::start();
    proxy.route_tcp_to(greeter("hello").await);
    let server = pki.issue("shop", "web");
    let bundle = pki.bundle();
    proxy.update(|s| s.secrets = Arc::new(secrets(server, bundle)));
    proxy.set_listeners(vec![tls_listener(addr, require, sans)]);
    proxy
}

#[tokio::test]
async fn a_client_of_the_trust_domain_is_accepted_and_gets_the_default_certificate() {
    let pki = Pki::new("cluster.local");
    let addr = free_addr();
    let sans = vec![StringMatch::Prefix("spiffe://cluster.local/".into(), false)];
    let proxy = mesh_proxy(&pki, addr, true, sans).await;
    let mut s = dial(
        addr,
        client(Some(pki.issue("shop", "client")), pki.bundle()),
    )
    .await
    .unwrap();
    assert_eq!(first_line(&mut s).await.unwrap(), "hello\n");
    let leaf = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(
        rustls::pki_types::CertificateDer::from(leaf),
        rustls::pki_types::CertificateDer::from(pki_leaf(&proxy)),
        "the server presented its `default` certificate"
    );
    assert_eq!(roundtrip(&mut s, b"data").await.unwrap(), b"data");
    assert!(proxy.counter(&format!("{}.ssl.handshake", stat_prefix(addr))) >= 1);
    assert!(proxy.counter("ssl.handshake") >= 1);
    proxy.stop().await;
}

fn pki_leaf(proxy: &Proxy) -> Vec<u8> {
    match &**proxy.ctx.live.load().secret("default").expect("test setup") {
        Secret::Certificate(c) => c.chain[0].clone(),
        Secret::Bundle(_) => unreachable!(),
    }
}

#[tokio::test]
async fn refused_without_a_certificate_from_another_ca_and_with_a_san_that_does_not_match() {
    let pki = Pki::new("cluster.local");
    let addr = free_addr();
    let sans = vec![StringMatch::Exact(pki.spiffe("shop", "allowed"), false)];
    let proxy = mesh_proxy(&pki, addr, true, sans).await;
    assert!(
        served(
            addr,
            client(Some(pki.issue("shop", "allowed")), pki.bundle())
        )
        .await
    );
    assert!(
        !served(addr, client(None, pki.bundle())).await,
        "no client certificate under require_client_certificate"
    );
    let other = Pki::new("cluster.local");
    assert!(
        !served(
            addr,
            client(Some(other.issue("shop", "allowed")), pki.bundle())
        )
        .await,
        "a certificate of another CA"
    );
    assert!(
        !served(addr, client(Some(pki.issue("shop", "other")), pki.bundle())).await,
        "a SPIFFE ID the SAN matchers do not allow"
    );
    assert!(proxy.counter(&format!("{}.ssl.connection_error", stat_prefix(addr))) >= 3);
    for stat in [
        "fail_verify_no_cert",
        "fail_verify_error",
        "fail_verify_san",
    ] {
        assert_eq!(
            proxy.counter(&format!("{}.ssl.{stat}", stat_prefix(addr))),
            1,
            "{stat}"
        );
    }
    // And a server from another CA is refused by the client side.
    assert!(
        !served(
            addr,
            client(Some(pki.issue("shop", "allowed")), other.bundle())
        )
        .await
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_optional_client_certificate_may_be_absent() {
    let pki = Pki::new("cluster.local");
    let addr = free_addr();
    let proxy = mesh_proxy(&pki, addr, false, vec![]).await;
    let mut s = dial(addr, client(None, pki.bundle())).await.unwrap();
    assert_eq!(first_line(&mut s).await.unwrap(), "hello\n");
    proxy.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_while_open_ones_keep_working() {
    let pki = Pki::new("cluster.local");
    let addr = free_addr();
    let proxy = mesh_proxy(&pki, addr, true, vec![]).await;
    let cfg = client(Some(pki.issue("shop", "client")), pki.bundle());
    let mut old = dial(addr, cfg.clone()).await.unwrap();
    first_line(&mut old).await.unwrap();
    let old_leaf = old.get_ref().1.peer_certificates().unwrap()[0].to_vec();

    let rotated = pki.issue("shop", "web");
    let rotated_leaf = rotated.chain[0].clone();
    proxy.update(|s| {
        let mut m = (*s.secrets).clone();
        m.insert(
            "default".into(),
            Arc::new(Secret::Certificate(Arc::new(rotated))),
        );
        s.secrets = Arc::new(m);
    });
    let mut new = dial(addr, cfg).await.unwrap();
    first_line(&mut new).await.unwrap();
    let new_leaf = new.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(
        new_leaf, rotated_leaf,
        "a new connection gets the new certificate"
    );
    assert_ne!(new_leaf, old_leaf);
    assert_eq!(roundtrip(&mut old, b"old").await.unwrap(), b"old");
    assert_eq!(roundtrip(&mut new, b"new").await.unwrap(), b"new");
    proxy.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_or_inspection_is_closed_at_its_deadline_and_garbage_at_once() {
    let pki = Pki::new("cluster.local");
    let addr = free_addr();
    let proxy = mesh_proxy(&pki, addr, true, vec![]).await;
    proxy.ctx.listeners.set_limits(Limits {
        handshake_timeout: Duration::from_millis(300),
        inspect_timeout: Duration::from_millis(300),
        ..Limits::default()
    });
    let mut silent = connect_when_up(addr).await;
    let mut garbage = connect_when_up(addr).await;
    garbage.write_all(&[0x42; 512]).await.unwrap();
    assert_closed(&mut garbage).await;
    assert_closed(&mut silent).await;
    let cfg = client(Some(pki.issue("shop", "client")), pki.bundle());
    assert!(served(addr, cfg.clone()).await, "others are served");

    // With the TLS inspector, half a ClientHello waits for the inspection deadline.
    let mut inspected = tls_listener(addr, true, vec![]);
    inspected.tls_inspector = true;
    inspected.chains[0].matcher.transport_protocol = Some("tls".into());
    proxy.set_listeners(vec![inspected]);
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.ctx.live.load().listeners["mtls"].tls_inspector && !served(addr, cfg.clone()).await
    {
        assert!(tokio::time::Instant::now() < until);
    }
    let mut half = connect_when_up(addr).await;
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    assert_closed(&mut half).await;
    assert!(proxy.counter(&format!("{}.downstream_pre_cx_timeout", stat_prefix(addr))) >= 1);
    assert!(served(addr, cfg).await);
    proxy.stop().await;
}

#[tokio::test]
async fn the_cache_reuses_a_config_until_a_secret_or_setting_changes() {
    let pki = Pki::new("cluster.local");
    let cache = TlsCache::default();
    let mut snap = Snapshot {
        secrets: Arc::new(secrets(pki.issue("shop", "web"), pki.bundle())),
        ..Default::default()
    };
    let tls = downstream_tls(true, vec![]);
    let a = cache.server_config(&snap, &tls).unwrap();
    let b = cache.server_config(&snap.clone(), &tls).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "same secrets and settings: one config");
    let mut other = tls.clone();
    other.alpn = vec!["h2".into()];
    let c = cache.server_config(&snap, &other).unwrap();
    assert!(!Arc::ptr_eq(&a, &c), "another setting: another config");
    assert_eq!(c.alpn_protocols, vec![b"h2".to_vec()]);
    snap.secrets = Arc::new(secrets(pki.issue("shop", "web"), pki.bundle()));
    let d = cache.server_config(&snap, &tls).unwrap();
    assert!(!Arc::ptr_eq(&a, &d), "a rotated secret: a new config");
    snap.secrets = Arc::new(Default::default());
    assert!(matches!(
        cache.server_config(&snap, &tls),
        Err(conformance::data::tls::TlsError::MissingSecret(n)) if n == "default"
    ));
}

#[tokio::test]
async fn a_new_tls_listener_is_bound_once_its_secrets_arrive() {
    let pki = Pki::new("cluster.local");
    let proxy = Proxy::start();
    proxy.route_tcp_to(greeter("hello").await);
    let addr = free_addr();
    proxy.set_listeners(vec![tls_listener(addr, true, vec![])]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "bound before its secrets"
    );
    assert_eq!(
        proxy
            .ctx
            .stats
            .gauge("listener_manager.total_listeners_active")
            .get(),
        0
    );
    let (cert, bundle) = (pki.issue("shop", "web"), pki.bundle());
    proxy.update(|s| s.secrets = Arc::new(secrets(cert, bundle)));
    let cfg = client(Some(pki.issue("shop", "client")), pki.bundle());
    let mut s = dial(addr, cfg).await.unwrap();
    first_line(&mut s).await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn the_inspector_sends_tls_and_plain_text_to_their_chains_and_alpn_is_negotiated() {
    let pki = Pki::new("cluster.local");
    let addr = free_addr();
    let proxy = mesh_proxy(&pki, addr, true, vec![]).await;
    let mut l = tls_listener(addr, true, vec![]);
    l.tls_inspector = true;
    l.chains[0].matcher.transport_protocol = Some("tls".into());
    if let Some(t) = l.chains[0].tls.as_mut() {
        t.alpn = vec!["h2".into(), "http/1.1".into()];
    }
    proxy.add_cluster(static_cluster("cluster-plain", greeter("plain").await));
    let mut plain = tcp_chain("plain", None);
    plain.matcher.transport_protocol = Some("raw_buffer".into());
    l.chains.push(plain);
    proxy.set_listeners(vec![l]);

    let mut cfg = (*client(Some(pki.issue("shop", "client")), pki.bundle())).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
    let mut s = dial(addr, Arc::new(cfg)).await.unwrap();
    assert_eq!(first_line(&mut s).await.unwrap(), "hello\n");
    assert_eq!(
        s.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the server's preference"
    );

    let mut p = connect_when_up(addr).await;
    p.write_all(b"hello").await.unwrap();
    let mut line = String::new();
    BufReader::new(&mut p).read_line(&mut line).await.unwrap();
    assert_eq!(line, "plain\n", "plain text took the plain chain");
    proxy.stop().await;
}

#[tokio::test]
async fn the_verified_peer_and_the_own_spiffe_id_reach_the_http_terminal() {
    let pki = Pki::new("cluster.local");
    let addr = free_addr();
    let proxy = Proxy::start();
    proxy.add_cluster(static_cluster("web", head_echo().await));
    let (cert, bundle) = (pki.issue("shop", "web"), pki.bundle());
    proxy.update(|s| s.secrets = Arc::new(secrets(cert, bundle)));
    let mut l = tls_listener(addr, true, vec![]);
    l.chains[0].terminal = Terminal::Http(Arc::new(http_manager(
        "web",
        ForwardClientCert::SanitizeSet { uri: true },
    )));
    proxy.set_listeners(vec![l]);
    let cfg = client(Some(pki.issue("shop", "client")), pki.bundle());
    let mut s = dial(addr, cfg).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("the reply ends")
        .unwrap();
    let got = String::from_utf8_lossy(&got).to_lowercase();
    assert!(got.starts_with("http/1.1 200"), "{got}");
    let xfcc = got
        .lines()
        .find_map(|l| l.strip_prefix("x-forwarded-client-cert: "))
        .unwrap_or_else(|| panic!("no x-forwarded-client-cert in {got}"))
        .trim_end();
    let by = format!("by={};hash=", pki.spiffe("shop", "web"));
    let uri = format!(";uri={}", pki.spiffe("shop", "client"));
    let hash = xfcc
        .strip_prefix(&by)
        .and_then(|r| r.strip_suffix(&uri))
        .unwrap_or_else(|| panic!("{xfcc}"));
    assert_eq!(hash.len(), 64, "{xfcc}");
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{xfcc}");
    proxy.stop().await;
}
