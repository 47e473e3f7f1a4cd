//! Retries, per-try and whole-request timeouts, and the retry budget.

mod http_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use conformance::config::cluster::{Discovery, RetryBudget};
use conformance::config::route::{Action, Backoff, RetryOn, RetryPolicy, RouteAction};
use http_support::*;

fn five_xx(num_retries: u32, per_try: Option<Duration>) -> Arc<RetryPolicy> {
    Arc::new(RetryPolicy {
        on: RetryOn {
            five_xx: true,
            ..Default::default()
        },
        num_retries,
        per_try_timeout: per_try,
        backoff: Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
        retriable_status_codes: vec![],
    })
}

/// A backend that fails every other request with 503; counts requests.
async fn flaky() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let n = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&n);
    let addr = backend(move |_req| {
        let n = Arc::clone(&seen);
        async move {
            if n.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                status(503)
            } else {
                status(200)
            }
        }
    })
    .await;
    (addr, n)
}

async fn proxy_to(action: RouteAction, c: conformance::config::cluster::Cluster) -> Proxy {
    let snap = snapshot(
        vec![vhost(
            "h",
            &["*"],
            vec![route("/", Action::Route(Arc::new(action)))],
        )],
        vec![c],
    );
    proxy(snap, hcm(false)).await
}

#[tokio::test]
async fn retries_hide_a_flaky_backend_and_nothing_retries_without_a_policy() {
    let (addr, count) = flaky().await;
    let mut action = to_cluster("c");
    action.retry = Some(five_xx(2, None));
    let p = proxy_to(action, cluster("c", &[addr])).await;
    for _ in 0..10 {
        assert_eq!(get(p.addr, "h", "/").await.status, 200);
    }
    assert_eq!(count.load(Ordering::SeqCst), 20);
    assert_eq!(p.counter("cluster.c.upstream_rq_retry"), 10);
    assert_eq!(p.counter("cluster.c.upstream_rq_total"), 20);
    assert_eq!(p.counter("cluster.c.upstream_rq_503"), 10);
    assert_eq!(p.counter("cluster.c.upstream_rq_retry_success"), 10);

    let (addr, _) = flaky().await;
    let p = proxy_to(to_cluster("c"), cluster("c", &[addr])).await;
    let mut failed = 0;
    for _ in 0..10 {
        if get(p.addr, "h", "/").await.status == 503 {
            failed += 1;
        }
    }
    assert_eq!(failed, 5);
    assert_eq!(p.counter("cluster.c.upstream_rq_retry"), 0);
}

#[tokio::test]
async fn a_refused_connection_is_retried_to_another_endpoint() {
    let good = echo("good").await;
    // A port nothing listens on: bind, take the port, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut action = to_cluster("c");
    action.retry = Some(Arc::new(RetryPolicy {
        on: RetryOn {
            connect_failure: true,
            ..Default::default()
        },
        ..(*five_xx(1, None)).clone()
    }));
    let p = proxy_to(action, cluster("c", &[dead, good])).await;
    for _ in 0..6 {
        assert_eq!(get(p.addr, "h", "/").await.status, 200);
    }
    let p = proxy_to(to_cluster("c"), cluster("c", &[dead])).await;
    let seen = get(p.addr, "h", "/").await;
    assert_eq!(seen.status, 503);
    assert!(seen.body.contains("connection failure"), "{}", seen.body);
}

/// A backend that answers `/slow` only after a long time.
async fn slow() -> std::net::SocketAddr {
    backend(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        status(200)
    })
    .await
}

#[tokio::test]
async fn per_try_and_whole_request_timeouts_answer_504() {
    let addr = slow().await;
    let mut action = to_cluster("c");
    action.retry = Some(five_xx(2, Some(Duration::from_millis(100))));
    action.timeout = Some(Duration::from_secs(10));
    let p = proxy_to(action, cluster("c", &[addr])).await;
    let seen = get(p.addr, "h", "/slow").await;
    assert_eq!(seen.status, 504);
    assert_eq!(seen.body, "upstream request timeout");
    assert_eq!(
        p.counter("cluster.c.upstream_rq_retry"),
        2,
        "a timed out try is retried for 5xx"
    );
    assert_eq!(p.counter("cluster.c.upstream_rq_per_try_timeout"), 3);
    assert_eq!(p.counter("cluster.c.upstream_rq_retry_limit_exceeded"), 1);
    assert_eq!(get(p.addr, "h", "/fast").await.status, 200);

    let mut action = to_cluster("c");
    action.timeout = Some(Duration::from_millis(200));
    let p = proxy_to(action, cluster("c", &[addr])).await;
    let seen = get(p.addr, "h", "/slow").await;
    assert_eq!(seen.status, 504);
    assert_eq!(p.counter("cluster.c.upstream_rq_timeout"), 1);

    let mut action = to_cluster("c");
    action.timeout = Some(Duration::ZERO);
    action.max_stream_duration = Some(Duration::from_millis(200));
    let p = proxy_to(action, cluster("c", &[addr])).await;
    let seen = get(p.addr, "h", "/slow").await;
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (408, "downstream duration timeout")
    );
}

#[tokio::test]
async fn the_retry_budget_bounds_concurrent_retries() {
    // Every first try of the four requests is held until all four arrived, then all
    // fail at once: only the budget's one retry may run; the others overflow.
    let arrived = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Barrier::new(4));
    let (a, g) = (Arc::clone(&arrived), Arc::clone(&gate));
    let addr = backend(move |_req| {
        let (a, g) = (Arc::clone(&a), Arc::clone(&g));
        async move {
            if a.fetch_add(1, Ordering::SeqCst) < 4 {
                g.wait().await;
            }
            status(503)
        }
    })
    .await;
    let mut action = to_cluster("c");
    let mut policy = (*five_xx(3, None)).clone();
    policy.backoff = Backoff {
        base: Duration::from_millis(300),
        max: Duration::from_millis(300),
    };
    action.retry = Some(Arc::new(policy));
    let mut c = cluster("c", &[addr]);
    c.retry_budget = Some(RetryBudget {
        percent: 0.0,
        min_concurrency: 1,
    });
    let p = proxy_to(action, c).await;
    let mut all = Vec::new();
    for _ in 0..4 {
        all.push(tokio::spawn(get(p.addr, "h", "/")));
    }
    for h in all {
        assert_eq!(h.await.expect("request").status, 503);
    }
    let attempts = arrived.load(Ordering::SeqCst);
    assert!(
        attempts < 16,
        "without the budget each of 4 tries 4 times: {attempts}"
    );
    assert!(p.counter("cluster.c.upstream_rq_retry_overflow") >= 1);
    assert_eq!(
        p.counter("cluster.c.upstream_rq_retry") + 4,
        attempts,
        "every attempt past the first is a counted retry"
    );
}

/// A raw backend whose first connection is closed after the request arrives; later
/// ones answer 200.
async fn closes_first() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let close = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if !close {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    let _ = s.read(&mut buf).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_reset_after_the_request_is_retried_only_on_reset_conditions() {
    let addr = closes_first().await;
    let p = proxy_to(to_cluster("c"), cluster("c", &[addr])).await;
    let seen = get(p.addr, "h", "/").await;
    assert_eq!(seen.status, 503);
    assert!(
        seen.body.contains("connection termination"),
        "{}",
        seen.body
    );

    let addr = closes_first().await;
    let mut action = to_cluster("c");
    action.retry = Some(Arc::new(RetryPolicy {
        on: RetryOn {
            reset: true,
            ..Default::default()
        },
        ..(*five_xx(1, None)).clone()
    }));
    let p = proxy_to(action, cluster("c", &[addr])).await;
    let seen = get(p.addr, "h", "/").await;
    assert_eq!((seen.status, seen.body.as_str()), (200, "ok"));
    assert_eq!(p.counter("cluster.c.upstream_rq_retry"), 1);
}

#[tokio::test]
async fn a_logical_dns_cluster_resolves_at_connect() {
    let b = echo("dns").await;
    let mut c = cluster("c", &[]);
    c.discovery = Discovery::Dns {
        host: "localhost".into(),
        port: b.port(),
    };
    let p = proxy_to(to_cluster("c"), c).await;
    let seen = get(p.addr, "h", "/").await;
    assert_eq!(seen.header("x-backend"), Some("dns"));
}

#[tokio::test]
async fn a_streaming_body_reaches_the_backend_before_it_ends_on_a_route_with_retries() {
    use http_body_util::BodyExt;
    // The backend answers as soon as it has the first chunk, as a streaming service does.
    let addr = backend(|req: hyper::Request<hyper::body::Incoming>| async move {
        let mut body = req.into_body();
        let first = match body.frame().await {
            Some(Ok(f)) => f.into_data().unwrap_or_default(),
            _ => Bytes::new(),
        };
        let mut text = b"got:".to_vec();
        text.extend_from_slice(&first);
        hyper::Response::new(http_body_util::Full::new(Bytes::from(text)))
    })
    .await;
    let mut action = to_cluster("c");
    action.retry = Some(five_xx(2, None));
    let p = proxy_to(action, cluster("c", &[addr])).await;

    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
    >(4);
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let stream = tokio::net::TcpStream::connect(p.addr)
        .await
        .expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::post("http://h/upload")
        .header("host", "h")
        .body(body)
        .expect("request");
    let answer = tokio::spawn(async move { send.send_request(req).await });
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"hello"))))
        .await
        .expect("first chunk");
    // The body is still open (tx lives): the answer must come anyway.
    let resp = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("answered while the body is still streaming")
        .expect("task")
        .expect("response");
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&text[..], b"got:hello");
    drop(tx);
}
