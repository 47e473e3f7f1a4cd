//! One authenticated workload cannot run the control plane out of memory (issue 21,
//! finding 2). A hostile identity, from several source addresses, opens every connection
//! and stream it is let open and (a) declares maximal request messages and sends all but
//! their last byte, (b) subscribes maximal sets of long names on every type. The control
//! plane's resident memory stays under a fixed bound, the partial messages are cut at the
//! message deadline, refusals name the identity's allowance, and a proxy of another
//! identity connects and gets its config meanwhile.

use parking_lot::Mutex;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use prost::Message;
use testbed::bench::procstat::rss_bytes;
use testbed::manifests::{pod, service, slice};
use testbed::procs::{ControlPlane, free_port};
use testbed::xds_client::{CLUSTER, Creds, ENDPOINT, LISTENER, ROUTE, RawAds, SECRET, node};
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

const WAIT: Duration = Duration::from_secs(20);
/// How far above its resident memory before the attack the control plane may go.
const RSS_BOUND: u64 = 80 << 20;
/// The default `--max-message-bytes`.
const MAX_MESSAGE: u32 = 4 << 20;
/// The default `--message-timeout`.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
const ADS: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/// How one hostile stream ended.
#[derive(Clone, Debug)]
struct Ended {
    lived: Duration,
    code: String,
    message: String,
}

fn grpc_status(map: &http::HeaderMap) -> Option<(String, String)> {
    let code = map.get("grpc-status")?.to_str().ok()?.to_string();
    let message = map
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, message))
}

/// gRPC percent-encodes its messages.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A gRPC frame header declaring `len` bytes.
fn header(len: u32) -> Bytes {
    let mut h = vec![0u8];
    h.extend_from_slice(&len.to_be_bytes());
    Bytes::from(h)
}

fn framed(m: &impl Message) -> Bytes {
    let body = m.encode_to_vec();
    let mut out = header(u32::try_from(body.len()).unwrap_or(u32::MAX)).to_vec();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// Opens a gRPC call to `path` whose request body is `chunks`, then nothing more (the
/// stream stays open), and returns how it ended. With `read` false the responses are not read
/// until `hold` has passed (a client that lets the server's responses pile up).
async fn raw_stream(
    mut channel: Channel,
    path: &str,
    chunks: Vec<Bytes>,
    hold: Duration,
) -> anyhow::Result<Ended> {
    let started = Instant::now();
    let frames = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(c))),
    )
    .chain(futures::stream::pending());
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(StreamBody::new(frames)))?;
    let resp = channel.ready().await?.call(req).await?;
    let ended = |(code, message): (String, String)| Ended {
        lived: started.elapsed(),
        code,
        message,
    };
    if let Some(s) = grpc_status(resp.headers()) {
        return Ok(ended(s));
    }
    tokio::time::sleep(hold.saturating_sub(started.elapsed())).await;
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(t) = frame.into_trailers() {
            return Ok(ended(grpc_status(&t).unwrap_or_default()));
        }
    }
    Ok(ended(("closed".into(), String::new())))
}

/// A maximal partial message: the declared length and all but its last byte.
fn partial_message() -> Vec<Bytes> {
    let zeros = Bytes::from(vec![0u8; 64 << 10]);
    let mut out = vec![header(MAX_MESSAGE)];
    let mut left = MAX_MESSAGE as usize - 1;
    while left > 0 {
        let n = left.min(zeros.len());
        out.push(zeros.slice(..n));
        left -= n;
    }
    out
}

/// Delta requests subscribing a maximal message's worth of 512-byte names on every type.
fn maximal_subscriptions(n: &Node, tag: &str) -> Vec<Bytes> {
    [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET]
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let names = (0..7_900)
                .map(|k| format!("{tag}-{i}-{k:06}-{}", "x".repeat(490)))
                .map(|mut s| {
                    s.truncate(512);
                    s
                })
                .collect();
            framed(&DeltaDiscoveryRequest {
                node: (i == 0).then(|| n.clone()),
                type_url: url.to_string(),
                resource_names_subscribe: names,
                ..Default::default()
            })
        })
        .collect()
}

fn attacker_node(i: usize) -> Node {
    node(
        &format!("attacker-{i}.evil"),
        "evil",
        &format!("attacker-{i}"),
        "attacker",
    )
}

/// Samples the control plane's resident memory until stopped; keeps the peak.
fn watch_rss(pid: u32, peak: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Some(rss) = rss_bytes(pid) {
                peak.fetch_max(rss, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

struct Attack {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ended: Arc<Mutex<Vec<Ended>>>,
    channels: Vec<Channel>,
}

impl Attack {
    fn ended(&self) -> Vec<Ended> {
        self.ended.lock().clone()
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens up to `conns` connections from each of `from`, and `streams` delta ADS streams
/// on each sending `chunks(stream index)`; stops opening once the control plane's
/// resident memory passes `stop_at` (the old code grows without bound).
#[allow(clippy::too_many_arguments)]
async fn attack(
    creds: &Creds,
    xds: SocketAddr,
    from: &[IpAddr],
    conns: usize,
    streams: usize,
    chunks: impl Fn(usize) -> Vec<Bytes>,
    hold: Duration,
    pid: u32,
    stop_at: u64,
) -> Attack {
    attack_on(
        &format!("/{ADS}/DeltaAggregatedResources"),
        creds,
        xds,
        from,
        conns,
        streams,
        chunks,
        hold,
        pid,
        stop_at,
    )
    .await
}

/// [`attack`] on the gRPC method at `path`.
#[allow(clippy::too_many_arguments)]
async fn attack_on(
    path: &str,
    creds: &Creds,
    xds: SocketAddr,
    from: &[IpAddr],
    conns: usize,
    streams: usize,
    chunks: impl Fn(usize) -> Vec<Bytes>,
    hold: Duration,
    pid: u32,
    stop_at: u64,
) -> Attack {
    let mut a = Attack {
        tasks: Vec::new(),
        ended: Arc::default(),
        channels: Vec::new(),
    };
    let mut k = 0;
    'open: for _ in 0..conns {
        for ip in from {
            if rss_bytes(pid).unwrap_or(0) > stop_at {
                break 'open;
            }
            let Ok(channel) = creds.channel_from(xds, Some(*ip)).await else {
                continue;
            };
            a.channels.push(channel.clone());
            for _ in 0..streams {
                let (ch, body, ended) = (channel.clone(), chunks(k), a.ended.clone());
                let path = path.to_string();
                k += 1;
                a.tasks.push(tokio::spawn(async move {
                    let e = raw_stream(ch, &path, body, hold)
                        .await
                        .unwrap_or_else(|e| Ended {
                            lived: Duration::ZERO,
                            code: "error".into(),
                            message: format!("{e:#}"),
                        });
                    ended.lock().push(e);
                }));
            }
        }
        // Let the streams send before opening more.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a
}

async fn gets_config(creds: &Creds, xds: SocketAddr, n: Node) -> anyhow::Result<RawAds> {
    let started = Instant::now();
    let c = RawAds::delta(creds.channel(xds).await?, n);
    c.wait_for(WAIT, "a legitimate proxy's config", |r| {
        r.has_trust_bundle() && !r.names(LISTENER).is_empty()
    })
    .await?;
    eprintln!(
        "a proxy of another identity got its config in {:?}",
        started.elapsed()
    );
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_push_the_control_plane_past_a_fixed_memory_bound() -> anyhow::Result<()>
{
    let work = tempfile::tempdir()?;
    let (cp, attacker, app) = start(work.path()).await?;
    let pid = cp.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let _first = gets_config(
        &app,
        cp.xds,
        node("app-0.default", "default", "app-0", "app"),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_bytes(pid).ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    let bound = baseline + RSS_BOUND;
    let peak = Arc::new(AtomicU64::new(baseline));
    let watcher = watch_rss(pid, peak.clone());
    let from: Vec<IpAddr> = (2..6).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    let check = |what: &str| -> anyhow::Result<()> {
        let p = peak.load(Ordering::Relaxed);
        anyhow::ensure!(
            p <= bound,
            "{what}: the control plane's RSS went from {} MiB to {} MiB, more than {} MiB above",
            baseline >> 20,
            p >> 20,
            RSS_BOUND >> 20
        );
        Ok(())
    };

    // (a) Three maximal partial messages that fit its allowance, held; then every
    // connection and stream it may open, each with another.
    let held = attack(
        &attacker,
        cp.xds,
        &from[..1],
        1,
        3,
        |_| partial_message(),
        Duration::ZERO,
        pid,
        bound,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = attack(
        &attacker,
        cp.xds,
        &from,
        64,
        8,
        |_| partial_message(),
        Duration::ZERO,
        pid,
        bound,
    )
    .await;
    eprintln!(
        "(a) {} connections, {} streams opened",
        a.channels.len() + held.channels.len(),
        a.tasks.len() + held.tasks.len()
    );
    eprintln!(
        "(a) RSS now {} MiB, peak {} MiB",
        rss_bytes(pid).unwrap_or(0) >> 20,
        peak.load(Ordering::Relaxed) >> 20
    );
    check("partial messages")?;
    // Meanwhile a proxy of another identity connects and gets its config.
    let _second = gets_config(
        &app,
        cp.xds,
        node("app-1.default", "default", "app-1", "app"),
    )
    .await?;
    check("partial messages")?;
    // The partial messages it could hold are cut at the deadline.
    let deadline = Instant::now() + MESSAGE_TIMEOUT + Duration::from_secs(10);
    while Instant::now() < deadline && held.ended().len() < held.tasks.len() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check("partial messages")?;
    let cut = held.ended();
    anyhow::ensure!(
        cut.len() == held.tasks.len()
            && cut.iter().all(|e| e.code == "4"
                && e.message.contains("--message-timeout")
                && e.lived >= MESSAGE_TIMEOUT
                && e.lived < MESSAGE_TIMEOUT + Duration::from_secs(5)),
        "partial messages are cut at the deadline: {cut:?}"
    );
    let ended = a.ended();
    let refused: Vec<&Ended> = ended
        .iter()
        .filter(|e| e.message.contains("--identity-memory-share"))
        .collect();
    anyhow::ensure!(
        refused.iter().all(|e| e.code == "8")
            && refused.iter().any(|e| e
                .message
                .contains("spiffe://cluster.local/ns/evil/sa/attacker")),
        "refusals name the identity and its allowance: {:?}",
        refused.iter().take(3).collect::<Vec<_>>()
    );
    let others: std::collections::BTreeSet<String> = ended
        .iter()
        .filter(|e| !e.message.contains("--identity-memory-share"))
        .map(|e| {
            format!(
                "{} {}",
                e.code,
                e.message.chars().take(120).collect::<String>()
            )
        })
        .collect();
    eprintln!("(a) other endings: {others:?}");
    eprintln!(
        "(a) {} cut at the deadline after {:?}; {} of {} more refused over the identity's allowance",
        cut.len(),
        cut.iter().map(|e| e.lived).max().unwrap_or_default(),
        refused.len(),
        ended.len()
    );
    eprintln!(
        "(a) RSS now {} MiB, peak {} MiB",
        rss_bytes(pid).unwrap_or(0) >> 20,
        peak.load(Ordering::Relaxed) >> 20
    );
    drop(a);
    drop(held);

    // (b) Maximal subscriptions of long names on every type, responses left unread: one
    // stream first (over the per-stream bound at its second type), then every connection
    // and stream it may open.
    let single = attack(
        &attacker,
        cp.xds,
        &from[..1],
        1,
        1,
        |k| maximal_subscriptions(&attacker_node(k), "single"),
        Duration::ZERO,
        pid,
        bound,
    )
    .await;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && single.ended().is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = single.ended();
    anyhow::ensure!(
        ended.len() == 1
            && ended[0].code == "8"
            && ended[0].message.contains("--max-subscribed-bytes"),
        "subscriptions are bounded per stream over every type: {ended:?}"
    );
    drop(single);
    let b = attack(
        &attacker,
        cp.xds,
        &from,
        2,
        8,
        |k| maximal_subscriptions(&attacker_node(k), &format!("s{k}")),
        Duration::from_secs(8),
        pid,
        bound,
    )
    .await;
    eprintln!(
        "(b) {} connections, {} streams opened",
        b.channels.len(),
        b.tasks.len()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!(
        "(b) RSS now {} MiB, peak {} MiB",
        rss_bytes(pid).unwrap_or(0) >> 20,
        peak.load(Ordering::Relaxed) >> 20
    );
    check("maximal subscriptions")?;
    let _third = gets_config(
        &app,
        cp.xds,
        node("app-2.default", "default", "app-2", "app"),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    check("maximal subscriptions")?;
    let ended = b.ended();
    anyhow::ensure!(
        ended.iter().any(|e| e.code == "8"
            && e.message.contains("--identity-memory-share")
            && e.message
                .contains("spiffe://cluster.local/ns/evil/sa/attacker")),
        "subscriptions are refused over the identity's allowance: {:?}",
        ended.iter().map(|e| &e.message).take(5).collect::<Vec<_>>()
    );
    watcher.abort();
    let metrics = testbed::http::get_ok(cp.admin, "/metrics").await?;
    for limit in ["identity_memory", "message_timeout", "subscribed_bytes"] {
        anyhow::ensure!(
            metrics.contains(&format!("rudder_xds_refusals_total{{limit=\"{limit}\"}}")),
            "{limit} refusals are counted"
        );
    }
    anyhow::ensure!(
        cp.log_text()
            .contains("spiffe://cluster.local/ns/evil/sa/attacker"),
        "refusals are logged with the identity"
    );
    eprintln!(
        "RSS: {} MiB before, peak {} MiB (bound {} MiB above)",
        baseline >> 20,
        peak.load(Ordering::Relaxed) >> 20,
        RSS_BOUND >> 20
    );
    Ok(())
}

/// Setup shared by the tests: a control plane, a hostile identity's and a proxy's
/// credentials.
async fn start(work: &std::path::Path) -> anyhow::Result<(ControlPlane, Creds, Creds)> {
    let manifests = work.join("manifests");
    std::fs::create_dir(&manifests)?;
    let port = free_port()?;
    let ip: IpAddr = "127.0.0.41".parse()?;
    std::fs::write(
        manifests.join("mesh.yaml"),
        [
            service("app", "http", 80, port, None),
            pod("app-0", "app", ip, "app"),
            pod("app-1", "app", "127.0.0.42".parse()?, "app"),
            slice("app-a", "app", "http", port, &[ip]),
        ]
        .join("---\n"),
    )?;
    let cp = ControlPlane::start(&manifests, work).await?;
    let attacker = Creds::issue(&cp.ca_dir(), "evil", "attacker", &work.join("a"))?;
    let app = Creds::issue(&cp.ca_dir(), "default", "app", &work.join("b"))?;
    Ok((cp, attacker, app))
}

/// CSDS (proxy status, for the control plane's own identities) is also on the xDS port:
/// a workload's maximal partial requests there are refused before any of them is read
/// (tonic reads a unary request whole, reserving its declared length, before the handler
/// that checks the caller runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_cannot_make_the_status_service_read_its_requests() -> anyhow::Result<()> {
    const BOUND: u64 = 32 << 20;
    let work = tempfile::tempdir()?;
    let (cp, attacker, app) = start(work.path()).await?;
    let pid = cp.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let baseline = rss_bytes(pid).ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    let peak = Arc::new(AtomicU64::new(baseline));
    let watcher = watch_rss(pid, peak.clone());
    let from: Vec<IpAddr> = (2..4).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    let a = attack_on(
        "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus",
        &attacker,
        cp.xds,
        &from,
        8,
        8,
        |_| partial_message(),
        Duration::ZERO,
        pid,
        baseline + BOUND,
    )
    .await;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && a.ended().len() < a.tasks.len() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.abort();
    let p = peak.load(Ordering::Relaxed);
    anyhow::ensure!(
        p <= baseline + BOUND,
        "the control plane's RSS went from {} MiB to {} MiB",
        baseline >> 20,
        p >> 20
    );
    let ended = a.ended();
    anyhow::ensure!(
        ended.len() == a.tasks.len()
            && ended
                .iter()
                .all(|e| e.code == "7" && e.message.contains("may not read proxy status")),
        "{} of {} calls ended, each refused at once: {:?}",
        ended.len(),
        a.tasks.len(),
        ended.iter().take(3).collect::<Vec<_>>()
    );
    gets_config(
        &app,
        cp.xds,
        node("app-0.default", "default", "app-0", "app"),
    )
    .await?;
    eprintln!(
        "{} status calls refused; RSS {} MiB before, peak {} MiB",
        ended.len(),
        baseline >> 20,
        p >> 20
    );
    Ok(())
}
