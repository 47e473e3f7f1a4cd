//! `rudder-cni`: the chained CNI plugin that installs a meshed pod's interception rules
//! in its network namespace as the runtime sets the pod's network up, so injected pods
//! need no privileged init container (the injector's CNI mode), and its node installer.
//!
//! - [`spec`]: the CNI protocol (commands, configuration, results, errors); pure.
//! - [`pod`]: whether a pod is meshed and the interception it asked for; pure.
//! - [`plugin`]: one call, behind a `Node` (API server, namespace) so it is tested pure.
//! - [`kube`] and [`netns`]: the I/O shells (one bounded GET; a program run in the
//!   pod's namespace).
//! - [`install`]: the DaemonSet's installer (binary, kubeconfig, conflist entry).
//! - [`validate`]: the injected pod's check that its traffic is intercepted.
//!
//! The binary runs as the plugin when the runtime calls it (CNI_COMMAND set, no
//! arguments), as the installer with `rudder-cni install`, and as the pod's first init
//! container with `rudder-cni validate`.

mod install;
mod kube;
mod netns;
mod plugin;
mod pod;
mod spec;
mod validate;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Rudder's CNI plugin (chained after the network plugin) and its installer.
#[derive(Debug, Parser)]
#[command(name = "rudder-cni", version)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// The runtime's call (CNI spec): ADD, DEL, CHECK or VERSION.
    #[arg(long, env = "CNI_COMMAND", hide = true)]
    cni_command: Option<String>,
    /// The pod's network namespace (a path).
    #[arg(long, env = "CNI_NETNS", hide = true)]
    cni_netns: Option<PathBuf>,
    /// `K8S_POD_NAMESPACE=..;K8S_POD_NAME=..`.
    #[arg(long, env = "CNI_ARGS", hide = true, default_value = "")]
    cni_args: String,
    /// Where the iptables tools are looked for first.
    #[arg(long, env = "PATH", hide = true)]
    path: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Install the plugin on this node and keep it installed until SIGTERM (the
    /// DaemonSet's container).
    Install(InstallArgs),
    /// Exit 0 only if this pod's outbound traffic is intercepted (the injected
    /// `rudder-validate` init container; unprivileged).
    Validate(ValidateArgs),
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// The sidecar's outbound port (listened on here until the check is done).
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    /// An address outside the pod to connect to (must not be excluded from
    /// interception).
    #[arg(long, default_value = "192.0.2.1:80")]
    probe_address: std::net::SocketAddr,
    #[arg(long, default_value_t = 10)]
    timeout_seconds: u64,
}

#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// The host's CNI bin directory, as mounted in this container.
    #[arg(long, default_value = "/host/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// The host's CNI conf directory, as mounted in this container.
    #[arg(long, default_value = "/host/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// The CNI conf directory as the host sees it.
    #[arg(long, default_value = "/etc/cni/net.d")]
    host_cni_conf_dir: PathBuf,
    /// Pods of these namespaces are passed through (repeat).
    #[arg(long = "exclude-namespace", default_values_t = ["kube-system".to_string()])]
    exclude_namespaces: Vec<String>,
    /// The API server's host and port (in a pod: the kubernetes Service's).
    #[arg(long, env = "KUBERNETES_SERVICE_HOST")]
    api_host: String,
    #[arg(long, env = "KUBERNETES_SERVICE_PORT", default_value_t = 443)]
    api_port: u16,
    /// The ServiceAccount token the plugin asks with, and the cluster CA.
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    token_file: PathBuf,
    #[arg(
        long,
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    ca_file: PathBuf,
    /// How often the installation is checked (the token renewed, the entry restored).
    #[arg(long, default_value_t = 10)]
    interval_seconds: u64,
    /// Install once and exit (no watching, nothing removed).
    #[arg(long)]
    once: bool,
    /// Remove the installation and exit.
    #[arg(long)]
    uninstall: bool,
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rudder-cni: starting: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        Some(Sub::Install(i)) => rt.block_on(run_installer(i)),
        Some(Sub::Validate(v)) => {
            let timeout = Duration::from_secs(v.timeout_seconds.max(1));
            match rt.block_on(validate::validate(
                v.outbound_port,
                v.probe_address,
                timeout,
            )) {
                Ok(()) => {
                    eprintln!("rudder-cni validate: outbound traffic is intercepted");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("rudder-cni validate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => rt.block_on(run_plugin(
            args.cni_command,
            args.cni_netns,
            args.cni_args,
            args.path,
        )),
    }
}

/// One plugin call: stdin in, the result or the error JSON out.
async fn run_plugin(
    command: Option<String>,
    netns: Option<PathBuf>,
    cni_args: String,
    path: Option<String>,
) -> ExitCode {
    let mut stdin = Vec::new();
    // Without a command this is no runtime's call (a person at a terminal): answer
    // without waiting for stdin.
    let read = match &command {
        Some(_) => std::io::stdin()
            .take(spec::MAX_CONFIG_BYTES as u64 + 1)
            .read_to_end(&mut stdin),
        None => Ok(0),
    };
    let call = plugin::Call {
        command: command.unwrap_or_default(),
        netns: netns.filter(|p| !p.as_os_str().is_empty()),
        args: cni_args,
    };
    let result = match read {
        Ok(_) => plugin::handle(&call, &stdin, &plugin::System { path }).await,
        Err(e) => Err((
            "1.0.0".into(),
            spec::CniError::new(spec::Code::Io, "reading stdin", e.to_string()),
        )),
    };
    let (text, code) = match result {
        Ok(None) => (String::new(), ExitCode::SUCCESS),
        Ok(Some(v)) => (v.to_string(), ExitCode::SUCCESS),
        Err((version, e)) => {
            eprintln!("rudder-cni: {e}");
            (e.to_json(&version).to_string(), ExitCode::FAILURE)
        }
    };
    let mut out = std::io::stdout().lock();
    if !text.is_empty() && writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    code
}

/// `rudder-cni install`.
async fn run_installer(a: InstallArgs) -> ExitCode {
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("rudder-cni install: finding this binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let host = if a.api_host.contains(':') {
        format!("[{}]", a.api_host)
    } else {
        a.api_host.clone()
    };
    let installer = install::Installer {
        settings: install::Settings {
            bin_dir: a.cni_bin_dir,
            conf_dir: a.cni_conf_dir,
            host_conf_dir: a.host_cni_conf_dir,
            binary,
            exclude_namespaces: a.exclude_namespaces,
            api_server: format!("https://{host}:{}", a.api_port),
            token_file: a.token_file,
            ca_file: a.ca_file,
        },
    };
    if a.uninstall {
        return report(installer.remove().map(|()| vec!["removed".to_string()]));
    }
    if a.once {
        return report(installer.ensure());
    }
    let stop = crate::runtime::shutdown_signal();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(a.interval_seconds.max(1)));
    loop {
        tokio::select! {
            // The signal first: its handler is registered before the first install.
            biased;
            signal = &mut stop => {
                eprintln!("rudder-cni install: {signal}: removing the plugin from this node");
                return report(installer.remove().map(|()| vec!["removed".to_string()]));
            }
            _ = tick.tick() => {
                // A failure (no network configuration yet) is retried on the next tick.
                let _ = report(installer.ensure());
            }
        }
    }
}

fn report(r: Result<Vec<String>, String>) -> ExitCode {
    match r {
        Ok(changed) => {
            for c in changed {
                eprintln!("rudder-cni install: {c}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rudder-cni install: {e}");
            ExitCode::FAILURE
        }
    }
}
