//! One plugin call, start to end: the command, the configuration and the pod decide what
//! happens; the node (the API server, the pod's network namespace) is behind [`Node`] so
//! the decisions are tested without one. Fails closed: a meshed pod whose rules are not
//! installed does not start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::cni::pod::{Decision, decide};
use crate::cni::spec::{
    CniError, Code, Command, NetConf, PodRef, add_result, has_ipv6, parse_conf, pod_ref,
    version_of, version_result,
};
use crate::k8s::inject::INTERCEPTION_ANNOTATION as INTERCEPTION;
use crate::k8s::inject::iptables::{Interception, rules, rules_v6};

/// The call's environment (CNI_*).
#[derive(Clone, Debug, Default)]
pub(crate) struct Call {
    pub(crate) command: String,
    pub(crate) netns: Option<PathBuf>,
    pub(crate) args: String,
}

/// What a call needs from the node.
pub(crate) trait Node {
    /// The pod's API object.
    async fn pod(&self, conf: &NetConf, kubeconfig: &Path, pod: &PodRef) -> Result<Value, String>;
    /// Installs `rules` (IPv6 ones when `v6`) in the namespace.
    async fn install(
        &self,
        conf: &NetConf,
        netns: &Path,
        rules: &str,
        v6: bool,
    ) -> Result<(), String>;
    /// Whether the namespace holds Rudder's rules (CHECK).
    async fn installed(&self, conf: &NetConf, netns: &Path, v6: bool) -> Result<bool, String>;
}

/// Runs one call: what to print on success (nothing for DEL and CHECK), or the error.
/// The error's version is the configuration's where it could be read.
pub(crate) async fn handle(
    call: &Call,
    stdin: &[u8],
    node: &impl Node,
) -> Result<Option<Value>, (String, CniError)> {
    let version = version_of(stdin);
    let fail = |e: CniError| (version.clone(), e);
    match Command::parse(&call.command).map_err(fail)? {
        Command::Version => Ok(Some(version_result(&version))),
        // The namespace and the rules in it go with the sandbox: nothing to undo, and a
        // DEL must succeed even for what was never added.
        Command::Del => Ok(None),
        Command::Add => {
            let conf = parse_conf(stdin).map_err(fail)?;
            let out = add_result(&conf).map_err(fail)?;
            intercept(call, &conf, node, false).await.map_err(fail)?;
            Ok(Some(out))
        }
        Command::Check => {
            let conf = parse_conf(stdin).map_err(fail)?;
            intercept(call, &conf, node, true).await.map_err(fail)?;
            Ok(None)
        }
    }
}

/// ADD (installs) or CHECK (verifies) the pod's interception.
async fn intercept(
    call: &Call,
    conf: &NetConf,
    node: &impl Node,
    check: bool,
) -> Result<(), CniError> {
    let Some(pod) = pod_ref(&call.args)? else {
        return Ok(()); // Not a Kubernetes pod.
    };
    if conf.exclude_namespaces.contains(&pod.namespace) {
        return Ok(());
    }
    let who = format!("pod {}/{}", pod.namespace, pod.name);
    let kubeconfig = conf.kubeconfig.as_deref().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "invalid network configuration",
            "kubeconfig: missing (the installer writes it)",
        )
    })?;
    let object = node
        .pod(conf, Path::new(kubeconfig), &pod)
        .await
        .map_err(|e| {
            CniError::new(
                Code::TryAgainLater,
                format!("{who}: cannot tell whether it is meshed"),
                e,
            )
        })?;
    let settings = match decide(&object) {
        Ok(Decision::PassThrough(_)) => return Ok(()),
        Ok(Decision::Intercept(i)) if i.proxy_uid == conf.proxy_uid => i,
        Ok(Decision::Intercept(i)) => {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("{who}: its interception annotation names another proxy UID"),
                format!(
                    "{INTERCEPTION}: proxyUid {} is not the mesh's proxy UID {}; that UID's traffic would bypass the proxy (the injector writes the annotation; it was changed since)",
                    i.proxy_uid, conf.proxy_uid
                ),
            ));
        }
        Err(e) => {
            return Err(CniError::new(
                e.code,
                format!("{who}: {}", e.msg),
                e.details,
            ));
        }
    };
    let netns = call.netns.as_deref().ok_or_else(|| {
        CniError::new(
            Code::InvalidEnvironment,
            format!("{who}: no network namespace"),
            "CNI_NETNS is not set",
        )
    })?;
    let failed = |e: String| {
        CniError::new(
            Code::Intercept,
            format!("{who}: its interception rules could not be installed"),
            e,
        )
    };
    // Each address family on its own: IPv4 rules present say nothing of IPv6's.
    let mut families = vec![(false, rules(&settings))];
    if needs_v6(conf, &settings) {
        families.push((true, rules_v6(&settings)));
    }
    for (v6, text) in families {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let present = node.installed(conf, netns, v6).await;
        if check {
            match present.map_err(failed)? {
                true => continue,
                false => {
                    return Err(failed(format!(
                        "{} holds no {family} RUDDER_OUTPUT chain",
                        netns.display()
                    )));
                }
            }
        }
        if present == Ok(true) {
            // A repeated ADD for the same namespace: installing again would add a
            // second jump to each chain.
            continue;
        }
        node.install(conf, netns, &text, v6)
            .await
            .map_err(|e| match v6 {
                true => failed(format!(
                    "IPv6 (its IPv6 traffic would bypass the proxy): {e}"
                )),
                false => failed(e),
            })?;
    }
    Ok(())
}

/// IPv6 rules are installed when the pod has an IPv6 address or excludes IPv6 networks.
fn needs_v6(conf: &NetConf, i: &Interception) -> bool {
    has_ipv6(conf) || i.exclude_cidrs.iter().any(|(ip, _)| ip.is_ipv6())
}

/// The node itself: the API server through the kubeconfig, the namespace through setns.
pub(crate) struct System {
    /// PATH, where the iptables tools are looked for.
    pub(crate) path: Option<String>,
}

impl Node for System {
    async fn pod(&self, conf: &NetConf, kubeconfig: &Path, pod: &PodRef) -> Result<Value, String> {
        crate::cni::kube::get_pod(kubeconfig, pod, Duration::from_secs(conf.timeout_seconds)).await
    }

    async fn install(
        &self,
        conf: &NetConf,
        netns: &Path,
        rules: &str,
        v6: bool,
    ) -> Result<(), String> {
        let program = if v6 {
            &conf.ip6tables_restore
        } else {
            &conf.iptables_restore
        };
        let program = crate::cni::netns::resolve(program, self.path.as_deref())?;
        crate::cni::netns::run_in(
            netns,
            &program,
            &["--noflush"],
            rules,
            Duration::from_secs(conf.timeout_seconds),
        )
        .await?;
        if v6 {
            // The sidecar reaches an IPv6 app from ::6, as the IPv4 one from 127.0.0.6.
            crate::cni::netns::on_thread_in(
                netns,
                crate::k8s::inject::iptables::add_inbound_source_v6,
            )?;
        }
        Ok(())
    }

    async fn installed(&self, conf: &NetConf, netns: &Path, v6: bool) -> Result<bool, String> {
        let restore = if v6 {
            &conf.ip6tables_restore
        } else {
            &conf.iptables_restore
        };
        let save = restore.replace("-restore", "-save");
        let program = crate::cni::netns::resolve(&save, self.path.as_deref())?;
        let out = crate::cni::netns::run_in(
            netns,
            &program,
            &["-t", "nat"],
            "",
            Duration::from_secs(conf.timeout_seconds),
        )
        .await?;
        Ok(out.lines().any(|l| l.starts_with(":RUDDER_OUTPUT")))
    }
}

#[cfg(test)]
#[path = "plugin_tests.rs"]
mod tests;
