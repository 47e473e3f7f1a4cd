//! The data-path benchmark's mesh: for each proxy under test (Envoy, rudder-proxy), a
//! client pod and two server pods, each with its sidecar, all fed by one control plane
//! in manifest mode, plus a `loadgen serve` sink as each server pod's app.
//!
//! - `server-P` is a meshed pod: its client sidecar speaks mutual TLS to its server sidecar.
//! - `plain-P` is declared outside the mesh (`rudder.dev/inject: "false"`) and PERMISSIVE,
//!   yet still runs a sidecar: the client sidecar then sends plain text (the endpoint is
//!   not in the mesh) and the server sidecar accepts it, so the same two proxies carry the
//!   same requests without TLS. That is the "mTLS off" row.
//!
//! The sinks and the load generator can be pinned to one CPU and the sidecars to another
//! ([`Placement`]); the direct floor is the load generator calling a sink by address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::manifests::{app_ip, slice_in};
use crate::procs::{
    ControlPlane, DataPlane, PodPlacement, Proc, Sidecar, Stream, free_port, wait_until,
    workspace_bin,
};

/// The namespace of every object.
pub const NAMESPACE: &str = "bench";

/// How the two hops between a client and a server sidecar are secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// Mutual TLS between the sidecars, as in the mesh.
    Mtls,
    /// Plain text between the sidecars.
    Plain,
}

impl Hop {
    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Hop::Mtls => "mtls",
            Hop::Plain => "plain",
        }
    }
}

/// Which CPUs the processes run on (none: unpinned).
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// The load generator and the sinks.
    pub load: Option<usize>,
    /// The sidecars.
    pub proxies: Option<usize>,
}

impl Placement {
    /// Load on CPU 0 and proxies on CPU 1 when the machine has two or more CPUs.
    pub fn for_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus >= 2 {
            Placement {
                load: Some(0),
                proxies: Some(1),
            }
        } else {
            Placement {
                load: None,
                proxies: None,
            }
        }
    }
}

/// Pins every thread of `pid` to `cpu`.
pub fn pin(pid: u32, cpu: Option<usize>) -> anyhow::Result<()> {
    let Some(cpu) = cpu else { return Ok(()) };
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    if !out.status.success() {
        bail!(
            "taskset -a -p -c {cpu} {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A sidecar pair of one proxy: the client's sidecar and the two servers'.
#[derive(Debug)]
pub struct Pair {
    /// The proxy.
    pub proxy: DataPlane,
    /// The client pod's sidecar (requests enter at its `outbound`).
    pub client: Sidecar,
    /// The meshed server's sidecar.
    pub server: Sidecar,
    /// The plain-text server's sidecar.
    pub plain: Sidecar,
}

impl Pair {
    /// The host name a request to the server carries for `hop`.
    pub fn host(&self, hop: Hop) -> String {
        host(self.proxy, hop)
    }

    /// The server sidecar that `hop` goes through.
    pub fn server_for(&self, hop: Hop) -> &Sidecar {
        match hop {
            Hop::Mtls => &self.server,
            Hop::Plain => &self.plain,
        }
    }

    /// The cluster the client sidecar sends `hop`'s requests to.
    pub fn cluster(&self, hop: Hop) -> String {
        format!(
            "outbound|80||{}.{NAMESPACE}.svc.cluster.local",
            service(self.proxy, hop)
        )
    }
}

fn service(proxy: DataPlane, hop: Hop) -> String {
    let role = match hop {
        Hop::Mtls => "server",
        Hop::Plain => "plain",
    };
    format!("{role}-{}", proxy.name())
}

/// The fully qualified host of `proxy`'s server for `hop`.
pub fn host(proxy: DataPlane, hop: Hop) -> String {
    format!("{}.{NAMESPACE}.svc.cluster.local", service(proxy, hop))
}

/// The benchmark mesh: one control plane, sinks and a pair per proxy.
#[derive(Debug)]
pub struct PairMesh {
    /// Keeps the working directory (manifests, logs, credentials).
    pub work: tempfile::TempDir,
    /// The manifest directory the control plane watches.
    pub manifests: PathBuf,
    /// The control plane.
    pub cp: ControlPlane,
    /// One pair per proxy, in the order asked.
    pub pairs: Vec<Pair>,
    /// The sinks, by server pod name, with their addresses.
    pub sinks: Vec<(String, SocketAddr, Proc)>,
    /// The port every app listens on.
    pub app_port: u16,
    /// Pod addresses are 127.B.10.x and app addresses 127.B.11.x.
    base: u8,
}

/// Sink body size (the response), in bytes.
pub const BODY_BYTES: usize = 1024;

impl PairMesh {
    /// Starts the control plane (with `cp_args`), the sinks and a pair per proxy, waits
    /// until every sidecar is LIVE and every route answers, and pins them per `place`.
    pub async fn start(
        proxies: &[DataPlane],
        stream: Stream,
        cp_args: &[&str],
        place: Placement,
    ) -> anyhow::Result<Self> {
        let work = tempfile::tempdir()?;
        let manifests = work.path().join("manifests");
        std::fs::create_dir(&manifests)?;
        let base = 100 + (std::process::id() % 100) as u8;
        let app_port = free_port()?;
        let mut mesh_yaml = String::new();
        for (k, proxy) in proxies.iter().enumerate() {
            mesh_yaml.push_str(&pair_manifests(*proxy, base, k, app_port));
        }
        std::fs::write(manifests.join("pairs.yaml"), mesh_yaml)?;
        let cp = ControlPlane::start_with(&manifests, work.path(), cp_args).await?;
        let mut sinks = Vec::new();
        for (k, proxy) in proxies.iter().enumerate() {
            for (role, last) in [("server", 2), ("plain", 3)] {
                let name = format!("{role}-{}", proxy.name());
                let addr = SocketAddr::new(app_ip(pod_ip(base, k, last)), app_port);
                let proc = start_sink(addr, &name, work.path()).await?;
                if let Some(pid) = proc.pid() {
                    pin(pid, place.load)?;
                }
                sinks.push((name, addr, proc));
            }
        }
        let mut pairs = Vec::new();
        for (k, proxy) in proxies.iter().enumerate() {
            let start = |role: &str, last: u8| {
                let p = placement(*proxy, role, pod_ip(base, k, last));
                let (cp, work) = (&cp, work.path());
                async move { Sidecar::start_on(*proxy, &p, cp, stream, work).await }
            };
            let client = start("client", 1).await?;
            let server = start("server", 2).await?;
            let plain = start("plain", 3).await?;
            pairs.push(Pair {
                proxy: *proxy,
                client,
                server,
                plain,
            });
        }
        for pair in &mut pairs {
            for sidecar in [&mut pair.client, &mut pair.server, &mut pair.plain] {
                sidecar.wait_live(Duration::from_secs(60)).await?;
                if let Some(pid) = sidecar.pid() {
                    pin(pid, place.proxies)?;
                }
            }
        }
        let mesh = PairMesh {
            work,
            manifests,
            cp,
            pairs,
            sinks,
            app_port,
            base,
        };
        for pair in &mesh.pairs {
            for hop in [Hop::Mtls, Hop::Plain] {
                mesh.wait_routed(pair, hop).await?;
            }
        }
        Ok(mesh)
    }

    /// The sink behind `proxy`'s meshed server (the direct floor calls it).
    pub fn sink(&self, name: &str) -> anyhow::Result<SocketAddr> {
        self.sinks
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, a, _)| *a)
            .with_context(|| format!("no sink {name}"))
    }

    /// The pod address of server pod `last` of pair `k` (for endpoint churn).
    pub fn pod_ip(&self, k: usize, last: u8) -> IpAddr {
        pod_ip(self.base, k, last)
    }

    /// Waits until a request through `pair`'s client reaches its server over `hop`.
    async fn wait_routed(&self, pair: &Pair, hop: Hop) -> anyhow::Result<()> {
        wait_routed(pair.client.outbound, &pair.host(hop)).await
    }
}

/// Waits until `GET http://HOST/ready` sent to the sidecar at `outbound` answers 200.
pub async fn wait_routed(outbound: SocketAddr, host: &str) -> anyhow::Result<()> {
    let url = format!("http://{host}/ready");
    wait_until(
        Duration::from_secs(30),
        &format!("{outbound} to route {url}"),
        || {
            let url = url.clone();
            async move {
                Ok(crate::http::get_via(outbound, &url)
                    .await
                    .is_ok_and(|r| r.status == 200))
            }
        },
    )
    .await?;
    Ok(())
}

/// Pod `last` of pair `k`: 127.B.10.(10k + last).
fn pod_ip(base: u8, k: usize, last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, base, 10, 10 * k as u8 + last))
}

fn placement(proxy: DataPlane, role: &str, ip: IpAddr) -> PodPlacement {
    PodPlacement {
        namespace: NAMESPACE.into(),
        pod: format!("{role}-{}", proxy.name()),
        service_account: role.into(),
        ip,
        app_ip: app_ip(ip),
    }
}

/// The pods, Services and EndpointSlices of `proxy`'s pair (index `k`).
fn pair_manifests(proxy: DataPlane, base: u8, k: usize, app_port: u16) -> String {
    let name = proxy.name();
    let mut out = String::new();
    for (role, last, plain) in [
        ("client", 1, false),
        ("server", 2, false),
        ("plain", 3, true),
    ] {
        let pod = format!("{role}-{name}");
        let ip = pod_ip(base, k, last);
        let annotations = if plain {
            "  annotations: {rudder.dev/inject: \"false\", rudder.dev/mtls-mode: permissive}\n"
        } else {
            ""
        };
        out.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {NAMESPACE}\n  labels: {{app: {pod}}}\n{annotations}spec:\n  serviceAccountName: {role}\n  containers: [{{name: app, ports: [{{name: http, containerPort: {app_port}}}]}}]\nstatus: {{podIP: \"{ip}\"}}\n---\n"
        ));
        if role == "client" {
            continue;
        }
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {pod}, namespace: {NAMESPACE}}}\nspec:\n  selector: {{app: {pod}}}\n  ports: [{{name: http, port: 80, targetPort: {app_port}}}]\n---\n"
        ));
        out.push_str(&slice_in(
            NAMESPACE,
            &format!("{pod}-abc"),
            &pod,
            "http",
            app_port,
            &[ip],
        ));
        out.push_str("---\n");
    }
    out
}

/// Starts `loadgen serve` on `addr` and waits until it accepts connections.
pub async fn start_sink(addr: SocketAddr, name: &str, work: &Path) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(workspace_bin("loadgen")?);
    cmd.args(["serve", "--listen", &addr.to_string()])
        .args(["--body-bytes", &BODY_BYTES.to_string()]);
    let mut proc = Proc::spawn_logged(
        &format!("sink {name}"),
        cmd,
        &work.join(format!("sink-{name}.log")),
    )?;
    wait_until(Duration::from_secs(10), "the sink to listen", || {
        let running = proc.check_running();
        async move {
            running?;
            Ok(tokio::net::TcpStream::connect(addr).await.is_ok())
        }
    })
    .await?;
    Ok(proc)
}
