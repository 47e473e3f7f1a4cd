//! The proxyless gRPC emitter: the resource shapes gRPC clients and xDS-enabled gRPC
//! servers accept (gRFCs A27, A28, A29, A31, A36, A44), rendered from the same routing
//! model as Envoy's (`routing`).
//!
//! - Client Listeners by the names users put in `xds:///` targets (`NAME.NS.svc.cluster.local:PORT`,
//!   `NAME.NS.svc:PORT`, `NAME.NS:PORT`, `NAME:PORT` in the client's own namespace, and
//!   each without `:PORT` for the Service's default port), each an `api_listener` whose
//!   HTTP connection manager takes its routes over ADS from one RouteConfiguration per
//!   Service port (named `FQDN:PORT`, one virtual host for every authority).
//! - Clusters: EDS over ADS, round robin, mesh mTLS through the bootstrap's certificate
//!   provider [`CERT_PROVIDER`] (gRPC has no SDS), checking the backends' SPIFFE IDs.
//!   Endpoints are the ClusterLoadAssignments Envoy gets (IP literals, locality weights).
//! - Server Listeners (A36) named `grpc/server?xds.resource.listening_address=IP:PORT` for
//!   each port the pod serves, on its pod IP and the wildcard addresses, with a
//!   non-forwarding route and mTLS required.
//!
//! Never emitted for gRPC: SDS, static or DNS clusters (headless pods, ExternalName),
//! TCP ports, `transport_socket_matches`, route timeouts (`max_stream_duration` instead),
//! per-try timeouts and HTTP retry conditions (both ignored by gRPC: a diagnostic says so).

pub(crate) mod cluster;
pub(crate) mod listener;
pub(crate) mod profile;
pub(crate) mod route;
pub(crate) mod tls;

pub use listener::SERVER_LISTENER_TEMPLATE;
pub use tls::CERT_PROVIDER;

#[cfg(test)]
mod tests;
