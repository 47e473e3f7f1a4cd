//! Shared by the `http_*` tests: hand-built snapshots, small hyper backends on port 0,
//! the proxy's HTTP connection manager on a loopback listener, and a raw client.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::config::Snapshot;
use conformance::config::cluster::{
    Cluster, Discovery, Endpoint, LbPolicy, LoadAssignment, Locality, Transport, UpstreamProtocol,
};
use conformance::config::listener::{ForwardClientCert, HttpFilter, HttpManager, RouteSource};
use conformance::config::route::{
    Action, Destination, HeaderEdits, PathMatch, Route, RouteAction, RouteConfig, RouteMatch,
    VirtualHost,
};
use conformance::data::drain::Drain;
use conformance::data::tls::PeerInfo;
use conformance::data::{ConnInfo, Ctx};
use conformance::live::Live;
use conformance::stats::Stats;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The route configuration name the connection manager takes over RDS.
pub(crate) const RDS: &str = "outbound";

/// A backend's reply.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Serves `handler` (HTTP/1.1 and h2c) on a loopback port; returns its address.
pub(crate) async fn backend<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A backend answering 200 with `name` and what it saw: the request line, then every
/// header as `name: value` lines.
pub(crate) async fn echo(name: &'static str) -> SocketAddr {
    backend(move |req: Request<Incoming>| async move { echo_reply(name, &req) }).await
}

/// The echo reply of `name` to `req`.
pub(crate) fn echo_reply(name: &str, req: &Request<Incoming>) -> Reply {
    let mut text = format!(
        "backend={name}\n{} {} {:?}\n",
        req.method(),
        req.uri(),
        req.version()
    );
    for (k, v) in req.headers() {
        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    Response::builder()
        .header("x-backend", name)
        .body(Full::new(Bytes::from(text)))
        .expect("reply")
}

/// A plain reply with `status`.
pub(crate) fn status(code: u16) -> Reply {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::from_static(b"")))
        .expect("reply")
}

/// A static plain-text HTTP/1.1 cluster over `addrs`.
pub(crate) fn cluster(name: &str, addrs: &[SocketAddr]) -> Cluster {
    Cluster {
        name: name.into(),
        discovery: Discovery::Static(LoadAssignment {
            name: name.into(),
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
        }),
        lb: LbPolicy::RoundRobin,
        connect_timeout: Duration::from_secs(2),
        transport: Transport::Plain,
        transport_matches: vec![],
        protocol: UpstreamProtocol::Http1,
        retry_budget: None,
        max_requests_per_connection: None,
        source: Vec::new(),
    }
}

/// A route action to one cluster, Envoy's defaults otherwise.
pub(crate) fn to_cluster(name: &str) -> RouteAction {
    RouteAction {
        destination: Destination::Cluster(name.into()),
        timeout: None,
        retry: None,
        mirrors: vec![],
        rewrite: None,
        host_rewrite: None,
        max_stream_duration: None,
        connect: false,
        cluster_not_found_status: 503,
    }
}

/// A route matching `prefix` that does `action`.
pub(crate) fn route(prefix: &str, action: Action) -> Route {
    Route {
        name: String::new(),
        matcher: RouteMatch {
            path: PathMatch::Prefix(prefix.into()),
            case_sensitive: true,
            headers: vec![],
            query: vec![],
            connect: false,
        },
        action,
        headers: HeaderEdits::default(),
    }
}

/// A virtual host for `domains` with `routes`.
pub(crate) fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        headers: HeaderEdits::default(),
        retry: None,
    }
}

/// A snapshot holding route configuration [`RDS`] of `hosts`, and `clusters`.
pub(crate) fn snapshot(hosts: Vec<VirtualHost>, clusters: Vec<Cluster>) -> Snapshot {
    let rc = RouteConfig {
        name: RDS.into(),
        virtual_hosts: hosts,
    };
    let mut routes = BTreeMap::new();
    routes.insert(RDS.to_string(), Arc::new(rc));
    let clusters: BTreeMap<String, Arc<Cluster>> = clusters
        .into_iter()
        .map(|c| (c.name.clone(), Arc::new(c)))
        .collect();
    Snapshot {
        routes: Arc::new(routes),
        clusters: Arc::new(clusters),
        ..Default::default()
    }
}

/// The connection manager the tests run: RDS [`RDS`], stat prefix `outbound`.
pub(crate) fn hcm(connect: bool) -> HttpManager {
    HttpManager {
        stat_prefix: "outbound".into(),
        routes: RouteSource::Rds(RDS.into()),
        connect,
        forward_client_cert: ForwardClientCert::Sanitize,
        filters: vec![HttpFilter::Router],
        max_request_headers_bytes: 60 * 1024,
        idle_timeout: None,
        path: Default::default(),
    }
}

/// A running proxy: its address and context.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    pub(crate) ctx: Arc<Ctx>,
    /// The drain every connection it accepts holds (a test starts it).
    pub(crate) drain: Drain,
}

impl Proxy {
    /// The counter `name`.
    pub(crate) fn counter(&self, name: &str) -> u64 {
        self.ctx.stats.counter(name).get()
    }
}

/// Publishes `snap` and serves `hcm` on a loopback listener.
pub(crate) async fn proxy(snap: Snapshot, hcm: HttpManager) -> Proxy {
    proxy_tls(snap, hcm, None, None).await
}

/// As [`proxy`], with every connection claiming this verified TLS peer and own URI.
pub(crate) async fn proxy_tls(
    snap: Snapshot,
    hcm: HttpManager,
    tls_peer: Option<PeerInfo>,
    own_uri: Option<String>,
) -> Proxy {
    let live = Arc::new(Live::default());
    live.publish(snap);
    live.set_ready();
    let ctx = Ctx::new(live, Arc::new(Stats::default()));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = l.local_addr().expect("addr");
    let hcm = Arc::new(hcm);
    let serving = Arc::clone(&ctx);
    let drain = Drain::default();
    let shared = drain.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, peer)) = l.accept().await else {
                return;
            };
            let conn = ConnInfo {
                peer,
                destination: addr,
                destination_restored: false,
                tls: tls_peer.is_some() || own_uri.is_some(),
                tls_peer: tls_peer.clone(),
                own_uri: own_uri.clone(),
                listener: Arc::from("test"),
                drain: shared.clone(),
            };
            tokio::spawn(conformance::data::http::serve(
                Arc::clone(&serving),
                Box::pin(s),
                conn,
                Arc::clone(&hcm),
            ));
        }
    });
    Proxy { addr, ctx, drain }
}

/// A response as the client saw it.
#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

impl Seen {
    /// A response header's value.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `req` to the proxy over a fresh HTTP/1.1 connection.
pub(crate) async fn send(proxy: SocketAddr, req: Request<Full<Bytes>>) -> Seen {
    let s = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect proxy");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Seen {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET path` with `Host: host`.
pub(crate) async fn get(proxy: SocketAddr, host: &str, path: &str) -> Seen {
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(proxy, req).await
}

/// Waits (up to ten seconds) until `f` holds.
pub(crate) async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}
