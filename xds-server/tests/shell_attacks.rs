//! The unauthenticated HTTP shells under attack from one address while a real caller
//! from another is served (issue 21, findings 1, 6 and 7). The control plane runs as the
//! real binary (`xds-server run --kubernetes` against the fake API server), the agent as
//! `xds-server agent`. Attackers bind their sockets to other 127.0.0.N addresses.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testbed::fake_kube::FakeKube;
use testbed::kube_control_plane::KubeControlPlane;
use testbed::procs::{Proc, wait_until, workspace_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const LEGIT: &str = "127.0.0.2";
const ATTACKER: &str = "127.0.0.3";
const ATTACKER_2: &str = "127.0.0.4";

/// A TCP connection from `from` to `to`.
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().expect("ip"), 0))?;
    socket.connect(to).await
}

/// TLS to `to` from `from`, trusting `bundle`, offering `alpn`.
async fn tls_from(
    from: &str,
    to: SocketAddr,
    bundle: &str,
    alpn: &[&[u8]],
) -> anyhow::Result<TlsStream<TcpStream>> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(c?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let tcp = connect_from(from, to).await?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?)
}

/// The control plane in cluster mode against a fake API server.
struct ControlPlane {
    fake: FakeKube,
    cp: KubeControlPlane,
    bundle: String,
    _work: tempfile::TempDir,
}

impl ControlPlane {
    async fn start() -> anyhow::Result<Self> {
        let work = tempfile::tempdir()?;
        let fake = FakeKube::new();
        let cp = KubeControlPlane::start(&fake, work.path(), "info").await?;
        let bundle = KubeControlPlane::ca_file(&fake, "ca.crt")?;
        Ok(ControlPlane {
            fake,
            cp,
            bundle,
            _work: work,
        })
    }

    fn addr(&self, k: &str) -> SocketAddr {
        self.cp.addr(k).expect("address")
    }

    fn log_text(&self) -> String {
        self.cp.log_text()
    }

    fn token_reviews(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.contains("tokenreviews"))
            .count()
    }
}

fn review(uid: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "shop", "operation": "CREATE",
                    "object": {"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": "web-0", "namespace": "shop"},
                               "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}})
}

/// One AdmissionReview over HTTP/2 from `from`, as the API server sends it: the answer.
async fn admission_review(
    from: &str,
    to: SocketAddr,
    bundle: &str,
    uid: &str,
) -> anyhow::Result<Value> {
    use http_body_util::BodyExt;
    let tls = tls_from(from, to, bundle, &[b"h2"]).await?;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await?;
    tokio::spawn(conn);
    let req = hyper::Request::post("https://localhost/inject")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            review(uid).to_string(),
        )))?;
    let resp = send.send_request(req).await?;
    anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&bytes)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_preface_only_connections_do_not_starve_the_injector() -> anyhow::Result<()>
{
    let cp = ControlPlane::start().await?;
    let injector = cp.addr("injector");
    // 60 clients that send a head and then one body byte a second.
    let mut attack = Vec::new();
    for _ in 0..60 {
        let bundle = cp.bundle.clone();
        attack.push(tokio::spawn(async move {
            let Ok(mut tls) = tls_from(ATTACKER, injector, &bundle, &[]).await else {
                return;
            };
            let head = "POST /inject HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n";
            if tls.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..15 {
                if tls.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    // 64 HTTP/2 connections that send the preface and their settings, then nothing; each
    // reports how long the server kept it open (None: still open after 20 s).
    let mut prefaces = Vec::new();
    for _ in 0..64 {
        let bundle = cp.bundle.clone();
        prefaces.push(tokio::spawn(async move {
            let opened = Instant::now();
            // A connection refused at once (over a connection cap) counts as closed.
            let Ok(mut tls) = tls_from(ATTACKER_2, injector, &bundle, &[b"h2"]).await else {
                return Some(opened.elapsed());
            };
            let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            preface.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]); // an empty SETTINGS frame
            if tls.write_all(&preface).await.is_err() {
                return Some(opened.elapsed());
            }
            let mut buf = [0u8; 4096];
            let closed = tokio::time::timeout(Duration::from_secs(20), async {
                while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
            closed.ok().map(|()| opened.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Meanwhile the API server (another address) is answered in under a second, again
    // and again while the attack goes on.
    for i in 0..3 {
        let uid = format!("u-{i}");
        let started = Instant::now();
        let answer = admission_review(LEGIT, injector, &cp.bundle, &uid).await;
        let took = started.elapsed();
        let answer = answer.map_err(|e| anyhow::anyhow!("review {i}: {e:#}\n{}", cp.log_text()))?;
        assert_eq!(answer["response"]["uid"], uid.as_str(), "{answer}");
        assert!(answer["response"]["patch"].is_string(), "{answer}");
        assert!(took < Duration::from_secs(1), "review {i} took {took:?}");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // The preface-only connections were closed by the server, not held open.
    let mut longest = Duration::ZERO;
    for p in prefaces {
        let kept = p.await?;
        let Some(kept) = kept else {
            panic!("a connection that sent only the HTTP/2 preface was still open after 20 s");
        };
        longest = longest.max(kept);
    }
    eprintln!("preface-only connections were closed within {longest:?}");
    for a in attack {
        a.abort();
    }
    // The slow senders lost their own requests, counted; the refusals were logged at
    // most about once a second, not once each.
    let metrics = testbed::http::get_ok(cp.addr("admin"), "/metrics").await?;
    assert!(
        metrics.contains(
            r#"rudder_http_shell_refusals_total{shell="injector",reason="body_timeout"}"#
        ),
        "{metrics}"
    );
    let logged = cp.log_text().matches("refused a request").count();
    assert!(logged <= 20, "{logged} refusal lines in about 12 s");
    Ok(())
}

/// The body of a certificate request for shop/cart (a CSR for a fresh key).
fn cart_csr_body() -> String {
    let id = ca::SpiffeId::new("cluster.local", "shop", "cart").expect("id");
    let made = ca::csr::KeyAndRequest::generate(&id).expect("csr");
    json!({"csr": made.csr_pem}).to_string()
}

/// A POST to the certificate endpoint from `from` with `authorization` and a CSR for
/// shop/cart: the status.
async fn cert_request(
    from: &str,
    to: SocketAddr,
    bundle: &str,
    authorization: &str,
) -> Option<u16> {
    let mut tls = tls_from(from, to, bundle, &[]).await.ok()?;
    let body = cart_csr_body();
    let req = format!(
        "POST /v1/certificate HTTP/1.1\r\nhost: localhost\r\nauthorization: {authorization}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_flood_reaches_no_token_review_and_a_real_agent_is_served() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let ca = cp.addr("ca");
    cp.fake.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cart-0", "namespace": "shop", "labels": {"app": "cart"}},
        "spec": {"serviceAccountName": "cart", "containers": [{"name": "cart", "image": "cart:1"}]},
        "status": {"podIP": "127.0.0.62", "phase": "Running"}}));
    let token = cp.fake.mint_token("shop", "cart", &["rudder"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let sub = "system:serviceaccount:shop:cart";
    let jwt = testbed::fake_kube::jwt;
    // Refusable without asking anyone: not a JWT, another audience, expired, not yet
    // valid, not a ServiceAccount.
    let local: Arc<Vec<String>> = Arc::new(vec![
        "Bearer not-a-token".into(),
        format!(
            "Bearer {}",
            jwt(&json!({"aud": ["api"], "exp": now + 600, "sub": sub}))
        ),
        format!(
            "Bearer {}",
            jwt(&json!({"aud": ["rudder"], "exp": now - 600, "sub": sub}))
        ),
        format!(
            "Bearer {}",
            jwt(&json!({"aud": ["rudder"], "exp": now + 900, "nbf": now + 600, "sub": sub}))
        ),
        format!(
            "Bearer {}",
            jwt(&json!({"aud": ["rudder"], "exp": now + 600, "sub": "alice"}))
        ),
    ]);
    let sent = Arc::new(AtomicUsize::new(0));
    let flood_until = Instant::now() + Duration::from_secs(6);
    let mut flood = Vec::new();
    for t in 0..24 {
        let (bundle, local, sent) = (cp.bundle.clone(), local.clone(), sent.clone());
        flood.push(tokio::spawn(async move {
            let mut i = t;
            while Instant::now() < flood_until {
                let auth = &local[i % local.len()];
                i += 1;
                if cert_request(ATTACKER, ca, &bundle, auth).await.is_some() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // The real agent, from another address, is served every time during the flood.
    let auth = format!("Bearer {token}");
    let mut served = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let status = cert_request(LEGIT, ca, &cp.bundle, &auth).await;
        assert_eq!(
            status,
            Some(200),
            "the real agent's request\n{}",
            cp.log_text()
        );
        served += 1;
    }
    for f in flood {
        f.await?;
    }
    let flooded = sent.load(Ordering::Relaxed);
    assert!(flooded > 100, "the flood sent only {flooded} requests");
    // Only the real agent's requests were reviewed.
    assert_eq!(
        cp.token_reviews(),
        served,
        "TokenReviews sent to the API server"
    );

    // A JWT shaped right that the API server never minted is reviewed once, then
    // remembered.
    let forged = format!(
        "Bearer {}",
        jwt(&json!({"aud": ["rudder"], "exp": now + 600, "sub": sub}))
    );
    for _ in 0..20 {
        assert_eq!(
            cert_request(ATTACKER, ca, &cp.bundle, &forged).await,
            Some(401)
        );
    }
    assert_eq!(
        cp.token_reviews(),
        served + 1,
        "a refused token is reviewed once"
    );
    Ok(())
}

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// `GET /ready` from `from`: (status, body).
async fn ready_from(from: &str, to: SocketAddr) -> anyhow::Result<(u16, String)> {
    let tcp = connect_from(from, to).await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/ready")
        .header("host", "agent")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_request_heads_do_not_grow_the_agent_or_block_its_ready_port()
-> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let ca = ca::Authority::generate_root("cluster.local", std::time::SystemTime::now())?;
    // Nothing listens where the certificate endpoint would be: the agent keeps retrying
    // and its status says so.
    let nowhere = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let ready = work.path().join("agent.json");
    let mut cmd = Command::new(workspace_bin("xds-server")?);
    cmd.arg("agent")
        .arg("--cert-dir")
        .arg(work.path().join("creds"))
        .args(["--ca-address", &nowhere.to_string()])
        .args(["--status-address", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .env("RUDDER_TRUST_BUNDLE_PEM", ca.trust_bundle_pem())
        .env("RUDDER_LOG", "warn");
    let log = work.path().join("agent.log");
    let mut agent = Proc::spawn_logged("agent", cmd, &log)?;
    let pid = agent.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let mut status = None;
    wait_until(Duration::from_secs(10), "the agent's ready file", || {
        let running = agent.check_running();
        status = std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["status"].as_str()?.parse::<SocketAddr>().ok());
        let ok = status.is_some();
        async move { running.map(|()| ok) }
    })
    .await?;
    let status = status.ok_or_else(|| anyhow::anyhow!("no status address"))?;
    let (code, body) = ready_from(LEGIT, status).await?;
    assert!(code == 503 && body.contains("failures"), "{code} {body}");
    let before = rss_kib(pid);

    // 3000 connections from one address, each with 14 KiB of a request head that never
    // ends, kept open and trickling.
    let pad = format!(
        "GET /ready HTTP/1.1\r\nhost: agent\r\nx-pad: {}",
        "a".repeat(14 << 10)
    );
    let mut held = Vec::new();
    for _ in 0..3000 {
        let Ok(mut s) = connect_from(ATTACKER, status).await else {
            continue;
        };
        let _ = s.write_all(pad.as_bytes()).await;
        held.push(s);
    }
    let mut peak = rss_kib(pid);
    for i in 0..3 {
        for s in &mut held {
            let _ = s.try_write(b"a");
        }
        peak = peak.max(rss_kib(pid));
        let started = Instant::now();
        let answer = ready_from(LEGIT, status).await;
        let took = started.elapsed();
        let (code, body) = answer.map_err(|e| {
            anyhow::anyhow!(
                "/ready {i}: {e:#}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;
        assert!(code == 503 && body.contains("failures"), "{code} {body}");
        assert!(took < Duration::from_secs(1), "/ready {i} took {took:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(rss_kib(pid));
    }
    agent.check_running()?;
    let grown = peak.saturating_sub(before);
    eprintln!("agent VmRSS {before} KiB before, {peak} KiB at the peak of the flood");
    assert!(
        grown < 8 << 10,
        "the agent grew by {grown} KiB (from {before} KiB) under the flood"
    );
    Ok(())
}
