//! Root rotation in cluster mode, in three steps on the Secret `rudder-ca`, so that no
//! proxy ever meets a certificate it cannot verify:
//!
//! 1. `prepare`: a new root is made and kept beside the current one (`ca-next.crt`,
//!    `ca-next.key`). It joins the trust bundle but signs nothing yet. Proxies get the
//!    new bundle as their certificates renew (within one certificate lifetime).
//! 2. `activate`: the new root becomes the issuer (`ca.crt`, `ca.key`); the old one stays
//!    trusted (`ca-previous.crt`), so certificates it issued keep working until they renew.
//!    The control plane's serving certificate is signed by the new root, which every proxy
//!    trusts since step 1.
//! 3. `finish`: the old root leaves the trust bundle.
//!
//! Each step is applied to the Secret with the resourceVersion read (a concurrent change
//! fails it) and takes effect when the control plane restarts (`kubectl rollout restart`,
//! one replica at a time). A supplied intermediate is rotated by the PKI that issued it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::Context;
use ca::Authority;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};

/// Name of the Secret holding the CA in cluster mode.
pub(crate) const CA_SECRET: &str = "rudder-ca";

/// The next root's certificate, trusted but not signing (after `prepare`).
pub(crate) const NEXT_CERT: &str = "ca-next.crt";
/// The next root's key.
pub(crate) const NEXT_KEY: &str = "ca-next.key";
/// Roots still trusted after `activate`, until `finish`.
pub(crate) const PREVIOUS_ROOTS: &str = "ca-previous.crt";

/// One step of a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    /// Make the next root and add it to the trust bundle.
    Prepare,
    /// Sign with the next root; keep the old one trusted.
    Activate,
    /// Stop trusting the old root.
    Finish,
}

fn text(data: &BTreeMap<String, String>, key: &str) -> Option<String> {
    data.get(key).filter(|v| !v.trim().is_empty()).cloned()
}

/// The Secret's data (as text) after `step`, and what to tell the operator; an error
/// naming the step when it does not apply.
pub(crate) fn apply_step(
    mut data: BTreeMap<String, String>,
    step: Step,
    trust_domain: &str,
    now: SystemTime,
) -> anyhow::Result<(BTreeMap<String, String>, String)> {
    let next = (text(&data, NEXT_CERT), text(&data, NEXT_KEY));
    let chained = text(&data, "ca-chain.crt").is_some();
    let said = match step {
        Step::Prepare => {
            anyhow::ensure!(
                !chained,
                "prepare: Secret {CA_SECRET} holds an intermediate (ca-chain.crt); rotate it with the PKI that issued it"
            );
            anyhow::ensure!(
                next.0.is_none() && next.1.is_none(),
                "prepare: a next root is already waiting ({NEXT_CERT}); run `activate`"
            );
            anyhow::ensure!(
                text(&data, PREVIOUS_ROOTS).is_none(),
                "prepare: the last rotation is not finished ({PREVIOUS_ROOTS} is still trusted); run `finish` first"
            );
            let root =
                Authority::generate_root(trust_domain, now).context("making the next root")?;
            data.insert(NEXT_CERT.into(), root.files().cert_pem.clone());
            data.insert(NEXT_KEY.into(), root.files().key_pem.clone());
            "prepared: the next root is trusted but signs nothing; restart the control plane, wait one certificate lifetime (every proxy then holds the new bundle), then run `activate`".to_string()
        }
        Step::Activate => {
            let (Some(cert), Some(key)) = next else {
                anyhow::bail!(
                    "activate: no next root ({NEXT_CERT}, {NEXT_KEY}); run `prepare` first"
                );
            };
            let old = text(&data, "ca.crt").context("activate: the Secret has no ca.crt")?;
            data.insert(PREVIOUS_ROOTS.into(), old);
            data.insert("ca.crt".into(), cert);
            data.insert("ca.key".into(), key);
            data.remove(NEXT_CERT);
            data.remove(NEXT_KEY);
            "activated: the new root signs and the old one stays trusted; restart the control plane, wait one certificate lifetime, then run `finish`".to_string()
        }
        Step::Finish => {
            anyhow::ensure!(
                next.0.is_none(),
                "finish: a next root is waiting ({NEXT_CERT}); run `activate` first"
            );
            anyhow::ensure!(
                data.remove(PREVIOUS_ROOTS).is_some(),
                "finish: no previous root is trusted; nothing to finish"
            );
            "finished: only the new root is trusted; restart the control plane".to_string()
        }
    };
    Ok((data, said))
}

/// The roots a Secret's rotation adds to the trust bundle: the next one (after
/// `prepare`) and the previous ones (after `activate`).
pub(crate) fn extra_roots(data: &BTreeMap<String, String>) -> String {
    [text(data, NEXT_CERT), text(data, PREVIOUS_ROOTS)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .concat()
}

/// The Secret's data as text (values that are not UTF-8 are left out).
pub(crate) fn secret_text(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

/// Applies `step` to the Secret in `namespace`; answers what to do next.
pub async fn rotate_secret(
    client: Client,
    namespace: &str,
    trust_domain: &str,
    step: Step,
) -> anyhow::Result<String> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let mut secret = api
        .get(CA_SECRET)
        .await
        .with_context(|| format!("reading Secret {namespace}/{CA_SECRET}"))?;
    let (data, said) = apply_step(secret_text(&secret), step, trust_domain, SystemTime::now())?;
    secret.data = Some(
        data.into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect(),
    );
    // The resourceVersion read stays in the metadata: a concurrent change fails this.
    api.replace(CA_SECRET, &PostParams::default(), &secret)
        .await
        .with_context(|| format!("writing Secret {namespace}/{CA_SECRET}"))?;
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> BTreeMap<String, String> {
        let root = Authority::generate_root("cluster.local", SystemTime::now()).expect("root");
        BTreeMap::from([
            ("ca.crt".to_string(), root.files().cert_pem.clone()),
            ("ca.key".to_string(), root.files().key_pem.clone()),
        ])
    }

    #[test]
    fn steps_apply_in_order_only() {
        let now = SystemTime::now();
        let data = start();
        for step in [Step::Activate, Step::Finish] {
            assert!(
                apply_step(data.clone(), step, "cluster.local", now).is_err(),
                "{step:?}"
            );
        }
        let (prepared, _) =
            apply_step(data.clone(), Step::Prepare, "cluster.local", now).expect("prepare");
        assert_eq!(
            prepared["ca.crt"], data["ca.crt"],
            "the old root still signs"
        );
        assert!(apply_step(prepared.clone(), Step::Prepare, "cluster.local", now).is_err());
        assert!(apply_step(prepared.clone(), Step::Finish, "cluster.local", now).is_err());
        let (active, _) =
            apply_step(prepared.clone(), Step::Activate, "cluster.local", now).expect("activate");
        assert_eq!(active["ca.crt"], prepared[NEXT_CERT]);
        assert_eq!(active[PREVIOUS_ROOTS], data["ca.crt"]);
        assert!(!active.contains_key(NEXT_CERT) && !active.contains_key(NEXT_KEY));
        assert!(
            apply_step(active.clone(), Step::Prepare, "cluster.local", now).is_err(),
            "finish first"
        );
        let (done, _) =
            apply_step(active.clone(), Step::Finish, "cluster.local", now).expect("finish");
        assert!(!done.contains_key(PREVIOUS_ROOTS));
        assert_eq!(done["ca.crt"], active["ca.crt"]);
        let mut chained = start();
        chained.insert("ca-chain.crt".into(), "x".into());
        assert!(apply_step(chained, Step::Prepare, "cluster.local", now).is_err());
    }
}
