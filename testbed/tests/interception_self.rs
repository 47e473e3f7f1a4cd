//! Injected pods as real pods are: apps that listen where real apps do and pods that call
//! themselves, with the init container's rules, real sidecars (Envoy, then
//! rudder-proxy) and unmodified clients in network namespaces (see `common::netns`):
//! - an app listening only on its pod IP is reachable through the mesh (the sidecar
//!   forwards inbound to the pod's address, not to 127.0.0.1);
//! - a listener bound only to localhost is not exposed to the mesh, even on a Service's
//!   target port;
//! - a pod calling its own Service's cluster IP (one replica: itself) gets its own app's
//!   answer, over mTLS through its own inbound listener (the outbound side's connection
//!   to its own pod goes back to the inbound port, never as mTLS bytes to the app's
//!   plain-text port), and an app calling its own pod address reaches itself directly;
//! - a dual-stack pod's IPv6 app port never answers a peer in plain text.
//!
//! Needs root, `ip`, `iptables` and `setpriv`: without them the test fails.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::netns::{PodNet, pod_workdir};
use testbed::manifests::{pod, slice};
use testbed::procs::{ControlPlane, DataPlane, wait_until};

fn service(name: &str, cluster_ip: &str, port: u16, target: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {cluster_ip}\n  selector: {{app: server}}\n  ports: [{{name: http, port: {port}, targetPort: {target}}}]\n"
    )
}

/// The answering backend's name and the client certificate the sidecar forwarded.
fn who_and_xfcc(body: &str) -> (String, String) {
    let first = body.lines().next().unwrap_or_default();
    let who = first.split_whitespace().next().unwrap_or_default();
    let xfcc = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("xfcc="))
        .unwrap_or_default();
    (who.to_string(), xfcc.to_string())
}

async fn pods_reach_their_apps_where_they_listen_and_call_themselves(
    proxy: DataPlane,
) -> anyhow::Result<()> {
    // Apart from the other proxy's run of this scenario, which may run at the same time.
    let mut net = PodNet::new(if proxy == DataPlane::Envoy { 244 } else { 243 })?;
    net.proxy = proxy;
    let client = net.add_pod("client-0")?;
    let server = net.add_pod("server-0")?;
    let (work, manifests) = pod_workdir()?;
    std::fs::write(
        manifests.join("mesh.yaml"),
        [
            service("web", "10.96.2.10", 80, 8080),
            service("local", "10.96.2.20", 81, 9090),
            pod("client-0", "client", client.ip, "client"),
            pod("server-0", "server", server.ip, "server"),
            slice("web-1", "web", "http", 8080, &[server.ip]),
            slice("local-1", "local", "http", 9090, &[server.ip]),
        ]
        .join("---\n"),
    )?;
    let cp = ControlPlane::start_on(&manifests, work.path(), net.host, &[]).await?;
    // web's app listens on the pod IP only; local's on the loopback only (a debug or
    // admin port the app never meant to expose).
    net.echo_at(
        &server,
        SocketAddr::new(server.ip, 8080),
        "server-0",
        work.path(),
    )?;
    net.echo_at(
        &server,
        "127.0.0.1:9090".parse()?,
        "localhost-only",
        work.path(),
    )?;
    for (p, sa) in [(&client, "client"), (&server, "server")] {
        net.inject(p, sa, &cp, work.path()).await?;
    }

    let web: SocketAddr = "10.96.2.10:80".parse()?;
    let ready = wait_until(Duration::from_secs(30), "web from the client", || {
        let client = client.clone();
        async move {
            Ok(PodNet::get_from(&client, web, "web")
                .is_ok_and(|body| who_and_xfcc(&body).0 == "server-0"))
        }
    })
    .await;
    if let Err(e) = ready {
        anyhow::bail!(
            "{e:#}\n{:?}\n{}\n--- control plane\n{}",
            PodNet::get_from(&client, web, "web"),
            net.logs(work.path()),
            cp.log_text()
        );
    }
    // The app on its pod IP only: reached, over mTLS (the server's sidecar forwarded the
    // client's certificate).
    for _ in 0..5 {
        let body = PodNet::get_from(&client, web, "web")?;
        let (who, xfcc) = who_and_xfcc(&body);
        assert_eq!(who, "server-0", "{body}");
        assert!(xfcc.contains("/sa/client"), "{body}");
    }

    // The localhost-only listener is not the mesh's, though a Service targets its port.
    let local: SocketAddr = "10.96.2.20:81".parse()?;
    for _ in 0..3 {
        let r = PodNet::get_from(&client, local, "local");
        let e = match r {
            Ok(body) => panic!("a localhost-only listener answered the mesh: {body}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("503"), "{e}");
    }

    // The server calls its own Service: its own app answers, through its own inbound
    // side over mTLS (its own certificate forwarded), many times in a row.
    let self_call = wait_until(Duration::from_secs(10), "web from itself", || {
        let server = server.clone();
        async move {
            Ok(PodNet::get_from(&server, web, "web")
                .is_ok_and(|body| who_and_xfcc(&body).0 == "server-0"))
        }
    })
    .await;
    if let Err(e) = self_call {
        anyhow::bail!(
            "{e:#}\n{:?}\n{}",
            PodNet::get_from(&server, web, "web"),
            net.logs(work.path()),
        );
    }
    for _ in 0..10 {
        let body = PodNet::get_from(&server, web, "web")?;
        let (who, xfcc) = who_and_xfcc(&body);
        assert_eq!(who, "server-0", "{body}");
        assert!(xfcc.contains("/sa/server"), "{body}");
    }
    // An app calling its own pod address: itself, directly (no sidecar, no certificate).
    let own = SocketAddr::new(server.ip, 8080);
    for _ in 0..3 {
        let body = PodNet::get_from(&server, own, &own.to_string())?;
        assert_eq!(
            who_and_xfcc(&body),
            ("server-0".into(), "-".into()),
            "{body}"
        );
    }
    // Nothing looped: the server's inbound side passed nothing through to unnamed ports.
    let passthrough = net.stats(&server, "cluster.inbound-passthrough.upstream_cx_total$")?;
    assert!(
        passthrough.contains("cluster.inbound-passthrough.upstream_cx_total: 0"),
        "{passthrough}"
    );
    // The pod gains an IPv6 address (dual stack) and an app listening on IPv6: a peer's
    // IPv6 connection to it never reaches the app in plain text (the sidecar's inbound
    // listener is IPv4 here, so the redirected connection is refused).
    let v6 = net.add_ipv6(&server)?;
    net.echo_at(&server, "[::]:8081".parse()?, "v6-app", work.path())?;
    let v6_app = SocketAddr::new(v6, 8081);
    wait_until(Duration::from_secs(10), "the IPv6 app", || {
        let ns = server.ns.clone();
        async move {
            Ok(
                common::netns::get_in(&ns, 1000, "[::1]:8081".parse()?)
                    .is_ok_and(|w| w == "v6-app"),
            )
        }
    })
    .await?;
    // (The address is reachable: the agent's status port, which is not intercepted,
    // answers on it.)
    net.echo_at(&server, "[::]:15021".parse()?, "v6-status", work.path())?;
    let status = SocketAddr::new(v6, 15021);
    wait_until(
        Duration::from_secs(10),
        "the pod's IPv6 address",
        || async move {
            Ok(testbed::http::get_via(status, &format!("http://{status}/"))
                .await
                .is_ok_and(|r| r.body.starts_with("v6-status")))
        },
    )
    .await?;
    for _ in 0..3 {
        let r = testbed::http::get_via(v6_app, &format!("http://{v6_app}/")).await;
        assert!(
            r.as_ref().map_or(true, |r| !r.body.starts_with("v6-app")),
            "IPv6 bypassed the sidecar: {r:?}"
        );
    }
    net.check_running()?;
    drop(cp);
    drop(net);
    Ok(())
}

common::on_each_proxy!(pods_reach_their_apps_where_they_listen_and_call_themselves);
