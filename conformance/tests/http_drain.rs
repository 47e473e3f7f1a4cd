//! The HTTP connection manager on a draining connection, its drain started by hand: an
//! HTTP/1.1 response carries `connection: close` and the connection closes after it;
//! an HTTP/2 connection whose protocol no request had shown when the drain started
//! gets GOAWAY after its next request; a connection that is not draining is left
//! alone. (Listener updates starting drains are `net_drain`.)

mod http_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conformance::config::route::Action;
use http::Request;
use http_body_util::{BodyExt, Full};
use http_support::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

async fn served() -> Proxy {
    let b = echo("b").await;
    let routes = vec![vhost(
        "h",
        &["*"],
        vec![route("/", Action::Route(Arc::new(to_cluster("c"))))],
    )];
    proxy(snapshot(routes, vec![cluster("c", &[b])]), hcm(false)).await
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://web/")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

fn connection_header(resp: &http::Response<hyper::body::Incoming>) -> Option<String> {
    resp.headers()
        .get(http::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
}

#[tokio::test]
async fn an_http1_response_on_a_draining_connection_closes_it() {
    let p = served().await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(get()).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(connection_header(&resp), None, "not draining: kept alive");
    resp.into_body().collect().await.expect("body");

    assert!(p.drain.start(Duration::from_secs(3600)));
    sender.ready().await.expect("still open");
    let resp = sender.send_request(get()).await.expect("response");
    assert_eq!(resp.status(), 200, "served as before");
    assert_eq!(connection_header(&resp).as_deref(), Some("close"));
    resp.into_body().collect().await.expect("body");
    tokio::time::timeout(WAIT, conn)
        .await
        .expect("the connection closes after that response")
        .expect("task")
        .expect("a clean close");
    assert_eq!(p.counter("http.outbound.downstream_cx_drain_close"), 1);
}

#[tokio::test]
async fn an_http2_connection_gets_goaway_after_its_first_request_once_draining() {
    let p = served().await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    // No request yet: the proxy cannot tell HTTP/2 from an idle HTTP/1 connection.
    assert!(p.drain.start(Duration::from_secs(3600)));
    let resp = sender.send_request(get()).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        connection_header(&resp),
        None,
        "HTTP/2 has no connection header"
    );
    resp.into_body().collect().await.expect("body");
    tokio::time::timeout(WAIT, conn)
        .await
        .expect("GOAWAY, then the idle connection closes")
        .expect("task")
        .expect("a clean close");
    assert_eq!(p.counter("http.outbound.downstream_cx_drain_close"), 1);
}
