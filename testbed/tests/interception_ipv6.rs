//! IPv6 under the init container's rules, in a network namespace with an IPv6 address
//! (joined to this one by a veth pair), with `xds-server iptables --apply` inside it:
//! - with the rules, IPv6 is intercepted as IPv4 is: inbound TCP to the app's port lands
//!   on the sidecar's inbound port, never on the app in plain text; an app's outbound
//!   TCP on the outbound port; the proxy's own goes out; the pod calling itself through
//!   the proxy goes to the inbound port, and the sidecar's hop to the app from `::6`
//!   (which `--apply` adds to `lo`) reaches the app;
//! - without `ip6tables` (missing, or failing), the init container fails in a pod with
//!   IPv6 instead of leaving IPv6 to bypass the sidecar (fail closed).
//!
//! Needs root, `ip`, `iptables`/`ip6tables` and `setpriv`: without them the tests fail.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::netns::{VethPod, get_in, get_in_from};
use testbed::procs::{Proc, wait_until, workspace_bin};

/// An IPv6 network of its own for this process (`fd7a:ID::/64`).
fn addresses() -> anyhow::Result<(IpAddr, IpAddr)> {
    let id = std::process::id() % 0xffff;
    Ok((
        format!("fd7a:{id:x}::1").parse()?,
        format!("fd7a:{id:x}::2").parse()?,
    ))
}

/// The answering backend's name for a GET from this namespace (the host side).
async fn from_host(addr: SocketAddr) -> anyhow::Result<String> {
    let r = testbed::http::get_via(addr, &format!("http://{addr}/")).await?;
    Ok(r.body
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// `xds-server iptables --apply` in `ns` with `PATH` set to `path` when given: its
/// status, output and error output.
fn apply_in(ns: &str, path: Option<&str>) -> anyhow::Result<(bool, String)> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    if let Some(path) = path {
        c.args(["env", &format!("PATH={path}")]);
    }
    let out = c
        .arg(workspace_bin("xds-server")?)
        .args(["iptables", "--apply"])
        .output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test]
async fn ipv6_is_intercepted_as_ipv4_is() -> anyhow::Result<()> {
    let (host_ip, pod_ip) = addresses()?;
    let pod = VethPod::new("6", host_ip, pod_ip, 64)?;
    let ns = pod.ns.clone();
    let work = tempfile::tempdir()?;
    let echo = workspace_bin("echo-backend")?;
    let mut procs = Vec::new();
    let mut start = |name: &str, inside: bool, addr: SocketAddr| -> anyhow::Result<()> {
        let mut cmd = if inside {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns]).arg(&echo);
            c
        } else {
            Command::new(&echo)
        };
        cmd.args(["--listen", &addr.to_string(), "--name", name]);
        let log = work.path().join(format!("{name}.log"));
        procs.push(Proc::spawn_logged(name, cmd, &log)?);
        Ok(())
    };
    let dest = SocketAddr::new(host_ip, 8080);
    start("direct", false, dest)?;
    // The "sidecar" ports and the app, on IPv6 (and IPv4) in the pod.
    start("outbound-sidecar", true, "[::]:15001".parse()?)?;
    start("inbound-sidecar", true, "[::]:15006".parse()?)?;
    start("app", true, "[::]:8080".parse()?)?;
    let app = SocketAddr::new(pod_ip, 8080);
    wait_until(Duration::from_secs(10), "the servers", || async move {
        Ok(tokio::net::TcpStream::connect(dest).await.is_ok()
            && tokio::net::TcpStream::connect(app).await.is_ok())
    })
    .await?;
    // Before the rules: the app answers IPv6 peers itself.
    assert_eq!(from_host(app).await?, "app");

    let (ok, out) = apply_in(&pod.ns, None)?;
    assert!(ok, "xds-server iptables --apply: {out}");

    // Inbound over IPv6: the sidecar's, never the app's plain-text port.
    for _ in 0..3 {
        assert_eq!(from_host(app).await?, "inbound-sidecar");
    }
    // Outbound: an app's to the outbound port, the proxy's straight out.
    assert_eq!(get_in(&pod.ns, 1000, dest)?, "outbound-sidecar");
    assert_eq!(get_in(&pod.ns, 1337, dest)?, "direct");
    // The pod calling itself: the proxy to the inbound port, its hop from ::6 to the
    // app; an app to itself, straight; the loopback, untouched.
    assert_eq!(get_in(&pod.ns, 1337, app)?, "inbound-sidecar");
    let source = Some("::6".parse()?);
    assert_eq!(get_in_from(&pod.ns, 1337, app, source)?, "app");
    assert_eq!(get_in(&pod.ns, 1000, app)?, "app");
    let loopback = SocketAddr::new("::1".parse()?, 8080);
    assert_eq!(get_in(&pod.ns, 1000, loopback)?, "app");
    drop(procs);
    drop(pod);
    Ok(())
}

#[tokio::test]
async fn without_ip6tables_a_pod_with_ipv6_does_not_start() -> anyhow::Result<()> {
    let (host_ip, pod_ip) = addresses()?;
    // Apart from the other test of this file, which may run at the same time.
    let (host_ip, pod_ip) = match (host_ip, pod_ip) {
        (IpAddr::V6(h), IpAddr::V6(p)) => {
            let (mut h, mut p) = (h.segments(), p.segments());
            h[2] = 1;
            p[2] = 1;
            (IpAddr::from(h), IpAddr::from(p))
        }
        other => other,
    };
    let pod = VethPod::new("n", host_ip, pod_ip, 64)?;
    // PATH with iptables-restore only (ip6tables-restore missing), then with an
    // ip6tables-restore that fails.
    let bin = tempfile::tempdir()?;
    let iptables_restore = Command::new("sh")
        .args(["-c", "command -v iptables-restore"])
        .output()?;
    let iptables_restore = String::from_utf8_lossy(&iptables_restore.stdout)
        .trim()
        .to_string();
    anyhow::ensure!(
        !iptables_restore.is_empty(),
        "iptables-restore is not installed (scripts/setup.sh)"
    );
    std::os::unix::fs::symlink(&iptables_restore, bin.path().join("iptables-restore"))?;
    let path = bin.path().display().to_string();
    let (ok, out) = apply_in(&pod.ns, Some(&path))?;
    assert!(!ok, "the init container succeeded without ip6tables: {out}");
    assert!(out.contains("IPv6") && out.contains("bypass"), "{out}");

    let failing = bin.path().join("ip6tables-restore");
    std::fs::write(&failing, "#!/bin/sh\ncat >/dev/null\nexit 1\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755))?;
    }
    let (ok, out) = apply_in(&pod.ns, Some(&path))?;
    assert!(
        !ok,
        "the init container succeeded though ip6tables failed: {out}"
    );
    assert!(out.contains("IPv6") && out.contains("bypass"), "{out}");
    drop(pod);
    Ok(())
}
