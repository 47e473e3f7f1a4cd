//! Proxyless gRPC apps on real grpcio (`testbed/grpc/mesh_app.py` in the project's venv):
//! their bootstraps from `xds-server bootstrap --grpc`, xDS-enabled servers, and client
//! runs that report successes, failures, answers and the client's own CSDS.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::procs::{ControlPlane, Proc, workspace_bin, workspace_root};

/// The venv's Python with grpcio and grpcio-csds (`scripts/setup.sh`). Missing is an
/// error, never a skip.
pub fn python() -> anyhow::Result<PathBuf> {
    let path = workspace_root().join(".venv/bin/python");
    if !path.exists() {
        bail!("{} not found (run scripts/setup.sh)", path.display());
    }
    Ok(path)
}

fn app() -> PathBuf {
    workspace_root().join("testbed/grpc/mesh_app.py")
}

/// Writes a gRPC app's bootstrap for `pod` (service account `sa`, namespace default)
/// with credentials in `work/certs-POD`; returns the bootstrap's path.
/// `extra` goes to `bootstrap` (e.g. `--cert-lifetime 10s`).
pub fn bootstrap(
    cp: &ControlPlane,
    work: &Path,
    pod: &str,
    sa: &str,
    extra: &[&str],
) -> anyhow::Result<PathBuf> {
    let out = Command::new(workspace_bin("xds-server")?)
        .args(["bootstrap", "--grpc", "--pod", pod, "--service-account", sa])
        .args(extra)
        .arg("--ca-dir")
        .arg(cp.ca_dir())
        .arg("--cert-dir")
        .arg(work.join(format!("certs-{pod}")))
        .args(["--xds-address", &cp.xds.to_string()])
        .output()
        .context("running xds-server bootstrap --grpc")?;
    if !out.status.success() {
        bail!(
            "bootstrap --grpc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = work.join(format!("grpc-bootstrap-{pod}.json"));
    std::fs::write(&path, &out.stdout)?;
    Ok(path)
}

/// An xDS-enabled grpcio server answering with its name.
pub struct GrpcServer {
    /// The process.
    pub proc: Proc,
    /// Where it writes its CSDS every second.
    pub csds: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

impl GrpcServer {
    /// Starts a server on `address` (IP:PORT) with `bootstrap`; `extra` goes to the app
    /// (e.g. `--fail-every 2`).
    pub fn start(
        bootstrap: &Path,
        work: &Path,
        name: &str,
        address: std::net::SocketAddr,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let csds = work.join(format!("grpc-server-{name}.csds.json"));
        let log = work.join(format!("grpc-server-{name}.log"));
        let mut cmd = Command::new(python()?);
        cmd.arg(app())
            .args(["server", "--name", name, "--address", &address.to_string()])
            .arg("--csds-out")
            .arg(&csds)
            .args(extra)
            .env("GRPC_XDS_BOOTSTRAP", bootstrap);
        let proc = Proc::spawn_logged(&format!("grpc server {name}"), cmd, &log)?;
        Ok(GrpcServer { proc, csds, log })
    }

    /// What it holds, from its CSDS (empty until its first dump).
    pub fn csds(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.csds)
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok())
            .unwrap_or_default()
    }
}

/// Runs a client to completion: `GRPC_XDS_BOOTSTRAP=bootstrap mesh_app.py client ARGS`;
/// returns its JSON report (`ok`, `failed`, `answers`, `csds`, maybe `unreachable`).
pub async fn client(bootstrap: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let mut cmd = tokio::process::Command::new(python()?);
    cmd.arg(app())
        .arg("client")
        .args(args)
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .kill_on_drop(true);
    let out = cmd.output().await.context("running the gRPC client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| {
        format!(
            "gRPC client {args:?} printed no report (exit {}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One plain-text call straight to `address` (no xDS, no TLS): its JSON outcome.
pub async fn direct(address: std::net::SocketAddr) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new(python()?)
        .arg(app())
        .args(["direct", "--address", &address.to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .context("running the plain-text client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .with_context(|| format!("direct call printed no report: {stdout}"))
}

/// The entries of a CSDS report that are not ACKED, as text (empty: all ACKED).
pub fn not_acked(csds: &[Value]) -> Vec<String> {
    csds.iter()
        .filter(|e| e["status"] != "ACKED")
        .map(|e| e.to_string())
        .collect()
}

/// Asserts that a client's report (`{"csds": [...]}`) holds every resource type a
/// client uses, all ACKED; `what` names the client in the failure.
pub fn assert_all_acked(report: &Value, what: &str) {
    let csds: Vec<Value> = report["csds"].as_array().cloned().unwrap_or_default();
    for ty in [
        "Listener",
        "RouteConfiguration",
        "Cluster",
        "ClusterLoadAssignment",
    ] {
        assert!(
            csds.iter().any(|e| e["type"] == ty),
            "{what}: no {ty} in the client's CSDS: {csds:?}"
        );
    }
    let bad = not_acked(&csds);
    assert!(bad.is_empty(), "{what}: not ACKED: {bad:?}");
}
