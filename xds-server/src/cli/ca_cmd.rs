//! `xds-server ca`: the CA directory's root (init, rotate, end the overlap) and, in
//! cluster mode, the steps of a root rotation on the Secret.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a new root CA in the CA directory (refused if one is there). `run` creates
    /// one on first start too; `bootstrap` and `credentials` need one to exist.
    Init {
        /// The CA directory.
        #[arg(long, default_value = "rudder-ca")]
        ca_dir: PathBuf,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Start a root rotation: a new root signs, the old one stays trusted. Restart the
    /// control plane to apply; certificates move to the new root as they renew.
    Rotate {
        /// The CA directory.
        #[arg(long, default_value = "rudder-ca")]
        ca_dir: PathBuf,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
    /// End the rotation overlap: stop trusting the previous root(s).
    EndOverlap {
        /// The CA directory.
        #[arg(long, default_value = "rudder-ca")]
        ca_dir: PathBuf,
    },
    /// Cluster mode: one step of a root rotation on the Secret rudder-ca (prepare, then
    /// activate, then finish, one certificate lifetime apart, restarting the control plane
    /// after each). Uses the in-cluster config or the kubeconfig.
    RotateSecret {
        /// The step.
        #[arg(long, value_enum)]
        step: crate::pki::secret_rotation::Step,
        /// The control plane's namespace.
        #[arg(long, default_value = "rudder-system")]
        namespace: String,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
}

/// `xds-server ca`.
pub(crate) fn ca(c: CaCommand) -> anyhow::Result<()> {
    match c {
        CaCommand::Rotate {
            ca_dir,
            trust_domain,
        } => {
            use crate::pki::ca_store::Rotated;
            match crate::pki::ca_store::rotate(&ca_dir, &trust_domain)? {
                Rotated::WithOverlap => println!(
                    "rotated: a new root signs; the previous root stays trusted until `xds-server ca end-overlap`"
                ),
                Rotated::Replaced(why) => println!(
                    "replaced: the old root's key was published ({why}), so it is not trusted any more; restart the control plane and give every sidecar new credentials (re-run `xds-server bootstrap`)"
                ),
            }
            Ok(())
        }
        CaCommand::EndOverlap { ca_dir } => crate::pki::ca_store::end_overlap(&ca_dir),
        CaCommand::RotateSecret {
            step,
            namespace,
            trust_domain,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let said = rt.block_on(async {
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to Kubernetes (in-cluster config or kubeconfig)")?;
                crate::pki::secret_rotation::rotate_secret(client, &namespace, &trust_domain, step)
                    .await
            })?;
            println!("{said}");
            Ok(())
        }
        CaCommand::Init {
            ca_dir,
            trust_domain,
        } => {
            crate::pki::ca_store::init(&ca_dir, &trust_domain)?;
            println!("created a root CA in {}", ca_dir.display());
            Ok(())
        }
    }
}
