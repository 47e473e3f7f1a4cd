//! Proxyless gRPC apps on real grpc-js with @grpc/grpc-js-xds
//! (`testbed/grpc-js/mesh_app.js`, packages from `scripts/setup.sh`): each pod's agent
//! with its xDS bridge (`xds-server agent --grpc --xds-proxy`) writing the app's
//! bootstrap, xDS-enabled servers, and client runs that report successes, failures,
//! answers and the client's own CSDS (the same report as [`crate::grpc_app`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::procs::{Agent, ControlPlane, Proc, wait_until, workspace_root};

fn dir() -> PathBuf {
    workspace_root().join("testbed/grpc-js")
}

/// Node, with the pinned packages installed. Missing is an error, never a skip.
pub fn node() -> anyhow::Result<PathBuf> {
    let modules = dir().join("node_modules/@grpc/grpc-js-xds/package.json");
    if !modules.exists() {
        bail!("{} not found (run scripts/setup.sh)", modules.display());
    }
    let out = std::process::Command::new("node")
        .arg("--version")
        .output()
        .context("node is not installed (Node 20; see scripts/setup.sh)")?;
    anyhow::ensure!(out.status.success(), "node --version failed");
    Ok(PathBuf::from("node"))
}

fn app() -> PathBuf {
    dir().join("mesh_app.js")
}

/// A pod's agent with its xDS bridge, and the bootstrap it wrote for the app.
pub struct BridgedPod {
    /// The agent (renews, bridges xDS).
    pub agent: Agent,
    /// The app's bootstrap (`GRPC_XDS_BOOTSTRAP`).
    pub bootstrap: PathBuf,
}

/// Starts `pod`'s agent (service account `sa`, namespace default) on the credentials
/// `xds-server bootstrap --grpc` leaves in `work/certs-POD`, bridging xDS to `cp`;
/// waits for the app's bootstrap. `extra` goes to the agent.
pub async fn bridged_pod(
    cp: &ControlPlane,
    work: &Path,
    pod: &str,
    sa: &str,
    extra: &[&str],
) -> anyhow::Result<BridgedPod> {
    crate::grpc_app::bootstrap(cp, work, pod, sa, &[])?;
    let out = work.join(format!("agent-bootstrap-{pod}.json"));
    let out_s = out.display().to_string();
    let id = format!("default/{sa}");
    let xds = cp.xds.to_string();
    let mut args = vec![
        "--identity",
        &id,
        "--grpc",
        "--xds-proxy",
        "--bootstrap-out",
        &out_s,
        "--pod",
        pod,
        "--service-account",
        sa,
        "--xds-address",
        &xds,
    ];
    args.extend_from_slice(extra);
    let agent = Agent::start(&work.join(format!("certs-{pod}")), cp, work, &args).await?;
    wait_until(Duration::from_secs(10), "the agent's bootstrap", || {
        let ok = out.exists();
        async move { Ok(ok) }
    })
    .await?;
    Ok(BridgedPod {
        agent,
        bootstrap: out,
    })
}

/// An xDS-enabled grpc-js server answering with its name.
pub struct JsServer {
    /// The process.
    pub proc: Proc,
    /// Where it writes its CSDS every second.
    pub csds: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

impl JsServer {
    /// Starts a server on `address` (IP:PORT; grpc-js binds the port on every address,
    /// so each server needs its own port) with `bootstrap` and the environment `env`
    /// (e.g. `GRPC_XDS_EXPERIMENTAL_RBAC=true`); `extra` goes to the app.
    pub fn start(
        bootstrap: &Path,
        work: &Path,
        name: &str,
        address: std::net::SocketAddr,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let csds = work.join(format!("grpc-js-server-{name}.csds.json"));
        let log = work.join(format!("grpc-js-server-{name}.log"));
        let mut cmd = std::process::Command::new(node()?);
        cmd.arg(app())
            .args(["server", "--name", name, "--address", &address.to_string()])
            .arg("--csds-out")
            .arg(&csds)
            .args(extra)
            .env("GRPC_XDS_BOOTSTRAP", bootstrap)
            .envs(env.iter().copied());
        let proc = Proc::spawn_logged(&format!("grpc-js server {name}"), cmd, &log)?;
        Ok(JsServer { proc, csds, log })
    }

    /// What it holds, from its CSDS (empty until its first dump).
    pub fn csds(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.csds)
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok())
            .unwrap_or_default()
    }

    /// Its log's text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs a grpc-js client to completion: `GRPC_XDS_BOOTSTRAP=bootstrap mesh_app.js
/// client ARGS`; returns its JSON report (`ok`, `failed`, `answers`, `csds`, maybe
/// `unreachable`).
pub async fn client(bootstrap: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new(node()?)
        .arg(app())
        .arg("client")
        .args(args)
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .kill_on_drop(true)
        .output()
        .await
        .context("running the grpc-js client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| {
        format!(
            "grpc-js client {args:?} printed no report (exit {}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
