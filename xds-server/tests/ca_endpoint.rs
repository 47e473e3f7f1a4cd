//! The certificate endpoint over real TLS, with TokenReview against the fake API
//! server: an agent with a projected ServiceAccount token makes its key, gets a
//! certificate for it installed, renews with it, and serves `/ready`; wrong audiences,
//! unknown tokens, the control plane's namespace, requests for another identity and
//! anonymous callers are refused; once the identity's last pod is gone nothing is
//! issued; no answer ever carries a private key.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use testbed::fake_kube::FakeKube;
use xds_server::agent::client::{Credential, request};
use xds_server::agent::files;
use xds_server::agent::renewal::{AgentConfig, validity};
use xds_server::config::ConnLimits;
use xds_server::net::front_door::TlsSetup;
use xds_server::observability::metrics::Metrics;
use xds_server::pki::ca_service::{CaService, serve};
use xds_server::pki::certs::CertManager;
use xds_server::runtime::{Stop, control_plane_id};

/// Sends `raw` (a whole HTTP/1.1 request) over TLS without a client certificate,
/// trusting `bundle`: the raw answer.
async fn raw_https(addr: &str, bundle: &str, raw: &[u8]) -> String {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls");
    tls.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A POST with no client certificate and no Authorization header: the raw answer.
async fn anonymous_post(addr: &str, bundle: &str) -> String {
    let raw = b"POST /v1/certificate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n";
    raw_https(addr, bundle, raw).await
}

/// The pods the endpoint's liveness check sees: (namespace, name, service account).
type Pods = Arc<Mutex<Vec<(String, String, String)>>>;

struct Endpoint {
    addr: String,
    bundle: String,
    metrics: Arc<Metrics>,
    pods: Pods,
    _stop: Stop,
}

/// A certificate request for `ns/sa` made the way the agent makes one.
fn csr(ns: &str, sa: &str) -> String {
    let id = ca::SpiffeId::new("cluster.local", ns, sa).expect("id");
    ca::csr::KeyAndRequest::generate(&id).expect("csr").csr_pem
}

async fn start(fake: &FakeKube) -> Endpoint {
    let authority = ca::Authority::generate_root("cluster.local", SystemTime::now()).expect("ca");
    let certs = Arc::new(CertManager::new(authority));
    let pods: Pods = Arc::new(Mutex::new(vec![
        ("shop".into(), "cart-1".into(), "cart".into()),
        ("rudder-system".into(), "rudder-0".into(), "rudder".into()),
    ]));
    let seen = pods.clone();
    let serving = certs
        .issue_server(
            &control_plane_id("cluster.local").expect("id"),
            &["localhost".into(), "127.0.0.1".into()],
            Duration::from_secs(3600),
        )
        .expect("serving certificate");
    let tls = TlsSetup::from_pem(
        &serving.cert_chain_pem,
        serving.private_key_pem(),
        &certs.issuer_anchors(),
    )
    .expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("localhost:{}", listener.local_addr().expect("addr").port());
    let metrics = Arc::new(Metrics::new());
    let stop = Stop::default();
    tokio::spawn(serve(
        listener,
        tls,
        ConnLimits::default(),
        Arc::new(CaService::new(
            certs.clone(),
            Duration::from_secs(60),
            "cluster.local".into(),
            Some(fake.client()),
            metrics.clone(),
            Box::new(move |ns| {
                seen.lock()
                    .iter()
                    .filter(|(n, _, _)| n == ns)
                    .map(|(_, p, sa)| (p.clone(), sa.clone()))
                    .collect()
            }),
        )),
        stop.clone(),
    ));
    Endpoint {
        addr,
        bundle: certs.bundle_pem(),
        metrics,
        pods,
        _stop: stop,
    }
}

#[tokio::test]
async fn a_token_gets_its_service_account_identity_and_renews_only_with_a_token() {
    let fake = FakeKube::new();
    let tok_cart = fake.mint_token("shop", "cart", &["rudder"]);
    let ep = start(&fake).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{tok_cart}\n")).expect("token");
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, &ep.bundle).expect("bundle");
    let certs = dir.path().join("creds");
    let ready = dir.path().join("agent.json");
    let agent = tokio::spawn(xds_server::agent::renewal::run(AgentConfig {
        cert_dir: certs.clone(),
        endpoint: ep.addr.clone(),
        token_file: Some(token),
        trust_bundle: Some(bundle),
        expected_identity: Some(ca::SpiffeId::new("cluster.local", "shop", "cart").expect("id")),
        status_address: "127.0.0.1:0".parse().expect("addr"),
        ready_file: Some(ready.clone()),
        trust_domain: "cluster.local".into(),
        trust_bundle_pem: None,
        bootstrap: None,
        intercepted: None,
        grpc: false,
        xds_proxy: None,
        app_probes: Default::default(),
        proxy_stats: false,
        drain: None,
    }));
    testbed::procs::wait_until(
        Duration::from_secs(10),
        "the agent to install credentials",
        || {
            let certs = certs.clone();
            async move { Ok(files::read(&certs).is_some()) }
        },
    )
    .await
    .expect("installed");
    let (chain, key, _) = files::read(&certs).expect("credentials");
    let v = validity(&chain).expect("parses");
    assert_eq!(
        v.identity.map(|i| i.to_string()).as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/cart")
    );
    // /ready says so.
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).expect("ready file")).expect("json");
    let addr = status["status"]
        .as_str()
        .expect("status address")
        .parse()
        .expect("addr");
    let body = testbed::http::get_ok(addr, "/ready").await.expect("ready");
    assert!(body.contains("shop/sa/cart"), "{body}");
    // Where tokens are checked, the certificate alone does not renew (a stolen key must
    // not outlive its ServiceAccount); the token does.
    let err = request(
        &ep.addr,
        &ep.bundle,
        Credential::Certificate {
            chain: &chain,
            key: &key,
        },
        &csr("shop", "cart"),
    )
    .await
    .expect_err("a certificate alone is refused in cluster mode");
    assert!(format!("{err:#}").contains("401"), "{err:#}");
    let renewed = request(
        &ep.addr,
        &ep.bundle,
        Credential::Token(&tok_cart),
        &csr("shop", "cart"),
    )
    .await
    .expect("renewal by token");
    assert_eq!(renewed.spiffe_id, "spiffe://cluster.local/ns/shop/sa/cart");
    // A token for shop/cart does not get a certificate for another identity.
    let err = request(
        &ep.addr,
        &ep.bundle,
        Credential::Token(&tok_cart),
        &csr("shop", "admin"),
    )
    .await
    .expect_err("a request for another identity");
    let msg = format!("{err:#}");
    assert!(msg.contains("403") && msg.contains("exactly"), "{msg}");
    agent.abort();
    let text = ep.metrics.encode(&Default::default(), None);
    assert!(
        text.contains("rudder_certificate_requests_total{reason=\"issued\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_tokens_and_anonymous_callers_are_refused() {
    let fake = FakeKube::new();
    let api_audience = fake.mint_token("shop", "cart", &["api"]);
    let control_plane = fake.mint_token("rudder-system", "rudder", &["rudder"]);
    // Shaped right, but the API server never minted it.
    let forged = testbed::fake_kube::jwt(&serde_json::json!({
        "aud": ["rudder"], "exp": 4_000_000_000u64, "sub": "system:serviceaccount:shop:cart"}));
    let ep = start(&fake).await;
    for (token, want) in [
        (api_audience.as_str(), "401"),
        ("nope", "not a JWT"),
        (forged.as_str(), "invalid bearer token"),
        (control_plane.as_str(), "not issued here"),
    ] {
        let err = request(
            &ep.addr,
            &ep.bundle,
            Credential::Token(token),
            &csr("shop", "cart"),
        )
        .await
        .expect_err(token);
        assert!(format!("{err:#}").contains(want), "{token}: {err:#}");
    }
    // An empty token is malformed.
    let err = request(
        &ep.addr,
        &ep.bundle,
        Credential::Token(""),
        &csr("shop", "cart"),
    )
    .await
    .expect_err("empty token");
    assert!(format!("{err:#}").contains("400"), "{err:#}");
    // No credential at all: a plain HTTPS POST without certificate or Authorization.
    let answer = anonymous_post(&ep.addr, &ep.bundle).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // A client that does not trust our CA does not get as far as asking.
    let other = ca::Authority::generate_root("cluster.local", SystemTime::now()).expect("ca");
    let err = request(
        &ep.addr,
        &other.trust_bundle_pem(),
        Credential::Token(&api_audience),
        &csr("shop", "cart"),
    )
    .await
    .expect_err("unknown server");
    assert!(format!("{err:#}").contains("TLS"), "{err:#}");
}

/// Finding 3 of the security review: a certificate chain must not outlive the workload.
/// Renewals by token stop the moment the last pod of the identity is gone, and a token
/// bound to one pod stops working when that pod is deleted even while others run.
#[tokio::test]
async fn renewals_stop_when_the_identitys_last_pod_is_deleted() {
    let fake = FakeKube::new();
    let bound = fake.mint_pod_token("shop", "cart", "cart-1", &["rudder"]);
    let unbound = fake.mint_token("shop", "cart", &["rudder"]);
    let ep = start(&fake).await;
    ep.pods
        .lock()
        .push(("shop".into(), "cart-2".into(), "cart".into()));
    let ask = |token: &str| {
        let (addr, bundle, token) = (ep.addr.clone(), ep.bundle.clone(), token.to_string());
        async move {
            request(
                &addr,
                &bundle,
                Credential::Token(&token),
                &csr("shop", "cart"),
            )
            .await
        }
    };
    for _ in 0..3 {
        ask(&bound).await.expect("a renewal while cart-1 runs");
    }
    // cart-1 is deleted: its bound token gets nothing, though cart-2 still runs.
    ep.pods.lock().retain(|(_, p, _)| p != "cart-1");
    let err = ask(&bound).await.expect_err("cart-1 is gone");
    let msg = format!("{err:#}");
    assert!(msg.contains("403") && msg.contains("shop/cart-1"), "{msg}");
    ask(&unbound)
        .await
        .expect("an unbound token while cart-2 runs");
    // The last pod goes: nothing more for shop/cart.
    ep.pods.lock().clear();
    let err = ask(&unbound).await.expect_err("no pod left");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("403") && msg.contains("no pod runs as service account shop/cart"),
        "{msg}"
    );
    let text = ep.metrics.encode(&Default::default(), None);
    assert!(
        text.contains("rudder_certificate_requests_total{reason=\"no_live_pod\"} 2"),
        "{text}"
    );
}

/// Finding 5: the endpoint never answers with a private key, whatever it is asked.
#[tokio::test]
async fn answers_carry_a_certificate_and_never_a_key() {
    let fake = FakeKube::new();
    let tok_cart = fake.mint_token("shop", "cart", &["rudder"]);
    let ep = start(&fake).await;
    let body = serde_json::json!({"csr": csr("shop", "cart")}).to_string();
    let request = format!(
        "POST /v1/certificate HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {tok_cart}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_https(&ep.addr, &ep.bundle, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("BEGIN CERTIFICATE"), "{answer}");
    assert!(!answer.contains("PRIVATE KEY"), "{answer}");
    assert!(!answer.contains("private_key"), "{answer}");
}

/// Manifest mode renews with the current certificate, but only for an identity that a
/// running Pod in the manifests runs as: a certificate for an identity the manifests do
/// not know (or no longer know), or whose pod has finished, renews nothing.
#[tokio::test]
async fn manifest_mode_renews_only_identities_with_a_pod() -> anyhow::Result<()> {
    use testbed::procs::ControlPlane;
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    // web-1 runs; done-1 (a completed Job's pod, say) has finished.
    let finished = testbed::manifests::pod("done-1", "done", "127.0.0.72".parse()?, "done")
        .replace(
            "  podIP: 127.0.0.72\n",
            "  podIP: 127.0.0.72\n  phase: Succeeded\n",
        );
    assert!(finished.contains("phase: Succeeded"), "{finished}");
    std::fs::write(
        manifests.join("pods.yaml"),
        [
            testbed::manifests::pod("web-1", "web", "127.0.0.71".parse()?, "web"),
            finished,
        ]
        .join("---\n"),
    )?;
    let cp = ControlPlane::start(&manifests, work.path()).await?;
    let endpoint = cp.ca.to_string();
    for (sa, ok) in [("web", true), ("ghost", false), ("done", false)] {
        let creds =
            testbed::xds_client::Creds::issue(&cp.ca_dir(), "default", sa, &work.path().join(sa))?;
        let read = |f: &str| std::fs::read_to_string(creds.dir.join(f));
        let (chain, key, bundle) = (
            read("xds-client.crt")?,
            read("xds-client.key")?,
            read("xds-ca.crt")?,
        );
        let answer = request(
            &endpoint,
            &bundle,
            Credential::Certificate {
                chain: &chain,
                key: &key,
            },
            &csr("default", sa),
        )
        .await;
        match (ok, answer) {
            (true, Ok(issued)) => assert!(issued.spiffe_id.ends_with("/sa/web")),
            (false, Err(e)) => {
                let msg = format!("{e:#}");
                assert!(
                    msg.contains("403") && msg.contains(&format!("default/{sa}")),
                    "{msg}"
                );
            }
            (want, got) => panic!("{sa}: expected ok={want}, got {got:?}"),
        }
    }
    Ok(())
}
