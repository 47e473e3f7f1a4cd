//! A small mesh for end-to-end scenarios: a client pod, service `web` (HTTP/1.1, two
//! pods) and service `fast` (h2c, one pod), each pod with a real Envoy sidecar and an
//! echo backend, all driven by the real control plane from a manifest directory.

#![allow(dead_code)]

pub(crate) mod netns;

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use testbed::manifests::{app_ip, pod, service, slice};
use testbed::procs::{
    Backend, ControlPlane, DataPlane, PodPlacement, Sidecar, Stream, free_port, wait_until,
};

/// Runs each named scenario (an `async fn(DataPlane) -> anyhow::Result<()>`) once per
/// proxy: `envoy::NAME` and `rudder_proxy::NAME`, the same steps and assertions.
#[allow(unused_macros)]
macro_rules! on_each_proxy {
    ($($scenario:ident),* $(,)?) => {
        mod envoy {
            $(
                #[tokio::test]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario(testbed::procs::DataPlane::Envoy).await
                }
            )*
        }
        mod rudder_proxy {
            $(
                #[tokio::test]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario(testbed::procs::DataPlane::RudderProxy).await
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_each_proxy;

pub(crate) const LIVE: Duration = Duration::from_secs(30);
pub(crate) const CONVERGE: Duration = Duration::from_secs(15);

pub(crate) fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

pub(crate) fn placement(name: &str, last: u8) -> PodPlacement {
    PodPlacement {
        namespace: "default".into(),
        pod: name.into(),
        service_account: name.split('-').next().unwrap_or(name).into(),
        ip: ip(last),
        app_ip: app_ip(ip(last)),
    }
}

pub(crate) struct Mesh {
    pub(crate) work: tempfile::TempDir,
    pub(crate) manifests: PathBuf,
    pub(crate) cp: ControlPlane,
    pub(crate) stream: Stream,
    /// The proxy every sidecar of this mesh runs.
    pub(crate) proxy: DataPlane,
    pub(crate) client: Sidecar,
    pub(crate) web_port: u16,
    pub(crate) fast_port: u16,
    pub(crate) sidecars: BTreeMap<String, Sidecar>,
    pub(crate) backends: Vec<Backend>,
}

pub(crate) const WEB_CLUSTER: &str = "outbound|80||web.default.svc.cluster.local";

impl Mesh {
    pub(crate) async fn start(proxy: DataPlane, stream: Stream) -> anyhow::Result<Mesh> {
        Self::start_with(proxy, stream, &[]).await
    }

    /// With extra control-plane arguments.
    pub(crate) async fn start_with(
        proxy: DataPlane,
        stream: Stream,
        cp_args: &[&str],
    ) -> anyhow::Result<Mesh> {
        Self::start_custom(proxy, stream, cp_args, |_| {}).await
    }

    /// With extra control-plane arguments and a patch to the client sidecar's bootstrap.
    pub(crate) async fn start_custom(
        proxy: DataPlane,
        stream: Stream,
        cp_args: &[&str],
        client_patch: impl FnOnce(&mut serde_json::Value),
    ) -> anyhow::Result<Mesh> {
        let work = tempfile::tempdir()?;
        let manifests = work.path().join("manifests");
        std::fs::create_dir(&manifests)?;
        let (web_port, fast_port) = (free_port()?, free_port()?);
        let files = [
            (
                "services.yaml",
                [
                    service("web", "http", 80, web_port, None),
                    service("fast", "h2c", 9090, fast_port, Some("kubernetes.io/h2c")),
                ]
                .join("---\n"),
            ),
            (
                "pods.yaml",
                [
                    pod("client-0", "client", ip(21), "client"),
                    pod("web-1", "web", ip(22), "web"),
                    pod("web-2", "web", ip(23), "web"),
                    pod("fast-1", "fast", ip(24), "fast"),
                ]
                .join("---\n"),
            ),
            (
                "slice-web.yaml",
                slice("web-abc", "web", "http", web_port, &[ip(22), ip(23)]),
            ),
            (
                "slice-fast.yaml",
                slice("fast-abc", "fast", "h2c", fast_port, &[ip(24)]),
            ),
        ];
        for (name, text) in files {
            std::fs::write(manifests.join(name), text)?;
        }
        let cp = ControlPlane::start_with(&manifests, work.path(), cp_args).await?;
        let mut mesh = Mesh {
            client: Sidecar::start_patched(
                proxy,
                &placement("client-0", 21),
                &cp,
                stream,
                work.path(),
                &[],
                |_| Ok(()),
                client_patch,
            )
            .await?,
            work,
            manifests,
            cp,
            stream,
            proxy,
            web_port,
            fast_port,
            sidecars: BTreeMap::new(),
            backends: Vec::new(),
        };
        mesh.add_pod("web-1", 22, web_port).await?;
        mesh.add_pod("web-2", 23, web_port).await?;
        mesh.add_pod("fast-1", 24, fast_port).await?;
        mesh.client.wait_live(LIVE).await?;
        for envoy in mesh.sidecars.values_mut() {
            envoy.wait_live(LIVE).await?;
        }
        Ok(mesh)
    }

    /// Starts a backend and a sidecar for a pod (its manifest is written separately).
    pub(crate) async fn add_pod(&mut self, name: &str, last: u8, port: u16) -> anyhow::Result<()> {
        self.add_pod_with(name, last, port, &[]).await
    }

    /// A pod whose backend gets extra arguments (`--fail-every`, `--delay-ms`).
    pub(crate) async fn add_pod_with(
        &mut self,
        name: &str,
        last: u8,
        port: u16,
        backend: &[&str],
    ) -> anyhow::Result<()> {
        let p = placement(name, last);
        self.backends.push(
            Backend::start_with(
                SocketAddr::new(p.app_ip, port),
                name,
                self.work.path(),
                backend,
            )
            .await?,
        );
        let envoy =
            Sidecar::start_on(self.proxy, &p, &self.cp, self.stream, self.work.path()).await?;
        self.sidecars.insert(name.to_string(), envoy);
        Ok(())
    }

    pub(crate) fn write(&self, file: &str, text: &str) -> anyhow::Result<()> {
        // Write then rename, as editors and config-map updates do.
        let tmp = self.work.path().join(format!("{file}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, self.manifests.join(file))?;
        Ok(())
    }

    pub(crate) fn manifests(&self) -> &Path {
        &self.manifests
    }

    /// Runs xdsctl with admin credentials (made once); returns (exit code, stdout and
    /// stderr).
    pub(crate) fn xdsctl(&self, args: &[&str]) -> anyhow::Result<(i32, String)> {
        use std::process::Command;
        use testbed::procs::workspace_bin;
        let creds = self.work.path().join("xdsctl-creds");
        if !creds.exists() {
            let out = Command::new(workspace_bin("xds-server")?)
                .args(["credentials", "--cert-dir"])
                .arg(&creds)
                .arg("--ca-dir")
                .arg(self.cp.ca_dir())
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "credentials: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = Command::new(workspace_bin("xdsctl")?)
            .args(["--server", &self.cp.xds.to_string(), "--cert-dir"])
            .arg(&creds)
            .args(args)
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ))
    }

    /// GET http://HOST/ through the client's sidecar: (status, answering pod).
    pub(crate) async fn call(&self, host: &str) -> anyhow::Result<(u16, String)> {
        let r = testbed::http::get_via(self.client.outbound, &format!("http://{host}/")).await?;
        Ok((
            r.status,
            r.body
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        ))
    }

    /// Which pods answer `n` calls to `host`.
    pub(crate) async fn answering(
        &self,
        host: &str,
        n: usize,
    ) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let (status, who) = self.call(host).await?;
            anyhow::ensure!(status == 200, "{host}: status {status}");
            *seen.entry(who).or_insert(0) += 1;
        }
        Ok(seen)
    }

    /// Makes Envoy reject config: something else already holds a port on the client's
    /// pod IP, and a new Service asks the client's sidecar to listen there. Keep the
    /// returned socket alive for as long as the rejection should last.
    pub(crate) fn occupy_client_inbound_port(
        &self,
    ) -> anyhow::Result<(std::net::TcpListener, u16)> {
        let port = free_port()?;
        let squatter = std::net::TcpListener::bind((ip(21), port))?;
        let services = std::fs::read_to_string(self.manifests.join("services.yaml"))?;
        self.write(
            "services.yaml",
            &format!(
                "{services}---\n{}",
                service("client", "http", 80, port, None)
            ),
        )?;
        Ok((squatter, port))
    }

    /// Services web-a (pod web-1) and web-b (pod web-2), the backends of the split and
    /// route scenarios.
    pub(crate) fn write_ab_backends(&self) -> anyhow::Result<()> {
        self.write_backends("web-a", "web-b")
    }

    /// Two backend Services without a selector: `first` on pod web-1, `second` on web-2.
    pub(crate) fn write_backends(&self, first: &str, second: &str) -> anyhow::Result<()> {
        self.write("backends.yaml", &self.backends(first, second))
    }

    /// The manifests of [`Mesh::write_backends`].
    pub(crate) fn backends(&self, first: &str, second: &str) -> String {
        format!(
            "{}---\n{}",
            plain_service(first, self.web_port, &[ip(22)]),
            plain_service(second, self.web_port, &[ip(23)])
        )
    }

    /// Every xDS update counter of the client sidecar (`*.update_success`,
    /// `*.update_rejected`).
    pub(crate) async fn update_counters(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let text = self
            .client
            .admin_get("/stats?filter=update_(success|rejected)$")
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }
}

/// Requests sent in the background while a scenario changes things.
pub(crate) struct Traffic {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    pub(crate) results: Arc<Mutex<TrafficResults>>,
}

#[derive(Debug, Default)]
pub(crate) struct TrafficResults {
    pub(crate) ok: u64,
    pub(crate) failures: Vec<String>,
    pub(crate) by_pod: BTreeMap<String, u64>,
}

impl Traffic {
    /// GETs http://HOST/ through `proxy` every 10 ms.
    pub(crate) fn start(proxy: SocketAddr, host: &str) -> Traffic {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let results = Arc::new(Mutex::new(TrafficResults::default()));
        let (s, r, url) = (stop.clone(), results.clone(), format!("http://{host}/"));
        let task = tokio::spawn(async move {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let res = testbed::http::get_via(proxy, &url).await;
                {
                    let mut r = r.lock();
                    match res {
                        Ok(reply) if reply.status == 200 => {
                            r.ok += 1;
                            let who = reply
                                .body
                                .split_whitespace()
                                .next()
                                .unwrap_or_default()
                                .to_string();
                            *r.by_pod.entry(who).or_insert(0) += 1;
                        }
                        Ok(reply) => r.failures.push(format!(
                            "status {}: {}",
                            reply.status,
                            reply.body.trim()
                        )),
                        Err(e) => r.failures.push(format!("{e:#}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Traffic {
            stop,
            task,
            results,
        }
    }

    /// Resets the per-pod counts (e.g. after a change has converged).
    pub(crate) fn reset_counts(&self) {
        self.results.lock().by_pod.clear();
    }

    pub(crate) async fn stop(self) -> TrafficResults {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        std::mem::take(&mut *self.results.lock())
    }
}

// Helpers of the traffic-policy scenarios (TrafficSplit, RetryPolicy, Gateway API routes).

/// A Service without a selector whose endpoints are given by a slice.
pub(crate) fn plain_service(name: &str, port: u16, endpoints: &[std::net::IpAddr]) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: {port}}}]\n---\n{}",
        slice(&format!("{name}-x"), name, "http", port, endpoints)
    )
}

/// A pod `NAME-1` at 127.0.0.LAST whose backend gets `backend` arguments, its Service
/// `NAME` (selecting it), and a wait until its sidecar serves the inbound port. Returns
/// the backend's own address (for its request counter).
pub(crate) async fn backend_pod(
    mesh: &mut Mesh,
    name: &str,
    last: u8,
    backend: &[&str],
) -> anyhow::Result<SocketAddr> {
    let port = testbed::procs::free_port()?;
    let pod_name = format!("{name}-1");
    mesh.add_pod_with(&pod_name, last, port, backend).await?;
    let pods = std::fs::read_to_string(mesh.manifests().join("pods.yaml"))?;
    mesh.write(
        "pods.yaml",
        &format!("{pods}---\n{}", pod(&pod_name, name, ip(last), name)),
    )?;
    mesh.write(
        &format!("{name}.yaml"),
        &selected_service(name, port, &[ip(last)]),
    )?;
    let sidecar = &mesh.sidecars[&pod_name];
    let inbound = format!("inbound|{port}");
    wait_until(CONVERGE, "the pod's inbound listener", || {
        let inbound = inbound.clone();
        async move { Ok(sidecar.admin_get("/listeners").await?.contains(&inbound)) }
    })
    .await?;
    Ok(SocketAddr::new(testbed::manifests::app_ip(ip(last)), port))
}

/// Shares of answering pods over `n` sequential calls.
pub(crate) async fn shares(
    mesh: &Mesh,
    host: &str,
    n: usize,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let seen = mesh.answering(host, n).await?;
    Ok(seen
        .into_iter()
        .map(|(k, v)| (k, v as f64 * 100.0 / n as f64))
        .collect())
}

/// Shares of answering pods over `n` calls, measured again (at most three times) while
/// `pod`'s share is not within `tolerance` of `want`: a proxy may serve a few requests
/// on the old weights right after its config dump shows the new ones (Envoy hands a
/// route change to its workers after the main thread has it), and one sample of 1,000
/// is sometimes 3 standard deviations off. A split that is really wrong still fails.
pub(crate) async fn settled_shares(
    mesh: &Mesh,
    host: &str,
    n: usize,
    (pod, want, tolerance): (&str, f64, f64),
) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut s = shares(mesh, host, n).await?;
    for _ in 0..2 {
        if (s.get(pod).copied().unwrap_or(0.0) - want).abs() <= tolerance {
            break;
        }
        s = shares(mesh, host, n).await?;
    }
    Ok(s)
}

/// Requests counted by a backend (through its app address, not the mesh).
pub(crate) async fn backend_count(addr: SocketAddr) -> anyhow::Result<u64> {
    Ok(testbed::http::get_ok(addr, "/__count")
        .await?
        .trim()
        .parse()?)
}

pub(crate) async fn wait_for_route(mesh: &Mesh, needle: &str) -> anyhow::Result<()> {
    let client = &mesh.client;
    let needle = needle.to_string();
    wait_until(CONVERGE, "the route change in Envoy", || {
        let needle = needle.clone();
        async move {
            Ok(client
                .admin_get("/config_dump?resource=dynamic_route_configs")
                .await?
                .contains(&needle))
        }
    })
    .await?;
    Ok(())
}

/// TrafficSplit `web-split` of `web` over `web-a` and `web-b` at weights `a` and `b`.
pub(crate) fn web_split(a: i64, b: i64) -> String {
    split_over(("web-a", a), ("web-b", b))
}

/// TrafficSplit `web-split` of `web` over two backends, each with its weight.
pub(crate) fn split_over((a, wa): (&str, i64), (b, wb): (&str, i64)) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: web-split, namespace: default}}\nspec:\n  service: web\n  backends:\n    - {{service: {a}, weight: {wa}}}\n    - {{service: {b}, weight: {wb}}}\n"
    )
}

/// A Service selecting pods `app: NAME`, with its slice.
pub(crate) fn selected_service(name: &str, port: u16, endpoints: &[std::net::IpAddr]) -> String {
    format!(
        "{}---\n{}",
        testbed::manifests::service(name, "http", 80, port, None),
        slice(&format!("{name}-x"), name, "http", port, endpoints)
    )
}

// TCP through the explicit proxy (HTTP CONNECT) to a TCP echo app.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `CONNECT authority` through `proxy`; returns the stream after a 200.
pub(crate) async fn connect(
    proxy: SocketAddr,
    authority: &str,
) -> anyhow::Result<(u16, tokio::net::TcpStream)> {
    let mut s = tokio::net::TcpStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < 8192, "response head too long");
        anyhow::ensure!(s.read(&mut byte).await? == 1, "closed during the head");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line: {text}"))?;
    Ok((status, s))
}

/// A TCP echo server.
pub(crate) async fn echo_server(addr: SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    greeting_echo_server(addr, b"", Default::default()).await
}

/// A TCP echo server that speaks first, sending `greeting` (as databases do), and counts
/// the connections it accepts in `accepted`.
pub(crate) async fn greeting_echo_server(
    addr: SocketAddr,
    greeting: &'static [u8],
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if s.write_all(greeting).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    }))
}
