//! The load generator against in-process servers: open and closed loop over HTTP/1.1
//! and h2c, coordinated-omission correction, failures by kind, absolute-form through an
//! explicit proxy, and mutual TLS. Bounds here are correctness, not speed.
//!
//! Run with `cargo nextest run -p testbed --test loadgen`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use testbed::bench::load::{self, Config, Mode, Report, TlsFiles};
use testbed::bench::sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

type Resp = Response<Full<Bytes>>;

/// Serves `conn` (a TCP stream, or TLS over it) with `handler`, HTTP/1.1 and h2c.
async fn serve_conn<S, F, Fut>(io: S, handler: F)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

async fn start<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            tokio::spawn(serve_conn(stream, handler.clone()));
        }
    });
    addr
}

async fn start_sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(sink::serve(listener, sink::body(1024)));
    addr
}

/// Reads the request body, then answers `status` with a short body.
async fn answer(req: Request<Incoming>, status: StatusCode) -> Resp {
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(b"answer")));
    *resp.status_mut() = status;
    resp
}

fn open(addr: SocketAddr, rate: f64, secs: f64, connections: usize) -> Config {
    let mut cfg = Config::new(addr.to_string());
    cfg.mode = Mode::Open { rate };
    cfg.duration = Duration::from_secs_f64(secs);
    cfg.warmup = Duration::from_millis(200);
    cfg.connections = connections;
    cfg.timeout = Duration::from_secs(3);
    cfg
}

fn assert_all_ok(r: &Report, rate: f64) {
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(r.ok, r.requests, "{r:?}");
    assert_eq!(r.unsent, 0, "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(
        (r.achieved_rps - rate).abs() <= rate * 0.1,
        "achieved {} of {rate}: {r:?}",
        r.achieved_rps
    );
    assert!(r.latency_us.p50 > 0.0, "{r:?}");
    assert_eq!(r.response_bytes, r.ok * 1024, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_over_http1_meets_its_rate() {
    let addr = start_sink().await;
    let r = load::run(&open(addr, 200.0, 2.0, 4))
        .await
        .expect("the run starts");
    assert_all_ok(&r, 200.0);
    assert_eq!(r.target_rps, Some(200.0));
    let json = serde_json::to_value(&r).expect("report as JSON");
    assert_eq!(json["mode"], "open");
    assert_eq!(json["http2"], false);
    for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(json["latency_us"][key].is_f64(), "{json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_over_h2c_meets_its_rate() {
    let addr = start_sink().await;
    let mut cfg = open(addr, 200.0, 2.0, 4);
    cfg.http2 = true;
    let r = load::run(&cfg).await.expect("the run starts");
    assert_all_ok(&r, 200.0);
    assert!(r.http2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_with_two_threads_meets_its_rate() {
    let addr = start_sink().await;
    let mut cfg = open(addr, 200.0, 2.0, 4);
    cfg.threads = 2;
    let r = load::run(&cfg).await.expect("the run starts");
    assert_all_ok(&r, 200.0);
}

/// One request stalls the only connection for 500 ms: the ~50 requests due meanwhile
/// wait, and their wait is latency. Measured from the actual send, only one sample
/// would be slow and p99 would stay near the normal latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_in_the_percentiles() {
    let seen = Arc::new(AtomicU64::new(0));
    let addr = start(move |req| {
        let n = seen.fetch_add(1, Ordering::Relaxed);
        async move {
            if n == 100 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            answer(req, StatusCode::OK).await
        }
    })
    .await;
    let mut cfg = open(addr, 100.0, 3.0, 1);
    cfg.warmup = Duration::ZERO;
    let r = load::run(&cfg).await.expect("the run starts");
    assert_eq!(r.failed, 0, "{r:?}");
    assert!(r.latency_us.p99 >= 200_000.0, "{r:?}");
    assert!(r.latency_us.max >= 450_000.0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_kind() {
    let addr = start(|req| answer(req, StatusCode::SERVICE_UNAVAILABLE)).await;
    let r = load::run(&open(addr, 100.0, 1.0, 2))
        .await
        .expect("the run starts");
    assert!(r.requests >= 90, "{r:?}");
    assert_eq!(r.ok, 0, "{r:?}");
    assert_eq!(r.failed, r.requests, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert_eq!(r.errors.get("status_503"), Some(&r.requests), "{r:?}");
    assert_eq!(r.achieved_rps, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    let r = load::run(&open(addr, 50.0, 1.0, 2))
        .await
        .expect("the run starts");
    assert!(r.requests >= 45, "{r:?}");
    assert_eq!(r.failed, r.requests, "{r:?}");
    assert_eq!(r.errors.get("connect"), Some(&r.requests), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_reports_throughput() {
    let addr = start_sink().await;
    for http2 in [false, true] {
        let mut cfg = open(addr, 1.0, 1.0, 2);
        cfg.mode = Mode::Max;
        cfg.http2 = http2;
        let r = load::run(&cfg).await.expect("the run starts");
        assert!(r.achieved_rps > 0.0, "{r:?}");
        assert_eq!(r.failed, 0, "{r:?}");
        assert_eq!(r.target_rps, None);
        assert_eq!(
            serde_json::to_value(&r).expect("report as JSON")["mode"],
            "max"
        );
    }
}

/// The request target and Host the server saw, for each of HTTP/1.1 by address,
/// HTTP/1.1 through an explicit proxy and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_name_the_target_in_the_right_form() {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = seen.clone();
    let addr = start(move |req| {
        let host = req
            .headers()
            .get("host")
            .map(|h| h.to_str().expect("ASCII Host").to_string())
            .unwrap_or_default();
        record.lock().push((req.uri().to_string(), host));
        answer(req, StatusCode::OK)
    })
    .await;
    let cases = [
        (false, false, "/bench/x", "backend.example:8080"),
        (
            true,
            false,
            "http://backend.example:8080/bench/x",
            "backend.example:8080",
        ),
        (false, true, "http://backend.example:8080/bench/x", ""),
    ];
    for (proxy, http2, uri, host) in cases {
        seen.lock().clear();
        let mut cfg = open(addr, 50.0, 0.5, 1);
        cfg.target = "backend.example:8080".into();
        cfg.connect = Some(addr.to_string());
        cfg.path = "/bench/x".into();
        cfg.proxy = proxy;
        cfg.http2 = http2;
        let r = load::run(&cfg).await.expect("the run starts");
        assert_eq!(r.failed, 0, "{r:?}");
        let seen = seen.lock();
        assert!(!seen.is_empty());
        for (got_uri, got_host) in seen.iter() {
            assert_eq!(got_uri, uri, "proxy={proxy} http2={http2}");
            assert_eq!(got_host, host, "proxy={proxy} http2={http2}");
        }
    }
}

struct Pki {
    dir: tempfile::TempDir,
    server: rustls::ServerConfig,
}

/// A CA, a server certificate for `localhost` and a client certificate, as files, and
/// a server config that requires a client certificate from the CA.
fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("leaf params")
            .signed_by(&key, &issuer)
            .expect("leaf certificate");
        (cert, key)
    };
    let (server_cert, server_key) = leaf("localhost");
    let (client_cert, client_key) = leaf("client.example");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write PEM");
    std::fs::write(dir.path().join("client.pem"), client_cert.pem()).expect("write PEM");
    std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).expect("write PEM");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("CA as a root");
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .expect("client verifier");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.der().clone()], key)
        .expect("server certificate");
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Pki { dir, server }
}

async fn start_tls(config: rustls::ServerConfig) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    serve_conn(tls, |req| answer(req, StatusCode::OK)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = pki();
    let addr = start_tls(pki.server.clone()).await;
    let files = |cert: bool| TlsFiles {
        ca: pki.dir.path().join("ca.pem"),
        cert: cert.then(|| pki.dir.path().join("client.pem")),
        key: cert.then(|| pki.dir.path().join("client.key")),
        server_name: "localhost".into(),
    };
    for http2 in [false, true] {
        let mut cfg = open(addr, 50.0, 1.0, 2);
        cfg.target = format!("localhost:{}", addr.port());
        cfg.connect = Some(addr.to_string());
        cfg.http2 = http2;
        cfg.timeout = Duration::from_secs(1);
        cfg.tls = Some(files(true));
        let r = load::run(&cfg).await.expect("the run starts");
        assert!(r.requests >= 45, "http2={http2}: {r:?}");
        assert_eq!(r.ok, r.requests, "http2={http2}: {r:?}");

        // TLS without a client certificate: the server refuses the handshake.
        cfg.tls = Some(files(false));
        let r = load::run(&cfg).await.expect("the run starts");
        assert!(r.requests >= 45, "http2={http2}: {r:?}");
        assert_eq!(r.ok, 0, "http2={http2}: {r:?}");
        assert_eq!(r.failed, r.requests, "http2={http2}: {r:?}");
        // Under TLS 1.3 the refusal (an alert) comes after the client's handshake is
        // done: a request that reads it fails as `tls`, one racing with it sees the
        // connection closed or reset.
        assert!(
            r.errors.get("tls").is_some_and(|n| *n > 0),
            "http2={http2}: {r:?}"
        );
        assert!(
            r.errors
                .keys()
                .all(|k| ["tls", "closed", "reset"].contains(&k.as_str())),
            "http2={http2}: {r:?}"
        );

        // No TLS at all: plaintext to a TLS port fails too.
        cfg.tls = None;
        let r = load::run(&cfg).await.expect("the run starts");
        assert_eq!(r.ok, 0, "http2={http2}: {r:?}");
        assert!(r.requests > 0, "http2={http2}: nothing was tried: {r:?}");
        assert_eq!(r.failed, r.requests, "http2={http2}: {r:?}");
    }
}
