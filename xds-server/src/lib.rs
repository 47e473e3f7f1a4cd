//! The Rudder control plane. Sources feed one model; the incremental builder turns a
//! change into per-view change sets; the fan-out hands them to the ADS streams of the
//! proxies that share each view; every stream is bound to its certificate's identity.
//!
//! Modules by role:
//! - [`xds`]: serving xDS: the port's front door, the model store and build loop, the
//!   fan-out, the stream state machines and their tonic glue, containment of rejected
//!   config.
//! - [`identity`]: the CA, workload certificates, and the certificate endpoint agents
//!   renew from.
//! - [`agent`]: the proxy agent beside each proxy: keeps its credentials fresh on disk.
//! - [`source`]: the manifest directory; [`k8s`]: the Kubernetes watch, Lease election
//!   and CRD status.
//! - [`observability`]: the proxy registry, CSDS, metrics, the NACK record.
//! - [`cli`]: the `xds-server` command line, bootstrap generation, `xdsctl` views.
//! - `net`: what the unauthenticated HTTP shells (injector, certificate endpoint, agent
//!   status port) share: per-peer fair queues, body and header deadlines, idle timeouts.

pub mod agent;
pub mod cli;
pub mod identity;
pub mod k8s;
pub(crate) mod net;
pub mod observability;
pub mod server;
pub mod source;
pub mod xds;
