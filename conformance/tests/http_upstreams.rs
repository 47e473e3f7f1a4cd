//! CONNECT tunnels, HTTP/2 upstreams, mirrors, and a configuration swap under a
//! request in flight.

mod http_support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use conformance::config::cluster::{Discovery, LbPolicy, UpstreamProtocol};
use conformance::config::route::{Action, Mirror, PathMatch};
use http_support::*;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP echo server.
async fn tcp_echo() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn read_until(s: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(end.len()).any(|w| w == end) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("read in time")
            .expect("read");
        assert!(
            n > 0,
            "closed early after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn connect_tunnels_bytes_to_the_routed_cluster() {
    let echo_addr = tcp_echo().await;
    let mut action = to_cluster("tcp");
    action.connect = true;
    let mut r = route("/", Action::Route(Arc::new(action)));
    r.matcher.connect = true;
    let snap = snapshot(
        vec![vhost("e", &["echo:9000"], vec![r])],
        vec![cluster("tcp", &[echo_addr])],
    );
    let p = proxy(snap, hcm(true)).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"CONNECT echo:9000 HTTP/1.1\r\nHost: echo:9000\r\n\r\n")
        .await
        .expect("write");
    let head = read_until(&mut s, b"\r\n\r\n").await;
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping through the tunnel")
        .await
        .expect("write");
    let back = read_until(&mut s, b"tunnel").await;
    assert_eq!(back, b"ping through the tunnel");

    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"CONNECT other:1 HTTP/1.1\r\nHost: other:1\r\n\r\n")
        .await
        .expect("write");
    let head = read_until(&mut s, b"\r\n\r\n").await;
    assert!(
        head.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// A CONNECT tunnel stays counted as its downstream connection while it lasts, and
/// ends after the idle timeout with no byte either way.
#[tokio::test]
async fn a_tunnel_counts_as_its_connection_and_ends_when_idle() {
    let echo_addr = tcp_echo().await;
    let mut action = to_cluster("tcp");
    action.connect = true;
    let mut r = route("/", Action::Route(Arc::new(action)));
    r.matcher.connect = true;
    let snap = snapshot(
        vec![vhost("e", &["echo:9000"], vec![r])],
        vec![cluster("tcp", &[echo_addr])],
    );
    let mut m = hcm(true);
    m.idle_timeout = Some(Duration::from_millis(300));
    let p = proxy(snap, m).await;
    let active = p.ctx.stats.gauge("http.outbound.downstream_cx_active");
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"CONNECT echo:9000 HTTP/1.1\r\nHost: echo:9000\r\n\r\n")
        .await
        .expect("write");
    let head = read_until(&mut s, b"\r\n\r\n").await;
    assert!(head.starts_with(b"HTTP/1.1 200"));
    s.write_all(b"ping").await.expect("write");
    assert_eq!(read_until(&mut s, b"ping").await, b"ping");
    assert_eq!(active.get(), 1, "the tunnel's connection is still counted");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle tunnel was closed");
    for _ in 0..100 {
        if active.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(active.get(), 0);
}

#[tokio::test]
async fn an_original_destination_cluster_goes_where_the_authority_says() {
    let echo_addr = tcp_echo().await;
    let web = echo("pod").await;
    let mut pod = cluster("pod-address", &[]);
    pod.discovery = Discovery::OriginalDst {
        header: Some(":authority".into()),
    };
    pod.lb = LbPolicy::ClusterProvided;
    let mut tunnel = to_cluster("pod-address");
    tunnel.connect = true;
    tunnel.timeout = Some(Duration::ZERO);
    let mut connect = route("/", Action::Route(Arc::new(tunnel)));
    connect.matcher.connect = true;
    let plain = route("/", Action::Route(Arc::new(to_cluster("pod-address"))));
    let snap = snapshot(vec![vhost("pods", &["*"], vec![connect, plain])], vec![pod]);
    let p = proxy(snap, hcm(true)).await;

    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    let line = format!("CONNECT {echo_addr} HTTP/1.1\r\nHost: {echo_addr}\r\n\r\n");
    s.write_all(line.as_bytes()).await.expect("write");
    let head = read_until(&mut s, b"\r\n\r\n").await;
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"to the pod").await.expect("write");
    assert_eq!(read_until(&mut s, b"pod").await, b"to the pod");

    let seen = get(p.addr, &web.to_string(), "/direct").await;
    assert_eq!(seen.header("x-backend"), Some("pod"));
    assert_eq!(get(p.addr, "not-an-address", "/").await.status, 503);
}

/// Without its header, an original-destination cluster uses the connection's
/// destination only when it was restored from the socket; here it was not (the
/// listener's own address), so there is no host: 503, not a request to itself.
#[tokio::test]
async fn an_original_destination_without_header_or_restored_destination_has_no_host() {
    let mut pod = cluster("pod-address", &[]);
    pod.discovery = Discovery::OriginalDst {
        header: Some("x-pod".into()),
    };
    pod.lb = LbPolicy::ClusterProvided;
    let plain = route("/", Action::Route(Arc::new(to_cluster("pod-address"))));
    let snap = snapshot(vec![vhost("pods", &["*"], vec![plain])], vec![pod]);
    let p = proxy(snap, hcm(true)).await;
    let r = tokio::time::timeout(Duration::from_secs(5), get(p.addr, "pods", "/"))
        .await
        .expect("answered without looping back to the proxy");
    assert_eq!(r.status, 503);
    assert_eq!(p.counter("cluster.pod-address.upstream_cx_total"), 0);
    assert_eq!(p.counter("http.outbound.downstream_rq_total"), 1);
}

/// Per-endpoint stats exist only for endpoints the proxy connected to, and never for
/// an original-destination cluster (whose addresses a client chooses).
#[tokio::test]
async fn endpoint_stats_are_bounded() {
    let web = echo("pod").await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let mut pod = cluster("pod-address", &[]);
    pod.discovery = Discovery::OriginalDst {
        header: Some(":authority".into()),
    };
    pod.lb = LbPolicy::ClusterProvided;
    let to_dead = route("/dead", Action::Route(Arc::new(to_cluster("dead"))));
    let to_pod = route("/", Action::Route(Arc::new(to_cluster("pod-address"))));
    let snap = snapshot(
        vec![vhost("all", &["*"], vec![to_dead, to_pod])],
        vec![pod, cluster("dead", &[dead])],
    );
    let p = proxy(snap, hcm(false)).await;
    assert_eq!(get(p.addr, &web.to_string(), "/a").await.status, 200);
    assert_eq!(get(p.addr, &dead.to_string(), "/dead").await.status, 503);
    let endpoint_stats: Vec<String> = p
        .ctx
        .stats
        .all()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.contains(".endpoint."))
        .collect();
    assert!(endpoint_stats.is_empty(), "{endpoint_stats:?}");
    assert_eq!(p.counter("cluster.pod-address.upstream_cx_total"), 1);
}

#[tokio::test]
async fn an_http2_cluster_multiplexes_over_h2c() {
    let b = echo("h2").await;
    let mut c = cluster("c", &[b]);
    c.protocol = UpstreamProtocol::Http2;
    let snap = snapshot(
        vec![vhost(
            "h",
            &["*"],
            vec![route("/", Action::Route(Arc::new(to_cluster("c"))))],
        )],
        vec![c],
    );
    let p = proxy(snap, hcm(false)).await;
    for _ in 0..5 {
        let seen = get(p.addr, "web", "/two").await;
        assert_eq!(seen.status, 200);
        assert!(seen.body.contains("HTTP/2.0"), "{}", seen.body);
    }
    assert_eq!(
        p.counter("cluster.c.upstream_cx_total"),
        1,
        "one multiplexed connection"
    );
}

#[tokio::test]
async fn http1_connections_are_reused() {
    let b = echo("h1").await;
    let snap = snapshot(
        vec![vhost(
            "h",
            &["*"],
            vec![route("/", Action::Route(Arc::new(to_cluster("c"))))],
        )],
        vec![cluster("c", &[b])],
    );
    let p = proxy(snap, hcm(false)).await;
    for _ in 0..5 {
        assert_eq!(get(p.addr, "web", "/").await.status, 200);
    }
    assert_eq!(
        p.counter("cluster.c.upstream_cx_total"),
        1,
        "keep-alive reuse"
    );
}

#[tokio::test]
async fn http1_connections_are_reused_at_high_concurrency() {
    // Every request waits until N are in flight, so N upstream connections are open at
    // once; a second round of N must reuse all of them (Envoy keeps up to its
    // connection circuit breaker, 1,024, and so does the pool).
    const N: usize = 100;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let b = backend(move |req| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
            echo_reply("b", &req)
        }
    })
    .await;
    let snap = snapshot(
        vec![vhost(
            "h",
            &["*"],
            vec![route("/", Action::Route(Arc::new(to_cluster("c"))))],
        )],
        vec![cluster("c", &[b])],
    );
    let p = proxy(snap, hcm(false)).await;
    for round in 0..2 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..N {
            let addr = p.addr;
            set.spawn(async move { get(addr, "web", "/").await.status });
        }
        // A proxy holding fewer than N requests at once would leave the barrier waiting.
        let all = async {
            while let Some(status) = set.join_next().await {
                assert_eq!(status.expect("joined"), 200, "round {round}");
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("N requests in flight at once");
    }
    assert_eq!(
        p.counter("cluster.c.upstream_cx_total"),
        N as u64,
        "the second round reuses every connection of the first"
    );
}

#[tokio::test]
async fn a_mirror_gets_a_shadow_copy() {
    let main = echo("main").await;
    let hosts = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen_hosts = Arc::clone(&hosts);
    let shadow = backend(move |req: http::Request<hyper::body::Incoming>| {
        let hosts = Arc::clone(&seen_hosts);
        async move {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string();
            hosts.lock().push(host);
            status(500)
        }
    })
    .await;
    let mut action = to_cluster("main");
    action.mirrors = vec![Mirror {
        cluster: "shadow".into(),
        per_million: 1_000_000,
    }];
    let snap = snapshot(
        vec![vhost(
            "h",
            &["*"],
            vec![route("/", Action::Route(Arc::new(action)))],
        )],
        vec![cluster("main", &[main]), cluster("shadow", &[shadow])],
    );
    let p = proxy(snap, hcm(false)).await;
    let seen = get(p.addr, "web:8080", "/m").await;
    assert_eq!(
        seen.status, 200,
        "the mirror's failure never reaches the client"
    );
    assert_eq!(seen.header("x-backend"), Some("main"));
    assert!(
        eventually(|| !hosts.lock().is_empty()).await,
        "the mirror got a copy"
    );
    assert_eq!(
        hosts.lock().first().map(String::as_str),
        Some("web-shadow:8080")
    );
}

#[tokio::test]
async fn a_swap_mid_request_does_not_fail_it() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let held = Arc::clone(&gate);
    let b = backend(move |req: http::Request<hyper::body::Incoming>| {
        let held = Arc::clone(&held);
        async move {
            if req.uri().path() == "/held" {
                held.notified().await;
            }
            status(200)
        }
    })
    .await;
    let snap = snapshot(
        vec![vhost(
            "h",
            &["*"],
            vec![route("/", Action::Route(Arc::new(to_cluster("c"))))],
        )],
        vec![cluster("c", &[b])],
    );
    let p = proxy(snap, hcm(false)).await;
    let in_flight = tokio::spawn(get(p.addr, "web", "/held"));
    let active = p.ctx.stats.counter("cluster.c.upstream_rq_total");
    assert!(
        eventually(|| active.get() == 1).await,
        "the request reached the router"
    );
    // The new configuration drops the route's cluster and routes elsewhere.
    let mut other = route("/", Action::Route(Arc::new(to_cluster("gone"))));
    other.matcher.path = PathMatch::Prefix("/".into());
    p.ctx
        .live
        .publish(snapshot(vec![vhost("h", &["*"], vec![other])], vec![]));
    // A stored permit: the backend goes on whether or not it waits yet.
    gate.notify_one();
    let seen = in_flight.await.expect("request");
    assert_eq!(
        seen.status, 200,
        "the request keeps the snapshot it started with"
    );
    assert_eq!(get(p.addr, "web", "/next").await.status, 503);
}

/// An h2c backend answering with a body and `grpc-status` trailers, as a gRPC server.
async fn grpc_like() -> std::net::SocketAddr {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| {
                        let te = req
                            .headers()
                            .get("te")
                            .map(|v| v.as_bytes().to_vec())
                            .unwrap_or_default();
                        async move {
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
                                Ok(Frame::data(Bytes::from(te))),
                                Ok(Frame::trailers(trailers)),
                            ];
                            let body = StreamBody::new(futures::stream::iter(frames));
                            Ok::<_, std::convert::Infallible>(http::Response::new(body))
                        }
                    });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn trailers_pass_through_http2_both_ways() {
    use http_body_util::BodyExt;
    let b = grpc_like().await;
    let mut c = cluster("grpc", &[b]);
    c.protocol = UpstreamProtocol::Http2;
    let snap = snapshot(
        vec![vhost(
            "g",
            &["*"],
            vec![route("/", Action::Route(Arc::new(to_cluster("grpc"))))],
        )],
        vec![c],
    );
    let p = proxy(snap, hcm(false)).await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::post("http://greeter/pkg.Greeter/Hello")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"trailers"));
}
