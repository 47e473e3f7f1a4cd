//! Listener updates drain the connections accepted under the old configuration, as
//! Envoy's: on real sockets with mutual TLS, a kept-alive HTTP/1.1 connection whose RBAC
//! policy changed gets `connection: close` and is closed, and a new connection is judged
//! by the new policy; HTTP/2 gets GOAWAY; an idle connection and a `tcp_proxy`
//! connection are closed at the end of the drain time; an unchanged resend drains
//! nothing; only the chains that changed drain; a removed listener drains too.

mod net_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::config::listener::{
    ChainMatch, FilterChain, ForwardClientCert, HttpFilter, Listener, NetworkFilter, Terminal,
};
use conformance::config::matcher::StringMatch;
use conformance::config::rbac::{Action, NetworkRbac, Permission, Policy, Principal, Rbac, Rules};
use conformance::data::listen::Limits;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use net_support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

const TD: &str = "cluster.local";
const WAIT: Duration = Duration::from_secs(10);
/// A drain time no test waits out: what closes a connection then is the drain itself.
const LONG: Duration = Duration::from_secs(3600);

/// RBAC that allows `shop/<sa>` and nobody else.
fn only(sa: &str) -> Rbac {
    Rbac {
        rules: Some(Rules {
            action: Action::Allow,
            policies: vec![Policy {
                name: format!("allow-{sa}"),
                permissions: vec![Permission::Any],
                principals: vec![Principal::Authenticated(Some(StringMatch::Exact(
                    format!("spiffe://{TD}/ns/shop/sa/{sa}"),
                    false,
                )))],
            }],
        }),
        shadow: None,
    }
}

/// An HTTP chain to cluster `web` with `rbac` before the router: mutual TLS for
/// `tls`, else plain text.
fn http_chain(rbac: Rbac, tls: bool) -> FilterChain {
    let mut hcm = http_manager("web", ForwardClientCert::Sanitize);
    hcm.filters = vec![HttpFilter::Rbac(Arc::new(rbac)), HttpFilter::Router];
    FilterChain {
        name: if tls { "mtls" } else { "plain" }.into(),
        matcher: ChainMatch {
            transport_protocol: Some(if tls { "tls" } else { "raw_buffer" }.into()),
            ..ChainMatch::default()
        },
        tls: tls.then(|| downstream_tls(false, vec![])),
        filters: Vec::new(),
        terminal: Terminal::Http(Arc::new(hcm)),
    }
}

/// The inbound listener: an mTLS chain with `mtls` RBAC and a plain-text chain that
/// lets everyone through.
fn inbound(addr: SocketAddr, mtls: Rbac) -> Listener {
    Listener {
        name: "inbound".into(),
        address: addr,
        original_dst: false,
        tls_inspector: true,
        chains: vec![http_chain(mtls, true), http_chain(Rbac::default(), false)],
        default_chain: None,
    }
}

/// A proxy with the drain time `drain`, the workload certificate of `shop/shop` and
/// the `web` cluster at an HTTP upstream.
async fn start(pki: &Pki, drain: Duration) -> Proxy {
    let proxy = Proxy::start();
    proxy.ctx.listeners.set_limits(Limits {
        drain_time: drain,
        ..Limits::default()
    });
    proxy.add_cluster(static_cluster("web", head_echo().await));
    let (cert, bundle) = (pki.issue("shop", "shop"), pki.bundle());
    proxy.update(|s| s.secrets = Arc::new(secrets(cert, bundle)));
    proxy
}

/// Publishes `listeners` and waits until the manager applied them.
async fn publish(proxy: &Proxy, listeners: Vec<Listener>) {
    proxy.set_listeners(listeners);
    proxy.settled().await;
}

/// A client's stream, TLS or not.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A kept-alive client connection: its sender, and its task (it ends when the
/// connection closes).
struct Client {
    sender: Sender,
    conn: JoinHandle<()>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// Opens a connection over mutual TLS as `shop/<sa>` (HTTP/2 when `h2`), or over
/// plain text when `sa` is none.
async fn open(pki: &Pki, addr: SocketAddr, sa: Option<&str>, h2: bool) -> Client {
    let io: Box<dyn Io> = match sa {
        Some(sa) => Box::new(
            dial(addr, client(Some(pki.issue("shop", sa)), pki.bundle()))
                .await
                .expect("mTLS handshake"),
        ),
        None => Box::new(connect_when_up(addr).await),
    };
    let io = TokioIo::new(io);
    if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            sender: Sender::H2(sender),
            conn,
        }
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            sender: Sender::H1(sender),
            conn,
        }
    }
}

impl Client {
    /// `GET /` on this connection: the response (body read), or the error when the
    /// connection is gone.
    async fn get(&mut self) -> hyper::Result<(Response<()>, String)> {
        let req = Request::get("https://shop/")
            .header("host", "shop")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp: Response<Incoming> = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((
            Response::from_parts(parts, ()),
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }

    /// Waits (generously) until the proxy closed the connection.
    async fn closed(self) {
        tokio::time::timeout(WAIT, self.conn)
            .await
            .expect("the proxy closes the connection")
            .expect("client task");
    }
}

/// One request over a new connection as `shop/<sa>`: its status and body.
async fn fresh(pki: &Pki, addr: SocketAddr, sa: &str) -> (u16, String) {
    let mut c = open(pki, addr, Some(sa), false).await;
    let (resp, body) = c.get().await.expect("response");
    (resp.status().as_u16(), body)
}

fn closes(resp: &Response<()>) -> bool {
    resp.headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

#[tokio::test]
async fn a_kept_alive_connection_denied_by_a_new_policy_is_closed_and_an_unchanged_resend_keeps_it()
{
    let pki = Pki::new(TD);
    let addr = free_addr();
    let proxy = start(&pki, LONG).await;
    publish(&proxy, vec![inbound(addr, only("web"))]).await;

    let mut web = open(&pki, addr, Some("web"), false).await;
    let mut plain = open(&pki, addr, None, false).await;
    let (resp, body) = web.get().await.expect("response");
    assert_eq!(resp.status(), 200, "{body}");
    assert!(!closes(&resp));
    assert_eq!(plain.get().await.expect("response").0.status(), 200);

    // The same listener again (a state-of-the-world resend): nothing drains.
    publish(&proxy, vec![inbound(addr, only("web"))]).await;
    let (resp, _) = web.get().await.expect("the connection is kept");
    assert_eq!(resp.status(), 200);
    assert!(!closes(&resp), "an unchanged resend drains nothing");
    assert_eq!(proxy.counter("listener_manager.listener_modified"), 0);

    // A policy that denies shop/web: its connection drains.
    publish(&proxy, vec![inbound(addr, only("other"))]).await;
    // Answered under the configuration it was accepted under, and the last (or the
    // connection is already closed).
    if let Ok((resp, _)) = web.get().await {
        assert!(closes(&resp), "the next response closes the connection");
    }
    web.closed().await;
    let (status, body) = fresh(&pki, addr, "web").await;
    assert_eq!(status, 403, "a new connection gets the new policy: {body}");
    assert_eq!(body, "RBAC: access denied");
    assert_eq!(fresh(&pki, addr, "other").await.0, 200);

    // Only the chain that changed drained: the plain-text one keeps its connection.
    let (resp, _) = plain.get().await.expect("the plain connection is kept");
    assert_eq!(resp.status(), 200);
    assert!(!closes(&resp));
    assert_eq!(proxy.counter("listener_manager.listener_modified"), 1);
    assert_eq!(
        proxy.counter("listener_manager.listener_in_place_updated"),
        1
    );
    assert_eq!(
        proxy.gauge("listener_manager.total_filter_chains_draining"),
        1
    );
    assert_eq!(proxy.counter("http.inbound.downstream_cx_drain_close"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_http2_connection_gets_goaway_when_its_policy_changes() {
    let pki = Pki::new(TD);
    let addr = free_addr();
    let proxy = start(&pki, LONG).await;
    publish(&proxy, vec![inbound(addr, only("web"))]).await;
    let mut web = open(&pki, addr, Some("web"), true).await;
    assert_eq!(web.get().await.expect("response").0.status(), 200);

    publish(&proxy, vec![inbound(addr, only("other"))]).await;
    // GOAWAY, then the idle connection closes, with no request needed.
    web.closed().await;
    let mut again = open(&pki, addr, Some("web"), true).await;
    let (resp, body) = again.get().await.expect("response");
    assert_eq!(resp.status(), 403, "{body}");
    assert_eq!(proxy.counter("http.inbound.downstream_cx_drain_close"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_end_of_the_drain_time() {
    let pki = Pki::new(TD);
    let addr = free_addr();
    let proxy = start(&pki, Duration::from_millis(200)).await;
    publish(&proxy, vec![inbound(addr, only("web"))]).await;
    let mut web = open(&pki, addr, Some("web"), false).await;
    assert_eq!(web.get().await.expect("response").0.status(), 200);

    publish(&proxy, vec![inbound(addr, only("other"))]).await;
    // No request: nothing to carry `connection: close`, the deadline closes it.
    web.closed().await;
    assert_eq!(fresh(&pki, addr, "web").await.0, 403);
    proxy.stop().await;
}

#[tokio::test]
async fn a_removed_listener_drains_its_connections() {
    let pki = Pki::new(TD);
    let addr = free_addr();
    let proxy = start(&pki, LONG).await;
    publish(&proxy, vec![inbound(addr, only("web"))]).await;
    let mut web = open(&pki, addr, Some("web"), false).await;
    assert_eq!(web.get().await.expect("response").0.status(), 200);

    publish(&proxy, vec![]).await;
    wait_refused(addr).await;
    if let Ok((resp, _)) = web.get().await {
        assert!(closes(&resp), "the next response closes the connection");
    }
    web.closed().await;
    assert_eq!(proxy.counter("listener_manager.listener_removed"), 1);
    assert_eq!(proxy.gauge("listener_manager.total_listeners_draining"), 1);
    proxy.stop().await;
}

/// A TCP listener with one mTLS chain whose network RBAC allows `shop/<sa>`.
fn tcp_inbound(addr: SocketAddr, sa: &str) -> Listener {
    let mut l = tcp_listener("db", addr);
    l.chains[0].tls = Some(downstream_tls(false, vec![]));
    l.chains[0].filters = vec![NetworkFilter::Rbac(Arc::new(NetworkRbac {
        stat_prefix: "inbound_tcp".into(),
        rbac: only(sa),
    }))];
    l
}

#[tokio::test]
async fn a_tcp_proxy_connection_denied_by_a_new_policy_is_closed_by_the_end_of_the_drain_time() {
    let pki = Pki::new(TD);
    let addr = free_addr();
    let proxy = Proxy::start();
    proxy.ctx.listeners.set_limits(Limits {
        drain_time: Duration::from_millis(200),
        ..Limits::default()
    });
    proxy.route_tcp_to(greeter("hello").await);
    let (cert, bundle) = (pki.issue("shop", "db"), pki.bundle());
    proxy.update(|s| s.secrets = Arc::new(secrets(cert, bundle)));
    publish(&proxy, vec![tcp_inbound(addr, "web")]).await;

    let mut web = dial(addr, client(Some(pki.issue("shop", "web")), pki.bundle()))
        .await
        .expect("mTLS handshake");
    let mut line = String::new();
    BufReader::new(&mut web)
        .read_line(&mut line)
        .await
        .expect("greeting");
    assert_eq!(line, "hello\n");

    // Unchanged: nothing drains.
    publish(&proxy, vec![tcp_inbound(addr, "web")]).await;
    assert_eq!(
        proxy.gauge("listener_manager.total_filter_chains_draining"),
        0
    );
    assert_eq!(proxy.gauge("listener_manager.total_listeners_draining"), 0);
    assert_eq!(roundtrip(&mut web, b"ping").await.expect("echo"), b"ping");

    publish(&proxy, vec![tcp_inbound(addr, "other")]).await;
    assert_closed(&mut web).await;
    let mut again = dial(addr, client(Some(pki.issue("shop", "web")), pki.bundle()))
        .await
        .expect("mTLS handshake");
    assert_closed(&mut again).await;
    assert_eq!(proxy.counter("inbound_tcp.rbac.denied"), 1);
    proxy.stop().await;
}
