//! The injected init container's interception rules, installed for real: a network
//! namespace joined to this one by a veth pair, `xds-server iptables --apply` inside it
//! (exactly what the init container runs), and unmodified clients:
//! - an app's outbound TCP lands on the sidecar's outbound port (15001);
//! - the proxy's own UID (1337) goes straight out: Envoy's upstream traffic is not looped;
//! - excluded ports and loopback go straight out;
//! - the pod calling itself: the proxy's connection to its own address goes to the
//!   inbound port (never mTLS bytes on the app's port), its hop to the app from
//!   127.0.0.6 reaches the app, an app's own call to its pod address goes straight;
//! - inbound TCP lands on the sidecar's inbound port (15006), except the agent's status
//!   port.
//!
//! And the whole path: two pods in their own namespaces on a bridge, each with the rules
//! and a real Envoy running as the proxy UID, against the real control plane; an
//! unmodified HTTP client and an unmodified TCP client call mesh Services by their
//! cluster IPs and get answers over mTLS, and a call to an address outside the mesh
//! passes through.
//!
//! Needs root (network namespaces, iptables; `scripts/setup.sh` installs iptables). On a
//! machine that cannot create a namespace the tests fail and say why: a test of
//! interception that did not intercept has not passed.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use testbed::procs::{Proc, wait_until, workspace_bin};

mod common;

use common::netns::{PodNet, VethPod, get_in, get_in_from, pod_workdir, python_in};

#[tokio::test]
async fn init_container_rules_redirect_apps_but_not_the_proxy() -> anyhow::Result<()> {
    let id = std::process::id() % 200 + 20;
    let (host_ip, pod_ip): (IpAddr, IpAddr) = (
        format!("10.251.{id}.1").parse()?,
        format!("10.251.{id}.2").parse()?,
    );
    let guard = VethPod::new("v", host_ip, pod_ip, 30)?;
    let ns = guard.ns.clone();

    // Destinations outside the pod, and the "sidecar" ports inside it.
    let work = tempfile::tempdir()?;
    let echo = workspace_bin("echo-backend")?;
    let mut procs = Vec::new();
    let mut start = |name: &str, ns: Option<&str>, addr: SocketAddr| -> anyhow::Result<()> {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&echo);
                c
            }
            None => Command::new(&echo),
        };
        cmd.args(["--listen", &addr.to_string(), "--name", name]);
        procs.push(Proc::spawn_logged(
            name,
            cmd,
            &work.path().join(format!("{name}.log")),
        )?);
        Ok(())
    };
    let (dest, excluded) = (
        SocketAddr::new(host_ip, 8080),
        SocketAddr::new(host_ip, 5432),
    );
    start("direct", None, dest)?;
    start("direct-excluded", None, excluded)?;
    start("outbound-sidecar", Some(&ns), "0.0.0.0:15001".parse()?)?;
    start("inbound-sidecar", Some(&ns), "0.0.0.0:15006".parse()?)?;
    start("agent", Some(&ns), "0.0.0.0:15021".parse()?)?;
    start("app", Some(&ns), "0.0.0.0:8080".parse()?)?;
    wait_until(Duration::from_secs(10), "the servers", || async move {
        Ok(tokio::net::TcpStream::connect(dest).await.is_ok())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Before the rules: everything goes where it is addressed.
    assert_eq!(get_in(&ns, 1000, dest)?, "direct");

    // The init container's job, with its arguments.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(workspace_bin("xds-server")?)
        .args(["iptables", "--apply", "--exclude-outbound-port", "5432"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "xds-server iptables --apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // An app's outbound call is the sidecar's; the proxy's own is not redirected.
    assert_eq!(get_in(&ns, 1000, dest)?, "outbound-sidecar");
    assert_eq!(get_in(&ns, 0, dest)?, "outbound-sidecar");
    assert_eq!(get_in(&ns, 1337, dest)?, "direct");
    // Excluded port and loopback: straight through.
    assert_eq!(get_in(&ns, 1000, excluded)?, "direct-excluded");
    // (The namespace's own loopback, not the machine's.)
    let app = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 8080);
    assert_eq!(get_in(&ns, 1000, app)?, "app");
    // The pod calling itself by its own address: an app goes straight to the app (no
    // sidecar between a pod and itself); the proxy (its outbound side calling its own
    // pod over mTLS) goes to the inbound port, not to the app's plain-text port; the
    // sidecar's hop to the app, from 127.0.0.6, reaches the app; the proxy's calls on
    // the loopback are left alone.
    let own = SocketAddr::new(pod_ip, 8080);
    assert_eq!(get_in(&ns, 1000, own)?, "app");
    assert_eq!(get_in(&ns, 1337, own)?, "inbound-sidecar");
    let inbound_source = Some(IpAddr::from([127, 0, 0, 6]));
    assert_eq!(get_in_from(&ns, 1337, own, inbound_source)?, "app");
    assert_eq!(get_in(&ns, 1337, app)?, "app");
    // Inbound: to the sidecar's inbound port, except the agent's status port.
    let from_host = |addr: SocketAddr| async move {
        testbed::http::get_via(addr, &format!("http://{addr}/"))
            .await
            .map(|r| {
                r.body
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
    };
    assert_eq!(
        from_host(SocketAddr::new(pod_ip, 8080)).await?,
        "inbound-sidecar"
    );
    assert_eq!(from_host(SocketAddr::new(pod_ip, 15021)).await?, "agent");
    drop(procs);
    drop(guard);
    Ok(())
}

/// Python's standard library as an unmodified TCP client: sends a line to ADDR from
/// inside `ns` as `uid` and prints what comes back.
fn tcp_in(ns: &str, uid: u32, addr: SocketAddr, line: &str) -> anyhow::Result<String> {
    let code = format!(
        "import socket;s=socket.create_connection(('{}',{}),timeout=5);s.sendall(b'{line}\\n');print(s.recv(100).decode().strip())",
        addr.ip(),
        addr.port()
    );
    python_in(ns, uid, &code)
}

async fn injected_pods_talk_over_mtls_by_original_destination(
    proxy: testbed::procs::DataPlane,
) -> anyhow::Result<()> {
    use testbed::manifests::{pod, slice};
    use testbed::procs::{ControlPlane, DataPlane, free_port};
    // Apart from the other proxy's run of this scenario, which may run at the same time.
    let mut net = PodNet::new(if proxy == DataPlane::Envoy { 253 } else { 252 })?;
    net.proxy = proxy;
    let client = net.add_pod("client-0")?;
    let server = net.add_pod("server-0")?;
    let (client_ns, client_ip) = (client.ns.clone(), client.ip);
    let server_ip = server.ip;
    let host = net.host;

    // The mesh: web (HTTP) and db (TCP) Services with cluster IPs, both on pod server-0.
    let (work, manifests) = pod_workdir()?;
    let service = |name: &str, port_name: &str, port: u16, target: u16, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {ip}\n  selector: {{app: server}}\n  ports: [{{name: {port_name}, port: {port}, targetPort: {target}}}]\n"
        )
    };
    std::fs::write(
        manifests.join("mesh.yaml"),
        [
            service("web", "http", 80, 8080, "10.96.0.10"),
            service("db", "tcp-pg", 5432, 5432, "10.96.0.20"),
            pod("client-0", "client", client_ip, "client"),
            pod("server-0", "server", server_ip, "server"),
            slice("web-1", "web", "http", 8080, &[server_ip]),
            slice("db-1", "db", "tcp-pg", 5432, &[server_ip]),
        ]
        .join("---\n"),
    )?;
    let cp = ControlPlane::start_on(&manifests, work.path(), host, &[]).await?;

    // Apps: an HTTP echo and a TCP echo in the server pod, a server outside the mesh on
    // the host, all unmodified.
    net.echo_in(&server, 8080, work.path())?;
    net.spawn_in(
        &server,
        "db-app",
        &[
            "/usr/bin/python3",
            "-c",
            "import socketserver\nclass H(socketserver.StreamRequestHandler):\n  def handle(self):\n    self.wfile.write(b'pg:'+self.rfile.readline())\nsocketserver.ThreadingTCPServer.allow_reuse_address=True\nsocketserver.ThreadingTCPServer(('0.0.0.0',5432),H).serve_forever()\n",
        ],
        work.path(),
    )?;
    let outside_port = free_port()?;
    let outside = SocketAddr::new(host, outside_port);
    let mut c = Command::new(workspace_bin("echo-backend")?);
    c.args(["--listen", &outside.to_string(), "--name", "outside"]);
    let _outside = Proc::spawn_logged("outside", c, &work.path().join("outside.log"))?;

    // Each pod: the init container's rules, then its agent and Envoy as the proxy UID
    // from an intercepted bootstrap.
    net.inject(&client, "client", &cp, work.path()).await?;
    net.inject(&server, "server", &cp, work.path()).await?;

    // An unmodified HTTP client calls web by its cluster IP.
    let web = "10.96.0.10:80".parse::<SocketAddr>()?;
    let reached = wait_until(Duration::from_secs(20), "web by its cluster IP", || {
        let ns = client_ns.clone();
        async move { Ok(get_in(&ns, 1000, web).is_ok_and(|who| who == "server-0")) }
    })
    .await;
    if let Err(e) = reached {
        let logs = net.logs(work.path());
        anyhow::bail!(
            "{e:#}\n{:?}\n{logs}\n--- control plane\n{}",
            get_in(&client_ns, 1000, web),
            cp.log_text()
        );
    }
    for _ in 0..20 {
        assert_eq!(get_in(&client_ns, 1000, web)?, "server-0");
    }
    // An unmodified TCP client reaches the database by its cluster IP.
    let db = "10.96.0.20:5432".parse::<SocketAddr>()?;
    for i in 0..5 {
        assert_eq!(
            tcp_in(&client_ns, 1000, db, &format!("q{i}"))?,
            format!("pg:q{i}")
        );
    }
    // Outside the mesh: straight through to where it was going.
    assert_eq!(get_in(&client_ns, 1000, outside)?, "outside");
    // Both hops were the sidecars', over mTLS: the server's inbound listener did the
    // handshakes; the client's Envoy proxied the TCP connections; no connection looped
    // back into a sidecar (Envoy's own traffic runs as UID 1337).
    let server_stats = net.stats(&server, "ssl.handshake$")?;
    assert!(
        server_stats
            .lines()
            .any(|l| l.starts_with("listener.0.0.0.0_15006") && !l.ends_with(": 0")),
        "{server_stats}"
    );
    let client_stats = net.stats(&client, "(tcp.*downstream_cx_total|downstream_cx_total)$")?;
    // The five TCP connections went through the db chain, the twenty-odd HTTP calls
    // through the Host router.
    assert!(
        client_stats.contains("tcp.db.default.svc.cluster.local_5432.downstream_cx_total: 5"),
        "{client_stats}"
    );
    assert!(
        client_stats
            .lines()
            .any(|l| l.starts_with("http.outbound.downstream_cx_total: ") && !l.ends_with(": 0")),
        "{client_stats}"
    );
    // Exactly the one call outside the mesh passed through: nothing looped back in.
    let passthrough = net.stats(&client, "cluster.passthrough.upstream_cx_total$")?;
    assert_eq!(
        passthrough.trim(),
        "cluster.passthrough.upstream_cx_total: 1",
        "{passthrough}"
    );
    // From outside the pod, the sidecar's own ports are closed: its outbound port would
    // be an open proxy speaking with the pod's identity, its inbound port a loop.
    for port in [15001u16, 15006] {
        let r = testbed::http::get_via(
            SocketAddr::new(server_ip, port),
            &format!("http://10.96.0.10:{port}/"),
        )
        .await;
        assert!(r.is_err(), "port {port} answered from outside: {r:?}");
    }
    let closed = net.stats(
        &server,
        "(tcp.blackhole.downstream_cx_total|cluster.inbound-passthrough.upstream_cx_total)$",
    )?;
    assert!(
        closed.contains("tcp.blackhole.downstream_cx_total: 2"),
        "{closed}"
    );
    assert!(
        closed.contains("cluster.inbound-passthrough.upstream_cx_total: 0"),
        "{closed}"
    );
    net.check_running()?;
    drop(net);
    Ok(())
}

common::on_each_proxy!(injected_pods_talk_over_mtls_by_original_destination);
