//! Routing by address under interception, with the init container's rules, real Envoys
//! and unmodified clients in network namespaces (see `common::netns`):
//! - a request to Service a's cluster IP carrying Service b's Host header goes to a and
//!   by a's route rules (the Gateway API mesh conformance's `MeshClusterIPMatching`), and
//!   the other way round;
//! - a request to a mesh pod's own IP and port reaches that pod over mTLS with no
//!   Service rule applied (`MeshFrontend`, "Send to pod IP");
//! - a call outside the mesh still passes through.
//!
//! Needs root, `ip`, `iptables` and `setpriv`: without them the test fails.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::netns::{PodNet, pod_workdir};
use testbed::manifests::{pod, slice};
use testbed::procs::{ControlPlane, Proc, free_port, wait_until, workspace_bin};

fn service(name: &str, cluster_ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {cluster_ip}\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

/// An HTTPRoute on Service `name` that marks what it routes with `x-echo-routed: NAME`.
fn marking_route(name: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}-mark, namespace: default}}\nspec:\n  parentRefs:\n    - {{group: \"\", kind: Service, name: {name}, port: 80}}\n  rules:\n    - filters:\n        - type: RequestHeaderModifier\n          requestHeaderModifier:\n            set: [{{name: x-echo-routed, value: {name}}}]\n      backendRefs: [{{name: {name}, port: 80}}]\n"
    )
}

/// The answering pod and the route mark of a response body.
fn who_and_mark(body: &str) -> (String, Option<String>) {
    let who = body
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let mark = body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("x-echo-routed="))
        .map(str::to_string);
    (who, mark)
}

#[tokio::test]
async fn the_address_decides_the_service_and_a_pod_address_reaches_the_pod() -> anyhow::Result<()> {
    let mut net = PodNet::new(249)?;
    let client = net.add_pod("client-0")?;
    let a = net.add_pod("a-0")?;
    let b = net.add_pod("b-0")?;
    let (work, manifests) = pod_workdir()?;
    std::fs::write(
        manifests.join("mesh.yaml"),
        [
            service("a", "10.96.1.11"),
            service("b", "10.96.1.12"),
            pod("client-0", "client", client.ip, "client"),
            pod("a-0", "a", a.ip, "a"),
            pod("b-0", "b", b.ip, "b"),
            slice("a-1", "a", "http", 8080, &[a.ip]),
            slice("b-1", "b", "http", 8080, &[b.ip]),
            marking_route("a"),
            marking_route("b"),
        ]
        .join("---\n"),
    )?;
    let cp = ControlPlane::start_on(&manifests, work.path(), net.host, &[]).await?;
    net.echo_in(&a, 8080, work.path())?;
    net.echo_in(&b, 8080, work.path())?;
    // A server outside the mesh, on the host.
    let outside = SocketAddr::new(net.host, free_port()?);
    let mut c = std::process::Command::new(workspace_bin("echo-backend")?);
    c.args(["--listen", &outside.to_string(), "--name", "outside"]);
    let _outside = Proc::spawn_logged("outside", c, &work.path().join("outside.log"))?;
    for (p, sa) in [(&client, "client"), (&a, "a"), (&b, "b")] {
        net.inject(p, sa, &cp, work.path()).await?;
    }

    let a_vip: SocketAddr = "10.96.1.11:80".parse()?;
    let b_vip: SocketAddr = "10.96.1.12:80".parse()?;
    let ready = wait_until(Duration::from_secs(30), "both Services routed", || {
        let client = client.clone();
        async move {
            let ok = |addr, host: &str, want: &str| {
                PodNet::get_from(&client, addr, host)
                    .is_ok_and(|body| who_and_mark(&body) == (want.into(), Some(want[..1].into())))
            };
            Ok(ok(a_vip, "a", "a-0") && ok(b_vip, "b", "b-0"))
        }
    })
    .await;
    if let Err(e) = ready {
        anyhow::bail!(
            "{e:#}\n{:?}\n{}\n--- control plane\n{}",
            PodNet::get_from(&client, a_vip, "a"),
            net.logs(work.path()),
            cp.log_text()
        );
    }

    // a's address with b's Host goes to a, by a's rules; and the other way round.
    for _ in 0..5 {
        let body = PodNet::get_from(&client, a_vip, "b")?;
        assert_eq!(
            who_and_mark(&body),
            ("a-0".into(), Some("a".into())),
            "{body}"
        );
        let body = PodNet::get_from(&client, b_vip, "a.default.svc.cluster.local")?;
        assert_eq!(
            who_and_mark(&body),
            ("b-0".into(), Some("b".into())),
            "{body}"
        );
    }

    // A pod's own address: that pod, no Service rule, whatever the Host says.
    for (target, name) in [(&a, "a-0"), (&b, "b-0")] {
        let addr = SocketAddr::new(target.ip, 8080);
        for host in [format!("{}", addr), "a".to_string()] {
            let body = PodNet::get_from(&client, addr, &host)?;
            assert_eq!(
                who_and_mark(&body),
                (name.into(), None),
                "{addr} Host {host}: {body}"
            );
        }
    }
    // Over mTLS: the pod-address chain carried them, and the pods' inbound listeners
    // (STRICT: mTLS only) did the handshakes.
    let pods = net.stats(&client, "^tcp.pod-address.downstream_cx_total$")?;
    assert!(
        pods.contains("tcp.pod-address.downstream_cx_total: 4"),
        "{pods}"
    );
    for target in [&a, &b] {
        let s = net.stats(target, "ssl.handshake$")?;
        assert!(
            s.lines()
                .any(|l| l.starts_with("listener.0.0.0.0_15006") && !l.ends_with(": 0")),
            "{}: {s}",
            target.name
        );
    }

    // Outside the mesh: straight through.
    let body = PodNet::get_from(&client, outside, &outside.to_string())?;
    assert_eq!(who_and_mark(&body).0, "outside", "{body}");
    drop(cp);
    drop(net);
    Ok(())
}
