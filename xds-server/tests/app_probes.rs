//! The agent's checks of the app for moved kubelet probes, against real servers: a gRPC
//! health check against real grpcio's wire protocol, and TCP connects, reached at a
//! non-loopback address from the interception's passthrough source (127.0.0.6) as in
//! an intercepted pod.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};

use xds_server::agent::app_probe::{AppProbe, PROBE_SOURCE, ProbeKind, ProbeTarget, run};

/// A grpcio server with the health service; killed on drop.
struct HealthServer {
    child: Child,
    port: u16,
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn health_server() -> anyhow::Result<HealthServer> {
    let script = testbed::procs::workspace_root().join("testbed/grpc/health_server.py");
    let mut child = Command::new(testbed::grpc_app::python()?)
        .arg(script)
        .args([
            "--serving",
            "",
            "--serving",
            "web.v1",
            "--not-serving",
            "db.v1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let Some(out) = child.stdout.take() else {
        anyhow::bail!("no stdout");
    };
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    let port = line.trim().parse()?;
    Ok(HealthServer { child, port })
}

fn probe(kind: ProbeKind, port: u16, service: &str) -> AppProbe {
    AppProbe {
        kind,
        port,
        path: "/".into(),
        headers: Vec::new(),
        service: service.into(),
        timeout_seconds: None,
    }
}

#[tokio::test]
async fn grpc_probes_pass_only_while_the_service_is_serving() -> anyhow::Result<()> {
    let server = health_server()?;
    let target = ProbeTarget::default();
    for (service, want) in [("", 200), ("web.v1", 200), ("db.v1", 503), ("nope", 503)] {
        assert_eq!(
            run(&probe(ProbeKind::Grpc, server.port, service), target).await,
            want,
            "service {service:?}"
        );
    }
    // Speaking gRPC to something that is not a gRPC server fails the probe.
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = http.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((s, _)) = http.accept().await {
            drop(s);
        }
    });
    assert_eq!(run(&probe(ProbeKind::Grpc, port, ""), target).await, 503);
    Ok(())
}

#[tokio::test]
async fn tcp_probes_connect_from_the_passthrough_source_and_fail_when_nothing_listens()
-> anyhow::Result<()> {
    // Any loopback address stands in for the pod IP here: the app listens on it alone.
    let pod_ip: IpAddr = "127.0.0.23".parse()?;
    let app = tokio::net::TcpListener::bind((pod_ip, 0)).await?;
    let port = app.local_addr()?.port();
    let target = ProbeTarget {
        ip: pod_ip,
        source: Some(PROBE_SOURCE),
    };
    let accept = tokio::spawn(async move { app.accept().await.map(|(_, peer)| peer) });
    assert_eq!(run(&probe(ProbeKind::Tcp, port, ""), target).await, 200);
    let peer = accept.await??;
    assert_eq!(peer.ip(), PROBE_SOURCE, "the probe comes from 127.0.0.6");
    // Closed port: the probe fails (a TCP probe on the sidecar would have passed).
    let closed = tokio::net::TcpListener::bind((pod_ip, 0)).await?;
    let closed_port = closed.local_addr()?.port();
    drop(closed);
    assert_eq!(
        run(&probe(ProbeKind::Tcp, closed_port, ""), target).await,
        503
    );
    Ok(())
}
