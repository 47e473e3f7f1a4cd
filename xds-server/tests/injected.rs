//! An injected pod against the real control plane: `xds-server run --kubernetes` (the
//! binary) watches the fake API server over HTTP; its real injector webhook (HTTPS)
//! patches a Pod; the agent and Envoy start from the rendered containers (arguments and
//! environment as the patch says, with the pod's field references resolved and paths
//! and addresses mapped to this machine); the agent authenticates with a projected
//! ServiceAccount token (TokenReview) and a certificate request for a key it made,
//! writes the credentials and the bootstrap; Envoy starts from it, takes its workload
//! certificate from the agent over SDS on the pod's Unix socket, and reaches SYNCED in
//! `xdsctl status`. No xDS response in this cluster-mode setup carries a private key.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use testbed::fake_kube::FakeKube;
use testbed::kube_control_plane::KubeControlPlane;
use testbed::procs::{Proc, envoy_binary, wait_until, workspace_bin};

const POD_IP: &str = "127.0.0.61";

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
           "spec": {"serviceAccountName": "web",
                    "containers": [{"name": "web", "image": "example/web:1",
                                    "ports": [{"containerPort": 8080}]}]}})
}

/// POSTs `body` to `https://localhost:PORT/inject`, trusting `bundle`.
async fn post_review(addr: SocketAddr, bundle: &str, body: &Value) -> anyhow::Result<Value> {
    use http_body_util::BodyExt;
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(c?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::post("/inject")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))?;
    let resp = send.send_request(req).await?;
    anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&bytes)?)
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["initContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// A rendered container's arguments, with in-pod paths mapped under `root`.
fn args(c: &Value, root: &Path) -> Vec<String> {
    c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let a = a.as_str().expect("string");
            a.replace("/var/run/rudder", &root.display().to_string())
        })
        .collect()
}

/// Replaces the value after `flag`.
fn set(args: &mut [String], flag: &str, value: &str) {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} is not in {args:?}"));
    args[i + 1] = value.to_string();
}

#[tokio::test]
async fn an_injected_pod_authenticates_and_reaches_synced() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let fake = FakeKube::new();
    let mut running = pod();
    running["status"] = json!({"podIP": POD_IP});
    fake.apply(running);
    fake.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}));
    let token = fake.mint_token("shop", "web", &["rudder"]);

    // The control plane, in cluster mode, with its injector.
    let cp = KubeControlPlane::start(&fake, work.path(), "info,xds_server=debug").await?;
    let cp_log = cp.log.clone();
    let addrs = cp.addrs.clone();
    let addr = |k: &str| cp.addr(k);
    // Its CA lives in the Secret it created.
    let b64 = |k: &str| KubeControlPlane::ca_file(&fake, k);
    let bundle = b64("ca.crt")?;

    // The real webhook injects the pod (as the API server would call it).
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "shop", "operation": "CREATE", "object": pod()}});
    let answer = post_review(addr("injector")?, &bundle, &review).await?;
    let patch = base64::engine::general_purpose::STANDARD.decode(
        answer["response"]["patch"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no patch: {answer}"))?,
    )?;
    let ops: json_patch::Patch = serde_json::from_slice(&patch)?;
    let mut injected = pod();
    json_patch::patch(&mut injected, &ops)?;

    // The pod's volumes on this machine: the token the kubelet would project.
    let root = work.path().join("pod");
    std::fs::create_dir_all(root.join("token"))?;
    std::fs::write(root.join("token/token"), &token)?;

    // The agent, as rendered; the kubelet resolves the field references.
    let agent = container(&injected, "rudder-agent");
    let mut agent_args = args(agent, &root);
    set(
        &mut agent_args,
        "--ca-address",
        &addrs["ca"]
            .as_str()
            .unwrap_or_default()
            .replace("127.0.0.1", "localhost"),
    );
    set(
        &mut agent_args,
        "--xds-address",
        addrs["xds"].as_str().unwrap_or_default(),
    );
    set(&mut agent_args, "--status-address", "127.0.0.1:0");
    agent_args.extend(["--envoy-admin-address".into(), "127.0.0.1:0".into()]);
    let mut cmd = Command::new(workspace_bin("xds-server")?);
    cmd.args(&agent_args);
    for e in agent["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("name");
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => "web-0".to_string(),
            Some("metadata.namespace") => "shop".into(),
            Some("status.podIP") => POD_IP.into(),
            Some("spec.serviceAccountName") => "web".into(),
            Some(other) => panic!("unexpected field reference {other}"),
            None => e["value"].as_str().expect("value").to_string(),
        };
        cmd.env(name, value);
    }
    let agent_log = work.path().join("agent.log");
    let mut agent_proc = Proc::spawn_logged("agent", cmd, &agent_log)?;
    let bootstrap = root.join("creds/envoy.json");
    let written = wait_until(Duration::from_secs(15), "the agent's bootstrap", || {
        let running = agent_proc.check_running();
        let ok = bootstrap.exists();
        async move { running.map(|()| ok) }
    })
    .await;
    if let Err(e) = written {
        anyhow::bail!(
            "{e:#}\nagent:\n{}\ncontrol plane:\n{}",
            std::fs::read_to_string(&agent_log)?,
            std::fs::read_to_string(&cp_log)?
        );
    }
    let boot: Value = serde_json::from_str(&std::fs::read_to_string(&bootstrap)?)?;
    assert_eq!(boot["node"]["id"], "web-0.shop");
    assert_eq!(boot["node"]["metadata"]["rudder.dev/interception"], "true");

    // Envoy, as rendered.
    let proxy = container(&injected, "rudder-proxy");
    let envoy_log = work.path().join("envoy.log");
    let admin_file = work.path().join("envoy.admin");
    let mut cmd = Command::new(envoy_binary()?);
    cmd.args(args(proxy, &root))
        .arg("--admin-address-path")
        .arg(&admin_file)
        .args(["--base-id", &std::process::id().to_string()]);
    let mut envoy = Proc::spawn_logged("envoy", cmd, &envoy_log)?;

    // SYNCED, as xdsctl reports it.
    let ca_dir = work.path().join("ca");
    std::fs::create_dir_all(&ca_dir)?;
    std::fs::write(ca_dir.join("ca.crt"), &bundle)?;
    std::fs::write(ca_dir.join("ca.key"), b64("ca.key")?)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            ca_dir.join("ca.key"),
            std::fs::Permissions::from_mode(0o600),
        )?;
    }
    let creds = work.path().join("xdsctl");
    let out = Command::new(workspace_bin("xds-server")?)
        .args(["credentials", "--cert-dir"])
        .arg(&creds)
        .arg("--ca-dir")
        .arg(&ca_dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xds = addrs["xds"].as_str().unwrap_or_default().to_string();
    let synced = wait_until(
        Duration::from_secs(20),
        "the injected proxy to be SYNCED",
        || {
            let running = envoy.check_running();
            let out = Command::new(workspace_bin("xdsctl").expect("xdsctl"))
                .args(["--server", &xds, "--cert-dir"])
                .arg(&creds)
                .args(["status", "-o", "json"])
                .output();
            async move {
                running?;
                let rows: Value = serde_json::from_slice(&out?.stdout).unwrap_or_default();
                Ok(rows.as_array().is_some_and(|r| {
                    r.len() == 1
                        && r[0]["types"]
                            .as_object()
                            .is_some_and(|t| !t.is_empty() && t.values().all(|v| v == "SYNCED"))
                }))
            }
        },
    )
    .await;
    if let Err(e) = synced {
        anyhow::bail!(
            "{e:#}\nenvoy:\n{}\nagent:\n{}\ncontrol plane:\n{}",
            std::fs::read_to_string(&envoy_log)?,
            std::fs::read_to_string(&agent_log)?,
            std::fs::read_to_string(&cp_log)?
        );
    }
    // The agent got its identity through the token, and reports it.
    let log = std::fs::read_to_string(&cp_log)?;
    assert!(
        log.contains("signed a certificate request from an agent") && log.contains("shop/sa/web"),
        "{log}"
    );
    // Envoy's workload certificate came from the agent's SDS server, not from ADS.
    let admin: SocketAddr = std::fs::read_to_string(&admin_file)?.trim().parse()?;
    let stats = testbed::http::get_ok(admin, "/stats").await?;
    let stat = |name: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let agent_streams = stat(&format!(
        "cluster.{}.upstream_rq_total",
        translator::tls::AGENT_SDS_CLUSTER
    ));
    assert!(
        agent_streams >= 1 && stat("sds.default.update_success") >= 1,
        "no SDS from the agent:\n{stats}"
    );
    let certs = testbed::http::get_ok(admin, "/certs").await?;
    assert!(
        certs.contains("spiffe://cluster.local/ns/shop/sa/web"),
        "{certs}"
    );
    // On the wire, in cluster mode: a raw client of the same identity asking for every
    // type, and for the workload secret by name, is never sent a key or a certificate.
    let raw = testbed::xds_client::Creds::issue(&ca_dir, "shop", "web", &work.path().join("raw"))?;
    let client = testbed::xds_client::RawAds::delta(
        raw.channel(xds.parse()?).await?,
        testbed::xds_client::node("raw.shop", "shop", "web-0", "web"),
    );
    client
        .wait_for(Duration::from_secs(15), "the trust bundle", |r| {
            r.has_trust_bundle()
        })
        .await?;
    let got = client.received();
    assert_eq!(got.private_keys_seen(), 0, "{got:?}");
    assert!(got.certificate_identities().is_empty(), "{got:?}");
    // Cluster mode binds a proxy to its pod: deleted, its streams end and the proxy is
    // refused while it is gone.
    fake.delete("v1", "Pod", "shop", "web-0");
    let ended = wait_until(Duration::from_secs(15), "the stream to end", || {
        let log = std::fs::read_to_string(&cp_log).unwrap_or_default();
        async move {
            Ok(log.contains("ending the stream")
                && log.contains("pod shop/web-0 does not exist")
                && log.contains("refused xDS stream: its pod does not run"))
        }
    })
    .await;
    if let Err(e) = ended {
        anyhow::bail!("{e:#}\n{}", std::fs::read_to_string(&cp_log)?);
    }
    Ok(())
}
