//! The Rudder control plane. Sources feed one model; the incremental builder turns a
//! change into per-view change sets; the fan-out hands them to the ADS streams of the
//! proxies that share each view; every stream is bound to its certificate's identity.
//!
//! Modules by layer, bottom up (a module imports only from modules below it):
//! 1. The floor: [`runtime`] (the stop signal, the control plane's identity),
//!    [`config`] (the settings `run` is given, parsed once by `cli`), `private_files`
//!    (owner-only files written atomically), `log_limit` (rate-limited logging),
//!    [`observability::metrics`] (the counters), [`xds::wire::budget`] (the memory
//!    peers may make the ports hold, per identity).
//! 2. [`net`]: every port's front door (connection limits, TLS, the peer's verified
//!    identity) and the hardened HTTP shells.
//! 3. [`pki`]: the CA, the certificates it issues, and the certificate endpoint.
//! 4. [`xds`]: the model store and build loop, the fan-out, the stream state machines,
//!    their tonic glue and the xDS port; [`source`] (the manifest directory) and the
//!    rest of [`observability`] (the proxy registry, CSDS, the NACK record) beside it.
//! 5. [`k8s`]: the Kubernetes watch, the Lease, CRD status and the sidecar injector;
//!    `admin`: the metrics and health endpoint.
//!    [`cni`]: the `rudder-cni` plugin (a meshed pod's rules in its namespace) and its
//!    node installer.
//! 6. [`agent`]: the proxy agent beside each proxy: keeps its credentials fresh on disk.
//! 7. `server`: wires the subsystems of `xds-server run`, each of which starts itself
//!    (`pki::start`, `k8s::start`, `xds::serve`, `admin`); [`cli`]: the command line.
//!
//! `xdsctl` is its own crate (`xds-server/xdsctl`): a CSDS client that links none of this.

pub(crate) mod admin;
pub mod agent;
pub mod cli;
pub mod cni;
pub mod config;
pub mod k8s;
pub(crate) mod log_limit;
pub mod net;
pub mod observability;
pub mod pki;
pub(crate) mod private_files;
pub mod runtime;
pub(crate) mod server;
pub mod source;
pub mod xds;
