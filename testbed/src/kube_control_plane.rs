//! The control plane in cluster mode, as its binary: `xds-server run --kubernetes`
//! against an in-process fake API server ([`crate::fake_kube`]) served over HTTP, with
//! its injector, certificate endpoint and admin port on free loopback ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::fake_kube::FakeKube;
use crate::procs::{Proc, wait_until, workspace_bin};

/// A running cluster-mode control plane.
#[derive(Debug)]
pub struct KubeControlPlane {
    /// Its addresses from the ready file (`xds`, `ca`, `injector`, `admin`).
    pub addrs: Value,
    /// Its log file.
    pub log: PathBuf,
    proc: Proc,
}

impl KubeControlPlane {
    /// Serves `fake` over HTTP and starts the control plane against it (files in `work`;
    /// `RUDDER_LOG` set to `log_filter`), waiting until it serves every port.
    pub async fn start(fake: &FakeKube, work: &Path, log_filter: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?;
        let served = fake.clone();
        tokio::spawn(async move { served.serve_http(listener).await });
        let kubeconfig = work.join("kubeconfig");
        std::fs::write(&kubeconfig, FakeKube::kubeconfig(api))?;
        let ready = work.join("cp.json");
        let mut cmd = Command::new(workspace_bin("xds-server")?);
        cmd.args(["run", "--kubernetes", "--lease-namespace", "rudder-system"])
            .args(["--xds-address", "127.0.0.1:0"])
            .args(["--ca-address", "127.0.0.1:0"])
            .args(["--admin-address", "127.0.0.1:0"])
            .args(["--injector-address", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUDDER_LOG", log_filter);
        let log = work.join("cp.log");
        let mut proc = Proc::spawn_logged("xds-server", cmd, &log)?;
        let mut addrs = Value::Null;
        let up = wait_until(Duration::from_secs(20), "the control plane", || {
            addrs = std::fs::read_to_string(&ready)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let running = proc.check_running();
            let ok = addrs["injector"].is_string() && addrs["ca"].is_string();
            async move { running.map(|()| ok) }
        })
        .await;
        if let Err(e) = up {
            anyhow::bail!(
                "{e:#}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(KubeControlPlane { addrs, log, proc })
    }

    /// One of its addresses (`xds`, `ca`, `injector`, `admin`).
    pub fn addr(&self, which: &str) -> anyhow::Result<SocketAddr> {
        self.addrs[which]
            .as_str()
            .with_context(|| format!("no {which} address in {}", self.addrs))?
            .parse()
            .with_context(|| format!("the {which} address"))
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A file of the CA Secret (`rudder-ca`) the control plane created in `fake`
    /// (`ca.crt`, `ca.key`).
    pub fn ca_file(fake: &FakeKube, key: &str) -> anyhow::Result<String> {
        use base64::Engine;
        let secret = fake
            .get("v1", "Secret", "rudder-system", "rudder-ca")
            .context("no CA Secret")?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][key].as_str().unwrap_or_default())?;
        Ok(String::from_utf8(raw)?)
    }

    /// Fails if it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.proc.check_running()
    }
}
