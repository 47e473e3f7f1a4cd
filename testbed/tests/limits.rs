//! Limits on what an (authenticated or not) peer of the xDS port may open and send. Each
//! refusal is a clear gRPC status where the peer can still hear one, one log line, and a
//! count in `rudder_xds_refusals_total` or `rudder_xds_handshake_failures_total`.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::protobuf::{Value, value::Kind};
use testbed::procs::{ControlPlane, wait_until};
use testbed::xds_client::{Creds, ENDPOINT, RawAds, node};
use tokio::io::AsyncReadExt;

const WAIT: Duration = Duration::from_secs(15);

struct Setup {
    _work: tempfile::TempDir,
    cp: ControlPlane,
    creds: Creds,
}

async fn start(args: &[&str]) -> anyhow::Result<Setup> {
    let work = tempfile::tempdir()?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let cp = ControlPlane::start_with(&manifests, work.path(), args).await?;
    let creds = Creds::issue(&cp.ca_dir(), "default", "app", &work.path().join("c"))?;
    Ok(Setup {
        _work: work,
        cp,
        creds,
    })
}

fn app(n: usize) -> envoy_types::pb::envoy::config::core::v3::Node {
    node(
        &format!("app-{n}.default"),
        "default",
        &format!("app-{n}"),
        "app",
    )
}

async fn metrics(cp: &ControlPlane) -> anyhow::Result<String> {
    testbed::http::get_ok(cp.admin, "/metrics").await
}

async fn ended_with(c: &RawAds, text: &str) -> anyhow::Result<String> {
    c.wait_for(WAIT, "the stream to end", |r| r.ended.is_some())
        .await?;
    let ended = c.received().ended.unwrap_or_default();
    anyhow::ensure!(
        ended.contains(text),
        "ended with {ended:?}, expected {text:?}"
    );
    Ok(ended)
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() -> anyhow::Result<()> {
    let s = start(&["--tls-handshake-timeout", "1s"]).await?;
    let mut idle = tokio::net::TcpStream::connect(s.cp.xds).await?;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
        .await?
        .unwrap_or(0);
    let took = started.elapsed();
    assert_eq!(n, 0, "the server closed the connection");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    let text = metrics(&s.cp).await?;
    assert!(
        text.contains("rudder_xds_handshake_failures_total{reason=\"timeout\"} 1"),
        "{text}"
    );
    assert!(s.cp.log_text().contains("xDS TLS handshake timed out"));
    Ok(())
}

#[tokio::test]
async fn connections_over_the_per_peer_limit_are_refused_with_a_status() -> anyhow::Result<()> {
    let s = start(&["--max-connections-per-peer", "2"]).await?;
    let mut held = Vec::new();
    for i in 0..2 {
        let c = RawAds::delta(s.creds.channel(s.cp.xds).await?, app(i));
        c.wait_for(WAIT, "a response", |r| r.responses > 0).await?;
        held.push(c);
    }
    let third = RawAds::delta(s.creds.channel(s.cp.xds).await?, app(3));
    let ended = ended_with(&third, "--max-connections-per-peer 2").await?;
    assert!(
        ended.contains("127.0.0.1 has 2 connections open"),
        "{ended}"
    );
    assert!(
        metrics(&s.cp)
            .await?
            .contains("rudder_xds_refusals_total{limit=\"connections\"}")
    );
    assert!(
        s.cp.log_text()
            .contains("refused an xDS connection: over a connection limit")
    );
    // The first two are still served.
    for c in &held {
        assert!(c.received().ended.is_none());
    }
    // Once one closes, a new connection is admitted.
    drop(held.pop());
    let c = s.creds.clone();
    let addr = s.cp.xds;
    wait_until(WAIT, "a new connection to be admitted", || {
        let c = c.clone();
        async move {
            let fresh = RawAds::delta(c.channel(addr).await?, app(4));
            Ok(fresh
                .wait_for(Duration::from_secs(2), "a response", |r| r.responses > 0)
                .await
                .is_ok())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn connections_over_the_global_limit_are_refused_with_a_status() -> anyhow::Result<()> {
    let s = start(&["--max-connections", "1"]).await?;
    let first = RawAds::delta(s.creds.channel(s.cp.xds).await?, app(1));
    first
        .wait_for(WAIT, "a response", |r| r.responses > 0)
        .await?;
    let second = RawAds::sotw(s.creds.channel(s.cp.xds).await?, app(2));
    ended_with(&second, "--max-connections 1").await?;
    Ok(())
}

#[tokio::test]
async fn streams_over_the_per_connection_limit_are_refused() -> anyhow::Result<()> {
    let s = start(&["--max-streams-per-connection", "1"]).await?;
    let channel = s.creds.channel(s.cp.xds).await?;
    let first = RawAds::delta(channel.clone(), app(1));
    first
        .wait_for(WAIT, "a response", |r| r.responses > 0)
        .await?;
    let second = RawAds::delta(channel, app(2));
    ended_with(&second, "--max-streams-per-connection 1").await?;
    assert!(
        first.received().ended.is_none(),
        "the first stream is untouched"
    );
    assert!(
        metrics(&s.cp)
            .await?
            .contains("rudder_xds_refusals_total{limit=\"streams_per_connection\"}")
    );
    assert!(
        s.cp.log_text()
            .contains("too many streams on one connection")
    );
    Ok(())
}

#[tokio::test]
async fn a_message_over_the_size_limit_ends_the_stream() -> anyhow::Result<()> {
    let s = start(&["--max-message-bytes", "65536"]).await?;
    let mut big = app(1);
    big.metadata
        .get_or_insert_with(Default::default)
        .fields
        .insert(
            "junk".into(),
            Value {
                kind: Some(Kind::StringValue("x".repeat(100_000))),
            },
        );
    let c = RawAds::delta(s.creds.channel(s.cp.xds).await?, big);
    ended_with(&c, "too large").await?;
    assert!(c.received().certificate_identities().is_empty());
    assert!(
        metrics(&s.cp)
            .await?
            .contains("rudder_xds_refusals_total{limit=\"message_size\"}")
    );
    assert!(s.cp.log_text().contains("over the message size limit"));
    // A normal client on the same server is fine.
    let ok = RawAds::delta(s.creds.channel(s.cp.xds).await?, app(2));
    ok.wait_for(WAIT, "the trust bundle", |r| r.has_trust_bundle())
        .await?;
    Ok(())
}

#[tokio::test]
async fn subscribing_to_too_many_names_ends_the_stream() -> anyhow::Result<()> {
    let s = start(&["--max-subscribed-names", "10"]).await?;
    let names: Vec<String> = (0..11).map(|i| format!("outbound|{i}||x")).collect();
    let c = RawAds::delta_with(
        s.creds.channel(s.cp.xds).await?,
        app(1),
        vec![DeltaDiscoveryRequest {
            type_url: ENDPOINT.into(),
            resource_names_subscribe: names,
            ..Default::default()
        }],
    );
    ended_with(&c, "--max-subscribed-names").await?;
    assert!(
        metrics(&s.cp)
            .await?
            .contains("rudder_xds_refusals_total{limit=\"subscribed_names\"}")
    );
    assert!(
        s.cp.log_text()
            .contains("ending an ADS stream: over a limit")
    );
    Ok(())
}

#[tokio::test]
async fn subscriptions_are_bounded_across_requests_and_by_size() -> anyhow::Result<()> {
    let s = start(&["--max-subscribed-names", "10"]).await?;
    let req = |names: Vec<String>| DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: names,
        ..Default::default()
    };
    // Six, then six more: over the limit together.
    let c = RawAds::delta_with(
        s.creds.channel(s.cp.xds).await?,
        app(1),
        vec![
            req((0..6).map(|i| format!("a{i}")).collect()),
            req((0..6).map(|i| format!("b{i}")).collect()),
        ],
    );
    ended_with(&c, "--max-subscribed-names").await?;
    // Versions a reconnecting client claims count too.
    let c = RawAds::delta_with(
        s.creds.channel(s.cp.xds).await?,
        app(2),
        vec![DeltaDiscoveryRequest {
            type_url: ENDPOINT.into(),
            initial_resource_versions: (0..11).map(|i| (format!("v{i}"), "1".into())).collect(),
            ..Default::default()
        }],
    );
    ended_with(&c, "--max-subscribed-names").await?;
    // One name may not be a whole message.
    let c = RawAds::delta_with(
        s.creds.channel(s.cp.xds).await?,
        app(3),
        vec![req(vec!["n".repeat(600)])],
    );
    ended_with(&c, "longer than 512").await?;
    Ok(())
}
