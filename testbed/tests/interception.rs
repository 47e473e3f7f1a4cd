//! The injected init container's interception rules, installed for real: a network
//! namespace joined to this one by a veth pair, `xds-server iptables --apply` inside it
//! (exactly what the init container runs), and unmodified clients:
//! - an app's outbound TCP lands on the sidecar's outbound port (15001);
//! - the proxy's own UID (1337) goes straight out: Envoy's upstream traffic is not looped;
//! - excluded ports and loopback go straight out;
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

struct Netns {
    name: String,
    host_if: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A command that runs in network namespace `ns` as the proxy's UID and GID (1337),
/// as the injected agent and sidecar do: the program and its arguments follow.
fn as_proxy_in(ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "setpriv"]).args([
        "--reuid",
        "1337",
        "--regid",
        "1337",
        "--clear-groups",
    ]);
    c
}

fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// GET http://ADDR/ from inside `ns` as `uid`, with Python's standard library (an
/// unmodified client): the answering backend's name.
fn get_in(ns: &str, uid: u32, addr: SocketAddr) -> anyhow::Result<String> {
    let code = format!(
        "import urllib.request;print(urllib.request.urlopen('http://{addr}/',timeout=5).read().decode().split()[0])"
    );
    let uid = uid.to_string();
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &uid,
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        &code,
    ])
    .map(|s| s.trim().to_string())
}

#[tokio::test]
async fn init_container_rules_redirect_apps_but_not_the_proxy() -> anyhow::Result<()> {
    let id = std::process::id() % 200 + 20;
    let ns = format!("rudder-t{}", std::process::id());
    if let Err(e) = sh(&["ip", "netns", "add", &ns]) {
        anyhow::bail!("this machine cannot create network namespaces (root is needed): {e:#}");
    }
    let host_if = format!("rvh{}", std::process::id() % 100_000);
    let guard = Netns {
        name: ns.clone(),
        host_if: host_if.clone(),
    };
    let pod_if = format!("rvp{}", std::process::id() % 100_000);
    let (host_ip, pod_ip): (IpAddr, IpAddr) = (
        format!("10.251.{id}.1").parse()?,
        format!("10.251.{id}.2").parse()?,
    );
    sh(&[
        "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &pod_if,
    ])?;
    sh(&["ip", "link", "set", &pod_if, "netns", &ns])?;
    sh(&[
        "ip",
        "addr",
        "add",
        &format!("{host_ip}/30"),
        "dev",
        &host_if,
    ])?;
    sh(&["ip", "link", "set", &host_if, "up"])?;
    sh(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "ip",
        "addr",
        "add",
        &format!("{pod_ip}/30"),
        "dev",
        &pod_if,
    ])?;
    sh(&[
        "ip", "netns", "exec", &ns, "ip", "link", "set", &pod_if, "up",
    ])?;
    sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;

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

/// Namespaces on one bridge, removed on drop.
struct Net {
    bridge: String,
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
        for n in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Python's standard library as an unmodified TCP client: sends a line to ADDR from
/// inside `ns` as `uid` and prints what comes back.
fn tcp_in(ns: &str, uid: u32, addr: SocketAddr, line: &str) -> anyhow::Result<String> {
    let code = format!(
        "import socket;s=socket.create_connection(('{}',{}),timeout=5);s.sendall(b'{line}\\n');print(s.recv(100).decode().strip())",
        addr.ip(),
        addr.port()
    );
    let uid = uid.to_string();
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &uid,
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        &code,
    ])
    .map(|s| s.trim().to_string())
}

#[tokio::test]
async fn injected_pods_talk_over_mtls_by_original_destination() -> anyhow::Result<()> {
    use testbed::manifests::{pod, slice};
    use testbed::procs::{ControlPlane, envoy_binary, free_port};
    let tag = std::process::id() % 100_000;
    let bridge = format!("rbr{tag}");
    let mut net = Net {
        bridge: bridge.clone(),
        namespaces: Vec::new(),
        links: Vec::new(),
    };
    if let Err(e) = sh(&["ip", "link", "add", &bridge, "type", "bridge"]) {
        anyhow::bail!("this machine cannot create network devices (root is needed): {e:#}");
    }
    let subnet = 30 + (tag % 200);
    let host: IpAddr = format!("10.253.{subnet}.1").parse()?;
    sh(&["ip", "addr", "add", &format!("{host}/24"), "dev", &bridge])?;
    sh(&["ip", "link", "set", &bridge, "up"])?;
    let mut pod_ns = Vec::new();
    for (i, name) in ["client", "server"].iter().enumerate() {
        let ns = format!("r{name}{tag}");
        sh(&["ip", "netns", "add", &ns])?;
        net.namespaces.push(ns.clone());
        let (a, b) = (
            format!("r{}h{tag}", &name[..1]),
            format!("r{}p{tag}", &name[..1]),
        );
        sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        net.links.push(a.clone());
        sh(&["ip", "link", "set", &a, "master", &bridge])?;
        sh(&["ip", "link", "set", &a, "up"])?;
        sh(&["ip", "link", "set", &b, "netns", &ns])?;
        let ip: IpAddr = format!("10.253.{subnet}.{}", i + 2).parse()?;
        let exec = |args: &[&str]| -> anyhow::Result<String> {
            let mut v = vec!["ip", "netns", "exec", &ns];
            v.extend(args);
            sh(&v)
        };
        exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &b])?;
        exec(&["ip", "link", "set", &b, "up"])?;
        exec(&["ip", "link", "set", "lo", "up"])?;
        // Cluster IPs are virtual: a default route lets connect() reach the rules.
        exec(&["ip", "route", "add", "default", "via", &host.to_string()])?;
        pod_ns.push((ns, ip));
    }
    let (client_ns, client_ip) = pod_ns[0].clone();
    let (server_ns, server_ip) = pod_ns[1].clone();

    // The mesh: web (HTTP) and db (TCP) Services with cluster IPs, both on pod server-0.
    let work = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Envoy runs as the proxy UID and reads its files here.
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
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
    let echo = workspace_bin("echo-backend")?;
    let mut procs = Vec::new();
    let spawn_in =
        |ns: &str, name: &str, args: &[&str], procs: &mut Vec<Proc>| -> anyhow::Result<()> {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).args(args);
            procs.push(Proc::spawn_logged(
                name,
                c,
                &work.path().join(format!("{name}.log")),
            )?);
            Ok(())
        };
    spawn_in(
        &server_ns,
        "web-app",
        &[
            echo.to_str().unwrap_or_default(),
            "--listen",
            "0.0.0.0:8080",
            "--name",
            "server-0",
        ],
        &mut procs,
    )?;
    spawn_in(
        &server_ns,
        "db-app",
        &[
            "/usr/bin/python3",
            "-c",
            "import socketserver\nclass H(socketserver.StreamRequestHandler):\n  def handle(self):\n    self.wfile.write(b'pg:'+self.rfile.readline())\nsocketserver.ThreadingTCPServer.allow_reuse_address=True\nsocketserver.ThreadingTCPServer(('0.0.0.0',5432),H).serve_forever()\n",
        ],
        &mut procs,
    )?;
    let outside_port = free_port()?;
    let outside = SocketAddr::new(host, outside_port);
    let mut c = Command::new(&echo);
    c.args(["--listen", &outside.to_string(), "--name", "outside"]);
    procs.push(Proc::spawn_logged(
        "outside",
        c,
        &work.path().join("outside.log"),
    )?);

    // Each pod: the init container's rules, then Envoy as the proxy UID from an
    // intercepted bootstrap.
    let mut envoys = Vec::new();
    let mut agents = Vec::new();
    for (ns, ip, name, sa) in [
        (&client_ns, client_ip, "client-0", "client"),
        (&server_ns, server_ip, "server-0", "server"),
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(workspace_bin("xds-server")?)
            .args(["iptables", "--apply"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "iptables: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let certs = work.path().join(format!("certs-{name}"));
        let out = Command::new(workspace_bin("xds-server")?)
            .args(["bootstrap", "--namespace", "default", "--pod", name])
            .args(["--service-account", sa, "--pod-ip", &ip.to_string()])
            .args([
                "--xds-address",
                &cp.xds.to_string(),
                "--delta",
                "--intercepted",
            ])
            .arg("--ca-dir")
            .arg(cp.ca_dir())
            .arg("--cert-dir")
            .arg(&certs)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let boot = work.path().join(format!("envoy-{name}.json"));
        std::fs::write(&boot, &out.stdout)?;
        sh(&["chown", "-R", "1337:1337", &certs.display().to_string()])?;
        // The pod's agent, as the proxy UID: it serves Envoy the workload certificate on
        // the SDS socket in the credential directory.
        let mut a = as_proxy_in(ns);
        a.arg(workspace_bin("xds-server")?)
            .arg("agent")
            .arg("--cert-dir")
            .arg(&certs)
            .args(["--ca-address", &cp.ca.to_string()])
            .args(["--status-address", "127.0.0.1:0"]);
        let mut agent = Proc::spawn_logged(
            &format!("agent {name}"),
            a,
            &work.path().join(format!("agent-{name}.log")),
        )?;
        let socket = certs.join("sds.sock");
        wait_until(Duration::from_secs(10), "the agent's SDS socket", || {
            let running = agent.check_running();
            let ok = socket.exists();
            async move { running.map(|()| ok) }
        })
        .await?;
        agents.push(agent);
        let admin_file = work.path().join(format!("envoy-{name}.admin"));
        sh(&[
            "install",
            "-o",
            "1337",
            "-m",
            "644",
            "/dev/null",
            &admin_file.display().to_string(),
        ])?;
        let mut c = as_proxy_in(ns);
        c.arg(envoy_binary()?)
            .arg("-c")
            .arg(&boot)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--base-id", &(tag * 10 + envoys.len() as u32).to_string()]);
        envoys.push((
            name.to_string(),
            admin_file,
            Proc::spawn_logged(name, c, &work.path().join(format!("envoy-{name}.log")))?,
        ));
    }

    // An unmodified HTTP client calls web by its cluster IP.
    let web = "10.96.0.10:80".parse::<SocketAddr>()?;
    let reached = wait_until(Duration::from_secs(20), "web by its cluster IP", || {
        let ns = client_ns.clone();
        async move { Ok(get_in(&ns, 1000, web).is_ok_and(|who| who == "server-0")) }
    })
    .await;
    if let Err(e) = reached {
        let mut logs = String::new();
        for (name, _, _) in &envoys {
            logs += &format!(
                "--- envoy {name}\n{}\n",
                std::fs::read_to_string(work.path().join(format!("envoy-{name}.log")))?
            );
        }
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
    let stats = |admin_file: &std::path::Path, filter: &str| -> anyhow::Result<String> {
        let admin = std::fs::read_to_string(admin_file)?.trim().to_string();
        sh(&[
            "ip",
            "netns",
            "exec",
            if admin_file.to_string_lossy().contains("client") {
                &client_ns
            } else {
                &server_ns
            },
            "/usr/bin/python3",
            "-c",
            &format!(
                "import urllib.request;print(urllib.request.urlopen('http://{admin}/stats?filter={filter}').read().decode())"
            ),
        ])
    };
    let server_stats = stats(&envoys[1].1, "ssl.handshake$")?;
    assert!(
        server_stats
            .lines()
            .any(|l| l.starts_with("listener.0.0.0.0_15006") && !l.ends_with(": 0")),
        "{server_stats}"
    );
    let client_stats = stats(
        &envoys[0].1,
        "(tcp.*downstream_cx_total|downstream_cx_total)$",
    )?;
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
    let passthrough = stats(&envoys[0].1, "cluster.passthrough.upstream_cx_total$")?;
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
    let closed = stats(
        &envoys[1].1,
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
    for (_, _, p) in &mut envoys {
        p.check_running()?;
    }
    drop(envoys);
    drop(procs);
    drop(net);
    Ok(())
}
