//! The proxy agent (`xds-server agent`): runs beside each proxy and keeps its
//! credentials fresh. It makes the workload's private key itself, in the pod, and sends
//! the control plane's certificate endpoint only a certificate request for it; the
//! certificate it gets back (also the proxy's xDS client certificate) and the trust
//! bundle are installed atomically in the directory it shares with the proxy ([`files`]),
//! and served to Envoy for mesh mTLS over SDS on a Unix socket in that directory
//! ([`sds`]). It renews at half-life with a new key, retries failures with backoff, and
//! reports its state on `/ready` and `/status` ([`probe_port`], [`state`]), where it also
//! runs the app's moved kubelet probes ([`app_probe`]) and relays the proxy's stats for
//! scraping ([`proxy_stats`]). The loop is
//! [`renewal`]; [`bootstrap`] writes the proxy's bootstrap, [`client`] talks to the
//! certificate endpoint. For a gRPC app that cannot present a client certificate to the
//! control plane (grpc-js), [`xds_proxy`] serves xDS on a Unix socket in the pod and
//! forwards it over mTLS with the pod's certificate.
//!
//! It proves the workload's identity with its current certificate while that is valid
//! (manifest mode starts from the one `xds-server bootstrap` wrote), else with the pod's
//! projected ServiceAccount token (audience `rudder`), which the control plane checks
//! with a TokenReview.

pub mod app_probe;
pub mod bootstrap;
pub mod client;
pub mod files;
pub mod probe_port;
pub(crate) mod proxy_stats;
pub mod renewal;
pub mod sds;
pub(crate) mod sockets;
pub mod state;
pub mod xds_proxy;
