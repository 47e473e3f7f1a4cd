//! RBAC on real sockets with real mutual TLS: the HTTP filter lets an allowed SPIFFE ID
//! through and answers another 403 `RBAC: access denied` (a gRPC request
//! `grpc-status: 7`), plain text on a PERMISSIVE-style listener is not
//! `authenticated`, shadow rules count without denying; the network filter closes a
//! denied connection before connecting upstream and passes an allowed one. The
//! counters move as Envoy's.

mod net_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use conformance::config::listener::{
    ChainMatch, FilterChain, ForwardClientCert, HttpFilter, Listener, NetworkFilter, Terminal,
};
use conformance::config::matcher::StringMatch;
use conformance::config::rbac::{Action, NetworkRbac, Permission, Policy, Principal, Rbac, Rules};
use conformance::config::route::HeaderMatch;
use conformance::config::route::HeaderValueMatch;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use net_support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TD: &str = "cluster.local";

fn regex(p: &str) -> StringMatch {
    StringMatch::Regex(Arc::new(
        regex::Regex::new(&format!("^(?:{p})$")).expect("test setup"),
    ))
}

/// What the control plane emits for `shop`'s HTTP port: the control plane's namespace
/// may do anything; `shop/web` may `GET /api.*`.
fn http_rules() -> Rules {
    Rules {
        action: Action::Allow,
        policies: vec![
            Policy {
                name: "TrafficTarget shop/allow-web".into(),
                permissions: vec![Permission::Or(vec![Permission::And(vec![
                    Permission::Header(HeaderMatch {
                        name: ":method".into(),
                        value: HeaderValueMatch::String(StringMatch::Exact("GET".into(), false)),
                        invert: false,
                    }),
                    Permission::UrlPath(regex("/api.*")),
                ])])],
                principals: vec![Principal::Or(vec![Principal::Authenticated(Some(
                    StringMatch::Exact(format!("spiffe://{TD}/ns/shop/sa/web"), false),
                ))])],
            },
            Policy {
                name: "rudder-control-plane".into(),
                permissions: vec![Permission::Any],
                principals: vec![Principal::Authenticated(Some(StringMatch::Prefix(
                    format!("spiffe://{TD}/ns/rudder-system/"),
                    false,
                )))],
            },
        ],
    }
}

/// The TCP port's rules: `shop/web` may connect.
fn tcp_rules() -> Rules {
    Rules {
        action: Action::Allow,
        policies: vec![Policy {
            name: "TrafficTarget shop/allow-web".into(),
            permissions: vec![Permission::Any],
            principals: vec![Principal::Authenticated(Some(StringMatch::Exact(
                format!("spiffe://{TD}/ns/shop/sa/web"),
                false,
            )))],
        }],
    }
}

/// An HTTP chain (stat prefix `inbound`) to cluster `web` with `rbac` before the router.
fn http_chain(name: &str, rbac: Rbac, tls: bool) -> FilterChain {
    let mut hcm = http_manager("web", ForwardClientCert::Sanitize);
    hcm.filters = vec![HttpFilter::Rbac(Arc::new(rbac)), HttpFilter::Router];
    FilterChain {
        name: name.into(),
        matcher: ChainMatch {
            transport_protocol: Some(if tls { "tls" } else { "raw_buffer" }.into()),
            ..ChainMatch::default()
        },
        tls: tls.then(|| downstream_tls(false, vec![])),
        filters: Vec::new(),
        terminal: Terminal::Http(Arc::new(hcm)),
    }
}

/// A PERMISSIVE-style listener: the TLS inspector sends TLS to an mTLS chain and plain
/// text to a plain one, both with the same HTTP `rbac`.
fn http_listener(addr: SocketAddr, rbac: Rbac) -> Listener {
    Listener {
        name: "inbound".into(),
        address: addr,
        original_dst: false,
        tls_inspector: true,
        chains: vec![
            http_chain("mtls", rbac.clone(), true),
            http_chain("plain", rbac, false),
        ],
        default_chain: None,
    }
}

/// A proxy serving `listener` with the workload certificate of `shop/shop` and the
/// `web` cluster at an HTTP upstream.
async fn start(pki: &Pki, listener: Listener) -> Proxy {
    let proxy = Proxy::start();
    proxy.add_cluster(static_cluster("web", head_echo().await));
    let (cert, bundle) = (pki.issue("shop", "shop"), pki.bundle());
    proxy.update(|s| s.secrets = Arc::new(secrets(cert, bundle)));
    proxy.set_listeners(vec![listener]);
    proxy
}

/// A response as the client saw it.
struct Seen {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

/// Sends one request over `io` with HTTP/1.1 (or HTTP/2 when `h2`).
async fn send<IO>(io: IO, h2: bool, req: Request<Full<Bytes>>) -> Seen
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let resp = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("response")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("response")
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Seen {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn request(method: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "shop")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// `method path` over mutual TLS as `ns/sa`.
async fn as_identity(
    pki: &Pki,
    addr: SocketAddr,
    ns: &str,
    sa: &str,
    method: &str,
    path: &str,
) -> Seen {
    let tls = dial(addr, client(Some(pki.issue(ns, sa)), pki.bundle()))
        .await
        .expect("mTLS handshake");
    send(tls, false, request(method, path)).await
}

#[tokio::test]
async fn an_allowed_spiffe_id_passes_and_another_identity_gets_403() {
    let pki = Pki::new(TD);
    let addr = free_addr();
    let rbac = Rbac {
        rules: Some(http_rules()),
        shadow: None,
    };
    let proxy = start(&pki, http_listener(addr, rbac)).await;

    let ok = as_identity(&pki, addr, "shop", "web", "GET", "/api/items?x=1").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        ok.body.starts_with("GET /api/items?x=1 HTTP/1.1"),
        "{}",
        ok.body
    );
    let control = as_identity(&pki, addr, "rudder-system", "rudder", "DELETE", "/x").await;
    assert_eq!(control.status, 200, "the control plane may do anything");

    let method = as_identity(&pki, addr, "shop", "web", "POST", "/api/items").await;
    assert_eq!(method.status, 403);
    assert_eq!(method.body, "RBAC: access denied");
    let other = as_identity(&pki, addr, "shop", "other", "GET", "/api/items").await;
    assert_eq!(other.status, 403);
    assert_eq!(other.body, "RBAC: access denied");
    assert_eq!(
        other.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/plain"[..])
    );

    assert_eq!(proxy.counter("http.inbound.rbac.allowed"), 2);
    assert_eq!(proxy.counter("http.inbound.rbac.denied"), 2);
    assert_eq!(proxy.counter("http.inbound.rbac.shadow_allowed"), 0);
    assert_eq!(proxy.counter("http.inbound.rbac.shadow_denied"), 0);
    assert_eq!(proxy.counter("http.inbound.downstream_rq_4xx"), 2);
    assert_eq!(
        proxy.counter("cluster.web.upstream_rq_total"),
        2,
        "denied requests never go upstream"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_denied_grpc_request_gets_permission_denied() {
    let pki = Pki::new(TD);
    let addr = free_addr();
    let rbac = Rbac {
        rules: Some(http_rules()),
        shadow: None,
    };
    let proxy = start(&pki, http_listener(addr, rbac)).await;
    let tls = dial(addr, client(Some(pki.issue("shop", "other")), pki.bundle()))
        .await
        .expect("mTLS handshake");
    let req = Request::post("https://shop/shop.v1.Shop/List")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .expect("request");
    let seen = send(tls, true, req).await;
    assert_eq!(seen.status, 200, "gRPC answers in trailers-only form");
    let h = |n: &str| {
        seen.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(h("grpc-status").as_deref(), Some("7"), "PERMISSION_DENIED");
    assert_eq!(h("grpc-message").as_deref(), Some("RBAC: access denied"));
    assert_eq!(h("content-type").as_deref(), Some("application/grpc"));
    assert_eq!(seen.body, "");
    assert_eq!(proxy.counter("http.inbound.rbac.denied"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn plain_text_on_a_permissive_listener_is_not_authenticated() {
    let pki = Pki::new(TD);
    let addr = free_addr();
    let rbac = Rbac {
        rules: Some(http_rules()),
        shadow: None,
    };
    let proxy = start(&pki, http_listener(addr, rbac)).await;
    let plain = send(
        connect_when_up(addr).await,
        false,
        request("GET", "/api/items"),
    )
    .await;
    assert_eq!(plain.status, 403, "{}", plain.body);
    assert_eq!(plain.body, "RBAC: access denied");
    let tls = as_identity(&pki, addr, "shop", "web", "GET", "/api/items").await;
    assert_eq!(tls.status, 200, "the same request over mTLS as web passes");
    assert_eq!(proxy.counter("http.inbound.rbac.denied"), 1);
    assert_eq!(proxy.counter("http.inbound.rbac.allowed"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn shadow_rules_count_a_denial_but_let_the_request_through() {
    let pki = Pki::new(TD);
    let addr = free_addr();
    let dry_run = Rbac {
        rules: None,
        shadow: Some(http_rules()),
    };
    let proxy = start(&pki, http_listener(addr, dry_run)).await;
    let other = as_identity(&pki, addr, "shop", "other", "GET", "/api/items").await;
    assert_eq!(other.status, 200, "shadow rules never deny");
    let web = as_identity(&pki, addr, "shop", "web", "GET", "/api/items").await;
    assert_eq!(web.status, 200);
    assert_eq!(proxy.counter("http.inbound.rbac.shadow_denied"), 1);
    assert_eq!(proxy.counter("http.inbound.rbac.shadow_allowed"), 1);
    assert_eq!(
        proxy.counter("http.inbound.rbac.allowed"),
        0,
        "no enforced rules"
    );
    assert_eq!(proxy.counter("http.inbound.rbac.denied"), 0);
    proxy.stop().await;
}

/// A TCP upstream that greets `hello` and echoes, counting the connections it accepted.
async fn counting_greeter() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let addr = l.local_addr().expect("test setup");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                if w.write_all(b"hello\n").await.is_ok() {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_tcp_chain_closes_a_denied_connection_without_connecting_upstream() {
    let pki = Pki::new(TD);
    let addr = free_addr();
    let (upstream, accepted) = counting_greeter().await;
    let proxy = Proxy::start();
    proxy.route_tcp_to(upstream);
    let (cert, bundle) = (pki.issue("shop", "db"), pki.bundle());
    proxy.update(|s| s.secrets = Arc::new(secrets(cert, bundle)));
    let rbac = Arc::new(NetworkRbac {
        stat_prefix: "inbound_tcp".into(),
        rbac: Rbac {
            rules: Some(tcp_rules()),
            shadow: Some(tcp_rules()),
        },
    });
    let mut l = tcp_listener("db", addr);
    l.tls_inspector = true;
    l.chains[0].tls = Some(downstream_tls(false, vec![]));
    l.chains[0].matcher.transport_protocol = Some("tls".into());
    l.chains[0].filters = vec![NetworkFilter::Rbac(Arc::clone(&rbac))];
    let mut plain = tcp_chain("db", None);
    plain.name = "plain".into();
    plain.matcher.transport_protocol = Some("raw_buffer".into());
    plain.filters = vec![NetworkFilter::Rbac(rbac)];
    l.chains.push(plain);
    proxy.set_listeners(vec![l]);

    // Another identity: the handshake completes, then the proxy closes.
    let mut other = dial(addr, client(Some(pki.issue("shop", "other")), pki.bundle()))
        .await
        .expect("mTLS handshake");
    assert_closed(&mut other).await;
    // Plain text is not authenticated.
    let mut plain = connect_when_up(addr).await;
    plain.write_all(b"hi").await.expect("write");
    assert_closed(&mut plain).await;
    assert_eq!(proxy.counter("inbound_tcp.rbac.denied"), 2);
    assert_eq!(proxy.counter("inbound_tcp.rbac.shadow_denied"), 2);
    assert_eq!(proxy.counter("cluster.cluster-db.upstream_cx_total"), 0);
    assert_eq!(
        proxy.counter("tcp.db.downstream_cx_total"),
        0,
        "tcp_proxy never ran"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no upstream connection");

    // shop/web is allowed through to the upstream.
    let mut web = dial(addr, client(Some(pki.issue("shop", "web")), pki.bundle()))
        .await
        .expect("mTLS handshake");
    let mut line = String::new();
    BufReader::new(&mut web)
        .read_line(&mut line)
        .await
        .expect("greeting");
    assert_eq!(line, "hello\n");
    assert_eq!(roundtrip(&mut web, b"ping").await.expect("echo"), b"ping");
    assert_eq!(proxy.counter("inbound_tcp.rbac.allowed"), 1);
    assert_eq!(proxy.counter("inbound_tcp.rbac.shadow_allowed"), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}
