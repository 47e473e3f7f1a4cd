//! Real processes on one machine: the control plane, sidecar proxies (Envoy or
//! rudder-proxy) and echo backends.
//! Every child is killed when its handle drops. Ports are picked at run time.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The Envoy binary: `$RUDDER_ENVOY`, else `.tools/envoy` from `scripts/setup.sh`.
/// Missing Envoy is an error, never a skip.
#[allow(clippy::disallowed_methods, reason = "the test harness's own setting")]
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("RUDDER_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/envoy"));
    if !path.exists() {
        bail!(
            "Envoy not found at {} (run scripts/setup.sh, or set RUDDER_ENVOY)",
            path.display()
        );
    }
    Ok(path)
}

/// A binary of this workspace, built next to the running executable
/// (`target/<profile>/NAME`; tests run from `target/<profile>/deps/`).
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// A TCP port free on every address right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("0.0.0.0:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A port free on `ip` right now, below Linux's ephemeral range (32768 and up), so that
/// no outgoing connection on the shared loopback takes it as its source port while a
/// process that listens there is restarting. Picked pseudo-randomly per process and call.
pub fn quiet_port(ip: IpAddr) -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos)
        .wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(7_919));
    for i in 0..SPAN {
        let port = u16::try_from(LOW + (seed.wrapping_add(i.wrapping_mul(101))) % SPAN)?;
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on {ip} between {LOW} and {}", LOW + SPAN)
}

/// Polls `check` until it returns `Ok(true)` or `timeout` passes.
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_err
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    /// Starts `cmd` with its output in `log`.
    pub fn spawn_logged(name: &str, cmd: Command, log: &Path) -> anyhow::Result<Self> {
        Self::spawn(name, cmd, log)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            child: Some(child),
            name: name.to_string(),
        })
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM (a graceful stop) without waiting.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        let child = self
            .child
            .as_ref()
            .context("the process was already reaped")?;
        let pid = libc::pid_t::try_from(child.id()).context("pid")?;
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("kill -TERM {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; returns its status and how long
    /// it took. The process is killed if it is still running at the deadline.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        let start = Instant::now();
        let child = self
            .child
            .as_mut()
            .context("the process was already reaped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > timeout {
                self.kill();
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!("{} exited: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Bound addresses: xDS, admin, certificate endpoint.
type Bound = (SocketAddr, SocketAddr, SocketAddr);

/// The Rudder control plane, run from its binary.
#[derive(Debug)]
pub struct ControlPlane {
    proc: Proc,
    /// The xDS address it serves.
    pub xds: SocketAddr,
    /// Its admin address (/metrics, /healthz, /readyz).
    pub admin: SocketAddr,
    /// Its certificate endpoint (proxy agents renew there).
    pub ca: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
    manifests: PathBuf,
    work: PathBuf,
    starts: u32,
    extra: Vec<String>,
}

impl ControlPlane {
    /// Starts `xds-server run` on `manifests` with a free port; `work` holds its files.
    pub async fn start(manifests: &Path, work: &Path) -> anyhow::Result<Self> {
        Self::start_with(manifests, work, &[]).await
    }

    /// Starts with extra `run` arguments (e.g. `--mtls-mode permissive`).
    pub async fn start_with(manifests: &Path, work: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(manifests, work, IpAddr::from([127, 0, 0, 1]), extra).await
    }

    /// Starts with xDS and the certificate endpoint on `ip` (free ports).
    pub async fn start_on(
        manifests: &Path,
        work: &Path,
        ip: IpAddr,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // Quiet ports: a restart listens on them again. Another test may take one between
        // the check and the bind: then pick again.
        let mut attempt = 0;
        let (proc, (xds, admin, ca), log) = loop {
            attempt += 1;
            let xds_port = quiet_port(ip)?;
            let ca_port = loop {
                let p = quiet_port(ip)?;
                if p != xds_port {
                    break p;
                }
            };
            let (on, ca) = (SocketAddr::new(ip, xds_port), SocketAddr::new(ip, ca_port));
            let admin = SocketAddr::new(
                IpAddr::from([127, 0, 0, 1]),
                quiet_port(IpAddr::from([127, 0, 0, 1]))?,
            );
            match Self::launch(manifests, work, (on, admin, ca), 1, &extra).await {
                Err(_) if attempt < 5 && Self::port_was_taken(work, 1) => continue,
                r => break r?,
            }
        };
        Ok(ControlPlane {
            proc,
            xds,
            admin,
            ca,
            log,
            manifests: manifests.to_path_buf(),
            work: work.to_path_buf(),
            starts: 1,
            extra,
        })
    }

    /// `--cert-lifetime` as the control plane was started with it, for a sidecar's
    /// first certificate (unless `extra` sets its own), so that it renews on the same
    /// schedule as the ones the control plane signs later.
    fn cert_lifetime_args(&self, extra: &[&str]) -> Vec<String> {
        if extra.contains(&"--cert-lifetime") {
            return Vec::new();
        }
        self.extra
            .windows(2)
            .find(|w| w[0] == "--cert-lifetime")
            .map(|w| w.to_vec())
            .unwrap_or_default()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The CA directory (proxies' bootstrap credentials are issued from it).
    pub fn ca_dir(&self) -> PathBuf {
        self.work.join("ca")
    }

    async fn launch(
        manifests: &Path,
        work: &Path,
        (addr, admin, ca): (SocketAddr, SocketAddr, SocketAddr),
        n: u32,
        extra: &[String],
    ) -> anyhow::Result<(Proc, Bound, PathBuf)> {
        let ready = work.join(format!("control-plane-{n}.ready.json"));
        let log = work.join(format!("control-plane-{n}.log"));
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(workspace_bin("xds-server")?);
        cmd.args(["run", "--manifests"])
            .arg(manifests)
            .args(["--xds-address", &addr.to_string(), "--ready-file"])
            .arg(&ready)
            .arg("--ca-dir")
            .arg(work.join("ca"))
            .args(["--admin-address", &admin.to_string()])
            .args(["--ca-address", &ca.to_string()])
            .args(extra)
            .env("RUDDER_LOG", "info,xds_server=debug");
        let mut proc = Proc::spawn("xds-server", cmd, &log)?;
        let mut xds: Option<Bound> = None;
        let waited = wait_until(
            Duration::from_secs(20),
            "the control plane's ready file",
            || {
                let text = std::fs::read_to_string(&ready).ok();
                let running = proc.check_running();
                xds = text
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|v| {
                        let get =
                            |k: &str| v[k].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
                        // No certificate endpoint with --insecure-xds.
                        let ca = get("ca").unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
                        Some((get("xds")?, get("admin")?, ca))
                    });
                let ok = xds.is_some();
                async move { running.map(|()| ok) }
            },
        )
        .await;
        if let Err(e) = waited {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{e:#}\ncontrol plane log:\n{text}");
        }
        let xds = xds.context("ready file had no xds address")?;
        Ok((proc, xds, log))
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM: a graceful stop. See [`ControlPlane::wait_exit`].
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        self.proc.terminate()
    }

    /// Waits for the process to exit (killing it after `timeout`).
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        self.proc.wait_exit(timeout).await
    }

    /// Whether start `n` failed because a port was taken.
    fn port_was_taken(work: &Path, n: u32) -> bool {
        std::fs::read_to_string(work.join(format!("control-plane-{n}.log")))
            .is_ok_and(|l| l.contains("Address already in use"))
    }

    /// Starts again on the same xDS address (SIGKILL first if still running).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.relaunch(false).await
    }

    /// Starts again on the same xDS address with other extra `run` arguments (a rollout
    /// that changes a flag).
    pub async fn restart_with(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.relaunch(false).await
    }

    /// Starts again on the same xDS and admin addresses, as a restarted pod would.
    pub async fn restart_same_addresses(&mut self) -> anyhow::Result<()> {
        self.relaunch(true).await
    }

    async fn relaunch(&mut self, same_admin: bool) -> anyhow::Result<()> {
        self.proc.kill();
        self.starts += 1;
        let admin = if same_admin {
            self.admin
        } else {
            "127.0.0.1:0".parse()?
        };
        let (proc, (xds, admin, ca), log) = Self::launch(
            &self.manifests,
            &self.work,
            (self.xds, admin, self.ca),
            self.starts,
            &self.extra,
        )
        .await?;
        self.proc = proc;
        self.xds = xds;
        self.admin = admin;
        self.ca = ca;
        self.log = log;
        Ok(())
    }

    /// The current log's text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.proc.check_running()
    }
}

/// How a sidecar talks to the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Delta (incremental) ADS.
    Delta,
    /// State-of-the-world ADS.
    Sotw,
}

/// A pod's placement on this machine.
#[derive(Clone, Debug)]
pub struct PodPlacement {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Service account.
    pub service_account: String,
    /// The pod IP (a 127.0.0.N address).
    pub ip: IpAddr,
    /// Where its app listens (another loopback address).
    pub app_ip: IpAddr,
}

/// Which proxy a sidecar runs. Both start from the same bootstrap, flags and agent, so
/// a scenario written against "a proxy" (its admin and outbound addresses) runs on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPlane {
    /// Envoy (`.tools/envoy` or `$RUDDER_ENVOY`).
    Envoy,
    /// Rudder's own proxy (`rudder-proxy`, from `conformance/`).
    RudderProxy,
}

impl DataPlane {
    /// Both, in the order the suite runs them.
    pub const ALL: [DataPlane; 2] = [DataPlane::Envoy, DataPlane::RudderProxy];

    /// The binary to run.
    pub fn binary(self) -> anyhow::Result<PathBuf> {
        match self {
            DataPlane::Envoy => envoy_binary(),
            DataPlane::RudderProxy => workspace_bin("rudder-proxy"),
        }
    }

    /// A short name for logs and file names.
    pub fn name(self) -> &'static str {
        match self {
            DataPlane::Envoy => "envoy",
            DataPlane::RudderProxy => "rudder-proxy",
        }
    }
}

/// A sidecar proxy (Envoy or rudder-proxy), bootstrapped by `xds-server bootstrap`, with
/// its proxy agent (which serves it the workload certificate over SDS and renews it), as
/// in a pod.
#[derive(Debug)]
pub struct Sidecar {
    proc: Proc,
    /// Which proxy it is.
    pub proxy: DataPlane,
    /// Its agent (none without credentials).
    pub agent: Option<Agent>,
    /// Its admin address.
    pub admin: SocketAddr,
    /// The app-facing outbound address (`http_proxy`).
    pub outbound: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
    /// When its process was started.
    pub launched: Instant,
}

impl Sidecar {
    /// Starts an Envoy sidecar for `pod` against the control plane `cp`.
    pub async fn start(
        pod: &PodPlacement,
        cp: &ControlPlane,
        stream: Stream,
        work: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_on(DataPlane::Envoy, pod, cp, stream, work).await
    }

    /// Starts a sidecar running `proxy` for `pod` against the control plane `cp`.
    pub async fn start_on(
        proxy: DataPlane,
        pod: &PodPlacement,
        cp: &ControlPlane,
        stream: Stream,
        work: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_patched(proxy, pod, cp, stream, work, &[], |_| Ok(()), |_| {}).await
    }

    /// Starts a sidecar with extra `bootstrap` arguments; `prepare` runs on the
    /// credentials directory after the bootstrap is written and before the proxy starts.
    pub async fn start_as(
        proxy: DataPlane,
        pod: &PodPlacement,
        cp: &ControlPlane,
        stream: Stream,
        work: &Path,
        extra: &[&str],
        prepare: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        Self::start_patched(proxy, pod, cp, stream, work, extra, prepare, |_| {}).await
    }

    /// Like [`Sidecar::start_as`], with `patch` applied to the bootstrap JSON (for
    /// example a runtime layer that makes this Envoy stricter than the others).
    #[allow(clippy::too_many_arguments, reason = "each is one fact of the pod")]
    pub async fn start_patched(
        proxy: DataPlane,
        pod: &PodPlacement,
        cp: &ControlPlane,
        stream: Stream,
        work: &Path,
        extra: &[&str],
        prepare: impl FnOnce(&Path) -> anyhow::Result<()>,
        patch: impl FnOnce(&mut serde_json::Value),
    ) -> anyhow::Result<Self> {
        let xds = cp.xds;
        let outbound_port = free_port()?;
        let tag = format!("{}.{}", pod.pod, pod.namespace);
        let bootstrap = work.join(format!("envoy-{tag}.json"));
        let mut cmd = Command::new(workspace_bin("xds-server")?);
        cmd.args([
            "bootstrap",
            "--namespace",
            &pod.namespace,
            "--pod",
            &pod.pod,
        ])
        .args(["--service-account", &pod.service_account])
        .args([
            "--pod-ip",
            &pod.ip.to_string(),
            "--app-address",
            &pod.app_ip.to_string(),
        ])
        .args(["--outbound-port", &outbound_port.to_string()])
        .args(["--xds-address", &xds.to_string()])
        .arg(if stream == Stream::Delta {
            "--delta"
        } else {
            "--sotw"
        })
        .arg("--ca-dir")
        .arg(cp.ca_dir())
        .arg("--cert-dir")
        .arg(work.join(format!("certs-{tag}")))
        .args(cp.cert_lifetime_args(extra))
        .args(extra);
        let out = cmd.output().context("running xds-server bootstrap")?;
        if !out.status.success() {
            bail!(
                "xds-server bootstrap failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut json: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("the bootstrap is JSON")?;
        patch(&mut json);
        std::fs::write(&bootstrap, json.to_string())?;
        let cert_dir = work.join(format!("certs-{tag}"));
        prepare(&cert_dir)?;
        // The agent serves the workload certificate on the pod's SDS socket.
        let agent = if cert_dir.join("xds-client.crt").exists() {
            Some(Agent::start(&cert_dir, cp, work, &[]).await?)
        } else {
            None
        };
        Self::launch(
            proxy,
            &bootstrap,
            &tag,
            work,
            agent,
            SocketAddr::new(pod.ip, outbound_port),
        )
        .await
    }

    /// Starts `proxy` on a bootstrap file already written (`tag` names its files in
    /// `work`), with its agent if any; `outbound` is its app-facing address.
    pub async fn launch(
        proxy: DataPlane,
        bootstrap: &Path,
        tag: &str,
        work: &Path,
        agent: Option<Agent>,
        outbound: SocketAddr,
    ) -> anyhow::Result<Self> {
        let admin_file = work.join(format!("{}-{tag}.admin", proxy.name()));
        let _ = std::fs::remove_file(&admin_file);
        let log = work.join(format!("{}-{tag}.log", proxy.name()));
        // The same flags for both: rudder-proxy takes Envoy's command line.
        let mut cmd = Command::new(proxy.binary()?);
        cmd.arg("-c")
            .arg(bootstrap)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            // As the injector runs the sidecar (see k8s/inject): drains tell every
            // connection at once.
            .args(["--drain-time-s", "1", "--drain-strategy", "immediate"]);
        let launched = Instant::now();
        let mut proc = Proc::spawn(&format!("{} {tag}", proxy.name()), cmd, &log)?;
        let mut admin = None;
        let found = wait_until(Duration::from_secs(20), "the proxy's admin address", || {
            let running = proc.check_running();
            admin = std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok());
            let ok = admin.is_some();
            async move { running.map(|()| ok) }
        })
        .await;
        if let Err(e) = found {
            bail!(
                "{e:#}\n{} log:\n{}",
                proxy.name(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let admin = admin.context("no admin address")?;
        Ok(Sidecar {
            proc,
            proxy,
            agent,
            admin,
            outbound,
            log,
            launched,
        })
    }

    /// The proxy's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Waits until the proxy is LIVE (initial config applied).
    pub async fn wait_live(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let admin = self.admin;
        let result = wait_until(timeout, "the proxy to be LIVE", || async move {
            Ok(crate::http::get_ok(admin, "/ready").await?.trim() == "LIVE")
        })
        .await;
        if let Err(e) = result {
            bail!(
                "{e:#}\n{} log:\n{}",
                self.proxy.name(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.proc.check_running()
    }

    /// GETs an admin path.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        crate::http::get_ok(self.admin, path).await
    }

    /// One counter or gauge from `/stats`, if present.
    pub async fn stat(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let text = self
            .admin_get(&format!("/stats?filter=^{}$", regex_escape(name)))
            .await?;
        Ok(text.lines().find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        }))
    }

    /// Names of the clusters the proxy has.
    pub async fn cluster_names(&self) -> anyhow::Result<Vec<String>> {
        let text = self.admin_get("/clusters").await?;
        let mut names: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_once("::").map(|(n, _)| n.to_string()))
            .collect();
        names.dedup();
        Ok(names)
    }

    /// The endpoint addresses the proxy has for `cluster`.
    pub async fn endpoints_of(&self, cluster: &str) -> anyhow::Result<Vec<String>> {
        let text = self.admin_get("/clusters").await?;
        let prefix = format!("{cluster}::");
        let mut eps: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| {
                rest.strip_suffix("::cx_total::0").or_else(|| {
                    let (addr, tail) = rest.rsplit_once("::cx_total::")?;
                    tail.parse::<u64>().ok().map(|_| addr)
                })
            })
            .map(str::to_string)
            .collect();
        eps.sort();
        eps.dedup();
        Ok(eps)
    }

    /// Sends the proxy SIGTERM.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        self.proc.terminate()
    }

    /// Waits up to `timeout` for the proxy to exit: its status and how long it took.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        self.proc.wait_exit(timeout).await
    }

    /// Fails if the proxy or its agent has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(a) = &mut self.agent {
            a.check_running()?;
        }
        self.proc.check_running()
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// An echo backend process.
#[derive(Debug)]
pub struct Backend {
    _proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Backend {
    /// Starts `echo-backend` on `addr`, answering as `name`, and waits until it serves.
    pub async fn start(addr: SocketAddr, name: &str, work: &Path) -> anyhow::Result<Self> {
        Self::start_with(addr, name, work, &[]).await
    }

    /// Starts with extra arguments (`--fail-every N`, `--delay-ms N`).
    pub async fn start_with(
        addr: SocketAddr,
        name: &str,
        work: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(workspace_bin("echo-backend")?);
        cmd.args(["--listen", &addr.to_string(), "--name", name])
            .args(extra);
        let log = work.join(format!("backend-{name}-{}.log", addr.port()));
        let mut proc = Proc::spawn(&format!("backend {name}"), cmd, &log)?;
        wait_until(Duration::from_secs(10), "the backend to listen", || {
            let running = proc.check_running();
            async move {
                running?;
                Ok(tokio::net::TcpStream::connect(addr).await.is_ok())
            }
        })
        .await?;
        Ok(Backend { _proc: proc, addr })
    }
}

/// A proxy agent process (`xds-server agent`) keeping one sidecar's credentials fresh.
#[derive(Debug)]
pub struct Agent {
    proc: Proc,
    /// Its `/ready` and `/status` address.
    pub status: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
}

impl Agent {
    /// Starts an agent on `cert_dir` (as `xds-server bootstrap` left it) against `cp`'s
    /// certificate endpoint, with extra arguments.
    pub async fn start(
        cert_dir: &Path,
        cp: &ControlPlane,
        work: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let tag = cert_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ready = work.join(format!("agent-{tag}.ready.json"));
        let log = work.join(format!("agent-{tag}.log"));
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(workspace_bin("xds-server")?);
        cmd.arg("agent")
            .arg("--cert-dir")
            .arg(cert_dir)
            .args(["--ca-address", &cp.ca.to_string()])
            .args(["--status-address", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .args(extra)
            .env("RUDDER_LOG", "info");
        let mut proc = Proc::spawn(&format!("agent {tag}"), cmd, &log)?;
        let mut status = None;
        let waited = wait_until(Duration::from_secs(10), "the agent's ready file", || {
            let running = proc.check_running();
            status = std::fs::read_to_string(&ready)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["status"].as_str()?.parse::<SocketAddr>().ok());
            let ok = status.is_some();
            async move { running.map(|()| ok) }
        })
        .await;
        if let Err(e) = waited {
            bail!(
                "{e:#}\nagent log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(Agent {
            proc,
            status: status.context("no status address")?,
            log,
        })
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Its `/status` JSON.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let text = crate::http::get_ok(self.status, "/status").await?;
        serde_json::from_str(&text).context("/status is JSON")
    }

    /// Fails if it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.proc.check_running()
    }

    /// The log's text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
