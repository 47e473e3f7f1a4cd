//! The `rudder-cni` plugin run as a container runtime runs it: the built binary with
//! only the CNI environment (CNI_COMMAND, CNI_NETNS=/var/run/netns/NAME, CNI_ARGS with
//! the pod, ...) and the chained network configuration (with `prevResult`) on stdin,
//! against real network namespaces and the pod served by the fake API server:
//! - a meshed pod (the injector's CNI-mode annotations) gets Rudder's chains, IPv4 and
//!   IPv6, in its own namespace only; the result passed on is the previous plugin's; an
//!   app's outbound TCP then lands on the sidecar's outbound port, the proxy UID's and
//!   excluded ports' do not;
//! - a pod that is not meshed, and a pod of a skipped namespace, get nothing;
//! - a meshed pod whose rules cannot be installed, or whose API server cannot be asked,
//!   fails the ADD with the spec's error JSON (the pod must not start unintercepted);
//! - the injected pod's `rudder-cni validate` passes with the rules, fails without;
//! - DEL, CHECK and VERSION answer.
//!
//! Needs root (network namespaces), `ip`, `iptables`/`ip6tables` and `setpriv`; a
//! machine without them fails these tests and says why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use testbed::fake_kube::FakeKube;
use testbed::procs::{Proc, wait_until, workspace_bin};

mod common;

use common::netns::{get_in, sh};

/// A network namespace with a veth link (so connect() finds a route and reaches the
/// rules), removed on drop.
struct Netns(String);

impl Netns {
    fn new(suffix: &str) -> anyhow::Result<Netns> {
        let name = format!("rcni{}{suffix}", std::process::id() % 100_000);
        if let Err(e) = sh(&["ip", "netns", "add", &name]) {
            anyhow::bail!("this machine cannot create network namespaces (root is needed): {e:#}");
        }
        let ns = Netns(name);
        for args in [
            &["ip", "link", "set", "lo", "up"][..],
            // Both ends inside: nothing on the host to clean up.
            &[
                "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
            ],
            &["ip", "link", "set", "eth1", "up"],
            &["ip", "addr", "add", "10.200.0.5/24", "dev", "eth0"],
            &[
                "ip",
                "-6",
                "addr",
                "add",
                "fd00:200::5/64",
                "dev",
                "eth0",
                "nodad",
            ],
            &["ip", "link", "set", "eth0", "up"],
            &["ip", "route", "add", "default", "dev", "eth0"],
        ] {
            ns.exec(args)?;
        }
        Ok(ns)
    }

    fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.0)
    }

    fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut v = vec!["ip", "netns", "exec", &self.0];
        v.extend(args);
        sh(&v)
    }

    /// The nat table as `iptables-save` (or `ip6tables-save`) prints it, without its
    /// comments (they carry the time).
    fn nat(&self, v6: bool) -> anyhow::Result<String> {
        let save = if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        };
        let out = self.exec(&[save, "-t", "nat"])?;
        Ok(out
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A pod the injector injected in CNI mode.
fn meshed_pod(namespace: &str, name: &str) -> Value {
    let interception = json!({"outboundPort": 15001, "inboundPort": 15006, "proxyUid": 1337,
        "agentStatusPort": 15021, "excludeOutboundPorts": [5432], "excludeInboundPorts": [],
        "excludeCidrs": ["fd00:300::/64"]});
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": {
            "rudder.dev/status": "injected",
            "rudder.dev/interception": interception.to_string()}},
        "spec": {"initContainers": [{"name": "rudder-agent"}, {"name": "rudder-proxy"}],
                 "containers": [{"name": "app"}]}})
}

fn plain_pod(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app"}]}})
}

/// What the network plugin before ours returned.
fn prev_result(ns: &Netns) -> Value {
    json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:c8:00:05", "sandbox": ns.path()}],
        "ips": [{"address": "10.200.0.5/24", "gateway": "10.200.0.1", "interface": 0},
                {"address": "fd00:200::5/64", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.96.0.10"]}})
}

/// The plugin's output and exit status for one call.
struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} {}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs the plugin with only the CNI environment, as a runtime does.
async fn cni(
    command: &str,
    netns: Option<&Path>,
    pod: (&str, &str),
    conf: &Value,
) -> anyhow::Result<Outcome> {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::process::Command::new(workspace_bin("rudder-cni")?);
    c.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "3f2a9c1b")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID=3f2a9c1b",
                pod.0, pod.1
            ),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(netns) = netns {
        c.env("CNI_NETNS", netns);
    }
    let mut child = c.spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
    stdin.write_all(conf.to_string().as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await??;
    Ok(Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn conf(kubeconfig: &Path, prev: Option<Value>) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "rudder-cni",
                       "kubeconfig": kubeconfig, "excludeNamespaces": ["kube-system"],
                       "timeoutSeconds": 5});
    if let Some(p) = prev {
        c["prevResult"] = p;
    }
    c
}

/// The fake API server on a free port, with a kubeconfig for it in `dir`.
async fn api_server(
    dir: &Path,
) -> anyhow::Result<(FakeKube, PathBuf, tokio::task::JoinHandle<()>)> {
    let fake = FakeKube::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let serving = fake.clone();
    let task = tokio::spawn(async move { serving.serve_http(listener).await });
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, FakeKube::kubeconfig(addr))?;
    Ok((fake, kubeconfig, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meshed_pods_rules_are_installed_in_its_namespace_and_intercept() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let (fake, kubeconfig, _api) = api_server(work.path()).await?;
    fake.apply(meshed_pod("shop", "web-0"));
    let ns = Netns::new("m")?;
    let other = Netns::new("o")?;
    let prev = prev_result(&ns);

    let out = cni(
        "ADD",
        Some(&ns.path()),
        ("shop", "web-0"),
        &conf(&kubeconfig, Some(prev.clone())),
    )
    .await?;
    assert!(out.ok, "ADD failed: {} {}", out.stdout, out.stderr);
    // The previous plugin's result, passed on as it was.
    assert_eq!(out.json(), prev);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/shop/pods/web-0")),
        "{:?}",
        fake.requests()
    );
    let v4 = ns.nat(false)?;
    for rule in [
        ":RUDDER_OUTPUT",
        "-A OUTPUT -p tcp -j RUDDER_OUTPUT",
        "-A RUDDER_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A RUDDER_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
        "-A RUDDER_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A RUDDER_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
    ] {
        assert!(v4.contains(rule), "{rule} missing in\n{v4}");
    }
    let v6 = ns.nat(true)?;
    assert!(
        v6.contains("-A RUDDER_OUTPUT -d fd00:300::/64 -j RETURN"),
        "{v6}"
    );
    // The IPv6 inbound source the sidecar connects to the app from.
    let lo = ns.exec(&["ip", "-6", "addr", "show", "dev", "lo"])?;
    assert!(lo.contains("inet6 ::6/128"), "{lo}");
    // A repeated ADD (a runtime's retry) changes nothing.
    let again = cni(
        "ADD",
        Some(&ns.path()),
        ("shop", "web-0"),
        &conf(&kubeconfig, Some(prev.clone())),
    )
    .await?;
    assert!(again.ok, "ADD again: {} {}", again.stdout, again.stderr);
    assert_eq!(ns.nat(false)?, v4);
    // Only that pod's namespace.
    assert!(
        !other.nat(false)?.contains("RUDDER"),
        "another namespace got rules"
    );
    // CHECK finds them.
    let out = cni(
        "CHECK",
        Some(&ns.path()),
        ("shop", "web-0"),
        &conf(&kubeconfig, Some(prev.clone())),
    )
    .await?;
    assert!(
        out.ok && out.stdout.is_empty(),
        "CHECK: {} {}",
        out.stdout,
        out.stderr
    );

    // The injected pod's first container (unprivileged) passes where the rules are, and
    // fails the pod, saying why, where they are not.
    let validate = |ns: &Netns| {
        let bin = workspace_bin("rudder-cni")?;
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(bin)
            .args(["validate", "--timeout-seconds", "3"])
            .output()?;
        anyhow::Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, log) = validate(&ns)?;
    assert!(ok, "validate in the meshed pod: {log}");
    let (ok, log) = validate(&other)?;
    assert!(
        !ok && log.contains("not intercepted"),
        "validate without rules: {log}"
    );

    // Interception works: an app's call to anywhere lands on the sidecar's outbound
    // port; the proxy's own traffic and the excluded port go where they are addressed.
    let echo = workspace_bin("echo-backend")?;
    let mut procs = Vec::new();
    for (name, listen) in [
        ("outbound-sidecar", "0.0.0.0:15001"),
        ("excluded", "10.200.0.5:5432"),
    ] {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.0])
            .arg(&echo)
            .args(["--listen", listen, "--name", name]);
        procs.push(Proc::spawn_logged(
            name,
            c,
            &work.path().join(format!("{name}.log")),
        )?);
    }
    let sidecar_up = || async { Ok(get_in(&ns.0, 0, "10.200.0.5:15001".parse()?).is_ok()) };
    wait_until(Duration::from_secs(10), "the listeners", sidecar_up).await?;
    let far: SocketAddr = "198.51.100.7:80".parse()?;
    assert_eq!(get_in(&ns.0, 1000, far)?, "outbound-sidecar");
    assert_eq!(get_in(&ns.0, 1000, "10.200.0.5:5432".parse()?)?, "excluded");
    assert!(
        get_in(&ns.0, 1337, far).is_err(),
        "the proxy UID's traffic is not redirected (and nothing answers there)"
    );

    // DEL: nothing to undo, and it succeeds even without a namespace.
    let out = cni(
        "DEL",
        Some(&ns.path()),
        ("shop", "web-0"),
        &conf(&kubeconfig, None),
    )
    .await?;
    assert!(
        out.ok && out.stdout.is_empty(),
        "DEL: {} {}",
        out.stdout,
        out.stderr
    );
    let out = cni("DEL", None, ("shop", "gone"), &conf(&kubeconfig, None)).await?;
    assert!(out.ok, "DEL without a namespace: {}", out.stderr);
    drop(procs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_outside_the_mesh_get_nothing_and_failures_fail_the_add() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let (fake, kubeconfig, _api) = api_server(work.path()).await?;
    fake.apply(plain_pod("shop", "batch-0"));
    fake.apply(meshed_pod("shop", "web-1"));
    let ns = Netns::new("p")?;
    let prev = prev_result(&ns);
    let conf_ok = conf(&kubeconfig, Some(prev.clone()));

    // Not meshed: passed through, no rules.
    let out = cni("ADD", Some(&ns.path()), ("shop", "batch-0"), &conf_ok).await?;
    assert!(out.ok, "ADD: {} {}", out.stdout, out.stderr);
    assert_eq!(out.json(), prev);
    assert!(!ns.nat(false)?.contains("RUDDER"));

    // A skipped namespace is not even looked up (its API server is not asked).
    let before = fake.requests().len();
    let out = cni(
        "ADD",
        Some(&ns.path()),
        ("kube-system", "coredns-1"),
        &conf_ok,
    )
    .await?;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(fake.requests().len(), before);

    // A meshed pod whose rules cannot be installed fails, in the spec's error format.
    let mut broken = conf_ok.clone();
    broken["iptablesRestore"] = json!("/bin/false");
    let out = cni("ADD", Some(&ns.path()), ("shop", "web-1"), &broken).await?;
    assert!(!out.ok, "ADD succeeded without rules: {}", out.stdout);
    let e = out.json();
    assert_eq!(e["cniVersion"], "1.0.0");
    assert_eq!(e["code"], 100, "{e}");
    assert!(
        e["msg"].as_str().is_some_and(|m| m.contains("shop/web-1")),
        "{e}"
    );
    assert!(
        e["details"]
            .as_str()
            .is_some_and(|d| d.contains("/bin/false")),
        "{e}"
    );
    assert!(!ns.nat(false)?.contains("RUDDER"));
    // So does one whose namespace is no network namespace.
    let not_ns = tempfile::NamedTempFile::new()?;
    let out = cni("ADD", Some(not_ns.path()), ("shop", "web-1"), &conf_ok).await?;
    assert!(!out.ok);
    assert_eq!(out.json()["code"], 100);

    // An API server that cannot be asked: the meshed-or-not question has no answer.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dead = work.path().join("dead-kubeconfig");
    std::fs::write(&dead, FakeKube::kubeconfig(closed.local_addr()?))?;
    drop(closed);
    let out = cni(
        "ADD",
        Some(&ns.path()),
        ("shop", "web-1"),
        &conf(&dead, Some(prev.clone())),
    )
    .await?;
    assert!(!out.ok);
    let e = out.json();
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e["msg"].as_str().is_some_and(|m| m.contains("shop/web-1")),
        "{e}"
    );

    // Not chained (no prevResult): a configuration error.
    let out = cni(
        "ADD",
        Some(&ns.path()),
        ("shop", "batch-0"),
        &conf(&kubeconfig, None),
    )
    .await?;
    assert!(!out.ok);
    assert_eq!(out.json()["code"], 7);

    // VERSION.
    let out = cni("VERSION", None, ("", ""), &json!({"cniVersion": "1.0.0"})).await?;
    assert!(out.ok, "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("1.0.0")) && a.contains(&json!("0.4.0"))),
        "{v}"
    );
    Ok(())
}

/// The DaemonSet's installer as a process: it chains the plugin into the node's active
/// configuration, puts back what the network plugin's rewrite dropped, and takes it all
/// out on SIGTERM.
#[tokio::test]
async fn the_installer_chains_the_plugin_keeps_it_and_removes_it_on_sigterm() -> anyhow::Result<()>
{
    let work = tempfile::tempdir()?;
    let p = work.path();
    for d in ["bin", "net.d", "sa"] {
        std::fs::create_dir(p.join(d))?;
    }
    std::fs::write(p.join("sa/token"), "tok\n")?;
    std::fs::write(p.join("sa/ca.crt"), "-----BEGIN CERTIFICATE-----\n")?;
    let calico = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network",
                        "plugins": [{"type": "calico"}, {"type": "portmap"}]});
    let list = p.join("net.d/10-calico.conflist");
    std::fs::write(&list, calico.to_string())?;
    let mut child = tokio::process::Command::new(workspace_bin("rudder-cni")?)
        .env_clear()
        .arg("install")
        .arg("--cni-bin-dir")
        .arg(p.join("bin"))
        .arg("--cni-conf-dir")
        .arg(p.join("net.d"))
        .args([
            "--api-host",
            "10.96.0.1",
            "--api-port",
            "443",
            "--interval-seconds",
            "1",
        ])
        .arg("--token-file")
        .arg(p.join("sa/token"))
        .arg("--ca-file")
        .arg(p.join("sa/ca.crt"))
        .kill_on_drop(true)
        .spawn()?;
    let chained = || async {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&list)?)?;
        Ok(doc["plugins"]
            .as_array()
            .and_then(|a| a.last())
            .map(|e| e["type"].clone())
            == Some(json!("rudder-cni")))
    };
    wait_until(Duration::from_secs(10), "the plugin chained", chained).await?;
    assert!(p.join("bin/rudder-cni").exists());
    assert!(p.join("net.d/rudder-cni.kubeconfig").exists());
    // The network plugin rewrites its file: the entry comes back.
    std::fs::write(&list, calico.to_string())?;
    wait_until(Duration::from_secs(10), "the plugin chained again", chained).await?;

    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    sh(&["kill", "-TERM", &pid.to_string()])?;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    assert!(status.success(), "{status}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&list)?)?;
    assert_eq!(doc, calico, "the node's configuration is as it was");
    assert!(!p.join("bin/rudder-cni").exists());
    assert!(!p.join("net.d/rudder-cni.kubeconfig").exists());
    Ok(())
}
