//! Downstream and upstream connections: h2c clients, the header limit, the idle
//! timeout, `x-forwarded-client-cert` from the connection's peer, and upstream pools
//! that survive endpoint changes.

mod http_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::config::cluster::{Discovery, Endpoint, LoadAssignment, Locality};
use conformance::config::listener::ForwardClientCert;
use conformance::config::route::Action;
use conformance::data::tls::PeerInfo;
use http::Request;
use http_body_util::{BodyExt, Full};
use http_support::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn one_route(cluster_name: &str) -> Vec<conformance::config::route::VirtualHost> {
    vec![vhost(
        "h",
        &["*"],
        vec![route(
            "/",
            Action::Route(Arc::new(to_cluster(cluster_name))),
        )],
    )]
}

#[tokio::test]
async fn h2c_clients_are_served_with_prior_knowledge() {
    let b = echo("b").await;
    let p = proxy(
        snapshot(one_route("c"), vec![cluster("c", &[b])]),
        hcm(false),
    )
    .await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = Request::get("http://web/h2")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("GET /h2 HTTP/1.1"), "{body}");
        assert!(body.contains("host: web\n"), "{body}");
    }
}

#[tokio::test]
async fn a_header_block_over_the_limit_is_refused() {
    let b = echo("b").await;
    let mut m = hcm(false);
    m.max_request_headers_bytes = 16 * 1024;
    let p = proxy(snapshot(one_route("c"), vec![cluster("c", &[b])]), m).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    let big = "x".repeat(40 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: web\r\nx-big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let b = echo("b").await;
    let mut m = hcm(false);
    m.idle_timeout = Some(Duration::from_millis(200));
    let p = proxy(snapshot(one_route("c"), vec![cluster("c", &[b])]), m).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the proxy closed the idle connection");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

/// The limits with short HTTP connection deadlines.
fn short_limits(first_bytes: u64, idle: u64) -> conformance::data::listen::Limits {
    conformance::data::listen::Limits {
        first_bytes_timeout: Duration::from_millis(first_bytes),
        http_idle_timeout: Duration::from_millis(idle),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let b = echo("b").await;
    let p = proxy(
        snapshot(one_route("c"), vec![cluster("c", &[b])]),
        hcm(false),
    )
    .await;
    p.ctx.listeners.set_limits(short_limits(200, 3_600_000));
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the proxy closed the silent connection");
    assert!(got.is_empty());
}

#[tokio::test]
async fn without_an_idle_timeout_the_default_one_applies() {
    let b = echo("b").await;
    let m = hcm(false);
    assert_eq!(m.idle_timeout, None);
    let p = proxy(snapshot(one_route("c"), vec![cluster("c", &[b])]), m).await;
    p.ctx.listeners.set_limits(short_limits(10_000, 200));
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the proxy closed the idle connection");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

/// A WebSocket (or any non-CONNECT) upgrade is refused with an empty 403, as Envoy
/// does when no upgrade is configured; the backend never sees it.
#[tokio::test]
async fn an_upgrade_request_is_refused() {
    let b = echo("b").await;
    let p = proxy(
        snapshot(one_route("c"), vec![cluster("c", &[b])]),
        hcm(false),
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(p.counter("cluster.c.upstream_rq_total"), 0);
}

#[tokio::test]
async fn xfcc_carries_the_connections_peer_in_envoys_format() {
    let b = echo("b").await;
    let mut m = hcm(false);
    m.forward_client_cert = ForwardClientCert::SanitizeSet { uri: true };
    let peer = PeerInfo {
        uris: vec!["spiffe://cluster.local/ns/a/sa/client".into()],
        sha256_hex: "0a1b".into(),
    };
    let own = "spiffe://cluster.local/ns/b/sa/server".to_string();
    let snap = snapshot(one_route("c"), vec![cluster("c", &[b])]);
    let p = proxy_tls(snap, m, Some(peer), Some(own)).await;
    let req = Request::get("/")
        .header("host", "web")
        .header("x-forwarded-client-cert", "By=forged")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let seen = send(p.addr, req).await;
    assert!(
        seen.body.contains(
            "x-forwarded-client-cert: By=spiffe://cluster.local/ns/b/sa/server;Hash=0a1b;\
             URI=spiffe://cluster.local/ns/a/sa/client\n"
        ),
        "{}",
        seen.body
    );
    assert!(!seen.body.contains("forged"));
    assert!(
        seen.body.contains("x-forwarded-proto: https\n"),
        "{}",
        seen.body
    );
}

fn assignment(addrs: &[std::net::SocketAddr]) -> LoadAssignment {
    LoadAssignment {
        name: "svc".into(),
        localities: vec![Locality {
            weight: 1,
            endpoints: addrs
                .iter()
                .map(|a| Endpoint {
                    address: *a,
                    healthy: true,
                    weight: 1,
                    transport_match: vec![],
                })
                .collect(),
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn endpoint_changes_keep_the_pools_of_endpoints_that_stay() {
    let a = echo("a").await;
    let b = echo("b").await;
    let mut c = cluster("c", &[]);
    c.discovery = Discovery::Eds {
        service_name: "svc".into(),
    };
    let with = |addrs: &[std::net::SocketAddr]| {
        let mut s = snapshot(one_route("c"), vec![c.clone()]);
        let mut eps = BTreeMap::new();
        eps.insert("svc".to_string(), Arc::new(assignment(addrs)));
        s.endpoints = Arc::new(eps);
        s
    };
    let p = proxy(with(&[a, b]), hcm(false)).await;
    for _ in 0..4 {
        assert_eq!(get(p.addr, "web", "/").await.status, 200);
    }
    let cx = |addr| p.counter(&format!("cluster.c.endpoint.{addr}.cx_total"));
    assert_eq!(
        (cx(a), cx(b)),
        (1, 1),
        "two requests each over one kept-alive connection"
    );
    p.ctx.live.publish(with(&[a]));
    for _ in 0..3 {
        let seen = get(p.addr, "web", "/").await;
        assert_eq!(seen.header("x-backend"), Some("a"));
    }
    assert_eq!(cx(a), 1, "a's pooled connection survived the change");
    let b_active = p
        .ctx
        .stats
        .gauge(&format!("cluster.c.endpoint.{b}.cx_active"));
    assert!(
        eventually(|| b_active.get() == 0).await,
        "the removed endpoint's idle connection was closed"
    );
    let a_active = p
        .ctx
        .stats
        .gauge(&format!("cluster.c.endpoint.{a}.cx_active"));
    assert_eq!(a_active.get(), 1);
    p.ctx.live.publish(Default::default());
    assert_eq!(get(p.addr, "web", "/").await.status, 404);
    p.ctx.live.publish(with(&[]));
    let seen = get(p.addr, "web", "/").await;
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (503, "no healthy upstream")
    );
}
