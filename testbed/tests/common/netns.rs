//! Injected pods on one machine: each pod a network namespace on a shared bridge with
//! the init container's iptables rules (`xds-server iptables --apply`), its agent and a
//! real Envoy running as the proxy UID from an intercepted bootstrap, against the real
//! control plane on the bridge's address. Apps are unmodified programs started inside
//! the namespaces. Everything created is removed on drop, by name.
//!
//! Needs root, `ip`, `iptables` (scripts/setup.sh) and `setpriv`; a machine without
//! them fails the test that asks for it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testbed::procs::{ControlPlane, DataPlane, Proc, wait_until, workspace_bin};

/// The proxy's UID and GID in an injected pod.
pub(crate) const PROXY_UID: u32 = 1337;

/// Runs a command, failing with its error output.
pub(crate) fn sh(args: &[&str]) -> anyhow::Result<String> {
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
pub(crate) fn get_in(ns: &str, uid: u32, addr: SocketAddr) -> anyhow::Result<String> {
    get_in_from(ns, uid, addr, None)
}

/// [`get_in`] from the local address `source` (any port) when given.
pub(crate) fn get_in_from(
    ns: &str,
    uid: u32,
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<String> {
    let source = source.map_or("None".to_string(), |s| format!("('{s}',0)"));
    let code = format!(
        "import http.client;c=http.client.HTTPConnection('{}',{},timeout=5,source_address={source});c.request('GET','/');print(c.getresponse().read().decode().split()[0])",
        addr.ip(),
        addr.port()
    );
    python_in(ns, uid, &code)
}

/// Python `code` run inside `ns` as `uid` (and the same GID, no groups): what it prints,
/// trimmed.
pub(crate) fn python_in(ns: &str, uid: u32, code: &str) -> anyhow::Result<String> {
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
        code,
    ])
    .map(|s| s.trim().to_string())
}

/// A command in network namespace `ns` as `uid` (and the same GID).
fn as_uid_in(ns: &str, uid: u32) -> Command {
    let uid = uid.to_string();
    let mut c = Command::new("ip");
    c.args([
        "netns", "exec", ns, "setpriv", "--reuid", &uid, "--regid", &uid,
    ])
    .arg("--clear-groups");
    c
}

/// One namespace joined to this one by a veth pair, with an address at each end
/// (IPv4 or IPv6, no duplicate address detection); removed on drop, by name.
pub(crate) struct VethPod {
    pub(crate) ns: String,
    host_if: String,
}

impl VethPod {
    /// `tag` (two letters) keeps concurrent test files' names apart.
    pub(crate) fn new(tag: &str, host: IpAddr, pod: IpAddr, len: u8) -> anyhow::Result<VethPod> {
        let id = std::process::id() % 100_000;
        let ns = format!("rudder-{tag}{id}");
        if let Err(e) = sh(&["ip", "netns", "add", &ns]) {
            anyhow::bail!("this machine cannot create network namespaces (root is needed): {e:#}");
        }
        let (host_if, pod_if) = (format!("r{tag}h{id}"), format!("r{tag}p{id}"));
        let guard = VethPod {
            ns: ns.clone(),
            host_if: host_if.clone(),
        };
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &pod_if,
        ])?;
        sh(&["ip", "link", "set", &pod_if, "netns", &ns])?;
        let (host, pod) = (format!("{host}/{len}"), format!("{pod}/{len}"));
        sh(&["ip", "addr", "add", &host, "dev", &host_if, "nodad"])?;
        sh(&["ip", "link", "set", &host_if, "up"])?;
        let exec = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &ns];
            v.extend(args);
            sh(&v)
        };
        exec(&["ip", "addr", "add", &pod, "dev", &pod_if, "nodad"])?;
        exec(&["ip", "link", "set", &pod_if, "up"])?;
        exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(guard)
    }
}

impl Drop for VethPod {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// One pod: its namespace and address.
#[derive(Clone, Debug)]
pub(crate) struct NetPod {
    pub(crate) name: String,
    pub(crate) ns: String,
    pub(crate) ip: IpAddr,
}

/// Namespaces on one bridge, with the processes started in them.
pub(crate) struct PodNet {
    pub(crate) tag: u32,
    pub(crate) host: IpAddr,
    second: u8,
    subnet: u32,
    bridge: String,
    namespaces: Vec<String>,
    links: Vec<String>,
    pub(crate) pods: Vec<NetPod>,
    /// Started processes, stopped (dropped) before the namespaces go.
    procs: Vec<Proc>,
    /// Envoys: (pod name, admin address file).
    pub(crate) envoys: Vec<(String, PathBuf)>,
    /// The proxy `inject` starts (Envoy unless set).
    pub(crate) proxy: DataPlane,
}

impl Drop for PodNet {
    fn drop(&mut self) {
        self.procs.clear();
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

/// A work directory for a namespace test (the proxy runs as the proxy UID and reads its
/// files there, so it is world-readable) and its empty `manifests` directory.
pub(crate) fn pod_workdir() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir()?;
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))?;
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    Ok((work, manifests))
}

impl PodNet {
    /// A bridge with the host end at `10.N.M.1/24`; `second_octet` keeps concurrent
    /// test files apart.
    pub(crate) fn new(second_octet: u8) -> anyhow::Result<PodNet> {
        let tag = std::process::id() % 100_000;
        let bridge = format!("rab{tag}");
        let subnet = 30 + (tag % 200);
        let host: IpAddr = format!("10.{second_octet}.{subnet}.1").parse()?;
        let net = PodNet {
            tag,
            host,
            second: second_octet,
            subnet,
            bridge: bridge.clone(),
            namespaces: Vec::new(),
            links: Vec::new(),
            pods: Vec::new(),
            procs: Vec::new(),
            envoys: Vec::new(),
            proxy: DataPlane::Envoy,
        };
        sh(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        sh(&["ip", "addr", "add", &format!("{host}/24"), "dev", &bridge])?;
        sh(&["ip", "link", "set", &bridge, "up"])?;
        Ok(net)
    }

    /// A pod namespace at the next address on the bridge, with a default route through
    /// the host (cluster IPs are virtual: connect() must reach the rules).
    pub(crate) fn add_pod(&mut self, name: &str) -> anyhow::Result<NetPod> {
        let i = self.pods.len();
        let ns = format!("ra{i}x{}", self.tag);
        sh(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        let (a, b) = (format!("ra{i}h{}", self.tag), format!("ra{i}p{}", self.tag));
        sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        self.links.push(a.clone());
        sh(&["ip", "link", "set", &a, "master", &self.bridge])?;
        sh(&["ip", "link", "set", &a, "up"])?;
        sh(&["ip", "link", "set", &b, "netns", &ns])?;
        let ip: IpAddr = format!("10.{}.{}.{}", self.second, self.subnet, i + 2).parse()?;
        let exec = |args: &[&str]| -> anyhow::Result<String> {
            let mut v = vec!["ip", "netns", "exec", &ns];
            v.extend(args);
            sh(&v)
        };
        exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &b])?;
        exec(&["ip", "link", "set", &b, "up"])?;
        exec(&["ip", "link", "set", "lo", "up"])?;
        exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &self.host.to_string(),
        ])?;
        let pod = NetPod {
            name: name.into(),
            ns,
            ip,
        };
        self.pods.push(pod.clone());
        Ok(pod)
    }

    /// Gives the bridge `fd7b:TAG::1/64` and `pod` the next address of that network
    /// (a dual-stack pod, after the fact): the pod's IPv6 address.
    pub(crate) fn add_ipv6(&mut self, pod: &NetPod) -> anyhow::Result<IpAddr> {
        let net = format!("fd7b:{:x}", self.tag % 0xffff);
        let host = format!("{net}::1/64");
        // Once per bridge (a second pod finds it there).
        let _ = sh(&["ip", "addr", "add", &host, "dev", &self.bridge, "nodad"]);
        let i = self.pods.iter().position(|p| p.ns == pod.ns).unwrap_or(0) + 2;
        let ip: IpAddr = format!("{net}::{i:x}").parse()?;
        let dev = format!("ra{}p{}", i - 2, self.tag);
        sh(&[
            "ip",
            "netns",
            "exec",
            &pod.ns,
            "ip",
            "addr",
            "add",
            &format!("{ip}/64"),
            "dev",
            &dev,
            "nodad",
        ])?;
        Ok(ip)
    }

    /// Starts `args` inside `pod`'s namespace (as root), logging to `work`.
    pub(crate) fn spawn_in(
        &mut self,
        pod: &NetPod,
        name: &str,
        args: &[&str],
        work: &Path,
    ) -> anyhow::Result<()> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &pod.ns]).args(args);
        self.procs.push(Proc::spawn_logged(
            name,
            c,
            &work.join(format!("{name}.log")),
        )?);
        Ok(())
    }

    /// The echo backend named after the pod on `0.0.0.0:PORT` in it.
    pub(crate) fn echo_in(&mut self, pod: &NetPod, port: u16, work: &Path) -> anyhow::Result<()> {
        let name = pod.name.clone();
        self.echo_at(pod, SocketAddr::from(([0, 0, 0, 0], port)), &name, work)
    }

    /// The echo backend answering as `name` on `listen` only, in `pod`.
    pub(crate) fn echo_at(
        &mut self,
        pod: &NetPod,
        listen: SocketAddr,
        name: &str,
        work: &Path,
    ) -> anyhow::Result<()> {
        let echo = workspace_bin("echo-backend")?;
        let listen = listen.to_string();
        let args = [
            echo.to_str().unwrap_or_default(),
            "--listen",
            &listen,
            "--name",
            name,
        ];
        self.spawn_in(pod, &format!("app-{}-{listen}", pod.name), &args, work)
    }

    /// Injects `pod`: the init container's rules, its agent and Envoy (delta ADS) with
    /// service account `sa`.
    pub(crate) async fn inject(
        &mut self,
        pod: &NetPod,
        sa: &str,
        cp: &ControlPlane,
        work: &Path,
    ) -> anyhow::Result<()> {
        let out = Command::new("ip")
            .args(["netns", "exec", &pod.ns])
            .arg(workspace_bin("xds-server")?)
            .args(["iptables", "--apply"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "iptables: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let certs = work.join(format!("certs-{}", pod.name));
        let out = Command::new(workspace_bin("xds-server")?)
            .args(["bootstrap", "--namespace", "default", "--pod", &pod.name])
            .args(["--service-account", sa, "--pod-ip", &pod.ip.to_string()])
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
        let boot = work.join(format!("envoy-{}.json", pod.name));
        std::fs::write(&boot, &out.stdout)?;
        sh(&["chown", "-R", "1337:1337", &certs.display().to_string()])?;
        let mut a = as_uid_in(&pod.ns, PROXY_UID);
        a.arg(workspace_bin("xds-server")?)
            .arg("agent")
            .arg("--cert-dir")
            .arg(&certs)
            .args(["--ca-address", &cp.ca.to_string()])
            .args(["--status-address", "127.0.0.1:0"]);
        let mut agent = Proc::spawn_logged(
            &format!("agent {}", pod.name),
            a,
            &work.join(format!("agent-{}.log", pod.name)),
        )?;
        let socket = certs.join("sds.sock");
        wait_until(Duration::from_secs(10), "the agent's SDS socket", || {
            let running = agent.check_running();
            let ok = socket.exists();
            async move { running.map(|()| ok) }
        })
        .await?;
        self.procs.push(agent);
        let admin_file = work.join(format!("envoy-{}.admin", pod.name));
        sh(&[
            "install",
            "-o",
            "1337",
            "-m",
            "644",
            "/dev/null",
            &admin_file.display().to_string(),
        ])?;
        let base_id = (self.tag * 10 + self.envoys.len() as u32 + 5).to_string();
        let mut c = as_uid_in(&pod.ns, PROXY_UID);
        c.arg(self.proxy.binary()?)
            .arg("-c")
            .arg(&boot)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            // As the injector runs the sidecar.
            .args(["--drain-strategy", "immediate"])
            .arg("--admin-address-path")
            .arg(&admin_file);
        if self.proxy == DataPlane::Envoy {
            c.args(["--base-id", &base_id]);
        }
        self.procs.push(Proc::spawn_logged(
            &pod.name,
            c,
            &work.join(format!("envoy-{}.log", pod.name)),
        )?);
        self.envoys.push((pod.name.clone(), admin_file));
        Ok(())
    }

    /// GET http://ADDR/ with `Host: host` from inside `pod` as an app (UID 1000), with
    /// Python's standard library (an unmodified client): the response body.
    pub(crate) fn get_from(pod: &NetPod, addr: SocketAddr, host: &str) -> anyhow::Result<String> {
        let code = format!(
            "import urllib.request;r=urllib.request.Request('http://{addr}/',headers={{'Host':'{host}'}});print(urllib.request.urlopen(r,timeout=5).read().decode())"
        );
        let mut c = as_uid_in(&pod.ns, 1000);
        let out = c.args(["/usr/bin/python3", "-c", &code]).output()?;
        anyhow::ensure!(
            out.status.success(),
            "GET {addr} (Host {host}) from {}: {}",
            pod.name,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Envoy statistics of `pod`'s sidecar matching `filter`.
    pub(crate) fn stats(&self, pod: &NetPod, filter: &str) -> anyhow::Result<String> {
        let file = self
            .envoys
            .iter()
            .find(|(n, _)| *n == pod.name)
            .map(|(_, f)| f.clone())
            .ok_or_else(|| anyhow::anyhow!("no Envoy in {}", pod.name))?;
        let admin = std::fs::read_to_string(file)?.trim().to_string();
        sh(&[
            "ip",
            "netns",
            "exec",
            &pod.ns,
            "/usr/bin/python3",
            "-c",
            &format!(
                "import urllib.request;print(urllib.request.urlopen('http://{admin}/stats?filter={filter}').read().decode())"
            ),
        ])
    }

    /// Fails if a process started here has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            p.check_running()?;
        }
        Ok(())
    }

    /// Every Envoy's log, for a failure message.
    pub(crate) fn logs(&self, work: &Path) -> String {
        self.envoys
            .iter()
            .map(|(name, _)| {
                format!(
                    "--- envoy {name}\n{}\n",
                    std::fs::read_to_string(work.join(format!("envoy-{name}.log")))
                        .unwrap_or_default()
                )
            })
            .collect()
    }
}
