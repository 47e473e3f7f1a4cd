//! End-to-end harness: real Envoy sidecars, echo backends and the Rudder control plane
//! as processes on one machine, each pod on its own 127.0.0.N address. The scenarios
//! in `tests/` and the `rudder-demo` binary are written against it, and talk to "a
//! proxy" through its admin and outbound addresses so that other proxies can join.

pub mod ads_script;
pub mod bench;
pub mod conformance;
pub mod echo;
pub mod fake_kube;
pub mod grpc_app;
pub mod grpc_js;
pub mod http;
pub mod kube_control_plane;
pub mod manifests;
pub mod procs;
pub mod xds_client;
